//! Shared test models: float graphs built with the writer's types, an independent `f64`
//! reference interpreter, calibration and int8 conversion (a miniature exporter).

use ddm_core::sampler::SamplerKind;
use ddm_core::timesteps::Spacing;
use ddm_core::{Prediction, Rng, ScheduleConfig};
use ddm_firmware::quant::quantize_per_channel;
use ddm_firmware::writer::{Bias, MemoryPlan, ModelSpec, NodeSpec, OpSpec, ScheduleSpec, Weights};
use ddm_firmware::{Precision, QuantParams, SamplerConfig};

/// Uniform values in `[-bound, bound)`.
pub fn uniform(rng: &mut Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (2.0 * rng.uniform() - 1.0) * bound)
        .collect()
}

/// A small graph builder over the writer's `OpSpec`s, with random weights.
pub struct Builder {
    pub nodes: Vec<NodeSpec>,
    shapes: Vec<Vec<usize>>,
    rng: Rng,
}

impl Builder {
    pub fn new(input: &[usize], seed: u64) -> Self {
        Builder {
            nodes: vec![NodeSpec::new(OpSpec::Input {
                shape: input.to_vec(),
            })],
            shapes: vec![input.to_vec()],
            rng: Rng::new(seed),
        }
    }

    fn push(&mut self, op: OpSpec, shape: Vec<usize>) -> usize {
        self.nodes.push(NodeSpec::new(op));
        self.shapes.push(shape);
        self.nodes.len() - 1
    }

    pub fn shape(&self, id: usize) -> &[usize] {
        &self.shapes[id]
    }

    pub fn time_embedding(&mut self, dim: usize) -> usize {
        self.push(
            OpSpec::TimeEmbedding {
                dim,
                max_period: 10_000.0,
            },
            vec![dim],
        )
    }

    /// A class embedding of `classes` classes (`classes + 1` random rows of length `dim`).
    pub fn class_embedding(&mut self, classes: usize, dim: usize) -> usize {
        let table = uniform(&mut self.rng, (classes + 1) * dim, 1.5);
        self.push(OpSpec::ClassEmbedding { classes, table }, vec![dim])
    }

    pub fn linear(&mut self, input: usize, out: usize) -> usize {
        let n_in: usize = self.shapes[input].iter().product();
        let bound = 1.0 / (n_in as f32).sqrt();
        let weight = uniform(&mut self.rng, out * n_in, bound);
        let bias = uniform(&mut self.rng, out, bound);
        self.push(
            OpSpec::Linear {
                input,
                out_features: out,
                weight: Weights::F32(weight),
                bias: Some(Bias::F32(bias)),
            },
            vec![out],
        )
    }

    pub fn conv(&mut self, input: usize, out: usize, k: usize, stride: usize, pad: usize) -> usize {
        let s = self.shapes[input].clone();
        let fan_in = s[0] * k * k;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let weight = uniform(&mut self.rng, out * fan_in, bound);
        let bias = uniform(&mut self.rng, out, bound);
        let size = |n: usize| (n + 2 * pad - k) / stride + 1;
        self.push(
            OpSpec::Conv2d {
                input,
                out_channels: out,
                kernel: k,
                stride,
                padding: pad,
                weight: Weights::F32(weight),
                bias: Some(Bias::F32(bias)),
            },
            vec![out, size(s[1]), size(s[2])],
        )
    }

    pub fn group_norm(&mut self, input: usize, groups: usize) -> usize {
        let c = self.shapes[input][0];
        let gamma = uniform(&mut self.rng, c, 0.3)
            .iter()
            .map(|v| 1.0 + v)
            .collect();
        let beta = uniform(&mut self.rng, c, 0.2);
        let shape = self.shapes[input].clone();
        self.push(
            OpSpec::GroupNorm {
                input,
                groups,
                eps: 1e-5,
                gamma,
                beta,
            },
            shape,
        )
    }

