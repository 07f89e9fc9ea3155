//! ddm on the STM32F746G-DISCO: generates the model embedded at build time, toggling the user
//! LED LD1 at every step and timing each network call with the DWT cycle counter, and reports
//! over defmt-RTT (ddm-board-support's line protocol). Ends with a semihosting exit, which
//! `probe-rs run` passes on as its exit status.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use ddm_board_support::clock::DwtClock;
use ddm_board_support::report::{run, Board};
use ddm_board_support::{as_f32s, finish, stack, StaticBuffer};
use defmt_rtt as _;
use embassy_stm32::gpio::{Level, Output, Speed};
use embassy_stm32::rcc::{
    AHBPrescaler, APBPrescaler, Hse, HseMode, Pll, PllMul, PllPDiv, PllPreDiv, PllSource, Sysclk,
};
use embassy_stm32::time::Hertz;
use panic_probe as _;

ddm_board_support::include_model!();

/// The core clock set up below: 25 MHz crystal / 25 * 432 / 2.
const CPU_HZ: u32 = 216_000_000;

/// The runtime's arena: exactly what the model needs for `RUN`.
static ARENA: StaticBuffer<ARENA_BYTES> = StaticBuffer::new();
/// One generated sample.
static SAMPLE: StaticBuffer<{ 4 * SAMPLE_LEN }> = StaticBuffer::new();

#[entry]
fn main() -> ! {
    stack::paint();
    let mut config = embassy_stm32::Config::default();
    config.rcc.hse = Some(Hse {
        freq: Hertz(25_000_000),
        mode: HseMode::Oscillator,
    });
    config.rcc.pll_src = PllSource::HSE;
    config.rcc.pll = Some(Pll {
        prediv: PllPreDiv::DIV25,
        mul: PllMul::MUL432,
        divp: Some(PllPDiv::DIV2),
        divq: None,
        divr: None,
    });
    config.rcc.ahb_pre = AHBPrescaler::DIV1;
    config.rcc.apb1_pre = APBPrescaler::DIV4;
    config.rcc.apb2_pre = APBPrescaler::DIV2;
    config.rcc.sys = Sysclk::PLL1_P;
    let p = embassy_stm32::init(config);

    let mut core = defmt::unwrap!(cortex_m::Peripherals::take());
    // The Cortex-M7's caches: the weights stream from flash over AXIM.
    core.SCB.enable_icache();
    core.SCB.enable_dcache(&mut core.CPUID);
    let mut led = Output::new(p.PI1, Level::Low, Speed::Low);
    let mut clock = defmt::unwrap!(DwtClock::start(&mut core.DCB, &mut core.DWT, CPU_HZ));

    let arena = defmt::unwrap!(ARENA.take());
    let sample = defmt::unwrap!(SAMPLE.take().and_then(as_f32s));
    defmt::info!("blob path={=str}", MODEL_SOURCE);
    let mut board = Board {
        name: "stm32f746g-disco",
        clock: &mut clock,
        led: &mut led,
    };
    finish(run(&mut board, &BLOB.0, arena, sample, &RUN))
}
