//! int8 networks against an independent integer interpreter of the same blob, bit for bit.
//!
//! The interpreter below reads a parsed blob's integers (int8 weights, folded i32 biases,
//! `(multiplier, shift)` pairs, tables, zero points) and computes each node with the integer
//! definitions written out here: exact `i64` accumulation, gemmlowp's rounding doubling high
//! multiply and a rounding division by a power of two with ties away from zero, as TFLite
//! defines them, rounding of activations half away from zero. None of the runtime's kernels,
//! fixed-point helpers or SIMD paths is called; only the float definitions of the time
//! embedding (sines and cosines, taken from the float kernel) and of GroupNorm's statistics
//! (the documented f32 formula, written out again) are shared. A rounding change, a zero
//! point dropped or a shift off by one anywhere in the runtime's integer arithmetic makes the
//! two disagree, where `int8_networks_track_the_float_model` only bounds the error.

use ddm_firmware::kernels::time_embedding::time_embedding_f32;
use ddm_firmware::writer::write_blob;
use ddm_firmware::{network_arena_bytes, Blob, Network, NodeOutput, Op, QuantParams};

use crate::common::*;

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: `round(a b / 2^31)`, ties up.
fn high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let product = i64::from(a) * i64::from(b);
    let nudge = if product >= 0 {
        1i64 << 30
    } else {
        1 - (1i64 << 30)
    };
    ((product + nudge) / (1i64 << 31)) as i32
}

/// `round(x / 2^exponent)` with ties away from zero.
fn divide_by_power_of_two(x: i32, exponent: i32) -> i32 {
    if exponent == 0 {
        return x;
    }
    let d = 1i64 << exponent;
    let (magnitude, remainder) = (i64::from(x).abs() / d, i64::from(x).abs() % d);
    let rounded = magnitude + i64::from(2 * remainder >= d);
    (if x < 0 { -rounded } else { rounded }) as i32
}

/// `x multiplier 2^(shift - 31)`, TFLite's `MultiplyByQuantizedMultiplier`.
fn scale(x: i32, multiplier: i32, shift: i32) -> i32 {
    let shifted = (i64::from(x) << shift.max(0)).clamp(i64::from(i32::MIN), i64::from(i32::MAX));
    divide_by_power_of_two(high_mul(shifted as i32, multiplier), (-shift).max(0))
}

fn clamp_i8(v: i64) -> i8 {
    v.clamp(-128, 127) as i8
}

/// `clamp(round(v) + zero_point)`, ties away from zero.
fn quantize(v: f32, p: QuantParams) -> i8 {
    let r = v.round();
    if r.is_nan() {
        return clamp_i8(i64::from(p.zero_point));
    }
    clamp_i8((r as i64).saturating_add(i64::from(p.zero_point)))
}

fn word(blob: &Blob<'_>, tensor: u32, i: usize) -> i32 {
    blob.tensor(tensor).unwrap().word(i).unwrap() as i32
}

fn i8s(blob: &Blob<'_>, tensor: u32) -> Vec<i8> {
    blob.tensor(tensor)
        .unwrap()
        .bytes()
        .iter()
        .map(|&b| b as i8)
        .collect()
}

fn f32_at(blob: &Blob<'_>, tensor: u32, i: usize) -> f32 {
    f32::from_bits(word(blob, tensor, i) as u32)
}

/// `(multiplier, shift)` number `i` of a requantisation tensor.
fn requant(blob: &Blob<'_>, tensor: u32, i: usize) -> (i32, i32) {
    (word(blob, tensor, 2 * i), word(blob, tensor, 2 * i + 1))
}

