//! Training the feature classifiers, deterministically.
//!
//! [`train`] runs AdamW (candle-nn's) on the cross-entropy loss for a fixed number of epochs.
//! Everything random comes from the recipe's seed through [`ddm_core::Rng`]: the initial
//! weights (`Rng::new(seed)`, see [`Classifier::init`]), the training subset
//! (`Rng::with_stream(seed, 1)`) and each epoch's batch order (`Rng::with_stream(seed,
//! 2 + epoch)`). With the same thread count and CPU the weights, and so the file's SHA-256,
//! come out bit-identical; a different thread count or CPU (other SIMD kernels in the matrix
//! products) may change the last bits, see `host/classifiers/README.md`.
//!
//! **Data** ([`ClassifierData::load`]): MNIST and Fashion-MNIST train on (a seeded subset of)
//! the train split and report accuracy on the whole test split. optdigits has a single set of
//! 1797 digits: every [`OPTDIGITS_HOLDOUT_EVERY`]-th one (indices 4, 9, 14, ..., 359 digits)
//! is held out for the test accuracy and the other 1438 train the classifier.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use ddm_core::Rng;

use super::classifier::{forward, Architecture, Classifier};
use super::floor::gather_rows;
use super::kid::permutation;
use crate::data::{self, DatasetSpec, LoadOptions, Split};
use crate::error::{Error, Result};

/// optdigits: index `i` is held out for testing when `i % 5 == 4`.
pub const OPTDIGITS_HOLDOUT_EVERY: usize = 5;

/// How a classifier is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recipe {
    /// Passes over the training images.
    pub epochs: usize,
    /// Images per optimiser step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// AdamW's initial learning rate, decayed linearly to 0 over the run (betas 0.9/0.999,
    /// eps 1e-8, weight decay 1e-4).
    pub learning_rate: f64,
    /// Train on this many images drawn from the training set (all when `None`).
    pub train_limit: Option<usize>,
    /// Seed of the initial weights, the subset and the batch order.
    pub seed: u64,
}

impl Recipe {
    /// The recipe the committed classifier of `spec` was trained with.
    ///
    /// # Errors
    /// [`Error::Invalid`] for data sets without a classifier.
    pub fn for_dataset(spec: &DatasetSpec) -> Result<Recipe> {
        match spec {
            DatasetSpec::Optdigits => Ok(Recipe {
                epochs: 40,
                batch_size: 32,
                learning_rate: 2e-3,
                train_limit: None,
                seed: 0,
            }),
            DatasetSpec::Mnist | DatasetSpec::FashionMnist => Ok(Recipe {
                epochs: 2,
                batch_size: 64,
                learning_rate: 2e-3,
                train_limit: Some(30_000),
                seed: 0,
            }),
            other => Err(Error::Invalid(format!(
                "{other} has no feature classifier (only optdigits, mnist and fashion-mnist)"
            ))),
        }
    }
}

/// Labelled images to train and test a classifier on.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierData {
    /// Training images, row-major `[n, side * side]`, values in `[-1, 1]`.
    pub train_images: Vec<f32>,
    /// Their labels.
    pub train_labels: Vec<u32>,
    /// Test images, as `train_images`.
    pub test_images: Vec<f32>,
    /// Their labels.
    pub test_labels: Vec<u32>,
    /// Where the test images come from, for reports.
    pub test_description: String,
}

impl ClassifierData {
    /// The train and test images of `spec` (see the [module docs](self)); `data_dir` as for
    /// [`LoadOptions::data_dir`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for data sets without a classifier; the data loader's errors.
    pub fn load(spec: &DatasetSpec, data_dir: Option<&Path>) -> Result<Self> {
        Architecture::for_dataset(spec)?;
        let options = |split| LoadOptions {
            data_dir: data_dir.map(Path::to_owned),
            split,
            ..LoadOptions::default()
        };
        let labels = |set: &data::Dataset| {
            set.labels
                .clone()
                .ok_or_else(|| Error::Invalid(format!("{} has no labels", set.name)))
        };
        if spec.has_splits() {
            let train = data::load(spec, &options(Split::Train))?;
            let test = data::load(spec, &options(Split::Test))?;
            let test_description = format!("the {spec} test split ({} images)", test.len());
            Ok(ClassifierData {
                train_labels: labels(&train)?,
                test_labels: labels(&test)?,
                train_images: train.values,
                test_images: test.values,
                test_description,
            })
        } else {
            let all = data::load(spec, &options(Split::Train))?;
            let all_labels = labels(&all)?;
            let is_test = |i: usize| i % OPTDIGITS_HOLDOUT_EVERY == OPTDIGITS_HOLDOUT_EVERY - 1;
            let (test, train): (Vec<usize>, Vec<usize>) = (0..all.len()).partition(|&i| is_test(i));
            let len = all.sample_len();
            Ok(ClassifierData {
                train_images: gather_rows(&all.values, len, &train),
                train_labels: train.iter().map(|&i| all_labels[i]).collect(),
                test_images: gather_rows(&all.values, len, &test),
                test_labels: test.iter().map(|&i| all_labels[i]).collect(),
                test_description: format!(
                    "{} held-out {spec} digits (every {OPTDIGITS_HOLDOUT_EVERY}th, not trained on)",
                    test.len()
                ),
            })
        }
    }
}

/// Progress after one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochReport {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub mean_loss: f64,
    /// Seconds since training started.
    pub seconds: f64,
}

/// A trained classifier and how it did.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The classifier.
    pub classifier: Classifier,
    /// Images it was trained on.
    pub train_images: usize,
    /// Accuracy on the test images.
    pub test_accuracy: f64,
    /// Training time in seconds (without loading the data or testing).
    pub seconds: f64,
}

