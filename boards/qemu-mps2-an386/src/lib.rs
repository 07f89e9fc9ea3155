//! Runtime support shared by the binaries that run on QEMU's `mps2-an386` machine, a Cortex-M4
//! with single-precision FPU (`thumbv7em-none-eabihf`).
//!
//! Linking this crate into a binary (`use ddm_board_qemu_mps2_an386 as board;`) installs:
//! - the defmt global logger, which writes defmt frames over semihosting to QEMU's stdout,
//!   where the `ddm-hil` harness decodes them against the ELF;
//! - a panic handler and fault handlers that log through defmt and then end the run with a
//!   non-zero exit status, so a failure on the device is never mistaken for a hang or a pass.
//!
//! Binaries end a successful run with [`exit`]`(true)`. Never print through semihosting's own
//! stdout API as well: that would interleave plain text with the defmt frames.
//!
//! The FPU needs no setup here: cortex-m-rt's reset handler grants full access to CP10/CP11
//! before `main` on every `-eabihf` target.
#![no_std]

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::debug;
use defmt_semihosting as _;

/// Ends the program through semihosting: QEMU exits with status 0 when `success` is true and
/// with a non-zero status otherwise.
pub fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached when no semihosting host is attached.
    loop {
        cortex_m::asm::wfi();
    }
}

/// Set once the program has started to fail, so that a second failure while reporting the
/// first (a panic inside the logger, a fault in the panic handler) exits at once instead of
/// recursing.
static FAILING: AtomicBool = AtomicBool::new(false);

/// Runs `report` (which logs what went wrong) unless a failure is already being reported, then
/// exits with a failure status.
fn fail(report: impl FnOnce()) -> ! {
    if !FAILING.swap(true, Ordering::Relaxed) {
        report();
    }
    exit(false)
}

/// `core::panic!` and everything that panics through it (slice indexing, `unwrap`, overflow
/// checks): logs `panicked at <file>:<line>:<column>: <message>` at error level, then fails.
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    fail(|| {
        let message = defmt::Display2Format(&info.message());
        match info.location() {
            Some(at) => defmt::error!(
                "panicked at {=str}:{=u32}:{=u32}: {}",
                at.file(),
                at.line(),
                at.column(),
                message
            ),
            None => defmt::error!("panicked: {}", message),
        }
    })
}

/// `defmt::panic!` and its relatives (`defmt::unwrap!`, `defmt::assert!`) have already logged
/// their message when they get here: just fail.
#[defmt::panic_handler]
fn defmt_panic() -> ! {
    fail(|| ())
}

/// Memory faults, usage faults (e.g. an FPU instruction with the FPU disabled) and anything
/// else that escalates to HardFault.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    fail(|| {
        defmt::error!(
            "HardFault: pc={=u32:#010x} lr={=u32:#010x} xpsr={=u32:#010x}",
            frame.pc(),
            frame.lr(),
            frame.xpsr()
        )
    })
}

/// Any exception or interrupt without a handler of its own. None is enabled, so reaching this
/// is a bug.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    fail(|| defmt::error!("unexpected exception or interrupt {=i16}", irqn))
}
