//! 2-D convolution: square kernel, stride 1 or 2, zero padding, no dilation or groups.
//!
//! Loop order (both variants): output channel, output row, then a chunk of up to
//! [`CHUNK`] output columns whose accumulators live in a stack array; for each input channel,
//! kernel row and kernel column, one weight is broadcast over the chunk's columns:
//! `acc[j] += x[ic, iy, (ox0 + j) s + kx - p] w`. For stride 1 the inner loop runs over
//! contiguous input and accumulators, so LLVM vectorises it on the host; on Cortex-M4 it is a
//! load-multiply-accumulate-store loop with the weight in a register. Only the columns whose
//! input lies inside the image are in that loop; padded taps are handled outside it. 3x3
//! stride-1 kernels (the common case) fuse the three kernel columns of a row into one pass over
//! the accumulators.
//!
//! Padding is zero in real terms: the int8 variant adds `zx w` for a padded tap (the folded
//! bias subtracts `zx sum(w)` for all taps, so the two cancel exactly); the float variant skips
//! padded taps. Float accumulation order is input channel, kernel row, kernel column, then the
//! bias is added.

use super::{float_at, i32_at, requant_at, WeightFormat};
use crate::error::{check_len, Error, Result};
use crate::quant::saturate_i8;

/// Output columns accumulated at once (the stack array holds this many `i32` or `f32`).
pub const CHUNK: usize = 64;

/// Shapes and hyper-parameters of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConvGeometry {
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub in_height: usize,
    /// Input width.
    pub in_width: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size `k` (the kernel is `k x k`).
    pub kernel: usize,
    /// Stride (1 or 2).
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl ConvGeometry {
    /// Output height and width, if the kernel fits the padded input and the stride is 1 or 2.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        if !(1..=2).contains(&self.stride) || self.kernel == 0 {
            return None;
        }
        let size = |n: usize| {
            n.checked_add(self.padding.checked_mul(2)?)?
                .checked_sub(self.kernel)
                .map(|span| span / self.stride + 1)
        };
        Some((size(self.in_height)?, size(self.in_width)?))
    }

    /// Checks the slice lengths of a run and returns the output size.
    fn check(&self, input: usize, weights: usize, output: usize) -> Result<(usize, usize)> {
        let dims = [
            self.in_channels,
            self.in_height,
            self.in_width,
            self.out_channels,
        ];
        if dims.contains(&0) {
            return Err(Error::InvalidModel("convolution with an empty dimension"));
        }
        let (out_h, out_w) = self.output_size().ok_or(Error::InvalidModel(
            "convolution kernel larger than the padded input, or stride not 1 or 2",
        ))?;
        let product = |dims: &[usize]| dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let expect = |what, dims: &[usize], actual| {
            check_len(what, product(dims).unwrap_or(usize::MAX), actual)
        };
        expect(
            "convolution input",
            &[self.in_channels, self.in_height, self.in_width],
            input,
        )?;
        expect(
            "convolution weights",
            &[
                self.out_channels,
                self.in_channels,
                self.kernel,
                self.kernel,
            ],
            weights,
        )?;
        expect(
            "convolution output",
            &[self.out_channels, out_h, out_w],
            output,
        )?;
        Ok((out_h, out_w))
    }

    /// Accumulator indices `lo..hi` (within a chunk starting at column `ox0` of length `n`)
    /// whose input column for kernel column `kx` lies inside the image.
    #[inline]
    fn valid_columns(&self, kx: usize, ox0: usize, n: usize) -> (usize, usize) {
        let (s, p, w) = (self.stride, self.padding, self.in_width);
        // First output column whose input column ox s + kx - p is >= 0, and one past the last
        // whose input column is <= w - 1.
        let first = if p > kx { (p - kx).div_ceil(s) } else { 0 };
        let end = if w + p > kx {
            (w - 1 + p - kx) / s + 1
        } else {
            0
        };
        let lo = first.clamp(ox0, ox0 + n) - ox0;
        let hi = end.clamp(ox0, ox0 + n) - ox0;
        (lo, hi.max(lo))
    }
}

/// Input row of kernel row `ky` for output row `oy`, if it is inside the image.
#[inline]
fn input_row(g: &ConvGeometry, oy: usize, ky: usize) -> Option<usize> {
    (oy * g.stride + ky)
        .checked_sub(g.padding)
        .filter(|&iy| iy < g.in_height)
}