    pub fn silu(&mut self, input: usize) -> usize {
        let shape = self.shapes[input].clone();
        self.push(OpSpec::Silu { input }, shape)
    }

    pub fn add(&mut self, lhs: usize, rhs: usize) -> usize {
        let shape = self.shapes[lhs].clone();
        self.push(OpSpec::Add { lhs, rhs }, shape)
    }

    pub fn concat(&mut self, inputs: &[usize]) -> usize {
        let mut shape = self.shapes[inputs[0]].clone();
        shape[0] = inputs.iter().map(|&i| self.shapes[i][0]).sum();
        self.push(
            OpSpec::Concat {
                inputs: inputs.to_vec(),
            },
            shape,
        )
    }

    pub fn upsample(&mut self, input: usize) -> usize {
        let s = self.shapes[input].clone();
        self.push(OpSpec::Upsample2x { input }, vec![s[0], 2 * s[1], 2 * s[2]])
    }

    pub fn reshape(&mut self, input: usize, shape: &[usize]) -> usize {
        self.push(
            OpSpec::Reshape {
                input,
                shape: shape.to_vec(),
            },
            shape.to_vec(),
        )
    }

    pub fn finish(self, output: usize, train_steps: usize, sampler: SamplerConfig) -> ModelSpec {
        ModelSpec {
            precision: Precision::F32,
            nodes: self.nodes,
            output,
            schedule: ScheduleSpec::from_config(
                ScheduleConfig {
                    train_steps,
                    ..ScheduleConfig::ddpm()
                },
                Prediction::Eps,
            ),
            sampler,
            plan: None,
            time_groups: vec![],
        }
    }
}

/// An MLP-like denoiser of 2-D points: every op that works on vectors.
pub fn mlp(train_steps: usize) -> ModelSpec {
    let mut b = Builder::new(&[2], 1);
    let t = b.time_embedding(16);
    let h = b.linear(0, 32);
    let tp = b.linear(t, 32);
    let h = b.add(h, tp);
    let h = b.silu(h);
    let h = b.group_norm(h, 4);
    let h = b.linear(h, 32);
    let h = b.silu(h);
    let h = b.concat(&[h, 0]);
    let out = b.linear(h, 2);
    b.finish(
        out,
        train_steps,
        SamplerConfig::with_spacing(SamplerKind::Ddim, 10, Spacing::Leading),
    )
}

/// A class-conditional MLP on 2-D points with `classes` classes: the class embedding is
/// added to the time embedding's projection, as in the host's models.
pub fn conditional_mlp(train_steps: usize, classes: usize) -> ModelSpec {
    let mut b = Builder::new(&[2], 3);
    let t = b.time_embedding(16);
    let tp = b.linear(t, 32);
    let c = b.class_embedding(classes, 32);
    let tc = b.add(tp, c);
    let tc = b.silu(tc);
    let h = b.linear(0, 32);
    let h = b.add(h, tc);
    let h = b.silu(h);
    let h = b.linear(h, 32);
    let h = b.silu(h);
    let out = b.linear(h, 2);
    b.finish(
        out,
        train_steps,
        SamplerConfig::with_spacing(SamplerKind::Ddim, 6, Spacing::Trailing),
    )
}

/// The int8 conditional MLP with three time groups (T = 1000, boundaries 100, 600), each
/// calibrated on inputs of its own timesteps and every class; the class embedding takes its
/// table's range in every group (the exporter's rule).
pub fn int8_conditional_mlp_grouped(classes: usize) -> ModelSpec {
    let float = conditional_mlp(1000, classes);
    let samples = growing_inputs(&float, 48, 9);
    let mut q = quantize_model_grouped(&float, &samples, &[100, 600]);
    for node in &mut q.nodes {
        if let OpSpec::ClassEmbedding { table, .. } = &node.op {
            let low = table.iter().copied().fold(0.0f32, f32::min);
            let high = table.iter().copied().fold(0.0f32, f32::max);
            node.quant = vec![QuantParams::from_range(low, high).unwrap()];
        }
    }
    q
}

