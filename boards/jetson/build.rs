//! Embeds the model given in `DDM_MODEL_BLOB` (with the sampler, seed and count variables of
//! `ddm-board-build`). There is no RAM limit to check on Linux.

fn main() {
    ddm_board_build::embed_model("jetson", None);
    println!("cargo::rerun-if-changed=build.rs");
}
