//! The autoencoder of latent diffusion: its loss against an independent computation,
//! training, the latent scale, checkpoints (resume, corruption, the wrong kind of run) and
//! the `train-autoencoder` and `reconstruct` commands end to end.

use candle_core::{Device, Tensor};
use ddm::autoencoder::checkpoint;
use ddm::autoencoder::trainer::{latent_scale, loss_on_batch};
use ddm::autoencoder::{
    psnr, AutoencoderConfig, AutoencoderLoss, AutoencoderRun, AutoencoderTrainer, Codec,
};
use ddm::data::{self, Dataset, DatasetSpec, LoadOptions};
use ddm::model::forward;
use ddm::train::run::Training;
use ddm::train::{DataConfig, TrainConfig};
use ddm::Error;

mod common;
use common::{assert_success, ddm, small_autoencoder_args};

/// A small autoencoder for 8x8 digits: factor 2, latent [2, 4, 4].
fn small() -> AutoencoderConfig {
    AutoencoderConfig {
        channels: 8,
        channel_mults: vec![1, 2],
        blocks_per_level: 1,
        groups: 4,
        latent_channels: 2,
    }
}

fn digits() -> Dataset {
    data::load(&DatasetSpec::Optdigits, &LoadOptions::default()).unwrap()
}

fn run_config(kl_weight: f64, steps: u64) -> AutoencoderRun {
    let data = digits();
    AutoencoderRun::new(
        small(),
        DataConfig::new(&DatasetSpec::Optdigits, &LoadOptions::default(), &data),
        AutoencoderLoss { kl_weight },
        TrainConfig {
            steps,
            batch_size: 32,
            lr: 2e-3,
            warmup_steps: 10,
            checkpoint_every: 1000,
            preview_every: 0,
            ..TrainConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn the_loss_is_l1_plus_the_weighted_kl_per_value() {
    // An independent computation of the loss from the two networks' outputs, in f64: the
    // reconstruction term sum |x - x'| and the KL term sum (mu^2 + var - 1 - log var) / 2,
    // each per image, their weighted sum divided by the 64 values of an image, averaged.
    let kl_weight = 0.3;
    let config = run_config(kl_weight, 10);
    let device = Device::Cpu;
    let trainer = AutoencoderTrainer::new(config.clone(), digits(), &device).unwrap();
    let params = trainer.params();
    let (images, noise) = trainer.batch(0);
    let n = 32;
    let loss = loss_on_batch(&config, params, &images, &noise, &device)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();

    let x = Tensor::from_vec(images.clone(), (n, 1, 8, 8), &device).unwrap();
    let t = Tensor::zeros(n, candle_core::DType::F32, &device).unwrap();
    let moments: Vec<f32> = forward(&config.encoder, params, &x, &t, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let latent = 2 * 4 * 4;
    let (mut z, mut kl) = (vec![0f32; n * latent], vec![0f64; n]);
    for b in 0..n {
        for i in 0..latent {
            let mean = f64::from(moments[b * 2 * latent + i]);
            let logvar = f64::from(moments[b * 2 * latent + latent + i]).clamp(-30.0, 20.0);
            z[b * latent + i] =
                (mean + (logvar / 2.0).exp() * f64::from(noise[b * latent + i])) as f32;
            kl[b] += (mean * mean + logvar.exp() - 1.0 - logvar) / 2.0;
        }
    }
    let z = Tensor::from_vec(z, (n, 2, 4, 4), &device).unwrap();
    let decoded: Vec<f32> = forward(&config.decoder, params, &z, &t, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let expected = (0..n)
        .map(|b| {
            let l1: f64 = (0..64)
                .map(|i| f64::from(images[b * 64 + i] - decoded[b * 64 + i]).abs())
                .sum();
            (l1 + kl_weight * kl[b]) / 64.0
        })
        .sum::<f64>()
        / n as f64;
    assert!(
        (f64::from(loss) - expected).abs() < 1e-5 * expected.max(1.0),
        "{loss} against {expected}"
    );
    // The KL term counts: without it the loss is smaller by kl_weight * mean KL / 64.
    let mean_kl = kl.iter().sum::<f64>() / n as f64;
    assert!(kl_weight * mean_kl / 64.0 > 1e-3, "{mean_kl}");
    let unweighted = loss_on_batch(&run_config(0.0, 10), params, &images, &noise, &device)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        (f64::from(loss - unweighted) - kl_weight * mean_kl / 64.0).abs() < 1e-5,
        "{loss} - {unweighted}"
    );

    let short = loss_on_batch(&config, params, &images[..100], &noise, &device);
    assert!(matches!(short, Err(Error::Invalid(_))));
}

#[test]
fn training_learns_to_reconstruct_and_scales_the_latents() {
    let device = Device::Cpu;
    let data = digits();
    let mut trainer =
        AutoencoderTrainer::new(run_config(1e-6, 300), data.clone(), &device).unwrap();
    let held = &data.values[..200 * 64];
    let before = psnr(
        held,
        &trainer.codec(true).unwrap().reconstruct(held).unwrap(),
    );
    while !trainer.is_finished() {
        assert!(trainer.step().unwrap().applied);
    }
    let codec = trainer.codec(true).unwrap();
    let after = psnr(held, &codec.reconstruct(held).unwrap());
    // optdigits' pixels are 0.125 apart; 17 dB is an RMS error of 0.28 (about two grey levels).
    assert!(
        after > 17.0 && after > before + 8.0,
        "PSNR {before:.2} -> {after:.2} dB"
    );
    let losses = &trainer.config().progress.losses;
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    assert!(
        mean(&losses[280..]) < 0.5 * mean(&losses[..20]),
        "{losses:?}"
    );

    // The scale, measured after the last step, brings the latents to unit variance.
    let scale = trainer.config().latent_scale.expect("measured at the end");
    let first = &data.values[..data.len().min(5000) * 64];
    let latents = codec.encode(first).unwrap();
    let m = latents.iter().map(|&v| f64::from(v)).sum::<f64>() / latents.len() as f64;
    let var = latents
        .iter()
        .map(|&v| (f64::from(v * scale) - m * f64::from(scale)).powi(2))
        .sum::<f64>()
        / latents.len() as f64;
    assert!((var - 1.0).abs() < 1e-3, "{var}");
    assert_eq!(latent_scale(&codec, first).unwrap(), scale);
}

#[test]
fn a_resumed_run_ends_bit_identical_and_checkpoints_refuse_corruption() {
    let device = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let config = run_config(1e-6, 12);
    let mut straight = AutoencoderTrainer::new(config.clone(), digits(), &device).unwrap();
    for _ in 0..12 {
        straight.step().unwrap();
    }
    let mut first = AutoencoderTrainer::new(config, digits(), &device).unwrap();
    for _ in 0..5 {
        first.step().unwrap();
    }
    Training::save(&first, dir.path()).unwrap();
    drop(first);
    let saved = checkpoint::load(dir.path()).unwrap();
    assert_eq!(saved.config.progress.step, 5);
    assert_eq!(saved.config.latent_scale, None);
    let mut resumed = AutoencoderTrainer::from_checkpoint(saved, digits(), &device).unwrap();
    while !resumed.is_finished() {
        resumed.step().unwrap();
    }
    assert_eq!(
        resumed.checkpoint().unwrap(),
        straight.checkpoint().unwrap(),
        "weights, EMA, moments, losses and latent scale"
    );

    // A checkpoint round-trips; a truncated tensor file and a denoiser's config are refused
    // with typed errors naming the file.
    Training::save(&resumed, dir.path()).unwrap();
    assert_eq!(
        checkpoint::load(dir.path()).unwrap(),
        resumed.checkpoint().unwrap()
    );
    let ema = dir.path().join("ema.safetensors");
    let bytes = std::fs::read(&ema).unwrap();
    std::fs::write(&ema, &bytes[..bytes.len() / 2]).unwrap();
    match Codec::load(dir.path(), &device) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, ema),
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
    match ddm::train::checkpoint::read_config(dir.path()) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("autoencoder"), "{reason}"),
        other => panic!("a denoiser reader must refuse it, got {other:?}"),
    }
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let wrong = text.replacen("\"latent_channels\": 2", "\"latent_channels\": 3", 1);
    assert_ne!(wrong, text);
    std::fs::write(&config, wrong).unwrap();
    assert!(matches!(
        checkpoint::read_config(dir.path()),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn train_autoencoder_and_reconstruct_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("ae");
    let run = run.to_str().unwrap();
    let common = small_autoencoder_args(&[
        "--steps",
        "20",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "10",
        "--preview-samples",
        "8",
    ]);
    let mut args = common.to_vec();
    args.extend(["--out", run, "--stop-after", "10"]);
    assert_success(&ddm(&args));
    let resumed = ddm(&[
        "--threads",
        "1",
        "train-autoencoder",
        "--resume",
        "--out",
        run,
    ]);
    assert_success(&resumed);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(stdout.contains("from step 10 to 20"), "{stdout}");
    assert!(stdout.contains("reconstruction PSNR"), "{stdout}");
    assert!(std::path::Path::new(run)
        .join("reconstructions-step000020.png")
        .is_file());

    let straight = dir.path().join("straight");
    let mut args = common.to_vec();
    args.extend(["--out", straight.to_str().unwrap()]);
    assert_success(&ddm(&args));
    for file in [
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
    ] {
        assert_eq!(
            std::fs::read(straight.join(file)).unwrap(),
            std::fs::read(std::path::Path::new(run).join(file)).unwrap(),
            "{file}: a run resumed after a kill ends as an uninterrupted one"
        );
    }
    // A second run into the same folder is refused.
    let again = ddm(&args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a run"));

    let out = dir.path().join("rec.npy");
    let output = ddm(&[
        "reconstruct",
        "--autoencoder",
        run,
        "--num",
        "100",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_success(&output);
    let array = ddm::npy::read_f32(&out).unwrap();
    assert_eq!(array.shape, vec![100, 1, 8, 8]);
    assert!(array.values.iter().all(|v| v.abs() <= 1.0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("PSNR"));

    // A denoiser's command refuses the autoencoder's folder, and the reverse.
    let sample = ddm(&[
        "sample",
        "--checkpoint",
        run,
        "--num",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!sample.status.success());
    assert!(String::from_utf8_lossy(&sample.stderr).contains("autoencoder"));
    let denoiser = dir.path().join("denoiser");
    assert_success(&ddm(&[
        "--threads",
        "1",
        "train",
        "--dataset",
        "toy:moons",
        "--toy-samples",
        "64",
        "--model",
        "mlp",
        "--width",
        "8",
        "--depth",
        "1",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--preview-every",
        "0",
        "--out",
        denoiser.to_str().unwrap(),
    ]));
    let wrong = ddm(&[
        "reconstruct",
        "--autoencoder",
        denoiser.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not an autoencoder's"));
}

#[test]
fn colour_images_from_a_folder_at_32x32() {
    // A user's own photos: 24 RGB images of 40x30 pixels, resized to 32x32, three channels,
    // downsampled by 4 to a latent of 3 x 8 x 8, reconstructed in colour.
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for i in 0..24u32 {
        let image = image::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([
                (x * 6 + i) as u8,
                (y * 8) as u8,
                ((x + y) * 3 + 7 * i) as u8,
            ])
        });
        image.save(photos.join(format!("{i:02}.png"))).unwrap();
    }
    let run = dir.path().join("ae");
    let dataset = format!("folder:{}", photos.display());
    let output = ddm(&[
        "--threads",
        "1",
        "train-autoencoder",
        "--dataset",
        &dataset,
        "--image-size",
        "32",
        "--image-channels",
        "3",
        "--width",
        "8",
        "--groups",
        "4",
        "--latent-channels",
        "3",
        "--steps",
        "6",
        "--batch-size",
        "4",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("latent [3, 8, 8]"), "{stdout}");
    assert!(stdout.contains("on 24 training images"), "{stdout}");
    let config = checkpoint::read_config(&run).unwrap();
    assert_eq!(config.encoder.input_shape(), &[3, 32, 32]);
    assert_eq!(config.latent_shape(), &[3, 8, 8]);
    let out = dir.path().join("rec.npy");
    assert_success(&ddm(&[
        "reconstruct",
        "--autoencoder",
        run.to_str().unwrap(),
        "--num",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(ddm::npy::read_f32(&out).unwrap().shape, vec![10, 3, 32, 32]);
    let grid = run.join("reconstructions-step000006.png");
    let grid = image::open(&grid).unwrap();
    assert!(grid.color().has_color(), "previews in colour");
}
