//! `ddm train-classifier`: train the feature classifier `ddm eval` uses for an image data set.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use ddm::data::DatasetSpec;
use ddm::eval::classifier::sha256_hex;
use ddm::eval::classifier_training::{train, ClassifierData, Recipe};
use ddm::eval::Architecture;
use ddm::fsutil::write_atomic;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The image data set: optdigits, mnist or fashion-mnist.
    #[arg(long, value_name = "D")]
    dataset: DatasetSpec,
    /// Where to write the weights (safetensors).
    #[arg(long, value_name = "FILE.safetensors")]
    out: PathBuf,
    /// Folder with the MNIST / Fashion-MNIST IDX files (needed for mnist).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Passes over the training images [default: the committed recipe's].
    #[arg(long)]
    epochs: Option<usize>,
    /// Train on this many training images [default: the committed recipe's].
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Images per optimiser step [default: the committed recipe's].
    #[arg(long)]
    batch_size: Option<usize>,
    /// AdamW's learning rate [default: the committed recipe's].
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of the weights, the subset and the batch order [default: the committed recipe's].
    #[arg(long)]
    seed: Option<u64>,
}

/// Trains and writes the classifier. The committed weights were made with the default
/// `--threads 1`; the same thread count reproduces them bit for bit on the same CPU.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let architecture = Architecture::for_dataset(&args.dataset)?;
    let committed = Recipe::for_dataset(&args.dataset)?;
    let recipe = Recipe {
        epochs: args.epochs.unwrap_or(committed.epochs),
        train_limit: args.train_limit.or(committed.train_limit),
        batch_size: args.batch_size.unwrap_or(committed.batch_size),
        learning_rate: args.lr.unwrap_or(committed.learning_rate),
        seed: args.seed.unwrap_or(committed.seed),
    };
    let data = ClassifierData::load(&args.dataset, args.data_dir.as_deref())?;
    eprintln!(
        "training the {} classifier ({} parameters) with {recipe:?} on {} thread(s)",
        args.dataset,
        architecture.parameter_count(),
        candle_core::utils::get_num_threads()
    );
    let trained = train(architecture, &data, &recipe, |epoch| {
        eprintln!(
            "epoch {:>3}: mean loss {:.4} ({:.1} s)",
            epoch.epoch, epoch.mean_loss, epoch.seconds
        );
    })?;
    let bytes = trained.classifier.to_safetensors()?;
    write_atomic(&args.out, |file| std::io::Write::write_all(file, &bytes))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {} ({} bytes)", args.out.display(), bytes.len());
    println!("sha256 {}", sha256_hex(&bytes));
    println!(
        "trained on {} images in {:.1} s; test accuracy {:.2}% on {}",
        trained.train_images,
        trained.seconds,
        100.0 * trained.test_accuracy,
        data.test_description
    );
    Ok(())
}
