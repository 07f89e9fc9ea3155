//! `ddm sample --model` with sampler flags writes exactly what the device runtime generates
//! for those flags as `ddm hil` parses them (`BlobSamplerArgs`): the command-line half of
//! `hil/tests/sampler_flags_qemu.rs`, which checks the same flags against `ddm hil`'s host run
//! and the Cortex-M4 under QEMU.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use ddm::sampler_args::BlobSamplerArgs;
use ddm_core::SamplerKind;

#[derive(Debug, Parser)]
struct Flags {
    #[command(flatten)]
    sampler: BlobSamplerArgs,
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hil/fixtures/optdigits-mlp-int8.ddm")
}

/// The flags of `hil/tests/sampler_flags_qemu.rs`: every setting away from the blob's.
fn flags(kind: SamplerKind) -> Vec<&'static str> {
    let mut flags = vec!["--sampler", kind.name(), "--steps", "3"];
    flags.extend_from_slice(match kind {
        SamplerKind::Ddpm => &[
            "--variance",
            "beta",
            "--clip-sample",
            "1.5",
            "--spacing",
            "linspace",
        ][..],
        SamplerKind::Ddim => &["--eta", "0.5", "--timesteps", "999,640,70"][..],
        SamplerKind::DpmSolverPp2m => &[
            "--spacing",
            "leading",
            "--steps-offset",
            "1",
            "--first-order-penultimate",
        ][..],
        SamplerKind::PredictorCorrector => &[
            "--pc-corrector-steps",
            "2",
            "--pc-snr",
            "0.2",
            "--clip-sample",
            "1",
        ][..],
        SamplerKind::ProbabilityFlow => &["--spacing", "trailing"][..],
    });
    flags
}

fn read_bits(path: &Path) -> Vec<u32> {
    let array = ddm::npy::read_f32(path).unwrap();
    assert_eq!(array.shape, [2, 1, 8, 8]);
    array.values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn ddm_sample_model_writes_what_the_runtime_generates_for_the_same_flags() {
    let blob = std::fs::read(fixture()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for kind in SamplerKind::ALL {
        let flags = flags(kind);
        let out = dir.path().join(format!("{}.npy", kind.name()));
        let output = Command::new(env!("CARGO_BIN_EXE_ddm"))
            .arg("sample")
            .arg("--model")
            .arg(fixture())
            .args(["--seed", "5", "--num", "2", "--out"])
            .arg(&out)
            .args(&flags)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "ddm sample {flags:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let options = Flags::try_parse_from(std::iter::once("ddm").chain(flags.iter().copied()))
            .unwrap()
            .sampler
            .options()
            .unwrap();
        let expected: Vec<u32> = ddm::export::generate_on_runtime(&blob, options, 5, 2, None)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(read_bits(&out), expected, "ddm sample {flags:?}");
    }
}
