//! The evaluation run behind `ddm eval`: checks the samples, draws the reference and floor
//! sets, computes every metric for both and assembles the [`Report`].

use std::path::{Path, PathBuf};

use super::classifier::{sha256_hex, Architecture, Classifier, CommittedClassifier};
use super::floor::{disjoint_draw, gather_rows, DEFAULT_EVAL_SEED};
use super::frechet::frechet_distance_of;
use super::kid::kid;
use super::label_entropy::{entropy_nats, label_histogram};
use super::nearest::mean_nearest_distance;
use super::report::{Metric, Report, Value};
use super::toy::EXACT_W2_MAX;
use super::toy::{exact_w2, median_bandwidth, mmd2_rbf, mode_coverage, sliced_wasserstein};
use crate::data::{self, toy, DatasetSpec, LoadOptions, Split, Toy};
use crate::device::DeviceName;
use crate::error::{Error, Result};
use crate::npy::{self, Array};

/// Fewest samples `ddm eval` accepts: with fewer, every metric is mostly noise.
pub const MIN_SAMPLES: usize = 20;

/// Options of an evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// Evaluate the first `num` samples (all, up to what the floor allows, when `None`).
    pub num: Option<usize>,
    /// Folder of the MNIST / Fashion-MNIST IDX files ([`LoadOptions::data_dir`]).
    pub data_dir: Option<PathBuf>,
    /// Classifier weights to use instead of the committed ones.
    pub classifier: Option<PathBuf>,
    /// Seed of the floor's draw, KID's subsets and the toys' reference points.
    pub seed: u64,
    /// The class the samples were asked for: the reference and floor sets hold only real
    /// images of this class, and the report adds the fraction classified as it.
    pub class: Option<u32>,
    /// Where the classifier computes the features (the metrics themselves are host code).
    pub device: DeviceName,
}

impl Default for EvalOptions {
    /// All samples, no data dir, the committed classifier, [`DEFAULT_EVAL_SEED`], the CPU.
    fn default() -> Self {
        EvalOptions {
            num: None,
            data_dir: None,
            classifier: None,
            seed: DEFAULT_EVAL_SEED,
            class: None,
            device: DeviceName::Cpu,
        }
    }
}

/// The sample shapes `ddm eval` accepts for `spec`, for messages: `[n, 1, 8, 8] or [n, 64]`.
///
/// # Errors
/// [`Error::Invalid`] for data sets `ddm eval` does not support (image folders).
pub fn accepted_shapes(spec: &DatasetSpec) -> Result<String> {
    Ok(match spec {
        DatasetSpec::Optdigits => "[n, 1, 8, 8] or [n, 64]".into(),
        DatasetSpec::Mnist | DatasetSpec::FashionMnist => "[n, 1, 28, 28] or [n, 784]".into(),
        DatasetSpec::Toy(_) => "[n, 2]".into(),
        DatasetSpec::Folder(_) => {
            return Err(Error::Invalid(
                "ddm eval supports optdigits, mnist, fashion-mnist and toy:NAME, not folder: \
                 data sets"
                    .into(),
            ))
        }
    })
}

/// Checks that `samples` (read from `path`) has a shape of `spec`: `[n, 1, 8, 8]` or
/// `[n, 64]` for optdigits, `[n, 1, 28, 28]` or `[n, 784]` for MNIST-likes, `[n, 2]` for toys.
/// Returns the values per sample.
///
/// # Errors
/// [`Error::Corrupt`] naming `path` for any other shape; as [`accepted_shapes`].
pub fn check_shape(spec: &DatasetSpec, samples: &Array, path: &Path) -> Result<usize> {
    let expected = accepted_shapes(spec)?;
    let tail = &samples.shape[1.min(samples.shape.len())..];
    let fits = match spec {
        DatasetSpec::Optdigits => tail == [1, 8, 8] || tail == [64],
        DatasetSpec::Mnist | DatasetSpec::FashionMnist => tail == [1, 28, 28] || tail == [784],
        _ => tail == [2],
    };
    if samples.shape.len() < 2 || !fits {
        return Err(Error::corrupt(
            path,
            format!(
                "samples of shape {:?} do not fit {spec}: expected {expected}",
                samples.shape
            ),
        ));
    }
    Ok(samples.row_len())
}

/// Reads the samples file and evaluates it (see [`evaluate`]).
///
/// # Errors
/// As [`npy::read_f32`] (missing file, not `.npy`, not `f32`, empty, NaN) and [`evaluate`].
pub fn evaluate_file(spec: &DatasetSpec, path: &Path, options: &EvalOptions) -> Result<Report> {
    accepted_shapes(spec)?;
    let samples = npy::read_f32(path)?;
    evaluate(spec, &samples, path, options)
}

