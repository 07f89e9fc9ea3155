//! Each int8 kernel against an `f64` reference on random data, and the float kernels whose
//! geometry the network tests do not cover (wide rows, strides).
//!
//! Bound: an int8 kernel's output may differ from the correctly rounded quantisation of the
//! exact real result by at most 1 LSB. For linear and convolution layers the accumulator is
//! exact, so the only errors are the Q31 multiplier's (relative 2^-31) and the double rounding
//! of SRDHM + RoundingDivideByPOT, which is at most 1 LSB; the f32 kernels (GroupNorm, time
//! embedding) are accurate to ~1e-6 relative, far below an LSB, so they too can only flip a
//! rounding. Almost all outputs must be exact.

use ddm_core::Rng;
use ddm_firmware::format::MAX_WEIGHT;
use ddm_firmware::kernels::add::{add_f32, add_s8, add_s8_on, TABLE_MIN_LEN};
use ddm_firmware::kernels::concat::{
    concat_part_s8, concat_requant, TABLE_MIN_LEN as CONCAT_TABLE_MIN_LEN,
};
use ddm_firmware::kernels::conv2d::{
    conv2d_f32, conv2d_s8, conv2d_s8_on, s8_scratch_words, ConvGeometry,
};
use ddm_firmware::kernels::group_norm::{
    group_norm_s8, group_norm_s8_on, GroupNormGeometry, TABLE_MIN_SPATIAL,
};
use ddm_firmware::kernels::linear::{linear_s8, linear_s8_on};
use ddm_firmware::kernels::silu::{silu_s8, silu_s8_on};
use ddm_firmware::kernels::time_embedding::{time_embedding_f32, time_embedding_s8};
use ddm_firmware::kernels::upsample::upsample2x;
use ddm_firmware::kernels::{f16_to_f32, F16Weights, F32Weights, WeightFormat};
use ddm_firmware::quant::{fold_input_zero_point, round_to_i8, AddZeroPoints};
use ddm_firmware::{silu_lut, AddParams, Path, QuantParams, Requant};

fn random_i8(rng: &mut Rng, n: usize) -> Vec<i8> {
    (0..n).map(|_| rng.next_u32() as u8 as i8).collect()
}

fn random_weights(rng: &mut Rng, n: usize) -> Vec<i8> {
    (0..n)
        .map(|_| (rng.below(255) as i32 - 127) as i8)
        .collect()
}

fn random_params(rng: &mut Rng) -> QuantParams {
    QuantParams {
        scale: 0.001 + 0.1 * rng.uniform(),
        zero_point: rng.below(256) as i32 - 128,
    }
}

/// Output parameters that cover `values` (so few outputs saturate).
fn params_for(values: &[f64]) -> QuantParams {
    let lo = values.iter().copied().fold(0.0f64, f64::min);
    let hi = values.iter().copied().fold(0.0f64, f64::max);
    QuantParams::from_range(lo as f32, hi as f32).unwrap()
}

fn quantize_ref(y: f64, p: QuantParams) -> i32 {
    ((y / f64::from(p.scale)).round() as i32 + p.zero_point).clamp(-128, 127)
}

fn deq(q: i8, p: QuantParams) -> f64 {
    f64::from(p.scale) * f64::from(i32::from(q) - p.zero_point)
}

fn le_i32(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_requant(values: &[Requant]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|r| [r.multiplier, r.shift])
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// Asserts every output is within 1 LSB of the reference and at least `exact_share` exact.
fn assert_close(got: &[i8], expected: &[i32], exact_share: f64, what: &str) {
    assert_eq!(got.len(), expected.len());
    let mut exact = 0;
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let diff = (i32::from(g) - e).abs();
        assert!(diff <= 1, "{what}: element {i}: {g} vs {e}");
        exact += usize::from(diff == 0);
    }
    let share = exact as f64 / got.len() as f64;
    assert!(
        share >= exact_share,
        "{what}: only {share} exact: {got:?} vs {expected:?}"
    );
}

/// Per-channel weights, scales and raw biases for an int8 layer with reference outputs.
struct Layer {
    weights: Vec<i8>,
    scales: Vec<f32>,
    bias: Vec<i32>,
}

fn layer(rng: &mut Rng, out: usize, fan_in: usize) -> Layer {
    Layer {
        weights: random_weights(rng, out * fan_in),
        scales: (0..out).map(|_| 0.001 + 0.02 * rng.uniform()).collect(),
        bias: (0..out)
            .map(|_| rng.below(20_001) as i32 - 10_000)
            .collect(),
    }
}

impl Layer {
    fn folded(&self, fan_in: usize, zx: i32) -> Vec<u8> {
        let folded: Vec<i32> = self
            .weights
            .chunks(fan_in)
            .zip(&self.bias)
            .map(|(row, &b)| fold_input_zero_point(b, zx, row).unwrap())
            .collect();
        le_i32(&folded)
    }

    fn requant(&self, input: QuantParams, output: QuantParams) -> Vec<u8> {
        let pairs: Vec<Requant> = self
            .scales
            .iter()
            .map(|&s| {
                Requant::from_real(f64::from(input.scale) * f64::from(s) / f64::from(output.scale))
                    .unwrap()
            })
            .collect();
        le_requant(&pairs)
    }
}

#[test]
fn int8_linear_matches_the_real_computation() {
    let mut rng = Rng::new(10);
    for &(n_in, n_out) in &[(1, 1), (7, 5), (64, 33), (300, 16), (1024, 3)] {
        for _ in 0..4 {
            let input = random_params(&mut rng);
            let x = random_i8(&mut rng, n_in);
            let l = layer(&mut rng, n_out, n_in);
            let real: Vec<f64> = (0..n_out)
                .map(|o| {
                    let s = f64::from(input.scale) * f64::from(l.scales[o]);
                    let dot: f64 = (0..n_in)
                        .map(|i| {
                            f64::from(i32::from(x[i]) - input.zero_point)
                                * f64::from(l.weights[o * n_in + i])
                        })
                        .sum();
                    s * (dot + f64::from(l.bias[o]))
                })
                .collect();
            let output = params_for(&real);
            let mut y = vec![0i8; n_out];
            linear_s8(
                &x,
                &l.weights,
                &l.folded(n_in, input.zero_point),
                &l.requant(input, output),
                output.zero_point,
                &mut y,
            )
            .unwrap();
            let expected: Vec<i32> = real.iter().map(|&r| quantize_ref(r, output)).collect();
            assert_close(&y, &expected, 0.9, "linear");
        }
    }
}

