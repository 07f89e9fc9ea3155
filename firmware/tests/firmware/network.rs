//! Whole networks: float blobs against the `f64` reference, int8 against float, memory plans,
//! and what the blob reports about itself.

use ddm_core::sampler::{SamplerConfig, SamplerKind};
use ddm_core::timesteps::Spacing;
use ddm_core::{BetaSchedule, Prediction, ScheduleConfig};
use ddm_firmware::writer::{plan_greedy_by_size, write_blob, ModelSpec, OpSpec, ScheduleSpec};
use ddm_firmware::{network_arena_bytes, Blob, Error, Network, NodeOutput, Path, Precision};

use crate::common::*;

/// One call on the portable path.
fn run(bytes: &[u8], x: &[f32], t: u32) -> Vec<f32> {
    let blob = Blob::parse(bytes).unwrap();
    let mut arena = vec![0u8; network_arena_bytes(&blob).unwrap()];
    let mut network = Network::new(blob, &mut arena)
        .unwrap()
        .with_path(Path::portable());
    let mut out = vec![0.0f32; x.len()];
    network.run(x, t, &mut out).unwrap();
    out
}

fn check_against_reference(spec: &ModelSpec, reference_spec: &ModelSpec, tolerance: f64) {
    let bytes = write_blob(spec).unwrap();
    for (x, t) in inputs(spec, 8, 3) {
        let got = run(&bytes, &x, t);
        let expected = reference(reference_spec, &x, t);
        let expected = &expected[spec.output];
        for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
            assert!(
                (f64::from(g) - e).abs() <= tolerance * (1.0 + e.abs()),
                "element {i} at t {t}: {g} vs {e}"
            );
        }
    }
}

#[test]
fn f32_networks_match_the_f64_reference() {
    for spec in [mlp(1000), tiny_unet(1000)] {
        check_against_reference(&spec, &spec, 2e-5);
    }
}

#[test]
fn f16_networks_match_the_reference_with_f16_weights() {
    for spec in [mlp(1000), tiny_unet(1000)] {
        let f16 = with_precision(spec.clone(), Precision::F16);
        check_against_reference(&f16, &round_weights_to_f16(&spec), 2e-5);
        // And the f16 blob is smaller than the f32 one.
        assert!(write_blob(&f16).unwrap().len() < write_blob(&spec).unwrap().len());
    }
}

#[test]
fn int8_networks_track_the_float_model() {
    for (float, int8) in [
        (mlp(1000), int8_mlp(1000)),
        (tiny_unet(1000), int8_unet(1000)),
    ] {
        let bytes = write_blob(&int8).unwrap();
        let (mut worst, mut sum, mut count) = (0.0f64, 0.0f64, 0usize);
        let mut range = 0.0f64;
        for (x, t) in inputs(&float, 16, 99) {
            let got = run(&bytes, &x, t);
            let expected = &reference(&float, &x, t)[float.output];
            for (&g, &e) in got.iter().zip(expected) {
                let error = (f64::from(g) - e).abs();
                worst = worst.max(error);
                sum += error;
                count += 1;
                range = range.max(e.abs());
            }
        }
        let mean = sum / count as f64;
        println!("int8 vs float: mean error {mean}, worst {worst}, output range {range}");
        // Quantisation noise through ~10 int8 layers of these untrained (random) models stays
        // a few percent of the output range on average; a wrong zero point, scale or rounding
        // mode gives errors of the order of the range.
        assert!(mean < 0.03 * range, "mean error {mean} for range {range}");
        assert!(worst < 0.2 * range, "worst error {worst} for range {range}");
    }
}

#[test]
fn repeated_runs_and_unaligned_arenas_give_the_same_bits() {
    for spec in [int8_unet(1000), tiny_unet(1000)] {
        let bytes = write_blob(&spec).unwrap();
        let blob = Blob::parse(&bytes).unwrap();
        let needed = network_arena_bytes(&blob).unwrap();
        let (x, t) = inputs(&spec, 1, 5).remove(0);
        let first = run(&bytes, &x, t);
        let mut big = vec![0xa5u8; needed + 64];
        for shift in [1usize, 3, 7, 13] {
            let mut network = Network::new(blob, &mut big[shift..shift + needed]).unwrap();
            let mut out = vec![0.0f32; x.len()];
            network.run(&x, t, &mut out).unwrap();
            network.run(&x, t, &mut out).unwrap();
            assert_eq!(bits(&out), bits(&first), "arena offset {shift}");
        }
    }
}

