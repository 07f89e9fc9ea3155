//! ddm on the Raspberry Pi Pico 2: generates the model embedded at build time, toggling the
//! on-board LED (GPIO 25) at every step and timing each network call with the Cortex-M33's DWT
//! cycle counter, and reports over defmt-RTT (ddm-board-support's line protocol). Ends with a
//! semihosting exit, which `probe-rs run` passes on as its exit status.
#![no_std]
#![no_main]

use ddm_board_support::clock::DwtClock;
use ddm_board_support::report::{run, Board};
use ddm_board_support::{as_f32s, finish, stack, StaticBuffer};
use defmt_rtt as _;
use panic_probe as _;
use rp235x_hal as hal;
use rp235x_hal::Clock as _;

ddm_board_support::include_model!();

/// The image definition the RP2350 boot ROM needs to start a secure Arm executable.
#[link_section = ".start_block"]
#[used]
pub static IMAGE_DEF: hal::block::ImageDef = hal::block::ImageDef::secure_exe();

/// The Pico 2's crystal.
const XTAL_FREQ_HZ: u32 = 12_000_000;

/// The runtime's arena: exactly what the model needs for `RUN`.
static ARENA: StaticBuffer<ARENA_BYTES> = StaticBuffer::new();
/// One generated sample.
static SAMPLE: StaticBuffer<{ 4 * SAMPLE_LEN }> = StaticBuffer::new();

#[hal::entry]
fn main() -> ! {
    stack::paint();
    let mut pac = defmt::unwrap!(hal::pac::Peripherals::take());
    let mut core = defmt::unwrap!(cortex_m::Peripherals::take());
    let mut watchdog = hal::Watchdog::new(pac.WATCHDOG);
    // 150 MHz from the crystal through PLL_SYS.
    let clocks = defmt::unwrap!(hal::clocks::init_clocks_and_plls(
        XTAL_FREQ_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    )
    .ok());
    let sio = hal::Sio::new(pac.SIO);
    let pins = hal::gpio::Pins::new(
        pac.IO_BANK0,
        pac.PADS_BANK0,
        sio.gpio_bank0,
        &mut pac.RESETS,
    );
    let mut led = pins.gpio25.into_push_pull_output();
    let cpu_hz = clocks.system_clock.freq().to_Hz();
    let mut clock = defmt::unwrap!(DwtClock::start(&mut core.DCB, &mut core.DWT, cpu_hz));

    let arena = defmt::unwrap!(ARENA.take());
    let sample = defmt::unwrap!(SAMPLE.take().and_then(as_f32s));
    defmt::info!("blob path={=str}", MODEL_SOURCE);
    let mut board = Board {
        name: "pico2",
        clock: &mut clock,
        led: &mut led,
    };
    finish(run(&mut board, &BLOB.0, arena, sample, &RUN))
}
