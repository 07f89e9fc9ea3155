//! A class-conditional int8 blob generates a requested class with classifier-free guidance
//! (two network calls per step) on the Cortex-M4 under QEMU and on aarch64 Linux under
//! qemu-aarch64 exactly as the host does, step for step; its figures match `hil/golden/`
//! (`DDM_BLESS=1` rewrites them). A class the blob does not have fails the build.
//!
//! Needs `qemu-system-arm`, `qemu-aarch64` and the targets of the other QEMU tests.

use std::path::PathBuf;
use std::time::Duration;

use ddm_core::Guidance;
use ddm_hil::check::{check, Backend, CheckOptions};

mod common;
use common::{matches_golden, passed};

/// The conditional optdigits MLP of `hil/fixtures` (10 classes).
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

const MODEL: &str = "optdigits-cond-mlp-int8.ddm";

#[test]
fn guided_class_on_cortex_m4_matches_host_bit_for_bit() {
    // Two sevens, 4 DDIM steps, the default guidance.
    let options = CheckOptions {
        seed: 0,
        num: 2,
        class: Some(7),
        timeout: Duration::from_secs(300),
        ..CheckOptions::new("qemu-mps2-an386", fixture(MODEL)).with_steps(4)
    };
    assert_eq!(options.guidance, Guidance::DEFAULT);
    let report = passed(&options);
    println!("{}", report.device);
    print!("{}", report.figures);
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
fn guided_class_on_qemu_aarch64_matches_host_bit_for_bit() {
    let options = CheckOptions {
        backend: Backend::LinuxArm { command: None },
        seed: 5,
        num: 2,
        class: Some(3),
        guidance: Guidance::new(3.0).unwrap(),
        timeout: Duration::from_secs(300),
        ..CheckOptions::new("jetson", fixture(MODEL)).with_steps(4)
    };
    let report = passed(&options);
    assert_eq!(report.device.steps.len(), 8);
    assert_eq!(report.device.images.len(), 2);
}

#[test]
fn a_class_the_blob_does_not_have_fails_the_build() {
    for (model, needle) in [
        (MODEL, "outside the model's classes 0..9"),
        ("optdigits-mlp-int8.ddm", "unconditional"),
    ] {
        let options = CheckOptions {
            class: Some(10),
            ..CheckOptions::new("qemu-mps2-an386", fixture(model)).with_steps(2)
        };
        let error = match check(&options) {
            Err(error) => error.to_string(),
            Ok(_) => panic!("{model}: class 10 was accepted"),
        };
        assert!(
            error.contains("DDM_CLASS") && error.contains(needle),
            "{model}: {error}"
        );
    }
}
