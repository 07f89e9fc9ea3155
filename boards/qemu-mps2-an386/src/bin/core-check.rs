//! Runs ddm-core's conformance workload on the Cortex-M4F and reports its digest.
//!
//! Output, one defmt line each, in this order:
//! - `cpuid <hex>`: the CPUID register, which identifies the core QEMU emulates;
//! - `digest <field> = <hex>` for every field of [`ddm_core::conformance::Digest::fields`];
//! - `core-check done`.
//!
//! Then it exits with status 0. The `ddm-hil` test compares the digest with the host's.
#![no_std]
#![no_main]

use cortex_m::peripheral::scb::FpuAccessMode;
use cortex_m::peripheral::{CPUID, SCB};
use cortex_m_rt::entry;
use ddm_board_qemu_mps2_an386 as board;

#[entry]
fn main() -> ! {
    // cortex-m-rt enables the FPU before `main` on eabihf targets; check rather than trust, as
    // the digest is only meaningful if the float code ran on the hardware FPU.
    defmt::assert!(
        SCB::fpu_access_mode() == FpuAccessMode::Enabled,
        "the FPU is not enabled"
    );
    // SAFETY: a read of a read-only identification register, with no side effects.
    let cpuid = unsafe { (*CPUID::PTR).base.read() };
    defmt::info!("cpuid {=u32:#010x}", cpuid);

    let digest = match ddm_core::conformance::digest() {
        Ok(digest) => digest,
        Err(error) => defmt::panic!(
            "the conformance workload failed: {}",
            defmt::Display2Format(&error)
        ),
    };
    for (name, value) in digest.fields() {
        defmt::info!("digest {=str} = {=u32:#010x}", name, value);
    }
    defmt::info!("core-check done");
    board::exit(true)
}