/// Evaluates `samples` (read from `source`) against `spec`'s real data: every metric for
/// the samples and for the floor (see the [module docs](super)).
///
/// # Errors
/// [`Error::Corrupt`] naming `source` for a wrong shape; [`Error::Invalid`] for fewer than
/// [`MIN_SAMPLES`] samples, `--num` larger than the file or than the floor allows; the data
/// loaders' and classifier's errors.
pub fn evaluate(
    spec: &DatasetSpec,
    samples: &Array,
    source: &Path,
    options: &EvalOptions,
) -> Result<Report> {
    let row_len = check_shape(spec, samples, source)?;
    let in_file = samples.rows();
    let mut notes = Vec::new();
    let requested = options.num.unwrap_or(in_file);
    if requested > in_file {
        return Err(Error::Invalid(format!(
            "--num {requested} asks for more samples than {} holds ({in_file})",
            source.display()
        )));
    }
    if requested < MIN_SAMPLES {
        return Err(Error::Invalid(format!(
            "{}: evaluating needs at least {MIN_SAMPLES} samples, got {requested}",
            source.display()
        )));
    }
    let mut report = match spec {
        DatasetSpec::Toy(_) if options.class.is_some() => {
            return Err(Error::Invalid(
                "--class evaluates image data sets (optdigits, mnist, fashion-mnist)".into(),
            ))
        }
        DatasetSpec::Toy(toy) => {
            let n = requested;
            let values = &samples.values[..n * row_len];
            toy_report(*toy, values, n, options, &mut notes)?
        }
        _ => image_report(spec, samples, row_len, requested, options, &mut notes)?,
    };
    let used = &samples.values[..report.n * row_len];
    report.value_range = used
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    report.outside_unit_interval = used.iter().filter(|v| v.abs() > 1.0).count();
    report.samples_file = source.display().to_string();
    report.samples_in_file = in_file;
    report.dataset = spec.to_string();
    report.seed = options.seed;
    report.notes = notes;
    Ok(report)
}

fn empty_report(n: usize) -> Report {
    Report {
        dataset: String::new(),
        samples_file: String::new(),
        n,
        samples_in_file: n,
        seed: 0,
        reference: String::new(),
        nearest_reference: None,
        classifier: None,
        value_range: (0.0, 0.0),
        outside_unit_interval: 0,
        notes: Vec::new(),
        metrics: Vec::new(),
    }
}

/// How many samples to evaluate given the reference pool: `requested`, or with no `--num`
/// as many as the floor allows (with a note).
fn cap_to_pool(
    requested: usize,
    explicit: bool,
    pool: usize,
    what: &str,
    notes: &mut Vec<String>,
) -> usize {
    let most = pool / 2;
    if requested > most && !explicit {
        notes.push(format!(
            "evaluated the first {most} samples: the floor needs 2n distinct real images and \
             {what} has {pool}"
        ));
        most
    } else {
        requested
    }
}

