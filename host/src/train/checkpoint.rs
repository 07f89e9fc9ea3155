//! Checkpoints: a run folder with the weights, their average, the optimiser state and the
//! configuration.
//!
//! ```text
//! RUN_DIR/config.json             RunConfig: graph, data, schedule, objective, hyper-parameters,
//!                                 step and loss history (written last: the commit point)
//! RUN_DIR/model.safetensors       the trained weights
//! RUN_DIR/ema.safetensors         their exponential moving average (what sampling uses)
//! RUN_DIR/optimizer.safetensors   AdamW's moments, `m.NAME` and `v.NAME`
//! RUN_DIR/teacher.safetensors     a distilled student's current teacher (`ddm distill` only)
//! ```
//!
//! Every safetensors file records its step in its metadata (`ddm_step`). Saving is crash-safe:
//! the tensor files are first written, each atomically, under staged names (`NAME.next`);
//! then `config.json` is replaced atomically, which commits the checkpoint; then the staged
//! files are renamed over the old ones. A reader takes, for each tensor file, whichever of the
//! final and the staged name holds the step `config.json` names. A run killed at any moment
//! therefore leaves either the previous checkpoint or the new one, complete, never a mix.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ddm_export::graph::{Graph, Tensor as GraphTensor, Weights};
use safetensors::{Dtype, SafeTensors};

use super::config::{RunConfig, FORMAT_VERSION};
use super::optim::OptimizerState;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// The configuration file's name.
pub const CONFIG_FILE: &str = "config.json";
/// The trained weights' file name.
pub const MODEL_FILE: &str = "model.safetensors";
/// The averaged weights' file name.
pub const EMA_FILE: &str = "ema.safetensors";
/// The optimiser state's file name.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// A distilled student's teacher weights' file name.
pub const TEACHER_FILE: &str = "teacher.safetensors";
/// Suffix of tensor files written but not yet committed.
pub const STAGED_SUFFIX: &str = ".next";
/// The safetensors metadata key holding the step.
const STEP_KEY: &str = "ddm_step";

/// A complete checkpoint in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The configuration, including the step.
    pub config: RunConfig,
    /// Trained weights.
    pub model: Weights,
    /// EMA weights.
    pub ema: Weights,
    /// Optimiser state (its step equals `config.progress.step`).
    pub optimizer: OptimizerState,
    /// The teacher of the current round of a distillation (`Some` exactly when
    /// `config.distill` is).
    pub teacher: Option<Weights>,
}

/// Which set of weights to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightSet {
    /// The trained weights (`model.safetensors`).
    Model,
    /// Their exponential moving average (`ema.safetensors`).
    Ema,
}

impl WeightSet {
    fn file(self) -> &'static str {
        match self {
            WeightSet::Model => MODEL_FILE,
            WeightSet::Ema => EMA_FILE,
        }
    }
}

/// Whether `dir` holds a checkpoint (has a `config.json`).
pub fn exists(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file()
}

/// Writes `checkpoint` into `dir` (created if needed), crash-safely (see the module docs).
///
/// # Errors
/// [`Error::Io`] naming the file that could not be written; [`Error::Invalid`] when the
/// optimiser's step disagrees with the configuration's, or a teacher is present exactly when
/// the configuration describes no distillation.
pub fn save(dir: &Path, checkpoint: &Checkpoint) -> Result<()> {
    let step = checkpoint.config.progress.step;
    if checkpoint.optimizer.step != step {
        return Err(Error::Invalid(format!(
            "the optimiser is at step {}, the configuration at step {step}",
            checkpoint.optimizer.step
        )));
    }
    if checkpoint.teacher.is_some() != checkpoint.config.distill.is_some() {
        return Err(Error::Invalid(
            "a checkpoint holds teacher weights exactly when it is a distillation".into(),
        ));
    }
    let mut files: Vec<(&str, Vec<(String, &GraphTensor)>)> = vec![
        (MODEL_FILE, named(&checkpoint.model)),
        (EMA_FILE, named(&checkpoint.ema)),
        (OPTIMIZER_FILE, moments_named(&checkpoint.optimizer)),
    ];
    if let Some(teacher) = &checkpoint.teacher {
        files.push((TEACHER_FILE, named(teacher)));
    }
    let config = serde_json::to_vec_pretty(&checkpoint.config)
        .map_err(|e| Error::Invalid(format!("cannot serialise the run configuration: {e}")))?;
    commit(dir, step, &files, &config)
}

