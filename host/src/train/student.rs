//! A distilled student's sampler, chosen by measurement.
//!
//! A student's DDIM may re-noise between its steps (eta > 0) or not. Which is better depends
//! on the model: a consistency student maps its input to the end of the teacher's ODE
//! trajectory, and its multistep sampler (Song et al. 2023) draws fresh noise before each
//! further step, which DDIM with eta 1 nearly does on trailing timesteps; a deterministic step
//! keeps the first noise instead. Each wins by a wide margin on one of the models of
//! BENCHMARKS.md ("Few-step students"), so [`choose_eta`] measures each candidate with the
//! committed classifier of the data set, and keeps the best: the coarse candidates
//! [`ETA_CANDIDATES`], then a pattern search around the best ([`ETA_REFINEMENT`]), since the
//! best eta can lie between them by a margin that matters (BENCHMARKS.md, "Re-noising between a
//! student's steps").
//!
//! Where a consistency student's steps land matters as much: Song et al. choose the
//! intermediate timesteps of their two-step sampler by search. [`choose_timesteps`] searches
//! the teacher's grid, one timestep at a time, with the same measurement.

use std::collections::HashMap;

use ddm_core::timesteps::{GivenTimesteps, MAX_GIVEN_STEPS};
use ddm_core::{SamplerConfig, Schedule, Spacing};

use super::distill::{trailing, DistillMethod};
use super::trainer::Trainer;
use crate::data::DatasetSpec;
use crate::error::Result;
use crate::eval::classifier::Embedding;
use crate::eval::frechet::frechet_distance_of;
use crate::eval::Classifier;
use crate::model::NetworkDenoiser;
use crate::sampling::{generate, SamplerChoice, SamplingOptions};
use crate::seeding::{derive, Purpose};

/// The etas [`choose_eta`] compares first.
pub const ETA_CANDIDATES: [f32; 3] = [0.0, 0.5, 1.0];
/// The steps of [`choose_eta`]'s pattern search, in turn: at each, the two etas this far on
/// either side of the best so far (within `[0, 1]`) are measured and the best of the three
/// kept. The last, 0.05, is the finest difference that the measurement resolves.
pub const ETA_REFINEMENT: [f32; 3] = [0.25, 0.1, 0.05];
/// Samples per candidate of [`choose_eta`] and [`choose_timesteps`], and real images they are
/// compared with.
pub const CHOICE_SAMPLES: usize = 1000;

/// One measured candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EtaScore {
    /// DDIM's eta.
    pub eta: f32,
    /// Frechet distance of the student's samples to the training data, on the committed
    /// classifier's features.
    pub frechet: f64,
}

/// How [`choose_eta`] and [`choose_timesteps`] score a sampler: its samples (the student's EMA
/// weights, x0 clamped to `[-1, 1]`, [`CHOICE_SAMPLES`] of them from the seed's
/// [`Purpose::StudentSampler`] streams: the same noise for every candidate) against the first
/// [`CHOICE_SAMPLES`] training images, in Frechet distance on the features of the data set's
/// committed classifier.
struct Measure {
    classifier: Classifier,
    real: Embedding,
    count: usize,
    denoiser: NetworkDenoiser,
    alphas_cumprod: Vec<f32>,
    seed: u64,
}

impl Measure {
    /// `None` when the data set has no committed classifier (optdigits and fashion-mnist
    /// have one).
    fn new(trainer: &Trainer) -> Result<Option<Self>> {
        let config = trainer.config();
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
        Ok(Some(Measure {
            classifier,
            real,
            count,
            denoiser: trainer.denoiser(true)?,
            alphas_cumprod: trainer.alphas_cumprod().to_vec(),
            seed: derive(config.train.seed, Purpose::StudentSampler),
        }))
    }

    /// The Frechet distance of `sampler`'s samples (its clip replaced by 1).
    fn frechet(&mut self, sampler: SamplerConfig) -> Result<f64> {
        let schedule = Schedule::new(&self.alphas_cumprod)?;
        let default = (
            SamplerChoice::from_kind(sampler.kind),
            sampler.steps as usize,
        );
        let mut options = SamplingOptions::for_model(None, None, Some(sampler), default);
        options.settings.clip_sample = Some(Some(1.0));
        options.seed = self.seed;
        let samples = generate(
            &mut self.denoiser,
            schedule,
            &options,
            self.count,
            self.count,
            None,
        )?;
        let fake = self.classifier.embed(&samples)?;
        frechet_distance_of(&fake.features, &self.real.features, self.real.dim)
    }
}

