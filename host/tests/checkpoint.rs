//! Checkpoints round-trip exactly, survive a save interrupted at any point, and damaged
//! checkpoints or data are typed errors naming the file.

use std::path::{Path, PathBuf};

use candle_core::Device;
use ddm::data::{self, DatasetSpec, LoadOptions, Toy};
use ddm::model::{MlpConfig, ModelConfig};
use ddm::schedule_args::ScheduleSpec;
use ddm::train::checkpoint::{self, WeightSet, CONFIG_FILE, EMA_FILE, MODEL_FILE, OPTIMIZER_FILE};
use ddm::train::{Checkpoint, DataConfig, Objective, RunConfig, TrainConfig, Trainer};
use ddm::Error;

fn new_trainer(steps: u64) -> Trainer {
    let spec = DatasetSpec::Toy(Toy::Moons);
    let options = LoadOptions {
        toy_samples: 256,
        ..LoadOptions::default()
    };
    let data = data::load(&spec, &options).unwrap();
    let config = RunConfig::new(
        ModelConfig::Mlp(MlpConfig {
            hidden: 16,
            blocks: 1,
            time_dim: 8,
            norm_groups: 2,
            classes: 0,
        }),
        DataConfig::new(&spec, &options, &data),
        ScheduleSpec::default(),
        Objective::default(),
        TrainConfig {
            steps,
            batch_size: 32,
            warmup_steps: 3,
            weight_decay: 0.01,
            ..TrainConfig::default()
        },
    )
    .unwrap();
    Trainer::new(config, data, &Device::Cpu).unwrap()
}

fn trained(steps: u64, total: u64) -> Trainer {
    let mut trainer = new_trainer(total);
    for _ in 0..steps {
        assert!(trainer.step().unwrap().applied);
    }
    trainer
}

fn resume(dir: &Path) -> Trainer {
    let checkpoint = checkpoint::load(dir).unwrap();
    let data = checkpoint.config.data.load().unwrap();
    Trainer::from_checkpoint(checkpoint, data, &Device::Cpu).unwrap()
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
}

#[test]
fn round_trip_is_exact_and_resuming_equals_not_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let trainer = trained(5, 10);
    let saved = trainer.checkpoint().unwrap();
    checkpoint::save(dir.path(), &saved).unwrap();
    let loaded = checkpoint::load(dir.path()).unwrap();
    assert_eq!(loaded, saved);
    assert_eq!(loaded.config.progress.step, 5);
    // No staged file is left after a complete save.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".next") && !n.starts_with(".ddm")),
        "{names:?}"
    );

    let mut resumed = resume(dir.path());
    for _ in 0..5 {
        resumed.step().unwrap();
    }
    let straight = trained(10, 10);
    assert_eq!(
        resumed.checkpoint().unwrap(),
        straight.checkpoint().unwrap()
    );
    assert_eq!(
        checkpoint::read_weights(dir.path(), &saved.config, WeightSet::Ema).unwrap(),
        saved.ema
    );
}

/// The two checkpoints of a save interrupted at each phase: the committed one is loaded.
#[test]
fn an_interrupted_save_leaves_a_complete_checkpoint() {
    let old_dir = tempfile::tempdir().unwrap();
    let new_dir = tempfile::tempdir().unwrap();
    let old = trained(3, 10).checkpoint().unwrap();
    let new = trained(6, 10).checkpoint().unwrap();
    checkpoint::save(old_dir.path(), &old).unwrap();
    checkpoint::save(new_dir.path(), &new).unwrap();
    let tensor_files = [MODEL_FILE, EMA_FILE, OPTIMIZER_FILE];

    // Killed while staging: some new tensor files staged, config.json still old.
    let dir = tempfile::tempdir().unwrap();
    for name in tensor_files.iter().chain([&CONFIG_FILE]) {
        copy(&old_dir.path().join(name), &dir.path().join(name));
    }
    copy(
        &new_dir.path().join(MODEL_FILE),
        &dir.path().join(format!("{MODEL_FILE}.next")),
    );
    assert_eq!(checkpoint::load(dir.path()).unwrap(), old);

    // Killed after committing config.json, before (or while) renaming the staged files.
    for (i, name) in tensor_files.iter().enumerate() {
        let staged = dir.path().join(format!("{name}.next"));
        copy(&new_dir.path().join(name), &staged);
        if i == 0 {
            // The first rename happened.
            std::fs::rename(&staged, dir.path().join(name)).unwrap();
        }
    }
    copy(
        &new_dir.path().join(CONFIG_FILE),
        &dir.path().join(CONFIG_FILE),
    );
    assert_eq!(checkpoint::load(dir.path()).unwrap(), new);

    // A tensor file from another step and no staged copy: incomplete, a typed error.
    let dir = tempfile::tempdir().unwrap();
    for name in tensor_files {
        copy(&new_dir.path().join(name), &dir.path().join(name));
    }
    copy(&old_dir.path().join(EMA_FILE), &dir.path().join(EMA_FILE));
    copy(
        &new_dir.path().join(CONFIG_FILE),
        &dir.path().join(CONFIG_FILE),
    );
    let error = checkpoint::load(dir.path()).unwrap_err();
    assert_corrupt(&error, EMA_FILE, "holds step 3");
}

