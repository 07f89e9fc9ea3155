//! Data sets: 2-D toys, optdigits (embedded), MNIST / Fashion-MNIST (IDX) and image folders.
//!
//! Every data set loads into a [`Dataset`]: `n` samples of one shape, values scaled to
//! `[-1, 1]`, with class labels where the data set has them.
//!
//! - [`toy`]: 2-D toys generated from a seed (`8gaussians`, `moons`, `swissroll`,
//!   `checkerboard`), and the exact 8-Gaussians mixture for the core's oracle.
//! - [`optdigits`]: 1797 8x8 digits embedded in the binary.
//! - [`idx`]: MNIST and Fashion-MNIST IDX files, gzipped or raw, train and test splits.
//! - [`folder`]: a folder of PNG/JPEG images resized to one size (labelled by class
//!   sub-folders, as torchvision's `ImageFolder`).
//! - [`spec`]: the command line's [`DatasetSpec`] (`optdigits`, `fashion-mnist`, `mnist`,
//!   `folder:PATH`, `toy:NAME`), [`LoadOptions`] and [`load`].

pub mod folder;
mod gz;
pub mod idx;
pub mod optdigits;
pub mod spec;
pub mod toy;

pub use folder::ImageFormat;
pub use idx::Split;
pub use spec::{load, DatasetSpec, LoadOptions, Subset, SPEC_FORMS};
pub use toy::Toy;

/// A loaded data set held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Short name, e.g. `optdigits`, `fashion-mnist`, `toy:moons`.
    pub name: String,
    /// Shape of one sample: `[D]` for vectors, `[C, H, W]` for images.
    pub shape: Vec<usize>,
    /// All samples, row-major `[n, shape...]`, values in `[-1, 1]`.
    pub values: Vec<f32>,
    /// One class label per sample, where the data set has labels.
    pub labels: Option<Vec<u32>>,
}

impl Dataset {
    /// Number of values in one sample.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.values.len() / self.sample_len().max(1)
    }

    /// Whether the data set holds no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of classes of a labelled data set (its largest label plus one), `None`
    /// without labels.
    pub fn class_count(&self) -> Option<usize> {
        let labels = self.labels.as_ref()?;
        Some(labels.iter().max().map_or(0, |&y| y as usize + 1))
    }

    /// The samples labelled `class`, in order, as a data set of their own.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) when the data set has no labels or none is
    /// `class`.
    pub fn only_class(&self, class: u32) -> crate::Result<Dataset> {
        let Some(labels) = &self.labels else {
            return Err(crate::Error::Invalid(format!(
                "{} has no labels: it has no class {class}",
                self.name
            )));
        };
        let keep: Vec<usize> = (0..self.len()).filter(|&i| labels[i] == class).collect();
        if keep.is_empty() {
            return Err(crate::Error::Invalid(format!(
                "{} has no sample of class {class}",
                self.name
            )));
        }
        Ok(Dataset {
            name: format!("{} class {class}", self.name),
            shape: self.shape.clone(),
            values: keep.iter().flat_map(|&i| self.sample(i)).copied().collect(),
            labels: Some(vec![class; keep.len()]),
        })
    }

    /// Sample `i` as a slice of [`sample_len`](Self::sample_len) values.
    pub fn sample(&self, i: usize) -> &[f32] {
        let len = self.sample_len();
        &self.values[i * len..(i + 1) * len]
    }
}
