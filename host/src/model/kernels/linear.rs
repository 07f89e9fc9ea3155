//! A linear layer `y = x Wᵀ + b` as one GEMM with the bias preloaded, and its gradients as
//! two GEMMs and a column sum.
//!
//! candle's version (`x.matmul(W.t())` plus a broadcast add) costs an extra pass for the bias,
//! reduces the bias gradient with its generic strided reduction and hands the optimiser a
//! transposed (non-contiguous) weight gradient.

use candle_core::{Layout, Shape, Tensor};
use gemm::Parallelism;

use super::matmul::{matmul, Operand};
use super::weighted::{self, weighted_custom_ops, WeightedLayer};
use super::{gradient_free_op, threads, Float, Fused};
use crate::error::{Error, Result};

/// `x Wᵀ + b` for `x: [B, in]`, `weight: [out, in]`, `bias: [out]`; differentiable.
///
/// # Errors
/// [`Error::Invalid`] when the shapes do not fit; [`Error::Candle`] when the tensors are not
/// CPU `f32`/`f64` tensors of one type.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (&[batch, inputs], &[outputs, w_inputs]) = (x.dims(), weight.dims()) else {
        return Err(Error::Invalid(format!(
            "linear: expected [B, in] and [out, in], got {:?} and {:?}",
            x.dims(),
            weight.dims()
        )));
    };
    if inputs != w_inputs || bias.is_some_and(|b| b.dims() != [outputs]) {
        return Err(Error::Invalid(format!(
            "linear: weight {:?} and bias {:?} do not fit inputs {:?}",
            weight.dims(),
            bias.map(Tensor::dims),
            x.dims()
        )));
    }
    let sizes = Sizes {
        batch,
        inputs,
        outputs,
    };
    Ok(weighted::apply(Linear { sizes }, x, weight, bias)?)
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    batch: usize,
    inputs: usize,
    outputs: usize,
}

impl Sizes {
    /// All threads for products of at least 16 Mi multiply-adds, one below: the MLP preset's
    /// layers (64 x 256 x 256, 4 Mi) took as long on two threads as on one, and then lost
    /// the most when another process held a core.
    fn parallelism(&self) -> Parallelism {
        let workers = threads();
        if workers > 1 && self.batch * self.inputs * self.outputs >= 1 << 24 {
            Parallelism::Rayon(workers)
        } else {
            Parallelism::None
        }
    }
}

/// The forward operation (custom op 2 without bias, 3 with).
struct Linear {
    sizes: Sizes,
}

impl WeightedLayer for Linear {
    const NAME: &'static str = "ddm-linear";
    type InputGrad = LinearInputGrad;
    type WeightGrad = LinearWeightGrad;

    fn forward<T: Float>(&self, x: &[T], w: &[T], bias: Option<&[T]>) -> (Vec<T>, Shape) {
        let Sizes {
            batch,
            inputs,
            outputs,
        } = self.sizes;
        let mut y = match bias {
            Some(bias) => bias.repeat(batch),
            None => vec![T::ZERO; batch * outputs],
        };
        // SAFETY: `x` is `[batch, inputs]`, `Wᵀ` `[inputs, outputs]` (the transpose of the
        // row-major `w`), `y` `[batch, outputs]`, separate from both.
        unsafe {
            matmul(
                batch,
                outputs,
                inputs,
                &mut y,
                bias.is_some(),
                Operand::rows(x, inputs),
                Operand::transposed(w, inputs),
                self.sizes.parallelism(),
            )
        };
        (y, (batch, outputs).into())
    }

    fn input_grad(&self) -> LinearInputGrad {
        LinearInputGrad { sizes: self.sizes }
    }

    fn weight_grad(&self, with_bias: bool) -> LinearWeightGrad {
        LinearWeightGrad {
            sizes: self.sizes,
            with_bias,
        }
    }

    fn weight_len(&self) -> usize {
        self.sizes.outputs * self.sizes.inputs
    }

    fn bias_len(&self) -> usize {
        self.sizes.outputs
    }
}

weighted_custom_ops!(Linear);

/// `dx = dy W` from `(dy, W)`.
struct LinearInputGrad {
    sizes: Sizes,
}

impl Fused<2> for LinearInputGrad {
    fn compute<T: Float>(
        &self,
        [(dy, _), (w, _)]: [(&[T], &Layout); 2],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let Sizes {
            batch,
            inputs,
            outputs,
        } = self.sizes;
        let mut dx = vec![T::ZERO; batch * inputs];
        // SAFETY: `dy` is `[batch, outputs]`, `w` `[outputs, inputs]`, both row-major and
        // separate from `dx` (`[batch, inputs]`).
        unsafe {
            matmul(
                batch,
                inputs,
                outputs,
                &mut dx,
                false,
                Operand::rows(dy, outputs),
                Operand::rows(w, inputs),
                self.sizes.parallelism(),
            )
        };
        Ok((dx, (batch, inputs).into()))
    }
}

gradient_free_op!(CustomOp2 for LinearInputGrad, "ddm-linear-input-grad");

/// `[dW (flattened), db]` from `(x, dy)`: `dW = dyᵀ x`, `db` the column sums of `dy`.
struct LinearWeightGrad {
    sizes: Sizes,
    with_bias: bool,
}

impl Fused<2> for LinearWeightGrad {
    fn compute<T: Float>(
        &self,
        [(x, _), (dy, _)]: [(&[T], &Layout); 2],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let Sizes {
            batch,
            inputs,
            outputs,
        } = self.sizes;
        let weight_len = outputs * inputs;
        let len = weight_len + if self.with_bias { outputs } else { 0 };
        let mut out = vec![T::ZERO; len];
        let (dw, db) = out.split_at_mut(weight_len);
        // SAFETY: `dyᵀ` is `[outputs, batch]` (the transpose of the row-major `dy`), `x`
        // is `[batch, inputs]`; `dw` (`[outputs, inputs]`) overlaps neither.
        unsafe {
            matmul(
                outputs,
                inputs,
                batch,
                dw,
                false,
                Operand::transposed(dy, outputs),
                Operand::rows(x, inputs),
                self.sizes.parallelism(),
            )
        };
        for row in dy.chunks_exact(outputs) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
        Ok((out, len.into()))
    }
}

gradient_free_op!(CustomOp2 for LinearWeightGrad, "ddm-linear-weight-grad");
