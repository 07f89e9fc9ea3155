//! Sinusoidal timestep embedding: for `i < half = dim / 2`,
//! `y[i] = sinf(t f_i)` and `y[half + i] = cosf(t f_i)` with
//! `f_i = expf((-logf(max_period)) i / half)`, all in `f32` with [`libm`], in exactly this
//! order (`t` converted to `f32` first). The int8 variant quantises each value with the node's
//! parameters.

use crate::error::{Error, Result};
use crate::quant::QuantParams;

fn halves<T>(out: &mut [T]) -> Result<(&mut [T], &mut [T])> {
    if out.is_empty() || !out.len().is_multiple_of(2) {
        return Err(Error::InvalidModel(
            "time embedding needs an even, non-zero length",
        ));
    }
    let half = out.len() / 2;
    Ok(out.split_at_mut(half))
}

/// `(sin, cos)` of `t f_i` for each `i < half`, in order.
fn embedding(t: u32, max_period: f32, half: usize) -> impl Iterator<Item = (f32, f32)> {
    let neg_log = -libm::logf(max_period);
    let t = t as f32;
    let half_f = half as f32;
    (0..half).map(move |i| {
        let frequency = libm::expf(neg_log * i as f32 / half_f);
        let angle = t * frequency;
        (libm::sinf(angle), libm::cosf(angle))
    })
}

/// Float time embedding of timestep `t` into `out` (`dim` elements).
pub fn time_embedding_f32(t: u32, max_period: f32, out: &mut [f32]) -> Result<()> {
    let (sin, cos) = halves(out)?;
    let half = sin.len();
    for ((s, c), (sv, cv)) in sin
        .iter_mut()
        .zip(cos.iter_mut())
        .zip(embedding(t, max_period, half))
    {
        *s = sv;
        *c = cv;
    }
    Ok(())
}

/// int8 time embedding: the float values quantised with `output`.
pub fn time_embedding_s8(
    t: u32,
    max_period: f32,
    output: QuantParams,
    out: &mut [i8],
) -> Result<()> {
    let (sin, cos) = halves(out)?;
    let half = sin.len();
    for ((s, c), (sv, cv)) in sin
        .iter_mut()
        .zip(cos.iter_mut())
        .zip(embedding(t, max_period, half))
    {
        *s = output.quantize(sv);
        *c = output.quantize(cv);
    }
    Ok(())
}