/// Adds kernel row `w_row` (one input channel, one kernel row) applied to input row `x_row`
/// to the accumulators of output columns `ox0..ox0 + acc.len()`, one kernel column at a time,
/// only for the accumulators in `cols`. Padded taps add `pad(w)` (the int8 `zx w`, or nothing).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_pass<X: Copy, A: Copy>(
    g: &ConvGeometry,
    x_row: &[X],
    weights: impl Iterator<Item = A>,
    ox0: usize,
    acc: &mut [A],
    cols: core::ops::Range<usize>,
    mac: impl Fn(A, X, A) -> A,
    pad: impl Fn(A, A) -> Option<A>,
) {
    let n = acc.len();
    for (kx, wv) in weights.enumerate() {
        let (lo, hi) = g.valid_columns(kx, ox0, n);
        let (lo, hi) = (
            lo.clamp(cols.start, cols.end),
            hi.clamp(cols.start, cols.end),
        );
        let hi = hi.max(lo);
        let (head, rest) = acc[cols.start..cols.end].split_at_mut(lo - cols.start);
        let (inner, tail) = rest.split_at_mut(hi - lo);
        for a in head.iter_mut().chain(tail.iter_mut()) {
            if let Some(v) = pad(*a, wv) {
                *a = v;
            }
        }
        if inner.is_empty() {
            continue;
        }
        let ix0 = (ox0 + lo) * g.stride + kx - g.padding;
        if g.stride == 1 {
            let len = inner.len();
            for (a, &xv) in inner.iter_mut().zip(&x_row[ix0..ix0 + len]) {
                *a = mac(*a, xv, wv);
            }
        } else {
            for (a, &xv) in inner.iter_mut().zip(x_row[ix0..].iter().step_by(g.stride)) {
                *a = mac(*a, xv, wv);
            }
        }
    }
}

/// The accumulators `lo..hi` of a chunk whose three taps are all inside the image, when the
/// fused 3x3 stride-1 path applies (`None` otherwise).
#[inline]
fn fused_columns(g: &ConvGeometry, ox0: usize, n: usize) -> Option<(usize, usize)> {
    if g.kernel != 3 || g.stride != 1 {
        return None;
    }
    // Stride 1: the first valid column decreases and the last valid column decreases with kx,
    // so the columns valid for every tap are those of kx = 0 from below and kx = 2 from above.
    let (lo, _) = g.valid_columns(0, ox0, n);
    let (_, hi) = g.valid_columns(2, ox0, n);
    (lo < hi).then_some((lo, hi))
}

/// int8 convolution: `y = sat(zy + requant_c(bias_c + sum x w))` with `x` padded by its zero
/// point `zx`. `bias` and `requant` as for [`linear_s8`](super::linear::linear_s8).
///
/// 3x3 stride-1 kernels take a fused path for the columns whose three taps are inside the
/// image: each accumulator is loaded once per kernel row (`acc += x0 w0 + x1 w1 + x2 w2`).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_s8(
    g: &ConvGeometry,
    x: &[i8],
    input_zero_point: i32,
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    output_zero_point: i32,
    y: &mut [i8],
) -> Result<()> {
    let (out_h, out_w) = g.check(x.len(), weights.len(), y.len())?;
    check_len(
        "convolution bias",
        g.out_channels.saturating_mul(4),
        bias.len(),
    )?;
    check_len(
        "convolution requantisation",
        g.out_channels.saturating_mul(8),
        requant.len(),
    )?;
    let (h, w, k) = (g.in_height, g.in_width, g.kernel);
    let zx = input_zero_point;
    let mac = |a: i32, x: i8, w: i32| a.wrapping_add(i32::from(x) * w);
    let pad = |a: i32, w: i32| (zx != 0).then(|| a.wrapping_add(zx * w));
    let mut acc = [0i32; CHUNK];
    for (oc, (w_oc, y_oc)) in weights
        .chunks_exact(g.in_channels * k * k)
        .zip(y.chunks_exact_mut(out_h * out_w))
        .enumerate()
    {
        let bias = i32_at(bias, oc);
        let requant = requant_at(requant, oc);
        for (oy, y_row) in y_oc.chunks_exact_mut(out_w).enumerate() {
            for (chunk, y_chunk) in y_row.chunks_mut(CHUNK).enumerate() {
                let (ox0, n) = (chunk * CHUNK, y_chunk.len());
                let acc = &mut acc[..n];
                acc.fill(bias);
                let fused = fused_columns(g, ox0, n);
                for (x_plane, w_ic) in x.chunks_exact(h * w).zip(w_oc.chunks_exact(k * k)) {
                    for (ky, w_row) in w_ic.chunks_exact(k).enumerate() {
                        let weights = w_row.iter().map(|&w| i32::from(w));
                        let Some(iy) = input_row(g, oy, ky) else {
                            // A padded row: every tap reads zx.
                            let add = zx * weights.sum::<i32>();
                            acc.iter_mut().for_each(|a| *a = a.wrapping_add(add));
                            continue;
                        };
                        let x_row = &x_plane[iy * w..(iy + 1) * w];
                        match (fused, w_row) {
                            (Some((lo, hi)), &[w0, w1, w2]) => {
                                let (w0, w1, w2) = (i32::from(w0), i32::from(w1), i32::from(w2));
                                let ix0 = ox0 + lo - g.padding;
                                let xs = &x_row[ix0..ix0 + (hi - lo) + 2];
                                for (a, t) in acc[lo..hi].iter_mut().zip(xs.windows(3)) {
                                    let sum = i32::from(t[0]) * w0
                                        + i32::from(t[1]) * w1
                                        + i32::from(t[2]) * w2;
                                    *a = a.wrapping_add(sum);
                                }
                                row_pass(g, x_row, weights.clone(), ox0, acc, 0..lo, mac, pad);
                                row_pass(g, x_row, weights, ox0, acc, hi..n, mac, pad);
                            }
                            _ => row_pass(g, x_row, weights, ox0, acc, 0..n, mac, pad),
                        }
                    }
                }
                for (y, &a) in y_chunk.iter_mut().zip(acc.iter()) {
                    *y = saturate_i8(requant.apply(a).saturating_add(output_zero_point));
                }
            }
        }
    }
    Ok(())
}

