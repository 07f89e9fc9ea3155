//! Data sets: 2-D toys, optdigits (embedded), MNIST / Fashion-MNIST (IDX) and image folders.
//!
//! Every data set loads into a [`Dataset`]: `n` samples of one shape, values scaled to
//! `[-1, 1]`, with class labels where the data set has them.
//!
//! - [`toy`]: 2-D toys generated from a seed (`8gaussians`, `moons`, `swissroll`,
//!   `checkerboard`), and the exact 8-Gaussians mixture for the core's oracle.
//! - [`optdigits`]: 1797 8x8 digits embedded in the binary.
//! - [`idx`]: MNIST and Fashion-MNIST IDX files, gzipped or raw, train and test splits.
//! - [`folder`]: a folder of PNG/JPEG images resized to one size.
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
pub use spec::{load, DatasetSpec, LoadOptions, SPEC_FORMS};
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

    /// Sample `i` as a slice of [`sample_len`](Self::sample_len) values.
    pub fn sample(&self, i: usize) -> &[f32] {
        let len = self.sample_len();
        &self.values[i * len..(i + 1) * len]
    }
}
