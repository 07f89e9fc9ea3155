//! Harness self-test: logs one line, then spins forever. The `ddm-hil` tests check that the
//! harness kills the run at its timeout and reports it as such.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use ddm_board_qemu_mps2_an386 as _;

#[entry]
fn main() -> ! {
    defmt::info!("selftest-hang: spinning forever");
    loop {
        core::hint::spin_loop();
    }
}