/// Every node's int8 output for input `x` at timestep `t` (channel-major).
fn interpret(blob: &Blob<'_>, x: &[f32], t: u32, class: Option<u32>) -> Vec<Vec<i8>> {
    let mut values: Vec<Vec<i8>> = Vec::new();
    // The activation parameters of `t`'s time group: counted from the boundaries here.
    let boundaries: Vec<u32> = (0..blob.time_groups() - 1)
        .map(|k| blob.time_group_boundary(k).unwrap())
        .collect();
    let group = boundaries.iter().filter(|&&b| b <= t).count();
    for index in 0..blob.node_count() {
        let node = blob.node_in(index, group).unwrap();
        let (c, h, w) = (
            node.shape.channels(),
            node.shape.height(),
            node.shape.width(),
        );
        let out_params = blob.quant(index, group).unwrap();
        let params = |i: usize| blob.quant(i, group).unwrap();
        let value: Vec<i8> = match node.op {
            Op::Input => x
                .iter()
                .map(|&v| quantize(v / out_params.scale, out_params))
                .collect(),
            Op::ClassEmbedding { classes, table } => {
                // The stored rows are already quantised with the node's parameters.
                let row = class.map_or(classes, |k| k as usize);
                i8s(blob, table)[row * c..(row + 1) * c].to_vec()
            }
            Op::TimeEmbedding { max_period } => {
                let mut floats = vec![0.0f32; c];
                time_embedding_f32(t, max_period, &mut floats).unwrap();
                floats
                    .iter()
                    .map(|&v| quantize(v / out_params.scale, out_params))
                    .collect()
            }
            Op::Linear {
                input,
                weight,
                bias,
                requant: pairs,
            } => {
                let (xs, ws) = (&values[input], i8s(blob, weight));
                let n_in = xs.len();
                (0..c)
                    .map(|o| {
                        let dot: i64 = (0..n_in)
                            .map(|i| i64::from(xs[i]) * i64::from(ws[o * n_in + i]))
                            .sum();
                        let acc = dot + i64::from(word(blob, bias.unwrap(), o));
                        let acc = i32::try_from(acc).expect("the format bounds accumulators");
                        let (m, s) = requant(blob, pairs.unwrap(), o);
                        clamp_i8(i64::from(scale(acc, m, s)) + i64::from(out_params.zero_point))
                    })
                    .collect()
            }
            Op::Conv2d {
                input,
                weight,
                bias,
                requant: pairs,
                kernel,
                stride,
                padding,
            } => {
                let source = blob.node(input).unwrap();
                let (ci, hi, wi) = (
                    source.shape.channels(),
                    source.shape.height(),
                    source.shape.width(),
                );
                let zero = params(input).zero_point as i8;
                let xs = &values[input];
                // Padding holds the input's zero point: real zero, which the folded bias
                // (bias - zero_point sum w) expects at every tap.
                let at = |ch: usize, y: isize, x: isize| -> i64 {
                    if y < 0 || x < 0 || y >= hi as isize || x >= wi as isize {
                        i64::from(zero)
                    } else {
                        i64::from(xs[(ch * hi + y as usize) * wi + x as usize])
                    }
                };
                let ws = i8s(blob, weight);
                let mut out = Vec::with_capacity(c * h * w);
                for o in 0..c {
                    let (m, s) = requant(blob, pairs.unwrap(), o);
                    let b = i64::from(word(blob, bias.unwrap(), o));
                    for oy in 0..h {
                        for ox in 0..w {
                            let mut acc = b;
                            for ch in 0..ci {
                                for ky in 0..kernel {
                                    for kx in 0..kernel {
                                        let y = (oy * stride + ky) as isize - padding as isize;
                                        let x = (ox * stride + kx) as isize - padding as isize;
                                        let wv = ws[((o * ci + ch) * kernel + ky) * kernel + kx];
                                        acc += at(ch, y, x) * i64::from(wv);
                                    }
                                }
                            }
                            let acc = i32::try_from(acc).expect("the format bounds accumulators");
                            out.push(clamp_i8(
                                i64::from(scale(acc, m, s)) + i64::from(out_params.zero_point),
                            ));
                        }
                    }
                }
                out
            }
            Op::GroupNorm {
                input,
                groups,
                eps,
                gamma,
                beta,
            } => {
                // The documented definition: integer moments, then per channel
                // q_out = round(k q + b) with k = gamma rstd s_x / s_out and
                // b = beta / s_out - k mean, rstd = 1 / sqrt(var s_x^2 + eps), in f32.
                let xs = &values[input];
                let s_x = params(input).scale;
                let spatial = h * w;
                let per_group = c / groups;
                let group_len = per_group * spatial;
                let mut out = vec![0i8; xs.len()];
                for g in 0..groups {
                    let group = &xs[g * group_len..(g + 1) * group_len];
                    let sum: i64 = group.iter().map(|&q| i64::from(q)).sum();
                    let sum_sq: i64 = group.iter().map(|&q| i64::from(q) * i64::from(q)).sum();
                    let (n, nf) = (group_len as i64, group_len as f32);
                    let mean = sum as f32 / nf;
                    let var = (n * sum_sq - sum * sum) as f32 / (nf * nf);
                    let rstd = 1.0 / libm::sqrtf(var * (s_x * s_x) + eps);
                    for ch in 0..per_group {
                        let channel = g * per_group + ch;
                        let k = ((f32_at(blob, gamma, channel) * rstd) * s_x) / out_params.scale;
                        let b = f32_at(blob, beta, channel) / out_params.scale - k * mean;
                        for i in 0..spatial {
                            let at = channel * spatial + i;
                            out[at] = quantize(k * f32::from(xs[at]) + b, out_params);
                        }
                    }
                }
                out
            }
            Op::Silu { input, lut } => {
                let table = i8s(blob, lut.unwrap());
                values[input]
                    .iter()
                    .map(|&q| table[(i32::from(q) + 128) as usize])
                    .collect()
            }
            Op::Add { lhs, rhs } => {
                let add = blob.add_params(index, group).unwrap();
                let (zl, zr, zo) = (
                    params(lhs).zero_point,
                    params(rhs).zero_point,
                    out_params.zero_point,
                );
                let (a, b) = (&values[lhs], &values[rhs]);
                let spatial = a.len() / b.len().max(1);
                (0..a.len())
                    .map(|i| {
                        // `[C]` onto `[C, H, W]` broadcasts each channel over its pixels.
                        let j = if b.len() == a.len() { i } else { i / spatial };
                        let l = (i32::from(a[i]) - zl) << 20;
                        let r = (i32::from(b[j]) - zr) << 20;
                        let sum = scale(l, add.lhs.multiplier, add.lhs.shift).wrapping_add(scale(
                            r,
                            add.rhs.multiplier,
                            add.rhs.shift,
                        ));
                        clamp_i8(
                            i64::from(scale(sum, add.output.multiplier, add.output.shift))
                                + i64::from(zo),
                        )
                    })
                    .collect()
            }
            Op::Concat {
                first,
                count,
                requant: pairs,
            } => {
                let mut out = Vec::new();
                for k in 0..count {
                    let input = blob.list_entry(first + k).unwrap();
                    let p = params(input);
                    let (m, s) = requant(blob, pairs.unwrap(), k);
                    for &q in &values[input] {
                        out.push(if p.same_as(&out_params) {
                            q
                        } else {
                            let v = scale((i32::from(q) - p.zero_point) << 20, m, s);
                            clamp_i8(i64::from(v) + i64::from(out_params.zero_point))
                        });
                    }
                }
                out
            }
            Op::Upsample2x { input } => {
                let xs = &values[input];
                let (hi, wi) = (h / 2, w / 2);
                let mut out = Vec::with_capacity(c * h * w);
                for ch in 0..c {
                    for y in 0..h {
                        for x in 0..w {
                            out.push(xs[(ch * hi + y / 2) * wi + x / 2]);
                        }
                    }
                }
                out
            }
            Op::Reshape { input } => values[input].clone(),
        };
        assert_eq!(value.len(), node.shape.elements(), "node {index}");
        values.push(value);
    }
    values
}

