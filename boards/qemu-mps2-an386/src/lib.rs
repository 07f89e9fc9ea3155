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
//! Board I/O for ddm-board-support: [`SysTickClock`] (the only clock QEMU emulates: there is
//! no DWT cycle counter) and [`Led`], the first user LED of the board's FPGA I/O block.
//!
//! The FPU needs no setup here: cortex-m-rt's reset handler grants full access to CP10/CP11
//! before `main` on every `-eabihf` target.
#![no_std]

use core::convert::Infallible;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::debug;
use ddm_board_support::clock::Clock;
use defmt_semihosting as _;

/// The board's name in reports (its crate directory).
pub const BOARD: &str = "qemu-mps2-an386";

/// The frequency of SysTick's processor clock on QEMU's MPS2 machines (`SYSCLK`, 25 MHz).
///
/// Under `-icount shift=0` (the runner's setting) QEMU's virtual clock advances exactly 1 ns
/// per executed instruction, so one tick is 40 instructions; the `clock-check` binary and the
/// `ddm-hil` tests check that conversion on a loop of known length.
pub const SYSTICK_HZ: u32 = 25_000_000;

/// SysTick wraps counted by its exception handler.
static SYSTICK_WRAPS: AtomicU32 = AtomicU32::new(0);

/// SysTick as a 64-bit tick counter: the 24-bit down-counter on the processor clock, extended
/// by counting its wraps in the SysTick exception (one every 2^24 ticks, 0.67 s of virtual
/// time).
pub struct SysTickClock {
    _syst: SYST,
}

impl SysTickClock {
    /// Starts SysTick on the processor clock, counting from its full 24-bit reload value.
    pub fn start(mut syst: SYST) -> Self {
        syst.disable_counter();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(0x00ff_ffff);
        syst.clear_current();
        SYSTICK_WRAPS.store(0, Ordering::Relaxed);
        syst.enable_interrupt();
        syst.enable_counter();
        SysTickClock { _syst: syst }
    }
}

impl Clock for SysTickClock {
    fn name(&self) -> &'static str {
        "systick"
    }

    fn hz(&self) -> u32 {
        SYSTICK_HZ
    }

    fn now(&mut self) -> u64 {
        loop {
            let wraps = SYSTICK_WRAPS.load(Ordering::Acquire);
            let current = SYST::get_current();
            // A wrap between the two loads (its exception ran in between) makes `current`
            // ambiguous: read again.
            if SYSTICK_WRAPS.load(Ordering::Acquire) == wraps {
                return (u64::from(wraps) << 24) + u64::from(0x00ff_ffff - current);
            }
        }
    }
}

#[exception]
fn SysTick() {
    SYSTICK_WRAPS.fetch_add(1, Ordering::AcqRel);
}

/// User LED 0 of the MPS2 FPGA I/O block (`FPGAIO->LED0`, bit 0), as an embedded-hal pin.
/// QEMU keeps its state (visible with `-trace mps2_fpgaio*`); nothing else sees it.
pub struct Led(());

/// The FPGA I/O block's LED register.
const FPGAIO_LED0: *mut u32 = 0x4002_8000 as *mut u32;

impl Led {
    /// The LED, switched off.
    pub fn new() -> Self {
        let mut led = Led(());
        let _ = embedded_hal::digital::OutputPin::set_low(&mut led);
        led
    }
}

impl Default for Led {
    fn default() -> Self {
        Led::new()
    }
}

impl embedded_hal::digital::ErrorType for Led {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for Led {
    fn set_low(&mut self) -> Result<(), Infallible> {
        // SAFETY: a read-modify-write of the FPGA I/O LED register, which only this type
        // touches.
        unsafe { FPGAIO_LED0.write_volatile(FPGAIO_LED0.read_volatile() & !1) };
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        // SAFETY: as in `set_low`.
        unsafe { FPGAIO_LED0.write_volatile(FPGAIO_LED0.read_volatile() | 1) };
        Ok(())
    }
}

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
