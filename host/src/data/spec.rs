//! Naming a data set on the command line and loading it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::folder::{self, ImageFormat};
use super::idx::{self, Split, FASHION_MNIST_SYSTEM_DIR};
use super::toy::{self, Toy, DEFAULT_TOY_SAMPLES};
use super::{optdigits, Dataset};
use crate::error::{Error, Result};

/// The forms a data set spec can take, for help texts and error messages.
pub const SPEC_FORMS: &str = "optdigits, fashion-mnist, mnist, folder:PATH, \
     toy:NAME (NAME: 8gaussians, moons, swissroll, checkerboard)";

/// Which data set to load, as named on the command line.
///
/// The string forms ([`FromStr`] / [`Display`](fmt::Display), which round-trip) are
/// `optdigits`, `fashion-mnist`, `mnist`, `folder:PATH` and `toy:NAME`; the keywords are ASCII
/// case-insensitive, `PATH` is taken as written. A loaded [`Dataset`]'s `name` is the spec's
/// display form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DatasetSpec {
    /// The embedded 8x8 digits ([`optdigits`]), shape `[1, 8, 8]`, 1797 samples, 10 classes.
    Optdigits,
    /// Fashion-MNIST in IDX format ([`idx`]), shape `[1, 28, 28]`, 10 classes; from
    /// [`LoadOptions::data_dir`] or else [`FASHION_MNIST_SYSTEM_DIR`].
    FashionMnist,
    /// MNIST in IDX format ([`idx`]), shape `[1, 28, 28]`, 10 classes; from
    /// [`LoadOptions::data_dir`] (required).
    Mnist,
    /// A folder of PNG/JPEG images ([`folder`]), shape `[C, H, W]` from [`LoadOptions::image`];
    /// labelled when its images sit in one sub-folder per class.
    Folder(PathBuf),
    /// A generated 2-D toy ([`toy`]), shape `[2]`.
    Toy(Toy),
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetSpec::Optdigits => f.write_str("optdigits"),
            DatasetSpec::FashionMnist => f.write_str("fashion-mnist"),
            DatasetSpec::Mnist => f.write_str("mnist"),
            DatasetSpec::Folder(path) => write!(f, "folder:{}", path.display()),
            DatasetSpec::Toy(toy) => write!(f, "toy:{toy}"),
        }
    }
}

impl FromStr for DatasetSpec {
    type Err = Error;

    /// Parses one of the forms in [`SPEC_FORMS`].
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the input and listing the valid forms (or, for `toy:`, the
    /// valid toys), also for an empty `folder:` path.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let invalid =
            || Error::Invalid(format!("unknown data set {s:?}; valid forms: {SPEC_FORMS}"));
        if let Some((kind, rest)) = s.split_once(':') {
            return if kind.eq_ignore_ascii_case("folder") {
                if rest.is_empty() {
                    Err(Error::Invalid(
                        "folder: needs a path, e.g. folder:./images".to_owned(),
                    ))
                } else {
                    Ok(DatasetSpec::Folder(PathBuf::from(rest)))
                }
            } else if kind.eq_ignore_ascii_case("toy") {
                rest.parse().map(DatasetSpec::Toy)
            } else {
                Err(invalid())
            };
        }
        match s.to_ascii_lowercase().as_str() {
            "optdigits" => Ok(DatasetSpec::Optdigits),
            "fashion-mnist" => Ok(DatasetSpec::FashionMnist),
            "mnist" => Ok(DatasetSpec::Mnist),
            _ => Err(invalid()),
        }
    }
}

impl DatasetSpec {
    /// Whether the data set has a fixed train/test division ([`Split`] applies).
    pub fn has_splits(&self) -> bool {
        matches!(self, DatasetSpec::FashionMnist | DatasetSpec::Mnist)
    }
}

/// How to load a [`DatasetSpec`]; each field applies only to some data sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Folder holding the IDX files of `mnist` / `fashion-mnist` (`--data-dir`). For
    /// `fashion-mnist` it takes precedence over [`FASHION_MNIST_SYSTEM_DIR`]. Ignored by the
    /// other data sets.
    pub data_dir: Option<PathBuf>,
    /// Train or test split; only `mnist` and `fashion-mnist` have a test split.
    pub split: Split,
    /// Output size and channels of `folder:` images. Ignored by the other data sets, whose
    /// shapes are fixed.
    pub image: ImageFormat,
    /// Number of samples of a `toy:` data set.
    pub toy_samples: usize,
    /// Seed of a `toy:` data set.
    pub seed: u64,
    /// Which part of the data set to keep (all of it by default).
    pub subset: Subset,
}