fn image_report(
    spec: &DatasetSpec,
    samples: &Array,
    row_len: usize,
    requested: usize,
    options: &EvalOptions,
    notes: &mut Vec<String>,
) -> Result<Report> {
    let architecture = Architecture::for_dataset(spec)?;
    let (classifier, classifier_info) = match &options.classifier {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let classifier = Classifier::from_safetensors(architecture, &bytes, path)?;
            (classifier, (path.display().to_string(), sha256_hex(&bytes)))
        }
        None => {
            let committed = CommittedClassifier::find(spec)?;
            (
                Classifier::committed(spec)?,
                (
                    format!("embedded {}", committed.path),
                    sha256_hex(committed.bytes),
                ),
            )
        }
    };
    let classifier = classifier.to_device(&options.device.open()?)?;
    let load = |split| {
        data::load(
            spec,
            &LoadOptions {
                data_dir: options.data_dir.clone(),
                split,
                ..LoadOptions::default()
            },
        )
    };
    let mut pool = load(if spec.has_splits() {
        Split::Test
    } else {
        Split::Train
    })?;
    let mut pool_name = if spec.has_splits() {
        format!("the {spec} test split")
    } else {
        format!("{spec} (no test split: all {} digits)", pool.len())
    };
    if let Some(class) = options.class {
        if class as usize >= architecture.classes {
            return Err(Error::Invalid(format!(
                "--class {class}: {spec} has classes 0..{}",
                architecture.classes - 1
            )));
        }
        pool = pool.only_class(class)?;
        pool_name = format!("class {class} of {pool_name}");
    }
    let n = cap_to_pool(
        requested,
        options.num.is_some(),
        pool.len(),
        &pool_name,
        notes,
    );
    let sets = disjoint_draw(pool.len(), n, options.seed)?;
    let reference_a = gather_rows(&pool.values, row_len, &sets.reference);
    let stand_in_b = gather_rows(&pool.values, row_len, &sets.stand_in);
    let sample_values = &samples.values[..n * row_len];

    let embedded_samples = classifier.embed(sample_values)?;
    let embedded_a = classifier.embed(&reference_a)?;
    let embedded_b = classifier.embed(&stand_in_b)?;
    let dim = embedded_a.dim;
    let fd = |x: &[f32]| frechet_distance_of(x, &embedded_a.features, dim);
    let kid_of = |x: &[f32]| kid(x, &embedded_a.features, dim, options.seed);
    let classes = architecture.classes;
    let histogram_samples = label_histogram(&embedded_samples.labels, classes);
    let histogram_b = label_histogram(&embedded_b.labels, classes);

    // Nearest training image: the train split, or for optdigits (one set, which the diffusion
    // model trains on) every digit outside B, for the samples and the floor alike.
    let (nearest_reference, nearest_description) = if spec.has_splits() {
        let train = load(Split::Train)?;
        let description = format!(
            "against the {} images of the {spec} train split",
            train.len()
        );
        (train.values, description)
    } else {
        let mut in_b = vec![false; pool.len()];
        for &i in &sets.stand_in {
            in_b[i] = true;
        }
        let outside: Vec<usize> = (0..pool.len()).filter(|&i| !in_b[i]).collect();
        let description = format!(
            "against the {} {spec} digits outside floor set B (the diffusion model's training \
             set, less the digits that stand in for samples in the floor)",
            outside.len()
        );
        (gather_rows(&pool.values, row_len, &outside), description)
    };
    let nearest = |x: &[f32]| mean_nearest_distance(x, &nearest_reference, row_len);

    if !spec.has_splits() {
        notes.push(format!(
            "{spec} has no test split: reference and floor sets come from the same 1797 digits \
             a diffusion model trains on"
        ));
    }
    let mut report = empty_report(n);
    report.reference =
        format!("set A = {n} images of {pool_name}; floor set B = {n} other images of it");
    report.nearest_reference = Some(nearest_description);
    report.classifier = Some(classifier_info);
    report.metrics = vec![
        Metric {
            key: "fd",
            label: "Frechet distance",
            better: "lower",
            samples: Value::Scalar(fd(&embedded_samples.features)?),
            floor: Value::Scalar(fd(&embedded_b.features)?),
        },
        Metric {
            key: "kid",
            label: "KID",
            better: "lower (unbiased: ~0 ± se at the floor)",
            samples: Value::MeanSe(kid_of(&embedded_samples.features)?.value),
            floor: Value::MeanSe(kid_of(&embedded_b.features)?.value),
        },
        Metric {
            key: "label_entropy",
            label: "label entropy (nats)",
            better: "higher (max ln 10 = 2.3026)",
            samples: Value::Scalar(entropy_nats(&histogram_samples)),
            floor: Value::Scalar(entropy_nats(&histogram_b)),
        },
        Metric {
            key: "label_histogram",
            label: "predicted labels 0..9",
            better: "like the floor",
            samples: Value::Histogram(histogram_samples),
            floor: Value::Histogram(histogram_b),
        },
        Metric {
            key: "nearest_train_l2",
            label: "nearest training image (L2)",
            better: "near the floor (far below: copies)",
            samples: Value::Scalar(nearest(sample_values)?),
            floor: Value::Scalar(nearest(&stand_in_b)?),
        },
    ];
    if let Some(class) = options.class {
        let accuracy = |labels: &[u32]| {
            labels.iter().filter(|&&y| y == class).count() as f64 / labels.len().max(1) as f64
        };
        report.metrics.insert(
            0,
            Metric {
                key: "class_accuracy",
                label: "classified as the class",
                better: "higher (the floor: the classifier on real images of it)",
                samples: Value::Scalar(accuracy(&embedded_samples.labels)),
                floor: Value::Scalar(accuracy(&embedded_b.labels)),
            },
        );
    }
    Ok(report)
}

