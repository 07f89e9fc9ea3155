//! `y = W x + b` on vectors: `W` is `[out, in]` row-major.

use super::{float_at, i32_at, requant_at, WeightFormat};
use crate::error::{check_len, Result};
use crate::quant::saturate_i8;

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
/// `bias` holds `out` little-endian `i32` with the input zero point folded in
/// ([`fold_input_zero_point`](crate::quant::fold_input_zero_point)), `requant` `out`
/// `(multiplier, shift)` pairs.
pub fn linear_s8(
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
    if n_in == 0 {
        return Ok(());
    }
    for (o, (row, y)) in weights.chunks_exact(n_in).zip(y.iter_mut()).enumerate() {
        let acc = dot_s8(x, row).wrapping_add(i32_at(bias, o));
        *y = saturate_i8(
            requant_at(requant, o)
                .apply(acc)
                .saturating_add(output_zero_point),
        );
    }
    Ok(())
}

/// `sum x_i w_i` in four interleaved `f32` lanes (see [`sum4`](super::sum4)), `w` decoded from
/// format `W`.
#[inline]
pub fn dot_f32<W: WeightFormat>(x: &[f32], w: &[u8]) -> f32 {
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
