//! Latent diffusion end to end on optdigits: an autoencoder, a denoiser trained on its scaled
//! latents (`ddm train --latent`), resumed bit-identically, sampled into decoded images; what
//! is refused (an unfinished or changed autoencoder, distillation); exported with its decoder
//! into one blob that generates on the device runtime what the checkpoint does.

use std::path::Path;
use std::process::Output;

use candle_core::Device;
use ddm::autoencoder::LatentSpace;
use ddm::data::{self, DatasetSpec, LoadOptions};
use ddm::train::checkpoint;

mod common;
use common::{assert_failure, assert_success, ddm, small_autoencoder_args};

/// A small autoencoder of optdigits (latent [2, 4, 4]) trained for `steps` into `dir`.
fn autoencoder(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--steps",
        "40",
        "--batch-size",
        "32",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ddm(&small_autoencoder_args(&args))
}

fn latent_run<'a>(ae: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--threads",
        "1",
        "train",
        "--dataset",
        "optdigits",
        "--latent",
        ae,
        "--model",
        "mlp",
        "--width",
        "32",
        "--depth",
        "1",
        "--steps",
        "20",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "10",
        "--preview-samples",
        "4",
        "--preview-steps",
        "2",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_denoiser_learns_scaled_latents_and_samples_decoded_images() {
    let dir = tempfile::tempdir().unwrap();
    let ae = dir.path().join("ae");
    assert_success(&autoencoder(&ae, &[]));
    let ae = ae.to_str().unwrap();

    // The data set a latent run trains on: the posterior means times the latent scale.
    let device = Device::Cpu;
    let (space, codec) = LatentSpace::open(Path::new(ae), &device).unwrap();
    assert_eq!(space.latent_shape, vec![2, 4, 4]);
    assert_eq!(space.image_shape, vec![1, 8, 8]);
    let digits = data::load(&DatasetSpec::Optdigits, &LoadOptions::default()).unwrap();
    let latents = space.encode(&codec, &digits).unwrap();
    assert_eq!(latents.shape, space.latent_shape);
    assert_eq!(latents.len(), digits.len());
    assert_eq!(latents.labels, digits.labels);
    let first = &digits.values[..10 * 64];
    let means = codec.encode(first).unwrap();
    for (scaled, mean) in latents.values.iter().zip(&means) {
        assert_eq!(*scaled, mean * space.scale);
    }
    let n = latents.len() as f64;
    let mean = latents.values.iter().map(|&v| f64::from(v)).sum::<f64>() / n / 32.0;
    let var = latents
        .values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / (n * 32.0);
    assert!((var - 1.0).abs() < 0.01, "scaled latents' variance {var}");
    let decoded = space.decode(&codec, &latents.values[..10 * 32]).unwrap();
    let reconstructed = codec.reconstruct(first).unwrap();
    let worst = decoded
        .iter()
        .zip(&reconstructed)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "decode undoes the scale: {worst}");

    // A latent run, killed after 10 steps and resumed, ends as an uninterrupted one.
    let killed = dir.path().join("killed");
    let killed = killed.to_str().unwrap();
    assert_success(&ddm(&latent_run(ae, killed, &["--stop-after", "10"])));
    let resumed = ddm(&["--threads", "1", "train", "--resume", "--out", killed]);
    assert_success(&resumed);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(stdout.contains("in the latent space of"), "{stdout}");
    let straight = dir.path().join("straight");
    let straight = straight.to_str().unwrap();
    assert_success(&ddm(&latent_run(ae, straight, &[])));
    for file in [
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
    ] {
        assert_eq!(
            std::fs::read(Path::new(straight).join(file)).unwrap(),
            std::fs::read(Path::new(killed).join(file)).unwrap(),
            "{file}"
        );
    }
    let config = checkpoint::read_config(Path::new(straight)).unwrap();
    let expected = LatentSpace {
        fingerprint: ddm::train::config::fingerprint(&latents),
        ..space.clone()
    };
    assert_eq!(config.latent.as_ref(), Some(&expected));
    assert_eq!(config.graph.input_shape(), &[2, 4, 4]);
    assert_eq!(
        config.data.shape,
        vec![1, 8, 8],
        "the data is still the images"
    );
    assert!(Path::new(straight).join("samples-step000020.png").is_file());
    // Previews sample the latents unclipped (a denoiser of images clips them to [-1, 1]).
    let options = ddm::train::run::preview_options(&config);
    assert_eq!(options.settings.clip_sample, Some(None));
    let images = checkpoint::read_config(Path::new(killed)).unwrap();
    let images = ddm::train::RunConfig {
        latent: None,
        ..images
    };
    let options = ddm::train::run::preview_options(&images);
    assert_eq!(options.settings.clip_sample, Some(Some(1.0)));

    // Samples come out as decoded images, for PNG grids and ddm eval alike.
    let npy = dir.path().join("samples.npy");
    let npy = npy.to_str().unwrap();
    let args = [
        "sample",
        "--checkpoint",
        straight,
        "--num",
        "24",
        "--steps",
        "5",
    ];
    assert_success(&ddm(&[&args[..], &["--out", npy]].concat()));
    let samples = ddm::npy::read_f32(Path::new(npy)).unwrap();
    assert_eq!(samples.shape, vec![24, 1, 8, 8]);
    assert!(
        samples.values.iter().all(|v| v.abs() <= 1.0),
        "decoded into the data range"
    );
    let png = dir.path().join("samples.png");
    assert_success(&ddm(
        &[&args[..], &["--out", png.to_str().unwrap()]].concat()
    ));
    assert_success(&ddm(&["eval", "--dataset", "optdigits", "--samples", npy]));

    // Export: one blob holds the denoiser and the decoder (the latent scale folded into its
    // first layer); the device runtime on the host generates what the checkpoint does, up to
    // the float kernels' rounding.
    let sampler = ["--sampler", "ddim", "--steps", "5", "--spacing", "trailing"];
    let checkpoint_npy = dir.path().join("checkpoint.npy");
    let checkpoint_npy = checkpoint_npy.to_str().unwrap();
    assert_success(&ddm(&[
        &[
            "sample",
            "--checkpoint",
            straight,
            "--num",
            "6",
            "--seed",
            "3",
        ][..],
        &sampler,
        &["--out", checkpoint_npy],
    ]
    .concat()));
    let blob = dir.path().join("x.ddm");
    let blob = blob.to_str().unwrap();
    let export = ddm(&[
        "export",
        "--checkpoint",
        straight,
        "--precision",
        "f32",
        "--out",
        blob,
    ]);
    assert_success(&export);
    let stdout = String::from_utf8_lossy(&export.stdout);
    assert!(
        stdout.contains("decoder          ") && stdout.contains("MACs per image"),
        "{stdout}"
    );
    let bytes = std::fs::read(blob).unwrap();
    let parsed = ddm_firmware::Blob::parse(&bytes).unwrap();
    assert!(parsed.decoder().is_some());
    assert_eq!(parsed.sample_len(), 32);
    assert_eq!(parsed.image_len(), 64);
    let blob_npy = dir.path().join("blob.npy");
    let blob_npy = blob_npy.to_str().unwrap();
    let sampled = ddm(&[
        &["sample", "--model", blob, "--num", "6", "--seed", "3"][..],
        &sampler,
        &["--out", blob_npy],
    ]
    .concat());
    assert_success(&sampled);
    let stdout = String::from_utf8_lossy(&sampled.stdout);
    assert!(stdout.contains("decoded into images [1, 8, 8]"), "{stdout}");
    let on_device = ddm::npy::read_f32(Path::new(blob_npy)).unwrap();
    let on_host = ddm::npy::read_f32(Path::new(checkpoint_npy)).unwrap();
    assert_eq!(on_device.shape, vec![6, 1, 8, 8]);
    assert_eq!(on_device.shape, on_host.shape);
    let worst = on_device
        .values
        .iter()
        .zip(&on_host.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "blob and checkpoint differ by {worst}");
    assert!(
        on_host.values.iter().any(|v| v.abs() < 0.99),
        "not all clamped"
    );
    // int8: both networks calibrated, the decoder on the latents the model generates.
    let int8 = ddm(&[
        "export",
        "--checkpoint",
        straight,
        "--precision",
        "int8",
        "--calib",
        "16",
        "--out",
        blob,
    ]);
    assert_success(&int8);
    let stdout = String::from_utf8_lossy(&int8.stdout);
    assert!(stdout.contains("decoded image:"), "{stdout}");

    // Not yet: distillation.
    let student = dir.path().join("student");
    let distill = ddm(&[
        "distill",
        "--teacher",
        straight,
        "--steps",
        "2",
        "--out",
        student.to_str().unwrap(),
    ]);
    assert_failure(&distill, "latent diffusion model");

    // Latents that encode differently on resume (another device) are refused.
    let run_config = Path::new(straight).join("config.json");
    let text = std::fs::read_to_string(&run_config).unwrap();
    let other = text.replacen(&expected.fingerprint, "0123456789abcdef", 1);
    assert_ne!(other, text);
    std::fs::write(&run_config, other).unwrap();
    assert_failure(
        &ddm(&["train", "--resume", "--out", straight]),
        "encodes the training data differently",
    );
    std::fs::write(&run_config, text).unwrap();

    // An autoencoder whose folder changed under the run is refused, not decoded with.
    let ae_config = Path::new(ae).join("config.json");
    let text = std::fs::read_to_string(&ae_config).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let scale = value["latent_scale"].as_f64().unwrap();
    let changed = text.replacen(
        &format!("\"latent_scale\": {}", value["latent_scale"]),
        &format!("\"latent_scale\": {}", scale * 2.0),
        1,
    );
    assert_ne!(changed, text);
    std::fs::write(&ae_config, changed).unwrap();
    assert_failure(
        &ddm(&[&args[..], &["--out", npy]].concat()),
        "changed since this run encoded its data",
    );
}

#[test]
fn an_unfinished_autoencoder_has_no_latent_space() {
    let dir = tempfile::tempdir().unwrap();
    let ae = dir.path().join("ae");
    assert_success(&autoencoder(
        &ae,
        &["--checkpoint-every", "10", "--stop-after", "10"],
    ));
    let out = dir.path().join("ldm");
    let run = ddm(&latent_run(
        ae.to_str().unwrap(),
        out.to_str().unwrap(),
        &[],
    ));
    assert_failure(&run, "has not finished training");
    assert!(!out.join("config.json").exists());
}