/// A part of a data set: the samples of some classes, then the first `limit` of them (in the
/// data set's order), e.g. to fine-tune on a few images of new classes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    /// Keep only samples with these labels (`None`: every sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<u32>>,
    /// Keep at most this many samples (`None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl Subset {
    /// Whether the subset keeps the whole data set.
    pub fn is_all(&self) -> bool {
        self.classes.is_none() && self.limit.is_none()
    }

    /// The kept part of `data`, labels kept as they are.
    ///
    /// # Errors
    /// [`Error::Invalid`] for classes of a data set without labels, or a subset with no
    /// sample (no sample of the classes, a limit of 0).
    pub fn apply(&self, data: Dataset) -> Result<Dataset> {
        if self.is_all() {
            return Ok(data);
        }
        let keep: Vec<usize> = match &self.classes {
            None => (0..data.len()).collect(),
            Some(classes) => {
                let labels = data.labels.as_ref().ok_or_else(|| {
                    Error::Invalid(format!("{} has no labels to choose classes by", data.name))
                })?;
                (0..data.len())
                    .filter(|&i| classes.contains(&labels[i]))
                    .collect()
            }
        };
        let keep = &keep[..keep.len().min(self.limit.unwrap_or(usize::MAX))];
        if keep.is_empty() {
            return Err(Error::Invalid(format!(
                "no sample of {} is left in the subset {self:?}",
                data.name
            )));
        }
        Ok(Dataset {
            name: data.name.clone(),
            shape: data.shape.clone(),
            values: keep.iter().flat_map(|&i| data.sample(i)).copied().collect(),
            labels: data
                .labels
                .as_ref()
                .map(|labels| keep.iter().map(|&i| labels[i]).collect()),
        })
    }
}

impl Default for LoadOptions {
    /// No data dir, train split, 28x28 grayscale, 8000 toy samples, seed 0.
    fn default() -> Self {
        LoadOptions {
            data_dir: None,
            split: Split::Train,
            image: ImageFormat::default(),
            toy_samples: DEFAULT_TOY_SAMPLES,
            seed: 0,
            subset: Subset::default(),
        }
    }
}

/// The folder `fashion-mnist` is read from: `data_dir` when given, else
/// [`FASHION_MNIST_SYSTEM_DIR`] when it exists.
///
/// # Errors
/// [`Error::Invalid`] when no `data_dir` is given and the system folder is absent, saying how
/// to get the data.
pub fn fashion_mnist_dir(data_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = data_dir {
        return Ok(dir.to_owned());
    }
    let system = Path::new(FASHION_MNIST_SYSTEM_DIR);
    if system.is_dir() {
        Ok(system.to_owned())
    } else {
        Err(Error::Invalid(format!(
            "fashion-mnist: {FASHION_MNIST_SYSTEM_DIR} does not exist; install Debian's \
             dataset-fashion-mnist package or pass --data-dir with the IDX files"
        )))
    }
}

