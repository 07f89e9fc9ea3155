//! Fixed-point requantisation, exactly as TFLite Micro's reference kernels and CMSIS-NN do it.
//!
//! Activations are per-tensor asymmetric int8: `real = scale (q - zero_point)`. Weights are
//! per-output-channel symmetric int8 (`real = scale_c w`), biases `i32` at scale
//! `input_scale scale_c`. An int8 linear or convolution layer accumulates in `i32`
//!
//! ```text
//! acc_c = sum_k (x_k - zx) w_ck + bias_c = sum_k x_k w_ck + (bias_c - zx sum_k w_ck)
//! ```
//!
//! and the exporter folds the zero-point term into the stored bias ([`fold_input_zero_point`]),
//! so the inner loop is a plain `i8 x i8 -> i32` dot product (padded convolution taps read the
//! input zero point, which the folded bias cancels). The output is
//! `clamp(zy + requant(acc_c, M_c, shift_c), -128, 127)` with the real multiplier
//! `input_scale scale_c / output_scale` represented as a Q31 [`Requant`]: `M 2^(shift - 31)`.
//!
//! [`Requant::apply`] is TFLite's `MultiplyByQuantizedMultiplier` (CMSIS-NN's
//! `arm_nn_requantize`): an optional left shift, [`saturating_rounding_doubling_high_mul`]
//! (nearest, ties upwards) and [`rounding_divide_by_pot`] (nearest, ties away from zero). The
//! two roundings make the result at most 1 LSB from the correctly rounded product (exact for
//! most inputs when the accumulator is large compared to `2^-shift`). The doubling high multiply is
//! computed as CMSIS-NN does, `(a b + 2^30) >> 31`, which equals gemmlowp's
//! sign-dependent-nudge division for every input (tests prove it); only `a = b = i32::MIN`
//! saturates.
//!
//! Functions that take real numbers ([`Requant::from_real`], [`silu_lut`], [`AddParams::new`])
//! work in `f64` and are meant for the exporter; nothing on the device's hot path uses `f64`.

use crate::error::{Error, Result};
use crate::format::{ADD_LEFT_SHIFT, MAX_BIAS, MAX_SHIFT, MAX_WEIGHT, MIN_SHIFT};

/// Quantisation parameters of an int8 activation tensor: `real = scale (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QuantParams {
    /// Step between consecutive quantised values (finite, > 0).
    pub scale: f32,
    /// The quantised value of real zero (-128..=127).
    pub zero_point: i32,
}

impl QuantParams {
    /// Parameters covering `[min, max]` (widened to include 0) with 256 levels, real zero
    /// exactly representable.
    pub fn from_range(min: f32, max: f32) -> Result<Self> {
        if !(min.is_finite() && max.is_finite()) {
            return Err(Error::InvalidQuantization(
                "calibration range must be finite",
            ));
        }
        let (min, max) = (f64::from(min.min(0.0)), f64::from(max.max(0.0)));
        let span = if max > min { max - min } else { 1.0 };
        let scale = span / 255.0;
        let zero_point = libm::round(-128.0 - min / scale).clamp(-128.0, 127.0) as i32;
        let params = QuantParams {
            scale: scale as f32,
            zero_point,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks `scale` is finite and > 0 and `zero_point` in `-128..=127`.
    pub fn validate(&self) -> Result<()> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::InvalidQuantization("scale must be finite and > 0"));
        }
        if !(-128..=127).contains(&self.zero_point) {
            return Err(Error::InvalidQuantization(
                "zero point must be in -128..=127",
            ));
        }
        Ok(())
    }

    /// `clamp(round(x / scale) + zero_point)` with rounding half away from zero (TFLite's
    /// `Quantize`). NaN maps to the zero point.
    #[inline]
    pub fn quantize(&self, x: f32) -> i8 {
        round_to_i8(x / self.scale, self.zero_point)
    }

    /// `scale (q - zero_point)`.
    #[inline]
    pub fn dequantize(&self, q: i8) -> f32 {
        (i32::from(q) - self.zero_point) as f32 * self.scale
    }

    /// Same bits (scale compared bit for bit).
    pub fn same_as(&self, other: &QuantParams) -> bool {
        self.scale.to_bits() == other.scale.to_bits() && self.zero_point == other.zero_point
    }
}

/// `clamp(round(v) + zero_point, -128, 127)`, rounding half away from zero; NaN gives the zero
/// point.
#[inline]
pub fn round_to_i8(v: f32, zero_point: i32) -> i8 {
    saturate_i8(round_to_i32(v).saturating_add(zero_point))
}

/// `libm::roundf(v) as i32` (half away from zero, saturating, NaN to 0), without the library
/// call: the truncation `t = v as i32` (one `VCVT` on Cortex-M4F), then one step away from zero
/// when the fraction `v - t` is at least one half. `v - t` is exact (Sterbenz's lemma for
/// `|v| >= 1`; `t = 0` below; `v` is an integer from `2^23` on), and at the saturation
/// bounds the step saturates too. Equal to `libm::roundf(v) as i32` for every `f32` (checked
/// exhaustively over all 2^32 bit patterns when this was written; the unit tests keep the
/// edge cases).
#[inline]
pub fn round_to_i32(v: f32) -> i32 {
    let t = v as i32;
    let fraction = v - t as f32;
    if fraction >= 0.5 {
        t.saturating_add(1)
    } else if fraction <= -0.5 {
        t.saturating_sub(1)
    } else {
        t
    }
}

