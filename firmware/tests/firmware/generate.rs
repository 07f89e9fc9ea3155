//! Generation: determinism, independent streams, the host's sampling contract, arena checks.

use ddm_core::sampler::{Sampler, SamplerKind, SamplerOptions};
use ddm_core::timesteps::{GivenTimesteps, Spacing};
use ddm_core::{Rng, Schedule};
use ddm_firmware::writer::write_blob;
use ddm_firmware::{
    generate, generate_with, network_arena_bytes, required_arena_bytes,
    required_arena_bytes_for_steps, Blob, Error, GenerateSettings, Network, SamplerConfig,
    StepInfo,
};

use crate::common::*;

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn sample(blob: &Blob<'_>, settings: &GenerateSettings) -> Vec<f32> {
    let steps = settings.resolve(blob).unwrap().steps as usize;
    let mut arena = vec![0u8; required_arena_bytes_for_steps(blob, steps).unwrap()];
    let mut out = vec![0.0f32; blob.sample_len()];
    generate(blob, &mut arena, settings, &mut out).unwrap();
    out
}

/// What the host does for sample `i` (see `host/src/sampling.rs`): stream `(seed, i)` for
/// the initial noise and every step's noise, the core sampler driven by the network.
fn host_style(blob: &Blob<'_>, config: SamplerConfig, seed: u64, index: u64) -> Vec<f32> {
    let mut table = vec![0.0f32; blob.train_steps()];
    blob.copy_alphas_cumprod(&mut table).unwrap();
    let schedule = Schedule::new(&table).unwrap();
    let mut timesteps = vec![0u32; config.steps as usize];
    config.timesteps(&schedule, &mut timesteps).unwrap();
    let mut rng = Rng::with_stream(seed, index);
    let mut x = vec![0.0f32; blob.sample_len()];
    rng.fill_normal(&mut x);
    let mut scratch = vec![0.0f32; x.len()];
    let mut sampler = config
        .build(
            blob.schedule().prediction,
            schedule,
            &timesteps,
            &mut scratch,
        )
        .unwrap();
    let mut arena = vec![0u8; network_arena_bytes(blob).unwrap()];
    let mut network = Network::new(*blob, &mut arena).unwrap();
    let mut output = vec![0.0f32; x.len()];
    while let Some(t) = sampler.timestep() {
        network.run(&x, t, &mut output).unwrap();
        sampler.step(&mut x, &output, &mut rng).unwrap();
    }
    x
}

fn configs() -> Vec<SamplerConfig> {
    vec![
        SamplerConfig::with_spacing(SamplerKind::Ddim, 6, Spacing::Leading),
        SamplerConfig {
            eta: 0.7,
            spacing: Spacing::Trailing,
            ..SamplerConfig::with_spacing(SamplerKind::Ddim, 5, Spacing::Leading)
        },
        SamplerConfig::with_spacing(SamplerKind::DpmSolverPp2m, 6, Spacing::LogSnr),
        SamplerConfig {
            clip_sample: Some(1.5),
            spacing: Spacing::Linspace,
            ..SamplerConfig::with_spacing(SamplerKind::Ddpm, 8, Spacing::Leading)
        },
        SamplerConfig {
            eta: 0.5,
            ..SamplerConfig::with_spacing(SamplerKind::Ddim, 4, given(&[99, 61, 30, 7]))
        },
        SamplerConfig::with_spacing(SamplerKind::DpmSolverPp2m, 3, given(&[90, 50, 3])),
        SamplerConfig {
            corrector_steps: 2,
            snr: 0.2,
            clip_sample: Some(1.0),
            ..SamplerConfig::with_spacing(SamplerKind::PredictorCorrector, 5, Spacing::Linspace)
        },
        SamplerConfig {
            corrector_steps: 0,
            ..SamplerConfig::with_spacing(SamplerKind::PredictorCorrector, 4, Spacing::Trailing)
        },
        SamplerConfig::with_spacing(SamplerKind::ProbabilityFlow, 4, Spacing::Linspace),
    ]
}

fn given(timesteps: &[u32]) -> Spacing {
    Spacing::Given(GivenTimesteps::new(timesteps).unwrap())
}

#[test]
fn generation_is_deterministic_and_matches_the_host_loop() {
    for spec in [int8_unet(100), tiny_unet(100), int8_mlp(100)] {
        let bytes = write_blob(&spec).unwrap();
        let blob = Blob::parse(&bytes).unwrap();
        for config in configs() {
            let settings = GenerateSettings {
                sampler: config.into(),
                ..GenerateSettings::new(42, 3)
            };
            let a = sample(&blob, &settings);
            let b = sample(&blob, &settings);
            assert_eq!(bits(&a), bits(&b), "{config:?}");
            assert!(a.iter().all(|v| v.is_finite()));
            assert_eq!(
                bits(&a),
                bits(&host_style(&blob, config, 42, 3)),
                "{config:?}"
            );
        }
    }
}

#[test]
fn sample_index_and_seed_select_independent_streams() {
    let bytes = write_blob(&int8_mlp(100)).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    let stochastic = SamplerConfig::with_spacing(SamplerKind::Ddpm, 10, Spacing::Leading);
    let mut seen = Vec::new();
    for (seed, index) in [(1u64, 0u64), (1, 1), (1, 2), (2, 0), (2, 1)] {
        let settings = GenerateSettings {
            sampler: stochastic.into(),
            ..GenerateSettings::new(seed, index)
        };
        let out = bits(&sample(&blob, &settings));
        assert!(
            !seen.contains(&out),
            "seed {seed} index {index} repeats a stream"
        );
        seen.push(out);
    }
    // Stream i of a seed does not depend on which other samples are generated.
    let settings = GenerateSettings {
        sampler: stochastic.into(),
        ..GenerateSettings::new(1, 1)
    };
    assert_eq!(bits(&sample(&blob, &settings)), seen[1]);
}

