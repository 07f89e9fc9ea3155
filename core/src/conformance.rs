//! Digests that prove two targets compute the same bits.
//!
//! [`digest`] runs a fixed workload through every part of this crate (the RNG stream, all
//! schedules, every sampler against the Gaussian-mixture oracle) and folds each result's bit
//! patterns into an FNV-1a hash. A device build prints it; the host compares it with its own.
//! It needs about 12 KiB of stack and no heap.

use crate::gmm::GaussianMixture;
use crate::loss_weight::ReverseVariance;
use crate::prediction::Prediction;
use crate::rng::Rng;
use crate::sampler::{self, AnnealedLangevin, Ddim, Ddpm, DpmSolverPp2m};
use crate::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use crate::timesteps::{fill_timesteps, Spacing};
use crate::Error;

/// FNV-1a digests of each workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Digest {
    /// 4096 raw `u32`s, 4096 uniforms and 4096 normals from seed 2024.
    pub rng: u32,
    /// `alpha_bar` of every beta schedule, with and without zero-terminal-SNR rescaling.
    pub schedules: u32,
    /// DDIM, 25 leading steps, `eta = 0`.
    pub ddim: u32,
    /// DDIM with `eta = 1` and x0 clipping, 20 trailing steps.
    pub ddim_eta: u32,
    /// DDPM over 100 linspace steps, posterior variance.
    pub ddpm: u32,
    /// DPM-Solver++ 2M, 10 log-SNR steps, on the zero-terminal-SNR cosine schedule.
    pub dpm_solver: u32,
    /// Annealed Langevin, 6 levels of 8 steps.
    pub langevin: u32,
}

impl Digest {
    /// The fields with their names, in a fixed order, for printing and comparison.
    pub fn fields(&self) -> [(&'static str, u32); 7] {
        [
            ("rng", self.rng),
            ("schedules", self.schedules),
            ("ddim", self.ddim),
            ("ddim_eta", self.ddim_eta),
            ("ddpm", self.ddpm),
            ("dpm_solver", self.dpm_solver),
            ("langevin", self.langevin),
        ]
    }
}

/// 32-bit FNV-1a over little-endian words.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u32);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0x811c_9dc5)
    }
}