fn assert_corrupt(error: &Error, file: &str, needle: &str) {
    match error {
        Error::Corrupt { path, reason } => {
            assert!(path.ends_with(file), "{path:?} is not {file}");
            assert!(reason.contains(needle), "{needle:?} not in {reason:?}");
        }
        other => panic!("expected Corrupt({file}), got {other:?}"),
    }
}

/// Saves `checkpoint` into a fresh folder, lets `damage` change it, and returns the error of
/// loading it.
fn load_damaged(checkpoint: &Checkpoint, damage: impl FnOnce(&Path)) -> Error {
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(dir.path(), checkpoint).unwrap();
    damage(dir.path());
    checkpoint::load(dir.path()).unwrap_err()
}

#[test]
fn damaged_checkpoints_are_corrupt_errors_naming_the_file() {
    let good = trained(2, 10).checkpoint().unwrap();
    let file = |dir: &Path, name: &str| -> PathBuf { dir.join(name) };

    let error = load_damaged(&good, |d| {
        let bytes = std::fs::read(file(d, MODEL_FILE)).unwrap();
        std::fs::write(file(d, MODEL_FILE), &bytes[..bytes.len() / 2]).unwrap();
    });
    assert_corrupt(&error, MODEL_FILE, "not a safetensors file");

    let error = load_damaged(&good, |d| {
        std::fs::remove_file(file(d, OPTIMIZER_FILE)).unwrap()
    });
    assert_corrupt(&error, OPTIMIZER_FILE, "missing");

    let error = load_damaged(&good, |d| {
        std::fs::write(file(d, CONFIG_FILE), "{ not json").unwrap()
    });
    assert_corrupt(&error, CONFIG_FILE, "not valid JSON");

    let error = load_damaged(&good, |d| {
        let text = std::fs::read_to_string(file(d, CONFIG_FILE)).unwrap();
        let text = text.replacen("\"format_version\": 1", "\"format_version\": 99", 1);
        std::fs::write(file(d, CONFIG_FILE), text).unwrap();
    });
    assert_corrupt(&error, CONFIG_FILE, "format version 99");

    let error = load_damaged(&good, |d| {
        let text = std::fs::read_to_string(file(d, CONFIG_FILE)).unwrap();
        let text = text.replacen("\"batch_size\"", "\"batch_sizes\"", 1);
        std::fs::write(file(d, CONFIG_FILE), text).unwrap();
    });
    assert_corrupt(&error, CONFIG_FILE, "not a run configuration");

    let mut nan = good.clone();
    nan.ema.get_mut("in.weight").unwrap().data[3] = f32::NAN;
    let error = load_damaged(&nan, |_| {});
    assert_corrupt(&error, EMA_FILE, "NaN");

    let mut misshapen = good.clone();
    let weight = misshapen.model.get_mut("out.bias").unwrap();
    weight.data.push(0.0);
    weight.shape = vec![weight.data.len()];
    let error = load_damaged(&misshapen, |_| {});
    assert_corrupt(&error, MODEL_FILE, "out.bias");

    let mut extra = good.clone();
    let tensor = extra.optimizer.m["in.bias"].clone();
    extra.optimizer.m.insert("stray".into(), tensor);
    let error = load_damaged(&extra, |_| {});
    assert_corrupt(&error, OPTIMIZER_FILE, "stray");

    let missing = tempfile::tempdir().unwrap();
    assert!(matches!(
        checkpoint::load(missing.path()),
        Err(Error::Io { .. })
    ));
}

#[test]
fn damaged_or_changed_data_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    image::GrayImage::from_pixel(8, 8, image::Luma([200]))
        .save(images.join("a.png"))
        .unwrap();
    std::fs::write(images.join("b.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let spec: DatasetSpec = format!("folder:{}", images.display()).parse().unwrap();
    match data::load(&spec, &LoadOptions::default()) {
        Err(Error::Corrupt { path, .. }) => assert!(path.ends_with("b.png")),
        other => panic!("expected Corrupt(b.png), got {other:?}"),
    }

    // A run whose data changed since it started refuses to resume.
    std::fs::remove_file(images.join("b.png")).unwrap();
    let options = LoadOptions {
        image: data::ImageFormat::square(8, 1),
        ..LoadOptions::default()
    };
    let loaded = data::load(&spec, &options).unwrap();
    let config = DataConfig::new(&spec, &options, &loaded);
    image::GrayImage::from_pixel(8, 8, image::Luma([10]))
        .save(images.join("a.png"))
        .unwrap();
    match config.load() {
        Err(Error::Invalid(reason)) => assert!(reason.contains("changed"), "{reason}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}
