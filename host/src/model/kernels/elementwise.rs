//! One-pass element-wise operations: SiLU, the per-channel add of the time embedding and
//! nearest 2x upsampling, each with a one-pass gradient.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::simd::{self, vectorize, Kernel};
use super::{
    cpu_forward, for_sample_runs, gradient_free_op, threads, zeros, Float, Fused,
    PARALLEL_MIN_ELEMENTS,
};
use crate::error::{Error, Result};

/// `x sigmoid(x)`, element-wise, differentiable.
///
/// # Errors
/// [`Error::Candle`] when `x` is not a CPU `f32`/`f64` tensor.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Silu)?)
}

/// `lhs + rhs` at every position, for `lhs: [B, C, ...]` and `rhs: [B, C]`; differentiable.
///
/// # Errors
/// [`Error::Invalid`] when the leading dimensions differ; [`Error::Candle`] when the tensors
/// are not CPU `f32`/`f64` tensors of one type.
pub fn add_channels(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    let dims = lhs.dims();
    if dims.len() < 2 || rhs.dims() != &dims[..2] {
        return Err(Error::Invalid(format!(
            "cannot add shapes {dims:?} and {:?} per channel",
            rhs.dims()
        )));
    }
    Ok(lhs
        .contiguous()?
        .apply_op2(&rhs.contiguous()?, AddChannels)?)
}

/// Nearest-neighbour 2x upsampling of `x: [B, C, H, W]` to `[B, C, 2H, 2W]`; differentiable.
///
/// # Errors
/// [`Error::Candle`] when `x` is not a CPU `f32`/`f64` tensor of rank 4.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    x.dims4()?;
    Ok(x.contiguous()?.apply_op1(Upsample2x)?)
}

/// Runs `f(start, out)` over consecutive pieces of `out` (`start` being the piece's offset),
/// split over rayon's threads when it is long enough.
fn for_pieces<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    let workers = threads();
    if workers <= 1 || out.len() < 2 * PARALLEL_MIN_ELEMENTS {
        f(0, out);
        return;
    }
    let piece = out.len().div_ceil(workers).next_multiple_of(64);
    out.par_chunks_mut(piece)
        .enumerate()
        .for_each(|(i, out)| f(i * piece, out));
}

/// SiLU forward.
struct Silu;

impl Fused<1> for Silu {
    fn compute<T: Float>(
        &self,
        [(x, layout)]: [(&[T], &Layout); 1],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let mut y = zeros(x.len());
        for_pieces(&mut y, |start, y| {
            vectorize(SiluKernel {
                x: &x[start..][..y.len()],
                y,
            })
        });
        Ok((y, layout.shape().clone()))
    }
}

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "ddm-silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_forward(self, self.name(), [(s, l)])
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &SiluGrad)?))
    }
}

/// `dy silu'(x)` from `(x, dy)`.
struct SiluGrad;

impl Fused<2> for SiluGrad {
    fn compute<T: Float>(
        &self,
        [(x, layout), (dy, _)]: [(&[T], &Layout); 2],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let mut dx = zeros(x.len());
        for_pieces(&mut dx, |start, dx| {
            let len = dx.len();
            vectorize(SiluGradKernel {
                x: &x[start..][..len],
                dy: &dy[start..][..len],
                dx,
            })
        });
        Ok((dx, layout.shape().clone()))
    }
}

gradient_free_op!(CustomOp2 for SiluGrad, "ddm-silu-grad");

/// `[B, C, ...] + [B, C]`.
struct AddChannels;

impl Fused<2> for AddChannels {
    fn compute<T: Float>(
        &self,
        [(x, layout), (e, _)]: [(&[T], &Layout); 2],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let positions = x.len().checked_div(e.len()).unwrap_or(0).max(1);
        let mut y = zeros(x.len());
        let parallel = x.len() >= 2 * PARALLEL_MIN_ELEMENTS;
        for_sample_runs(&mut y, positions, parallel, |rows, y| {
            let x = &x[rows.start * positions..][..y.len()];
            vectorize(AddRows { x, e: &e[rows], y })
        });
        Ok((y, layout.shape().clone()))
    }
}