/// A tiny UNet on `[2, 6, 6]` with every op of the IR (strided and 1x1 convolutions,
/// broadcast and residual adds, group norms, upsampling, skip concatenation, reshapes).
pub fn tiny_unet(train_steps: usize) -> ModelSpec {
    let mut b = Builder::new(&[2, 6, 6], 2);
    let t = b.time_embedding(8);
    let t = b.linear(t, 8);
    let t = b.silu(t);
    let h = b.conv(0, 4, 3, 1, 1);
    let tp = b.linear(t, 4);
    let h = b.add(h, tp);
    let h = b.group_norm(h, 2);
    let h = b.silu(h);
    let d = b.conv(h, 8, 3, 2, 1);
    let d = b.group_norm(d, 4);
    let d = b.silu(d);
    let u = b.upsample(d);
    let c = b.concat(&[u, h]);
    let m = b.conv(c, 4, 1, 1, 0);
    let r = b.add(m, h);
    let flat = b.reshape(r, &[144]);
    let back = b.reshape(flat, &[4, 6, 6]);
    let v = b.conv(back, 4, 3, 1, 0);
    let v = b.upsample(v);
    let v = b.conv(v, 4, 3, 1, 0);
    let v = b.silu(v);
    let w = b.concat(&[v, v]);
    let w = b.conv(w, 4, 3, 1, 2);
    let out = b.conv(w, 2, 3, 1, 0);
    assert_eq!(b.shape(out), &[2, 6, 6]);
    b.finish(
        out,
        train_steps,
        SamplerConfig::with_spacing(SamplerKind::DpmSolverPp2m, 8, Spacing::LogSnr),
    )
}

/// A latent model's decoder network from the tiny UNet's `[2, 6, 6]` samples to `[3, 12, 12]`
/// images, with weights large enough that some outputs leave `[-1, 1]` (so the clamp is
/// exercised).
pub fn tiny_decoder(channels: usize) -> ModelSpec {
    let mut b = Builder::new(&[2, 6, 6], 11);
    let h = b.conv(0, channels, 3, 1, 1);
    let h = b.silu(h);
    let h = b.upsample(h);
    let h = b.conv(h, channels, 3, 1, 1);
    let h = b.group_norm(h, 2);
    let h = b.silu(h);
    let out = b.conv(h, 3, 3, 1, 1);
    assert_eq!(b.shape(out), &[3, 12, 12]);
    let mut spec = b.finish(out, 100, tiny_unet(100).sampler);
    if let OpSpec::Conv2d {
        weight: Weights::F32(w),
        ..
    } = &mut spec.nodes[out].op
    {
        w.iter_mut().for_each(|v| *v *= 4.0);
    }
    spec
}

/// [`tiny_decoder`] in int8, calibrated on a few inputs.
pub fn int8_decoder(channels: usize) -> ModelSpec {
    let float = tiny_decoder(channels);
    let samples = inputs(&float, 16, 5);
    quantize_model(&float, &samples)
}

/// The same model with fp16 weights.
pub fn with_precision(mut spec: ModelSpec, precision: Precision) -> ModelSpec {
    spec.precision = precision;
    spec
}

fn f64s_of(weights: &Weights) -> Vec<f64> {
    match weights {
        Weights::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Weights::F16(v) => v.iter().map(|x| f64::from(x.to_f32())).collect(),
        Weights::Int8 { .. } => panic!("the reference runs float models"),
    }
}

fn bias_of(bias: &Option<Bias>, n: usize) -> Vec<f64> {
    match bias {
        None => vec![0.0; n],
        Some(Bias::F32(v)) => v.iter().map(|&x| f64::from(x)).collect(),
        Some(Bias::F16(v)) => v.iter().map(|x| f64::from(x.to_f32())).collect(),
        Some(Bias::I32(_)) => panic!("the reference runs float models"),
    }
}

