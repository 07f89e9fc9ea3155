//! One meaning per sampler flag: every sampler name, with the same `ddm sample --model` flags,
//! gives the same bytes from `ddm sample --model` (the runtime on the host), from `ddm hil`'s
//! host run and from the Cortex-M4 under QEMU. Between them the flags set every sampler
//! setting away from the blob's (the fixture's DDIM: trailing, clipped at 1).
//! `host/tests/sample_model_flags.rs` runs the same flags through the `ddm sample --model`
//! binary and checks it writes these bytes too.
//!
//! Needs `qemu-system-arm` and the `thumbv7em-none-eabihf` target, like every QEMU test.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use ddm::sampler_args::BlobSamplerArgs;
use ddm_core::SamplerKind;

/// The sampler flags of `ddm sample --model` and `ddm hil`, parsed as both parse them.
#[derive(Debug, Parser)]
struct Flags {
    #[command(flatten)]
    sampler: BlobSamplerArgs,
}

const SEED: &str = "5";
const NUM: usize = 2;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/optdigits-mlp-int8.ddm")
}

/// The flags for `kind`: its name, 3 steps and settings that differ from the blob's.
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

fn parse(flags: &[&str]) -> ddm_core::SamplerOptions {
    Flags::try_parse_from(std::iter::once("ddm").chain(flags.iter().copied()))
        .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
        .sampler
        .options()
        .unwrap()
}

/// What `ddm sample --model BLOB --seed SEED --num NUM` writes for `options`, as bits.
fn ddm_sample(blob: &[u8], options: ddm_core::SamplerOptions) -> Vec<u32> {
    ddm::export::generate_on_runtime(blob, options, SEED.parse().unwrap(), NUM, None)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn read_npy(path: &Path) -> Vec<u32> {
    let array = ddm::npy::read_f32(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    array.values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn every_sampler_name_gives_the_same_bytes_from_ddm_sample_ddm_hil_and_the_device() {
    let blob = std::fs::read(fixture()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut samples = Vec::new();
    for kind in SamplerKind::ALL {
        let flags = flags(kind);
        let options = parse(&flags);
        assert_eq!(options.kind, Some(kind));
        // `ddm sample --model`: the same function on the same options.
        let sample = ddm_sample(&blob, options);
        assert_ne!(
            sample,
            ddm_sample(&blob, parse(&flags[..4])),
            "{flags:?}: the settings must change the sample, or this test shows nothing"
        );

        let out_dir = dir.path().join(kind.name());
        let output = Command::new(env!("CARGO_BIN_EXE_ddm-hil"))
            .arg("--model")
            .arg(fixture())
            .args([
                "--seed",
                SEED,
                "--num",
                &NUM.to_string(),
                "--timeout",
                "300",
            ])
            .arg("--out-dir")
            .arg(&out_dir)
            .args(&flags)
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "ddm hil {flags:?} failed:\n{log}");
        assert!(log.contains("sample(s) x 3 steps bit-identical"), "{log}");
        let hil_host = read_npy(&out_dir.join("host.npy"));
        let device = read_npy(&out_dir.join("device.npy"));
        assert_eq!(
            hil_host, sample,
            "{flags:?}: ddm hil's host run and ddm sample differ"
        );
        assert_eq!(
            device, sample,
            "{flags:?}: the device and ddm sample differ"
        );
        samples.push(sample);
    }
    // Each sampler computed something of its own.
    assert_ne!(samples[0], samples[1]);
    assert_ne!(samples[1], samples[2]);
}
