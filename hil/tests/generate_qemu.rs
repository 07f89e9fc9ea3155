//! The optdigits int8 MLP generated on a Cortex-M4F under QEMU must be the host's image, bit
//! for bit, step for step; its figures must match `hil/golden/` (`DDM_BLESS=1` rewrites
//! them); and the clock behind the instruction counts must count instructions.
//!
//! Needs `qemu-system-arm` and the `thumbv7em-none-eabihf` target, like every QEMU test.

use std::path::PathBuf;
use std::time::Duration;

use ddm_hil::check::CheckOptions;
use ddm_hil::{board_dir, run_board};

mod common;
use common::{matches_golden, passed};

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
        seed: 0,
        num: 2,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new(BOARD, fixture("optdigits-mlp-int8.ddm")).with_steps(4)
    };
    let report = passed(&options);
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
    matches_golden(figures);
}

#[test]
fn distilled_four_step_student_on_cortex_m4_matches_host_bit_for_bit() {
    // The demo model's 4-step student (consistency distillation), exported int8 with its own
    // sampler and one set of activation parameters per time group: run as the blob says.
    let model = fixture("optdigits-student4-int8.ddm");
    let bytes = std::fs::read(&model).unwrap();
    let blob = ddm_firmware::Blob::parse(&bytes).unwrap();
    // Its own sampler: DDIM on the timesteps `ddm distill` measured.
    let sampler = blob.sampler_defaults();
    let measured = ddm_core::timesteps::GivenTimesteps::new(&[999, 811, 530, 155]).unwrap();
    assert_eq!(
        (sampler.kind, sampler.steps, sampler.spacing),
        (
            ddm_core::SamplerKind::Ddim,
            4,
            ddm_core::Spacing::Given(measured)
        )
    );
    assert!(blob.time_groups() > 1);
    let options = CheckOptions {
        seed: 0,
        num: 2,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new(BOARD, model)
    };
    let report = passed(&options);
    print!("{}", report.figures);
    assert_eq!(report.device.run.steps, 4);
    assert_eq!(
        report.device.steps.len(),
        8,
        "4 steps for each of 2 samples"
    );
    assert_eq!(report.device.images.len(), 2);
    assert!(report.device.images[0]
        .iter()
        .all(|v| v.is_finite() && v.abs() <= 1.0));
    matches_golden(&report.figures);
}

#[test]
fn unet_int8_on_cortex_m4_matches_host_bit_for_bit() {
    // The UNet exercises the convolution kernels' DSP (SMLAD) paths, which only run on the
    // device: the host runs their portable twins, which must give the same integers.
    let options = CheckOptions {
        seed: 7,
        num: 1,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new(BOARD, fixture("unet-8x8-int8.ddm")).with_steps(2)
    };
    let report = passed(&options);
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

/// The fixture with its stored default sampler replaced by DPM-Solver++ 2M in 4 trailing steps,
/// with or without the first-order penultimate step (the schedule section's word 64), sealed
/// with a fresh CRC: what `ddm export --sampler dpmpp-2m [--first-order-penultimate]` stores.
fn dpm_solver_blob(first_order_penultimate: bool) -> Vec<u8> {
    use ddm_firmware::format::{CRC32, CRC_START, HEADER_LEN, SECTION_ENTRY_LEN, SECTION_SCHEDULE};
    let mut bytes = std::fs::read(fixture("optdigits-mlp-int8.ddm")).unwrap();
    let word = |bytes: &[u8], at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let schedule = (0..word(&bytes, 20) as usize)
        .map(|i| HEADER_LEN + i * SECTION_ENTRY_LEN)
        .find(|&at| word(&bytes, at) == SECTION_SCHEDULE)
        .map(|at| word(&bytes, at + 4) as usize)
        .unwrap();
    for (offset, value) in [
        (32, 2), // DPM-Solver++ 2M
        (36, 4), // steps
        (40, 2), // trailing
        (56, 0), // no clipping
        (60, 0), // no clip radius
        (64, u32::from(first_order_penultimate)),
    ] {
        let at = schedule + offset;
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    let total = word(&bytes, 12) as usize;
    let crc = CRC32.checksum(&bytes[CRC_START..total]);
    bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn dpm_solver_blob_settings_on_cortex_m4_match_host_bit_for_bit() {
    // Both orders of DPM-Solver++'s second to last step, as the blob stores them: the device
    // resolves the blob's sampler exactly as the host does.
    let dir = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
    for first_order_penultimate in [false, true] {
        let path = dir
            .path()
            .join(format!("dpm-{first_order_penultimate}.ddm"));
        std::fs::write(&path, dpm_solver_blob(first_order_penultimate)).unwrap();
        let blob = std::fs::read(&path).unwrap();
        let defaults = ddm_firmware::Blob::parse(&blob).unwrap().sampler_defaults();
        assert_eq!(defaults.first_order_penultimate, first_order_penultimate);
        let options = CheckOptions {
            seed: 3,
            num: 1,
            timeout: Duration::from_secs(300),
            ..CheckOptions::new(BOARD, path)
        };
        let report = passed(&options);
        assert_eq!(report.device.run.sampler, "dpmpp-2m");
        assert_eq!(report.device.steps.len(), 4);
        images.push(report.device.images[0].clone());
    }
    // Only the second to last step differs, and it changes the sample.
    assert_ne!(images[0], images[1]);
}
