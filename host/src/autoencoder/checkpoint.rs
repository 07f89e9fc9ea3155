//! Autoencoder run folders: the files and crash-safe commit of denoiser runs
//! ([`crate::train::checkpoint`]), with an [`AutoencoderRun`] as `config.json` and both
//! networks' parameters (`encoder.*`, `decoder.*`) in each tensor file.

use std::path::Path;

use ddm_export::graph::Weights;

use super::config::AutoencoderRun;
use crate::error::{Error, Result};
use crate::train::checkpoint::{
    self as files, check_against_graphs, check_moments, commit, moments_named, named, read_moments,
    read_tensor_file, WeightSet, CONFIG_FILE, EMA_FILE, MODEL_FILE, OPTIMIZER_FILE,
};
use crate::train::config::FORMAT_VERSION;
use crate::train::optim::OptimizerState;

/// A complete autoencoder checkpoint in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderCheckpoint {
    /// The configuration, including the step.
    pub config: AutoencoderRun,
    /// Trained weights of both networks.
    pub model: Weights,
    /// Their exponential moving average (what encoding and decoding use).
    pub ema: Weights,
    /// Optimiser state (its step equals `config.progress.step`).
    pub optimizer: OptimizerState,
}

/// Writes `checkpoint` into `dir` (created if needed), crash-safely.
///
/// # Errors
/// [`Error::Io`] naming the file that could not be written; [`Error::Invalid`] when the
/// optimiser's step disagrees with the configuration's.
pub fn save(dir: &Path, checkpoint: &AutoencoderCheckpoint) -> Result<()> {
    let step = checkpoint.config.progress.step;
    if checkpoint.optimizer.step != step {
        return Err(Error::Invalid(format!(
            "the optimiser is at step {}, the configuration at step {step}",
            checkpoint.optimizer.step
        )));
    }
    let config = serde_json::to_vec_pretty(&checkpoint.config)
        .map_err(|e| Error::Invalid(format!("cannot serialise the run configuration: {e}")))?;
    let tensors = [
        (MODEL_FILE, named(&checkpoint.model)),
        (EMA_FILE, named(&checkpoint.ema)),
        (OPTIMIZER_FILE, moments_named(&checkpoint.optimizer)),
    ];
    commit(dir, step, &tensors, &config)
}

/// Whether `dir` holds a checkpoint (of any run).
pub fn exists(dir: &Path) -> bool {
    files::exists(dir)
}

/// Reads and checks the `config.json` of the autoencoder run in `dir`.
///
/// # Errors
/// [`Error::Io`] when it cannot be read; [`Error::Corrupt`] when it is not an autoencoder
/// run of this format version (a denoiser run is named as such) or fails
/// [`AutoencoderRun::validate`].
pub fn read_config(dir: &Path) -> Result<AutoencoderRun> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::corrupt(&path, format!("not valid JSON ({e})")))?;
    if value.get("autoencoder").is_none() {
        let reason = if value.get("schedule").is_some() {
            "a denoiser's run (ddm train), not an autoencoder's (ddm train-autoencoder)"
        } else {
            "not an autoencoder run (no \"autoencoder\" field)"
        };
        return Err(Error::corrupt(&path, reason));
    }
    let found = value.get("format_version").and_then(|v| v.as_u64());
    if found != Some(u64::from(FORMAT_VERSION)) {
        return Err(Error::corrupt(
            &path,
            format!(
                "format version {} is not the {FORMAT_VERSION} this build reads",
                found.map_or("(missing)".to_string(), |v| v.to_string())
            ),
        ));
    }
    let config: AutoencoderRun = serde_json::from_value(value)
        .map_err(|e| Error::corrupt(&path, format!("not an autoencoder run ({e})")))?;
    config
        .validate()
        .map_err(|e| Error::corrupt(&path, e.to_string()))?;
    Ok(config)
}

/// Reads one set of weights of the autoencoder run in `dir` whose configuration is `config`.
///
/// # Errors
/// [`Error::Corrupt`] naming the file when it is missing, unreadable, from another step, or
/// its tensors are not exactly both networks' parameters with their shapes and finite values.
pub fn read_weights(dir: &Path, config: &AutoencoderRun, set: WeightSet) -> Result<Weights> {
    let name = match set {
        WeightSet::Model => MODEL_FILE,
        WeightSet::Ema => EMA_FILE,
    };
    let (path, tensors) = read_tensor_file(dir, name, config.progress.step)?;
    check_against_graphs(&path, &[&config.encoder, &config.decoder], &tensors, "")?;
    Ok(tensors)
}

/// Reads the whole checkpoint in `dir`.
///
/// # Errors
/// As [`read_config`] and [`read_weights`], also for the optimiser file (a first and a second
/// moment of every parameter's shape, nothing else).
pub fn load(dir: &Path) -> Result<AutoencoderCheckpoint> {
    let config = read_config(dir)?;
    let model = read_weights(dir, &config, WeightSet::Model)?;
    let ema = read_weights(dir, &config, WeightSet::Ema)?;
    let step = config.progress.step;
    let (path, m, v) = read_moments(dir, step)?;
    let graphs = [&config.encoder, &config.decoder];
    check_moments(&path, &graphs, |_| false, &m, "first moments (m.*): ")?;
    check_moments(&path, &graphs, |_| false, &v, "second moments (v.*): ")?;
    Ok(AutoencoderCheckpoint {
        config,
        model,
        ema,
        optimizer: OptimizerState { step, m, v },
    })
}
