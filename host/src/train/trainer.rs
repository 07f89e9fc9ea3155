//! The training state and one optimisation step.

use candle_core::{DType, Device, Tensor, Var};
use ddm_core::{Rng, Schedule};
use ddm_export::graph::Graph;

use super::batch::{self, Batch, LabelDropout};
use super::checkpoint::Checkpoint;
use super::config::{RunConfig, TrainConfig};
use super::distill::{self, DistillInputs};
use super::ema::Ema;
use super::lr::learning_rate;
use super::optim::{clip_grad_norm, AdamW};
use super::parallel::{check_ranks, Collective};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{forward_conditional, NetworkDenoiser, Params};
use crate::seeding::{derive, Purpose};

/// What one call of [`Trainer::step`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The step (1-based) that was attempted.
    pub step: u64,
    /// Its weighted loss.
    pub loss: f32,
    /// The global gradient norm before clipping (NaN when the loss was not finite).
    pub grad_norm: f32,
    /// The learning rate of the step.
    pub lr: f64,
    /// Whether the update was applied: `false` when the loss or the gradient was NaN or
    /// infinite, in which case nothing changed.
    pub applied: bool,
}

impl StepReport {
    /// The report of step `index` (0-based) before its update is applied.
    fn skipped(index: u64, loss: f32, lr: f64) -> Self {
        StepReport {
            step: index + 1,
            loss,
            grad_norm: f32::NAN,
            lr,
            applied: false,
        }
    }
}

/// The gradient of `loss` for each of `vars` (zeros for one it does not depend on).
pub(crate) fn gradients(loss: &Tensor, vars: &[(String, Var)]) -> Result<Vec<Tensor>> {
    let store = loss.backward()?;
    // Detached: candle leaves a variable's own gradient attached to the forward graph when
    // the variable is an op's direct argument (convolution kernels), and the optimiser's
    // moments would then keep every step's graph alive.
    vars.iter()
        .map(|(_, var)| match store.get(var.as_tensor()) {
            Some(grad) => Ok(grad.detach()),
            None => Ok(var.as_tensor().zeros_like()?),
        })
        .collect()
}

/// The mean over the ranks of `loss` and of each gradient, in one sum of one flat tensor.
fn mean_over_ranks(
    collective: &mut dyn Collective,
    loss: &Tensor,
    grads: &[Tensor],
) -> Result<(f32, Vec<Tensor>)> {
    let mut parts = vec![loss.reshape(1)?.to_dtype(DType::F32)?];
    for grad in grads {
        parts.push(grad.flatten_all()?.to_dtype(DType::F32)?);
    }
    let sum = collective.sum(&Tensor::cat(&parts, 0)?)?;
    let mean = (sum / collective.ranks() as f64)?;
    let loss = mean.narrow(0, 0, 1)?.to_vec1::<f32>()?[0];
    let mut offset = 1;
    let grads = grads
        .iter()
        .map(|grad| {
            let len = grad.elem_count();
            let part = mean.narrow(0, offset, len)?.reshape(grad.shape())?;
            offset += len;
            Ok(part.to_dtype(grad.dtype())?)
        })
        .collect::<Result<Vec<Tensor>>>()?;
    Ok((loss, grads))
}

/// A training run in memory: configuration, data, weights, optimiser and EMA, and for a
/// distillation ([`RunConfig::distill`]) the current round's teacher.
///
/// Every random number of step `s` (0-based) comes from
/// `Rng::with_stream(derive(seed, Batches), s)`, so a trainer restored from a checkpoint
/// continues exactly as an uninterrupted one.
#[derive(Debug)]
pub struct Trainer {
    config: RunConfig,
    data: Dataset,
    device: Device,
    alphas_cumprod: Vec<f32>,
    /// The parameters the optimiser updates (all but the frozen ones).
    vars: Vec<(String, Var)>,
    params: Params,
    optimizer: AdamW,
    ema: Ema,
    teacher: Option<Params>,
    /// This rank's link to the others in data-parallel training ([`super::parallel`]).
    collective: Option<Box<dyn Collective>>,
}