/// Clamps to `-128..=127`.
#[inline]
pub fn saturate_i8(v: i32) -> i8 {
    v.clamp(-128, 127) as i8
}

/// `a b / 2^31` rounded to nearest with ties upwards (`floor(a b / 2^31 + 1/2)`), saturating
/// the one overflowing case `a = b = i32::MIN` (gemmlowp's
/// `SaturatingRoundingDoublingHighMul`).
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    // CMSIS-NN's form: one SMLAL and a shift on Cortex-M. Equal to gemmlowp's
    // `(ab + (ab >= 0 ? 2^30 : 1 - 2^30)) / 2^31` (truncating) for all other inputs.
    ((i64::from(a) * i64::from(b) + (1i64 << 30)) >> 31) as i32
}

/// `x / 2^exponent` rounded to nearest, ties away from zero (gemmlowp's
/// `RoundingDivideByPOT`). `exponent` is clamped to `0..=31`.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let exponent = exponent.clamp(0, 31) as u32;
    let mask = ((1u32 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// TFLite's `MultiplyByQuantizedMultiplier` (CMSIS-NN's `arm_nn_requantize`):
/// `x M 2^(shift - 31)`, rounded. A positive `shift` shifts `x` left first (saturating).
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.clamp(0, MAX_SHIFT);
    let right = shift.clamp(MIN_SHIFT, 0).wrapping_neg();
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x.saturating_mul(1 << left), multiplier),
        right,
    )
}

/// A real multiplier in fixed point: `multiplier 2^(shift - 31)`, `multiplier` in
/// `[2^30, 2^31)` (or 0 for the real value 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Requant {
    /// Q31 mantissa.
    pub multiplier: i32,
    /// Power of two: positive shifts left, negative right.
    pub shift: i32,
}

impl Requant {
    /// TFLite's `QuantizeMultiplier`: the closest `(M, shift)` to `real` (>= 0, finite).
    /// Values below `2^-32` become 0; values of `2^30` or more are refused.
    pub fn from_real(real: f64) -> Result<Self> {
        if !(real.is_finite() && real >= 0.0) {
            return Err(Error::InvalidQuantization(
                "a real multiplier must be finite and >= 0",
            ));
        }
        if real == 0.0 {
            return Ok(Requant::default());
        }
        let (fraction, mut shift) = libm::frexp(real);
        let mut fixed = libm::round(fraction * 2_147_483_648.0) as i64;
        if fixed == 1 << 31 {
            fixed /= 2;
            shift += 1;
        }
        if shift < MIN_SHIFT {
            return Ok(Requant::default());
        }
        if shift > MAX_SHIFT {
            return Err(Error::InvalidQuantization("real multiplier too large"));
        }
        Ok(Requant {
            multiplier: fixed as i32,
            shift,
        })
    }

    /// The real value this represents.
    pub fn real(&self) -> f64 {
        f64::from(self.multiplier) * libm::pow(2.0, f64::from(self.shift - 31))
    }

    /// Checks `multiplier >= 0` and `shift` in `MIN_SHIFT..=MAX_SHIFT`.
    pub fn validate(&self) -> Result<()> {
        if self.multiplier < 0 || !(MIN_SHIFT..=MAX_SHIFT).contains(&self.shift) {
            return Err(Error::InvalidQuantization(
                "multiplier must be >= 0 and shift in -31..=30",
            ));
        }
        Ok(())
    }

    /// `x` times the multiplier, rounded ([`multiply_by_quantized_multiplier`]).
    #[inline]
    pub fn apply(&self, x: i32) -> i32 {
        multiply_by_quantized_multiplier(x, self.multiplier, self.shift)
    }
}

/// Fixed-point parameters of TFLite's int8 add: both inputs, offset by their zero points, are
/// shifted left by [`ADD_LEFT_SHIFT`] and scaled by `s_i / (2 max(s_lhs, s_rhs))`; their sum
/// is scaled by `2 max(s_lhs, s_rhs) / (2^20 s_out)` and offset by the output zero point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AddParams {
    /// Scale of the left input.
    pub lhs: Requant,
    /// Scale of the right input.
    pub rhs: Requant,
    /// Scale of the sum.
    pub output: Requant,
}

impl AddParams {
    /// The parameters for inputs and output quantised with `lhs`, `rhs` and `output`.
    pub fn new(lhs: QuantParams, rhs: QuantParams, output: QuantParams) -> Result<Self> {
        lhs.validate()?;
        rhs.validate()?;
        output.validate()?;
        let twice_max = 2.0 * f64::from(lhs.scale.max(rhs.scale));
        Ok(AddParams {
            lhs: Requant::from_real(f64::from(lhs.scale) / twice_max)?,
            rhs: Requant::from_real(f64::from(rhs.scale) / twice_max)?,
            output: Requant::from_real(
                twice_max / (f64::from(1u32 << ADD_LEFT_SHIFT) * f64::from(output.scale)),
            )?,
        })
    }

