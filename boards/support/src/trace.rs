//! Generation observed step by step: the network call of each step (for timing it) and the
//! sample after each sampler update (for checksums that locate the first diverging step).
//!
//! [`generate_traced`] is [`ddm_firmware::generate_with`] with more hooks: the same checks in
//! the same order, the same arena layout ([`ArenaLayout`]), the same random streams and the
//! same sequence of network calls and sampler steps, so it produces the same bytes. The
//! firmware's `generate_with` only reports each step *before* its network call and never
//! shows the sample, which is not enough to time the network alone or to checksum the
//! trajectory. The `ddm-hil` harness checks every device image against the firmware's own
//! [`ddm_firmware::generate`] on the host, and this crate's tests check the equality on the
//! host for every sampler, so the two cannot drift apart unnoticed.

use ddm_core::sampler::Sampler;
use ddm_core::timesteps::fill_timesteps;
use ddm_core::{Rng, Schedule};
use ddm_firmware::plan::ARENA_ALIGN;
use ddm_firmware::{ArenaLayout, Blob, Error, GenerateSettings, Network, Result, StepInfo};

/// What [`generate_traced`] reports. Every method does nothing by default.
pub trait Observer {
    /// Right before the network call of `step`.
    fn before_network(&mut self, step: StepInfo) {
        let _ = step;
    }

    /// Right after the network call of `step`, before its output is checked and used.
    fn after_network(&mut self, step: StepInfo) {
        let _ = step;
    }

    /// After the sampler's update of `step`: `x` is the sample after it.
    fn after_step(&mut self, step: StepInfo, x: &[f32]) {
        let _ = (step, x);
    }
}

/// Observes nothing.
impl Observer for () {}

/// 32-bit FNV-1a of the little-endian bytes of `values`: the per-step checksum of the protocol.
pub fn fnv1a(values: &[f32]) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .fold(OFFSET_BASIS, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(PRIME)
        })
}

const MISALIGNED: Error = Error::Malformed("misaligned f32 arena region");

/// `bytes` as `f32`s (or `u32`s): 4-byte aligned and a multiple of 4 long, as every region of
/// an aligned [`ArenaLayout`] is.
fn words<T: bytemuck::Pod>(bytes: &mut [u8]) -> Result<&mut [T]> {
    bytemuck::try_cast_slice_mut(bytes).map_err(|_| MISALIGNED)
}

/// Generates one sample into `out` like [`ddm_firmware::generate`], telling `observer` about
/// every step (see the module documentation).
///
/// `arena` needs [`ddm_firmware::required_arena_bytes_for_steps`] bytes for the resolved number
/// of steps. Errors exactly where `generate` errors.
pub fn generate_traced(
    blob: &Blob<'_>,
    arena: &mut [u8],
    settings: &GenerateSettings,
    out: &mut [f32],
    observer: &mut impl Observer,
) -> Result<()> {
    // Everything that can be refused is checked before the arena is touched, in the
    // firmware's order.
    let config = settings.resolve(blob);
    config.validate()?;
    let steps = config.steps as usize;
    if steps > blob.train_steps() {
        return Err(Error::Core(ddm_core::Error::InvalidStepCount {
            steps,
            train_steps: blob.train_steps(),
        }));
    }
    if out.len() != blob.sample_len() {
        return Err(Error::LengthMismatch {
            what: "generated sample",
            expected: blob.sample_len(),
            actual: out.len(),
        });
    }
    let layout = ArenaLayout::new(blob, steps)?;
    let arena = aligned(arena, layout.len())?;

    let (activations, rest) = arena.split_at_mut(layout.x.start);
    let activations = activations
        .get_mut(layout.activations.clone())
        .ok_or(Error::Malformed("layout"))?;
    let (x, rest) = rest.split_at_mut(layout.output.start - layout.x.start);
    let (output, rest) = rest.split_at_mut(layout.scratch.start - layout.output.start);
    let (scratch, rest) = rest.split_at_mut(layout.alphas_cumprod.start - layout.scratch.start);
    let (alphas, timesteps) =
        rest.split_at_mut(layout.timesteps.start - layout.alphas_cumprod.start);
    let len = |r: &core::ops::Range<usize>| r.end - r.start;
    let x: &mut [f32] = words(&mut x[..len(&layout.x)])?;
    let output: &mut [f32] = words(&mut output[..len(&layout.output)])?;
    let scratch: &mut [f32] = words(&mut scratch[..len(&layout.scratch)])?;
    let alphas: &mut [f32] = words(&mut alphas[..len(&layout.alphas_cumprod)])?;
    let timesteps: &mut [u32] = words(&mut timesteps[..len(&layout.timesteps)])?;

    blob.copy_alphas_cumprod(alphas)?;
    let schedule = Schedule::new(alphas)?;
    fill_timesteps(
        &schedule,
        config.spacing,
        config.steps_offset as usize,
        timesteps,
    )?;
    let mut rng = Rng::with_stream(settings.seed, settings.sample_index);
    rng.fill_normal(x);
    let mut sampler = config
        .settings(blob.schedule().prediction)
        .build(schedule, timesteps, scratch)?;
    let mut network = Network::new(*blob, activations)?;
    let total = sampler.num_steps() as u32;
    while let Some(timestep) = sampler.timestep() {
        let step = StepInfo {
            index: sampler.steps_taken() as u32,
            total,
            timestep,
        };
        observer.before_network(step);
        network.run(x, timestep, output)?;
        observer.after_network(step);
        if !output.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFiniteOutput { timestep });
        }
        sampler.step(x, output, &mut rng)?;
        observer.after_step(step, x);
    }
    out.copy_from_slice(x);
    Ok(())
}