/// Loads the data set `spec` names, with `options`.
///
/// The result's `name` is `spec.to_string()`, its values are in `[-1, 1]`, and its shape and
/// labels are those documented on each [`DatasetSpec`] variant.
///
/// # Errors
/// [`Error::Invalid`] for `Split::Test` on a data set without splits, `mnist` without a
/// `data_dir`, `fashion-mnist` with neither a `data_dir` nor the system folder, a bad image
/// format or a toy sample count of 0; otherwise the loader's own errors ([`Error::Io`] or
/// [`Error::Corrupt`], naming the file).
pub fn load(spec: &DatasetSpec, options: &LoadOptions) -> Result<Dataset> {
    if options.split == Split::Test && !spec.has_splits() {
        return Err(Error::Invalid(format!(
            "{spec} has no test split (only mnist and fashion-mnist have one)"
        )));
    }
    let name = spec.to_string();
    let data = match spec {
        DatasetSpec::Optdigits => optdigits::load(),
        DatasetSpec::FashionMnist => {
            let dir = fashion_mnist_dir(options.data_dir.as_deref())?;
            idx::load_mnist_dir(&dir, options.split, &name)
        }
        DatasetSpec::Mnist => {
            let dir = options.data_dir.as_deref().ok_or_else(|| {
                Error::Invalid(
                    "mnist needs --data-dir: a folder with train-images-idx3-ubyte[.gz], \
                     train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and \
                     t10k-labels-idx1-ubyte[.gz]"
                        .to_owned(),
                )
            })?;
            idx::load_mnist_dir(dir, options.split, &name)
        }
        DatasetSpec::Folder(dir) => folder::load(dir, options.image),
        DatasetSpec::Toy(toy) => toy::generate(*toy, options.toy_samples, options.seed),
    }?;
    options.subset.apply(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_keep_classes_then_a_prefix() {
        let data = Dataset {
            name: "d".into(),
            shape: vec![1],
            values: vec![0.0, 1.0, 2.0, 3.0, 4.0],
            labels: Some(vec![0, 1, 2, 1, 0]),
        };
        let subset = |classes: Option<Vec<u32>>, limit| Subset { classes, limit };
        let ones = subset(Some(vec![1, 2]), None).apply(data.clone()).unwrap();
        assert_eq!(
            (ones.values, ones.labels),
            (vec![1.0, 2.0, 3.0], Some(vec![1, 2, 1]))
        );
        let first = subset(Some(vec![0, 1]), Some(2))
            .apply(data.clone())
            .unwrap();
        assert_eq!(first.values, vec![0.0, 1.0]);
        assert_eq!(subset(None, None).apply(data.clone()).unwrap(), data);
        assert!(subset(Some(vec![5]), None).apply(data.clone()).is_err());
        assert!(subset(None, Some(0)).apply(data.clone()).is_err());
        let unlabelled = Dataset {
            labels: None,
            ..data
        };
        assert!(subset(Some(vec![0]), None).apply(unlabelled).is_err());
    }
    use crate::data::idx::{encode_images, encode_labels};

    #[test]
    fn specs_parse_and_display_round_trip() {
        let cases = [
            ("optdigits", DatasetSpec::Optdigits),
            ("fashion-mnist", DatasetSpec::FashionMnist),
            ("mnist", DatasetSpec::Mnist),
            (
                "folder:./my images",
                DatasetSpec::Folder("./my images".into()),
            ),
            ("folder:/a:b", DatasetSpec::Folder("/a:b".into())),
            ("toy:8gaussians", DatasetSpec::Toy(Toy::EightGaussians)),
            ("toy:moons", DatasetSpec::Toy(Toy::Moons)),
            ("toy:swissroll", DatasetSpec::Toy(Toy::SwissRoll)),
            ("toy:checkerboard", DatasetSpec::Toy(Toy::Checkerboard)),
        ];
        for (text, spec) in cases {
            assert_eq!(text.parse::<DatasetSpec>().unwrap(), spec, "{text}");
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            " MNIST ".parse::<DatasetSpec>().unwrap(),
            DatasetSpec::Mnist
        );
        assert_eq!(
            "Toy:Moons".parse::<DatasetSpec>().unwrap(),
            DatasetSpec::Toy(Toy::Moons)
        );
    }

    #[test]
    fn bad_specs_list_the_valid_forms() {
        for bad in ["cifar10", "", "image:x", "moons"] {
            let err = bad.parse::<DatasetSpec>().unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{bad}");
            let text = err.to_string();
            assert!(text.contains(SPEC_FORMS), "{text}");
        }
        let err = "toy:spiral".parse::<DatasetSpec>().unwrap_err();
        assert!(err.to_string().contains("swissroll"), "{err}");
        assert!(matches!(
            "folder:".parse::<DatasetSpec>(),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn loads_each_kind_and_names_it_after_the_spec() {
        let options = LoadOptions {
            toy_samples: 64,
            seed: 5,
            ..LoadOptions::default()
        };
        let digits = load(&DatasetSpec::Optdigits, &options).unwrap();
        assert_eq!((digits.name.as_str(), digits.len()), ("optdigits", 1797));

        let toy = load(&DatasetSpec::Toy(Toy::Moons), &options).unwrap();
        assert_eq!(toy, toy::generate(Toy::Moons, 64, 5).unwrap());

        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        image::RgbImage::from_pixel(50, 30, image::Rgb([0, 255, 0]))
            .save(images.join("x.png"))
            .unwrap();
        let spec: DatasetSpec = format!("folder:{}", images.display()).parse().unwrap();
        let options = LoadOptions {
            image: ImageFormat::square(16, 3),
            ..LoadOptions::default()
        };
        let data = load(&spec, &options).unwrap();
        assert_eq!(data.shape, vec![3, 16, 16]);
        assert_eq!(data.name, spec.to_string());
        assert_eq!(data.name.parse::<DatasetSpec>().unwrap(), spec);

        // mnist and fashion-mnist from a --data-dir, both splits.
        let pixels = vec![255u8; 3 * 28 * 28];
        for prefix in ["train", "t10k"] {
            std::fs::write(
                dir.path().join(format!("{prefix}-images-idx3-ubyte")),
                encode_images(3, 28, 28, &pixels),
            )
            .unwrap();
            std::fs::write(
                dir.path().join(format!("{prefix}-labels-idx1-ubyte")),
                encode_labels(&[0, 9, 4]),
            )
            .unwrap();
        }
        for spec in [DatasetSpec::Mnist, DatasetSpec::FashionMnist] {
            for split in [Split::Train, Split::Test] {
                let options = LoadOptions {
                    data_dir: Some(dir.path().to_owned()),
                    split,
                    ..LoadOptions::default()
                };
                let data = load(&spec, &options).unwrap();
                assert_eq!(data.name, spec.to_string());
                assert_eq!(data.shape, vec![1, 28, 28]);
                assert_eq!(data.labels, Some(vec![0, 9, 4]));
                assert!(data.values.iter().all(|&v| v == 1.0));
            }
        }
    }

    #[test]
    fn option_errors_are_invalid() {
        let test = LoadOptions {
            split: Split::Test,
            ..LoadOptions::default()
        };
        for spec in [
            DatasetSpec::Optdigits,
            DatasetSpec::Toy(Toy::Moons),
            DatasetSpec::Folder("x".into()),
        ] {
            let err = load(&spec, &test).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{spec}: {err:?}");
            assert!(err.to_string().contains("no test split"), "{err}");
        }
        let err = load(&DatasetSpec::Mnist, &LoadOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)));
        assert!(err.to_string().contains("--data-dir"), "{err}");
        let zero = LoadOptions {
            toy_samples: 0,
            ..LoadOptions::default()
        };
        assert!(matches!(
            load(&DatasetSpec::Toy(Toy::SwissRoll), &zero),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn fashion_mnist_dir_prefers_the_data_dir_and_falls_back_to_the_system_dir() {
        let given = Path::new("/some/where");
        assert_eq!(fashion_mnist_dir(Some(given)).unwrap(), given);
        match fashion_mnist_dir(None) {
            Ok(dir) => assert_eq!(dir, Path::new(FASHION_MNIST_SYSTEM_DIR)),
            Err(err) => {
                assert!(!Path::new(FASHION_MNIST_SYSTEM_DIR).exists());
                assert!(err.to_string().contains("dataset-fashion-mnist"), "{err}");
            }
        }
    }

    /// The default `fashion-mnist` spec finds Debian's package without any option.
    #[test]
    fn fashion_mnist_test_split_loads_from_the_system_dir() {
        if !Path::new(FASHION_MNIST_SYSTEM_DIR).is_dir() {
            eprintln!(
                "note: {FASHION_MNIST_SYSTEM_DIR} is absent; skipping the system Fashion-MNIST \
                 load (the IDX parser is tested on generated files)"
            );
            return;
        }
        let options = LoadOptions {
            split: Split::Test,
            ..LoadOptions::default()
        };
        let data = load(&DatasetSpec::FashionMnist, &options).unwrap();
        assert_eq!(data.name, "fashion-mnist");
        assert_eq!(data.len(), 10_000);
        assert_eq!(data.shape, vec![1, 28, 28]);
        assert!(data.values.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(data.labels.unwrap().iter().all(|&l| l < 10));
    }
}
