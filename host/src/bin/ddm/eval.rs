//! `ddm eval`: sample quality, each metric beside the same metric between two disjoint real
//! sets (the floor).

use std::path::PathBuf;

use clap::Args as ClapArgs;
use ddm::data::DatasetSpec;
use ddm::device::DeviceArgs;
use ddm::eval::{evaluate_file, EvalOptions, DEFAULT_EVAL_SEED};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The data set the samples imitate: optdigits, mnist, fashion-mnist or toy:NAME.
    #[arg(long, value_name = "D")]
    dataset: DatasetSpec,
    /// The samples: an f32 .npy of shape [n, 1, H, W] or [n, H*W] (images, values in [-1, 1])
    /// or [n, 2] (toys).
    #[arg(long, value_name = "FILE.npy")]
    samples: PathBuf,
    /// Evaluate the first N samples [default: all, up to half the real reference pool].
    #[arg(long, value_name = "N")]
    num: Option<usize>,
    /// Print JSON instead of the text table.
    #[arg(long)]
    json: bool,
    /// Folder with the MNIST / Fashion-MNIST IDX files (needed for mnist).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Classifier weights to use instead of the committed ones (needed for mnist).
    #[arg(long, value_name = "FILE.safetensors")]
    classifier: Option<PathBuf>,
    /// The class the samples were generated for (`ddm sample --class K`): compare them with
    /// the real images of that class and report how many are classified as it.
    #[arg(long, value_name = "K")]
    class: Option<u32>,
    /// Seed of the floor's real sets and of KID's subsets.
    #[arg(long, default_value_t = DEFAULT_EVAL_SEED)]
    seed: u64,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let options = EvalOptions {
        num: args.num,
        data_dir: args.data_dir.clone(),
        classifier: args.classifier.clone(),
        seed: args.seed,
        class: args.class,
        device: args.device.device,
    };
    let report = evaluate_file(&args.dataset, &args.samples, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
