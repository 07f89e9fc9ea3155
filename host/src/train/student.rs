//! A distilled student's sampler, chosen by measurement.
//!
//! A student's DDIM may re-noise between its steps (eta > 0) or not. Which is better depends
//! on the model: a consistency student maps its input to the end of the teacher's ODE
//! trajectory, and its multistep sampler (Song et al. 2023) draws fresh noise before each
//! further step, which DDIM with eta 1 nearly does on trailing timesteps; a deterministic step
//! keeps the first noise instead. Each wins by a wide margin on one of the models of
//! BENCHMARKS.md ("Few-step students"), so [`choose_eta`] measures each candidate with the
//! committed classifier of the data set, and keeps the best.

use ddm_core::Schedule;

use super::trainer::Trainer;
use crate::data::DatasetSpec;
use crate::error::Result;
use crate::eval::frechet::frechet_distance_of;
use crate::eval::Classifier;
use crate::sampling::{generate, SamplerChoice, SamplingOptions};
use crate::seeding::{derive, Purpose};

/// The etas [`choose_eta`] compares.
pub const ETA_CANDIDATES: [f32; 3] = [0.0, 0.5, 1.0];
/// Samples per candidate and real images [`choose_eta`] compares them with.
pub const CHOICE_SAMPLES: usize = 500;

/// One measured candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EtaScore {
    /// DDIM's eta.
    pub eta: f32,
    /// Frechet distance of the student's samples to the training data, on the committed
    /// classifier's features.
    pub frechet: f64,
}

/// The eta of [`ETA_CANDIDATES`] whose samples (the student's EMA weights and its sampler with
/// that eta, x0 clamped to `[-1, 1]`, [`CHOICE_SAMPLES`] of them from the seed's
/// [`Purpose::StudentSampler`] streams) lie closest in Frechet distance to the first
/// [`CHOICE_SAMPLES`] training images, on the features of the data set's committed
/// classifier; with every candidate's score. `None` when the run is not a distillation or its
/// data set has no committed classifier (optdigits and fashion-mnist have one).
///
/// # Errors
/// Sampling and classifier errors.
pub fn choose_eta(trainer: &Trainer) -> Result<Option<(f32, Vec<EtaScore>)>> {
    let config = trainer.config();
    let Some(base) = config.default_sampler() else {
        return Ok(None);
    };
    let Ok(spec) = config.data.dataset.parse::<DatasetSpec>() else {
        return Ok(None);
    };
    let Ok(classifier) = Classifier::committed(&spec) else {
        return Ok(None);
    };
    let data = trainer.data();
    let len = data.sample_len();
    let count = CHOICE_SAMPLES.min(data.len());
    let real = classifier.embed(&data.values[..count * len])?;
    let mut denoiser = trainer.denoiser(true)?;
    let schedule = Schedule::new(trainer.alphas_cumprod())?;
    let mut scores = Vec::with_capacity(ETA_CANDIDATES.len());
    for eta in ETA_CANDIDATES {
        let default = (SamplerChoice::from_kind(base.kind), base.steps as usize);
        let mut options = SamplingOptions::for_model(None, None, Some(base), default);
        options.settings.eta = Some(eta);
        options.settings.clip_sample = Some(Some(1.0));
        options.seed = derive(config.train.seed, Purpose::StudentSampler);
        let samples = generate(&mut denoiser, schedule, &options, count, count, None)?;
        let fake = classifier.embed(&samples)?;
        let frechet = frechet_distance_of(&fake.features, &real.features, real.dim)?;
        scores.push(EtaScore { eta, frechet });
    }
    let best = scores
        .iter()
        .min_by(|a, b| a.frechet.total_cmp(&b.frechet))
        .map_or(0.0, |score| score.eta);
    Ok(Some((best, scores)))
}