/// Writes the tensor `files` of step `step` and then `config` (the JSON that names the step)
/// into `dir` crash-safely, as the module docs describe: tensor files staged, `config.json`
/// replaced (the commit point), staged files renamed. Any run folder (a denoiser's, an
/// autoencoder's) is saved through it.
///
/// # Errors
/// [`Error::Io`] naming the file that could not be written.
pub(crate) fn commit(
    dir: &Path,
    step: u64,
    files: &[(&str, Vec<(String, &GraphTensor)>)],
    config: &[u8],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, tensors) in files {
        let bytes =
            encode(tensors, step).map_err(|reason| Error::corrupt(dir.join(name), reason))?;
        write_atomic(&staged(dir, name), |w| w.write_all(&bytes))?;
    }
    write_atomic(&dir.join(CONFIG_FILE), |w| w.write_all(config))?;
    for (name, _) in files {
        let from = staged(dir, name);
        std::fs::rename(&from, dir.join(name)).map_err(|e| Error::io(&from, e))?;
    }
    sync_dir(dir);
    Ok(())
}

/// Reads and checks `config.json` of the run in `dir`.
///
/// # Errors
/// [`Error::Io`] when it cannot be read; [`Error::Corrupt`] when it is not a valid
/// configuration of this format version, its graph is malformed, or its distillation (a
/// student's) is not one its schedule and prediction allow ([`DistillConfig::validate`](super::DistillConfig::validate)).
pub fn read_config(dir: &Path) -> Result<RunConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let version: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::corrupt(&path, format!("not valid JSON ({e})")))?;
    if version.get("autoencoder").is_some() {
        return Err(Error::corrupt(
            &path,
            "an autoencoder's run (ddm train-autoencoder), not a denoiser's (ddm train)",
        ));
    }
    let found = version.get("format_version").and_then(|v| v.as_u64());
    if found != Some(u64::from(FORMAT_VERSION)) {
        return Err(Error::corrupt(
            &path,
            format!(
                "format version {} is not the {FORMAT_VERSION} this build reads",
                found.map_or("(missing)".to_string(), |v| v.to_string())
            ),
        ));
    }
    let config: RunConfig = serde_json::from_value(version)
        .map_err(|e| Error::corrupt(&path, format!("not a run configuration ({e})")))?;
    config
        .graph
        .validate()
        .map_err(|e| Error::corrupt(&path, e.to_string()))?;
    if config.graph.input_shape() != config.sample_shape() {
        return Err(Error::corrupt(
            &path,
            format!(
                "the graph takes samples of shape {:?}, the data has {:?}",
                config.graph.input_shape(),
                config.sample_shape()
            ),
        ));
    }
    if let Some(distill) = &config.distill {
        let valid = config.schedule.alphas_cumprod().and_then(|alphas_cumprod| {
            let schedule = ddm_core::Schedule::new(&alphas_cumprod)?;
            distill.validate(&schedule, config.objective.prediction.into())
        });
        valid.map_err(|e| Error::corrupt(&path, format!("its distillation: {e}")))?;
    }
    if config.progress.losses.len() as u64 != config.progress.step {
        return Err(Error::corrupt(
            &path,
            format!(
                "{} losses recorded for {} steps",
                config.progress.losses.len(),
                config.progress.step
            ),
        ));
    }
    Ok(config)
}

/// Reads one set of weights of the run in `dir` whose configuration is `config`.
///
/// # Errors
/// [`Error::Corrupt`] naming the file when it is missing, unreadable, from another step, or
/// its tensors do not match the graph (missing, misshapen, not `f32`, NaN or infinite).
pub fn read_weights(dir: &Path, config: &RunConfig, set: WeightSet) -> Result<Weights> {
    let (path, tensors) = read_tensor_file(dir, set.file(), config.progress.step)?;
    check_against_graphs(&path, &[&config.graph], &tensors, "")?;
    Ok(tensors)
}

/// Reads the whole checkpoint in `dir`.
///
/// # Errors
/// As [`read_config`] and [`read_weights`], also for the optimiser file.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let config = read_config(dir)?;
    let model = read_weights(dir, &config, WeightSet::Model)?;
    let ema = read_weights(dir, &config, WeightSet::Ema)?;
    let step = config.progress.step;
    let (path, m, v) = read_moments(dir, step)?;
    let graphs = [&config.graph];
    let frozen = |name: &str| config.train.is_frozen(name);
    check_moments(&path, &graphs, frozen, &m, "first moments (m.*): ")?;
    check_moments(&path, &graphs, frozen, &v, "second moments (v.*): ")?;
    let teacher = match config.distill {
        Some(_) => {
            let (path, teacher) = read_tensor_file(dir, TEACHER_FILE, step)?;
            check_against_graphs(&path, &[&config.graph], &teacher, "teacher: ")?;
            Some(teacher)
        }
        None => None,
    };
    Ok(Checkpoint {
        config,
        model,
        ema,
        optimizer: OptimizerState { step, m, v },
        teacher,
    })
}