#[test]
fn int8_networks_equal_the_integer_definition_bit_for_bit() {
    let specs = [
        int8_mlp(1000),
        int8_unet(1000),
        int8_mlp_grouped(),
        int8_unet_grouped(),
    ];
    for mut spec in specs {
        // Every node keeps its own region, so every node's output is compared.
        spec.plan = Some(naive_plan(&spec));
        let bytes = write_blob(&spec).unwrap();
        let blob = Blob::parse(&bytes).unwrap();
        let mut arena = vec![0u8; network_arena_bytes(&blob).unwrap()];
        let mut network = Network::new(blob, &mut arena).unwrap();
        let mut compared = 0usize;
        for (x, t) in growing_inputs(&spec, 16, 5) {
            let mut out = vec![0.0f32; x.len()];
            network.run(&x, t, &mut out).unwrap();
            let expected = interpret(&blob, &x, t, None);
            for (index, expected) in expected.iter().enumerate() {
                let NodeOutput::Int8 { values, .. } = network.node_output(index).unwrap() else {
                    panic!("an int8 blob has int8 outputs");
                };
                let op = blob.node(index).unwrap().op;
                assert_eq!(
                    values,
                    expected.as_slice(),
                    "node {index} ({op:?}), t = {t}"
                );
                compared += values.len();
            }
        }
        assert!(compared > 0);
    }
}