fn conv_reference(g: &ConvGeometry, x: &[f64], w: &[f64], bias: &[f64]) -> Vec<f64> {
    let (oh, ow) = g.output_size().unwrap();
    let (c, h, wd, k) = (g.in_channels, g.in_height, g.in_width, g.kernel);
    let mut out = vec![0.0; g.out_channels * oh * ow];
    for oc in 0..g.out_channels {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias[oc];
                for ic in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                            let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                acc += x[(ic * h + iy as usize) * wd + ix as usize]
                                    * w[((oc * c + ic) * k + ky) * k + kx];
                            }
                        }
                    }
                }
                out[(oc * oh + oy) * ow + ox] = acc;
            }
        }
    }
    out
}

fn geometries() -> Vec<ConvGeometry> {
    let g = |c, h, w, o, k, s, p| ConvGeometry {
        in_channels: c,
        in_height: h,
        in_width: w,
        out_channels: o,
        kernel: k,
        stride: s,
        padding: p,
    };
    vec![
        g(1, 1, 1, 1, 1, 1, 0),
        g(3, 5, 7, 4, 3, 1, 1),
        g(3, 5, 7, 4, 3, 2, 1),
        g(2, 6, 6, 3, 3, 1, 0),
        g(4, 8, 8, 2, 1, 1, 0),
        g(4, 8, 8, 2, 1, 2, 0),
        g(2, 4, 70, 2, 3, 1, 1),
        g(2, 5, 133, 3, 3, 2, 1),
        g(2, 6, 6, 2, 5, 1, 2),
        g(1, 3, 3, 2, 3, 1, 2),
        g(2, 2, 2, 2, 3, 2, 1),
    ]
}

#[test]
fn int8_conv2d_matches_the_real_computation() {
    let mut rng = Rng::new(11);
    for g in geometries() {
        let (oh, ow) = g.output_size().unwrap();
        let fan_in = g.in_channels * g.kernel * g.kernel;
        for _ in 0..3 {
            let input = random_params(&mut rng);
            let x = random_i8(&mut rng, g.in_channels * g.in_height * g.in_width);
            let l = layer(&mut rng, g.out_channels, fan_in);
            let x_real: Vec<f64> = x.iter().map(|&q| deq(q, input)).collect();
            let w_real: Vec<f64> = l
                .weights
                .iter()
                .enumerate()
                .map(|(i, &w)| f64::from(w) * f64::from(l.scales[i / fan_in]))
                .collect();
            let b_real: Vec<f64> = l
                .bias
                .iter()
                .zip(&l.scales)
                .map(|(&b, &s)| f64::from(b) * f64::from(input.scale) * f64::from(s))
                .collect();
            let real = conv_reference(&g, &x_real, &w_real, &b_real);
            let output = params_for(&real);
            let mut y = vec![0i8; g.out_channels * oh * ow];
            conv2d_s8(
                &g,
                &x,
                input.zero_point,
                &l.weights,
                &l.folded(fan_in, input.zero_point),
                &l.requant(input, output),
                output.zero_point,
                &mut y,
                &mut vec![0u32; s8_scratch_words(fan_in).unwrap()],
            )
            .unwrap();
            let expected: Vec<i32> = real.iter().map(|&r| quantize_ref(r, output)).collect();
            assert_close(&y, &expected, 0.9, &format!("conv {g:?}"));
        }
    }
}

#[test]
fn float_conv2d_matches_the_reference_on_every_geometry() {
    let mut rng = Rng::new(12);
    for g in geometries() {
        let (oh, ow) = g.output_size().unwrap();
        let n_w = g.out_channels * g.in_channels * g.kernel * g.kernel;
        let x: Vec<f32> = (0..g.in_channels * g.in_height * g.in_width)
            .map(|_| rng.normal())
            .collect();
        let w: Vec<f32> = (0..n_w).map(|_| rng.normal() * 0.3).collect();
        let b: Vec<f32> = (0..g.out_channels).map(|_| rng.normal()).collect();
        let f64s = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let expected = conv_reference(&g, &f64s(&x), &f64s(&w), &f64s(&b));
        let mut y = vec![0.0f32; g.out_channels * oh * ow];
        conv2d_f32::<F32Weights>(&g, &x, &le_f32(&w), Some(&le_f32(&b)), &mut y).unwrap();
        for (got, want) in y.iter().zip(&expected) {
            assert!(
                (f64::from(*got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{g:?}"
            );
        }
    }
}

/// The documented float order: from 0, input channel, kernel row, kernel column (padded taps
/// skipped), bias last; every path (fused 3x3 or not, any chunk) must give exactly these bits.
#[test]
fn float_conv2d_accumulates_in_the_documented_order() {
    let mut rng = Rng::new(18);
    for g in geometries() {
        let (oh, ow) = g.output_size().unwrap();
        let k = g.kernel;
        let x: Vec<f32> = (0..g.in_channels * g.in_height * g.in_width)
            .map(|_| rng.normal())
            .collect();
        let w: Vec<f32> = (0..g.out_channels * g.in_channels * k * k)
            .map(|_| rng.normal())
            .collect();
        let b: Vec<f32> = (0..g.out_channels).map(|_| rng.normal()).collect();
        let mut y = vec![0.0f32; g.out_channels * oh * ow];
        conv2d_f32::<F32Weights>(&g, &x, &le_f32(&w), Some(&le_f32(&b)), &mut y).unwrap();
        for oc in 0..g.out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0f32;
                    for ic in 0..g.in_channels {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                                let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy as usize >= g.in_height
                                    || ix as usize >= g.in_width
                                {
                                    continue;
                                }
                                let xv =
                                    x[(ic * g.in_height + iy as usize) * g.in_width + ix as usize];
                                acc += xv * w[((oc * g.in_channels + ic) * k + ky) * k + kx];
                            }
                        }
                    }
                    let expected = acc + b[oc];
                    let got = y[(oc * oh + oy) * ow + ox];
                    assert_eq!(got.to_bits(), expected.to_bits(), "{g:?} at {oc},{oy},{ox}");
                }
            }
        }
    }
}

