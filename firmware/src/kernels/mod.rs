//! Kernels for every op of the graph, in an int8 and a float variant.
//!
//! Kernels take plain slices. Each checks at entry that every slice has exactly the length its
//! geometry implies (returning [`Error::LengthMismatch`](crate::Error::LengthMismatch)
//! otherwise); after that check, the indexing inside is in bounds by construction, which is
//! the invariant that lets them index directly. [`Blob::parse`](crate::Blob::parse) already
//! guarantees the lengths for blob-driven runs, so the checks never fail there.
//!
//! Float kernels compute in `f32` in a fixed order (no FMA contraction, transcendental
//! functions from [`libm`]), so every target produces the same bits. Float weights are decoded
//! from little-endian bytes in place ([`WeightFormat`]).
//!
//! Int8 tensors that stay in the blob (weights) are `&[i8]`; `i32` and `f32` per-channel data
//! from the blob (biases, requantisation pairs, GroupNorm affine parameters) are read from
//! little-endian bytes once per channel.

pub mod add;
pub mod concat;
pub mod conv2d;
// The products' SIMD and DSP paths: the crate's only `unsafe` code.
#[allow(unsafe_code)]
pub mod dot;
pub mod group_norm;
pub mod linear;
pub mod silu;
pub mod time_embedding;
pub mod upsample;

use crate::format::MIN_SHIFT;
use crate::quant::{rounding_divide_by_pot, saturate_i8, Requant};

/// How float weights are stored: decodes one element from its little-endian bytes.
pub trait WeightFormat: Copy {
    /// Bytes per element.
    const SIZE: usize;
    /// Whether [`dot_f32`](linear::dot_f32) decodes weights into a buffer first (worth it
    /// when decoding costs more than a load: the buffered loop vectorises).
    const DECODE_IN_BLOCKS: bool;
    /// Decodes one element (`bytes` has `SIZE` bytes; anything else decodes to 0).
    fn decode(bytes: &[u8]) -> f32;
}

/// f32 weights.
#[derive(Debug, Clone, Copy)]
pub struct F32Weights;

/// f16 weights, widened to f32 exactly.
#[derive(Debug, Clone, Copy)]
pub struct F16Weights;

impl WeightFormat for F32Weights {
    const SIZE: usize = 4;
    const DECODE_IN_BLOCKS: bool = false;
    #[inline(always)]
    fn decode(bytes: &[u8]) -> f32 {
        match <[u8; 4]>::try_from(bytes) {
            Ok(b) => f32::from_le_bytes(b),
            Err(_) => 0.0,
        }
    }
}

impl WeightFormat for F16Weights {
    const SIZE: usize = 2;
    const DECODE_IN_BLOCKS: bool = true;
    #[inline(always)]
    fn decode(bytes: &[u8]) -> f32 {
        match <[u8; 2]>::try_from(bytes) {
            Ok(b) => f16_to_f32(u16::from_le_bytes(b)),
            Err(_) => 0.0,
        }
    }
}

/// The `f32` equal to the IEEE binary16 value with bits `h` (exact: every f16 is an f32;
/// a NaN becomes the quiet NaN with the payload shifted up, as `half` and F16C give).
///
/// Computed without branches and without ever forming an `f32` subnormal (so flush-to-zero
/// modes cannot change it): all three cases are built and one is selected, which lets the
/// compiler vectorise a loop of conversions. An f16 subnormal `m 2^-24` is converted as the
/// integer `m` times `2^-24`, both exact.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    const TWO_POW_MINUS_24: f32 = 1.0 / 16_777_216.0;
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let exponent = (h >> 10) & 0x1f;
    let mantissa = h & 0x3ff;
    let normal = ((exponent + 112) << 23) | (mantissa << 13);
    let subnormal = (mantissa as f32 * TWO_POW_MINUS_24).to_bits();
    let quiet = if mantissa != 0 { 0x0040_0000 } else { 0 };
    let infinite_or_nan = 0x7f80_0000 | quiet | (mantissa << 13);
    let magnitude = if exponent == 0 {
        subnormal
    } else if exponent == 0x1f {
        infinite_or_nan
    } else {
        normal
    };
    f32::from_bits(sign | magnitude)
}

/// Element `i` of a little-endian `i32` array (0 when out of range, which validated lengths
/// rule out).
#[inline]
pub(crate) fn i32_at(bytes: &[u8], i: usize) -> i32 {
    crate::format::read_u32(bytes, i.wrapping_mul(4)).map_or(0, |v| v as i32)
}

/// Element `i` of a little-endian `f32` array (0 when out of range).
#[inline]
pub(crate) fn f32_at(bytes: &[u8], i: usize) -> f32 {
    crate::format::read_u32(bytes, i.wrapping_mul(4)).map_or(0.0, f32::from_bits)
}

