use ddm_export::calibration::time_group_boundaries;
use ddm_export::graph::{Graph, Op};
use ddm_export::reference::Evaluator;
use ddm_export::{export, time_groups_within, Calibration, CalibrationConfig, Error};
use ddm_firmware::writer::check_plan;
use ddm_firmware::{
    generate, required_arena_bytes, Blob, GenerateSettings, Network, Precision, QuantParams,
};

use crate::common::{calibrate, mlp, options, random_inputs, random_weights, sqnr_db, tiny_unet};

/// The int8 network's output against the f32 reference on fresh inputs (not the calibration
/// ones), in dB.
fn held_out_sqnr(graph: &Graph, blob: &[u8], reference: &mut Evaluator) -> f64 {
    let parsed = Blob::parse(blob).unwrap();
    let mut arena = vec![0u8; ddm_firmware::network_arena_bytes(&parsed).unwrap()];
    let mut network = Network::new(parsed, &mut arena).unwrap();
    let (mut expected, mut actual) = (Vec::new(), Vec::new());
    let len = graph.input_shape().iter().product();
    // Inputs as the sampler sees them: x_t of standard-normal scale at random timesteps.
    for (x, t) in random_inputs(len, 16, 99) {
        let mut out = vec![0.0f32; len];
        network.run(&x, t, &mut out).unwrap();
        actual.extend(out);
        expected.extend(reference.output(&x, t).unwrap());
    }
    sqnr_db(&expected, &actual)
}

/// Random-weight networks whose activations GroupNorm keeps at unit scale: each int8 tensor
/// alone has ~35-45 dB of SQNR (a 256-level grid over a range of ~8 standard deviations);
/// errors of ~15 layers add up (about 10 log10(15) = 12 dB lower). 20 dB (1% noise power)
/// leaves room for that and still catches a wrong scale, zero point or requantisation (which
/// give SQNR near or below 0 dB).
const MIN_OUTPUT_SQNR_DB: f64 = 20.0;

#[test]
fn int8_exports_run_in_the_firmware_and_track_the_float_model() {
    for (name, graph) in [("mlp", mlp()), ("unet", tiny_unet())] {
        let weights = random_weights(&graph, 11);
        let calibration = calibrate(&graph, &weights, 4);
        let exported = export(&graph, &weights, &calibration, &options(Precision::Int8)).unwrap();
        let report = &exported.report;
        println!("{name}:\n{report}");
        let output = report.output_sqnr_db.unwrap();
        assert!(
            output > MIN_OUTPUT_SQNR_DB,
            "{name}: output SQNR {output:.1} dB"
        );
        for layer in &report.layers {
            let sqnr = layer.sqnr_db.unwrap();
            assert!(
                sqnr > MIN_OUTPUT_SQNR_DB,
                "{name}: {} at {sqnr:.1} dB",
                layer.name
            );
        }
        let mut reference = Evaluator::float(&graph, &weights, Precision::F32).unwrap();
        let held_out = held_out_sqnr(&graph, &exported.blob, &mut reference);
        println!("{name}: held-out output SQNR {held_out:.1} dB");
        assert!(
            held_out > MIN_OUTPUT_SQNR_DB,
            "{name}: held-out {held_out:.1} dB"
        );
    }
}