#[test]
fn int8_networks_give_the_same_bits_on_every_path() {
    for spec in [int8_unet(1000), int8_mlp(1000), int8_unet_grouped()] {
        let bytes = write_blob(&spec).unwrap();
        let blob = Blob::parse(&bytes).unwrap();
        let mut arena = vec![0u8; network_arena_bytes(&blob).unwrap()];
        for (x, t) in inputs(&spec, 3, 9) {
            let portable = run(&bytes, &x, t);
            let mut paths = 0;
            for path in Path::available() {
                let mut network = Network::new(blob, &mut arena).unwrap().with_path(path);
                assert_eq!(network.path(), path);
                let mut out = vec![0.0f32; x.len()];
                network.run(&x, t, &mut out).unwrap();
                assert_eq!(bits(&out), bits(&portable), "{} at t {t}", path.name());
                paths += 1;
            }
            assert!(paths >= 1);
        }
    }
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn planned_memory_reuses_and_runs_in_place_without_changing_results() {
    for spec in [int8_unet(1000), tiny_unet(1000), int8_mlp(1000), mlp(1000)] {
        let planned = plan_greedy_by_size(&spec).unwrap();
        let naive = naive_plan(&spec);
        assert!(planned.arena_bytes < naive.arena_bytes);
        // At least one op runs in place (same offset as its input).
        let in_place = spec.nodes.iter().enumerate().any(|(i, n)| match n.op {
            OpSpec::Silu { input } | OpSpec::GroupNorm { input, .. } => {
                planned.offsets[i] == planned.offsets[input]
            }
            OpSpec::Add { lhs, .. } => planned.offsets[i] == planned.offsets[lhs],
            _ => false,
        });
        assert!(in_place, "no op runs in place");
        let with_naive = ModelSpec {
            plan: Some(naive),
            ..spec.clone()
        };
        let (a, b) = (write_blob(&spec).unwrap(), write_blob(&with_naive).unwrap());
        for (x, t) in inputs(&spec, 4, 21) {
            assert_eq!(bits(&run(&a, &x, t)), bits(&run(&b, &x, t)));
        }
    }
}

#[test]
fn plans_that_overwrite_live_tensors_are_refused() {
    let spec = tiny_unet(1000);
    // Everything at offset 0: inputs overlap outputs.
    let mut plan = plan_greedy_by_size(&spec).unwrap();
    plan.offsets.iter_mut().for_each(|o| *o = 0);
    let bad = ModelSpec {
        plan: Some(plan),
        ..spec.clone()
    };
    assert!(matches!(write_blob(&bad), Err(Error::InvalidPlan { .. })));
    // The skip connection of the UNet (node `h`) is overwritten by a later node while still
    // needed: the liveness check catches it even though no op overlaps its own inputs.
    let mut plan = naive_plan(&spec);
    let h = 8; // silu after the first group norm, read again by the concat
    assert!(matches!(spec.nodes[h].op, OpSpec::Silu { .. }));
    plan.offsets[10] = plan.offsets[h];
    let bad = ModelSpec {
        plan: Some(plan),
        ..spec
    };
    assert!(matches!(write_blob(&bad), Err(Error::InvalidPlan { .. })));
}

#[test]
fn plans_with_offsets_at_the_end_of_the_address_space_are_refused_without_panicking() {
    let spec = tiny_unet(1000);
    for offset in [usize::MAX, usize::MAX - 3, usize::MAX / 2] {
        let mut plan = naive_plan(&spec);
        plan.offsets.iter_mut().skip(1).for_each(|o| *o = offset);
        let bad = ModelSpec {
            plan: Some(plan),
            ..spec.clone()
        };
        assert!(write_blob(&bad).is_err(), "offset {offset:#x}");
    }
}

#[test]
fn arena_and_buffer_sizes_are_checked_before_running() {
    let bytes = write_blob(&int8_unet(1000)).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    // The activations, then the convolutions' scratch at the next multiple of 16.
    let needed = network_arena_bytes(&blob).unwrap() - 15;
    assert!(blob.scratch_bytes() > 0);
    assert_eq!(
        needed,
        blob.arena_bytes().next_multiple_of(16) + blob.scratch_bytes()
    );
    let mut arena = vec![0u8; needed + 16];
    // Find a 16-aligned start so that exactly `needed` bytes suffice.
    let skip = (16 - arena.as_ptr() as usize % 16) % 16;
    assert!(Network::new(blob, &mut arena[skip..skip + needed]).is_ok());
    match Network::new(blob, &mut arena[skip..skip + needed - 1]) {
        Err(Error::ArenaTooSmall {
            required,
            available,
        }) => assert_eq!((required, available), (needed, needed - 1)),
        other => panic!("{other:?}"),
    }
    let mut network = Network::new(blob, &mut arena).unwrap();
    let mut out = vec![0.0f32; blob.sample_len()];
    let short = vec![0.0f32; blob.sample_len() - 1];
    assert!(matches!(
        network.run(&short, 0, &mut out),
        Err(Error::LengthMismatch { .. })
    ));
    let x = vec![0.0f32; blob.sample_len()];
    assert!(matches!(
        network.run(&x, 0, &mut out[1..]),
        Err(Error::LengthMismatch { .. })
    ));
}

#[test]
fn the_blob_describes_its_model() {
    let spec = tiny_unet(1000);
    let bytes = write_blob(&spec).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    assert_eq!(blob.precision(), Precision::F32);
    assert_eq!(blob.sample_shape().dims(), ([2, 6, 6], 3));
    assert_eq!(blob.sample_len(), 72);
    assert_eq!(blob.node_count(), spec.nodes.len());
    assert_eq!(blob.output_node(), spec.output);
    assert_eq!(blob.sampler_defaults(), spec.sampler);
    assert_eq!(blob.schedule(), spec.schedule.schedule);
    assert_eq!(blob.train_steps(), 1000);
    let mut table = vec![0.0f32; 1000];
    ScheduleConfig::ddpm()
        .fill_alphas_cumprod(&mut table)
        .unwrap();
    let mut stored = vec![0.0f32; 1000];
    blob.copy_alphas_cumprod(&mut stored).unwrap();
    assert_eq!(bits(&stored), bits(&table));
    assert_eq!(blob.alpha_bar(999), Some(table[999]));
    assert_eq!(blob.alpha_bar(1000), None);
    // A variance-exploding schedule is stored with its sigmas and read back as written.
    let mut ve = spec.clone();
    let config = ScheduleConfig {
        betas: BetaSchedule::VarianceExploding {
            sigma_min: 0.01,
            sigma_max: 40.0,
        },
        ..ScheduleConfig::ddpm()
    };
    ve.schedule = ScheduleSpec::from_config(config, Prediction::Eps);
    // With the predictor-corrector sampler as its default, its settings stored beside it.
    ve.sampler = SamplerConfig {
        corrector_steps: 3,
        snr: 0.1,
        ..SamplerConfig::with_spacing(SamplerKind::PredictorCorrector, 10, Spacing::Linspace)
    };
    let bytes = write_blob(&ve).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    assert_eq!(blob.schedule(), ve.schedule.schedule);
    assert_eq!(blob.sampler_defaults(), ve.sampler);
    let mut zero_snr = ve.clone();
    zero_snr.sampler.snr = 0.0;
    assert!(write_blob(&zero_snr).is_err());
    config.fill_alphas_cumprod(&mut table).unwrap();
    blob.copy_alphas_cumprod(&mut stored).unwrap();
    assert_eq!(bits(&stored), bits(&table));
    // MACs: the sum over linear and convolution layers.
    let shapes = ddm_firmware::writer::infer_shapes(&spec).unwrap();
    let macs: u64 = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| match &n.op {
            OpSpec::Linear { input, .. } => {
                (shapes[*input].elements() * shapes[i].elements()) as u64
            }
            OpSpec::Conv2d { input, kernel, .. } => {
                (shapes[*input].channels() * kernel * kernel * shapes[i].elements()) as u64
            }
            _ => 0,
        })
        .sum();
    assert_eq!(blob.macs(), macs);
    assert!(macs > 10_000);
    // Trailing bytes after the declared length (a flash partition) are ignored.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0xff; 100]);
    assert_eq!(Blob::parse(&padded).unwrap().bytes().len(), bytes.len());
}

