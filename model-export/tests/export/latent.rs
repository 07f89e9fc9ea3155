//! Latent models: the denoiser and its decoder exported into one blob.

use ddm_core::Rng;
use ddm_export::graph::{Graph, GraphBuilder, NodeId, Weights};
use ddm_export::reference::Evaluator;
use ddm_export::{
    decoder_bytes, export_latent, Calibration, CalibrationConfig, DecoderParts, Error,
};
use ddm_firmware::{
    generate, network_arena_bytes, required_arena_bytes, Blob, BlobKind, GenerateSettings, Network,
    Precision,
};

use crate::common::{calibrate, options, random_weights, sqnr_db, tiny_unet};

/// A decoder from the tiny UNet's `[1, 8, 8]` latents to `[3, 16, 16]` images.
fn decoder_graph(input: &[usize]) -> Graph {
    let mut b = GraphBuilder::new(input);
    let h = b.conv2d("dec.in", b.input(), 8, 3, 1, 1).unwrap();
    let h = b.group_norm("dec.norm", h, 4).unwrap();
    let h = b.silu("dec.act", h).unwrap();
    let h = b.upsample2x("dec.up", h).unwrap();
    let out = b.conv2d("dec.out", h, 3, 3, 1, 1).unwrap();
    b.finish_mapping(out).unwrap()
}

/// `n` standard-normal latents of `len` values.
fn latents(len: usize, n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut z = vec![0.0f32; len];
            rng.fill_normal(&mut z);
            z
        })
        .collect()
}

/// The decoder's calibration on `n` latents (one time group, inputs recorded at t = 0).
fn calibrate_decoder(graph: &Graph, weights: &Weights, n: usize) -> Calibration {
    let config = CalibrationConfig {
        reservoir: 4096,
        max_inputs: 8,
        seed: 1,
    };
    let mut calibration = Calibration::new(graph, config);
    let mut evaluator = Evaluator::float_decoder(graph, weights, Precision::F32).unwrap();
    let mut out = vec![0.0f32; evaluator.output_len()];
    for z in latents(evaluator.sample_len(), n, 5) {
        calibration.record_input(&z, 0).unwrap();
        evaluator
            .run(&z, 0, &mut out, |node, output| {
                let values: Vec<f32> = output.iter().collect();
                calibration.observe(NodeId(node), 0, &values)
            })
            .unwrap();
    }
    calibration
}