#[test]
fn concat_inputs_keep_their_own_scales_and_movers_inherit() {
    let graph = tiny_unet();
    let weights = random_weights(&graph, 12);
    let calibration = calibrate(&graph, &weights, 2);
    let exported = export(&graph, &weights, &calibration, &options(Precision::Int8)).unwrap();
    let blob = Blob::parse(&exported.blob).unwrap();
    let mut concats = 0;
    for (i, node) in graph.nodes.iter().enumerate() {
        let params = blob.quant(i, 0).unwrap();
        match &node.op {
            Op::Concat { inputs } => {
                concats += 1;
                let own: Vec<QuantParams> =
                    inputs.iter().map(|j| blob.quant(j.0, 0).unwrap()).collect();
                // Each input keeps the parameters of the node that produced it...
                for (j, q) in inputs.iter().zip(&own) {
                    let producer = calibration.range(*j, 0, Default::default()).unwrap();
                    let expected = QuantParams::from_range(producer.0, producer.1).unwrap();
                    if !matches!(
                        graph.node(*j).op,
                        Op::Upsample2x { .. } | Op::Reshape { .. }
                    ) {
                        assert!(q.same_as(&expected), "{}", node.name);
                    }
                }
                // ...so the skip connection and the upsampled path differ from each other
                // and from the output.
                assert!(!own[0].same_as(&own[1]), "{}", node.name);
                assert!(own.iter().any(|q| !q.same_as(&params)));
            }
            Op::Upsample2x { input } | Op::Reshape { input, .. } => {
                assert!(params.same_as(&blob.quant(input.0, 0).unwrap()));
            }
            Op::TimeEmbedding { .. } => {
                assert!(params.same_as(&QuantParams::from_range(-1.0, 1.0).unwrap()));
            }
            _ => {}
        }
    }
    assert_eq!(concats, 4);
}

#[test]
fn float_exports_match_the_reference_and_fp16_is_close() {
    let graph = tiny_unet();
    let weights = random_weights(&graph, 13);
    let calibration = Calibration::new(&graph, CalibrationConfig::default());
    let f32_blob = export(&graph, &weights, &calibration, &options(Precision::F32)).unwrap();
    let f16_blob = export(&graph, &weights, &calibration, &options(Precision::F16)).unwrap();
    assert!(f32_blob.report.layers.iter().all(|l| l.sqnr_db.is_none()));
    assert!(f16_blob.blob.len() < f32_blob.blob.len());
    let mut reference = Evaluator::float(&graph, &weights, Precision::F32).unwrap();
    let len = 64;
    for blob in [&f32_blob.blob, &f16_blob.blob] {
        let parsed = Blob::parse(blob).unwrap();
        let mut arena = vec![0u8; ddm_firmware::network_arena_bytes(&parsed).unwrap()];
        let mut network = Network::new(parsed, &mut arena).unwrap();
        for (x, t) in random_inputs(len, 4, 5) {
            let mut out = vec![0.0f32; len];
            network.run(&x, t, &mut out).unwrap();
            let expected = reference.output(&x, t).unwrap();
            if parsed.precision() == Precision::F32 {
                // The same kernels, only another memory plan: the same bits.
                assert_eq!(out, expected);
            } else {
                assert!(sqnr_db(&expected, &out) > 40.0);
            }
        }
    }
}

#[test]
fn fp16_reports_its_error_against_f32() {
    let graph = mlp();
    let weights = random_weights(&graph, 14);
    let calibration = calibrate(&graph, &weights, 1);
    let exported = export(&graph, &weights, &calibration, &options(Precision::F16)).unwrap();
    let output = exported.report.output_sqnr_db.unwrap();
    assert!(output > 50.0, "fp16 output SQNR {output:.1} dB");
}

