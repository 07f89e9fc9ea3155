//! A real board attached through a debug probe must generate the host's image, bit for bit.
//!
//! Ignored by default (CI has no boards). Run it explicitly with a board attached:
//!
//! ```sh
//! DDM_HIL_BOARD=nrf52840-dk cargo test -p ddm-hil --test probe -- --ignored --nocapture
//! ```
//!
//! `DDM_HIL_BOARD` is `nrf52840-dk` (the default), `stm32f746g-disco` or `pico2`. Without a
//! probe attached the test prints `no probe attached: skipping <board>` and returns without
//! checking anything.

use std::path::PathBuf;
use std::time::Duration;

use ddm_hil::check::{check, Backend, CheckOptions, Outcome};

#[test]
#[ignore = "needs a probe-rs-attached board: cargo test -p ddm-hil --test probe -- --ignored"]
fn optdigits_int8_on_a_probe_attached_board_matches_host() {
    let board = std::env::var("DDM_HIL_BOARD").unwrap_or_else(|_| "nrf52840-dk".into());
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/optdigits-mlp-int8.ddm");
    let options = CheckOptions {
        backend: Backend::Probe,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new(&board, model).with_steps(4)
    };
    match check(&options).unwrap_or_else(|error| panic!("{error}")) {
        Outcome::Skipped(reason) => println!("{reason}"),
        Outcome::Passed(report) => {
            println!("{}", report.device);
            print!("{}", report.figures);
            assert!(report.figures.cycles_per_call.is_some_and(|c| c > 0));
        }
    }
}
