//! A linear layer `y = x Wᵀ + b` as one GEMM with the bias preloaded, and its gradients as
//! two GEMMs and a column sum.
//!
//! candle's version (`x.matmul(W.t())` plus a broadcast add) costs an extra pass for the bias,
//! reduces the bias gradient with its generic strided reduction and hands the optimiser a
//! transposed (non-contiguous) weight gradient.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;

use super::matmul::{matmul, Operand};
use super::{dispatch_float, slice, threads, Float};
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
    let op = Linear {
        sizes: Sizes {
            batch,
            inputs,
            outputs,
        },
    };
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    Ok(match bias {
        Some(bias) => x.apply_op3(&weight, &bias.contiguous()?, op)?,
        None => x.apply_op2(&weight, op)?,
    })
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

impl Linear {
    fn forward<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        bias: Option<&[T]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
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
        Ok((T::storage(y), (batch, outputs).into()))
    }

    fn backward(
        &self,
        x: &Tensor,
        weight: &Tensor,
        grad: &Tensor,
        with_bias: bool,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(weight, &LinearInputGrad { sizes: self.sizes })?)
        } else {
            None
        };
        let flat = x.apply_op2_no_bwd(
            &grad,
            &LinearWeightGrad {
                sizes: self.sizes,
                with_bias,
            },
        )?;
        let weight_len = self.sizes.outputs * self.sizes.inputs;
        let dw = flat.narrow(0, 0, weight_len)?.reshape(weight.shape())?;
        let db = if with_bias {
            Some(flat.narrow(0, weight_len, self.sizes.outputs)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "ddm-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Float>(
            op: &Linear,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            op.forward::<T>(slice(s1, l1, "linear")?, slice(s2, l2, "linear")?, None)
        }
        dispatch_float!("linear", s1, run(self, s1, l1, s2, l2))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, weight, grad, false)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "ddm-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        #[allow(clippy::too_many_arguments)]
        fn run<T: Float>(
            op: &Linear,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            op.forward::<T>(
                slice(s1, l1, "linear")?,
                slice(s2, l2, "linear")?,
                Some(slice(s3, l3, "linear")?),
            )
        }
        dispatch_float!("linear", s1, run(self, s1, l1, s2, l2, s3, l3))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.backward(x, weight, grad, true)?;
        Ok((dx, Some(dw), db))
    }
}

/// `dx = dy W` from `(dy, W)`.
struct LinearInputGrad {
    sizes: Sizes,
}

impl CustomOp2 for LinearInputGrad {
    fn name(&self) -> &'static str {
        "ddm-linear-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Float>(
            sizes: Sizes,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let dy = slice::<T>(s1, l1, "linear input gradient")?;
            let w = slice::<T>(s2, l2, "linear input gradient")?;
            let Sizes {
                batch,
                inputs,
                outputs,
            } = sizes;
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
                    sizes.parallelism(),
                )
            };
            Ok((T::storage(dx), (batch, inputs).into()))
        }
        dispatch_float!(self.name(), s1, run(self.sizes, s1, l1, s2, l2))
    }
}

/// `[dW (flattened), db]` from `(x, dy)`: `dW = dyᵀ x`, `db` the column sums of `dy`.
struct LinearWeightGrad {
    sizes: Sizes,
    with_bias: bool,
}

impl CustomOp2 for LinearWeightGrad {
    fn name(&self) -> &'static str {
        "ddm-linear-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: Float>(
            op: &LinearWeightGrad,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let x = slice::<T>(s1, l1, "linear weight gradient")?;
            let dy = slice::<T>(s2, l2, "linear weight gradient")?;
            let Sizes {
                batch,
                inputs,
                outputs,
            } = op.sizes;
            let weight_len = outputs * inputs;
            let len = weight_len + if op.with_bias { outputs } else { 0 };
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
                    op.sizes.parallelism(),
                )
            };
            for row in dy.chunks_exact(outputs) {
                for (d, &g) in db.iter_mut().zip(row) {
                    *d += g;
                }
            }
            Ok((T::storage(out), len.into()))
        }
        dispatch_float!(self.name(), s1, run(self, s1, l1, s2, l2))
    }
}