fn toy_report(
    toy: Toy,
    values: &[f32],
    n: usize,
    options: &EvalOptions,
    notes: &mut Vec<String>,
) -> Result<Report> {
    // 2n fresh points: A the first n, B the next n (distinct draws of the generator).
    let pool = toy::generate(toy, 2 * n, options.seed)?;
    let (reference_a, stand_in_b) = pool.values.split_at(2 * n);
    let labels_a = pool.labels.as_ref().map(|labels| &labels[..n]);
    let bandwidth = median_bandwidth(reference_a)?;
    let w2 = |x: &[f32]| -> Result<Value> {
        if n <= EXACT_W2_MAX {
            Ok(Value::Scalar(exact_w2(x, reference_a)?))
        } else {
            Ok(Value::Unavailable)
        }
    };
    if n > EXACT_W2_MAX {
        notes.push(format!(
            "exact W2 is computed for n <= {EXACT_W2_MAX} (evaluate fewer with --num)"
        ));
    }
    let coverage = |x: &[f32]| -> Result<Value> {
        let c = mode_coverage(toy, x, reference_a, labels_a)?;
        Ok(Value::Coverage {
            covered: c.covered,
            modes: c.modes,
        })
    };
    let mut report = empty_report(n);
    report.reference = format!(
        "set A = {n} points of toy:{toy} generated with seed {}; floor set B = the next {n} \
         points of the same draw",
        options.seed
    );
    report.metrics = vec![
        Metric {
            key: "sliced_w2",
            label: "sliced W2",
            better: "lower",
            samples: Value::Scalar(sliced_wasserstein(values, reference_a)?),
            floor: Value::Scalar(sliced_wasserstein(stand_in_b, reference_a)?),
        },
        Metric {
            key: "w2",
            label: "exact W2",
            better: "lower",
            samples: w2(values)?,
            floor: w2(stand_in_b)?,
        },
        Metric {
            key: "mmd_rbf",
            label: "RBF-MMD^2",
            better: "lower (unbiased: ~0 at the floor)",
            samples: Value::Scalar(mmd2_rbf(values, reference_a, bandwidth)?),
            floor: Value::Scalar(mmd2_rbf(stand_in_b, reference_a, bandwidth)?),
        },
        Metric {
            key: "mode_coverage",
            label: "modes covered",
            better: "higher",
            samples: coverage(values)?,
            floor: coverage(stand_in_b)?,
        },
    ];
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(shape: &[usize]) -> Array {
        Array {
            shape: shape.to_vec(),
            values: vec![0.0; shape.iter().product()],
        }
    }

    #[test]
    fn shapes_are_checked_per_data_set() {
        let path = Path::new("s.npy");
        let digits = DatasetSpec::Optdigits;
        assert_eq!(
            check_shape(&digits, &array(&[3, 1, 8, 8]), path).unwrap(),
            64
        );
        assert_eq!(check_shape(&digits, &array(&[3, 64]), path).unwrap(), 64);
        let fashion = DatasetSpec::FashionMnist;
        assert_eq!(
            check_shape(&fashion, &array(&[3, 1, 28, 28]), path).unwrap(),
            784
        );
        assert_eq!(check_shape(&fashion, &array(&[3, 784]), path).unwrap(), 784);
        let moons: DatasetSpec = "toy:moons".parse().unwrap();
        assert_eq!(check_shape(&moons, &array(&[3, 2]), path).unwrap(), 2);
        for (spec, shape) in [
            (&digits, vec![3, 1, 28, 28]),
            (&digits, vec![64]),
            (&digits, vec![3, 8, 8]),
            (&fashion, vec![3, 64]),
            (&moons, vec![3, 3]),
            (&moons, vec![6]),
        ] {
            let err = check_shape(spec, &array(&shape), path).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.starts_with("s.npy: "), "{text}");
            assert!(text.contains(&format!("{shape:?}")), "{text}");
            assert!(text.contains(&accepted_shapes(spec).unwrap()), "{text}");
        }
        let folder: DatasetSpec = "folder:x".parse().unwrap();
        assert!(matches!(
            check_shape(&folder, &array(&[3, 2]), path),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn sample_counts_are_checked() {
        let spec: DatasetSpec = "toy:8gaussians".parse().unwrap();
        let path = Path::new("few.npy");
        let few = array(&[19, 2]);
        let err = evaluate(&spec, &few, path, &EvalOptions::default()).unwrap_err();
        assert!(err.to_string().contains("at least 20"), "{err}");
        let some = array(&[30, 2]);
        let options = EvalOptions {
            num: Some(31),
            ..EvalOptions::default()
        };
        let err = evaluate(&spec, &some, path, &options).unwrap_err();
        assert!(err.to_string().contains("--num 31"), "{err}");
    }

    #[test]
    fn optdigits_is_capped_to_half_the_pool_without_num_and_refused_with_it() {
        let all = data::optdigits::load().unwrap();
        let samples = Array {
            shape: vec![1797, 64],
            values: all.values.clone(),
        };
        let report = evaluate(
            &DatasetSpec::Optdigits,
            &samples,
            Path::new("all.npy"),
            &EvalOptions::default(),
        )
        .unwrap();
        assert_eq!((report.n, report.samples_in_file), (898, 1797));
        assert!(
            report.notes.iter().any(|n| n.contains("first 898")),
            "{:?}",
            report.notes
        );
        let options = EvalOptions {
            num: Some(899),
            ..EvalOptions::default()
        };
        let err = evaluate(
            &DatasetSpec::Optdigits,
            &samples,
            Path::new("all.npy"),
            &options,
        )
        .unwrap_err();
        assert!(err.to_string().contains("at most 898"), "{err}");
    }
}
