//! Shared test models (built with `GraphBuilder`, shaped like the host's MLP and UNet),
//! random weights, export options and calibration.

use ddm_core::sampler::SamplerKind;
use ddm_core::timesteps::Spacing;
use ddm_core::{Prediction, Rng, ScheduleConfig};
use ddm_export::calibration::calibration_timesteps;
use ddm_export::graph::{Graph, GraphBuilder, Init, NodeId, Tensor, Weights};
use ddm_export::reference::{calibrate_with_sampler, Evaluator};
use ddm_export::{Calibration, CalibrationConfig, ExportOptions, RangeMethod};
use ddm_firmware::writer::ScheduleSpec;
use ddm_firmware::{Precision, SamplerConfig};

/// The trainer's MLP on `[1, 8, 8]`: flatten, time MLP, residual blocks with GroupNorm,
/// SiLU, a time projection and residual adds, unflatten.
pub fn mlp() -> Graph {
    let (hidden, groups) = (32, 4);
    let mut b = GraphBuilder::new(&[1, 8, 8]);
    let x = b.input();
    let mut h = b.reshape("flatten", x, &[64]).unwrap();
    let e = b.time_embedding("time.embed", 16).unwrap();
    let e = b.linear("time.fc1", e, hidden).unwrap();
    let e = b.silu("time.act1", e).unwrap();
    let e = b.linear("time.fc2", e, hidden).unwrap();
    let e = b.silu("time.act2", e).unwrap();
    h = b.linear("in", h, hidden).unwrap();
    for i in 0..2 {
        let p = format!("block{i}");
        let mut r = b.group_norm(&format!("{p}.norm"), h, groups).unwrap();
        r = b.silu(&format!("{p}.act1"), r).unwrap();
        r = b.linear(&format!("{p}.fc1"), r, hidden).unwrap();
        let time = b.linear(&format!("{p}.time"), e, hidden).unwrap();
        r = b.add(&format!("{p}.add_time"), r, time).unwrap();
        r = b.silu(&format!("{p}.act2"), r).unwrap();
        r = b.linear(&format!("{p}.fc2"), r, hidden).unwrap();
        h = b.add(&format!("{p}.residual"), h, r).unwrap();
    }
    h = b.group_norm("out.norm", h, groups).unwrap();
    h = b.silu("out.act", h).unwrap();
    let out = b.linear("out", h, 64).unwrap();
    let out = b.reshape("unflatten", out, &[1, 8, 8]).unwrap();
    b.finish(out).unwrap()
}

/// The host's UNet architecture: shared time MLP, `conv_in`, residual blocks
/// (GN-SiLU-conv, + linear(time) broadcast, GN-SiLU-conv, 1x1 skip conv when the width
/// changes), stride-2 downsampling, nearest upsampling + conv, concatenated skips.
pub fn unet(
    shape: &[usize],
    channels: usize,
    mults: &[usize],
    blocks: usize,
    groups: usize,
) -> Graph {
    let mut b = GraphBuilder::new(shape);
    let e = b.time_embedding("time.embed", channels).unwrap();
    let e = b.linear("time.fc1", e, 4 * channels).unwrap();
    let e = b.silu("time.act1", e).unwrap();
    let e = b.linear("time.fc2", e, 4 * channels).unwrap();
    let e = b.silu("time.act2", e).unwrap();
    let res = |b: &mut GraphBuilder, name: &str, x: NodeId, out: usize| {
        let mut h = b.group_norm(&format!("{name}.norm1"), x, groups).unwrap();
        h = b.silu(&format!("{name}.act1"), h).unwrap();
        h = b.conv2d(&format!("{name}.conv1"), h, out, 3, 1, 1).unwrap();
        let time = b.linear(&format!("{name}.time"), e, out).unwrap();
        h = b.add(&format!("{name}.add_time"), h, time).unwrap();
        h = b.group_norm(&format!("{name}.norm2"), h, groups).unwrap();
        h = b.silu(&format!("{name}.act2"), h).unwrap();
        h = b.conv2d(&format!("{name}.conv2"), h, out, 3, 1, 1).unwrap();
        let skip = if b.shape(x)[0] == out {
            x
        } else {
            b.conv2d(&format!("{name}.skip"), x, out, 1, 1, 0).unwrap()
        };
        b.add(&format!("{name}.residual"), skip, h).unwrap()
    };
    let x = b.input();
    let mut h = b.conv2d("conv_in", x, channels, 3, 1, 1).unwrap();
    let mut skips = vec![h];
    for (level, mult) in mults.iter().enumerate() {
        for block in 0..blocks {
            h = res(
                &mut b,
                &format!("down{level}.res{block}"),
                h,
                mult * channels,
            );
            skips.push(h);
        }
        if level + 1 < mults.len() {
            let width = b.shape(h)[0];
            h = b
                .conv2d(&format!("down{level}.downsample"), h, width, 3, 2, 1)
                .unwrap();
            skips.push(h);
        }
    }
    let mid = mults[mults.len() - 1] * channels;
    h = res(&mut b, "mid.res0", h, mid);
    h = res(&mut b, "mid.res1", h, mid);
    for (level, mult) in mults.iter().enumerate().rev() {
        for block in 0..=blocks {
            let skip = skips.pop().unwrap();
            let joined = b
                .concat(&format!("up{level}.cat{block}"), &[h, skip])
                .unwrap();
            h = res(
                &mut b,
                &format!("up{level}.res{block}"),
                joined,
                mult * channels,
            );
        }
        if level > 0 {
            let width = b.shape(h)[0];
            h = b.upsample2x(&format!("up{level}.upsample"), h).unwrap();
            h = b
                .conv2d(&format!("up{level}.upsample_conv"), h, width, 3, 1, 1)
                .unwrap();
        }
    }
    h = b.group_norm("out.norm", h, groups).unwrap();
    h = b.silu("out.act", h).unwrap();
    let out = b.conv2d("out.conv", h, shape[0], 3, 1, 1).unwrap();
    b.finish(out).unwrap()
}