#[test]
fn kernels_refuse_inconsistent_lengths() {
    let g = geometries()[1];
    let mut y = vec![0i8; 3];
    let err = conv2d_s8(&g, &[0; 5], 0, &[0; 4], &[], &[], 0, &mut y, &mut []).unwrap_err();
    assert!(matches!(err, ddm_firmware::Error::LengthMismatch { .. }));
    assert!(linear_s8(&[0; 4], &[0; 7], &[0; 8], &[0; 16], 0, &mut [0; 2]).is_err());
    assert!(silu_s8(&[0; 255], None, &mut [0; 4]).is_err());
    assert!(add_f32(None, &[0.0; 3], &mut [0.0; 4]).is_err());
    assert!(upsample2x(1, 2, 2, &[0i8; 4], &mut [0i8; 15]).is_err());
    assert!(time_embedding_f32(0, 10.0, &mut [0.0; 3]).is_err());
    let bad = ConvGeometry { stride: 3, ..g };
    assert!(conv2d_f32::<F32Weights>(&bad, &[], &[], None, &mut []).is_err());
}

/// The documented per-element formula, evaluated in the same `f32` order, on channels below
/// and above the length from which the kernel tabulates them: the same bytes.
#[test]
fn int8_group_norm_equals_its_formula_with_and_without_tables() {
    let mut rng = Rng::new(17);
    let min = TABLE_MIN_SPATIAL;
    // Tabulated and evaluated channels, sizes around the vector width, and a huge gamma
    // (`k q + b` beyond every int8 and infinite) and a NaN one in the last case.
    let cases = [
        (4, min - 1, 2),
        (4, min, 2),
        (2, 2 * min + 3, 1),
        (3, 37, 3),
        (4, 8, 1),
    ];
    for (case, &(channels, spatial, groups)) in cases.iter().enumerate() {
        let input = random_params(&mut rng);
        let output = random_params(&mut rng);
        let mut x = random_i8(&mut rng, channels * spatial);
        for (i, v) in x.iter_mut().take(256).enumerate() {
            *v = i as u8 as i8;
        }
        let mut gamma: Vec<f32> = (0..channels).map(|_| 0.5 + rng.uniform()).collect();
        if case == cases.len() - 1 {
            gamma[..4].copy_from_slice(&[1e30, 1e36, -1e36, f32::NAN]);
        }
        let beta: Vec<f32> = (0..channels).map(|_| rng.normal() * 0.3).collect();
        let eps = 1e-5f32;
        let per = channels / groups * spatial;
        let mut expected = vec![0i8; x.len()];
        for g in 0..groups {
            let xs = &x[g * per..(g + 1) * per];
            let sum: i64 = xs.iter().map(|&q| i64::from(q)).sum();
            let sum_sq: i64 = xs.iter().map(|&q| i64::from(q) * i64::from(q)).sum();
            let (n, nf) = (per as i64, per as f32);
            let mean = sum as f32 / nf;
            let var = (n * sum_sq - sum * sum) as f32 / (nf * nf);
            let rstd = 1.0 / (var * (input.scale * input.scale) + eps).sqrt();
            for (i, &q) in xs.iter().enumerate() {
                let c = (g * per + i) / spatial;
                let k = ((gamma[c] * rstd) * input.scale) / output.scale;
                let b = beta[c] / output.scale - k * mean;
                expected[g * per + i] = round_to_i8(k * f32::from(q) + b, output.zero_point);
            }
        }
        let geometry = GroupNormGeometry {
            channels,
            spatial,
            groups,
        };
        let (g_bytes, b_bytes) = (le_f32(&gamma), le_f32(&beta));
        for path in Path::available() {
            let name = path.name();
            let mut y = vec![0i8; x.len()];
            group_norm_s8_on(
                path,
                &geometry,
                eps,
                &g_bytes,
                &b_bytes,
                input,
                output,
                Some(&x),
                &mut y,
            )
            .unwrap();
            assert_eq!(y, expected, "{name}: {channels} x {spatial}");
            let mut in_place = x.clone();
            group_norm_s8_on(
                path,
                &geometry,
                eps,
                &g_bytes,
                &b_bytes,
                input,
                output,
                None,
                &mut in_place,
            )
            .unwrap();
            assert_eq!(
                in_place, expected,
                "{name}: in place, {channels} x {spatial}"
            );
        }
        let mut in_place = x.clone();
        group_norm_s8(
            &geometry,
            eps,
            &g_bytes,
            &b_bytes,
            input,
            output,
            None,
            &mut in_place,
        )
        .unwrap();
        assert_eq!(in_place, expected, "default path, in place");
    }
}

#[test]
fn int8_group_norm_matches_the_real_computation() {
    let mut rng = Rng::new(13);
    for &(channels, spatial, groups) in &[(4, 36, 2), (8, 9, 4), (32, 1, 8), (6, 64, 3), (2, 1, 2)]
    {
        for _ in 0..4 {
            let input = random_params(&mut rng);
            let x = random_i8(&mut rng, channels * spatial);
            let gamma: Vec<f32> = (0..channels).map(|_| 0.5 + rng.uniform()).collect();
            let beta: Vec<f32> = (0..channels).map(|_| rng.normal() * 0.3).collect();
            let eps = 1e-5f32;
            let per = channels / groups * spatial;
            let mut real = vec![0.0f64; x.len()];
            for g in 0..groups {
                let xs: Vec<f64> = x[g * per..(g + 1) * per]
                    .iter()
                    .map(|&q| deq(q, input))
                    .collect();
                let mean = xs.iter().sum::<f64>() / per as f64;
                let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / per as f64;
                let rstd = 1.0 / (var + f64::from(eps)).sqrt();
                for (i, v) in xs.iter().enumerate() {
                    let c = (g * per + i) / spatial;
                    real[g * per + i] =
                        (v - mean) * rstd * f64::from(gamma[c]) + f64::from(beta[c]);
                }
            }
            let output = params_for(&real);
            let geometry = GroupNormGeometry {
                channels,
                spatial,
                groups,
            };
            let mut y = vec![0i8; x.len()];
            let (g_bytes, b_bytes) = (le_f32(&gamma), le_f32(&beta));
            group_norm_s8(
                &geometry,
                eps,
                &g_bytes,
                &b_bytes,
                input,
                output,
                Some(&x),
                &mut y,
            )
            .unwrap();
            let expected: Vec<i32> = real.iter().map(|&r| quantize_ref(r, output)).collect();
            assert_close(&y, &expected, 0.95, "group norm");
            let mut in_place = x.clone();
            group_norm_s8(
                &geometry,
                eps,
                &g_bytes,
                &b_bytes,
                input,
                output,
                None,
                &mut in_place,
            )
            .unwrap();
            assert_eq!(in_place, y, "in place");
        }
    }
}

