//! `ddm distill` end to end on a small toy teacher: the student run folder, its rounds and
//! teachers, resume after a stop, and `ddm sample` / `ddm export` using the student's sampler
//! without flags.

use std::path::Path;
use std::process::{Command, Output};

use candle_core::Device;
use ddm::npy;
use ddm::train::checkpoint::{
    self, CONFIG_FILE, EMA_FILE, MODEL_FILE, OPTIMIZER_FILE, TEACHER_FILE,
};
use ddm::train::{DistillMethod, Trainer};
use ddm_core::timesteps::GivenTimesteps;
use ddm_core::Spacing;

fn ddm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddm"))
        .args(args)
        .output()
        .expect("the ddm binary runs")
}

fn assert_success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_failure(output: &Output, needle: &str) {
    assert!(!output.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Trains a small MLP on moons predicting `prediction` into `dir`.
fn teacher(dir: &str, prediction: &str) {
    assert_success(&ddm(&[
        "train",
        "--dataset",
        "toy:moons",
        "--toy-samples",
        "256",
        "--model",
        "mlp",
        "--width",
        "32",
        "--depth",
        "1",
        "--steps",
        "40",
        "--batch-size",
        "32",
        "--warmup",
        "5",
        "--preview-every",
        "0",
        "--preview-samples",
        "8",
        "--prediction",
        prediction,
        "--out",
        dir,
    ]));
}

/// Distils `teacher` progressively into `out` in 1 step from 4 teacher steps (two rounds of 3
/// updates), or with `--method consistency` in 6 updates.
fn distill<'a>(teacher: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "distill",
        "--method",
        "progressive",
        "--teacher",
        teacher,
        "--steps",
        "1",
        "--teacher-steps",
        "4",
        "--updates",
        "6",
        "--batch-size",
        "16",
        "--warmup",
        "1",
        "--checkpoint-every",
        "2",
        "--preview-samples",
        "8",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

fn files(dir: &Path) -> Vec<Vec<u8>> {
    [
        CONFIG_FILE,
        MODEL_FILE,
        EMA_FILE,
        OPTIMIZER_FILE,
        TEACHER_FILE,
    ]
    .iter()
    .map(|name| std::fs::read(dir.join(name)).unwrap())
    .collect()
}

#[test]
fn a_student_is_a_run_folder_that_resumes_bit_identically() {
    let root = tempfile::tempdir().unwrap();
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_string();
    let (t, a, b) = (path("teacher"), path("a"), path("b"));
    teacher(&t, "v");
    let stdout = assert_success(&ddm(&distill(&t, &a, &[])));
    assert!(
        stdout.contains("progressive distillation") && stdout.contains("2 round(s) of 3 updates"),
        "{stdout}"
    );
    let config = checkpoint::read_config(Path::new(&a)).unwrap();
    let how = config.distill.clone().expect("a distilled run");
    assert_eq!(
        (how.method, how.steps, how.teacher_steps),
        (DistillMethod::Progressive, 1, 4)
    );
    assert_eq!(how.teacher_step, 40);
    assert_eq!(config.progress.step, 6);
    assert_eq!(config.default_sampler(), Some(how.sampler()));
    assert!(Path::new(&a).join("loss.png").is_file());
    assert!(Path::new(&a).join("samples-step000006.png").is_file());

    // Stopped after step 4 (in the second round, whose teacher is the first round's EMA),
    // then resumed: the same bits as the uninterrupted run.
    assert_success(&ddm(&distill(&t, &b, &["--stop-after", "4"])));
    assert_eq!(
        checkpoint::read_config(Path::new(&b))
            .unwrap()
            .progress
            .step,
        4
    );
    assert_success(&ddm(&["distill", "--resume", "--out", &b]));
    assert_eq!(files(Path::new(&a)), files(Path::new(&b)));
    assert_failure(&ddm(&distill(&t, &a, &[])), "already holds a run");
    assert_failure(
        &ddm(&["distill", "--resume", "--out", &b, "--steps", "2"]),
        "cannot be used with",
    );
}

#[test]
fn each_round_ends_by_making_the_students_average_its_teacher() {
    let root = tempfile::tempdir().unwrap();
    let t = root.path().join("teacher");
    teacher(t.to_str().unwrap(), "x0");
    let out = root.path().join("s");
    // Stop at step 0's checkpoint is not possible; take one step to get the fresh folder.
    assert_success(&ddm(&distill(
        t.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--stop-after", "1"],
    )));
    let checkpoint = checkpoint::load(&out).unwrap();
    let teacher_weights = checkpoint::read_weights(
        &t,
        &checkpoint::read_config(&t).unwrap(),
        checkpoint::WeightSet::Ema,
    )
    .unwrap();
    assert_eq!(checkpoint.teacher.as_ref(), Some(&teacher_weights));
    let data = checkpoint.config.data.load().unwrap();
    let mut trainer = Trainer::from_checkpoint(checkpoint, data, &Device::Cpu).unwrap();
    let teacher_of = |trainer: &Trainer| trainer.teacher().unwrap().to_weights().unwrap();
    // Steps 2 and 3 finish round 0: then, and only then, the teacher changes, to the EMA.
    trainer.step().unwrap();
    assert_eq!(teacher_of(&trainer), teacher_weights);
    trainer.step().unwrap();
    assert_ne!(teacher_of(&trainer), teacher_weights);
    assert_eq!(
        teacher_of(&trainer),
        trainer.ema_params().to_weights().unwrap()
    );
    let round_one = teacher_of(&trainer);
    // The last round's end is the run's: its teacher stays.
    for _ in 0..3 {
        trainer.step().unwrap();
    }
    assert!(trainer.is_finished());
    assert_eq!(teacher_of(&trainer), round_one);
}

#[test]
fn sample_and_export_use_the_students_sampler_without_flags() {
    let root = tempfile::tempdir().unwrap();
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_string();
    let (t, s) = (path("teacher"), path("student"));
    teacher(&t, "v");
    let mut consistency = distill(&t, &s, &[]);
    consistency[2] = "consistency";
    assert_success(&ddm(&consistency));
    let config = checkpoint::read_config(Path::new(&s)).unwrap();
    assert_eq!(config.distill.as_ref().unwrap().rounds(), 1);
    assert_eq!(config.progress.step, 6);

    let sample = |out: &str, extra: &[&str]| {
        let mut args = vec!["sample", "--checkpoint", &s, "--num", "16", "--out", out];
        args.extend_from_slice(extra);
        assert_success(&ddm(&args));
        npy::read_f32(Path::new(out)).unwrap().values
    };
    let own = sample(&path("own.npy"), &[]);
    let explicit = sample(
        &path("explicit.npy"),
        &[
            "--sampler",
            "ddim",
            "--steps",
            "1",
            "--spacing",
            "trailing",
            "--eta",
            "0",
        ],
    );
    let fifty = sample(&path("fifty.npy"), &["--steps", "50"]);
    assert_eq!(own, explicit);
    assert_ne!(own, fifty);
    // The teacher, sampled without flags, takes ddm sample's default (50 DDIM steps).
    let teacher_default = {
        let out = path("teacher.npy");
        assert_success(&ddm(&[
            "sample",
            "--checkpoint",
            &t,
            "--num",
            "16",
            "--out",
            &out,
        ]));
        npy::read_f32(Path::new(&out)).unwrap().values
    };
    let teacher_fifty = {
        let out = path("teacher50.npy");
        assert_success(&ddm(&[
            "sample",
            "--checkpoint",
            &t,
            "--num",
            "16",
            "--steps",
            "50",
            "--out",
            &out,
        ]));
        npy::read_f32(Path::new(&out)).unwrap().values
    };
    assert_eq!(teacher_default, teacher_fifty);

    let blob = path("student.ddm");
    let stdout = assert_success(&ddm(&[
        "export",
        "--checkpoint",
        &s,
        "--precision",
        "f32",
        "--out",
        &blob,
    ]));
    assert!(
        stdout.contains("default sampler DDIM, 1 steps, trailing spacing"),
        "{stdout}"
    );
    // The blob on the device runtime generates what the checkpoint generates, to float
    // rounding.
    let on_runtime = {
        let out = path("runtime.npy");
        assert_success(&ddm(&[
            "sample", "--model", &blob, "--num", "16", "--out", &out,
        ]));
        npy::read_f32(Path::new(&out)).unwrap().values
    };
    for (a, b) in on_runtime.iter().zip(&own) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn bad_distillations_get_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_string();
    let t = path("eps");
    teacher(&t, "eps");
    assert_failure(&ddm(&distill(&t, &path("s"), &[])), "v or x0");
    let v = path("v");
    teacher(&v, "v");
    let out = path("s");
    let mut six = distill(&v, &out, &[]);
    let position = six.iter().position(|&a| a == "--teacher-steps").unwrap();
    six[position + 1] = "6";
    assert_failure(&ddm(&six), "times a power of two");
    assert_failure(
        &ddm(&distill(&path("missing"), &path("s"), &[])),
        "the teacher",
    );
    assert!(!Path::new(&path("s")).join(CONFIG_FILE).exists());

    // A student whose config.json was edited into an invalid sampler is refused by every
    // command that reads it, never sampled on other timesteps.
    assert_success(&ddm(&distill(&v, &out, &[])));
    let config_file = Path::new(&out).join(CONFIG_FILE);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_file).unwrap()).unwrap();
    config["distill"]["timesteps"] = serde_json::json!([999, 999]);
    std::fs::write(&config_file, serde_json::to_vec(&config).unwrap()).unwrap();
    let npy = path("x.npy");
    let sample = ["sample", "--checkpoint", &out, "--num", "4", "--out", &npy];
    assert_failure(&ddm(&sample), "timesteps [999, 999]");
    let blob = path("x.ddm");
    assert_failure(
        &ddm(&[
            "export",
            "--checkpoint",
            &out,
            "--precision",
            "int8",
            "--out",
            &blob,
        ]),
        "timesteps [999, 999]",
    );
    assert_failure(&ddm(&["distill", "--resume", "--out", &out]), "timesteps");
    assert!(!Path::new(&npy).exists() && !Path::new(&blob).exists());
}

