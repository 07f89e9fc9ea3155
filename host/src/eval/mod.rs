//! Sample quality: ddm's own documented, reproducible metrics, each printed beside its floor.
//!
//! Inception-FID is too heavy for this project and wrong for 8x8 or 28x28 grayscale data, so
//! ddm measures with small classifiers of its own and with exact distances for the 2-D toys.
//! Every number comes with **the floor** ([`floor`]): the same metric between two disjoint
//! real sets of the same size, the score a perfect generator would get at that `n`.
//!
//! **Images** (`optdigits`, `mnist`, `fashion-mnist`): a small CNN per data set
//! ([`classifier`]), trained by ddm on real data ([`classifier_training`]) and committed
//! under `host/classifiers/` with its SHA-256 and the command that reproduces it, embeds each
//! image as its penultimate activations. On those features:
//! - [`frechet`]: the Frechet distance (FD) between Gaussians fitted to samples and reference;
//! - [`kid`]: KID, the unbiased squared MMD with the cubic polynomial kernel on features
//!   scaled to the reference's RMS, averaged over disjoint subsets of at most 1000, with a
//!   jackknife standard error;
//! - [`label_entropy`]: the entropy of the histogram of predicted labels (dropped classes);
//! - [`nearest`]: in pixel space, the mean L2 distance from each sample to its nearest
//!   training image (memorisation).
//!
//! The reference set A and the floor's set B come from a split the diffusion model never
//! trained on where the data set has one: the MNIST / Fashion-MNIST **test** split (so at most
//! 5000 samples are evaluated); nearest-neighbour distances are measured against the **train**
//! split. optdigits is a single set of 1797 digits: A and B are drawn from all of them (at most
//! 898 samples), nearest-neighbour distances are measured against the digits outside B, and
//! the report says so.
//!
//! **2-D toys** (`toy:NAME`, [`toy`]): sliced 2-Wasserstein, exact 2-Wasserstein for
//! `n <= 2000`, RBF-MMD with the median-heuristic bandwidth and mode coverage. A and B are the
//! first and second `n` points of `2n` drawn from the generator with the evaluation seed
//! (not the training data's seed 0 unless `--seed 0` is given).
//!
//! [`evaluate()`] runs it all and returns a [`Report`] ([`report`]), which prints as a text
//! table or as JSON for scripts.

pub mod classifier;
pub mod classifier_training;
pub mod evaluate;
pub mod floor;
pub mod frechet;
pub mod kid;
pub mod label_entropy;
pub mod nearest;
pub mod report;
pub mod toy;

pub use classifier::{Architecture, Classifier, CommittedClassifier, COMMITTED};
pub use classifier_training::{ClassifierData, Recipe};
pub use evaluate::{evaluate, evaluate_file, EvalOptions};
pub use floor::DEFAULT_EVAL_SEED;
pub use report::Report;