#[test]
fn int8_silu_is_the_table_in_and_out_of_place() {
    let mut rng = Rng::new(14);
    let (input, output) = (random_params(&mut rng), random_params(&mut rng));
    let lut = silu_lut(input, output);
    let x: Vec<i8> = (-128..=127).collect();
    let mut y = vec![0i8; 256];
    silu_s8(&lut, Some(&x), &mut y).unwrap();
    for (&q, &out) in x.iter().zip(&y) {
        let real = deq(q, input);
        assert_eq!(
            i32::from(out),
            quantize_ref(real / (1.0 + (-real).exp()), output)
        );
    }
    let mut in_place = x.clone();
    silu_s8(&lut, None, &mut in_place).unwrap();
    assert_eq!(in_place, y);
    // Every path looks up every entry of a table of distinct bytes, on lengths around the
    // vector width, from a source and in place.
    let table: Vec<i8> = (0..=255u8).map(|i| i.wrapping_mul(37) as i8).collect();
    for len in [0, 15, 16, 17, 256, 300] {
        let x: Vec<i8> = (0..len).map(|i| (i * 73 % 256) as u8 as i8).collect();
        let expected: Vec<i8> = x
            .iter()
            .map(|&q| table[usize::from(q as u8 ^ 0x80)])
            .collect();
        for path in Path::available() {
            let mut y = vec![0i8; len];
            silu_s8_on(path, &table, Some(&x), &mut y).unwrap();
            assert_eq!(y, expected, "{}: {len}", path.name());
            let mut in_place = x.clone();
            silu_s8_on(path, &table, None, &mut in_place).unwrap();
            assert_eq!(in_place, expected, "{}: in place, {len}", path.name());
        }
    }
}

/// `add_s8` (the CPU's fastest path) and `add_s8_on` every path of this CPU, each in place
/// and not: all the same bytes, which are returned.
fn add_on_every_path(params: &AddParams, zps: AddZeroPoints, lhs: &[i8], rhs: &[i8]) -> Vec<i8> {
    let mut y = vec![0i8; lhs.len()];
    add_s8(params, zps, Some(lhs), rhs, &mut y).unwrap();
    for path in Path::available() {
        let mut out = vec![0i8; lhs.len()];
        add_s8_on(path, params, zps, Some(lhs), rhs, &mut out).unwrap();
        assert_eq!(out, y, "{}", path.name());
        let mut in_place = lhs.to_vec();
        add_s8_on(path, params, zps, None, rhs, &mut in_place).unwrap();
        assert_eq!(in_place, y, "{} in place", path.name());
    }
    y
}

/// Sums of about `2^18` (unit multipliers halving each step) with output zero points outside
/// int8: every path equals `AddParams::apply`, whose saturating addition no narrower
/// arithmetic may shortcut.
#[test]
fn int8_add_with_large_sums_and_wide_zero_points_equals_its_definition() {
    let half = Requant {
        multiplier: 1 << 30,
        shift: 0,
    };
    let params = AddParams {
        lhs: half,
        rhs: half,
        output: half,
    };
    let mut rng = Rng::new(17);
    for output in [-300_000, -70_000, 200, 70_000, 300_000] {
        let zps = AddZeroPoints {
            lhs: 3,
            rhs: -7,
            output,
        };
        let (lhs, rhs) = (random_i8(&mut rng, 37), random_i8(&mut rng, 37));
        let expected: Vec<i8> = (0..37).map(|i| params.apply(lhs[i], rhs[i], zps)).collect();
        assert!(expected.iter().any(|&v| v != 127) && expected.iter().any(|&v| v != -128));
        assert_eq!(
            add_on_every_path(&params, zps, &lhs, &rhs),
            expected,
            "{output}"
        );
    }
}

#[test]
fn int8_add_matches_the_real_sum() {
    let mut rng = Rng::new(15);
    for &(channels, spatial) in &[(16, 1), (4, 25), (3, 64)] {
        for broadcast in [false, true] {
            let (lq, rq) = (random_params(&mut rng), random_params(&mut rng));
            let n = channels * spatial;
            let lhs = random_i8(&mut rng, n);
            let rhs = random_i8(&mut rng, if broadcast { channels } else { n });
            let real: Vec<f64> = (0..n)
                .map(|i| {
                    let r = if broadcast { rhs[i / spatial] } else { rhs[i] };
                    deq(lhs[i], lq) + deq(r, rq)
                })
                .collect();
            let out = params_for(&real);
            let params = AddParams::new(lq, rq, out).unwrap();
            let zps = AddZeroPoints {
                lhs: lq.zero_point,
                rhs: rq.zero_point,
                output: out.zero_point,
            };
            let y = add_on_every_path(&params, zps, &lhs, &rhs);
            let expected: Vec<i32> = real.iter().map(|&r| quantize_ref(r, out)).collect();
            assert_close(&y, &expected, 0.9, "add");
        }
    }
}