/// The eta in `[0, 1]` whose samples lie closest to the training data (as `Measure` scores
/// them, with the student's sampler as it stands, timesteps included, and that eta), with every
/// measured candidate's score in the order measured: [`ETA_CANDIDATES`] and the sampler's own
/// eta (where it is none of them: a student measured before), then the pattern search of
/// [`ETA_REFINEMENT`] around the best. Etas are multiples of 0.01 (each written as
/// its nearest `f32`). `None` when the run is not a distillation or its data set has no
/// committed classifier.
///
/// # Errors
/// Sampling and classifier errors.
pub fn choose_eta(trainer: &Trainer) -> Result<Option<(f32, Vec<EtaScore>)>> {
    let Some(base) = trainer.config().default_sampler() else {
        return Ok(None);
    };
    let Some(mut measure) = Measure::new(trainer)? else {
        return Ok(None);
    };
    // In hundredths, so that a candidate reached by two paths is one candidate and prints as
    // written.
    let hundredths = |eta: f32| (eta * 100.0).round() as i32;
    let mut scores: Vec<EtaScore> = Vec::new();
    let mut score = |eta_hundredths: i32| -> Result<f64> {
        let eta = eta_hundredths as f32 / 100.0;
        if let Some(known) = scores.iter().find(|s| s.eta == eta) {
            return Ok(known.frechet);
        }
        let frechet = measure.frechet(SamplerConfig { eta, ..base })?;
        scores.push(EtaScore { eta, frechet });
        Ok(frechet)
    };
    let first = hundredths(ETA_CANDIDATES[0]);
    let mut best = (first, score(first)?);
    let current = hundredths(base.eta).clamp(0, 100);
    for candidate in ETA_CANDIDATES[1..]
        .iter()
        .map(|&eta| hundredths(eta))
        .chain([current])
    {
        let frechet = score(candidate)?;
        if frechet < best.1 {
            best = (candidate, frechet);
        }
    }
    for step in ETA_REFINEMENT {
        let centre = best.0;
        for candidate in [centre - hundredths(step), centre + hundredths(step)] {
            if !(0..=100).contains(&candidate) {
                continue;
            }
            let frechet = score(candidate)?;
            if frechet < best.1 {
                best = (candidate, frechet);
            }
        }
    }
    Ok(Some((best.0 as f32 / 100.0, scores)))
}

/// [`choose_timesteps`] tries every `range / COARSE_CANDIDATES`-th grid point of a timestep's
/// range (8 to 16 points, every point of a shorter range) before refining around the best.
pub const COARSE_CANDIDATES: usize = 8;
/// Most passes of [`choose_timesteps`] over the timesteps.
pub const MAX_PASSES: usize = 2;

/// What [`choose_timesteps`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TimestepChoice {
    /// The chosen timesteps, noisiest first.
    pub timesteps: Vec<u32>,
    /// Their Frechet distance (as `Measure` scores it).
    pub frechet: f64,
    /// The trailing timesteps' Frechet distance, where the search started.
    pub trailing_frechet: f64,
    /// How many timestep sets were measured.
    pub measured: usize,
}

/// The timesteps of a consistency student's sampler (with its eta) whose samples lie closest
/// to the training data, as `Measure` scores them. The first stays at `T - 1`, where the
/// sampler's pure noise belongs; every other one moves over the teacher's grid (the
/// timesteps the student was trained on) between its neighbours: coordinate descent from the
/// `N` trailing timesteps, each range tried at evenly spread points ([`COARSE_CANDIDATES`])
/// and then at every grid point around the best, a move kept only when it lowers the
/// distance, at most [`MAX_PASSES`] passes. `None` for a run that is not a consistency
/// distillation, a one-step student, a student with more than [`MAX_GIVEN_STEPS`] steps or
/// as many as its grid (nothing to move), or a data set without a committed classifier.
///
/// # Errors
/// Sampling and classifier errors.
pub fn choose_timesteps(trainer: &Trainer) -> Result<Option<TimestepChoice>> {
    let config = trainer.config();
    let (Some(distill), Some(base)) = (&config.distill, config.default_sampler()) else {
        return Ok(None);
    };
    let steps = distill.steps as usize;
    if distill.method != DistillMethod::Consistency
        || !(2..=MAX_GIVEN_STEPS).contains(&steps)
        || distill.teacher_steps <= distill.steps
    {
        return Ok(None);
    }
    let schedule = Schedule::new(trainer.alphas_cumprod())?;
    let grid = trailing(&schedule, distill.teacher_steps)?;
    let start: Option<Vec<usize>> = trailing(&schedule, distill.steps)?
        .iter()
        .map(|t| grid.iter().position(|g| g == t))
        .collect();
    let Some(mut best) = start else {
        return Ok(None);
    };
    let Some(mut measure) = Measure::new(trainer)? else {
        return Ok(None);
    };
    let mut scores: HashMap<Vec<usize>, f64> = HashMap::new();
    let mut score = |positions: &[usize]| -> Result<f64> {
        if let Some(&known) = scores.get(positions) {
            return Ok(known);
        }
        let timesteps: Vec<u32> = positions.iter().map(|&p| grid[p]).collect();
        let given = GivenTimesteps::new(&timesteps)?;
        let frechet = measure.frechet(SamplerConfig {
            spacing: Spacing::Given(given),
            ..base
        })?;
        scores.insert(positions.to_vec(), frechet);
        Ok(frechet)
    };
    let trailing_frechet = score(&best)?;
    let mut best_frechet = trailing_frechet;
    for _ in 0..MAX_PASSES {
        let before = best.clone();
        for i in 1..best.len() {
            let low = best[i - 1] + 1;
            let high = best.get(i + 1).map_or(grid.len(), |&next| next) - 1;
            if low >= high {
                continue;
            }
            let stride = ((high - low) / COARSE_CANDIDATES).max(1);
            let coarse: Vec<usize> = (low..=high).step_by(stride).collect();
            let mut try_at = |position: usize, best: &mut Vec<usize>| -> Result<()> {
                let mut candidate = best.clone();
                candidate[i] = position;
                let frechet = score(&candidate)?;
                if frechet < best_frechet {
                    best_frechet = frechet;
                    *best = candidate;
                }
                Ok(())
            };
            for position in coarse {
                try_at(position, &mut best)?;
            }
            let centre = best[i];
            let near = centre.saturating_sub(stride - 1).max(low)..=(centre + stride - 1).min(high);
            for position in near {
                try_at(position, &mut best)?;
            }
        }
        if best == before {
            break;
        }
    }
    Ok(Some(TimestepChoice {
        timesteps: best.iter().map(|&p| grid[p]).collect(),
        frechet: best_frechet,
        trailing_frechet,
        measured: scores.len(),
    }))
}
