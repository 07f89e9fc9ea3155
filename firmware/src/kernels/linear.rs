//! `y = W x + b` on vectors: `W` is `[out, in]` row-major.

use super::dot::{dot_2x1, dot_3x1, linear_rows, Path};
use super::{float_at, i32_at, requant_at, requantize, WeightFormat};
use crate::error::{check_len, Result};
use crate::format::MAX_WEIGHT;

/// `sum a_i b_i` in `i32` (vectorises to widening multiply-adds; never overflows for
/// `len <= MAX_FAN_IN`).
#[inline]
pub fn dot_s8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).fold(0i32, |acc, (&a, &b)| {
        acc.wrapping_add(i32::from(a) * i32::from(b))
    })
}

/// int8 linear layer: `y_o = sat(zy + requant_o(bias_o + sum_i x_i w_oi))`.
///
/// The weights lie in `-MAX_WEIGHT..=MAX_WEIGHT` (int8 weights are symmetric: see
/// [`MAX_WEIGHT`]; [`Blob::parse`](crate::Blob::parse) refuses a blob with a weight of -128):
/// the plain NEON kernel adds two products in each int16 lane. A weight of -128 may give a
/// wrong sum there, and debug builds panic on it.
///
/// `bias` holds `out` little-endian `i32` with the input zero point folded in
/// ([`fold_input_zero_point`](crate::quant::fold_input_zero_point)), `requant` `out`
/// `(multiplier, shift)` pairs.
///
/// Three rows at a time share each load of the input (`kernels::dot::dot_3x1`: on Cortex-M4
/// `SXTB16` + `SMLAD` on four inputs per word), the last one or two rows take
/// `kernels::dot::dot_2x1`; inputs past the last multiple of 4 are added one by one (on the
/// x86-64 and aarch64 paths, fan-ins that are multiples of 16 take four rows at a time, eight
/// on plain NEON, with the requantisation in vector lanes: `kernels::dot::linear_rows`).
/// Exact integer sums, so the result is that of any order. The products run on the CPU's
/// fastest [`Path`] ([`Path::detect`]); [`linear_s8_on`] chooses it.
pub fn linear_s8(
    x: &[i8],
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    output_zero_point: i32,
    y: &mut [i8],
) -> Result<()> {
    let path = Path::detect();
    linear_s8_on(path, x, weights, bias, requant, output_zero_point, y)
}

/// [`linear_s8`] with its products on `path`: the same bytes on every path, for weights in
/// `-MAX_WEIGHT..=MAX_WEIGHT`.
///
/// # Errors
/// As [`linear_s8`].
pub fn linear_s8_on(
    path: Path,
    x: &[i8],
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    output_zero_point: i32,
    y: &mut [i8],
) -> Result<()> {
    let (n_in, n_out) = (x.len(), y.len());
    check_len("linear weights", n_in.saturating_mul(n_out), weights.len())?;
    check_len("linear bias", n_out.saturating_mul(4), bias.len())?;
    check_len(
        "linear requantisation",
        n_out.saturating_mul(8),
        requant.len(),
    )?;
    debug_assert!(
        !weights.contains(&(-MAX_WEIGHT - 1)),
        "int8 weights lie in -{MAX_WEIGHT}..={MAX_WEIGHT}"
    );
    if n_in == 0 {
        return Ok(());
    }
    // Rows four (plain NEON: eight) at a time with vector requantisation where the path has
    // such a kernel.
    let first = linear_rows(path, x, weights, bias, requant, output_zero_point, y);
    let (weights, y) = (&weights[first * n_in..], &mut y[first..]);
    let n_out = y.len();
    let full = n_in - n_in % 4;
    let (x_head, x_tail) = x.split_at(full);
    let output = |o: usize, acc: i32| {
        let o = first + o;
        let acc = acc.wrapping_add(i32_at(bias, o));
        let [q] = requantize([acc], requant_at(requant, o), output_zero_point);
        q
    };
    let tail = |acc: i32, w: &[i8]| acc.wrapping_add(dot_s8(x_tail, &w[full..]));
    let mut rows = weights.chunks_exact(3 * n_in);
    let mut outputs = y.chunks_exact_mut(3);
    for (o, (rows, y)) in (&mut rows).zip(&mut outputs).enumerate() {
        let (w0, rest) = rows.split_at(n_in);
        let (w1, w2) = rest.split_at(n_in);
        let acc = dot_3x1(path, x_head, w0, w1, w2, [0; 3]);
        for (r, (w, (y, acc))) in [w0, w1, w2]
            .into_iter()
            .zip(y.iter_mut().zip(acc))
            .enumerate()
        {
            *y = output(3 * o + r, tail(acc, w));
        }
    }
    // The last one or two rows (a single one computed twice).
    let done = n_out - outputs.into_remainder().len();
    let rest = rows.remainder();
    match &mut y[done..] {
        [y0, y1] => {
            let (w0, w1) = rest.split_at(n_in);
            let [a0, a1] = dot_2x1(path, x_head, w0, w1, [0, 0]);
            *y0 = output(done, tail(a0, w0));
            *y1 = output(done + 1, tail(a1, w1));
        }
        [y0] => {
            let [a0, _] = dot_2x1(path, x_head, rest, rest, [0, 0]);
            *y0 = output(done, tail(a0, rest));
        }
        _ => {}
    }
    Ok(())
}