impl Trainer {
    /// A fresh run: parameters initialised from the seed, step 0.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `data` does not have the configured shape or the configuration
    /// is invalid.
    pub fn new(mut config: RunConfig, data: Dataset, device: &Device) -> Result<Self> {
        config.train.validate()?;
        config.progress = Default::default();
        let params = Params::init(
            &config.graph,
            derive(config.train.seed, Purpose::Init),
            device,
        )?;
        let ema = Ema::new(&params, config.train.ema_decay)?;
        let vars = to_vars(&config.graph, &params)?;
        let optimizer = AdamW::new(&config.train, &trainable(&config, &vars)?)?;
        Self::assemble(config, data, device, vars, optimizer, ema, None)
    }

    /// A fresh run (step 0) that starts from `weights` (fine-tuning, `config.init_from`; see
    /// [`fine_tune::initial_weights`](super::fine_tune::initial_weights)) with a new optimiser
    /// state and an EMA that starts at them.
    ///
    /// # Errors
    /// As [`Trainer::new`], and when `weights` do not fit the graph.
    pub fn fine_tuned(
        mut config: RunConfig,
        data: Dataset,
        weights: &ddm_export::graph::Weights,
        device: &Device,
    ) -> Result<Self> {
        config.train.validate()?;
        config.progress = Default::default();
        let params = Params::from_weights(&config.graph, weights, device)?;
        let ema = Ema::new(&params, config.train.ema_decay)?;
        let vars = to_vars(&config.graph, &params)?;
        let optimizer = AdamW::new(&config.train, &trainable(&config, &vars)?)?;
        Self::assemble(config, data, device, vars, optimizer, ema, None)
    }

    /// A fresh distillation (`config.distill` set, step 0): the student starts from
    /// `teacher`'s weights, which are also the first round's teacher.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the configuration is not a valid distillation
    /// ([`DistillConfig::validate`](super::DistillConfig::validate), `train.steps` other than
    /// its total updates), `teacher` does not fit the graph, or `data` does not fit.
    pub fn distilled(
        mut config: RunConfig,
        data: Dataset,
        teacher: &ddm_export::graph::Weights,
        device: &Device,
    ) -> Result<Self> {
        config.train.validate()?;
        config.progress = Default::default();
        let params = Params::from_weights(&config.graph, teacher, device)?;
        let teacher = params.detached_copy()?;
        let ema = Ema::new(&params, config.train.ema_decay)?;
        let vars = to_vars(&config.graph, &params)?;
        let optimizer = AdamW::new(&config.train, &trainable(&config, &vars)?)?;
        Self::assemble(config, data, device, vars, optimizer, ema, Some(teacher))
    }

    /// Continues the run saved in `checkpoint`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `data` does not have the configured shape or the optimiser
    /// state does not fit the parameters.
    pub fn from_checkpoint(checkpoint: Checkpoint, data: Dataset, device: &Device) -> Result<Self> {
        let Checkpoint {
            config,
            model,
            ema,
            optimizer,
            teacher,
        } = checkpoint;
        let teacher = teacher
            .map(|weights| Params::from_weights(&config.graph, &weights, device))
            .transpose()?;
        let params = Params::from_weights(&config.graph, &model, device)?;
        let ema = Ema::from_params(
            &Params::from_weights(&config.graph, &ema, device)?,
            config.train.ema_decay,
        );
        let vars = to_vars(&config.graph, &params)?;
        if optimizer.step != config.progress.step {
            return Err(Error::Invalid(format!(
                "the optimiser state is at step {}, the run at step {}",
                optimizer.step, config.progress.step
            )));
        }
        let optimizer = AdamW::from_state(
            &config.train,
            &trainable(&config, &vars)?,
            &optimizer,
            device,
        )?;
        Self::assemble(config, data, device, vars, optimizer, ema, teacher)
    }