pub(crate) fn named(weights: &Weights) -> Vec<(String, &GraphTensor)> {
    weights.iter().map(|(n, t)| (n.clone(), t)).collect()
}

/// The tensors of [`OPTIMIZER_FILE`]: AdamW's first moments as `m.NAME`, second as `v.NAME`.
pub(crate) fn moments_named(state: &OptimizerState) -> Vec<(String, &GraphTensor)> {
    let mut tensors = Vec::new();
    for (prefix, table) in [("m.", &state.m), ("v.", &state.v)] {
        tensors.extend(table.iter().map(|(n, t)| (format!("{prefix}{n}"), t)));
    }
    tensors
}

/// Reads [`OPTIMIZER_FILE`] of step `step` in `dir`: its path, first and second moments.
///
/// # Errors
/// As [`read_tensor_file`], and [`Error::Corrupt`] for a tensor named neither `m.*` nor `v.*`.
pub(crate) fn read_moments(dir: &Path, step: u64) -> Result<(PathBuf, Weights, Weights)> {
    let (path, tensors) = read_tensor_file(dir, OPTIMIZER_FILE, step)?;
    let mut m = Weights::new();
    let mut v = Weights::new();
    for (name, tensor) in tensors {
        if let Some(param) = name.strip_prefix("m.") {
            m.insert(param.to_string(), tensor);
        } else if let Some(param) = name.strip_prefix("v.") {
            v.insert(param.to_string(), tensor);
        } else {
            return Err(Error::corrupt(&path, format!("unexpected tensor {name}")));
        }
    }
    Ok((path, m, v))
}

fn staged(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{STAGED_SUFFIX}"))
}

/// Makes the renames durable where the platform allows it (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// safetensors bytes of `tensors` (little-endian `f32`) with the step in the metadata.
fn encode(tensors: &[(String, &GraphTensor)], step: u64) -> std::result::Result<Vec<u8>, String> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), data)| {
            safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| format!("tensor {name}: {e}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([(STEP_KEY.to_string(), step.to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// Reads `name` (or its staged copy) holding `step`.
pub(crate) fn read_tensor_file(dir: &Path, name: &str, step: u64) -> Result<(PathBuf, Weights)> {
    let path = dir.join(name);
    let mut found_steps = Vec::new();
    for candidate in [path.clone(), staged(dir, name)] {
        let Ok(bytes) = std::fs::read(&candidate) else {
            continue;
        };
        let (file_step, tensors) =
            decode(&bytes).map_err(|reason| Error::corrupt(&candidate, reason))?;
        if file_step == step {
            return Ok((candidate, tensors));
        }
        found_steps.push(file_step);
    }
    let reason = if found_steps.is_empty() {
        "missing: the checkpoint is incomplete".to_string()
    } else {
        format!(
            "holds step {}, but config.json is at step {step}: the checkpoint is incomplete",
            found_steps[0]
        )
    };
    Err(Error::corrupt(path, reason))
}

/// The step and `f32` tensors of a safetensors file.
fn decode(bytes: &[u8]) -> std::result::Result<(u64, Weights), String> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file ({e})"))?;
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file ({e})"))?;
    let step = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STEP_KEY))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("no {STEP_KEY} in the metadata: not written by ddm"))?;
    let mut weights = Weights::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(format!("tensor {name} is {:?}, expected F32", view.dtype()));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        weights.insert(
            name,
            GraphTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((step, weights))
}

/// The optimiser's moments of a run of `graphs`: one tensor of the parameter's shape for every
/// parameter that trains, none for the frozen ones (`is_frozen`, see
/// [`TrainConfig::is_frozen`](super::TrainConfig::is_frozen)) or for names that are not
/// parameters; `label` starts the error reason.
pub(crate) fn check_moments(
    path: &Path,
    graphs: &[&Graph],
    is_frozen: impl Fn(&str) -> bool,
    tensors: &Weights,
    label: &str,
) -> Result<()> {
    for spec in graphs.iter().flat_map(|graph| &graph.params) {
        let frozen = is_frozen(&spec.name);
        match (tensors.get(&spec.name), frozen) {
            (None, false) => {
                return Err(Error::corrupt(
                    path,
                    format!("{label}missing the moments of {}", spec.name),
                ))
            }
            (Some(t), false)
                if t.shape != spec.shape || t.data.len() != t.shape.iter().product::<usize>() =>
            {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "{label}{} has shape {:?}, the parameter {:?}",
                        spec.name, t.shape, spec.shape
                    ),
                ))
            }
            (Some(_), true) => {
                return Err(Error::corrupt(
                    path,
                    format!("{label}{} is frozen and has no moments", spec.name),
                ))
            }
            _ => {}
        }
    }
    if let Some(extra) = tensors
        .keys()
        .find(|n| graphs.iter().all(|graph| graph.param(n).is_none()))
    {
        return Err(Error::corrupt(
            path,
            format!("{label}tensor {extra} is not a parameter of the model"),
        ));
    }
    Ok(())
}