#[test]
fn the_students_eta_and_timesteps_are_measured_where_a_classifier_exists_and_given_otherwise() {
    let root = tempfile::tempdir().unwrap();
    let path = |name: &str| root.path().join(name).to_str().unwrap().to_string();
    let t = path("digits");
    assert_success(&ddm(&[
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
        "30",
        "--prediction",
        "v",
        "--beta-schedule",
        "cosine",
        "--preview-every",
        "0",
        "--preview-samples",
        "4",
        "--out",
        &t,
    ]));
    let s = path("student");
    let stdout = assert_success(&ddm(&[
        "distill",
        "--teacher",
        &t,
        "--steps",
        "2",
        "--teacher-steps",
        "4",
        "--updates",
        "4",
        "--preview-samples",
        "4",
        "--out",
        &s,
    ]));
    // "student eta: E (measured ...: eta 0: FD a, eta 0.5: FD b, eta 1: FD c, eta ...)": the
    // coarse candidates, then the pattern search around the best.
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{stdout}"))
            .to_string()
    };
    let first_pass = check_eta_search(&line("student eta:"), 0.0);
    let config = checkpoint::read_config(Path::new(&s)).unwrap();
    // After the timesteps, eta is measured again with them, and that is the one kept.
    let best = check_eta_search(&line("student eta with these timesteps:"), first_pass);
    assert!([first_pass, best]
        .iter()
        .all(|eta| (0.0..=1.0).contains(eta)));
    assert_eq!(config.distill.as_ref().unwrap().eta, Some(best));
    assert_eq!(config.default_sampler().unwrap().eta, best);

    // Then the timesteps, on the teacher's grid of 4 (999, 749, 499, 249), the first kept
    // at T - 1: "student timesteps: [999, t], FD a against the trailing timesteps' b (n sets
    // ...)", with the trailing pair (999, 499) among those measured and never better.
    let timesteps_line = line("student timesteps:");
    let chosen = config.distill.as_ref().unwrap().timesteps.clone().unwrap();
    assert_eq!(chosen.len(), 2);
    assert_eq!(chosen[0], 999);
    assert!([749, 499, 249].contains(&chosen[1]), "{chosen:?}");
    let figures: Vec<f64> = timesteps_line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|part| part.contains('.'))
        .map(|part| part.parse().unwrap())
        .collect();
    assert!(figures[0] <= figures[1], "{timesteps_line}");
    assert!(
        timesteps_line.contains("(3 sets measured"),
        "{timesteps_line}"
    );
    let sampler = config.default_sampler().unwrap();
    assert_eq!(
        sampler.spacing,
        Spacing::Given(GivenTimesteps::new(&chosen).unwrap())
    );
    assert!(
        line("student sampler:").contains(&format!("timesteps 999,{}", chosen[1])),
        "{stdout}"
    );
    // Sampling the student uses them without flags, as --timesteps gives them; the blob
    // stores them and the device runtime samples with them.
    let sample = |out: &str, extra: &[&str]| {
        let mut args = vec!["sample", "--num", "8", "--out", out];
        args.extend_from_slice(extra);
        assert_success(&ddm(&args));
        npy::read_f32(Path::new(out)).unwrap().values
    };
    let given = format!("999,{}", chosen[1]);
    let eta = best.to_string();
    let own = sample(&path("own.npy"), &["--checkpoint", &s]);
    let flags = [
        "--checkpoint",
        &s,
        "--sampler",
        "ddim",
        "--timesteps",
        &given,
        "--eta",
        &eta,
    ];
    assert_eq!(own, sample(&path("flags.npy"), &flags));
    let other = if chosen[1] == 499 {
        "999,749"
    } else {
        "999,499"
    };
    let mut changed = flags;
    changed[5] = other;
    assert_ne!(own, sample(&path("other.npy"), &changed));
    let blob = path("student.ddm");
    let export = assert_success(&ddm(&[
        "export",
        "--checkpoint",
        &s,
        "--precision",
        "f32",
        "--out",
        &blob,
    ]));
    assert!(
        export.contains(&format!("DDIM, 2 steps, timesteps 999,{}", chosen[1])),
        "{export}"
    );
    let bytes = std::fs::read(&blob).unwrap();
    let stored = ddm_firmware::Blob::parse(&bytes)
        .unwrap()
        .sampler_defaults();
    assert_eq!(stored, sampler);
    let on_runtime = sample(&path("runtime.npy"), &["--model", &blob]);
    for (a, b) in on_runtime.iter().zip(&own) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }

    // --measure-again measures a finished student's sampler again (here the same settings:
    // the measurement's noise is fixed) and refuses a new distillation.
    let again = assert_success(&ddm(&[
        "distill",
        "--resume",
        "--measure-again",
        "--out",
        &s,
    ]));
    assert!(again.contains("has already taken all"), "{again}");
    assert!(
        again.contains("student eta with these timesteps:"),
        "{again}"
    );
    let remeasured = checkpoint::read_config(Path::new(&s)).unwrap();
    assert_eq!(remeasured.default_sampler().unwrap(), sampler);
    assert_failure(
        &ddm(&["distill", "--measure-again", "--out", &path("none")]),
        "--resume",
    );

    // Given, it is kept; a toy has no classifier and keeps eta 0.
    let given = path("given");
    assert_success(&ddm(&[
        "distill",
        "--teacher",
        &t,
        "--steps",
        "2",
        "--teacher-steps",
        "4",
        "--updates",
        "4",
        "--preview-samples",
        "4",
        "--eta",
        "0.25",
        "--timesteps",
        "999,300",
        "--out",
        &given,
    ]));
    let config = checkpoint::read_config(Path::new(&given)).unwrap();
    assert_eq!(config.default_sampler().unwrap().eta, 0.25);
    // Given timesteps are kept too (no measurement), and checked.
    assert_eq!(
        config.distill.as_ref().unwrap().timesteps,
        Some(vec![999, 300])
    );
    let moons = path("moons");
    teacher(&moons, "v");
    let stdout = assert_success(&ddm(&distill(&moons, &path("toy"), &[])));
    assert!(
        stdout.contains("student eta: 0 (no committed classifier"),
        "{stdout}"
    );
    assert!(!stdout.contains("student timesteps:"), "{stdout}");
    let wrong = path("wrong");
    for timesteps in ["999,400,100", "400,999"] {
        let args = distill(&moons, &wrong, &["--timesteps", timesteps]);
        assert_failure(&ddm(&args), "strictly");
    }
}