/// `sum x_i w_i` in four interleaved `f32` lanes (see [`sum4`](super::sum4)), `w` decoded from
/// format `W`.
///
/// Formats that [decode in blocks](WeightFormat::DECODE_IN_BLOCKS) (f16) are decoded
/// [`DOT_BLOCK`] weights at a time into a stack buffer (a loop the compiler vectorises) and
/// then multiplied; the blocks are a multiple of four long, so every product lands in the same
/// lane, in the same order, either way.
#[inline]
pub fn dot_f32<W: WeightFormat>(x: &[f32], w: &[u8]) -> f32 {
    if W::DECODE_IN_BLOCKS {
        return dot_f32_in_blocks::<W>(x, w);
    }
    let mut lanes = [0.0f32; 4];
    let mut xs = x.chunks_exact(4);
    let mut ws = w.chunks_exact(4 * W::SIZE);
    for (xs, ws) in (&mut xs).zip(&mut ws) {
        for ((lane, &x), w) in lanes.iter_mut().zip(xs).zip(ws.chunks_exact(W::SIZE)) {
            *lane += x * W::decode(w);
        }
    }
    for ((lane, &x), w) in lanes
        .iter_mut()
        .zip(xs.remainder())
        .zip(ws.remainder().chunks_exact(W::SIZE))
    {
        *lane += x * W::decode(w);
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// [`dot_f32`] with the weights decoded [`DOT_BLOCK`] at a time into a stack buffer first.
fn dot_f32_in_blocks<W: WeightFormat>(x: &[f32], w: &[u8]) -> f32 {
    let mut lanes = [0.0f32; 4];
    let mut decoded = [0.0f32; DOT_BLOCK];
    for (xs, ws) in x.chunks(DOT_BLOCK).zip(w.chunks(DOT_BLOCK * W::SIZE)) {
        let decoded = &mut decoded[..xs.len()];
        for (d, bytes) in decoded.iter_mut().zip(ws.chunks_exact(W::SIZE)) {
            *d = W::decode(bytes);
        }
        let mut xs4 = xs.chunks_exact(4);
        let mut ws4 = decoded.chunks_exact(4);
        for (xs, ws) in (&mut xs4).zip(&mut ws4) {
            for ((lane, &x), &w) in lanes.iter_mut().zip(xs).zip(ws) {
                *lane += x * w;
            }
        }
        // Only the last block has a remainder.
        for ((lane, &x), &w) in lanes.iter_mut().zip(xs4.remainder()).zip(ws4.remainder()) {
            *lane += x * w;
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// Weights [`dot_f32`] decodes at a time (a multiple of 4).
pub const DOT_BLOCK: usize = 64;

/// Float linear layer: `y_o = dot(x, w_o) + b_o` ([`dot_f32`]), weights and optional bias in
/// format `W`.
pub fn linear_f32<W: WeightFormat>(
    x: &[f32],
    weights: &[u8],
    bias: Option<&[u8]>,
    y: &mut [f32],
) -> Result<()> {
    let (n_in, n_out) = (x.len(), y.len());
    check_len(
        "linear weights",
        n_in.saturating_mul(n_out).saturating_mul(W::SIZE),
        weights.len(),
    )?;
    if let Some(bias) = bias {
        check_len("linear bias", n_out.saturating_mul(W::SIZE), bias.len())?;
    }
    if n_in == 0 {
        return Ok(());
    }
    for (o, (row, y)) in weights
        .chunks_exact(n_in * W::SIZE)
        .zip(y.iter_mut())
        .enumerate()
    {
        *y = dot_f32::<W>(x, row) + float_at::<W>(bias, o);
    }
    Ok(())
}
