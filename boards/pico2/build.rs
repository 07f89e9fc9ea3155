//! Puts `memory.x` on the linker's search path and embeds the model given in `DDM_MODEL_BLOB`
//! (with the sampler, seed and count variables of `ddm-board-build`).

fn main() {
    let memory_x = include_str!("memory.x");
    ddm_board_build::link_memory_x(memory_x.as_bytes());
    ddm_board_build::embed_model("pico2", Some(memory_x));
    println!("cargo::rerun-if-changed=build.rs");
}
