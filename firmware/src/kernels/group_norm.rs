//! Group normalisation: `y = gamma_c (x - mean_g) / sqrt(var_g + eps) + beta_c`, statistics
//! over the `C / groups` channels of each group and all their positions (biased variance).
//!
//! The data is channel-major, so each group is one contiguous run of `C / groups x H x W`
//! elements. Both variants may run in place (`src = None`).
//!
//! int8: the group's moments are exact integers (`sum q` and `sum q^2` in `i64`), turned into
//! `f32` once per group; each element then costs one multiply-add in `f32` and a rounding:
//!
//! ```text
//! mean = sum / n                          (quantised units, f32)
//! var  = (n sumsq - sum^2) / (n n)        (numerator exact in i64)
//! rstd = 1 / sqrtf(var (s_x s_x) + eps)
//! k_c  = ((gamma_c rstd) s_x) / s_y
//! b_c  = beta_c / s_y - k_c mean
//! y    = clamp(roundf(k_c q + b_c) + z_y)
//! ```
//!
//! A channel of at least [`TABLE_MIN_SPATIAL`] positions evaluates `y` once for each of the
//! 256 int8 inputs and looks the elements up; on x86-64 (`std`) the moments and `y` run in
//! vector lanes instead (the same bytes).
//!
//! float: `mean = sum4(x) / n`, `var = sum4((x - mean)^2) / n`, `rstd = 1 / sqrtf(var + eps)`,
//! `y = (x - mean) (gamma_c rstd) + beta_c` ([`sum4`] fixes the summation order).

use super::dot::{self, Path};
use super::{f32_at, sum4};
use crate::error::{check_len, Error, Result};
use crate::quant::{round_to_i8, QuantParams};

/// Layout of one group norm: `channels x spatial` elements in `groups` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GroupNormGeometry {
    /// Channels `C`.
    pub channels: usize,
    /// Positions per channel (`H W`, 1 for vectors).
    pub spatial: usize,
    /// Number of groups (divides `C`).
    pub groups: usize,
}

impl GroupNormGeometry {
    fn check(&self, len: usize, gamma: &[u8], beta: &[u8]) -> Result<(usize, usize)> {
        if self.groups == 0 || !self.channels.is_multiple_of(self.groups) || self.spatial == 0 {
            return Err(Error::InvalidModel("groups must divide the channels"));
        }
        check_len(
            "group norm data",
            self.channels.saturating_mul(self.spatial),
            len,
        )?;
        check_len(
            "group norm gamma",
            self.channels.saturating_mul(4),
            gamma.len(),
        )?;
        check_len(
            "group norm beta",
            self.channels.saturating_mul(4),
            beta.len(),
        )?;
        let per_group = self.channels / self.groups;
        let group_len = per_group * self.spatial;
        if group_len > crate::format::MAX_GROUP_LEN {
            return Err(Error::InvalidModel("group norm group too large"));
        }
        Ok((per_group, group_len))
    }
}

/// Positions per channel from which [`group_norm_s8`] tabulates a channel's output over the
/// 256 input values instead of evaluating it per element (the same bytes either way).
pub const TABLE_MIN_SPATIAL: usize = 512;

/// `(sum q, sum q^2)` of int8 values, exact.
fn moments(values: &[i8]) -> (i64, i64) {
    let (mut sum, mut sum_sq) = (0i64, 0i64);
    // Chunks of 2^16 keep the i32 partial sums exact (2^16 x 2^14 = 2^30).
    for chunk in values.chunks(1 << 16) {
        let (s, q) = chunk.iter().fold((0i32, 0i32), |(s, q), &v| {
            let v = i32::from(v);
            (s + v, q + v * v)
        });
        sum += i64::from(s);
        sum_sq += i64::from(q);
    }
    (sum, sum_sq)
}

