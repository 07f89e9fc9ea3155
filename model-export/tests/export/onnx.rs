use ddm_export::graph::{Graph, Weights};
use ddm_export::onnx::{export, OnnxPrecision};
use ddm_export::reference::Evaluator;
use ddm_firmware::Precision;
use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::common::{mlp, random_inputs, random_weights, tiny_unet};

/// Runs the ONNX file in tract on a batch of `(x, t)` pairs (the batch dimension is left
/// symbolic in the file; tract resolves it per run).
fn run_tract(bytes: &[u8], shape: &[usize], inputs: &[(Vec<f32>, u32)]) -> Vec<Vec<f32>> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let batch = inputs.len();
    let mut dims = vec![batch];
    dims.extend_from_slice(shape);
    let x: Vec<f32> = inputs.iter().flat_map(|(x, _)| x.iter().copied()).collect();
    let t: Vec<f32> = inputs.iter().map(|&(_, t)| t as f32).collect();
    let x = Tensor::from_shape(&dims, &x).unwrap();
    let t = Tensor::from_shape(&[batch], &t).unwrap();
    let outputs = model.run(tvec!(x.into_tvalue(), t.into_tvalue())).unwrap();
    let eps = outputs[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(eps.shape(), dims.as_slice());
    let flat: Vec<f32> = eps.iter().copied().collect();
    flat.chunks(flat.len() / batch)
        .map(<[f32]>::to_vec)
        .collect()
}

/// Largest `|a - b|` relative to the largest `|b|`.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn check(graph: &Graph, weights: &Weights) {
    let shape = graph.input_shape().to_vec();
    let len: usize = shape.iter().product();
    let mut f32_runtime = Evaluator::float(graph, weights, Precision::F32).unwrap();
    let mut f16_runtime = Evaluator::float(graph, weights, Precision::F16).unwrap();
    let f32_file = export(graph, weights, OnnxPrecision::F32).unwrap();
    let f16_file = export(graph, weights, OnnxPrecision::F16).unwrap();
    // Parameters dominate the file: f16 roughly halves it.
    let parameter_bytes = 4 * graph.parameter_count();
    assert!(f32_file.len() > parameter_bytes);
    assert!(f16_file.len() < f32_file.len() - parameter_bytes / 3);
    for batch in [3, 1] {
        let inputs = random_inputs(len, batch, 40 + batch as u64);
        let from_f32 = run_tract(&f32_file, &shape, &inputs);
        let from_f16 = run_tract(&f16_file, &shape, &inputs);
        for (i, (x, t)) in inputs.iter().enumerate() {
            let reference = f32_runtime.output(x, *t).unwrap();
            let half = f16_runtime.output(x, *t).unwrap();
            let e32 = relative_error(&from_f32[i], &reference);
            // f16 parameters with f32 arithmetic are the fp16 blob's semantics: the f16 file
            // matches the fp16 runtime as tightly as the f32 file the f32 one, and the f32
            // model within f16's parameter rounding.
            let e16 = relative_error(&from_f16[i], &half);
            let e16_vs_f32 = relative_error(&from_f16[i], &reference);
            println!("batch {batch} t {t}: f32 {e32:.1e}, f16 {e16:.1e} (vs f32 {e16_vs_f32:.1e})");
            assert!(e32 < 1e-4, "f32 ONNX vs runtime: {e32:e} at t = {t}");
            assert!(e16 < 1e-4, "f16 ONNX vs fp16 runtime: {e16:e} at t = {t}");
            assert!(e16_vs_f32 < 1e-2, "f16 ONNX vs f32 runtime: {e16_vs_f32:e}");
        }
    }
}

#[test]
fn onnx_mlp_runs_in_tract_and_matches_the_runtime() {
    let graph = mlp();
    check(&graph, &random_weights(&graph, 31));
}

#[test]
fn onnx_unet_runs_in_tract_and_matches_the_runtime() {
    let graph = tiny_unet();
    check(&graph, &random_weights(&graph, 32));
}

#[test]
fn onnx_files_declare_the_interface_and_f16_parameters() {
    let graph = tiny_unet();
    let weights = random_weights(&graph, 33);
    let file = export(&graph, &weights, OnnxPrecision::F16).unwrap();
    let model = ModelProto::decode(file.as_slice()).unwrap();
    assert_eq!(model.opset_import[0].version, 17);
    let g = model.graph.unwrap();
    let names =
        |v: &[tract_onnx::pb::ValueInfoProto]| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&g.input), ["x", "t"]);
    assert_eq!(names(&g.output), ["eps"]);
    for p in &graph.params {
        let init = g.initializer.iter().find(|i| i.name == p.name).unwrap();
        let elements = p.shape.iter().product::<usize>();
        if p.name.contains("norm") {
            // GroupNorm's scale and shift stay f32, as in fp16 blobs.
            assert_eq!(init.data_type, 1, "{} is float", p.name);
            assert_eq!(init.raw_data.len(), 4 * elements);
        } else {
            assert_eq!(init.data_type, 10, "{} is float16", p.name);
            assert_eq!(init.raw_data.len(), 2 * elements);
        }
    }
    assert_eq!(
        export(&graph, &weights, OnnxPrecision::F16).unwrap(),
        file,
        "deterministic"
    );
    // Name collisions are refused rather than written.
    let mut clash = graph.clone();
    clash.nodes[1].name = "eps".into();
    assert!(export(&clash, &weights, OnnxPrecision::F32).is_err());
}