/// Rounds every float weight through f16 (what an fp16 blob stores).
pub fn round_weights_to_f16(spec: &ModelSpec) -> ModelSpec {
    let mut spec = spec.clone();
    let round = |v: &mut Vec<f32>| {
        for x in v.iter_mut() {
            *x = half::f16::from_f32(*x).to_f32();
        }
    };
    for node in &mut spec.nodes {
        if let OpSpec::Linear { weight, bias, .. } | OpSpec::Conv2d { weight, bias, .. } =
            &mut node.op
        {
            if let Weights::F32(w) = weight {
                round(w);
            }
            if let Some(Bias::F32(b)) = bias {
                round(b);
            }
        }
        if let OpSpec::ClassEmbedding { table, .. } = &mut node.op {
            round(table);
        }
    }
    spec
}

/// Evaluates a float model in `f64`, straight from the definitions. Returns every node's
/// output and the node shapes.
pub fn reference(spec: &ModelSpec, x: &[f32], t: u32) -> Vec<Vec<f64>> {
    reference_class(spec, x, t, None)
}

/// [`reference`] for class `class` of a class-conditional model (`None`: the "no class" row).
pub fn reference_class(spec: &ModelSpec, x: &[f32], t: u32, class: Option<u32>) -> Vec<Vec<f64>> {
    let shapes = ddm_firmware::writer::infer_shapes(spec).unwrap();
    let mut values: Vec<Vec<f64>> = Vec::new();
    for (index, node) in spec.nodes.iter().enumerate() {
        let shape = shapes[index];
        let value = match &node.op {
            OpSpec::Input { .. } => x.iter().map(|&v| f64::from(v)).collect(),
            OpSpec::ClassEmbedding { classes, table } => {
                let dim = table.len() / (classes + 1);
                let row = class.map_or(*classes, |c| c as usize);
                table[row * dim..(row + 1) * dim]
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect()
            }
            OpSpec::TimeEmbedding { dim, max_period } => {
                let half = dim / 2;
                let mut out = vec![0.0; *dim];
                for i in 0..half {
                    let f = (-(f64::from(*max_period)).ln() * i as f64 / half as f64).exp();
                    out[i] = (f64::from(t) * f).sin();
                    out[half + i] = (f64::from(t) * f).cos();
                }
                out
            }
            OpSpec::Linear {
                input,
                out_features,
                weight,
                bias,
            } => {
                let x = &values[*input];
                let w = f64s_of(weight);
                let b = bias_of(bias, *out_features);
                (0..*out_features)
                    .map(|o| {
                        b[o] + x
                            .iter()
                            .enumerate()
                            .map(|(i, &xv)| xv * w[o * x.len() + i])
                            .sum::<f64>()
                    })
                    .collect()
            }
            OpSpec::Conv2d {
                input,
                out_channels,
                kernel,
                stride,
                padding,
                weight,
                bias,
            } => {
                let x = &values[*input];
                let s = shapes[*input];
                let (c, h, w) = (s.channels(), s.height(), s.width());
                let (oh, ow) = (shape.height(), shape.width());
                let wt = f64s_of(weight);
                let b = bias_of(bias, *out_channels);
                let k = *kernel;
                let mut out = vec![0.0; out_channels * oh * ow];
                for oc in 0..*out_channels {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut acc = b[oc];
                            for ic in 0..c {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy = (oy * stride + ky) as isize - *padding as isize;
                                        let ix = (ox * stride + kx) as isize - *padding as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize
                                        {
                                            continue;
                                        }
                                        acc += x[ic * h * w + iy as usize * w + ix as usize]
                                            * wt[((oc * c + ic) * k + ky) * k + kx];
                                    }
                                }
                            }
                            out[(oc * oh + oy) * ow + ox] = acc;
                        }
                    }
                }
                out
            }
            OpSpec::GroupNorm {
                input,
                groups,
                eps,
                gamma,
                beta,
            } => {
                let x = &values[*input];
                let c = shape.channels();
                let hw = shape.spatial();
                let per = c / groups;
                let mut out = vec![0.0; x.len()];
                for g in 0..*groups {
                    let range = g * per * hw..(g + 1) * per * hw;
                    let n = range.len() as f64;
                    let mean = x[range.clone()].iter().sum::<f64>() / n;
                    let var = x[range.clone()]
                        .iter()
                        .map(|v| (v - mean) * (v - mean))
                        .sum::<f64>()
                        / n;
                    let rstd = 1.0 / (var + f64::from(*eps)).sqrt();
                    for i in range {
                        let ch = i / hw;
                        out[i] = (x[i] - mean) * rstd * f64::from(gamma[ch]) + f64::from(beta[ch]);
                    }
                }
                out
            }
            OpSpec::Silu { input } => values[*input]
                .iter()
                .map(|&v| v / (1.0 + (-v).exp()))
                .collect(),
            OpSpec::Add { lhs, rhs } => {
                let (a, b) = (&values[*lhs], &values[*rhs]);
                let spatial = a.len() / b.len();
                a.iter()
                    .enumerate()
                    .map(|(i, &v)| v + b[i / spatial])
                    .collect()
            }
            OpSpec::Concat { inputs } => inputs
                .iter()
                .flat_map(|&i| values[i].iter().copied())
                .collect(),
            OpSpec::Upsample2x { input } => {
                let s = shapes[*input];
                let (c, h, w) = (s.channels(), s.height(), s.width());
                let x = &values[*input];
                let mut out = vec![0.0; 4 * x.len()];
                for ch in 0..c {
                    for y in 0..2 * h {
                        for xx in 0..2 * w {
                            out[(ch * 2 * h + y) * 2 * w + xx] = x[(ch * h + y / 2) * w + xx / 2];
                        }
                    }
                }
                out
            }
            OpSpec::Reshape { input, .. } => values[*input].clone(),
        };
        assert_eq!(value.len(), shape.elements(), "node {index}");
        values.push(value);
    }
    values
}

