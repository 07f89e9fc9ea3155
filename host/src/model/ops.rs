//! One function per graph [`Op`](ddm_export::graph::Op), on batched candle tensors.
//!
//! Every function takes tensors whose leading dimension is the batch `B` and whose remaining
//! dimensions are the per-sample shape the graph records. They are differentiable, so
//! gradients flow through them. On the CPU (`f32` and `f64`), convolution, GroupNorm, SiLU,
//! the per-channel add and upsampling run as the fused kernels of [`super::kernels`];
//! elsewhere, or inside [`kernels::with_kernels`]`(Kernels::Candle, ..)`, as compositions of
//! candle's own operations (the reference the kernels are tested against).

use candle_core::{Tensor, D};

use super::kernels::{self, fused_applies};
use crate::error::{Error, Result};

/// Sinusoidal embedding of timesteps `t` (`[B]`, a float type): `[sin(t f_i), cos(t f_i)]`
/// with `f_i = exp(-ln(max_period) i / (dim / 2))` for `i < dim / 2`. Returns `[B, dim]` in
/// `t`'s type.
///
/// The frequencies are computed in `f64` and rounded to `t`'s type; the products `t f_i` and
/// the sines are evaluated in that type on the tensor's device.
pub fn time_embedding(t: &Tensor, dim: usize, max_period: f32) -> Result<Tensor> {
    if dim == 0 || !dim.is_multiple_of(2) {
        return Err(Error::Invalid(format!(
            "the time embedding needs an even dimension, got {dim}"
        )));
    }
    let half = dim / 2;
    let frequencies: Vec<f32> = (0..half)
        .map(|i| (-(f64::from(max_period)).ln() * i as f64 / half as f64).exp() as f32)
        .collect();
    let frequencies = Tensor::from_vec(frequencies, (1, half), t.device())?.to_dtype(t.dtype())?;
    let batch = t.dim(0)?;
    let arguments = t.reshape((batch, 1))?.broadcast_mul(&frequencies)?;
    Ok(Tensor::cat(&[arguments.sin()?, arguments.cos()?], 1)?)
}

/// Rows of the class embedding table `[classes + 1, dim]`: `table[y_i]` for each class
/// `y_i` of `classes` (`[B]`, `u32`), or the last row ("no class") for every sample when
/// `classes` is `None`. Returns `[B, dim]`.
///
/// # Errors
/// [`Error::Invalid`] for a class `>= classes` (the "no class" row itself is allowed) or
/// labels of another length than the batch.
pub fn class_embedding(table: &Tensor, classes: Option<&Tensor>, batch: usize) -> Result<Tensor> {
    let rows = table.dim(0)?;
    let null = u32::try_from(rows - 1).map_err(|_| Error::Invalid("class table too big".into()))?;
    let ids = match classes {
        Some(ids) => {
            let ids = ids.to_dtype(candle_core::DType::U32)?;
            let values: Vec<u32> = ids.to_vec1()?;
            if values.len() != batch {
                return Err(Error::Invalid(format!(
                    "expected one class per sample ({batch}), got {}",
                    values.len()
                )));
            }
            if let Some(bad) = values.iter().find(|&&y| y > null) {
                return Err(Error::Invalid(format!(
                    "class {bad} is outside the model's classes 0..{null}"
                )));
            }
            ids
        }
        None => Tensor::full(null, batch, table.device())?,
    };
    Ok(table.index_select(&ids, 0)?)
}

/// `y = x W^T + b` for `x: [B, in]`, `weight: [out, in]`, `bias: [out]`. Returns `[B, out]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if fused_applies(&[x, weight]) && bias.is_none_or(|b| fused_applies(&[x, b])) {
        return kernels::linear(x, weight, bias);
    }
    let y = x.matmul(&weight.t()?)?;
    Ok(match bias {
        Some(bias) => y.broadcast_add(bias)?,
        None => y,
    })
}

/// 2-D convolution of `x: [B, C_in, H, W]` with `weight: [C_out, C_in, k, k]`, zero padding
/// `padding` and stride `stride`, plus `bias: [C_out]`. Returns `[B, C_out, H', W']` with
/// `H' = (H + 2 padding - k) / stride + 1`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if fused_applies(&[x, weight]) && bias.is_none_or(|b| fused_applies(&[x, b])) {
        return kernels::conv2d(x, weight, bias, stride, padding);
    }
    let y = x.conv2d(weight, padding, stride, 1, 1)?;
    Ok(match bias {
        Some(bias) => {
            let channels = bias.dim(0)?;
            y.broadcast_add(&bias.reshape((1, channels, 1, 1))?)?
        }
        None => y,
    })
}

/// Group normalisation of `x: [B, C, ...]` (vectors `[B, C]` or maps `[B, C, H, W]`): each
/// sample's channels are split into `groups` groups, each normalised to zero mean and unit
/// variance (biased, plus `eps`) over its channels and positions, then scaled by
/// `weight: [C]` and shifted by `bias: [C]` per channel.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    eps: f32,
    weight: &Tensor,
    bias: &Tensor,
) -> Result<Tensor> {
    if fused_applies(&[x, weight, bias]) {
        return kernels::group_norm(x, groups, eps, weight, bias, false);
    }
    let dims = x.dims().to_vec();
    if dims.len() < 2 || groups == 0 || !dims[1].is_multiple_of(groups) {
        return Err(Error::Invalid(format!(
            "group norm: {groups} groups do not divide the channels of shape {dims:?}"
        )));
    }
    let grouped = x.reshape((dims[0], groups, ()))?;
    let mean = grouped.mean_keepdim(D::Minus1)?;
    let centered = grouped.broadcast_sub(&mean)?;
    let variance = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normalised = centered
        .broadcast_div(&(variance + f64::from(eps))?.sqrt()?)?
        .reshape(dims.as_slice())?;
    let mut channel_shape = vec![1usize; dims.len()];
    channel_shape[1] = dims[1];
    Ok(normalised
        .broadcast_mul(&weight.reshape(channel_shape.as_slice())?)?
        .broadcast_add(&bias.reshape(channel_shape.as_slice())?)?)
}