#[test]
fn a_latent_model_exports_both_networks_into_one_blob() {
    let graph = tiny_unet();
    let weights = random_weights(&graph, 3);
    let decoder = decoder_graph(graph.input_shape());
    let decoder_weights = random_weights(&decoder, 4);
    for precision in [Precision::Int8, Precision::F32] {
        let calibration = calibrate(&graph, &weights, 2);
        let decoder_calibration = calibrate_decoder(&decoder, &decoder_weights, 16);
        let parts = DecoderParts {
            graph: &decoder,
            weights: &decoder_weights,
            calibration: &decoder_calibration,
        };
        let exported =
            export_latent(&graph, &weights, &calibration, &parts, &options(precision)).unwrap();
        let blob = Blob::parse(&exported.blob).unwrap();
        assert_eq!(blob.kind(), BlobKind::Model);
        assert_eq!(blob.image_shape().dims().0[..3], [3, 16, 16]);
        let report = &exported.report;
        let decoder_report = report.decoder.as_ref().expect("a decoder report");
        assert_eq!(report.flash_bytes, exported.blob.len());
        assert_eq!(report.arena_bytes, required_arena_bytes(&blob).unwrap());
        assert!(decoder_report.flash_bytes < report.flash_bytes);
        // The budget's estimate, made before calibration, is the decoder's exact size plus
        // the section's table entry and at most 30 bytes of padding.
        let estimate = decoder_bytes(&decoder, &decoder_weights, &options(precision)).unwrap();
        assert_eq!(estimate, decoder_report.flash_bytes + 16 + 30);
        assert_eq!(decoder_report.macs, decoder.macs());
        assert_eq!(decoder_report.layers.len(), decoder.nodes.len());
        let text = report.to_string();
        assert!(text.contains("decoder "), "{text}");

        // The blob's decoder against the float decoder on held-out latents.
        let in_blob = blob.decoder().unwrap();
        let mut arena = vec![0u8; network_arena_bytes(&in_blob).unwrap()];
        let mut network = Network::new(in_blob, &mut arena).unwrap();
        let mut reference =
            Evaluator::float_decoder(&decoder, &decoder_weights, Precision::F32).unwrap();
        let (mut expected, mut actual) = (Vec::new(), Vec::new());
        for z in latents(blob.sample_len(), 8, 99) {
            let mut image = vec![0.0f32; blob.image_len()];
            network.run(&z, 0, &mut image).unwrap();
            actual.extend(image);
            expected.extend(reference.output(&z, 0).unwrap());
        }
        match precision {
            Precision::F32 => {
                assert!(expected
                    .iter()
                    .zip(&actual)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
                assert_eq!(decoder_report.output_sqnr_db, None);
            }
            _ => {
                let held_out = sqnr_db(&expected, &actual);
                assert!(held_out > 20.0, "{held_out} dB");
                let reported = decoder_report.output_sqnr_db.unwrap();
                assert!(reported > 20.0 && reported.is_finite(), "{reported} dB");
                assert!(text.contains("decoded image"), "{text}");
            }
        }

        // Generation writes the decoded image, within [-1, 1].
        let mut arena = vec![0u8; report.arena_bytes];
        let mut image = vec![0.0f32; blob.image_len()];
        generate(&blob, &mut arena, &GenerateSettings::new(0, 0), &mut image).unwrap();
        assert!(image.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}

#[test]
fn a_decoder_that_does_not_fit_the_denoiser_is_refused() {
    let graph = tiny_unet();
    let weights = random_weights(&graph, 3);
    let calibration = calibrate(&graph, &weights, 1);
    // Latents of another shape than the denoiser's samples.
    let decoder = decoder_graph(&[2, 4, 4]);
    let decoder_weights = random_weights(&decoder, 4);
    let decoder_calibration = calibrate_decoder(&decoder, &decoder_weights, 4);
    let parts = DecoderParts {
        graph: &decoder,
        weights: &decoder_weights,
        calibration: &decoder_calibration,
    };
    let err = export_latent(
        &graph,
        &weights,
        &calibration,
        &parts,
        &options(Precision::Int8),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Firmware(ddm_firmware::Error::Malformed(_))),
        "{err}"
    );
    // A decoder calibrated with time groups.
    let decoder = decoder_graph(graph.input_shape());
    let decoder_weights = random_weights(&decoder, 4);
    let grouped = Calibration::with_time_groups(
        &decoder,
        CalibrationConfig {
            reservoir: 16,
            max_inputs: 0,
            seed: 0,
        },
        vec![500],
    )
    .unwrap();
    let parts = DecoderParts {
        graph: &decoder,
        weights: &decoder_weights,
        calibration: &grouped,
    };
    let err = export_latent(
        &graph,
        &weights,
        &calibration,
        &parts,
        &options(Precision::Int8),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Calibration(_)), "{err}");
}

#[test]
fn an_input_scale_folds_into_the_first_layer() {
    let decoder = decoder_graph(&[1, 8, 8]);
    let weights = random_weights(&decoder, 8);
    let mut folded = weights.clone();
    decoder.fold_input_scale(&mut folded, 0.25).unwrap();
    let mut before = Evaluator::float_decoder(&decoder, &weights, Precision::F32).unwrap();
    let mut after = Evaluator::float_decoder(&decoder, &folded, Precision::F32).unwrap();
    for z in latents(64, 4, 3) {
        let scaled: Vec<f32> = z.iter().map(|v| 0.25 * v).collect();
        let expected = before.output(&scaled, 0).unwrap();
        let actual = after.output(&z, 0).unwrap();
        let close = expected
            .iter()
            .zip(&actual)
            .all(|(e, a)| (e - a).abs() <= 1e-5 * (1.0 + e.abs()));
        assert!(close, "{expected:?} against {actual:?}");
        // Not folded, the outputs differ: the comparison above can fail.
        assert!(before.output(&z, 0).unwrap() != expected);
    }
    // Only a single linear or convolution reader folds a scale.
    let mut b = GraphBuilder::new(&[1, 8, 8]);
    let h = b.conv2d("a", b.input(), 1, 3, 1, 1).unwrap();
    let out = b.add("skip", h, b.input()).unwrap();
    let skip = b.finish_mapping(out).unwrap();
    let mut skip_weights = random_weights(&skip, 1);
    assert!(matches!(
        skip.fold_input_scale(&mut skip_weights, 0.5),
        Err(Error::InvalidGraph(_))
    ));
    assert!(decoder.fold_input_scale(&mut folded, 0.0).is_err());
    assert!(decoder.fold_input_scale(&mut folded, f32::NAN).is_err());
}