/// Trains a classifier of `architecture` on `data` with `recipe` (see the
/// [module docs](self)), calling `on_epoch` after each epoch.
///
/// # Errors
/// [`Error::Invalid`] for an empty training set, mismatched labels, a batch size or epoch
/// count of 0, or a non-finite loss; [`Error::Candle`] for tensor failures.
pub fn train(
    architecture: Architecture,
    data: &ClassifierData,
    recipe: &Recipe,
    mut on_epoch: impl FnMut(EpochReport),
) -> Result<Trained> {
    let len = architecture.input_len();
    let available = data.train_images.len() / len;
    if available == 0
        || available != data.train_labels.len()
        || !data.train_images.len().is_multiple_of(len)
    {
        return Err(Error::Invalid(format!(
            "classifier training needs whole {side}x{side} images with one label each \
             ({} values, {} labels)",
            data.train_images.len(),
            data.train_labels.len(),
            side = architecture.side
        )));
    }
    if recipe.batch_size == 0 || recipe.epochs == 0 {
        return Err(Error::Invalid(
            "classifier training needs a batch size and epoch count of at least 1".into(),
        ));
    }
    let mut pool = permutation(available, &mut Rng::with_stream(recipe.seed, 1));
    pool.truncate(recipe.train_limit.unwrap_or(available).min(available));
    let images = gather_rows(&data.train_images, len, &pool);
    let labels: Vec<u32> = pool.iter().map(|&i| data.train_labels[i]).collect();
    let n = labels.len();

    let start = Instant::now();
    let initial = Classifier::init(architecture, recipe.seed)?;
    let vars = initial
        .parameters()
        .iter()
        .map(Var::from_tensor)
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut optimizer = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: recipe.learning_rate,
            weight_decay: 1e-4,
            ..ParamsAdamW::default()
        },
    )?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let total_steps = recipe.epochs * n.div_ceil(recipe.batch_size);
    let mut step = 0;
    for epoch in 0..recipe.epochs {
        let order = permutation(n, &mut Rng::with_stream(recipe.seed, 2 + epoch as u64));
        let mut total = 0.0;
        let mut batches = 0;
        for batch in order.chunks(recipe.batch_size) {
            let x = Tensor::from_vec(
                gather_rows(&images, len, batch),
                (batch.len(), 1, architecture.side, architecture.side),
                &Device::Cpu,
            )?;
            let y = Tensor::from_vec(
                batch.iter().map(|&i| labels[i]).collect::<Vec<u32>>(),
                batch.len(),
                &Device::Cpu,
            )?;
            let (_, logits) = forward(&architecture, &tensors, &x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(Error::Invalid(format!(
                    "classifier training diverged: loss {value} in epoch {}",
                    epoch + 1
                )));
            }
            optimizer
                .set_learning_rate(recipe.learning_rate * (1.0 - step as f64 / total_steps as f64));
            optimizer.backward_step(&loss)?;
            step += 1;
            total += value;
            batches += 1;
        }
        on_epoch(EpochReport {
            epoch: epoch + 1,
            mean_loss: total / batches as f64,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let seconds = start.elapsed().as_secs_f64();
    let parameters = vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?;
    let classifier = Classifier::from_parameters(architecture, parameters)?;
    let test_accuracy = classifier.accuracy(&data.test_images, &data.test_labels)?;
    Ok(Trained {
        classifier,
        train_images: n,
        test_accuracy,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::classifier::OPTDIGITS_ARCHITECTURE;

    #[test]
    fn optdigits_holdout_is_every_fifth_digit() {
        let data = ClassifierData::load(&DatasetSpec::Optdigits, None).unwrap();
        assert_eq!(data.train_labels.len(), 1438);
        assert_eq!(data.test_labels.len(), 359);
        assert_eq!(data.train_images.len(), 1438 * 64);
        let all = data::optdigits::load().unwrap();
        assert_eq!(&data.test_images[..64], all.sample(4));
        assert_eq!(&data.train_images[64 * 4..64 * 5], all.sample(5));
    }

    /// Reproducibility, cheaply: two short runs with one seed give identical bytes, another
    /// seed different ones.
    #[test]
    fn training_is_deterministic_for_a_seed() {
        let data = ClassifierData::load(&DatasetSpec::Optdigits, None).unwrap();
        let recipe = Recipe {
            epochs: 1,
            train_limit: Some(256),
            ..Recipe::for_dataset(&DatasetSpec::Optdigits).unwrap()
        };
        let run = |recipe: &Recipe| {
            let trained = train(OPTDIGITS_ARCHITECTURE, &data, recipe, |_| {}).unwrap();
            trained.classifier.to_safetensors().unwrap()
        };
        let first = run(&recipe);
        assert_eq!(first, run(&recipe));
        assert_ne!(first, run(&Recipe { seed: 1, ..recipe }));
    }

    #[test]
    fn bad_recipes_and_data_are_invalid() {
        let data = ClassifierData::load(&DatasetSpec::Optdigits, None).unwrap();
        let recipe = Recipe::for_dataset(&DatasetSpec::Optdigits).unwrap();
        let zero = Recipe {
            batch_size: 0,
            ..recipe
        };
        assert!(matches!(
            train(OPTDIGITS_ARCHITECTURE, &data, &zero, |_| {}),
            Err(Error::Invalid(_))
        ));
        let ragged = ClassifierData {
            train_labels: vec![0; 3],
            ..data
        };
        assert!(matches!(
            train(OPTDIGITS_ARCHITECTURE, &ragged, &recipe, |_| {}),
            Err(Error::Invalid(_))
        ));
        assert!(Recipe::for_dataset(&"toy:moons".parse().unwrap()).is_err());
    }
}