/// A tiny UNet on `[1, 8, 8]` (two levels, 8 and 16 channels).
pub fn tiny_unet() -> Graph {
    unet(&[1, 8, 8], 8, &[1, 2], 1, 4)
}

/// Random weights following each parameter's initialisation, perturbed so that GroupNorm's
/// scale and shift are not trivial: fan-in uniform, ones `1 + U(-0.3, 0.3)`, zeros
/// `U(-0.1, 0.1)`.
pub fn random_weights(graph: &Graph, seed: u64) -> Weights {
    let mut rng = Rng::new(seed);
    let mut uniform = |bound: f32| (2.0 * rng.uniform() - 1.0) * bound;
    graph
        .params
        .iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            let data = (0..n)
                .map(|_| match p.init {
                    Init::FanIn { fan_in } => uniform(1.0 / (fan_in as f32).sqrt()),
                    Init::Ones => 1.0 + uniform(0.3),
                    Init::Zeros => uniform(0.1),
                })
                .collect();
            (
                p.name.clone(),
                Tensor {
                    shape: p.shape.clone(),
                    data,
                },
            )
        })
        .collect()
}

/// DDPM's schedule with DDIM in 10 steps, leading spacing.
pub fn options(precision: Precision) -> ExportOptions {
    ExportOptions {
        precision,
        range: RangeMethod::Mse,
        sampler: SamplerConfig::with_spacing(SamplerKind::Ddim, 10, Spacing::Leading),
        schedule: ScheduleSpec::from_config(ScheduleConfig::ddpm(), Prediction::Eps),
    }
}

fn empty_calibration(graph: &Graph) -> Calibration {
    Calibration::new(
        graph,
        CalibrationConfig {
            reservoir: 4096,
            max_inputs: 8,
            seed: 1,
        },
    )
}

/// Calibration the way the host does it, through the public API, on `samples` inputs per
/// visited DDIM timestep: `x_t ~ N(0, I)`, what a variance-preserving schedule feeds a
/// trained model at every timestep when the data has unit variance. (Trajectories of an
/// untrained, random-weight model diverge to `x_0` of magnitude ~100, which would make the
/// ranges meaningless; [`calibrate_trajectories`] exercises that path.)
pub fn calibrate(graph: &Graph, weights: &Weights, samples: usize) -> Calibration {
    let options = options(Precision::Int8);
    let timesteps = calibration_timesteps(&options.schedule, &options.sampler).unwrap();
    let mut calibration = empty_calibration(graph);
    let mut evaluator = Evaluator::float(graph, weights, Precision::F32).unwrap();
    let len = evaluator.sample_len();
    let mut rng = Rng::new(77);
    let mut out = vec![0.0f32; len];
    for _ in 0..samples {
        for &t in &timesteps {
            let mut x = vec![0.0f32; len];
            rng.fill_normal(&mut x);
            calibration.record_input(&x, t).unwrap();
            evaluator
                .run(&x, t, &mut out, |node, output| {
                    let values: Vec<f32> = output.iter().collect();
                    calibration.observe(NodeId(node), t, &values)
                })
                .unwrap();
        }
    }
    calibration
}

/// Timestep-aware calibration on `samples` DDIM trajectories of the float model.
pub fn calibrate_trajectories(graph: &Graph, weights: &Weights, samples: usize) -> Calibration {
    let options = options(Precision::Int8);
    let mut calibration = empty_calibration(graph);
    calibrate_with_sampler(
        graph,
        weights,
        &mut calibration,
        &options.schedule,
        &options.sampler,
        samples,
        0,
    )
    .unwrap();
    calibration
}

/// `10 log10(sum r^2 / sum (r - q)^2)`.
pub fn sqnr_db(reference: &[f32], other: &[f32]) -> f64 {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (&r, &q) in reference.iter().zip(other) {
        signal += f64::from(r) * f64::from(r);
        noise += f64::from(r - q) * f64::from(r - q);
    }
    10.0 * (signal / noise).log10()
}

/// `n` random network inputs: `x` standard normal, `t` uniform in `0..1000`.
pub fn random_inputs(len: usize, n: usize, seed: u64) -> Vec<(Vec<f32>, u32)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut x = vec![0.0f32; len];
            rng.fill_normal(&mut x);
            (x, rng.below(1000))
        })
        .collect()
}