/// Element by element as `AddParams::apply` defines, around the length from which the kernel
/// tabulates each operand's term (`TABLE_MIN_LEN`), broadcast or not, in place or not.
#[test]
fn int8_add_equals_its_element_definition_with_and_without_tables() {
    let mut rng = Rng::new(16);
    let min = TABLE_MIN_LEN;
    for &(channels, spatial) in &[(1, min - 1), (1, min), (min + 5, 1), (8, min / 8), (3, 700)] {
        for broadcast in [false, true] {
            let (lq, rq, oq) = (
                random_params(&mut rng),
                random_params(&mut rng),
                random_params(&mut rng),
            );
            let n = channels * spatial;
            // Every int8 value in each operand.
            let mut lhs = random_i8(&mut rng, n);
            for (i, v) in lhs.iter_mut().take(256).enumerate() {
                *v = i as u8 as i8;
            }
            let rhs = random_i8(&mut rng, if broadcast { channels } else { n });
            let params = AddParams::new(lq, rq, oq).unwrap();
            let zps = AddZeroPoints {
                lhs: lq.zero_point,
                rhs: rq.zero_point,
                output: oq.zero_point,
            };
            let expected: Vec<i8> = (0..n)
                .map(|i| {
                    let r = if broadcast { rhs[i / spatial] } else { rhs[i] };
                    params.apply(lhs[i], r, zps)
                })
                .collect();
            let y = add_on_every_path(&params, zps, &lhs, &rhs);
            assert_eq!(y, expected, "{channels} x {spatial}, broadcast {broadcast}");
        }
    }
}

/// Around `TABLE_MIN_LEN`, the tabulated rescaling is the element-by-element definition, for
/// every int8 value.
#[test]
fn int8_concat_equals_its_element_definition_with_and_without_the_table() {
    let mut rng = Rng::new(18);
    for len in [CONCAT_TABLE_MIN_LEN - 1, CONCAT_TABLE_MIN_LEN, 700] {
        for _ in 0..4 {
            let (input, output) = (random_params(&mut rng), random_params(&mut rng));
            let mut x = random_i8(&mut rng, len);
            for (i, v) in x.iter_mut().take(256).enumerate() {
                *v = i as u8 as i8;
            }
            let requant = concat_requant(input.scale, output.scale).unwrap();
            let expected: Vec<i8> = x
                .iter()
                .map(|&q| {
                    let v = requant.apply((i32::from(q) - input.zero_point) << 20);
                    v.saturating_add(output.zero_point).clamp(-128, 127) as i8
                })
                .collect();
            let mut y = vec![0i8; len];
            concat_part_s8(&x, input, output, requant, &mut y).unwrap();
            assert_eq!(y, expected, "{len}");
        }
    }
}

#[test]
fn int8_concat_requantises_within_one_lsb_and_copies_when_equal() {
    let mut rng = Rng::new(16);
    for _ in 0..20 {
        let (input, output) = (random_params(&mut rng), random_params(&mut rng));
        let x = random_i8(&mut rng, 200);
        let requant = concat_requant(input.scale, output.scale).unwrap();
        let mut y = vec![0i8; 200];
        concat_part_s8(&x, input, output, requant, &mut y).unwrap();
        let expected: Vec<i32> = x
            .iter()
            .map(|&q| quantize_ref(deq(q, input), output))
            .collect();
        assert_close(&y, &expected, 0.99, "concat");
        let identity = concat_requant(1.0, 1.0).unwrap();
        concat_part_s8(&x, input, input, identity, &mut y).unwrap();
        assert_eq!(y, x);
    }
    // Same scale, other zero point: the Q31 multiplier 1.0 is exact.
    let a = QuantParams {
        scale: 0.1,
        zero_point: 10,
    };
    let b = QuantParams {
        scale: 0.1,
        zero_point: -20,
    };
    let x: Vec<i8> = (-128..=127).collect();
    let mut y = vec![0i8; 256];
    concat_part_s8(&x, a, b, concat_requant(0.1, 0.1).unwrap(), &mut y).unwrap();
    for (&q, &o) in x.iter().zip(&y) {
        assert_eq!(i32::from(o), (i32::from(q) - 30).clamp(-128, 127));
    }
}

#[test]
fn time_embedding_matches_the_f64_formula() {
    let mut rng = Rng::new(17);
    for &t in &[0u32, 1, 17, 500, 999] {
        for &dim in &[2usize, 8, 64] {
            let half = dim / 2;
            let real: Vec<f64> = (0..dim)
                .map(|i| {
                    let f = (-(10_000f64).ln() * (i % half) as f64 / half as f64).exp();
                    let a = f64::from(t) * f;
                    if i < half {
                        a.sin()
                    } else {
                        a.cos()
                    }
                })
                .collect();
            let mut y = vec![0.0f32; dim];
            time_embedding_f32(t, 10_000.0, &mut y).unwrap();
            for (got, want) in y.iter().zip(&real) {
                assert!((f64::from(*got) - want).abs() < 2e-4, "t {t} dim {dim}");
            }
            let output = QuantParams {
                scale: 2.0 / 255.0 * (0.9 + 0.2 * rng.uniform()),
                zero_point: rng.below(11) as i32 - 5,
            };
            let mut q = vec![0i8; dim];
            time_embedding_s8(t, 10_000.0, output, &mut q).unwrap();
            let expected: Vec<i32> = real.iter().map(|&r| quantize_ref(r, output)).collect();
            assert_close(&q, &expected, 0.8, "time embedding");
        }
    }
}

#[test]
fn upsample_repeats_each_value_twice_in_both_directions() {
    let (c, h, w) = (3, 4, 5);
    let x: Vec<i8> = (0..(c * h * w) as i32).map(|v| (v - 30) as i8).collect();
    let mut y = vec![0i8; 4 * x.len()];
    upsample2x(c, h, w, &x, &mut y).unwrap();
    for ch in 0..c {
        for yy in 0..2 * h {
            for xx in 0..2 * w {
                assert_eq!(
                    y[(ch * 2 * h + yy) * 2 * w + xx],
                    x[(ch * h + yy / 2) * w + xx / 2]
                );
            }
        }
    }
    let xf: Vec<f32> = x.iter().map(|&v| f32::from(v) * 0.5).collect();
    let mut yf = vec![0.0f32; 4 * xf.len()];
    upsample2x(c, h, w, &xf, &mut yf).unwrap();
    assert!(yf.iter().zip(&y).all(|(&f, &q)| f == f32::from(q) * 0.5));
}