#[test]
fn defaults_overrides_and_the_step_callback() {
    let spec = tiny_unet(100);
    let bytes = write_blob(&spec).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    let defaults = blob.sampler_defaults();
    assert_eq!(defaults.kind, SamplerKind::DpmSolverPp2m);
    assert_eq!(GenerateSettings::new(0, 0).resolve(&blob), Ok(defaults));

    let mut arena = vec![0u8; required_arena_bytes(&blob).unwrap()];
    let mut out = vec![0.0f32; blob.sample_len()];
    let mut calls: Vec<StepInfo> = Vec::new();
    generate_with(
        &blob,
        &mut arena,
        &GenerateSettings::new(5, 0),
        &mut out,
        |s| calls.push(s),
    )
    .unwrap();
    assert_eq!(calls.len(), defaults.steps as usize);
    for (i, call) in calls.iter().enumerate() {
        assert_eq!((call.index as usize, call.total), (i, defaults.steps));
    }
    assert!(calls.windows(2).all(|w| w[0].timestep > w[1].timestep));
    assert_eq!(calls[0].timestep, 99);
    assert_eq!(bits(&out), bits(&host_style(&blob, defaults, 5, 0)));

    // More steps than the default need a bigger arena: refused before any work.
    let more = GenerateSettings {
        sampler: SamplerOptions {
            steps: Some(defaults.steps + 4),
            ..SamplerOptions::none()
        },
        ..GenerateSettings::new(5, 0)
    };
    let mut called = false;
    let mut untouched = vec![7.0f32; blob.sample_len()];
    let result = generate_with(&blob, &mut arena, &more, &mut untouched, |_| called = true);
    assert!(
        matches!(result, Err(Error::ArenaTooSmall { .. })),
        "{result:?}"
    );
    assert!(!called && untouched.iter().all(|&v| v == 7.0));
    let needed = required_arena_bytes_for_steps(&blob, defaults.steps as usize + 4).unwrap();
    assert_eq!(needed, required_arena_bytes(&blob).unwrap() + 16);
    let mut bigger = vec![0u8; needed];
    generate(&blob, &mut bigger, &more, &mut out).unwrap();
}

#[test]
fn invalid_settings_and_small_arenas_are_typed_errors() {
    let bytes = write_blob(&int8_mlp(100)).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    let needed = required_arena_bytes(&blob).unwrap();
    let mut arena = vec![0u8; needed];
    let mut out = vec![0.0f32; 2];
    for shortfall in [1usize, 16, needed / 2, needed] {
        let result = generate(
            &blob,
            &mut arena[..needed - shortfall],
            &GenerateSettings::new(0, 0),
            &mut out,
        );
        // 15 bytes of slack cover the worst alignment; one byte short may still fit.
        if shortfall >= 16 {
            assert!(
                matches!(result, Err(Error::ArenaTooSmall { .. })),
                "{result:?}"
            );
        }
    }
    let mut bad = |config: SamplerConfig| {
        let settings = GenerateSettings {
            sampler: config.into(),
            ..GenerateSettings::new(0, 0)
        };
        let mut big = vec![0u8; 1 << 16];
        generate(&blob, &mut big, &settings, &mut out).unwrap_err()
    };
    let ddim = |steps| SamplerConfig::with_spacing(SamplerKind::Ddim, steps, Spacing::Leading);
    assert!(matches!(bad(ddim(0)), Error::Core(_)));
    assert!(matches!(bad(ddim(101)), Error::Core(_)));
    assert!(matches!(
        bad(SamplerConfig {
            eta: f32::NAN,
            ..ddim(4)
        }),
        Error::Core(_)
    ));
    assert!(matches!(
        bad(SamplerConfig {
            steps_offset: 95,
            ..ddim(10)
        }),
        Error::Core(_)
    ));
    let mut big = vec![0u8; 1 << 16];
    assert!(matches!(
        generate(&blob, &mut big, &GenerateSettings::new(0, 0), &mut [0.0; 3]),
        Err(Error::LengthMismatch { .. })
    ));
}

#[test]
fn the_schedule_table_is_read_from_the_blob_not_copied_into_the_arena() {
    let short = write_blob(&int8_mlp(100)).unwrap();
    let long = write_blob(&int8_mlp(1000)).unwrap();
    let (short, long) = (Blob::parse(&short).unwrap(), Blob::parse(&long).unwrap());
    assert_eq!((short.train_steps(), long.train_steps()), (100, 1000));
    let needed = required_arena_bytes_for_steps(&long, 4).unwrap();
    // T = 1000 needs no more arena than T = 100: the 4,000-byte table stays in the blob.
    assert_eq!(needed, required_arena_bytes_for_steps(&short, 4).unwrap());

    // A blob at an odd address (its table misaligned for f32) generates the same bytes.
    let bytes = write_blob(&int8_mlp(1000)).unwrap();
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    let shifted = Blob::parse(&shifted[1..]).unwrap();
    let settings = GenerateSettings {
        sampler: SamplerOptions {
            steps: Some(4),
            ..SamplerOptions::none()
        },
        ..GenerateSettings::new(3, 1)
    };
    let mut arena = vec![0u8; needed];
    let mut out = vec![0.0f32; long.sample_len()];
    generate(&shifted, &mut arena, &settings, &mut out).unwrap();
    assert_eq!(bits(&out), bits(&sample(&long, &settings)));
    let config = settings.resolve(&long).unwrap();
    assert_eq!(bits(&out), bits(&host_style(&long, config, 3, 1)));
}