    /// Checks the three pairs.
    pub fn validate(&self) -> Result<()> {
        self.lhs.validate()?;
        self.rhs.validate()?;
        self.output.validate()
    }

    /// One output element (CMSIS-NN's `arm_elementwise_add_s8`).
    #[inline]
    pub fn apply(&self, a: i8, b: i8, zero_points: AddZeroPoints) -> i8 {
        let a = (i32::from(a) - zero_points.lhs) << ADD_LEFT_SHIFT;
        let b = (i32::from(b) - zero_points.rhs) << ADD_LEFT_SHIFT;
        let sum = self.lhs.apply(a).wrapping_add(self.rhs.apply(b));
        saturate_i8(self.output.apply(sum).saturating_add(zero_points.output))
    }
}

/// Zero points of an add's inputs and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AddZeroPoints {
    /// Left input.
    pub lhs: i32,
    /// Right input.
    pub rhs: i32,
    /// Output.
    pub output: i32,
}

/// The SiLU lookup table for int8 input `input` and output `output`: entry `i` is the output
/// for the input value `i - 128`, computed in `f64` as
/// `clamp(round(silu(x) / s_out) + z_out)` with `x = s_in (i - 128 - z_in)`.
pub fn silu_lut(input: QuantParams, output: QuantParams) -> [i8; 256] {
    lut(|x| x / (1.0 + libm::exp(-x)), input, output)
}

/// A 256-entry int8 lookup table of `f` between `input` and `output` parameters (see
/// [`silu_lut`]).
pub fn lut(f: impl Fn(f64) -> f64, input: QuantParams, output: QuantParams) -> [i8; 256] {
    let mut table = [0i8; 256];
    for (q, slot) in (-128i32..=127).zip(table.iter_mut()) {
        let x = f64::from(input.scale) * f64::from(q - input.zero_point);
        let y = libm::round(f(x) / f64::from(output.scale));
        // `as i32` saturates (and maps NaN to 0) before the zero point is added.
        *slot = saturate_i8((y as i32).saturating_add(output.zero_point));
    }
    table
}

/// The stored bias of an int8 layer: `bias - input_zero_point sum(weights)` (see the module
/// docs), refused unless its magnitude is at most [`MAX_BIAS`].
pub fn fold_input_zero_point(bias: i32, input_zero_point: i32, weights: &[i8]) -> Result<i32> {
    let sum: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let folded = i64::from(bias) - i64::from(input_zero_point) * sum;
    if folded.abs() > i64::from(MAX_BIAS) {
        return Err(Error::InvalidQuantization(
            "folded int8 bias exceeds 2^30 in magnitude",
        ));
    }
    Ok(folded as i32)
}

/// Per-output-channel symmetric int8 quantisation of `weights` (`channels` rows of equal
/// length): scale `max |w| / 127` per row (1 for an all-zero row), values
/// `clamp(round(w / scale), -127, 127)` (the symmetric range [`MAX_WEIGHT`] that blobs
/// require). Returns the values and the scales.
pub fn quantize_per_channel(
    weights: &[f32],
    channels: usize,
    values: &mut [i8],
    scales: &mut [f32],
) -> Result<()> {
    crate::error::check_len("quantised weights", weights.len(), values.len())?;
    crate::error::check_len("weight scales", channels, scales.len())?;
    if channels == 0 || !weights.len().is_multiple_of(channels) {
        return Err(Error::InvalidQuantization(
            "weights must split into equal rows per output channel",
        ));
    }
    let row = weights.len() / channels;
    for ((w, q), scale) in weights
        .chunks_exact(row.max(1))
        .zip(values.chunks_exact_mut(row.max(1)))
        .zip(scales.iter_mut())
    {
        if w.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidQuantization("weights must be finite"));
        }
        let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let limit = f32::from(MAX_WEIGHT);
        *scale = if max > 0.0 { max / limit } else { 1.0 };
        for (q, &v) in q.iter_mut().zip(w) {
            *q = libm::roundf(v / *scale).clamp(-limit, limit) as i8;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_equals_libm_roundf() {
        let edges = [
            0.0f32,
            -0.0,
            0.49999997,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            8_388_607.5,
            -8_388_607.5,
            8_388_608.0,
            2_147_483_520.0,
            2_147_483_648.0,
            -2_147_483_648.0,
            -2_147_483_904.0,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE / 2.0,
        ];
        let sweep = (0..=u32::MAX).step_by(4099).map(f32::from_bits);
        for v in edges.into_iter().chain(sweep) {
            assert_eq!(round_to_i32(v), libm::roundf(v) as i32, "{v:e}");
            for zero_point in [-128, 0, 127, i32::MIN, i32::MAX] {
                let expected = saturate_i8((libm::roundf(v) as i32).saturating_add(zero_point));
                assert_eq!(round_to_i8(v, zero_point), expected, "{v:e} {zero_point}");
            }
        }
    }
}