    fn assemble(
        config: RunConfig,
        data: Dataset,
        device: &Device,
        vars: Vec<(String, Var)>,
        optimizer: AdamW,
        ema: Ema,
        teacher: Option<Params>,
    ) -> Result<Self> {
        if data.shape != config.graph.input_shape() || data.is_empty() {
            return Err(Error::Invalid(format!(
                "the model takes samples of shape {:?}, the data set has {} of shape {:?}",
                config.graph.input_shape(),
                data.len(),
                data.shape
            )));
        }
        check_labels(&config.graph, &data)?;
        if config.graph.classes().is_some() && config.distill.is_some() {
            return Err(Error::Invalid(
                "distilling a class-conditional model is not supported yet".into(),
            ));
        }
        let alphas_cumprod = config.schedule.alphas_cumprod()?;
        let schedule = Schedule::new(&alphas_cumprod)?;
        match (&config.distill, &teacher) {
            (None, None) => {}
            (Some(distill), Some(_)) => {
                distill.validate(&schedule, config.objective.prediction.into())?;
                if config.train.steps != distill.total_updates() {
                    return Err(Error::Invalid(format!(
                        "a distillation of {} rounds of {} updates takes {} steps, not {}",
                        distill.rounds(),
                        distill.updates_per_round,
                        distill.total_updates(),
                        config.train.steps
                    )));
                }
            }
            _ => {
                return Err(Error::Invalid(
                    "a run has a teacher exactly when it is a distillation".into(),
                ))
            }
        }
        let params = Params::from_tensors(
            vars.iter()
                .map(|(name, var)| (name.clone(), var.as_tensor().clone())),
        );
        let vars = trainable(&config, &vars)?;
        Ok(Trainer {
            config,
            data,
            device: device.clone(),
            alphas_cumprod,
            vars,
            params,
            optimizer,
            ema,
            teacher,
            collective: None,
        })
    }

    /// Makes this trainer one rank of a data-parallel run ([`super::parallel`]): each step it
    /// trains on its shard of the batch and sums losses and gradients with the other ranks
    /// through `collective`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the rank count does not divide the batch size.
    pub fn with_collective(mut self, collective: Box<dyn Collective>) -> Result<Self> {
        check_ranks(self.config.train.batch_size, collective.ranks())?;
        self.collective = Some(collective);
        Ok(self)
    }

    /// This rank and the number of ranks (`(0, 1)` without data parallelism).
    pub fn rank(&self) -> (usize, usize) {
        self.collective
            .as_ref()
            .map_or((0, 1), |collective| (collective.rank(), collective.ranks()))
    }

