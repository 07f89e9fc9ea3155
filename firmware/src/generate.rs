//! Generating one sample on the device: the network driven by a core sampler.
//!
//! Sample `sample_index` of seed `seed` draws its initial noise `x_T` with
//! `Rng::with_stream(seed, sample_index).fill_normal` and every noise draw of its sampler from
//! the same generator, exactly as the host's `ddm::sampling::generate` does for sample `i` of
//! a run; with the same blob the device therefore reproduces the host's bytes.
//!
//! A class-conditional blob ([`Blob::classes`]) generates class `y` with classifier-free
//! guidance ([`ddm_core::Guidance`], diffusers' convention): each step runs the network for
//! `y`, then, when the scale is not 1, for "no class", and gives the sampler `u + w (c - u)`,
//! the host's `ddm sample --class` rule in the same order and the same `f32` arithmetic.

use ddm_core::sampler::Sampler;
use ddm_core::{Guidance, Rng};

use crate::blob::{Blob, BlobKind};
use crate::cast;
use crate::error::{check_len, Error, Result};
use crate::network::Network;
use crate::plan::{aligned, ArenaLayout};
use ddm_core::sampler::{SamplerConfig, SamplerOptions};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GenerateSettings {
    /// The sampler settings that replace the blob's defaults ([`Blob::sampler_defaults`]);
    /// everything left `None` is the blob's.
    pub sampler: SamplerOptions,
    /// Seed of the random streams.
    pub seed: u64,
    /// Which sample of the seed's run: selects the random stream.
    pub sample_index: u64,
    /// The class to generate, for a class-conditional blob; `None` generates from the
    /// unconditional model (the "no class" row; every blob allows it).
    pub class: Option<u32>,
    /// The guidance of a requested class (ignored without one).
    pub guidance: Guidance,
}

impl GenerateSettings {
    /// The blob's default sampler for sample `sample_index` of `seed`.
    pub const fn new(seed: u64, sample_index: u64) -> Self {
        GenerateSettings {
            sampler: SamplerOptions::none(),
            seed,
            sample_index,
            class: None,
            guidance: Guidance::DEFAULT,
        }
    }

    /// These settings for class `class` with guidance `guidance`.
    pub const fn with_class(self, class: u32, guidance: Guidance) -> Self {
        GenerateSettings {
            class: Some(class),
            guidance,
            ..self
        }
    }

    /// Whether each step makes a second, unconditional prediction: a class is requested
    /// with a guidance scale other than 1.
    pub fn is_guided(&self) -> bool {
        self.class.is_some() && self.guidance.needs_unconditional()
    }

    /// Checks the requested class against `blob`.
    ///
    /// # Errors
    /// [`Error::InvalidClass`] for a class of an unconditional blob or one out of range.
    pub fn check_class(&self, blob: &Blob<'_>) -> Result<()> {
        blob.class_row(self.class).map(|_| ())
    }

    /// The sampler settings actually used with `blob`: [`SamplerOptions::resolve`] over the
    /// blob's defaults, the rule the host follows too.
    ///
    /// # Errors
    /// [`Error::Core`] when the settings are invalid for the blob's schedule.
    pub fn resolve(&self, blob: &Blob<'_>) -> Result<SamplerConfig> {
        Ok(self.sampler.resolve(
            Some(blob.sampler_defaults()),
            &blob.alpha_bar_schedule()?,
            blob.schedule().prediction,
        )?)
    }
}

/// Progress of a generation run, reported before each network evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StepInfo {
    /// Index of the step (0-based).
    pub index: u32,
    /// Number of steps of the run.
    pub total: u32,
    /// Training timestep the network is evaluated at.
    pub timestep: u32,
}

/// What [`generate_observed`] reports about each step; every method does nothing by default.
/// Boards use it to time the network call alone and to checksum the trajectory, so that a
/// mismatch with the host names its first diverging step.
pub trait StepObserver {
    /// Right before the network call of `step` (before both calls of a guided step).
    fn before_network(&mut self, step: StepInfo) {
        let _ = step;
    }

    /// Right after the network call of `step` (after both calls of a guided step and their
    /// combination), before its output is used.
    fn after_network(&mut self, step: StepInfo) {
        let _ = step;
    }

    /// After the sampler's update of `step`: `x` is the sample after it.
    fn after_step(&mut self, step: StepInfo, x: &[f32]) {
        let _ = (step, x);
    }

    /// Right before a latent model's decoder runs on the final latent (never called for a
    /// model without a decoder).
    fn before_decode(&mut self) {}

    /// Right after the decoder's call, before its output is clamped into the image.
    fn after_decode(&mut self) {}
}

/// Observes nothing.
impl StepObserver for () {}

/// Adapts a closure called before each network evaluation.
struct BeforeNetwork<F>(F);

impl<F: FnMut(StepInfo)> StepObserver for BeforeNetwork<F> {
    fn before_network(&mut self, step: StepInfo) {
        (self.0)(step);
    }
}

