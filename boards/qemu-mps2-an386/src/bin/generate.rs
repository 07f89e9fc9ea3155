//! Generates the model given at build time and reports the image and the figures in
//! ddm-board-support's line protocol; exits with status 0 after `done`, and panics with the
//! reason (a non-zero exit status) on any error.
//!
//! Build it with the model and settings in the environment (see ddm-board-build):
//! `DDM_MODEL_BLOB=model.ddm DDM_STEPS=4 DDM_SEED=0 cargo run --release --bin generate`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use ddm_board_qemu_mps2_an386 as board;
use ddm_board_support::report::{run, Board};
use ddm_board_support::{as_f32s, stack, StaticBuffer};

ddm_board_support::include_model!();

/// The runtime's arena: exactly what the model needs for `RUN`.
static ARENA: StaticBuffer<ARENA_BYTES> = StaticBuffer::new();
/// One generated sample.
static SAMPLE: StaticBuffer<{ 4 * SAMPLE_LEN }> = StaticBuffer::new();

#[entry]
fn main() -> ! {
    stack::paint();
    let peripherals = defmt::unwrap!(cortex_m::Peripherals::take());
    let mut clock = board::SysTickClock::start(peripherals.SYST);
    let mut led = board::Led::new();
    let arena = defmt::unwrap!(ARENA.take());
    let sample = defmt::unwrap!(SAMPLE.take().and_then(as_f32s));
    defmt::info!("blob path={=str}", MODEL_SOURCE);
    let mut board = Board {
        name: board::BOARD,
        clock: &mut clock,
        led: &mut led,
    };
    if let Err(error) = run(&mut board, &BLOB.0, arena, sample, &RUN) {
        // The panic handler logs the message and exits with a failure status.
        panic!("generation failed: {error}");
    }
    board::exit(true)
}