/// [`group_norm`] followed by [`silu`], in one pass on the CPU.
pub fn group_norm_silu(
    x: &Tensor,
    groups: usize,
    eps: f32,
    weight: &Tensor,
    bias: &Tensor,
) -> Result<Tensor> {
    if fused_applies(&[x, weight, bias]) {
        return kernels::group_norm(x, groups, eps, weight, bias, true);
    }
    silu(&group_norm(x, groups, eps, weight, bias)?)
}

/// `x * sigmoid(x)`, element-wise.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if fused_applies(&[x]) {
        return kernels::silu(x);
    }
    Ok(x.silu()?)
}

/// `lhs + rhs` where `rhs` has the shape of `lhs`, or `lhs` is `[B, C, H, W]` and `rhs` is
/// `[B, C]` (added at every position).
pub fn add(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    if lhs.dims() == rhs.dims() {
        return Ok(lhs.add(rhs)?);
    }
    match (lhs.dims(), rhs.dims()) {
        (&[b, c, _, _], &[rb, rc]) if (b, c) == (rb, rc) => {
            if fused_applies(&[lhs, rhs]) {
                return kernels::add_channels(lhs, rhs);
            }
            Ok(lhs.broadcast_add(&rhs.reshape((b, c, 1, 1))?)?)
        }
        (l, r) => Err(Error::Invalid(format!("cannot add shapes {l:?} and {r:?}"))),
    }
}

/// Concatenation along the channel axis (dimension 1 of the batched tensors).
pub fn concat(inputs: &[&Tensor]) -> Result<Tensor> {
    Ok(Tensor::cat(inputs, 1)?)
}

/// Nearest-neighbour 2x upsampling of `x: [B, C, H, W]` to `[B, C, 2H, 2W]`.
///
/// Written as a broadcast (whose gradient is a sum over the copies) rather than candle's
/// `upsample_nearest2d`, whose backward pass overwrites instead of accumulating gradients.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    if fused_applies(&[x]) {
        return kernels::upsample2x(x);
    }
    let (b, c, h, w) = x.dims4()?;
    Ok(x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))?)
}

/// A new per-sample `shape` for `x: [B, ...]` (same number of elements).
pub fn reshape(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let mut batched = Vec::with_capacity(shape.len() + 1);
    batched.push(x.dim(0)?);
    batched.extend_from_slice(shape);
    Ok(x.reshape(batched)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensor(values: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn time_embedding_matches_its_formula() {
        let t = tensor(&[0.0, 3.0], &[2]);
        let e = values(&time_embedding(&t, 4, 10_000.0).unwrap());
        // f = [1, 0.01]: t = 0 gives [0, 0, 1, 1]; t = 3 gives [sin 3, sin .03, cos 3, cos .03].
        let expected = [
            0.0,
            0.0,
            1.0,
            1.0,
            3f32.sin(),
            0.03f32.sin(),
            3f32.cos(),
            0.03f32.cos(),
        ];
        for (a, b) in e.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{e:?}");
        }
        assert!(time_embedding(&t, 3, 10_000.0).is_err());
    }

    #[test]
    fn group_norm_normalises_each_group() {
        let x = tensor(&[1.0, 3.0, 10.0, 30.0], &[1, 4]);
        let ones = tensor(&[1.0; 4], &[4]);
        let zeros = tensor(&[0.0; 4], &[4]);
        let y = values(&group_norm(&x, 2, 1e-5, &ones, &zeros).unwrap());
        for (a, b) in y.iter().zip([-1.0, 1.0, -1.0, 1.0]) {
            assert!((a - b).abs() < 1e-4, "{y:?}");
        }
        assert!(group_norm(&x, 3, 1e-5, &ones, &zeros).is_err());
    }

    #[test]
    fn upsample_repeats_pixels_and_add_broadcasts_channels() {
        let x = tensor(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
        let up = values(&upsample2x(&x).unwrap());
        assert_eq!(
            up,
            vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0]
        );
        let sum = values(&add(&x, &tensor(&[10.0], &[1, 1])).unwrap());
        assert_eq!(sum, vec![11.0, 12.0, 13.0, 14.0]);
        assert!(add(&x, &tensor(&[1.0, 2.0], &[1, 2])).is_err());
    }

    #[test]
    fn linear_and_conv_apply_weights_and_bias() {
        let x = tensor(&[1.0, 2.0], &[1, 2]);
        let w = tensor(&[1.0, 0.0, 1.0, 1.0, 0.0, -1.0], &[3, 2]);
        let b = tensor(&[0.5, 0.0, 0.0], &[3]);
        assert_eq!(
            values(&linear(&x, &w, Some(&b)).unwrap()),
            vec![1.5, 3.0, -2.0]
        );
        // A 1x1 convolution is a per-pixel linear map.
        let image = tensor(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
        let kernel = tensor(&[2.0], &[1, 1, 1, 1]);
        let bias = tensor(&[1.0], &[1]);
        assert_eq!(
            values(&conv2d(&image, &kernel, Some(&bias), 1, 0).unwrap()),
            vec![3.0, 5.0, 7.0, 9.0]
        );
    }
}
