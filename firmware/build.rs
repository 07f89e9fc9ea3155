//! Sets `cfg(ddm_dsp)` on ARMv7E-M targets (`thumbv7em-*`: Cortex-M4 and M7), whose DSP
//! extension (`SXTB16`, `SMLAD`) the int8 kernels use through inline assembly
//! (`src/kernels/dsp.rs`). Stable Rust does not expose the `dsp` target feature to `cfg`
//! (`cfg(target_feature = "dsp")` is never set), so the target name decides.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ddm_dsp)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch == "arm" && target.starts_with("thumbv7em-") {
        println!("cargo::rustc-cfg=ddm_dsp");
    }
}
