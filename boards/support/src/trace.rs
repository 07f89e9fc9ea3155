//! Generation observed step by step: the network call of each step (for timing it) and the
//! sample after each sampler update (for checksums that locate the first diverging step).
//!
//! The loop itself is the firmware's [`generate_observed`]; this module adds the checksum of
//! the line protocol.

pub use ddm_firmware::{generate_observed, StepObserver};

/// 32-bit FNV-1a of the little-endian bytes of `values` (the core's
/// [`Fnv1a`](ddm_core::conformance::Fnv1a), as in the conformance digest): the per-step
/// checksum of the protocol.
pub fn fnv1a(values: &[f32]) -> u32 {
    let mut hash = ddm_core::conformance::Fnv1a::default();
    hash.floats(values);
    hash.finish()
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use ddm_core::sampler::SamplerKind;
    use ddm_core::timesteps::Spacing;
    use ddm_core::{BetaSchedule, Prediction, SamplerOptions, ScheduleConfig};
    use ddm_firmware::quant::quantize_per_channel;
    use ddm_firmware::writer::{
        write_blob, Bias, ModelSpec, NodeSpec, OpSpec, ScheduleSpec, Weights,
    };
    use ddm_firmware::{
        generate, required_arena_bytes_for_steps, Blob, GenerateSettings, Precision, QuantParams,
        SamplerConfig, StepInfo,
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
            let (mut values, mut scales) = (vec![0i8; w.len()], vec![0.0f32; out]);
            quantize_per_channel(&w, out, &mut values, &mut scales).unwrap();
            OpSpec::Linear {
                input,
                out_features: out,
                weight: Weights::Int8 { values, scales },
                bias: Some(Bias::F32(
                    (0..out).map(|i| 0.1 * value(seed + 7 * i)).collect(),
                )),
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
            sampler: SamplerConfig::with_spacing(SamplerKind::Ddim, 5, Spacing::Leading),
            plan: None,
            time_groups: vec![],
        };
        write_blob(&spec).expect("the test model is valid")
    }

    #[derive(Default)]
    struct Recorder {
        before: Vec<StepInfo>,
        after: Vec<StepInfo>,
        checksums: Vec<(u32, u32)>,
    }

    impl StepObserver for Recorder {
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
            SamplerOptions::none(),
            SamplerOptions::sampler(SamplerKind::Ddim, 4),
            SamplerOptions::sampler(SamplerKind::DpmSolverPp2m, 6),
            SamplerOptions::sampler(SamplerKind::Ddpm, 3),
        ] {
            for sample_index in 0..3 {
                let settings = GenerateSettings {
                    sampler,
                    ..GenerateSettings::new(42, sample_index)
                };
                let steps = settings.resolve(&blob).unwrap().steps as usize;
                // One spare byte, so that misaligned starts are exercised too.
                let needed = required_arena_bytes_for_steps(&blob, steps).unwrap();
                let mut arena = vec![0u8; needed + 1];
                let mut expected = vec![0.0f32; blob.sample_len()];
                generate(&blob, &mut arena[1..], &settings, &mut expected).unwrap();

                let mut arena = vec![0xa5u8; needed];
                let mut traced = vec![0.0f32; blob.sample_len()];
                let mut recorder = Recorder::default();
                generate_observed(&blob, &mut arena, &settings, &mut traced, &mut recorder)
                    .unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&traced),
                    bits(&expected),
                    "{sampler:?} #{sample_index}"
                );
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
        for (arena_len, out_len, steps) in [
            (needed - 20, 8, None),
            (needed, 7, None),
            (needed, 8, Some(0)),
            (needed, 8, Some(101)),
        ] {
            let settings = GenerateSettings {
                sampler: SamplerOptions {
                    steps,
                    ..SamplerOptions::none()
                },
                ..settings
            };
            let mut arena = vec![0u8; arena_len];
            let mut out = vec![0.0f32; out_len];
            let expected = generate(&blob, &mut arena.clone(), &settings, &mut out.clone());
            let traced = generate_observed(&blob, &mut arena, &settings, &mut out, &mut ());
            assert!(expected.is_err());
            assert_eq!(traced, expected);
        }
        let mut arena = vec![0u8; needed];
        generate_observed(&blob, &mut arena, &settings, &mut out, &mut ()).unwrap();
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // FNV-1a 32 of the empty input is the offset basis; of the 4 zero bytes of 0.0f32:
        assert_eq!(fnv1a(&[]), 0x811c_9dc5);
        let mut hash = 0x811c_9dc5u32;
        for _ in 0..4 {
            // xor with a zero byte, then multiply.
            hash = hash.wrapping_mul(0x0100_0193);
        }
        assert_eq!(fnv1a(&[0.0]), hash);
        assert_ne!(fnv1a(&[0.0]), fnv1a(&[-0.0]));
    }
}
