//! `ddm reconstruct`: real images through a trained autoencoder, for the quality ceiling it
//! sets a latent diffusion model.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use ddm::autoencoder::{psnr, Codec};
use ddm::data::{self, DatasetSpec, LoadOptions, Split};
use ddm::device::DeviceArgs;
use ddm::eval::floor::{disjoint_draw, gather_rows};
use ddm::eval::DEFAULT_EVAL_SEED;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The autoencoder's run folder (`ddm train-autoencoder --out`).
    #[arg(long, value_name = "RUN_DIR")]
    autoencoder: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    num: usize,
    /// Where to write the reconstructions: an f32 .npy of shape [N, C, H, W] for `ddm eval`.
    #[arg(long, value_name = "FILE.npy")]
    out: PathBuf,
    /// Folder with the MNIST / Fashion-MNIST IDX files [default: the run's].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Seed of `ddm eval`'s floor whose set B is reconstructed.
    #[arg(long, default_value_t = DEFAULT_EVAL_SEED)]
    seed: u64,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Reconstructs the images of `ddm eval`'s floor set B (the test split of a data set that has
/// one, else the whole data set; `--seed` as in `ddm eval`), so that `ddm eval --samples
/// OUT` sets the reconstructions' FD beside the floor's, the FD of the same images
/// unreconstructed.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let codec = Codec::load(&args.autoencoder, &device)?;
    let config = codec.config();
    let (spec, mut options): (DatasetSpec, LoadOptions) = config.data.load_options()?;
    if let Some(dir) = &args.data_dir {
        options.data_dir = Some(dir.clone());
    }
    options.subset = Default::default();
    let pool_name = if spec.has_splits() {
        options.split = Split::Test;
        format!("the {spec} test split")
    } else {
        format!("{spec}")
    };
    let pool = data::load(&spec, &options).with_context(|| format!("loading {pool_name}"))?;
    let sets = disjoint_draw(pool.len(), args.num, args.seed)?;
    let images = gather_rows(&pool.values, pool.sample_len(), &sets.stand_in);
    let reconstructions = codec.reconstruct(&images)?;
    let mut shape = vec![args.num];
    shape.extend_from_slice(codec.image_shape());
    ddm::npy::write_f32(&args.out, &shape, &reconstructions)?;
    println!(
        "{} images of {pool_name} (ddm eval's floor set B, seed {}) through {} (latent {:?}): \
         PSNR {:.2} dB; written to {}",
        args.num,
        args.seed,
        args.autoencoder.display(),
        codec.latent_shape(),
        psnr(&images, &reconstructions),
        args.out.display()
    );
    Ok(())
}