/// The int8 convolution as the plain definition: `bias + sum x w` over every tap (padded taps
/// read `zx`) in `i32`, then the same requantisation. Any kernel must equal it exactly.
#[allow(clippy::too_many_arguments)]
fn conv_s8_reference(
    g: &ConvGeometry,
    x: &[i8],
    zx: i32,
    w: &[i8],
    bias: &[i32],
    requant: &[Requant],
    zy: i32,
) -> Vec<i8> {
    let (oh, ow) = g.output_size().unwrap();
    let (c, h, wd, k) = (g.in_channels, g.in_height, g.in_width, g.kernel);
    let mut out = vec![0i8; g.out_channels * oh * ow];
    for oc in 0..g.out_channels {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias[oc];
                for ic in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                            let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                            let inside =
                                iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd;
                            let v = if inside {
                                i32::from(x[(ic * h + iy as usize) * wd + ix as usize])
                            } else {
                                zx
                            };
                            acc += v * i32::from(w[((oc * c + ic) * k + ky) * k + kx]);
                        }
                    }
                }
                let q = requant[oc].apply(acc).saturating_add(zy).clamp(-128, 127);
                out[(oc * oh + oy) * ow + ox] = q as i8;
            }
        }
    }
    out
}

#[test]
fn int8_conv2d_equals_the_exact_integer_definition() {
    let mut rng = Rng::new(12);
    let g = |c, h, w, o, k, s, p| ConvGeometry {
        in_channels: c,
        in_height: h,
        in_width: w,
        out_channels: o,
        kernel: k,
        stride: s,
        padding: p,
    };
    // Fan-ins 1..=4 mod 4, feature maps of 1..=4 positions mod 4, kernels 1 to 5, strides 1
    // and 2, padding 0 to 2 (wider than the kernel's reach included), rows and columns
    // narrower than the kernel.
    let mut cases = geometries();
    cases.extend([
        g(1, 8, 8, 32, 3, 1, 1),
        g(32, 8, 8, 5, 3, 1, 1),
        g(32, 8, 8, 3, 3, 2, 1),
        g(64, 4, 4, 7, 1, 1, 0),
        g(5, 7, 9, 3, 1, 1, 0),
        g(3, 9, 5, 2, 1, 2, 1),
        g(2, 5, 5, 3, 2, 1, 0),
        g(3, 6, 7, 2, 4, 2, 1),
        g(2, 7, 3, 2, 5, 1, 2),
        g(7, 3, 11, 2, 3, 1, 1),
        g(6, 1, 9, 2, 3, 1, 1),
        g(6, 9, 1, 2, 3, 2, 1),
        g(1, 1, 1, 3, 3, 1, 1),
        g(3, 4, 4, 3, 3, 1, 1),
        g(3, 6, 4, 2, 3, 1, 1),
        g(2, 5, 12, 3, 3, 1, 1),
        g(2, 3, 8, 2, 3, 1, 1),
        // Rows of 28 and 14 (the 28x28 UNet's), at least 128 positions (the aarch64 paths'
        // whole-convolution kernels): tiles of 16, 12, 8 and 4 positions, one and two groups.
        g(3, 6, 28, 5, 3, 1, 1),
        g(5, 12, 14, 6, 3, 1, 1),
        g(4, 28, 28, 3, 3, 2, 1),
        // Three channel groups (the int8 matrix multiply takes them two by two: a last odd
        // group pairs with padding), at stride 1 and 2.
        g(9, 8, 16, 4, 3, 1, 1),
        g(10, 24, 24, 3, 3, 2, 1),
        // Stride 2 without padding: every row starts on an even column.
        g(6, 32, 32, 2, 3, 2, 0),
        // Rows of 8 to 15 pixels at stride 2 (the NEON copy's 8-pixel steps).
        g(5, 38, 14, 2, 3, 2, 1),
        g(3, 40, 9, 2, 3, 2, 0),
        // The portable copy on the aarch64 paths (rows under 8 pixels) at stride 1 and 2,
        // with two channel groups (side by side for the int8 matrix multiply).
        g(5, 64, 7, 2, 3, 2, 1),
        g(6, 24, 6, 2, 3, 1, 1),
    ]);
    for g in cases {
        let fan_in = g.in_channels * g.kernel * g.kernel;
        let (oh, ow) = g.output_size().unwrap();
        for trial in 0..5 {
            let x = random_i8(&mut rng, g.in_channels * g.in_height * g.in_width);
            // Full-range weights, -128 included.
            let w = random_i8(&mut rng, g.out_channels * fan_in);
            let bias: Vec<i32> = (0..g.out_channels)
                .map(|_| rng.below(2_000_001) as i32 - 1_000_000)
                .collect();
            let requant: Vec<Requant> = (0..g.out_channels)
                .map(|_| {
                    let scale = if rng.below(5) == 0 { 1.5 } else { 1e-4 };
                    Requant::from_real(scale + 0.02 * f64::from(rng.uniform())).unwrap()
                })
                .collect();
            // Output zero points outside int8 too (a kernel's caller may pass any): the
            // SIMD requantisation must hand those to the scalar one.
            let (zx, zy) = match trial {
                0 => (-128, 127),
                1 => (127, -128),
                2 => (
                    rng.below(256) as i32 - 128,
                    [300, -1000, i32::MIN][rng.below(3) as usize],
                ),
                _ => (rng.below(256) as i32 - 128, rng.below(256) as i32 - 128),
            };
            let expected = conv_s8_reference(&g, &x, zx, &w, &bias, &requant, zy);
            // Every path of this CPU (the default one and the portable one among them).
            for path in Path::available() {
                // Scratch of exactly the documented size, dirty from a previous use.
                let mut scratch = vec![0xA5A5_A5A5u32; s8_scratch_words(fan_in).unwrap()];
                let mut y = vec![0i8; g.out_channels * oh * ow];
                conv2d_s8_on(
                    path,
                    &g,
                    &x,
                    zx,
                    &w,
                    &le_i32(&bias),
                    &le_requant(&requant),
                    zy,
                    &mut y,
                    &mut scratch,
                )
                .unwrap();
                let name = path.name();
                assert_eq!(y, expected, "{name}: {g:?}, zx {zx}, zy {zy}");
            }
        }
    }
}