    /// The run's configuration, with the current progress.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.config.progress.step
    }

    /// Whether all configured steps are taken.
    pub fn is_finished(&self) -> bool {
        self.step_count() >= self.config.train.steps
    }

    /// The training data.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// The device the run computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The schedule's `alpha_bar` table.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// The current (trained) parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The averaged parameters.
    pub fn ema_params(&self) -> Params {
        self.ema.params()
    }

    /// A denoiser with the EMA weights (`ema`) or the current ones.
    pub fn denoiser(&self, ema: bool) -> Result<NetworkDenoiser> {
        let params = if ema {
            self.ema.params()
        } else {
            self.params.detached_copy()?
        };
        Ok(NetworkDenoiser::new(
            self.config.graph.clone(),
            params,
            self.config.objective.prediction.into(),
            self.device.clone(),
        ))
    }

    /// Sets the DDIM eta of a distilled student's sampler ([`DistillConfig::eta`](super::DistillConfig::eta)).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a run that is not a distillation or an eta that is negative or
    /// not finite.
    pub fn set_student_eta(&mut self, eta: f32) -> Result<()> {
        let Some(distill) = self.config.distill.as_mut() else {
            return Err(Error::Invalid(
                "only a distilled student has a sampler".into(),
            ));
        };
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::Invalid(format!(
                "eta must be finite and >= 0, got {eta}"
            )));
        }
        distill.eta = Some(eta);
        Ok(())
    }

    /// Sets a distilled student's sampler timesteps ([`DistillConfig::timesteps`](super::DistillConfig::timesteps)).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a run that is not a distillation, or timesteps its
    /// configuration refuses ([`DistillConfig::validate`](super::DistillConfig::validate)).
    pub fn set_student_timesteps(&mut self, timesteps: Vec<u32>) -> Result<()> {
        let schedule = Schedule::new(&self.alphas_cumprod)?;
        let prediction = self.config.objective.prediction.into();
        let Some(distill) = self.config.distill.as_mut() else {
            return Err(Error::Invalid(
                "only a distilled student has a sampler".into(),
            ));
        };
        let mut changed = distill.clone();
        changed.timesteps = Some(timesteps);
        changed.validate(&schedule, prediction)?;
        *distill = changed;
        Ok(())
    }

    /// Forgets a distilled student's sampler eta and timesteps, so that they are measured
    /// again (`ddm distill --resume --measure-again`); its sampler meanwhile is DDIM with eta 0
    /// on the trailing timesteps.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a run that is not a distillation.
    pub fn forget_student_sampler(&mut self) -> Result<()> {
        let Some(distill) = self.config.distill.as_mut() else {
            return Err(Error::Invalid(
                "only a distilled student has a sampler".into(),
            ));
        };
        distill.eta = None;
        distill.timesteps = None;
        Ok(())
    }

    /// The current round's teacher of a distillation (`None` for a run trained on data).
    pub fn teacher(&self) -> Option<&Params> {
        self.teacher.as_ref()
    }

    /// The batch of training step `step` (0-based): noised data and its targets, or for a
    /// distillation the teacher's targets ([`distill::draw`]).
    pub fn batch(&self, step: u64) -> Result<Batch> {
        let schedule = Schedule::new(&self.alphas_cumprod)?;
        let mut rng = Rng::with_stream(derive(self.config.train.seed, Purpose::Batches), step);
        if let (Some(config), Some(teacher)) = (&self.config.distill, &self.teacher) {
            let inputs = DistillInputs {
                config,
                round: config.round_of(step),
                schedule: &schedule,
                prediction: self.config.objective.prediction.into(),
            };
            let (graph, device) = (&self.config.graph, &self.device);
            return distill::draw(
                &inputs,
                &self.data,
                self.config.train.batch_size,
                &mut rng,
                &mut |x, t| distill::predict(graph, teacher, x, t, device),
                &mut |x, t| distill::predict(graph, &self.params, x, t, device),
            );
        }
        let labels = self.config.graph.classes().map(|classes| LabelDropout {
            classes: classes as u32,
            dropout: self.config.train.label_dropout,
        });
        Ok(batch::draw(
            &self.data,
            &schedule,
            (
                self.config.objective.prediction.into(),
                self.config.objective.loss_weight.weighting(),
            ),
            labels,
            self.config.train.batch_size,
            &mut rng,
        ))
    }

    /// Takes one optimisation step: draws the batch, computes the loss and its gradient,
    /// clips, applies AdamW and updates the EMA. When the loss or gradient norm is NaN or
    /// infinite nothing is changed and the report says `applied: false`.
    ///
    /// A distillation's learning rate warms up and decays within each round, and the step
    /// that ends a round (but not the run) makes the student's EMA the next round's teacher.
    pub fn step(&mut self) -> Result<StepReport> {
        let index = self.step_count();
        let train = &self.config.train;
        let (index_in_round, round_steps) = match &self.config.distill {
            Some(distill) => {
                let round = distill.round_of(index);
                (
                    index - round * distill.updates_per_round,
                    distill.updates_per_round,
                )
            }
            None => (index, train.steps),
        };
        let lr = learning_rate(
            index_in_round,
            round_steps,
            train.warmup_steps,
            train.lr,
            train.lr_min,
        );
        let mut batch = self.batch(index)?;
        let (rank, ranks) = self.rank();
        if ranks > 1 {
            batch = batch.shard(rank, ranks)?;
        }
        let loss = loss_on_batch(&self.config.graph, &self.params, &batch, &self.device)?;
        let (loss_value, mut grads) = match &mut self.collective {
            None => {
                let loss_value = loss.to_scalar::<f32>()?;
                if !loss_value.is_finite() {
                    return Ok(StepReport::skipped(index, loss_value, lr));
                }
                (loss_value, gradients(&loss, &self.vars)?)
            }
            // Every rank takes part in every sum, whatever its own loss, so that all ranks see
            // the same summed loss and make the same decision.
            Some(collective) => {
                let grads = gradients(&loss, &self.vars)?;
                let (loss_value, grads) = mean_over_ranks(collective.as_mut(), &loss, &grads)?;
                if !loss_value.is_finite() {
                    return Ok(StepReport::skipped(index, loss_value, lr));
                }
                (loss_value, grads)
            }
        };
        let mut report = StepReport::skipped(index, loss_value, lr);
        report.grad_norm = clip_grad_norm(&mut grads, self.config.train.grad_clip)?;
        if !report.grad_norm.is_finite() {
            return Ok(report);
        }
        self.optimizer.step(&self.vars, &grads, lr)?;
        let train = &self.config.train;
        self.ema
            .update_where(&self.params, self.optimizer.steps(), |name| {
                !train.is_frozen(name)
            })?;
        self.config.progress.step += 1;
        self.config.progress.losses.push(loss_value);
        if let Some(distill) = &self.config.distill {
            let step = self.config.progress.step;
            if step.is_multiple_of(distill.updates_per_round) && !self.is_finished() {
                self.teacher = Some(self.ema.params().detached_copy()?);
            }
        }
        report.applied = true;
        Ok(report)
    }

    /// A host copy of the whole state, for [`checkpoint::save`](super::checkpoint::save).
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Ok(Checkpoint {
            config: self.config.clone(),
            model: self.params.to_weights()?,
            ema: self.ema.params().to_weights()?,
            optimizer: self.optimizer.state()?,
            teacher: self.teacher.as_ref().map(Params::to_weights).transpose()?,
        })
    }
}