/// Generates one sample into `out` ([`Blob::image_len`] elements) with the arena `arena`
/// (see [`required_arena_bytes`](crate::required_arena_bytes)).
///
/// A latent model ([`Blob::decoder`]) samples a latent, decodes it once and writes the image,
/// clamped to `[-1, 1]`. Errors before touching the arena for a network blob (it has no
/// schedule: [`Error::InvalidSchedule`]), invalid settings, a wrong `out` length or a short
/// arena.
pub fn generate(
    blob: &Blob<'_>,
    arena: &mut [u8],
    settings: &GenerateSettings,
    out: &mut [f32],
) -> Result<()> {
    generate_with(blob, arena, settings, out, |_| {})
}

/// [`generate`], calling `on_step` before each network evaluation (for timing or logging).
pub fn generate_with(
    blob: &Blob<'_>,
    arena: &mut [u8],
    settings: &GenerateSettings,
    out: &mut [f32],
    on_step: impl FnMut(StepInfo),
) -> Result<()> {
    generate_observed(blob, arena, settings, out, &mut BeforeNetwork(on_step))
}

/// [`generate`], telling `observer` about every step: before and after each network call and
/// after each sampler update. Same checks, same bytes.
pub fn generate_observed(
    blob: &Blob<'_>,
    arena: &mut [u8],
    settings: &GenerateSettings,
    out: &mut [f32],
    observer: &mut impl StepObserver,
) -> Result<()> {
    // Everything that can be refused is checked before the arena is touched.
    if blob.kind() != BlobKind::Model {
        return Err(Error::InvalidSchedule(
            "a network blob cannot generate: it has no schedule",
        ));
    }
    let config = settings.resolve(blob)?;
    settings.check_class(blob)?;
    let steps = config.steps as usize;
    check_len("generated sample", blob.image_len(), out.len())?;
    let layout = ArenaLayout::new(blob, steps)?;
    let arena = aligned(arena, layout.len())?;
    #[cfg(feature = "defmt")]
    defmt::debug!(
        "generate: {} in {=usize} steps, seed {=u64}, sample {=u64}, arena {=usize} bytes",
        config.kind,
        steps,
        settings.seed,
        settings.sample_index,
        layout.len()
    );

    let (networks, rest) = arena.split_at_mut(layout.x.start);
    let (x, rest) = rest.split_at_mut(layout.output.start - layout.x.start);
    let (output, rest) = rest.split_at_mut(layout.unconditional.start - layout.output.start);
    let (unconditional, rest) =
        rest.split_at_mut(layout.scratch.start - layout.unconditional.start);
    let (scratch, timesteps) = rest.split_at_mut(layout.timesteps.start - layout.scratch.start);
    let len = |r: &core::ops::Range<usize>| r.end - r.start;
    let x = cast::f32s_mut(&mut x[..len(&layout.x)])?;
    let output = cast::f32s_mut(&mut output[..len(&layout.output)])?;
    let unconditional = cast::f32s_mut(&mut unconditional[..len(&layout.unconditional)])?;
    let scratch = cast::f32s_mut(&mut scratch[..len(&layout.scratch)])?;
    let timesteps = cast::u32s_mut(&mut timesteps[..len(&layout.timesteps)])?;

    let schedule = blob.alpha_bar_schedule()?;
    config.timesteps(&schedule, timesteps)?;
    let mut rng = Rng::with_stream(settings.seed, settings.sample_index);
    rng.fill_normal(x);
    let mut sampler = config.build(blob.schedule().prediction, schedule, timesteps, scratch)?;
    // The denoiser's part: its activations and the kernel scratch after them.
    let activations = networks
        .get_mut(layout.activations.start..layout.kernel_scratch.end)
        .ok_or(Error::Malformed("layout"))?;
    let mut network = Network::new(*blob, activations)?;
    let total = sampler.num_steps() as u32;
    while let Some(timestep) = sampler.timestep() {
        let step = StepInfo {
            index: sampler.steps_taken() as u32,
            total,
            timestep,
        };
        observer.before_network(step);
        network.run_class(x, timestep, settings.class, output)?;
        if settings.is_guided() {
            network.run_class(x, timestep, None, unconditional)?;
            settings.guidance.apply(unconditional, output)?;
        }
        observer.after_network(step);
        sampler.step(x, output, &mut rng)?;
        observer.after_step(step, x);
    }
    match blob.decoder() {
        None => out.copy_from_slice(x),
        Some(decoder) => {
            // The denoiser's activations are dead: the decoder runs over them.
            let arena = networks
                .get_mut(layout.decoder.clone())
                .ok_or(Error::Malformed("layout"))?;
            observer.before_decode();
            Network::new(decoder, arena)?.run(x, 0, out)?;
            observer.after_decode();
            for value in out.iter_mut() {
                *value = value.clamp(-1.0, 1.0);
            }
        }
    }
    Ok(())
}
