//! What the autoencoder and latent diffusion tests share: running the `ddm` binary, checking
//! its outcome, and the small optdigits autoencoder they train.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs the `ddm` binary of this build with `args`.
pub fn ddm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddm"))
        .args(args)
        .output()
        .expect("the ddm binary runs")
}

/// Panics with the command's stderr unless it succeeded.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Panics unless the command failed with `needle` in its stderr and without a panic.
pub fn assert_failure(output: &Output, needle: &str) {
    assert!(!output.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `ddm train-autoencoder` of a small optdigits autoencoder (8 channels, levels x1 x2, latent
/// [2, 4, 4]) on one thread, followed by `extra` (steps, batch, `--out`, ...).
pub fn small_autoencoder_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--threads",
        "1",
        "train-autoencoder",
        "--dataset",
        "optdigits",
        "--width",
        "8",
        "--channel-mults",
        "1,2",
        "--groups",
        "4",
        "--latent-channels",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}