#[test]
fn conditional_int8_networks_equal_the_integer_definition_for_every_class() {
    let mut spec = int8_conditional_mlp_grouped(3);
    spec.plan = Some(naive_plan(&spec));
    let bytes = write_blob(&spec).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    let mut arena = vec![0u8; network_arena_bytes(&blob).unwrap()];
    let mut network = Network::new(blob, &mut arena).unwrap();
    let mut outputs = Vec::new();
    for (x, t) in growing_inputs(&spec, 12, 6) {
        for class in [Some(0), Some(1), Some(2), None] {
            let mut out = vec![0.0f32; x.len()];
            network.run_class(&x, t, class, &mut out).unwrap();
            let expected = interpret(&blob, &x, t, class);
            for (index, expected) in expected.iter().enumerate() {
                let NodeOutput::Int8 { values, .. } = network.node_output(index).unwrap() else {
                    panic!("an int8 blob has int8 outputs");
                };
                assert_eq!(
                    values,
                    expected.as_slice(),
                    "node {index}, t = {t}, class {class:?}"
                );
            }
            outputs.push(out);
        }
    }
    // The rows are not all quantised to the same values.
    assert!(outputs
        .chunks(4)
        .any(|o| o[0] != o[1] && o[1] != o[2] && o[2] != o[3]));
}

#[test]
fn the_reference_rounds_as_tflite_defines() {
    // Ties away from zero in the division, ties up in the high multiply.
    assert_eq!(divide_by_power_of_two(5, 1), 3);
    assert_eq!(divide_by_power_of_two(-5, 1), -3);
    assert_eq!(divide_by_power_of_two(-4, 1), -2);
    assert_eq!(divide_by_power_of_two(7, 2), 2);
    assert_eq!(high_mul(1 << 30, 1 << 30), 1 << 29);
    assert_eq!(high_mul(i32::MIN, i32::MIN), i32::MAX);
    assert_eq!(high_mul(3, 1 << 30), 2); // 1.5 rounds up
    assert_eq!(high_mul(-3, 1 << 30), -1); // -1.5 rounds up
    assert_eq!(scale(100, 1 << 30, 0), 50);
    assert_eq!(
        quantize(
            2.5,
            QuantParams {
                scale: 1.0,
                zero_point: 0
            }
        ),
        3
    );
    assert_eq!(
        quantize(
            -2.5,
            QuantParams {
                scale: 1.0,
                zero_point: 0
            }
        ),
        -3
    );
    assert_eq!(
        quantize(
            1e9,
            QuantParams {
                scale: 1.0,
                zero_point: 3
            }
        ),
        127
    );
}