impl Fnv1a {
    /// Folds one word in.
    pub fn word(&mut self, word: u32) {
        for byte in word.to_le_bytes() {
            self.0 = (self.0 ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
    }

    /// Folds the bit patterns of `values` in.
    pub fn floats(&mut self, values: &[f32]) {
        for value in values {
            self.word(value.to_bits());
        }
    }

    /// The digest so far.
    pub fn finish(&self) -> u32 {
        self.0
    }
}

const TRAIN_STEPS: usize = 1000;
const SAMPLES: usize = 48;
const DIM: usize = 2;

const R: f32 = core::f32::consts::SQRT_2;
/// Eight Gaussians on a circle of radius 2, unequal weights.
#[rustfmt::skip]
const MEANS: [f32; 16] = [
    2.0, 0.0, R, R, 0.0, 2.0, -R, R,
    -2.0, 0.0, -R, -R, 0.0, -2.0, R, -R,
];
const STDS: [f32; 8] = [0.1, 0.15, 0.1, 0.2, 0.1, 0.15, 0.1, 0.2];
const WEIGHTS: [f32; 8] = [0.2, 0.1, 0.15, 0.05, 0.2, 0.1, 0.15, 0.05];

/// Runs the conformance workload. The result depends only on this crate's code, never on the
/// target, so any difference between two targets' digests is a portability bug.
///
/// Every step uses fixed, valid parameters; an error means a core function refused them,
/// which is itself a bug worth reporting rather than hashing.
pub fn digest() -> Result<Digest, Error> {
    let mixture = GaussianMixture::new(&MEANS, &STDS, &WEIGHTS, DIM)?;
    let mut table = [0.0f32; TRAIN_STEPS];

    let mut hash = Fnv1a::default();
    let mut rng = Rng::new(2024);
    for _ in 0..4096 {
        hash.word(rng.next_u32());
    }
    for _ in 0..4096 {
        hash.word(rng.uniform().to_bits());
    }
    for _ in 0..4096 {
        hash.word(rng.normal().to_bits());
    }
    let rng_digest = hash.finish();

    let mut hash = Fnv1a::default();
    for betas in [
        BetaSchedule::linear(),
        BetaSchedule::scaled_linear(),
        BetaSchedule::cosine(),
        BetaSchedule::sigmoid(),
    ] {
        for zero_terminal_snr in [false, true] {
            let config = ScheduleConfig {
                betas,
                train_steps: TRAIN_STEPS,
                zero_terminal_snr,
            };
            config.fill_alphas_cumprod(&mut table)?;
            hash.floats(&table);
        }
    }
    let schedules = hash.finish();

    ScheduleConfig::ddpm().fill_alphas_cumprod(&mut table)?;
    let linear = Schedule::new(&table)?;
    let oracle = |schedule: &Schedule<'_>, x: &[f32], t: u32, out: &mut [f32]| {
        let (a, s) = (schedule.signal(t as usize), schedule.noise(t as usize));
        mixture.eps(x, a as f32, s as f32, out)
    };

    let mut x = [0.0f32; SAMPLES * DIM];
    let mut output = [0.0f32; SAMPLES * DIM];
    let mut steps = [0u32; 100];

    let ddim = {
        let timesteps = &mut steps[..25];
        fill_timesteps(&linear, Spacing::Leading, 1, timesteps)?;
        let mut rng = Rng::new(1);
        rng.fill_normal(&mut x);
        let mut ddim = Ddim::new(linear, timesteps, Prediction::Eps, 0.0, None)?;
        sampler::run(&mut ddim, &mut x, &mut output, &mut rng, |x, t, out| {
            oracle(&linear, x, t, out)
        })?;
        hash_of(&x)
    };

    let ddim_eta = {
        let timesteps = &mut steps[..20];
        fill_timesteps(&linear, Spacing::Trailing, 0, timesteps)?;
        let mut rng = Rng::new(2);
        rng.fill_normal(&mut x);
        let mut ddim = Ddim::new(linear, timesteps, Prediction::Eps, 1.0, Some(1.5))?;
        sampler::run(&mut ddim, &mut x, &mut output, &mut rng, |x, t, out| {
            oracle(&linear, x, t, out)
        })?;
        hash_of(&x)
    };

    let ddpm = {
        let timesteps = &mut steps[..100];
        fill_timesteps(&linear, Spacing::Linspace, 0, timesteps)?;
        let mut rng = Rng::new(3);
        rng.fill_normal(&mut x);
        let mut ddpm = Ddpm::new(
            linear,
            timesteps,
            Prediction::Eps,
            ReverseVariance::Posterior,
            None,
        )?;
        sampler::run(&mut ddpm, &mut x, &mut output, &mut rng, |x, t, out| {
            oracle(&linear, x, t, out)
        })?;
        hash_of(&x)
    };

    let dpm_solver = {
        ScheduleConfig {
            betas: BetaSchedule::cosine(),
            train_steps: TRAIN_STEPS,
            zero_terminal_snr: true,
        }
        .fill_alphas_cumprod(&mut table)?;
        let cosine = Schedule::new(&table)?;
        let timesteps = &mut steps[..10];
        fill_timesteps(&cosine, Spacing::LogSnr, 0, timesteps)?;
        let mut rng = Rng::new(4);
        rng.fill_normal(&mut x);
        let mut previous = [0.0f32; SAMPLES * DIM];
        let mut solver =
            DpmSolverPp2m::new(cosine, timesteps, Prediction::Eps, None, &mut previous)?;
        sampler::run(&mut solver, &mut x, &mut output, &mut rng, |x, t, out| {
            oracle(&cosine, x, t, out)
        })?;
        hash_of(&x)
    };

    let langevin = {
        let mut rng = Rng::new(5);
        let mut langevin = AnnealedLangevin::new(5.0, 0.05, 6, 8, 1e-3, true)?;
        rng.fill_normal(&mut x);
        for value in x.iter_mut() {
            *value *= 5.0;
        }
        while let Some(sigma) = langevin.sigma() {
            mixture.ve_score(&x, sigma as f32, &mut output)?;
            langevin.step_with_score(&mut x, &output, &mut rng)?;
        }
        hash_of(&x)
    };

    Ok(Digest {
        rng: rng_digest,
        schedules,
        ddim,
        ddim_eta,
        ddpm,
        dpm_solver,
        langevin,
    })
}

fn hash_of(values: &[f32]) -> u32 {
    let mut hash = Fnv1a::default();
    hash.floats(values);
    hash.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_repeatable_and_distinguishes_workloads() {
        let first = digest().unwrap();
        assert_eq!(first, digest().unwrap());
        let fields = first.fields();
        for (i, a) in fields.iter().enumerate() {
            assert_ne!(a.1, 0, "{} failed to run", a.0);
            for b in &fields[i + 1..] {
                assert_ne!(a.1, b.1, "{} and {} collide", a.0, b.0);
            }
        }
    }
}