/// The SIMD paths keep each convolution's packed weights between calls (keyed by the weights'
/// address and checked against their bytes) and correct the bias on every call: weights
/// changed in place and a bias that changes between calls (as the time groups' do) must give
/// the definition's bytes on every call.
#[test]
fn int8_conv2d_follows_weights_and_bias_changed_between_calls() {
    let mut rng = Rng::new(21);
    let g = ConvGeometry {
        in_channels: 6,
        in_height: 9,
        in_width: 20,
        out_channels: 5,
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    let fan_in = g.in_channels * 9;
    let (oh, ow) = g.output_size().unwrap();
    let x = random_i8(&mut rng, g.in_channels * g.in_height * g.in_width);
    let mut w = random_i8(&mut rng, g.out_channels * fan_in);
    let requant: Vec<Requant> = (0..g.out_channels)
        .map(|_| Requant::from_real(1e-3 + 1e-3 * f64::from(rng.uniform())).unwrap())
        .collect();
    for call in 0..4 {
        if call == 2 {
            w[7] = w[7].wrapping_add(1);
        }
        let bias: Vec<i32> = (0..g.out_channels)
            .map(|_| rng.below(200_001) as i32 - 100_000)
            .collect();
        let expected = conv_s8_reference(&g, &x, 3, &w, &bias, &requant, -2);
        for path in Path::available() {
            let mut scratch = vec![0u32; s8_scratch_words(fan_in).unwrap()];
            let mut y = vec![0i8; g.out_channels * oh * ow];
            conv2d_s8_on(
                path,
                &g,
                &x,
                3,
                &w,
                &le_i32(&bias),
                &le_requant(&requant),
                -2,
                &mut y,
                &mut scratch,
            )
            .unwrap();
            assert_eq!(y, expected, "{}: call {call}", path.name());
        }
    }
}

/// The int8 linear layer as the plain definition (`bias + sum x w` in `i32`, then the same
/// requantisation) on every path of this CPU: fan-ins around the vector widths (16, the
/// 4-input groups, the one-by-one tail), output counts that leave 0 to 3 rows after the
/// groups of three or four, and multipliers below and above 1 (non-positive and positive
/// shifts) mixed in one group of rows.
#[test]
fn int8_linear_equals_the_exact_integer_definition_on_every_path() {
    let mut rng = Rng::new(13);
    for n_in in [
        1, 3, 4, 15, 16, 17, 31, 32, 36, 48, 64, 80, 100, 128, 208, 255, 256,
    ] {
        for n_out in [1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 21] {
            // Rows with a multiplier above 1 (a positive shift) have zero weights and a small
            // bias, so that their outputs do not saturate.
            let amplifies: Vec<bool> = (0..n_out).map(|_| rng.below(5) == 0).collect();
            let x = random_i8(&mut rng, n_in);
            let mut w = random_weights(&mut rng, n_out * n_in);
            let bias: Vec<i32> = amplifies
                .iter()
                .map(|&big| match big {
                    true => rng.below(161) as i32 - 80,
                    false => rng.below(2_000_001) as i32 - 1_000_000,
                })
                .collect();
            let requant: Vec<Requant> = amplifies
                .iter()
                .map(|&big| {
                    let scale = if big { 1.2 } else { 1e-4 };
                    Requant::from_real(scale + 0.02 * f64::from(rng.uniform())).unwrap()
                })
                .collect();
            for (row, _) in w.chunks_exact_mut(n_in).zip(&amplifies).filter(|(_, &b)| b) {
                row.fill(0);
            }
            let zy = rng.below(256) as i32 - 128;
            let expected: Vec<i8> = (0..n_out)
                .map(|o| {
                    let row = &w[o * n_in..(o + 1) * n_in];
                    let dot: i32 = x
                        .iter()
                        .zip(row)
                        .map(|(&a, &b)| i32::from(a) * i32::from(b))
                        .sum();
                    let q = requant[o].apply(bias[o] + dot).saturating_add(zy);
                    q.clamp(-128, 127) as i8
                })
                .collect();
            for path in Path::available() {
                let mut y = vec![0i8; n_out];
                linear_s8_on(
                    path,
                    &x,
                    &w,
                    &le_i32(&bias),
                    &le_requant(&requant),
                    zy,
                    &mut y,
                )
                .unwrap();
                assert_eq!(y, expected, "{}: {n_in} -> {n_out}", path.name());
            }
        }
    }
}

/// The largest sums the int8 linear layer meets: inputs at -128 and 127 against weights at
/// -127 and 127 (the symmetric range), in every sign pattern, so that every int16 lane of the
/// NEON kernels holds two products of 128 x 127; the requantisation (2^-16) moves the output
/// by one for an error of 2^16 in a sum, so a lane that wrapped would show.
#[test]
fn int8_linear_is_exact_at_the_weights_limits_on_every_path() {
    let limit = MAX_WEIGHT;
    let requant = Requant::from_real(1.0 / 65536.0).unwrap();
    for n_in in [16, 64, 80, 256] {
        let n_out = 12;
        type Input = fn(usize) -> i8;
        type Weight = fn(usize, usize) -> i8;
        let patterns: [(Input, Weight); 4] = [
            (|_| -128, |_, _| -MAX_WEIGHT),
            (|_| -128, |_, _| MAX_WEIGHT),
            (|_| 127, |_, _| -MAX_WEIGHT),
            (
                |i| if i % 3 == 0 { 127 } else { -128 },
                |o, i| {
                    if (o + i) % 2 == 0 {
                        MAX_WEIGHT
                    } else {
                        -MAX_WEIGHT
                    }
                },
            ),
        ];
        for (k, (input, weight)) in patterns.into_iter().enumerate() {
            let x: Vec<i8> = (0..n_in).map(input).collect();
            let w: Vec<i8> = (0..n_out * n_in)
                .map(|k| weight(k / n_in, k % n_in))
                .collect();
            assert!(w.iter().all(|&v| v.abs() == limit));
            let expected: Vec<i8> = (0..n_out)
                .map(|o| {
                    let dot: i32 = (0..n_in)
                        .map(|i| i32::from(x[i]) * i32::from(w[o * n_in + i]))
                        .sum();
                    requant.apply(dot).clamp(-128, 127) as i8
                })
                .collect();
            // The uniform patterns' sums are far from 0 and within the output's range.
            if k < 3 {
                assert!(
                    expected.iter().all(|&v| v.abs() > 1 && v.abs() < 127),
                    "{expected:?}"
                );
            }
            let requant = le_requant(&vec![requant; n_out]);
            for path in Path::available() {
                let mut y = vec![0i8; n_out];
                linear_s8_on(path, &x, &w, &vec![0; 4 * n_out], &requant, 0, &mut y).unwrap();
                assert_eq!(y, expected, "{}: fan-in {n_in}", path.name());
            }
        }
    }
}

#[test]
fn int8_conv2d_needs_its_scratch() {
    let g = geometries()[1];
    let (oh, ow) = g.output_size().unwrap();
    let fan_in = g.in_channels * 9;
    let words = s8_scratch_words(fan_in).unwrap();
    assert_eq!(words, 2 * fan_in.next_multiple_of(4));
    let x = vec![0i8; g.in_channels * g.in_height * g.in_width];
    let w = vec![0i8; g.out_channels * fan_in];
    let (bias, requant) = (vec![0u8; 4 * g.out_channels], vec![0u8; 8 * g.out_channels]);
    let mut y = vec![0i8; g.out_channels * oh * ow];
    let mut scratch = vec![0u32; words];
    let mut run =
        |scratch: &mut [u32]| conv2d_s8(&g, &x, 0, &w, &bias, &requant, 0, &mut y, scratch);
    assert!(run(&mut scratch).is_ok());
    let mut y2 = vec![0i8; g.out_channels * oh * ow];
    assert!(matches!(
        conv2d_s8(
            &g,
            &x,
            128,
            &w,
            &bias,
            &requant,
            0,
            &mut y2,
            &mut scratch.clone()
        ),
        Err(ddm_firmware::Error::InvalidQuantization(_))
    ));
    assert_eq!(
        run(&mut scratch[..words - 1]),
        Err(ddm_firmware::Error::ArenaTooSmall {
            required: 4 * words,
            available: 4 * (words - 1)
        })
    );
}

#[test]
fn int8_linear_equals_the_exact_integer_definition() {
    let mut rng = Rng::new(13);
    for &(n_in, n_out) in &[
        (1, 1),
        (3, 2),
        (4, 1),
        (5, 3),
        (7, 5),
        (8, 2),
        (64, 33),
        (255, 4),
        (256, 256),
        (1025, 3),
    ] {
        let x = random_i8(&mut rng, n_in);
        let w = random_weights(&mut rng, n_in * n_out);
        let bias: Vec<i32> = (0..n_out)
            .map(|_| rng.below(2_000_001) as i32 - 1_000_000)
            .collect();
        let requant: Vec<Requant> = (0..n_out)
            .map(|_| Requant::from_real(1e-4 + 0.02 * f64::from(rng.uniform())).unwrap())
            .collect();
        let zy = rng.below(256) as i32 - 128;
        let expected: Vec<i8> = (0..n_out)
            .map(|o| {
                let dot: i32 = (0..n_in)
                    .map(|i| i32::from(x[i]) * i32::from(w[o * n_in + i]))
                    .sum();
                let q = requant[o].apply(dot + bias[o]).saturating_add(zy);
                q.clamp(-128, 127) as i8
            })
            .collect();
        let mut y = vec![0i8; n_out];
        linear_s8(&x, &w, &le_i32(&bias), &le_requant(&requant), zy, &mut y).unwrap();
        assert_eq!(y, expected, "{n_in} -> {n_out}");
    }
}

#[test]
fn int8_add_equals_the_reference_element_by_element() {
    let mut rng = Rng::new(16);
    let requant = |rng: &mut Rng| Requant {
        multiplier: rng.next_u32() as i32 & i32::MAX,
        shift: rng.below(25) as i32 - 20,
    };
    for trial in 0..40 {
        let (channels, spatial) = [(16, 1), (4, 25), (3, 64), (1, 7)][trial % 4];
        let broadcast = trial % 3 == 0;
        let mut params = AddParams {
            lhs: requant(&mut rng),
            rhs: requant(&mut rng),
            output: requant(&mut rng),
        };
        // Outside the fast form: a left shift, and the multiplier i32::MIN.
        if trial % 5 == 1 {
            params.output.shift = 3;
        }
        if trial % 5 == 2 {
            params.lhs.multiplier = i32::MIN;
        }
        let zps = AddZeroPoints {
            lhs: rng.below(256) as i32 - 128,
            rhs: rng.below(256) as i32 - 128,
            output: rng.below(256) as i32 - 128,
        };
        let n = channels * spatial;
        let lhs = random_i8(&mut rng, n);
        let rhs = random_i8(&mut rng, if broadcast { channels } else { n });
        let expected: Vec<i8> = (0..n)
            .map(|i| {
                let b = if broadcast { rhs[i / spatial] } else { rhs[i] };
                params.apply(lhs[i], b, zps)
            })
            .collect();
        let y = add_on_every_path(&params, zps, &lhs, &rhs);
        assert_eq!(y, expected, "trial {trial}");
    }
}

#[test]
fn f16_weights_widen_exactly_for_every_bit_pattern() {
    for bits in 0..=u16::MAX {
        let expected = half::f16::from_bits(bits).to_f32();
        let got = f16_to_f32(bits);
        assert_eq!(got.to_bits(), expected.to_bits(), "f16 bits {bits:#06x}");
        assert_eq!(
            F16Weights::decode(&bits.to_le_bytes()).to_bits(),
            expected.to_bits()
        );
    }
    // The cases by name: zero signs, the smallest subnormal, the largest finite, infinities.
    assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
    assert!(f16_to_f32(0x7c01).is_nan());
}

#[test]
fn float_dot_products_add_in_the_fixed_lane_order_across_blocks() {
    use ddm_firmware::kernels::linear::{dot_f32, DOT_BLOCK};
    use ddm_firmware::kernels::sum4;
    let mut rng = Rng::new(11);
    for n in (0..=3 * DOT_BLOCK + 5).chain([1000, 1027]) {
        let x = crate::common::uniform(&mut rng, n, 2.0);
        let w = crate::common::uniform(&mut rng, n, 1.0);
        let expected = sum4(x.iter().zip(&w).map(|(x, w)| x * w));
        assert_eq!(
            dot_f32::<F32Weights>(&x, &le_f32(&w)).to_bits(),
            expected.to_bits()
        );

        let halves: Vec<u16> = w
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect();
        let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        let expected = sum4(x.iter().zip(&halves).map(|(x, &h)| x * f16_to_f32(h)));
        assert_eq!(
            dot_f32::<F16Weights>(&x, &bytes).to_bits(),
            expected.to_bits(),
            "n = {n}"
        );
    }
}
