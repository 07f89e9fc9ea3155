//! An int8 blob with time groups (one set of activation parameters per sampler step) must
//! generate on the Cortex-M4 under QEMU and on aarch64 Linux under qemu-aarch64 exactly what
//! the host generates, step for step: every step of the run uses another group.
//!
//! Needs `qemu-system-arm`, `qemu-aarch64` and the targets of the other QEMU tests.

use std::path::PathBuf;
use std::time::Duration;

use ddm_hil::check::{Backend, CheckOptions};

mod common;
use common::passed;

/// The blob, written under its own folder for each test (they run in parallel).
fn blob(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test);
    let (path, groups) = common::grouped_conv_blob(&dir);
    assert_eq!(groups, 4, "one group per DDIM step");
    let bytes = std::fs::read(&path).unwrap();
    let blob = ddm_firmware::Blob::parse(&bytes).unwrap();
    // The four steps of the default sampler fall in four different groups.
    let sampler = blob.sampler_defaults();
    let mut timesteps = vec![0u32; 4];
    sampler
        .timesteps(&blob.alpha_bar_schedule().unwrap(), &mut timesteps)
        .unwrap();
    let mut groups: Vec<usize> = timesteps.iter().map(|&t| blob.time_group(t)).collect();
    groups.dedup();
    assert_eq!(groups, [3, 2, 1, 0], "timesteps {timesteps:?}");
    path
}

#[test]
fn time_grouped_int8_on_cortex_m4_matches_host_bit_for_bit() {
    let options = CheckOptions {
        seed: 3,
        num: 2,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new("qemu-mps2-an386", blob("time-groups-m4"))
    };
    let report = passed(&options);
    println!("{}", report.device);
    assert_eq!(
        report.device.steps.len(),
        8,
        "4 steps for each of 2 samples"
    );
    assert_eq!(report.device.images.len(), 2);
}

#[test]
fn time_grouped_int8_on_qemu_aarch64_matches_host_bit_for_bit() {
    let options = CheckOptions {
        backend: Backend::LinuxArm { command: None },
        seed: 3,
        num: 2,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new("jetson", blob("time-groups-aarch64"))
    };
    let report = passed(&options);
    assert_eq!(report.device.steps.len(), 8);
    assert_eq!(report.device.images.len(), 2);
}
