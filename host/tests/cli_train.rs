//! `ddm train` and `ddm sample --checkpoint`, end to end: determinism, resume after a kill,
//! NaN handling and the output formats.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ddm::npy;
use ddm::train::checkpoint::{self, CONFIG_FILE, EMA_FILE, MODEL_FILE, OPTIMIZER_FILE};

fn ddm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddm"))
        .args(args)
        .output()
        .expect("the ddm binary runs")
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn assert_failure(output: &Output, needle: &str) {
    assert!(!output.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A small, fast MLP run on moons into `dir`, plus `extra` options.
fn toy_args<'a>(dir: &'a str, steps: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = toy_base(dir, steps, extra);
    args.extend_from_slice(&["--warmup", "5", "--checkpoint-every", "10"]);
    args
}

/// [`toy_args`] without warm-up and checkpoint interval.
fn toy_base<'a>(dir: &'a str, steps: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--dataset",
        "toy:moons",
        "--toy-samples",
        "512",
        "--model",
        "mlp",
        "--width",
        "32",
        "--depth",
        "1",
        "--steps",
        steps,
        "--batch-size",
        "32",
        "--preview-every",
        "0",
        "--preview-samples",
        "16",
        "--seed",
        "4",
        "--out",
        dir,
    ];
    args.extend_from_slice(extra);
    args
}

/// The bytes of every file of a checkpoint.
fn checkpoint_bytes(dir: &Path) -> Vec<Vec<u8>> {
    [CONFIG_FILE, MODEL_FILE, EMA_FILE, OPTIMIZER_FILE]
        .iter()
        .map(|name| std::fs::read(dir.join(name)).unwrap())
        .collect()
}

#[test]
fn same_command_same_bits_and_resume_after_a_stop_is_identical() {
    let root = tempfile::tempdir().unwrap();
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_string();
    let (a, b, c) = (path("a"), path("b"), path("c"));
    assert_success(&ddm(&toy_args(&a, "60", &[])));
    assert_success(&ddm(&toy_args(&b, "60", &[])));
    assert_eq!(
        checkpoint_bytes(Path::new(&a)),
        checkpoint_bytes(Path::new(&b))
    );

    // Stopped after step 25 (as if killed right after that checkpoint), then resumed.
    assert_success(&ddm(&toy_args(&c, "60", &["--stop-after", "25"])));
    let stopped = checkpoint::read_config(Path::new(&c)).unwrap();
    assert_eq!(stopped.progress.step, 25);
    let output = ddm(&["train", "--resume", "--out", &c]);
    assert_success(&output);
    assert_eq!(
        checkpoint_bytes(Path::new(&a)),
        checkpoint_bytes(Path::new(&c))
    );
    assert!(Path::new(&a).join("loss.png").is_file());
    // The final preview is a scatter plot of the 2-D samples.
    assert!(Path::new(&a).join("samples-step000060.png").is_file());

    // A finished run says so; a new run refuses an occupied folder; --resume takes no
    // run-defining option.
    let output = ddm(&["train", "--resume", "--out", &c]);
    assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("already taken all 60 steps"));
    assert_failure(&ddm(&toy_args(&c, "60", &[])), "already holds a run");
    assert_failure(
        &ddm(&["train", "--resume", "--out", &c, "--steps", "5"]),
        "cannot be used with",
    );
}

