//! The fused CPU kernels (`ddm::model::kernels`) against candle's own operations and against
//! central finite differences, for every geometry the models use; and their determinism.
//!
//! Tolerances: in `f64` the fused and the reference operations differ only by rounding
//! (`1e-10` relative to the largest value). In `f32` a convolution output is a sum of
//! `C_in k²` (up to a few hundred) products that the GEMM adds in another order than candle;
//! the rounding error of such a sum is about `sqrt(terms) * 6e-8` of the magnitude of the
//! terms, well under the `2e-5` allowed here (relative to the largest value of the output),
//! while a wrong index or a missing term shows up as an error of order 1.

use candle_core::{DType, Device, Tensor, Var};
use ddm::model::kernels::{with_kernels, Kernels};
use ddm::model::ops;
use ddm::model::{forward, MlpConfig, Params, UnetConfig};
use ddm_core::Rng;
use ddm_export::graph::{Graph, NodeId};

fn random(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| f64::from(rng.normal())).collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `max |a - b| / max(1, max |b|)`.
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (values(a), values(b));
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// An operation under test: inputs to output.
type Op<'a> = &'a dyn Fn(&[Tensor]) -> Tensor;

/// The output and the gradients of `sum(op(inputs) * probe)` with respect to every input.
fn output_and_grads(
    kernels: Kernels,
    op: Op<'_>,
    inputs: &[Tensor],
    probe: &Tensor,
) -> (Tensor, Vec<Tensor>) {
    with_kernels(kernels, || {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = op(&tensors);
        let loss = (&out * probe).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let grads = vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).expect("a gradient").clone())
            .collect();
        (out.detach(), grads)
    })
}