/// The arena from its first [`ARENA_ALIGN`]-aligned byte, checked to hold `needed` bytes (the
/// firmware's rule, and its error).
fn aligned(arena: &mut [u8], needed: usize) -> Result<&mut [u8]> {
    let available = arena.len();
    let skip = (ARENA_ALIGN - (arena.as_ptr() as usize) % ARENA_ALIGN) % ARENA_ALIGN;
    let required = needed
        .checked_add(skip)
        .ok_or(Error::Malformed("arena size overflows usize"))?;
    if available < required {
        return Err(Error::ArenaTooSmall {
            required,
            available,
        });
    }
    Ok(&mut arena[skip..required])
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use ddm_core::{BetaSchedule, Prediction, ScheduleConfig};
    use ddm_firmware::quant::quantize_per_channel;
    use ddm_firmware::writer::{
        write_blob, Bias, ModelSpec, NodeSpec, OpSpec, ScheduleSpec, Weights,
    };
    use ddm_firmware::{
        generate, required_arena_bytes_for_steps, Precision, QuantParams, SamplerConfig,
    };

    use super::*;

    /// A deterministic pseudo-random value in `[-1, 1)`.
    fn value(i: usize) -> f32 {
        let h = (i as u32).wrapping_mul(0x9e37_79b9).rotate_left(13) ^ 0x5bd1_e995;
        (h % 2000) as f32 / 1000.0 - 1.0
    }

    /// A small int8 MLP: x [8] + time embedding -> linear 16 -> SiLU -> add -> linear 8.
    fn int8_mlp() -> Vec<u8> {
        let q = |low, high| QuantParams::from_range(low, high).unwrap();
        let linear = |input, inp: usize, out: usize, seed: usize| {
            let w: Vec<f32> = (0..inp * out).map(|i| 0.4 * value(seed + i)).collect();
            let (values, scales) = quantize_per_channel(&w, out).unwrap();
            OpSpec::Linear {
                input,
                out_features: out,
                weight: Weights::Int8 { values, scales },
                bias: Some(Bias::F32((0..out).map(|i| 0.1 * value(seed + 7 * i)).collect())),
            }
        };
        let nodes = vec![
            NodeSpec::quantized(OpSpec::Input { shape: vec![8] }, q(-4.0, 4.0)),
            NodeSpec::quantized(
                OpSpec::TimeEmbedding {
                    dim: 16,
                    max_period: 10_000.0,
                },
                q(-1.0, 1.0),
            ),
            NodeSpec::quantized(linear(0, 8, 16, 100), q(-3.0, 3.0)),
            NodeSpec::quantized(linear(1, 16, 16, 300), q(-2.0, 2.0)),
            NodeSpec::quantized(OpSpec::Add { lhs: 2, rhs: 3 }, q(-4.0, 4.0)),
            NodeSpec::quantized(OpSpec::Silu { input: 4 }, q(-0.3, 4.0)),
            NodeSpec::quantized(linear(5, 16, 8, 500), q(-3.0, 3.0)),
        ];
        let spec = ModelSpec {
            precision: Precision::Int8,
            nodes,
            output: 6,
            schedule: ScheduleSpec::from_config(
                ScheduleConfig {
                    betas: BetaSchedule::Linear {
                        beta_start: 1e-4,
                        beta_end: 0.02,
                    },
                    train_steps: 100,
                    zero_terminal_snr: false,
                },
                Prediction::Eps,
            ),
            sampler: SamplerConfig::ddim(5),
            plan: None,
        };
        write_blob(&spec).expect("the test model is valid")
    }

    #[derive(Default)]
    struct Recorder {
        before: Vec<StepInfo>,
        after: Vec<StepInfo>,
        checksums: Vec<(u32, u32)>,
    }

    impl Observer for Recorder {
        fn before_network(&mut self, step: StepInfo) {
            self.before.push(step);
        }
        fn after_network(&mut self, step: StepInfo) {
            self.after.push(step);
        }
        fn after_step(&mut self, step: StepInfo, x: &[f32]) {
            self.checksums.push((step.index, fnv1a(x)));
        }
    }

    #[test]
    fn traced_generation_equals_the_firmware_for_every_sampler() {
        let bytes = int8_mlp();
        let blob = Blob::parse(&bytes).unwrap();
        for sampler in [
            None,
            Some(SamplerConfig::ddim(4)),
            Some(SamplerConfig::dpm_solver(6)),
            Some(SamplerConfig::ddpm(3)),
        ] {
            for sample_index in 0..3 {
                let settings = GenerateSettings {
                    sampler,
                    steps: None,
                    seed: 42,
                    sample_index,
                };
                let steps = settings.resolve(&blob).steps as usize;
                // One spare byte, so that misaligned starts are exercised too.
                let needed = required_arena_bytes_for_steps(&blob, steps).unwrap();
                let mut arena = vec![0u8; needed + 1];
                let mut expected = vec![0.0f32; blob.sample_len()];
                generate(&blob, &mut arena[1..], &settings, &mut expected).unwrap();

                let mut arena = vec![0xa5u8; needed];
                let mut traced = vec![0.0f32; blob.sample_len()];
                let mut recorder = Recorder::default();
                generate_traced(&blob, &mut arena, &settings, &mut traced, &mut recorder)
                    .unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&traced), bits(&expected), "{sampler:?} #{sample_index}");
                assert_eq!(recorder.before.len(), steps);
                assert_eq!(recorder.before, recorder.after);
                assert_eq!(recorder.checksums.len(), steps);
                assert_eq!(recorder.checksums.last().unwrap().1, fnv1a(&expected));
            }
        }
    }

    #[test]
    fn traced_generation_refuses_what_the_firmware_refuses() {
        let bytes = int8_mlp();
        let blob = Blob::parse(&bytes).unwrap();
        let settings = GenerateSettings::new(1, 0);
        let needed = required_arena_bytes_for_steps(&blob, 5).unwrap();
        let mut out = vec![0.0f32; blob.sample_len()];
        for (arena_len, out_len, steps) in [(needed - 20, 8, None), (needed, 7, None), (needed, 8, Some(0)), (needed, 8, Some(101))] {
            let settings = GenerateSettings { steps, ..settings };
            let mut arena = vec![0u8; arena_len];
            let mut out = vec![0.0f32; out_len];
            let expected = generate(&blob, &mut arena.clone(), &settings, &mut out.clone());
            let traced = generate_traced(&blob, &mut arena, &settings, &mut out, &mut ());
            assert!(expected.is_err());
            assert_eq!(traced, expected);
        }
        let mut arena = vec![0u8; needed];
        generate_traced(&blob, &mut arena, &settings, &mut out, &mut ()).unwrap();
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // FNV-1a 32 of the empty input is the offset basis; of the 4 zero bytes of 0.0f32:
        assert_eq!(fnv1a(&[]), 0x811c_9dc5);
        let mut hash = 0x811c_9dc5u32;
        for _ in 0..4 {
            hash = (hash ^ 0).wrapping_mul(0x0100_0193);
        }
        assert_eq!(fnv1a(&[0.0]), hash);
        assert_ne!(fnv1a(&[0.0]), fnv1a(&[-0.0]));
    }
}