#[test]
fn node_outputs_can_be_read_back_after_a_run() {
    // With a plan that reuses nothing, every node's output survives the run: float outputs
    // match the f64 reference node by node, int8 ones are dequantised on read.
    for spec in [tiny_unet(1000), int8_unet(1000)] {
        let spec = ModelSpec {
            plan: Some(naive_plan(&spec)),
            ..spec
        };
        let bytes = write_blob(&spec).unwrap();
        let blob = Blob::parse(&bytes).unwrap();
        let mut arena = vec![0u8; network_arena_bytes(&blob).unwrap()];
        let mut network = Network::new(blob, &mut arena).unwrap();
        let (x, t) = inputs(&spec, 1, 17).remove(0);
        let mut out = vec![0.0f32; x.len()];
        network.run(&x, t, &mut out).unwrap();
        let float = (spec.precision == Precision::F32).then(|| reference(&spec, &x, t));
        for i in 0..blob.node_count() {
            let len = blob.node(i).unwrap().shape.elements();
            let output = network.node_output(i).unwrap();
            assert_eq!(output.len(), len);
            assert!(!output.is_empty());
            assert_eq!(output.get(output.len()), None);
            if let Some(expected) = &float {
                assert!(matches!(output, NodeOutput::F32(_)));
                for (g, &e) in output.iter().zip(&expected[i]) {
                    assert!(
                        (f64::from(g) - e).abs() <= 2e-5 * (1.0 + e.abs()),
                        "node {i}"
                    );
                }
            } else {
                let NodeOutput::Int8 { values, params } = output else {
                    panic!("int8 blobs give int8 outputs");
                };
                assert!(params.same_as(&blob.quant(i, 0).unwrap()));
                assert_eq!(output.get(0), Some(params.dequantize(values[0])));
            }
        }
        let last: Vec<f32> = network
            .node_output(blob.output_node())
            .unwrap()
            .iter()
            .collect();
        assert_eq!(bits(&last), bits(&out));
        assert!(matches!(
            network.node_output(blob.node_count()),
            Err(Error::InvalidNode { .. })
        ));
    }
}