/// Random network inputs and timesteps for calibration and comparisons.
pub fn inputs(spec: &ModelSpec, count: usize, seed: u64) -> Vec<(Vec<f32>, u32)> {
    let len = ddm_firmware::writer::infer_shapes(spec).unwrap()[0].elements();
    let steps = spec.schedule.schedule.train_steps;
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let mut x = vec![0.0f32; len];
            rng.fill_normal(&mut x);
            (x, rng.below(steps))
        })
        .collect()
}

/// Network inputs whose magnitude grows with the timestep (`x` scaled by `0.5 + 2 t / T`), as
/// a diffusion network's do: each time group calibrates to different ranges.
pub fn growing_inputs(spec: &ModelSpec, count: usize, seed: u64) -> Vec<(Vec<f32>, u32)> {
    let steps = spec.schedule.schedule.train_steps as f32;
    inputs(spec, count, seed)
        .into_iter()
        .map(|(x, t)| {
            let gain = 0.5 + 2.0 * t as f32 / steps;
            (x.iter().map(|v| v * gain).collect(), t)
        })
        .collect()
}

/// Per-node quantisation parameters from the reference's ranges over `samples`.
pub fn calibrate(spec: &ModelSpec, samples: &[(Vec<f32>, u32)]) -> Vec<QuantParams> {
    let mut ranges = vec![(0.0f64, 0.0f64); spec.nodes.len()];
    for (x, t) in samples {
        for (range, values) in ranges.iter_mut().zip(reference(spec, x, *t)) {
            for v in values {
                range.0 = range.0.min(v);
                range.1 = range.1.max(v);
            }
        }
    }
    ranges
        .iter()
        .map(|&(lo, hi)| QuantParams::from_range(lo as f32, hi as f32).unwrap())
        .collect()
}