/// The weighted loss `mean_b w_b mean_i (output_bi - target_bi)^2` of `graph` with `params`
/// on `batch`, as a scalar tensor that gradients can flow from.
pub fn loss_on_batch(
    graph: &Graph,
    params: &Params,
    batch: &Batch,
    device: &Device,
) -> Result<Tensor> {
    let mut shape = vec![batch.n];
    shape.extend_from_slice(graph.input_shape());
    let x = Tensor::from_vec(batch.x_t.clone(), shape.as_slice(), device)?;
    let target = Tensor::from_vec(batch.target.clone(), shape.as_slice(), device)?;
    let t = Tensor::from_vec(batch.t.clone(), batch.n, device)?;
    let weight = Tensor::from_vec(batch.weight.clone(), batch.n, device)?;
    let class = batch
        .class
        .as_ref()
        .map(|c| Tensor::from_vec(c.clone(), batch.n, device))
        .transpose()?;
    let output = forward_conditional(graph, params, &x, &t, class.as_ref(), None)?;
    let per_sample = (output - target)?.sqr()?.flatten_from(1)?.mean(1)?;
    Ok((per_sample * weight)?.mean_all()?)
}

/// Checks that a class-conditional graph's data set has a label below its class count for
/// every sample.
fn check_labels(graph: &Graph, data: &Dataset) -> Result<()> {
    let Some(classes) = graph.classes() else {
        return Ok(());
    };
    let Some(labels) = &data.labels else {
        return Err(Error::Invalid(format!(
            "the model is class-conditional but the data set {} has no labels",
            data.name
        )));
    };
    if labels.len() != data.len() {
        return Err(Error::Invalid(format!(
            "the data set {} has {} labels for {} samples",
            data.name,
            labels.len(),
            data.len()
        )));
    }
    if let Some(bad) = labels.iter().find(|&&y| y as usize >= classes) {
        return Err(Error::Invalid(format!(
            "the data set {} has label {bad}, outside the model's {classes} classes",
            data.name
        )));
    }
    Ok(())
}

/// Trainable variables for the graph's parameters, in the graph's order.
/// Every parameter of `graph` as a variable.
fn to_vars(graph: &Graph, params: &Params) -> Result<Vec<(String, Var)>> {
    graph
        .params
        .iter()
        .map(|spec| {
            let tensor = params.require(&spec.name)?;
            Ok((spec.name.clone(), Var::from_tensor(tensor)?))
        })
        .collect()
}

/// The variables the optimiser updates: all but the frozen ones
/// ([`TrainConfig::is_frozen`](super::TrainConfig::is_frozen)). Frozen parameters get no
/// gradient step, no weight decay and no optimiser state.
///
/// # Errors
/// [`Error::Invalid`] when a `freeze` prefix names no parameter, or every parameter would be
/// frozen.
fn trainable(config: &RunConfig, vars: &[(String, Var)]) -> Result<Vec<(String, Var)>> {
    let train = &config.train;
    for prefix in &train.freeze {
        let single = TrainConfig {
            freeze: vec![prefix.clone()],
            ..TrainConfig::default()
        };
        if !vars.iter().any(|(name, _)| single.is_frozen(name)) {
            let names: Vec<&str> = vars.iter().map(|(name, _)| name.as_str()).collect();
            return Err(Error::Invalid(format!(
                "--freeze {prefix}: no parameter of this model starts with it (its parameters: \
                 {})",
                names.join(", ")
            )));
        }
    }
    let trainable: Vec<(String, Var)> = vars
        .iter()
        .filter(|(name, _)| !train.is_frozen(name))
        .cloned()
        .collect();
    if trainable.is_empty() {
        return Err(Error::Invalid(
            "--freeze holds every parameter fixed: nothing would train".into(),
        ));
    }
    Ok(trainable)
}