impl CustomOp2 for AddChannels {
    fn name(&self) -> &'static str {
        "ddm-add-channels"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_forward(self, self.name(), [(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        _lhs: &Tensor,
        rhs: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let sums = grad.contiguous()?.apply_op1_no_bwd(&ChannelSums {
            channels: rhs.elem_count(),
        })?;
        Ok((Some(grad.clone()), Some(sums.reshape(rhs.shape())?)))
    }
}

/// The sums over positions of `[B, C, ...]`: `[B C]`.
struct ChannelSums {
    /// `B C`.
    channels: usize,
}

impl Fused<1> for ChannelSums {
    fn compute<T: Float>(
        &self,
        [(x, _)]: [(&[T], &Layout); 1],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let positions = x.len().checked_div(self.channels).unwrap_or(0);
        let sums = vectorize(RowSums {
            x,
            len: positions.max(1),
        });
        Ok((sums, self.channels.into()))
    }
}

gradient_free_op!(CustomOp1 for ChannelSums, "ddm-channel-sums");

/// Nearest 2x upsampling.
struct Upsample2x;

impl Fused<1> for Upsample2x {
    fn compute<T: Float>(
        &self,
        [(x, layout)]: [(&[T], &Layout); 1],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let mut y = zeros(4 * x.len());
        let plane = 4 * h * w;
        let parallel = y.len() >= PARALLEL_MIN_ELEMENTS;
        for_sample_runs(&mut y, plane, parallel, |planes, y| {
            let x = &x[planes.start * h * w..][..y.len() / 4];
            vectorize(Upsample { x, w, y })
        });
        Ok((y, (b, c, 2 * h, 2 * w).into()))
    }
}

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "ddm-upsample2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_forward(self, self.name(), [(s, l)])
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Downsum2x)?))
    }
}

/// The sum of every 2x2 block of `[B, C, 2H, 2W]`: `[B, C, H, W]` (the adjoint of
/// [`Upsample2x`]).
struct Downsum2x;

impl Fused<1> for Downsum2x {
    fn compute<T: Float>(
        &self,
        [(dy, layout)]: [(&[T], &Layout); 1],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let (b, c, h2, w2) = layout.shape().dims4()?;
        let (h, w) = (h2 / 2, w2 / 2);
        let mut dx = zeros(b * c * h * w);
        let parallel = dy.len() >= PARALLEL_MIN_ELEMENTS;
        for_sample_runs(&mut dx, h * w, parallel, |planes, dx| {
            let dy = &dy[planes.start * h2 * w2..][..4 * dx.len()];
            vectorize(Downsum { dy, w, dx })
        });
        Ok((dx, (b, c, h, w).into()))
    }
}

gradient_free_op!(CustomOp1 for Downsum2x, "ddm-downsum2x");

/// SiLU of `x` into `y`.
struct SiluKernel<'a, T> {
    x: &'a [T],
    y: &'a mut [T],
}

impl<T: Float> Kernel for SiluKernel<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for (d, &v) in self.y.iter_mut().zip(self.x) {
            *d = simd::silu(v);
        }
    }
}

/// `dy silu'(x)` into `dx`.
struct SiluGradKernel<'a, T> {
    x: &'a [T],
    dy: &'a [T],
    dx: &'a mut [T],
}

impl<T: Float> Kernel for SiluGradKernel<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for ((d, &v), &g) in self.dx.iter_mut().zip(self.x).zip(self.dy) {
            *d = g * simd::silu_derivative(v);
        }
    }
}

/// Row `r` of `y` is row `r` of `x` plus `e[r]`.
struct AddRows<'a, T> {
    x: &'a [T],
    e: &'a [T],
    y: &'a mut [T],
}

impl<T: Float> Kernel for AddRows<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let positions = self.y.len() / self.e.len().max(1);
        for ((y, x), &v) in self
            .y
            .chunks_exact_mut(positions)
            .zip(self.x.chunks_exact(positions))
            .zip(self.e)
        {
            for (d, &u) in y.iter_mut().zip(x) {
                *d = u + v;
            }
        }
    }
}

/// The sum of every `len`-element row of `x`.
struct RowSums<'a, T> {
    x: &'a [T],
    len: usize,
}

impl<T: Float> Kernel for RowSums<'_, T> {
    type Output = Vec<T>;

    #[inline(always)]
    fn run(self) -> Vec<T> {
        self.x
            .chunks_exact(self.len)
            .map(|row| T::from_f64(simd::sum(row)))
            .collect()
    }
}

/// Rows of width `w` of `x` to pairs of rows of width `2 w` of `y`, every value twice.
struct Upsample<'a, T> {
    x: &'a [T],
    w: usize,
    y: &'a mut [T],
}

impl<T: Float> Kernel for Upsample<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let w = self.w;
        for (row, out) in self.x.chunks_exact(w).zip(self.y.chunks_exact_mut(4 * w)) {
            let (top, bottom) = out.split_at_mut(2 * w);
            for (pair, &v) in top.chunks_exact_mut(2).zip(row) {
                pair[0] = v;
                pair[1] = v;
            }
            bottom.copy_from_slice(top);
        }
    }
}

/// The adjoint of [`Upsample`]: each value of `dx` (rows of width `w`) is the sum of its 2x2
/// block of `dy`.
struct Downsum<'a, T> {
    dy: &'a [T],
    w: usize,
    dx: &'a mut [T],
}

impl<T: Float> Kernel for Downsum<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let w = self.w;
        for (out, rows) in self.dx.chunks_exact_mut(w).zip(self.dy.chunks_exact(4 * w)) {
            let (top, bottom) = rows.split_at(2 * w);
            for (j, d) in out.iter_mut().enumerate() {
                *d = (top[2 * j] + top[2 * j + 1]) + (bottom[2 * j] + bottom[2 * j + 1]);
            }
        }
    }
}
