//! A variance-exploding score model (`ddm train --beta-schedule ve`: NCSN's denoising score
//! matching on geometric noise levels chosen by NCSNv2's rules) exported int8 generates with
//! the predictor-corrector sampler on the Cortex-M4 under QEMU and on aarch64 Linux under
//! qemu-aarch64 exactly as the host does, step for step, its noise from the portable RNG; its
//! figures match `hil/golden/` (`DDM_BLESS=1` rewrites them).
//!
//! Needs `qemu-system-arm`, `qemu-aarch64` and the targets of the other QEMU tests.

use std::path::PathBuf;
use std::time::Duration;

use ddm_core::{BetaSchedule, SamplerKind};
use ddm_firmware::Blob;
use ddm_hil::check::{Backend, CheckOptions};

mod common;
use common::{matches_golden, passed};

/// The optdigits VE MLP of `hil/fixtures`: 16 levels from 0.125 to 9.63, PC on all 16 with
/// 3 corrector steps each (64 network calls per sample).
fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/optdigits-ve-mlp-int8.ddm")
}

#[test]
fn the_fixture_is_a_variance_exploding_model_with_the_predictor_corrector_sampler() {
    let bytes = std::fs::read(fixture()).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    let schedule = blob.schedule();
    let Some(BetaSchedule::VarianceExploding {
        sigma_min,
        sigma_max,
    }) = schedule.betas
    else {
        panic!("not a variance-exploding blob: {schedule:?}");
    };
    assert_eq!((sigma_min, schedule.train_steps), (0.125, 16));
    assert!((sigma_max - 9.63).abs() < 0.01, "{sigma_max}");
    let sampler = blob.sampler_defaults();
    assert_eq!(sampler.kind, SamplerKind::PredictorCorrector);
    assert_eq!((sampler.steps, sampler.corrector_steps), (16, 3));
    assert_eq!(sampler.evaluations(), 64);
}

#[test]
fn predictor_corrector_on_cortex_m4_matches_host_bit_for_bit() {
    let options = CheckOptions {
        seed: 0,
        num: 2,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new("qemu-mps2-an386", fixture())
    };
    let report = passed(&options);
    println!("{}", report.device);
    print!("{}", report.figures);
    assert_eq!(
        report.device.steps.len(),
        128,
        "64 calls for each of 2 samples"
    );
    assert_eq!(report.device.images.len(), 2);
    assert!(report.device.images[0]
        .iter()
        .all(|v| v.is_finite() && v.abs() <= 1.0));
    matches_golden(&report.figures);
}

#[test]
fn predictor_corrector_on_qemu_aarch64_matches_host_bit_for_bit() {
    let options = CheckOptions {
        backend: Backend::LinuxArm { command: None },
        seed: 3,
        num: 2,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new("jetson", fixture())
    };
    let report = passed(&options);
    assert_eq!(report.device.steps.len(), 128);
}
