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
pub mod group_norm;
pub mod linear;
pub mod silu;
pub mod time_embedding;
pub mod upsample;

use crate::quant::Requant;

/// How float weights are stored: decodes one element from its little-endian bytes.
pub trait WeightFormat: Copy {
    /// Bytes per element.
    const SIZE: usize;
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
    #[inline(always)]
    fn decode(bytes: &[u8]) -> f32 {
        match <[u8; 2]>::try_from(bytes) {
            Ok(b) => half::f16::from_bits(u16::from_le_bytes(b)).to_f32(),
            Err(_) => 0.0,
        }
    }
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
