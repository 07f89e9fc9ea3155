//! What a linear layer and a convolution share: `y = f(x, W) + b` with an optional bias, a
//! forward pass that preloads the bias into one matrix product, and a backward pass made of
//! two further fused operations, `dx` from `(dy, W)` and `[dW (flattened), db]` from `(x, dy)`.
//!
//! A layer implements [`WeightedLayer`]; [`weighted_custom_ops!`] then makes it candle's
//! `CustomOp2` (without bias) and `CustomOp3` (with bias), and [`apply`] calls the one that
//! fits.

use candle_core::{CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::{Float, Fused};

/// A layer `y = f(x, W) + b`, `b` optional, with fused gradient operations.
pub(crate) trait WeightedLayer: Send + Sync + 'static {
    /// The operation's name in candle's graph and errors.
    const NAME: &'static str;
    /// The operation computing `dx` from `(dy, W)`.
    type InputGrad: CustomOp2;
    /// The operation computing `[dW (flattened), db]` (or `dW` alone) from `(x, dy)`.
    type WeightGrad: CustomOp2;

    /// The output's elements and shape for contiguous `x`, `w` and (when given) bias.
    fn forward<T: Float>(&self, x: &[T], w: &[T], bias: Option<&[T]>) -> (Vec<T>, Shape);
    /// The operation that computes the input gradient.
    fn input_grad(&self) -> Self::InputGrad;
    /// The operation that computes the weight gradient, followed by the bias gradient when
    /// `with_bias`.
    fn weight_grad(&self, with_bias: bool) -> Self::WeightGrad;
    /// Elements of `W`.
    fn weight_len(&self) -> usize;
    /// Elements of `b` (the output channels).
    fn bias_len(&self) -> usize;

    /// The gradients of `x` (unless it needs none), `weight` and, when `with_bias`, the bias.
    fn backward(
        &self,
        x: &Tensor,
        weight: &Tensor,
        grad: &Tensor,
        with_bias: bool,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(weight, &self.input_grad())?)
        } else {
            None
        };
        let flat = x.apply_op2_no_bwd(&grad, &self.weight_grad(with_bias))?;
        let weight_len = self.weight_len();
        let dw = flat.narrow(0, 0, weight_len)?.reshape(weight.shape())?;
        let db = if with_bias {
            Some(flat.narrow(0, weight_len, self.bias_len())?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

impl<L: WeightedLayer> Fused<2> for L {
    fn compute<T: Float>(
        &self,
        [(x, _), (w, _)]: [(&[T], &Layout); 2],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        Ok(self.forward(x, w, None))
    }
}

impl<L: WeightedLayer> Fused<3> for L {
    fn compute<T: Float>(
        &self,
        [(x, _), (w, _), (bias, _)]: [(&[T], &Layout); 3],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        Ok(self.forward(x, w, Some(bias)))
    }
}

/// `layer` applied to contiguous copies of `x`, `weight` and `bias`: differentiable in all.
pub(crate) fn apply<L>(
    layer: L,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor>
where
    L: WeightedLayer + CustomOp2 + CustomOp3,
{
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(bias) => x.apply_op3(&weight, &bias.contiguous()?, layer),
        None => x.apply_op2(&weight, layer),
    }
}

/// Implements candle's `CustomOp2` (without bias) and `CustomOp3` (with bias) for a
/// [`WeightedLayer`] (candle's traits cannot be implemented for every such layer at once).
macro_rules! weighted_custom_ops {
    ($layer:ty) => {
        impl candle_core::CustomOp2 for $layer {
            fn name(&self) -> &'static str {
                <Self as $crate::model::kernels::weighted::WeightedLayer>::NAME
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::model::kernels::cpu_forward(
                    self,
                    candle_core::CustomOp2::name(self),
                    [(s1, l1), (s2, l2)],
                )
            }

            fn bwd(
                &self,
                x: &candle_core::Tensor,
                weight: &candle_core::Tensor,
                _res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)>
            {
                let (dx, dw, _) = $crate::model::kernels::weighted::WeightedLayer::backward(
                    self, x, weight, grad, false,
                )?;
                Ok((dx, Some(dw)))
            }
        }

        impl candle_core::CustomOp3 for $layer {
            fn name(&self) -> &'static str {
                <Self as $crate::model::kernels::weighted::WeightedLayer>::NAME
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::CpuStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::model::kernels::cpu_forward(
                    self,
                    candle_core::CustomOp3::name(self),
                    [(s1, l1), (s2, l2), (s3, l3)],
                )
            }

            #[allow(clippy::type_complexity)]
            fn bwd(
                &self,
                x: &candle_core::Tensor,
                weight: &candle_core::Tensor,
                _bias: &candle_core::Tensor,
                _res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
            )> {
                let (dx, dw, db) = $crate::model::kernels::weighted::WeightedLayer::backward(
                    self, x, weight, grad, true,
                )?;
                Ok((dx, Some(dw), db))
            }
        }
    };
}
pub(crate) use weighted_custom_ops;