#[test]
fn resume_after_sigkill_is_bit_identical() {
    let root = tempfile::tempdir().unwrap();
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_string();
    let (killed, straight) = (path("killed"), path("straight"));
    let steps = "3000";
    let mut child = Command::new(env!("CARGO_BIN_EXE_ddm"))
        .args(toy_args(&killed, steps, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a checkpoint past step 20, then kill -9 at whatever point the run is.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no checkpoint within 120 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        if let Ok(config) = checkpoint::read_config(Path::new(&killed)) {
            if config.progress.step >= 20 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = checkpoint::load(Path::new(&killed)).unwrap();
    assert!(at_kill.config.progress.step < 3000);

    assert_success(&ddm(&["train", "--resume", "--out", &killed]));
    assert_success(&ddm(&toy_args(&straight, steps, &[])));
    assert_eq!(
        checkpoint_bytes(Path::new(&killed)),
        checkpoint_bytes(Path::new(&straight))
    );
}

#[test]
fn a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let dir_text = dir.to_str().unwrap();
    // A learning rate of 1e30 without clipping sends the weights to ~1e30 in one step.
    let output = ddm(&toy_base(
        dir_text,
        "50",
        &[
            "--lr",
            "1e30",
            "--lr-min",
            "0",
            "--warmup",
            "0",
            "--grad-clip",
            "0",
            "--checkpoint-every",
            "1",
        ],
    ));
    assert_failure(&output, "the training loss became");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("last good checkpoint (step 1)"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let saved = checkpoint::load(&dir).unwrap();
    assert_eq!(saved.config.progress.step, 1);
}

#[test]
fn sampling_a_checkpoint_writes_npy_for_any_data_and_png_for_images() {
    let root = tempfile::tempdir().unwrap();
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_string();
    let toy = path("toy");
    assert_success(&ddm(&toy_args(&toy, "20", &[])));
    let npy_out = path("toy.npy");
    let output = ddm(&[
        "sample",
        "--checkpoint",
        &toy,
        "--sampler",
        "dpmpp-2m",
        "--steps",
        "5",
        "--num",
        "10",
        "--out",
        &npy_out,
    ]);
    assert_success(&output);
    let samples = npy::read_f32(Path::new(&npy_out)).unwrap();
    assert_eq!(samples.shape, vec![10, 2]);
    assert_failure(
        &ddm(&["sample", "--checkpoint", &toy, "--out", &path("toy.png")]),
        "a PNG grid needs image samples",
    );
    assert_failure(
        &ddm(&[
            "sample",
            "--checkpoint",
            &toy,
            "--beta-schedule",
            "cosine",
            "--out",
            &npy_out,
        ]),
        "a checkpoint brings its own schedule",
    );

    let digits = path("digits");
    let output = ddm(&[
        "train",
        "--dataset",
        "optdigits",
        "--model",
        "mlp",
        "--width",
        "32",
        "--depth",
        "1",
        "--steps",
        "10",
        "--batch-size",
        "16",
        "--preview-every",
        "5",
        "--preview-samples",
        "4",
        "--beta-schedule",
        "cosine",
        "--prediction",
        "v",
        "--out",
        &digits,
    ]);
    assert_success(&output);
    assert!(Path::new(&digits).join("samples-step000005.png").is_file());
    let png = path("digits.png");
    for extra in [&[][..], &["--no-ema"][..]] {
        let mut args = vec![
            "sample",
            "--checkpoint",
            &digits,
            "--steps",
            "4",
            "--num",
            "6",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", &png]);
        assert_success(&ddm(&args));
        // 6 tiles in 3 columns and 2 rows of 8x8 pixels magnified 4 times, 2-pixel gaps.
        let image = image::open(&png).unwrap();
        assert_eq!((image.width(), image.height()), (3 * 34 + 2, 2 * 34 + 2));
    }
    let npy_digits = path("digits.npy");
    assert_success(&ddm(&[
        "sample",
        "--checkpoint",
        &digits,
        "--steps",
        "3",
        "--num",
        "5",
        "--out",
        &npy_digits,
    ]));
    assert_eq!(
        npy::read_f32(Path::new(&npy_digits)).unwrap().shape,
        vec![5, 1, 8, 8]
    );
    assert_failure(
        &ddm(&[
            "sample",
            "--checkpoint",
            &path("missing"),
            "--out",
            &npy_digits,
        ]),
        "config.json",
    );
}

#[test]
fn data_parallel_ranks_train_as_one_device_and_resume_with_another_count() {
    let root = tempfile::tempdir().unwrap();
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_string();
    let (one, two, mixed) = (path("one"), path("two"), path("mixed"));
    assert_success(&ddm(&toy_args(&one, "40", &[])));
    let output = ddm(&toy_args(&two, "40", &["--ranks", "2"]));
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("data parallel: 2 ranks on CPU threads"),
        "{stdout}"
    );
    // Two ranks stopped at 20 steps, continued on four.
    assert_success(&ddm(&toy_args(
        &mixed,
        "40",
        &["--ranks", "2", "--stop-after", "20"],
    )));
    assert_success(&ddm(&[
        "train", "--resume", "--ranks", "4", "--out", &mixed,
    ]));
    let reference = checkpoint::read_config(Path::new(&one)).unwrap().progress;
    for dir in [&two, &mixed] {
        let progress = checkpoint::read_config(Path::new(dir)).unwrap().progress;
        assert_eq!(progress.step, 40);
        // The same batches, summed in another order: every step's loss within float rounding
        // grown over 40 steps, far below what a wrong shard or a missing average moves.
        for (step, (got, want)) in progress.losses.iter().zip(&reference.losses).enumerate() {
            assert!(
                ((got - want) / want).abs() < 1e-3,
                "{dir}, step {step}: loss {got}, one device {want}"
            );
        }
    }
    // Rank 0 alone writes: the folder holds what a one-device run's holds.
    let files = |dir: &str| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    assert_eq!(files(&two), files(&one));
    // 32 samples do not split into 3 equal shards.
    assert_failure(
        &ddm(&toy_args(&path("three"), "40", &["--ranks", "3"])),
        "divisible by 3",
    );
    assert_failure(
        &ddm(&toy_args(&path("gpu"), "40", &["--device", "cuda:7"])),
        "--device cuda:7",
    );
}

#[test]
fn a_variance_exploding_run_chooses_its_levels_by_the_rules_and_samples_with_each_sampler() {
    let root = tempfile::tempdir().unwrap();
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_string();
    let digits = path("ve");
    let train = |extra: &[&str], out: &str| {
        let mut args = vec![
            "train",
            "--dataset",
            "optdigits",
            "--model",
            "mlp",
            "--width",
            "32",
            "--depth",
            "1",
            "--steps",
            "10",
            "--batch-size",
            "16",
            "--preview-every",
            "0",
            "--preview-samples",
            "4",
            "--beta-schedule",
            "ve",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        ddm(&args)
    };
    assert_success(&train(&[], &digits));
    // optdigits: 17 grey levels 2/16 apart in [-1, 1]; the largest distance between two of
    // the first 2000 digits 9.63; NCSNv2's ratio for 64 dimensions, 1.361, gives 16 levels.
    let config = checkpoint::read_config(Path::new(&digits)).unwrap();
    let sigmas = config.schedule.sigmas.unwrap();
    assert_eq!(sigmas.sigma_min, 0.125);
    assert!(
        (sigmas.sigma_max - 9.63).abs() < 0.01,
        "{}",
        sigmas.sigma_max
    );
    assert_eq!(config.schedule.train_steps, 16);
    let levels = config.schedule.noise_levels().unwrap();
    assert_eq!((levels.sigma_min(), levels.len()), (0.125, 16));
    for (sampler, steps) in [
        ("pc", "16"),
        ("pf-ode", "7"),
        ("langevin", "33"),
        ("ddim", "4"),
    ] {
        let out = path(&format!("{sampler}.npy"));
        assert_success(&ddm(&[
            "sample",
            "--checkpoint",
            &digits,
            "--sampler",
            sampler,
            "--steps",
            steps,
            "--num",
            "3",
            "--clip-sample",
            "1",
            "--out",
            &out,
        ]));
        let samples = npy::read_f32(Path::new(&out)).unwrap();
        assert_eq!(samples.shape, vec![3, 1, 8, 8], "{sampler}");
        assert!(samples.values.iter().all(|v| v.abs() <= 1.0), "{sampler}");
    }
    // The default sampler's 50 steps are capped at the model's 16.
    let out = path("default.npy");
    assert_success(&ddm(&[
        "sample",
        "--checkpoint",
        &digits,
        "--num",
        "2",
        "--out",
        &out,
    ]));
    // A resumed run keeps its sigmas.
    assert_failure(
        &ddm(&["train", "--resume", "--out", &digits, "--sigma-max", "3"]),
        "a resumed or fine-tuned run keeps its own",
    );
    // Given sigmas and levels are kept; two-dimensional data has no NCSNv2 level count.
    let given = path("given");
    assert_success(&train(
        &[
            "--sigma-min",
            "0.02",
            "--sigma-max",
            "12",
            "--train-steps",
            "100",
        ],
        &given,
    ));
    let config = checkpoint::read_config(Path::new(&given)).unwrap();
    let sigmas = config.schedule.sigmas.unwrap();
    assert_eq!((sigmas.sigma_min, sigmas.sigma_max), (0.02, 12.0));
    assert_eq!(config.schedule.train_steps, 100);
    let toy = path("toy");
    assert_failure(
        &ddm(&toy_args(&toy, "5", &["--beta-schedule", "ve"])),
        "at least 5 dimensions",
    );
    assert_failure(
        &ddm(&toy_args(&toy, "5", &["--sigma-max", "3"])),
        "apply to --beta-schedule ve only",
    );
    // The level samplers walk a variance-preserving model too.
    let vp = path("vp");
    assert_success(&ddm(&toy_args(&vp, "5", &[])));
    for sampler in ["pc", "pf-ode"] {
        assert_success(&ddm(&[
            "sample",
            "--checkpoint",
            &vp,
            "--sampler",
            sampler,
            "--steps",
            "20",
            "--num",
            "4",
            "--out",
            &path("x.npy"),
        ]));
    }
}