/// The int8 version of a float model: calibrated activations, per-channel weights, f32
/// biases quantised by the writer. `Upsample2x` and `Reshape` inherit their input's params.
pub fn quantize_model(spec: &ModelSpec, samples: &[(Vec<f32>, u32)]) -> ModelSpec {
    let params = calibrate(spec, samples);
    let mut q = spec.clone();
    q.precision = Precision::Int8;
    for (node, p) in q.nodes.iter_mut().zip(&params) {
        node.quant = match node.op {
            OpSpec::Upsample2x { .. } | OpSpec::Reshape { .. } => vec![],
            _ => vec![*p],
        };
        if let OpSpec::Linear {
            weight,
            out_features: out,
            ..
        }
        | OpSpec::Conv2d {
            weight,
            out_channels: out,
            ..
        } = &mut node.op
        {
            let Weights::F32(w) = weight else {
                unreachable!()
            };
            let mut values = vec![0i8; w.len()];
            let mut scales = vec![0.0f32; *out];
            quantize_per_channel(w, *out, &mut values, &mut scales).unwrap();
            *weight = Weights::Int8 { values, scales };
        }
    }
    q
}

/// The int8 version of a float model with time groups split at `boundaries`: each group's
/// activation parameters calibrated on the samples whose timestep falls in it.
pub fn quantize_model_grouped(
    spec: &ModelSpec,
    samples: &[(Vec<f32>, u32)],
    boundaries: &[u32],
) -> ModelSpec {
    let mut q = quantize_model(spec, samples);
    q.time_groups = boundaries.to_vec();
    let groups = boundaries.len() + 1;
    let per_group: Vec<Vec<QuantParams>> = (0..groups)
        .map(|g| {
            let mine: Vec<(Vec<f32>, u32)> = samples
                .iter()
                .filter(|(_, t)| {
                    ddm_firmware::format::time_group(boundaries.iter().copied(), *t) == g
                })
                .cloned()
                .collect();
            assert!(!mine.is_empty(), "group {g} has no calibration sample");
            calibrate(spec, &mine)
        })
        .collect();
    for (i, node) in q.nodes.iter_mut().enumerate() {
        if !node.quant.is_empty() {
            node.quant = per_group.iter().map(|p| p[i]).collect();
        }
    }
    q
}

/// The int8 tiny UNet with four time groups (T = 1000, boundaries 250, 500, 750), each
/// calibrated on inputs of its own timesteps.
pub fn int8_unet_grouped() -> ModelSpec {
    let float = tiny_unet(1000);
    let samples = growing_inputs(&float, 48, 7);
    quantize_model_grouped(&float, &samples, &[250, 500, 750])
}

/// The int8 MLP with three time groups (T = 1000, boundaries 100, 600).
pub fn int8_mlp_grouped() -> ModelSpec {
    let float = mlp(1000);
    let samples = growing_inputs(&float, 48, 8);
    quantize_model_grouped(&float, &samples, &[100, 600])
}

/// The int8 tiny UNet, calibrated on a few inputs.
pub fn int8_unet(train_steps: usize) -> ModelSpec {
    let float = tiny_unet(train_steps);
    let samples = inputs(&float, 16, 7);
    quantize_model(&float, &samples)
}

/// The int8 MLP.
pub fn int8_mlp(train_steps: usize) -> ModelSpec {
    let float = mlp(train_steps);
    let samples = inputs(&float, 32, 8);
    quantize_model(&float, &samples)
}

/// A plan that gives every node its own region (reshapes alias): no reuse at all.
pub fn naive_plan(spec: &ModelSpec) -> MemoryPlan {
    let shapes = ddm_firmware::writer::infer_shapes(spec).unwrap();
    let bytes = spec.precision.activation_bytes();
    let mut offsets = vec![0usize; spec.nodes.len()];
    let mut end = 0;
    for (i, node) in spec.nodes.iter().enumerate() {
        if let OpSpec::Reshape { input, .. } = node.op {
            offsets[i] = offsets[input];
            continue;
        }
        offsets[i] = end;
        end += (shapes[i].elements() * bytes).div_ceil(4) * 4;
    }
    MemoryPlan {
        arena_bytes: end,
        offsets,
    }
}
