//! Harness self-test: logs one line, then executes a permanently undefined instruction, which
//! escalates to HardFault. The `ddm-hil` tests check that the fault handler reports it as a
//! device failure instead of letting the run hang.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use ddm_board_qemu_mps2_an386 as _;

#[entry]
fn main() -> ! {
    defmt::info!("selftest-fault: about to fault");
    cortex_m::asm::udf()
}