/// Float convolution, weights and optional bias in format `W`.
///
/// Each accumulator starts at 0 and adds `x w` for input channel, kernel row and kernel column
/// in that order, skipping padded taps; the bias is added last. The fused 3x3 stride-1 path
/// performs the same additions in the same order, so every path gives the same bits.
pub fn conv2d_f32<W: WeightFormat>(
    g: &ConvGeometry,
    x: &[f32],
    weights: &[u8],
    bias: Option<&[u8]>,
    y: &mut [f32],
) -> Result<()> {
    let weight_count = weights.len() / W::SIZE;
    check_len(
        "convolution weight bytes",
        weight_count * W::SIZE,
        weights.len(),
    )?;
    let (out_h, out_w) = g.check(x.len(), weight_count, y.len())?;
    if let Some(bias) = bias {
        check_len(
            "convolution bias",
            g.out_channels.saturating_mul(W::SIZE),
            bias.len(),
        )?;
    }
    let (h, w, k) = (g.in_height, g.in_width, g.kernel);
    let mac = |a: f32, x: f32, w: f32| a + x * w;
    let pad = |_: f32, _: f32| None;
    let mut acc = [0.0f32; CHUNK];
    for (oc, (w_oc, y_oc)) in weights
        .chunks_exact(g.in_channels * k * k * W::SIZE)
        .zip(y.chunks_exact_mut(out_h * out_w))
        .enumerate()
    {
        let bias = float_at::<W>(bias, oc);
        for (oy, y_row) in y_oc.chunks_exact_mut(out_w).enumerate() {
            for (chunk, y_chunk) in y_row.chunks_mut(CHUNK).enumerate() {
                let (ox0, n) = (chunk * CHUNK, y_chunk.len());
                let acc = &mut acc[..n];
                acc.fill(0.0);
                let fused = fused_columns(g, ox0, n);
                for (x_plane, w_ic) in x
                    .chunks_exact(h * w)
                    .zip(w_oc.chunks_exact(k * k * W::SIZE))
                {
                    for (ky, w_row) in w_ic.chunks_exact(k * W::SIZE).enumerate() {
                        let Some(iy) = input_row(g, oy, ky) else {
                            continue;
                        };
                        let x_row = &x_plane[iy * w..(iy + 1) * w];
                        let weights = w_row.chunks_exact(W::SIZE).map(W::decode);
                        match fused {
                            Some((lo, hi)) => {
                                let mut taps = weights.clone();
                                let w0 = taps.next().unwrap_or(0.0);
                                let w1 = taps.next().unwrap_or(0.0);
                                let w2 = taps.next().unwrap_or(0.0);
                                let ix0 = ox0 + lo - g.padding;
                                let xs = &x_row[ix0..ix0 + (hi - lo) + 2];
                                for (a, t) in acc[lo..hi].iter_mut().zip(xs.windows(3)) {
                                    *a = ((*a + t[0] * w0) + t[1] * w1) + t[2] * w2;
                                }
                                row_pass(g, x_row, weights.clone(), ox0, acc, 0..lo, mac, pad);
                                row_pass(g, x_row, weights, ox0, acc, hi..n, mac, pad);
                            }
                            None => row_pass(g, x_row, weights, ox0, acc, 0..n, mac, pad),
                        }
                    }
                }
                for (y, &a) in y_chunk.iter_mut().zip(acc.iter()) {
                    *y = a + bias;
                }
            }
        }
    }
    Ok(())
}
