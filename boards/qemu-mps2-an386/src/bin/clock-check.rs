//! Checks the clock behind the `instructions` figures: times a loop of exactly `2 n + c`
//! instructions (`subs` and `bne` per iteration) with [`SysTickClock`] for several `n` and
//! prints `loop iterations=<n> ticks=<t>`, then `clock-check done`. The `ddm-hil` test fits
//! instructions per tick from these lines and checks it against the documented conversion.
//!
//! [`SysTickClock`]: ddm_board_qemu_mps2_an386::SysTickClock
#![no_std]
#![no_main]

use core::arch::asm;

use cortex_m_rt::entry;
use ddm_board_qemu_mps2_an386 as board;
use ddm_board_support::clock::Clock;

/// Runs `iterations` iterations of a two-instruction loop.
#[inline(always)]
fn spin(iterations: u32) {
    // SAFETY: only the scratch register is touched (and the flags).
    unsafe {
        asm!(
            "2:",
            "subs {n}, {n}, #1",
            "bne 2b",
            n = inout(reg) iterations => _,
            options(nomem, nostack),
        );
    }
}

#[entry]
fn main() -> ! {
    let peripherals = defmt::unwrap!(cortex_m::Peripherals::take());
    let mut clock = board::SysTickClock::start(peripherals.SYST);
    defmt::info!("clock hz={=u32}", clock.hz());
    for iterations in [1_000u32, 100_000, 1_000_000, 20_000_000, 400_000_000] {
        let start = clock.now();
        spin(iterations);
        let ticks = clock.now() - start;
        defmt::info!("loop iterations={=u32} ticks={=u64}", iterations, ticks);
    }
    defmt::info!("clock-check done");
    board::exit(true)
}