/// Pair `i` of a little-endian `(multiplier, shift)` array.
#[inline]
pub(crate) fn requant_at(bytes: &[u8], i: usize) -> Requant {
    Requant {
        multiplier: i32_at(bytes, 2 * i),
        shift: i32_at(bytes, 2 * i + 1),
    }
}

/// A [`Requant`] of the common form, a multiplier below 1 (`shift <= 0`, so no left shift)
/// that is not `i32::MIN`, applied without the two steps that cannot change its result: the
/// saturating multiplication by `2^0` and the `i32::MIN x i32::MIN` overflow test of the
/// doubling high multiply. [`FastRequant::apply`] equals [`Requant::apply`] for every input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastRequant {
    pub(crate) multiplier: i32,
    pub(crate) right: i32,
}

impl FastRequant {
    /// The fast form of `requant`, if it has the common form.
    #[inline(always)]
    pub(crate) fn new(requant: Requant) -> Option<Self> {
        (requant.shift <= 0 && requant.multiplier != i32::MIN).then(|| FastRequant {
            multiplier: requant.multiplier,
            // As in `multiply_by_quantized_multiplier`.
            right: requant.shift.max(MIN_SHIFT).wrapping_neg(),
        })
    }

    /// [`Requant::apply`]: `rounding_divide_by_pot(srdhm(x, M), -shift)`, with the doubling
    /// high multiply in CMSIS-NN's form `(x M + 2^30) >> 31`, exact unless `x = M = i32::MIN`
    /// (excluded by `new`).
    #[inline(always)]
    pub(crate) fn apply(self, x: i32) -> i32 {
        let high = ((i64::from(x) * i64::from(self.multiplier) + (1i64 << 30)) >> 31) as i32;
        rounding_divide_by_pot(high, self.right)
    }
}

/// `sat(zy + requant(acc))` for each of `acc`: the int8 output of a linear or convolution
/// layer, exactly [`Requant::apply`] (through [`FastRequant`] in the common case), then the
/// zero point and the clamp.
#[inline(always)]
pub(crate) fn requantize<const N: usize>(
    acc: [i32; N],
    requant: Requant,
    output_zero_point: i32,
) -> [i8; N] {
    let out = |v: i32| saturate_i8(v.saturating_add(output_zero_point));
    match FastRequant::new(requant) {
        Some(fast) => acc.map(|a| out(fast.apply(a))),
        None => acc.map(|a| out(requant.apply(a))),
    }
}

/// Optional float value `i` of a bias in format `W` (0 without bias).
#[inline]
pub(crate) fn float_at<W: WeightFormat>(bytes: Option<&[u8]>, i: usize) -> f32 {
    bytes
        .and_then(|b| b.get(i * W::SIZE..(i + 1) * W::SIZE))
        .map_or(0.0, W::decode)
}

/// Sum of `values` in four interleaved lanes (`lane k` takes elements `k mod 4`), combined as
/// `(l0 + l1) + (l2 + l3)`: a fixed order that vectorises and gives the same bits everywhere.
#[inline]
pub fn sum4(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0.0f32; 4];
    for (i, v) in values.enumerate() {
        lanes[i % 4] += v;
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// Applies `f` element-wise from `src` into `dst`, or in place when `src` is `None`.
#[inline]
pub(crate) fn map_into<T: Copy>(src: Option<&[T]>, dst: &mut [T], f: impl Fn(T) -> T) {
    match src {
        Some(src) => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = f(s);
            }
        }
        None => {
            for d in dst.iter_mut() {
                *d = f(*d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MAX_SHIFT;

    #[test]
    fn the_fast_requantisation_equals_the_general_one() {
        let xs = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30) - 1,
            -123_456_789,
            -65_537,
            -3,
            -1,
            0,
            1,
            2,
            77,
            1 << 20,
            987_654_321,
            i32::MAX - 1,
            i32::MAX,
        ];
        let multipliers = [
            0,
            1,
            1 << 30,
            1_518_500_250,
            i32::MAX - 1,
            i32::MAX,
            i32::MIN,
        ];
        let mut fast_cases = 0;
        for shift in -40..=MAX_SHIFT + 2 {
            for &multiplier in &multipliers {
                let requant = Requant { multiplier, shift };
                let Some(fast) = FastRequant::new(requant) else {
                    assert!(shift > 0 || multiplier == i32::MIN);
                    continue;
                };
                fast_cases += 1;
                for &x in &xs {
                    assert_eq!(fast.apply(x), requant.apply(x), "{x} {requant:?}");
                }
            }
        }
        assert!(fast_cases > 200);
    }
}
