//! Class-conditional blobs: the class table in every precision, guided generation against the
//! host's loop, the arena's second prediction, and the refusals.

use ddm_core::sampler::{Sampler, SamplerKind, SamplerOptions};
use ddm_core::timesteps::Spacing;
use ddm_core::{Guidance, Rng, Schedule};
use ddm_firmware::writer::{write_blob, NodeSpec, OpSpec};
use ddm_firmware::{
    generate, network_arena_bytes, required_arena_bytes_for_steps, ArenaLayout, Blob, Error,
    GenerateSettings, Network, Precision, QuantParams, SamplerConfig,
};

use crate::common::*;

const CLASSES: usize = 3;

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Every class of the blob, then the "no class" row.
fn rows() -> Vec<Option<u32>> {
    (0..CLASSES as u32).map(Some).chain([None]).collect()
}

#[test]
fn each_class_reads_its_row_in_float_blobs() {
    let float = conditional_mlp(1000, CLASSES);
    let half = round_weights_to_f16(&with_precision(float.clone(), Precision::F16));
    for (spec, reference_spec) in [(&float, &float), (&half, &half)] {
        let bytes = write_blob(spec).unwrap();
        let blob = Blob::parse(&bytes).unwrap();
        assert_eq!(blob.classes(), Some(CLASSES));
        let mut arena = vec![0u8; network_arena_bytes(&blob).unwrap()];
        let mut network = Network::new(blob, &mut arena).unwrap();
        for (x, t) in inputs(spec, 6, 3) {
            let mut outputs = Vec::new();
            for class in rows() {
                let mut out = vec![0.0f32; x.len()];
                network.run_class(&x, t, class, &mut out).unwrap();
                let expected = &reference_class(reference_spec, &x, t, class)[spec.output];
                for (o, e) in out.iter().zip(expected) {
                    assert!(
                        (f64::from(*o) - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{:?} class {class:?}: {o} vs {e}",
                        spec.precision
                    );
                }
                outputs.push(bits(&out));
            }
            // Every row gives its own prediction; `run` is the "no class" row.
            for i in 0..outputs.len() {
                for j in i + 1..outputs.len() {
                    assert_ne!(outputs[i], outputs[j], "rows {i} and {j}");
                }
            }
            let mut out = vec![0.0f32; x.len()];
            network.run(&x, t, &mut out).unwrap();
            assert_eq!(&bits(&out), outputs.last().unwrap());
        }
    }
}

/// The host's guided sampling of sample `index` (`ddm sample --class`, `Guided` over the
/// runtime): the conditional prediction, then the unconditional one, combined as
/// `u + w (c - u)` written out here.
fn host_guided(
    blob: &Blob<'_>,
    config: SamplerConfig,
    seed: u64,
    index: u64,
    class: u32,
    scale: f32,
) -> Vec<f32> {
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
    let mut conditional = vec![0.0f32; x.len()];
    let mut unconditional = vec![0.0f32; x.len()];
    while let Some(t) = sampler.timestep() {
        network
            .run_class(&x, t, Some(class), &mut conditional)
            .unwrap();
        if scale != 1.0 {
            network.run_class(&x, t, None, &mut unconditional).unwrap();
            for (c, &u) in conditional.iter_mut().zip(&unconditional) {
                *c = u + scale * (*c - u);
            }
        }
        sampler.step(&mut x, &conditional, &mut rng).unwrap();
    }
    x
}

#[test]
fn guided_generation_equals_the_host_loop_in_every_precision() {
    let float = conditional_mlp(1000, CLASSES);
    let specs = [
        float.clone(),
        with_precision(float, Precision::F16),
        int8_conditional_mlp_grouped(CLASSES),
    ];
    let configs = [
        SamplerConfig::with_spacing(SamplerKind::Ddim, 6, Spacing::Trailing),
        SamplerConfig::with_spacing(SamplerKind::DpmSolverPp2m, 5, Spacing::LogSnr),
        SamplerConfig::with_spacing(SamplerKind::Ddpm, 7, Spacing::Leading),
    ];
    for spec in &specs {
        let bytes = write_blob(spec).unwrap();
        let blob = Blob::parse(&bytes).unwrap();
        for config in configs {
            let mut per_class = Vec::new();
            for class in 0..CLASSES as u32 {
                for scale in [1.0, 2.5] {
                    let settings = GenerateSettings {
                        sampler: config.into(),
                        ..GenerateSettings::new(11, 2)
                    }
                    .with_class(class, Guidance::new(scale).unwrap());
                    assert_eq!(settings.is_guided(), scale != 1.0);
                    let steps = config.steps as usize;
                    let mut arena =
                        vec![0u8; required_arena_bytes_for_steps(&blob, steps).unwrap()];
                    let mut out = vec![0.0f32; blob.sample_len()];
                    generate(&blob, &mut arena, &settings, &mut out).unwrap();
                    let expected = host_guided(&blob, config, 11, 2, class, scale);
                    assert_eq!(
                        bits(&out),
                        bits(&expected),
                        "{:?} {config:?} class {class} guidance {scale}",
                        spec.precision
                    );
                    per_class.push(bits(&out));
                }
            }
            // Classes and scales all lead to different samples.
            for i in 0..per_class.len() {
                for j in i + 1..per_class.len() {
                    assert_ne!(per_class[i], per_class[j], "{i} and {j}");
                }
            }
        }
    }
}

#[test]
fn the_arena_holds_the_second_prediction() {
    let conditional = write_blob(&int8_conditional_mlp_grouped(CLASSES)).unwrap();
    let conditional = Blob::parse(&conditional).unwrap();
    let plain = write_blob(&int8_mlp(1000)).unwrap();
    let plain = Blob::parse(&plain).unwrap();
    let layout = ArenaLayout::new(&conditional, 6).unwrap();
    assert_eq!(layout.unconditional.len(), 4 * conditional.sample_len());
    for other in [
        &layout.output,
        &layout.x,
        &layout.scratch,
        &layout.timesteps,
    ] {
        assert!(layout.unconditional.end <= other.start || other.end <= layout.unconditional.start);
    }
    assert!(ArenaLayout::new(&plain, 6)
        .unwrap()
        .unconditional
        .is_empty());
    // Exactly the required bytes generate; one fewer is refused before anything runs.
    let needed = required_arena_bytes_for_steps(&conditional, 6).unwrap();
    assert_eq!(needed, layout.len() + 15);
    let settings = GenerateSettings::new(1, 0).with_class(1, Guidance::new(3.0).unwrap());
    let mut out = vec![0.0f32; conditional.sample_len()];
    let mut arena = vec![0u8; needed];
    generate(&conditional, &mut arena, &settings, &mut out).unwrap();
    let mut short = vec![0u8; needed - 16];
    assert!(matches!(
        generate(&conditional, &mut short, &settings, &mut out),
        Err(Error::ArenaTooSmall { .. })
    ));
}

#[test]
fn classes_a_blob_does_not_have_are_refused_before_the_arena_is_touched() {
    let conditional = write_blob(&conditional_mlp(1000, CLASSES)).unwrap();
    let conditional = Blob::parse(&conditional).unwrap();
    let plain = write_blob(&mlp(1000)).unwrap();
    let plain = Blob::parse(&plain).unwrap();
    assert_eq!(plain.classes(), None);
    for (blob, class, classes) in [
        (&conditional, CLASSES as u32, CLASSES as u32),
        (&conditional, u32::MAX, CLASSES as u32),
        (&plain, 0, 0),
    ] {
        let expected = Error::InvalidClass { class, classes };
        let settings = GenerateSettings::new(1, 0).with_class(class, Guidance::DEFAULT);
        assert_eq!(settings.check_class(blob), Err(expected));
        let needed = required_arena_bytes_for_steps(blob, 10).unwrap();
        let mut arena = vec![0xa5u8; needed];
        let mut out = vec![0.0f32; blob.sample_len()];
        assert_eq!(
            generate(blob, &mut arena, &settings, &mut out),
            Err(expected)
        );
        assert!(arena.iter().all(|&b| b == 0xa5));
        let mut arena = vec![0xa5u8; network_arena_bytes(blob).unwrap()];
        let mut network = Network::new(*blob, &mut arena).unwrap();
        assert_eq!(
            network.run_class(&[0.5, -0.5], 10, Some(class), &mut out),
            Err(expected)
        );
        assert!(arena.iter().all(|&b| b == 0xa5));
    }
    let message = Error::InvalidClass {
        class: 5,
        classes: 3,
    }
    .to_string();
    assert!(message.contains("0..2"), "{message}");
    let message = Error::InvalidClass {
        class: 0,
        classes: 0,
    }
    .to_string();
    assert!(message.contains("unconditional"), "{message}");
    // An unconditional request of a conditional blob, and of a plain one, is fine.
    for blob in [&conditional, &plain] {
        let settings = GenerateSettings {
            sampler: SamplerOptions::sampler(SamplerKind::Ddim, 3),
            ..GenerateSettings::new(1, 0)
        };
        let mut arena = vec![0u8; required_arena_bytes_for_steps(blob, 3).unwrap()];
        let mut out = vec![0.0f32; blob.sample_len()];
        generate(blob, &mut arena, &settings, &mut out).unwrap();
    }
}

#[test]
fn malformed_class_tables_are_refused() {
    let spec = conditional_mlp(1000, CLASSES);
    let class_node = spec
        .nodes
        .iter()
        .position(|n| matches!(n.op, OpSpec::ClassEmbedding { .. }))
        .unwrap();
    let with_op = |op: OpSpec| {
        let mut bad = spec.clone();
        bad.nodes[class_node].op = op;
        bad
    };
    let OpSpec::ClassEmbedding { table, .. } = spec.nodes[class_node].op.clone() else {
        unreachable!()
    };
    // The writer: no classes, a table that is not `classes + 1` rows.
    for op in [
        OpSpec::ClassEmbedding {
            classes: 0,
            table: table.clone(),
        },
        OpSpec::ClassEmbedding {
            classes: CLASSES,
            table: table[1..].to_vec(),
        },
        OpSpec::ClassEmbedding {
            classes: CLASSES + 1,
            table: table.clone(),
        },
    ] {
        assert!(write_blob(&with_op(op.clone())).is_err(), "{op:?}");
    }
    // The parser's checks (the writer parses what it wrote): a non-finite table, two class
    // embeddings.
    let mut nan = table.clone();
    nan[5] = f32::NAN;
    assert!(matches!(
        write_blob(&with_op(OpSpec::ClassEmbedding {
            classes: CLASSES,
            table: nan,
        })),
        Err(Error::InvalidNode { reason, .. }) if reason.contains("finite")
    ));
    let mut twice = spec.clone();
    twice.nodes.push(NodeSpec::new(OpSpec::ClassEmbedding {
        classes: CLASSES,
        table: table.clone(),
    }));
    assert!(matches!(
        write_blob(&twice),
        Err(Error::InvalidNode { reason, .. }) if reason.contains("at most one")
    ));
    // int8: the class embedding's parameters differ between time groups.
    let mut int8 = int8_conditional_mlp_grouped(CLASSES);
    let q = |low, high| QuantParams::from_range(low, high).unwrap();
    int8.nodes[class_node].quant = vec![q(-2.0, 2.0), q(-2.0, 2.0), q(-3.0, 3.0)];
    assert!(write_blob(&int8).is_err());
    int8.nodes[class_node].quant = vec![q(-3.0, 3.0); 3];
    Blob::parse(&write_blob(&int8).unwrap()).unwrap();
}