/// Checks the fused `op` against candle's in `f32` (output) and `f64` (output and every
/// gradient), and the fused gradients against central finite differences on a few entries.
fn check(name: &str, op: Op<'_>, shapes: &[Vec<usize>], seed: u64) {
    let mut rng = Rng::new(seed);
    let inputs: Vec<Tensor> = shapes
        .iter()
        .map(|s| random(&mut rng, s, DType::F64))
        .collect();
    let out_shape = with_kernels(Kernels::Candle, || op(&inputs))
        .dims()
        .to_vec();
    let probe = random(&mut rng, &out_shape, DType::F64);

    // f32 forward.
    let single: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F32).unwrap())
        .collect();
    let fused = op(&single);
    let reference = with_kernels(Kernels::Candle, || op(&single));
    assert_eq!(fused.dtype(), DType::F32);
    let error = relative_error(&fused, &reference);
    assert!(error < 2e-5, "{name}: f32 forward differs by {error:e}");

    // f64 forward and gradients against candle's autograd.
    let (fused, fused_grads) = output_and_grads(Kernels::Fused, op, &inputs, &probe);
    let (reference, reference_grads) = output_and_grads(Kernels::Candle, op, &inputs, &probe);
    let error = relative_error(&fused, &reference);
    assert!(error < 1e-10, "{name}: f64 forward differs by {error:e}");
    for (i, (a, b)) in fused_grads.iter().zip(&reference_grads).enumerate() {
        let error = relative_error(a, b);
        assert!(error < 1e-10, "{name}: gradient {i} differs by {error:e}");
    }

    // Central finite differences of sum(op * probe) on the first, middle and last entries.
    // With h = 1e-5 the truncation error (h^2 f'''/6) and the rounding error (1e-16 |loss| / h)
    // are both near 1e-10, far below the tolerance, relative to max(|gradient|, 0.01).
    let h = 1e-5;
    for (i, input) in inputs.iter().enumerate() {
        let base = values(input);
        let grad = values(&fused_grads[i]);
        for index in [0, base.len() / 2, base.len() - 1] {
            let loss = |delta: f64| -> f64 {
                let mut changed = base.clone();
                changed[index] += delta;
                let mut trial = inputs.to_vec();
                trial[i] = Tensor::from_vec(changed, input.shape(), &Device::Cpu).unwrap();
                let out = op(&trial);
                (&out * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (loss(h) - loss(-h)) / (2.0 * h);
            let error = (numeric - grad[index]).abs() / numeric.abs().max(1e-2);
            assert!(
                error < 1e-6,
                "{name}: input {i}[{index}]: backprop {}, finite difference {numeric}",
                grad[index]
            );
        }
    }
}

/// `(B, C_in, H, W, C_out, k, stride, padding)`.
type Convolution = (usize, usize, usize, usize, usize, usize, usize, usize);

const CONVOLUTIONS: [Convolution; 9] = [
    // 3x3 stride 1 (every UNet convolution but two), odd channel counts, batch 1.
    (1, 3, 7, 5, 5, 3, 1, 1),
    (3, 5, 6, 6, 7, 3, 1, 1),
    // The UNet's first convolution: one input channel.
    (2, 1, 8, 8, 4, 3, 1, 1),
    // Stride 2 (downsampling), even and odd sizes.
    (2, 4, 8, 8, 4, 3, 2, 1),
    (2, 3, 7, 5, 6, 3, 2, 1),
    // 1x1 (residual shortcuts).
    (3, 6, 5, 5, 4, 1, 1, 0),
    // Wider: more channels than a SIMD register holds, not a multiple of it.
    (2, 19, 6, 6, 21, 3, 1, 1),
    // Not in the presets but valid graphs: 5x5 with padding 2, no padding.
    (2, 2, 6, 7, 3, 5, 1, 2),
    (2, 2, 6, 6, 3, 3, 1, 0),
];

#[test]
fn conv2d_matches_candle_and_finite_differences() {
    for (i, &(b, c_in, h, w, c_out, k, stride, padding)) in CONVOLUTIONS.iter().enumerate() {
        let name = format!("conv {b}x{c_in}x{h}x{w} -> {c_out}, {k}x{k}/{stride} pad {padding}");
        let with_bias =
            |t: &[Tensor]| ops::conv2d(&t[0], &t[1], Some(&t[2]), stride, padding).unwrap();
        let shapes = [vec![b, c_in, h, w], vec![c_out, c_in, k, k], vec![c_out]];
        check(&name, &with_bias, &shapes, 100 + i as u64);
        let without_bias = |t: &[Tensor]| ops::conv2d(&t[0], &t[1], None, stride, padding).unwrap();
        check(
            &format!("{name} without bias"),
            &without_bias,
            &shapes[..2],
            200 + i as u64,
        );
    }
}

#[test]
fn conv2d_at_unet_sizes_matches_candle_in_f32() {
    // The preset's widest convolutions on a 28x28 image: 96 -> 32 (after a concat) and
    // 64 -> 64 at 14x14; the f32 tolerance argument above is about these sums.
    let mut rng = Rng::new(7);
    for (c_in, c_out, size) in [(96, 32, 28), (64, 64, 14), (32, 1, 28)] {
        let x = random(&mut rng, &[2, c_in, size, size], DType::F32);
        let w = (random(&mut rng, &[c_out, c_in, 3, 3], DType::F32) * 0.05).unwrap();
        let bias = random(&mut rng, &[c_out], DType::F32);
        let fused = ops::conv2d(&x, &w, Some(&bias), 1, 1).unwrap();
        let reference =
            with_kernels(Kernels::Candle, || ops::conv2d(&x, &w, Some(&bias), 1, 1)).unwrap();
        let error = relative_error(&fused, &reference);
        assert!(error < 2e-5, "{c_in} -> {c_out}: {error:e}");
    }
}

#[test]
fn group_norm_matches_candle_and_finite_differences() {
    // (shape, groups): maps with 1, 2, 4 and one group per channel, and vectors (the MLP).
    let cases: [(&[usize], usize); 6] = [
        (&[2, 8, 5, 5], 1),
        (&[3, 8, 4, 3], 2),
        (&[1, 12, 6, 6], 4),
        (&[2, 6, 3, 3], 6),
        (&[4, 16], 4),
        (&[3, 10], 1),
    ];
    for (i, (shape, groups)) in cases.into_iter().enumerate() {
        let channels = shape[1];
        let shapes = [shape.to_vec(), vec![channels], vec![channels]];
        let plain = |t: &[Tensor]| ops::group_norm(&t[0], groups, 1e-5, &t[1], &t[2]).unwrap();
        check(
            &format!("group norm {shape:?} / {groups}"),
            &plain,
            &shapes,
            300 + i as u64,
        );
        let fused = |t: &[Tensor]| ops::group_norm_silu(&t[0], groups, 1e-5, &t[1], &t[2]).unwrap();
        check(
            &format!("group norm + silu {shape:?} / {groups}"),
            &fused,
            &shapes,
            400 + i as u64,
        );
    }
}

#[test]
fn linear_matches_candle_and_finite_differences() {
    // The MLP's layers (batch > 1, widths not multiples of a SIMD register) and a batch of 1.
    for (i, (batch, inputs, outputs)) in [(5, 7, 3), (1, 33, 17), (4, 64, 70)]
        .into_iter()
        .enumerate()
    {
        let shapes = [vec![batch, inputs], vec![outputs, inputs], vec![outputs]];
        let with_bias = |t: &[Tensor]| ops::linear(&t[0], &t[1], Some(&t[2])).unwrap();
        check(
            &format!("linear {batch}x{inputs} -> {outputs}"),
            &with_bias,
            &shapes,
            500 + i as u64,
        );
        let without_bias = |t: &[Tensor]| ops::linear(&t[0], &t[1], None).unwrap();
        check(
            &format!("linear {batch}x{inputs} -> {outputs} without bias"),
            &without_bias,
            &shapes[..2],
            600 + i as u64,
        );
    }
}

#[test]
fn elementwise_ops_match_candle_and_finite_differences() {
    let silu = |t: &[Tensor]| ops::silu(&t[0]).unwrap();
    check("silu [3, 70]", &silu, &[vec![3, 70]], 1);
    check("silu [2, 3, 5, 5]", &silu, &[vec![2, 3, 5, 5]], 2);
    let add = |t: &[Tensor]| ops::add(&t[0], &t[1]).unwrap();
    check("add per channel", &add, &[vec![2, 5, 3, 4], vec![2, 5]], 3);
    check("add", &add, &[vec![2, 5, 3, 4], vec![2, 5, 3, 4]], 4);
    let upsample = |t: &[Tensor]| ops::upsample2x(&t[0]).unwrap();
    check("upsample", &upsample, &[vec![2, 3, 4, 5]], 5);
}

#[test]
fn mlp_matches_candle_forward_and_gradients() {
    let graph = MlpConfig {
        hidden: 24,
        blocks: 2,
        time_dim: 8,
        norm_groups: 4,
        classes: 0,
    }
    .build(&[1, 4, 4])
    .unwrap();
    compare_model(&graph, &[3, 1, 4, 4], 6);
}

#[test]
fn unet_matches_candle_forward_and_gradients() {
    let graph = UnetConfig {
        channels: 8,
        channel_mults: vec![1, 2],
        blocks_per_level: 1,
        groups: 4,
        classes: 0,
    }
    .build(&[1, 8, 8])
    .unwrap();
    compare_model(&graph, &[3, 1, 8, 8], 5);
}

/// The fused and the reference executions of `graph` agree on the output and on every
/// parameter's gradient (`f64`), and the `f32` output is close to the `f64` one.
fn compare_model(graph: &Graph, input: &[usize], seed: u64) {
    let mut rng = Rng::new(seed);
    let params: Vec<(String, Tensor)> = graph
        .params
        .iter()
        .map(|p| {
            let fan_in = p.shape.iter().skip(1).product::<usize>().max(1) as f64;
            (
                p.name.clone(),
                (random(&mut rng, &p.shape, DType::F64) / fan_in.sqrt()).unwrap(),
            )
        })
        .collect();
    let x = random(&mut rng, input, DType::F64);
    let t = Tensor::new(&[3.0f64, 500.0, 999.0], &Device::Cpu).unwrap();
    let probe = random(&mut rng, input, DType::F64);

    let run = |kernels: Kernels, dtype: DType| {
        with_kernels(kernels, || {
            let vars: Vec<(String, Var)> = params
                .iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        Var::from_tensor(&v.to_dtype(dtype).unwrap()).unwrap(),
                    )
                })
                .collect();
            let p =
                Params::from_tensors(vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())));
            let out = forward(graph, &p, &x.to_dtype(dtype).unwrap(), &t, None).unwrap();
            let loss = (&out * probe.to_dtype(dtype).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            let grads: Vec<Tensor> = vars
                .iter()
                .map(|(n, v)| {
                    grads
                        .get(v.as_tensor())
                        .unwrap_or_else(|| panic!("{n}"))
                        .clone()
                })
                .collect();
            (out, grads)
        })
    };
    let (fused, fused_grads) = run(Kernels::Fused, DType::F64);
    let (reference, reference_grads) = run(Kernels::Candle, DType::F64);
    assert!(relative_error(&fused, &reference) < 1e-10);
    for ((name, _), (a, b)) in params.iter().zip(fused_grads.iter().zip(&reference_grads)) {
        let error = relative_error(a, b);
        assert!(error < 1e-9, "{name}: {error:e}");
    }
    let (single, _) = run(Kernels::Fused, DType::F32);
    let error = relative_error(&single, &reference);
    assert!(error < 1e-4, "f32 output differs from f64 by {error:e}");

    // An observer sees every node (so GroupNorm and SiLU run apart): same output.
    let p = Params::from_tensors(params.iter().cloned());
    let mut seen = 0;
    let mut count = |_: NodeId, _: &Tensor| seen += 1;
    let observed = forward(graph, &p, &x, &t, Some(&mut count)).unwrap();
    assert_eq!(seen, graph.nodes.len());
    assert!(relative_error(&observed, &fused) < 1e-12);
}