/// Checks that `tensors` holds exactly the parameters of `graphs` (a denoiser's one graph, an
/// autoencoder's two), with their shapes and finite values; `label` starts the error reason.
pub(crate) fn check_against_graphs(
    path: &Path,
    graphs: &[&Graph],
    tensors: &Weights,
    label: &str,
) -> Result<()> {
    for graph in graphs {
        graph
            .validate_weights(tensors)
            .map_err(|e| Error::corrupt(path, format!("{label}{e}")))?;
    }
    if let Some(extra) = tensors
        .keys()
        .find(|n| graphs.iter().all(|graph| graph.param(n).is_none()))
    {
        return Err(Error::corrupt(
            path,
            format!("{label}tensor {extra} is not a parameter of the model"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{self, DatasetSpec, LoadOptions, Toy};
    use crate::model::{MlpConfig, ModelConfig};
    use crate::schedule_args::ScheduleSpec;
    use crate::train::{DataConfig, Objective, TrainConfig};

    fn run(freeze: &[&str]) -> RunConfig {
        let spec = DatasetSpec::Toy(Toy::Moons);
        let options = LoadOptions {
            toy_samples: 20,
            ..LoadOptions::default()
        };
        let data = data::load(&spec, &options).unwrap();
        RunConfig::new(
            ModelConfig::Mlp(MlpConfig::default()),
            DataConfig::new(&spec, &options, &data),
            ScheduleSpec::default(),
            Objective::default(),
            TrainConfig {
                freeze: freeze.iter().map(|p| p.to_string()).collect(),
                ..TrainConfig::default()
            },
        )
        .unwrap()
    }

    /// Zero moments for every parameter `keep` accepts.
    fn moments(config: &RunConfig, keep: impl Fn(&str) -> bool) -> Weights {
        config
            .graph
            .params
            .iter()
            .filter(|p| keep(&p.name))
            .map(|p| {
                let tensor = GraphTensor {
                    shape: p.shape.clone(),
                    data: vec![0.0; p.shape.iter().product()],
                };
                (p.name.clone(), tensor)
            })
            .collect()
    }

    #[test]
    fn frozen_parameters_have_no_moments_and_the_others_have_theirs() {
        let path = Path::new("optimizer.safetensors");
        let config = run(&["in.", "block0"]);
        assert!(config.train.is_frozen("in.weight"));
        assert!(config.train.is_frozen("block0.fc1.weight"));
        assert!(!config.train.is_frozen("block1.fc1.weight"));
        assert!(!config.train.is_frozen("time.fc1.weight"));
        let trains = |name: &str| !config.train.is_frozen(name);
        let check = |tensors: &Weights, label: &str| {
            let frozen = |name: &str| config.train.is_frozen(name);
            check_moments(path, &[&config.graph], frozen, tensors, label)
        };
        check(&moments(&config, trains), "").unwrap();
        let all = moments(&config, |_| true);
        let error = check(&all, "").unwrap_err();
        assert!(error.to_string().contains("is frozen"), "{error}");
        let first_trained = config
            .graph
            .params
            .iter()
            .find(|p| trains(&p.name))
            .unwrap();
        let missing = moments(&config, |n| trains(n) && n != first_trained.name);
        let error = check(&missing, "").unwrap_err();
        assert!(error.to_string().contains("missing the moments"), "{error}");
        let mut reshaped = moments(&config, trains);
        reshaped.get_mut(&first_trained.name).unwrap().shape.push(1);
        assert!(check(&reshaped, "").is_err());
        let mut extra = moments(&config, trains);
        extra.insert("nope".into(), reshaped[&first_trained.name].clone());
        assert!(check(&extra, "").is_err());
        // Nothing frozen: every parameter needs its moments.
        let plain = run(&[]);
        check_moments(
            path,
            &[&plain.graph],
            |_| false,
            &moments(&plain, |_| true),
            "",
        )
        .unwrap();
        let error = check_moments(
            path,
            &[&plain.graph],
            |_| false,
            &moments(&plain, trains),
            "",
        )
        .unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn down_path_names_the_unet_encoder() {
        let config = run(&["down-path"]);
        for name in [
            "conv_in.weight",
            "down0.res0.conv1.weight",
            "down1.downsample.bias",
        ] {
            assert!(config.train.is_frozen(name), "{name}");
        }
        for name in [
            "mid.res0.conv1.weight",
            "up0.res0.conv1.weight",
            "conv_in_extra",
            "in.weight",
        ] {
            assert!(!config.train.is_frozen(name), "{name}");
        }
    }
}