/// Checks one "student eta: E (measured against ...: eta e: FD f, ...)" line: the coarse
/// candidates 0, 0.5 and 1 first, then the sampler's eta before the search (`current`) where it
/// is none of them, then distinct ones of the pattern search (each 0.25, 0.1 or 0.05 from a
/// candidate measured before it), the chosen eta the best of them; returns it.
fn check_eta_search(eta_line: &str, current: f32) -> f32 {
    let (_, measured) = eta_line.split_once("images: ").unwrap();
    let scores: Vec<(f32, f64)> = measured
        .trim_end_matches(')')
        .split(", ")
        .map(|part| {
            let (eta, fd) = part
                .strip_prefix("eta ")
                .and_then(|rest| rest.split_once(": FD "))
                .unwrap_or_else(|| panic!("{eta_line}"));
            (eta.parse().unwrap(), fd.parse().unwrap())
        })
        .collect();
    let etas: Vec<f32> = scores.iter().map(|s| s.0).collect();
    assert_eq!(etas[..3], [0.0, 0.5, 1.0], "{eta_line}");
    let start = if etas[..3].contains(&current) {
        3
    } else {
        assert_eq!(etas[3], current, "{eta_line}");
        4
    };
    // Each step of the search measures at least one new eta next to the coarse best (0.25 from
    // 0, 0.5 or 1 is always in range and new), at most two.
    assert!(
        etas.len() > start && etas.len() <= start + 2 * 3,
        "{eta_line}"
    );
    for (i, eta) in etas.iter().enumerate().skip(start) {
        assert!((0.0..=1.0).contains(eta), "{eta_line}");
        assert!(!etas[..i].contains(eta), "{eta_line}");
        let hundredths = (eta * 100.0).round() as i32;
        assert!(
            etas[..i].iter().any(|before| {
                let apart = (hundredths - (before * 100.0).round() as i32).abs();
                [25, 10, 5].contains(&apart)
            }),
            "{eta_line}"
        );
    }
    let best = scores.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
    let chosen: f32 = eta_line
        .split_once(": ")
        .unwrap()
        .1
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(chosen, best, "{eta_line}");
    best
}