#[test]
fn report_numbers_come_from_the_graph_the_blob_and_the_plan() {
    let graph = tiny_unet();
    let weights = random_weights(&graph, 15);
    let calibration = calibrate(&graph, &weights, 2);
    let options = options(Precision::Int8);
    let exported = export(&graph, &weights, &calibration, &options).unwrap();
    let report = &exported.report;
    let blob = Blob::parse(&exported.blob).unwrap();
    assert_eq!(report.parameters, graph.parameter_count());
    assert_eq!(report.macs, graph.macs());
    assert_eq!(report.flash_bytes, exported.blob.len());
    assert_eq!(report.arena_bytes, required_arena_bytes(&blob).unwrap());
    assert_eq!(report.activation_bytes, blob.arena_bytes());
    assert_eq!(exported.plan.arena_bytes, blob.arena_bytes());
    assert!(report.activation_bytes < report.no_reuse_bytes);
    assert_eq!(report.calibration_inputs, calibration.inputs().len());
    assert_eq!(report.layers.len(), graph.nodes.len());
    assert_eq!(report.layers[1].op, "time_embedding");
    assert_eq!(report.output_sqnr_db, report.layers[graph.output.0].sqnr_db);
    // The blob stores the sampler defaults and the schedule table it was given.
    assert_eq!(blob.sampler_defaults(), options.sampler);
    let table = options.schedule.table().unwrap();
    let mut stored = vec![0.0f32; table.len()];
    blob.copy_alphas_cumprod(&mut stored).unwrap();
    assert_eq!(stored, table);
    let text = report.to_string();
    for needle in [
        "parameters",
        "MACs per call",
        "flash",
        "arena",
        "SQNR",
        "conv_in",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    // The plan passes the writer's liveness check against the spec it was made for.
    let mut spec =
        ddm_export::quantize::model_spec(&graph, &weights, Some(&calibration), &options).unwrap();
    check_plan(&spec, &exported.plan).unwrap();
    spec.plan = Some(exported.plan.clone());
    assert_eq!(
        ddm_firmware::writer::write_blob(&spec).unwrap(),
        exported.blob
    );
}

#[test]
fn exports_and_generation_are_deterministic() {
    let graph = tiny_unet();
    let weights = random_weights(&graph, 16);
    for precision in [Precision::Int8, Precision::F16, Precision::F32] {
        let a = export(
            &graph,
            &weights,
            &calibrate(&graph, &weights, 2),
            &options(precision),
        );
        let b = export(
            &graph,
            &weights,
            &calibrate(&graph, &weights, 2),
            &options(precision),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.blob, b.blob, "{precision:?}");
        assert_eq!(a.report, b.report);
        // The device generates the same sample twice from the same seed.
        let blob = Blob::parse(&a.blob).unwrap();
        let mut arena = vec![0u8; required_arena_bytes(&blob).unwrap()];
        let mut sample = |seed| {
            let mut out = vec![0.0f32; blob.sample_len()];
            generate(&blob, &mut arena, &GenerateSettings::new(seed, 0), &mut out).unwrap();
            out
        };
        let first = sample(3);
        assert!(first.iter().all(|v| v.is_finite()));
        assert_eq!(first, sample(3));
    }
}

#[test]
fn missing_or_foreign_calibration_is_refused() {
    let graph = tiny_unet();
    let weights = random_weights(&graph, 17);
    let empty = Calibration::new(&graph, CalibrationConfig::default());
    let error = export(&graph, &weights, &empty, &options(Precision::Int8)).unwrap_err();
    assert!(matches!(error, Error::Calibration(_)), "{error}");
    assert!(error.to_string().contains("never observed"), "{error}");
    let other = mlp();
    let foreign = calibrate(&other, &random_weights(&other, 1), 1);
    let error = export(&graph, &weights, &foreign, &options(Precision::Int8)).unwrap_err();
    assert!(matches!(error, Error::Calibration(_)), "{error}");
    // Float blobs need no calibration.
    export(&graph, &weights, &empty, &options(Precision::F32)).unwrap();
    // Invalid sampler defaults are the runtime's typed error.
    let mut bad = options(Precision::F32);
    bad.sampler.steps = 2000;
    let error = export(&graph, &weights, &empty, &bad).unwrap_err();
    assert!(matches!(error, Error::Firmware(_)), "{error}");
}

/// Calibration on inputs whose scale grows with the timestep (`x ~ N(0, (0.2 + 3 t / T)^2)`),
/// as a diffusion network's activations do, at the DDIM timesteps of [`options`], with
/// `max_groups` time groups.
fn calibrate_growing(
    graph: &Graph,
    weights: &ddm_export::graph::Weights,
    max_groups: usize,
) -> Calibration {
    let options = options(Precision::Int8);
    let timesteps =
        ddm_export::calibration::calibration_timesteps(&options.schedule, &options.sampler)
            .unwrap();
    let boundaries = time_group_boundaries(&timesteps, max_groups);
    let config = CalibrationConfig {
        reservoir: 4096,
        max_inputs: 40,
        seed: 1,
    };
    let mut calibration = Calibration::with_time_groups(graph, config, boundaries).unwrap();
    let mut evaluator = Evaluator::float(graph, weights, Precision::F32).unwrap();
    let len = evaluator.sample_len();
    let mut rng = ddm_core::Rng::new(5);
    let mut out = vec![0.0f32; len];
    for _ in 0..4 {
        for &t in &timesteps {
            let gain = 0.2 + 3.0 * t as f32 / 1000.0;
            let mut x = vec![0.0f32; len];
            rng.fill_normal(&mut x);
            x.iter_mut().for_each(|v| *v *= gain);
            calibration.record_input(&x, t).unwrap();
            evaluator
                .run(&x, t, &mut out, |node, output| {
                    let values: Vec<f32> = output.iter().collect();
                    calibration.observe(ddm_export::graph::NodeId(node), t, &values)
                })
                .unwrap();
        }
    }
    calibration
}

#[test]
fn time_groups_store_each_groups_calibrated_parameters_at_no_arena_cost() {
    let graph = tiny_unet();
    let weights = random_weights(&graph, 21);
    let options = options(Precision::Int8);
    let single = export(
        &graph,
        &weights,
        &calibrate_growing(&graph, &weights, 1),
        &options,
    )
    .unwrap();
    let calibration = calibrate_growing(&graph, &weights, 16);
    assert_eq!(calibration.group_count(), 10, "one group per DDIM step");
    let grouped = export(&graph, &weights, &calibration, &options).unwrap();
    let blob = Blob::parse(&grouped.blob).unwrap();
    assert_eq!(blob.time_groups(), 10);
    for (k, &b) in calibration.time_groups().iter().enumerate() {
        assert_eq!(blob.time_group_boundary(k), Some(b));
    }
    let mut moved = 0;
    for (i, node) in graph.nodes.iter().enumerate() {
        if matches!(
            node.op,
            Op::Upsample2x { .. } | Op::Reshape { .. } | Op::TimeEmbedding { .. }
        ) {
            continue;
        }
        let id = ddm_export::graph::NodeId(i);
        for g in 0..10 {
            let (low, high) = calibration.range(id, g, Default::default()).unwrap();
            let expected = QuantParams::from_range(low, high).unwrap();
            let stored = blob.quant(i, g).unwrap();
            assert!(stored.same_as(&expected), "node {i}, group {g}");
            moved += usize::from(!stored.same_as(&blob.quant(i, 0).unwrap()));
        }
    }
    assert!(moved > 0, "the ranges follow the timestep");
    // The report: the groups' flash, no arena, and a better output than one set.
    let report = &grouped.report;
    assert_eq!(report.time_groups, 10);
    assert_eq!(
        (single.report.time_groups, single.report.time_group_bytes),
        (1, 0)
    );
    assert!(report.time_group_bytes > 0 && report.time_group_bytes < report.flash_bytes);
    assert_eq!(report.activation_bytes, single.report.activation_bytes);
    assert_eq!(report.arena_bytes, single.report.arena_bytes);
    assert!(report.to_string().contains("time groups      10"));
    let (one, many) = (
        single.report.output_sqnr_db.unwrap(),
        report.output_sqnr_db.unwrap(),
    );
    println!("output SQNR: one set {one:.1} dB, per DDIM step {many:.1} dB");
    assert!(
        many > one + 1.0,
        "one set {one:.1} dB, per step {many:.1} dB"
    );
}

#[test]
fn the_flash_budget_caps_the_time_groups_at_the_exact_blob_size() {
    let graph = tiny_unet();
    let weights = random_weights(&graph, 22);
    let options = options(Precision::Int8);
    let size = |groups: usize| {
        let calibration = calibrate_growing(&graph, &weights, groups);
        assert_eq!(calibration.group_count(), groups);
        export(&graph, &weights, &calibration, &options)
            .unwrap()
            .blob
            .len()
    };
    let (one, three, four) = (size(1), size(3), size(4));
    assert!(one < three && three < four);
    let within = |max, budget| time_groups_within(&graph, &weights, &options, max, budget).unwrap();
    // The real blobs' sizes decide, whatever the calibrated parameters.
    assert_eq!(within(16, three), 3);
    assert_eq!(within(16, four - 1), 3);
    assert_eq!(within(16, four), 4);
    assert_eq!(within(2, four), 2, "never more than asked");
    assert_eq!(within(16, usize::MAX), 16);
    assert_eq!(within(16, one), 1);
    assert_eq!(
        within(16, one - 1),
        1,
        "one group even when it does not fit"
    );
}
