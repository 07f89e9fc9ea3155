//! The optimiser's loops over raw buffers: AdamW's update and the gradient norm.
//!
//! Written with candle operations, one AdamW update is about a dozen passes over every
//! parameter, each allocating a tensor; for the MLP preset that is a quarter of a training
//! step. Here it is one pass that updates the parameter in place.

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Storage, Tensor};

use super::simd::{self, vectorize, Kernel};
use crate::error::Result;

/// The coefficients of one AdamW update (see [`crate::train::optim::AdamW`]).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// `β1`.
    pub beta1: f64,
    /// `β2`.
    pub beta2: f64,
    /// `1 - β1^t`.
    pub correction1: f64,
    /// `1 - β2^t`.
    pub correction2: f64,
    /// `ε`.
    pub eps: f64,
    /// The learning rate.
    pub lr: f64,
    /// The factor applied to the parameter before the update: `1 - lr wd`, or 1 without
    /// weight decay.
    pub decay: f64,
}

/// Whether [`adamw_update`] applies to `param` (a CPU `f32` tensor).
pub fn adamw_applies(param: &Tensor) -> bool {
    param.device().is_cpu() && param.dtype() == DType::F32
}

/// One AdamW update of `param` in place (a contiguous CPU `f32` tensor, e.g. a `Var`'s), with
/// its gradient `grad` and moments `m` and `v` (updated too):
///
/// ```text
/// m <- β1 m + (1 - β1) g     v <- β2 v + (1 - β2) g²
/// p <- decay p - lr (m / c1) / (sqrt(v / c2) + ε)
/// ```
///
/// # Errors
/// [`crate::Error::Candle`] when the tensors are not CPU `f32` tensors of the moments' size.
pub fn adamw_update(
    param: &Tensor,
    grad: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    step: &AdamWStep,
) -> Result<()> {
    let update = AdamWUpdate {
        moments: RefCell::new((m, v)),
        step: *step,
    };
    param.inplace_op2(&grad.contiguous()?, &update)?;
    Ok(())
}

/// `sum_i g_i²` over all `grads` (in `f64`, tensor by tensor in order), or `None` unless they
/// are all CPU `f32` or `f64` tensors.
pub fn sum_of_squares(grads: &[Tensor]) -> Result<Option<f64>> {
    let mut total = 0.0f64;
    for grad in grads {
        if !grad.device().is_cpu() || !matches!(grad.dtype(), DType::F32 | DType::F64) {
            return Ok(None);
        }
        let grad = grad.contiguous()?;
        let (storage, layout) = grad.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Ok(None);
        };
        total += match &*storage {
            Storage::Cpu(CpuStorage::F32(values)) => vectorize(SumOfSquares(&values[start..end])),
            Storage::Cpu(CpuStorage::F64(values)) => vectorize(SumOfSquares(&values[start..end])),
            _ => return Ok(None),
        };
    }
    Ok(Some(total))
}

/// `sum x²`.
struct SumOfSquares<'a, T>(&'a [T]);

impl<T: super::Float> Kernel for SumOfSquares<'_, T> {
    type Output = f64;

    #[inline(always)]
    fn run(self) -> f64 {
        let x = self.0;
        simd::sum_by(x.len(), |i| x[i] * x[i])
    }
}

/// The in-place AdamW update of a parameter, with its moments.
struct AdamWUpdate<'a> {
    moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
    step: AdamWStep,
}

impl InplaceOp2 for AdamWUpdate<'_> {
    fn name(&self) -> &'static str {
        "ddm-adamw"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(param), CpuStorage::F32(grad)) = (param, grad) else {
            candle_core::bail!("{}: expected f32 parameters and gradients", self.name())
        };
        let (Some((p_start, p_end)), Some((g_start, g_end))) = (
            param_layout.contiguous_offsets(),
            grad_layout.contiguous_offsets(),
        ) else {
            candle_core::bail!("{}: expected contiguous tensors", self.name())
        };
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        let (param, grad) = (&mut param[p_start..p_end], &grad[g_start..g_end]);
        if grad.len() != param.len() || m.len() != param.len() || v.len() != param.len() {
            candle_core::bail!(
                "{}: {} parameters, {} gradients, {} and {} moments",
                self.name(),
                param.len(),
                grad.len(),
                m.len(),
                v.len()
            )
        }
        vectorize(AdamWKernel {
            param,
            grad,
            m,
            v,
            step: self.step,
        });
        Ok(())
    }
}

/// The element-wise loop of [`AdamWUpdate`].
struct AdamWKernel<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    step: AdamWStep,
}

impl Kernel for AdamWKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let s = self.step;
        let (beta1, beta2) = (s.beta1 as f32, s.beta2 as f32);
        let (one_minus_beta1, one_minus_beta2) = ((1.0 - s.beta1) as f32, (1.0 - s.beta2) as f32);
        let (inv_c1, inv_c2) = ((1.0 / s.correction1) as f32, (1.0 / s.correction2) as f32);
        let (eps, lr, decay) = (s.eps as f32, s.lr as f32, s.decay as f32);
        for (((p, &g), m), v) in self
            .param
            .iter_mut()
            .zip(self.grad)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            *m = beta1 * *m + one_minus_beta1 * g;
            *v = beta2 * *v + one_minus_beta2 * (g * g);
            let denominator = (*v * inv_c2).sqrt() + eps;
            *p = decay * *p - lr * (*m * inv_c1) / denominator;
        }
    }
}