/// The fused backward of a convolution and a GroupNorm + SiLU at `threads` threads.
fn gradients_at(threads: usize) -> Vec<Vec<f32>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut rng = Rng::new(9);
        let x = Var::from_tensor(&random(&mut rng, &[16, 24, 14, 14], DType::F32)).unwrap();
        let w = Var::from_tensor(&random(&mut rng, &[32, 24, 3, 3], DType::F32)).unwrap();
        let b = Var::from_tensor(&random(&mut rng, &[32], DType::F32)).unwrap();
        let gamma = Var::from_tensor(&random(&mut rng, &[32], DType::F32)).unwrap();
        let beta = Var::from_tensor(&random(&mut rng, &[32], DType::F32)).unwrap();
        let w2 = Var::from_tensor(&random(&mut rng, &[24, 32, 3, 3], DType::F32)).unwrap();
        let w3 = Var::from_tensor(&random(&mut rng, &[64, 24 * 7 * 7], DType::F32)).unwrap();
        let b3 = Var::from_tensor(&random(&mut rng, &[64], DType::F32)).unwrap();
        let y = ops::conv2d(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), 1, 1).unwrap();
        let y = ops::group_norm_silu(&y, 8, 1e-5, gamma.as_tensor(), beta.as_tensor()).unwrap();
        let y = ops::conv2d(&y, w2.as_tensor(), None, 2, 1).unwrap();
        // Large enough for the linear layer's product to be split over the threads.
        let y = ops::reshape(&y, &[24 * 7 * 7]).unwrap();
        let y = ops::silu(&ops::linear(&y, w3.as_tensor(), Some(b3.as_tensor())).unwrap()).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        [&x, &w, &b, &gamma, &beta, &w2, &w3, &b3]
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect()
    })
}

#[test]
fn gradients_are_bit_identical_across_runs_and_thread_counts() {
    let one = gradients_at(1);
    assert_eq!(one, gradients_at(1), "two runs on one thread");
    assert_eq!(one, gradients_at(2), "one thread and two");
    assert_eq!(one, gradients_at(3), "one thread and three");
}

/// `ddm train` of a small UNet at `threads` threads; returns the trained weights file.
fn train_unet(dir: &std::path::Path, threads: usize) -> Vec<u8> {
    let out = dir.join(format!("threads-{threads}"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ddm"))
        .args([
            "--threads",
            &threads.to_string(),
            "train",
            "--dataset",
            "optdigits",
            "--model",
            "unet",
            "--width",
            "8",
            "--groups",
            "4",
            "--steps",
            "3",
            "--batch-size",
            "16",
            "--preview-every",
            "0",
            "--checkpoint-every",
            "3",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("the ddm binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out.join("model.safetensors")).unwrap()
}

#[test]
fn training_is_bit_identical_at_one_and_two_threads() {
    // The kernels' sums do not depend on the thread count, and candle's own element-wise
    // operations run on one thread (see ddm::threads).
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(train_unet(dir.path(), 1), train_unet(dir.path(), 2));
}