/// int8 group norm from `src` (or in place in `dst` when `src` is `None`), on the CPU's
/// fastest [`Path`] ([`group_norm_s8_on`]).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_s8(
    g: &GroupNormGeometry,
    eps: f32,
    gamma: &[u8],
    beta: &[u8],
    input: QuantParams,
    output: QuantParams,
    src: Option<&[i8]>,
    dst: &mut [i8],
) -> Result<()> {
    group_norm_s8_on(Path::detect(), g, eps, gamma, beta, input, output, src, dst)
}

/// [`group_norm_s8`] on `path`: the moments and the per-channel `k q + b` in vector lanes where
/// the path has kernels for them (x86-64), the same bytes on every path.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_s8_on(
    path: Path,
    g: &GroupNormGeometry,
    eps: f32,
    gamma: &[u8],
    beta: &[u8],
    input: QuantParams,
    output: QuantParams,
    src: Option<&[i8]>,
    dst: &mut [i8],
) -> Result<()> {
    let (per_group, group_len) = g.check(dst.len(), gamma, beta)?;
    if let Some(src) = src {
        check_len("group norm input", dst.len(), src.len())?;
    }
    let n = group_len as i64;
    let nf = group_len as f32;
    let s_x = input.scale;
    for (group, dst) in dst.chunks_exact_mut(group_len).enumerate() {
        let range = group * group_len..(group + 1) * group_len;
        let src = src.map(|s| &s[range]);
        let values = src.unwrap_or(&*dst);
        let (sum, sum_sq) = dot::moments(path, values).unwrap_or_else(|| moments(values));
        let mean = sum as f32 / nf;
        let var = (n * sum_sq - sum * sum) as f32 / (nf * nf);
        let rstd = 1.0 / libm::sqrtf(var * (s_x * s_x) + eps);
        for (c, dst) in dst.chunks_exact_mut(g.spatial).enumerate() {
            let channel = group * per_group + c;
            let k = ((f32_at(gamma, channel) * rstd) * s_x) / output.scale;
            let b = f32_at(beta, channel) / output.scale - k * mean;
            let f = |q: i8| round_to_i8(k * f32::from(q) + b, output.zero_point);
            let src = src.map(|s| &s[c * g.spatial..(c + 1) * g.spatial]);
            let done = dot::affine_prefix(path, k, b, output.zero_point, src, dst);
            let (src, dst) = (src.map(|s| &s[done..]), &mut dst[done..]);
            if g.spatial - done >= TABLE_MIN_SPATIAL {
                // The same function of the 256 possible inputs, evaluated once each.
                let table: [i8; 256] = core::array::from_fn(|i| f(i as u8 as i8));
                super::map_into(src, dst, |q| table[usize::from(q as u8)]);
            } else {
                super::map_into(src, dst, f);
            }
        }
    }
    Ok(())
}

/// Float group norm from `src` (or in place in `dst` when `src` is `None`).
pub fn group_norm_f32(
    g: &GroupNormGeometry,
    eps: f32,
    gamma: &[u8],
    beta: &[u8],
    src: Option<&[f32]>,
    dst: &mut [f32],
) -> Result<()> {
    let (per_group, group_len) = g.check(dst.len(), gamma, beta)?;
    if let Some(src) = src {
        check_len("group norm input", dst.len(), src.len())?;
    }
    let nf = group_len as f32;
    for (group, dst) in dst.chunks_exact_mut(group_len).enumerate() {
        let range = group * group_len..(group + 1) * group_len;
        let src = src.map(|s| &s[range]);
        let data = src.unwrap_or(&*dst);
        let mean = sum4(data.iter().copied()) / nf;
        let var = sum4(data.iter().map(|&x| (x - mean) * (x - mean))) / nf;
        let rstd = 1.0 / libm::sqrtf(var + eps);
        for (c, dst) in dst.chunks_exact_mut(g.spatial).enumerate() {
            let channel = group * per_group + c;
            let k = f32_at(gamma, channel) * rstd;
            let b = f32_at(beta, channel);
            let src = src.map(|s| &s[c * g.spatial..(c + 1) * g.spatial]);
            super::map_into(src, dst, |x| (x - mean) * k + b);
        }
    }
    Ok(())
}
