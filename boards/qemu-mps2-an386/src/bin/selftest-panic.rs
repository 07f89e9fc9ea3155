//! Harness self-test: logs one line, then panics. The `ddm-hil` tests check that the harness
//! reports this run as a device failure that carries the panic message.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use ddm_board_qemu_mps2_an386 as _;

#[entry]
fn main() -> ! {
    defmt::info!("selftest-panic: about to panic");
    panic!("deliberate panic from selftest-panic");
}
