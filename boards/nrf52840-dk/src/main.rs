//! ddm on the nRF52840-DK: generates the model embedded at build time, toggling LED1 at every
//! step and timing each network call with the DWT cycle counter, and reports over defmt-RTT
//! (ddm-board-support's line protocol). Ends at a breakpoint, where `probe-rs run` exits.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use ddm_board_support::clock::DwtClock;
use ddm_board_support::report::{run, Board};
use ddm_board_support::{as_f32s, finish, stack, StaticBuffer};
use defmt_rtt as _;
use nrf52840_hal::gpio::{p0, Level};
use nrf52840_hal::pac;
use panic_probe as _;

ddm_board_support::include_model!();

/// The CPU clock: the nRF52840 always runs its core at 64 MHz.
const CPU_HZ: u32 = 64_000_000;

/// The runtime's arena: exactly what the model needs for `RUN`.
static ARENA: StaticBuffer<ARENA_BYTES> = StaticBuffer::new();
/// One generated sample.
static SAMPLE: StaticBuffer<{ 4 * SAMPLE_LEN }> = StaticBuffer::new();

#[entry]
fn main() -> ! {
    stack::paint();
    let mut core = defmt::unwrap!(cortex_m::Peripherals::take());
    let device = defmt::unwrap!(pac::Peripherals::take());
    // The instruction cache of the flash controller: the weights are read from flash.
    device.NVMC.icachecnf.write(|w| w.cacheen().enabled());
    let port0 = p0::Parts::new(device.P0);
    // LED1 is active low.
    let mut led = port0.p0_13.into_push_pull_output(Level::High);
    let mut clock = defmt::unwrap!(DwtClock::start(&mut core.DCB, &mut core.DWT, CPU_HZ));

    let arena = defmt::unwrap!(ARENA.take());
    let sample = defmt::unwrap!(SAMPLE.take().and_then(as_f32s));
    defmt::info!("blob path={=str}", MODEL_SOURCE);
    let mut board = Board {
        name: "nrf52840-dk",
        clock: &mut clock,
        led: &mut led,
    };
    finish(run(&mut board, &BLOB.0, arena, sample, &RUN))
}
