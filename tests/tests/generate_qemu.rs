//! The optdigits int8 MLP generated on a Cortex-M4F under QEMU must be the host's image, bit
//! for bit, step for step; its figures must match `tests/golden/` (`DDM_BLESS=1` rewrites
//! them); and the clock behind the instruction counts must count instructions.
//!
//! Needs `qemu-system-arm` and the `thumbv7em-none-eabihf` target, like every QEMU test.

use std::path::PathBuf;
use std::time::Duration;

use ddm_hil::check::{check, CheckOptions, Outcome};
use ddm_hil::golden::{bless_requested, check_golden};
use ddm_hil::{board_dir, run_board};

const BOARD: &str = "qemu-mps2-an386";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

#[test]
fn optdigits_int8_on_cortex_m4_matches_host_bit_for_bit() {
    // Two samples of 4 DDIM steps (the blob's default sampler: trailing spacing, x0 clipped).
    let options = CheckOptions {
        steps: Some(4),
        seed: 0,
        num: 2,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new(BOARD, fixture("optdigits-mlp-int8.ddm"))
    };
    let report = match check(&options).unwrap_or_else(|error| panic!("{error}")) {
        Outcome::Passed(report) => report,
        Outcome::Skipped(reason) => panic!("the QEMU check cannot be skipped: {reason}"),
    };
    println!("{}", report.device);
    print!("{}", report.figures);
    assert_eq!(report.device.board.board, BOARD);
    assert_eq!(report.device.run.steps, 4);
    assert_eq!(
        report.device.steps.len(),
        8,
        "4 steps for each of 2 samples"
    );
    assert_eq!(report.device.images.len(), 2);
    assert_ne!(
        report.device.images[0], report.device.images[1],
        "two samples of one seed use different streams"
    );
    // The digits are in [-1, 1] (x0 is clipped): a sanity check that a digit came out.
    assert!(report.device.images[0]
        .iter()
        .all(|v| v.is_finite() && v.abs() <= 1.0));
    let figures = &report.figures;
    assert!(figures.instructions_per_call.is_some_and(|i| i > 0));
    assert!(figures.stack_bytes.is_some_and(|s| s > 0 && s < 16 * 1024));
    match check_golden(figures, bless_requested()) {
        Ok(message) => println!("golden: {message}"),
        Err(message) => panic!("{message}"),
    }
}

#[test]
fn unet_int8_on_cortex_m4_matches_host_bit_for_bit() {
    // The UNet exercises the convolution kernels' DSP (SMLAD) paths, which only run on the
    // device: the host runs their portable twins, which must give the same integers.
    let options = CheckOptions {
        steps: Some(2),
        seed: 7,
        num: 1,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new(BOARD, fixture("unet-8x8-int8.ddm"))
    };
    let report = match check(&options).unwrap_or_else(|error| panic!("{error}")) {
        Outcome::Passed(report) => report,
        Outcome::Skipped(reason) => panic!("the QEMU check cannot be skipped: {reason}"),
    };
    assert_eq!(report.device.steps.len(), 2);
    assert_eq!(report.device.images.len(), 1);
    assert!(report.device.images[0].iter().all(|v| v.is_finite()));
}

#[test]
fn systick_ticks_convert_to_instructions() {
    // `clock-check` times loops of 2 instructions per iteration. Under `-icount shift=0` one
    // SysTick tick at 25 MHz is 40 instructions, so ticks * 40 is 2 * iterations plus the
    // constant cost of two clock reads, to within one tick either way.
    let run = run_board(
        board_dir(BOARD),
        "clock-check",
        Duration::from_secs(120),
        &[],
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let mut loops = Vec::new();
    for message in run.messages() {
        if let Some(rest) = message.strip_prefix("loop ") {
            let field = |key: &str| -> u64 {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("malformed `{message}`"))
            };
            loops.push((field("iterations="), field("ticks=")));
        }
    }
    assert_eq!(loops.len(), 5, "{:?}", run.log);
    let (small_n, small_ticks) = loops[0];
    let overhead = (small_ticks * 40).saturating_sub(2 * small_n);
    for &(n, ticks) in &loops {
        let instructions = ticks * 40;
        let expected = 2 * n + overhead;
        println!(
            "{n} iterations: {ticks} ticks = {instructions} instructions (expected {expected})"
        );
        assert!(
            instructions.abs_diff(expected) <= 80,
            "{n} iterations took {ticks} ticks: not 40 instructions per tick"
        );
    }
    assert!(overhead < 400, "clock reads cost {overhead} instructions");
}
