//! Fused CPU kernels for the models' hot operations, as candle custom operations.
//!
//! candle's CPU backend runs a convolution's forward pass through an im2col that copies one
//! element at a time, its input gradient as a direct transposed convolution and its weight
//! gradient as a strided reduction, and builds GroupNorm, SiLU's gradient and broadcast sums
//! from many small operations that each allocate and traverse a whole tensor. The operations
//! here replace those with one pass (or one matrix product) each, and keep candle's autograd:
//! every kernel is a [`CustomOp1`](candle_core::CustomOp1)/`2`/`3` whose `bwd` calls further
//! (gradient-free) custom operations, so the model code uses them like any tensor operation.
//! Each operation's computation is written once for both element types as a `Fused`
//! implementation, which `cpu_forward` runs as candle's `cpu_fwd`; the linear layer and the
//! convolution share their bias handling and backward pass through `weighted`.
//!
//! | operation | forward | backward |
//! | --- | --- | --- |
//! | [`linear`] | one GEMM, bias preloaded | `dx`: GEMM `dy W`; `dW`: GEMM `dyᵀ x`; `db`: column sums |
//! | [`conv2d`] | per sample: im2col, one GEMM `W col` (bias preloaded) | `dX`: GEMM `Wᵀ dY`, col2im; `dW`: GEMM `dY colᵀ` summed over the batch; `db`: row sums |
//! | [`group_norm`] | statistics and `x a_c + b_c` per group, SiLU optionally fused | two passes per group; `dγ`, `dβ` from the same sums |
//! | [`silu`] | one pass | one pass |
//! | [`add_channels`] | `[B, C, H, W] + [B, C]` in one pass | the input's gradient as is, the vector's as a sum per channel |
//! | [`upsample2x`] | nearest neighbour | sum of each 2x2 block |
//!
//! [`adamw_update`] and [`sum_of_squares`] are the optimiser's loops (one pass each instead of
//! a dozen tensor operations).
//!
//! The matrix products use the `gemm` crate (which candle's `matmul` uses too) with its
//! AVX-512 kernels; element-wise loops are compiled for AVX2 and AVX-512 and chosen at run
//! time by `pulp`. Every kernel supports `f32` (training) and `f64` (gradient checks).
//!
//! # Threads and determinism
//!
//! The kernels use rayon's global pool (sized by [`crate::threads::configure`]). They split
//! work over the samples of the batch, a few runs of consecutive samples per thread (so that
//! work stealing evens out a thread that another process slows down); a sum over the batch (a
//! weight, bias or normalisation scale gradient) is accumulated in a fixed number of
//! consecutive chunks of samples that do not depend on the thread count, and the chunks are
//! added in order. The results are therefore bit-identical from run to run **and** for any
//! number of threads. Small tensors (under 32-64 Ki elements) and small matrix products (a linear
//! layer under 16 Mi multiply-adds, e.g. all of the MLP preset's) stay on the calling thread:
//! handing them to another costs more than it saves.
//!
//! # Choosing the implementation
//!
//! [`super::ops`] calls these kernels for CPU tensors of type `f32` or `f64` and falls back to
//! candle's own operations otherwise (e.g. on CUDA). [`with_kernels`] selects candle's
//! operations on the current thread, so tests can compare both.

mod conv;
mod elementwise;
mod linear;
mod matmul;
mod norm;
mod optim;
mod simd;
mod weighted;

use std::cell::Cell;
use std::ops::Range;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

pub use conv::conv2d;
pub use elementwise::{add_channels, silu, upsample2x};
pub use linear::linear;
pub use norm::group_norm;
pub use optim::{adamw_applies, adamw_update, sum_of_squares, AdamWStep};

/// Which implementation [`super::ops`] uses for the operations this module covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The fused kernels of this module (CPU, `f32` and `f64`), candle's operations elsewhere.
    #[default]
    Fused,
    /// candle's own operations everywhere (the reference the fused kernels are tested against).
    Candle,
}

thread_local! {
    static ACTIVE: Cell<Kernels> = const { Cell::new(Kernels::Fused) };
}

/// The implementation selected on the current thread ([`Kernels::Fused`] unless inside
/// [`with_kernels`]).
pub fn active() -> Kernels {
    ACTIVE.with(Cell::get)
}

/// Runs `f` with `kernels` selected on the current thread, then restores the previous choice
/// (also when `f` panics).
pub fn with_kernels<R>(kernels: Kernels, f: impl FnOnce() -> R) -> R {
    struct Restore(Kernels);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|active| active.set(self.0));
        }
    }
    let _restore = Restore(ACTIVE.with(|active| active.replace(kernels)));
    f()
}

/// Whether the fused kernels apply to `tensors`: selected, all on the CPU, all `f32` or all
/// `f64`.
pub(crate) fn fused_applies(tensors: &[&Tensor]) -> bool {
    let Some(first) = tensors.first() else {
        return false;
    };
    let dtype = first.dtype();
    active() == Kernels::Fused
        && matches!(dtype, DType::F32 | DType::F64)
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == dtype)
}

/// The floating-point types the kernels compute in.
pub(crate) trait Float: WithDType + std::ops::Neg<Output = Self> {
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// `e^self`: a vectorisable polynomial for `f32` (about 2 ulp), the standard library's
    /// for `f64`.
    fn exp(self) -> Self;
    /// Wraps a vector as candle storage.
    fn storage(values: Vec<Self>) -> CpuStorage {
        Self::to_cpu_storage_owned(values)
    }
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn exp(self) -> Self {
        simd::exp_f32(self)
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// The elements of a contiguous tensor's storage.
///
/// The public functions of this module make their inputs contiguous before they reach a
/// kernel, so a strided layout here is an internal error.
pub(crate) fn slice<'a, T: Float>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous input, got {layout:?}"),
    }
}

/// A fused operation's computation, written once for `f32` and `f64`: the body of the
/// `cpu_fwd` of its candle `CustomOp{N}` (through [`cpu_forward`]).
pub(crate) trait Fused<const N: usize> {
    /// The output's elements and shape from the `N` inputs' elements and layouts, in the order
    /// candle passes them (all contiguous, all of type `T`).
    fn compute<T: Float>(
        &self,
        inputs: [(&[T], &Layout); N],
    ) -> candle_core::Result<(Vec<T>, Shape)>;
}

/// Runs `op`'s [`Fused::compute`] in the element type of `inputs` (the storages and layouts
/// candle hands `cpu_fwd`); errors name the operation `name`.
///
/// # Errors
/// When the inputs are not all `f32` or all `f64`, not contiguous, or `compute` fails.
pub(crate) fn cpu_forward<const N: usize, O: Fused<N>>(
    op: &O,
    name: &str,
    inputs: [(&CpuStorage, &Layout); N],
) -> candle_core::Result<(CpuStorage, Shape)> {
    fn typed<T: Float, const N: usize, O: Fused<N>>(
        op: &O,
        name: &str,
        inputs: [(&CpuStorage, &Layout); N],
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut slices: [(&[T], &Layout); N] = inputs.map(|(_, layout)| (&[][..], layout));
        for ((values, _), (storage, layout)) in slices.iter_mut().zip(inputs) {
            *values = slice(storage, layout, name)?;
        }
        let (values, shape) = op.compute(slices)?;
        Ok((T::storage(values), shape))
    }
    match inputs.first().map(|&(storage, _)| storage) {
        Some(CpuStorage::F32(_)) => typed::<f32, N, O>(op, name, inputs),
        Some(CpuStorage::F64(_)) => typed::<f64, N, O>(op, name, inputs),
        Some(other) => candle_core::bail!("{name}: unsupported type {:?}", other.dtype()),
        None => candle_core::bail!("{name}: no inputs"),
    }
}

/// Implements candle's `CustomOp1`/`2`/`3` for a [`Fused`] operation that is never
/// differentiated (a gradient's computation), named `$name`.
macro_rules! gradient_free_op {
    (CustomOp1 for $op:ty, $name:literal) => {
        impl candle_core::CustomOp1 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s: &candle_core::CpuStorage,
                l: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::model::kernels::cpu_forward(self, $name, [(s, l)])
            }
        }
    };
    (CustomOp2 for $op:ty, $name:literal) => {
        impl candle_core::CustomOp2 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::model::kernels::cpu_forward(self, $name, [(s1, l1), (s2, l2)])
            }
        }
    };
    (CustomOp3 for $op:ty, $name:literal) => {
        impl candle_core::CustomOp3 for $op {
            fn name(&self) -> &'static str {
                $name
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
                $crate::model::kernels::cpu_forward(self, $name, [(s1, l1), (s2, l2), (s3, l3)])
            }
        }
    };
}
pub(crate) use gradient_free_op;

/// Threads the kernels may use (rayon's current pool).
pub(crate) fn threads() -> usize {
    rayon::current_num_threads()
}

/// Elements below which a kernel stays on the calling thread.
pub(crate) const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// `len` zeros: written by rayon's threads when the vector is large (a serial `memset` of a
/// whole activation would otherwise be a sequential part of a parallel kernel).
pub(crate) fn zeros<T: Float>(len: usize) -> Vec<T> {
    if threads() > 1 && len >= 4 * PARALLEL_MIN_ELEMENTS {
        let mut values = Vec::with_capacity(len);
        values.par_extend(rayon::iter::repeat_n(T::ZERO, len));
        values
    } else {
        vec![T::ZERO; len]
    }
}

/// Runs per thread that [`for_sample_runs`] cuts a batch into: more than one, so that a thread
/// that finishes early (or one that another process delays) is balanced by rayon's work
/// stealing.
const RUNS_PER_THREAD: usize = 4;

/// Runs `f(samples, out)` for consecutive runs of samples, `out` being the part of `output`
/// (`sample_len` elements per sample) that belongs to them; on rayon's threads when `parallel`
/// and there is more than one, else in one call on this thread.
pub(crate) fn for_sample_runs<T: Send>(
    output: &mut [T],
    sample_len: usize,
    parallel: bool,
    f: impl Fn(Range<usize>, &mut [T]) + Sync,
) {
    let batch = output.len().checked_div(sample_len).unwrap_or(0);
    let workers = threads();
    if !parallel || workers <= 1 || batch <= 1 {
        f(0..batch, output);
        return;
    }
    let per_run = batch.div_ceil(RUNS_PER_THREAD * workers);
    output
        .par_chunks_mut(per_run * sample_len)
        .enumerate()
        .for_each(|(run, out)| {
            let start = run * per_run;
            f(start..start + out.len() / sample_len, out)
        });
}

/// [`for_sample_runs`] with two outputs: `f(samples, first, second)` gets the parts of both
/// that belong to the same samples (`first_len` and `second_len` elements per sample).
pub(crate) fn for_sample_runs2<T: Send, U: Send>(
    first: &mut [T],
    first_len: usize,
    second: &mut [U],
    second_len: usize,
    parallel: bool,
    f: impl Fn(Range<usize>, &mut [T], &mut [U]) + Sync,
) {
    let batch = first.len().checked_div(first_len).unwrap_or(0);
    debug_assert_eq!(second.len(), batch * second_len);
    let workers = threads();
    if !parallel || workers <= 1 || batch <= 1 || second_len == 0 {
        f(0..batch, first, second);
        return;
    }
    let per_run = batch.div_ceil(RUNS_PER_THREAD * workers);
    first
        .par_chunks_mut(per_run * first_len)
        .zip(second.par_chunks_mut(per_run * second_len))
        .enumerate()
        .for_each(|(run, (a, b))| {
            let start = run * per_run;
            f(start..start + a.len() / first_len, a, b)
        });
}

/// Number of partial sums a reduction over `batch` samples is split into: fixed by the batch
/// size alone, so that the result does not depend on the thread count.
pub(crate) fn reduction_chunks(batch: usize) -> usize {
    batch.clamp(1, 8)
}

/// The samples of reduction chunk `chunk` of [`reduction_chunks`]`(batch)`.
pub(crate) fn chunk_samples(batch: usize, chunk: usize) -> Range<usize> {
    let chunks = reduction_chunks(batch);
    let start = batch * chunk / chunks;
    let end = batch * (chunk + 1) / chunks;
    start..end
}

/// Computes `partial(samples, out)` into one `len`-element buffer per reduction chunk (in
/// parallel when `parallel`) and returns their sum, added in chunk order.
pub(crate) fn reduce_over_batch<T: Float>(
    batch: usize,
    len: usize,
    parallel: bool,
    partial: impl Fn(Range<usize>, &mut [T]) + Sync,
) -> Vec<T> {
    let chunks = reduction_chunks(batch);
    let mut partials = vec![T::ZERO; chunks * len];
    if parallel && threads() > 1 && chunks > 1 {
        partials
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(chunk, out)| partial(chunk_samples(batch, chunk), out));
    } else {
        for (chunk, out) in partials.chunks_mut(len).enumerate() {
            partial(chunk_samples(batch, chunk), out);
        }
    }
    let (total, rest) = partials.split_at_mut(len);
    for part in rest.chunks(len) {
        simd::add_assign(total, part);
    }
    partials.truncate(len);
    partials
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_batch_in_order() {
        for batch in [1, 2, 3, 7, 8, 9, 64, 100] {
            let chunks = reduction_chunks(batch);
            let mut next = 0;
            for chunk in 0..chunks {
                let samples = chunk_samples(batch, chunk);
                assert_eq!(samples.start, next);
                assert!(!samples.is_empty());
                next = samples.end;
            }
            assert_eq!(next, batch);
        }
    }

    #[test]
    fn the_selection_is_scoped() {
        assert_eq!(active(), Kernels::Fused);
        with_kernels(Kernels::Candle, || {
            assert_eq!(active(), Kernels::Candle);
            let inner = with_kernels(Kernels::Fused, active);
            assert_eq!(inner, Kernels::Fused);
            assert_eq!(active(), Kernels::Candle);
        });
        assert_eq!(active(), Kernels::Fused);
        let x = Tensor::zeros(2, DType::F32, &candle_core::Device::Cpu).unwrap();
        assert!(fused_applies(&[&x]));
        assert!(!with_kernels(Kernels::Candle, || fused_applies(&[&x])));
        let half = x.to_dtype(DType::F16).unwrap();
        assert!(!fused_applies(&[&half]));
        assert!(!fused_applies(&[&x, &x.to_dtype(DType::F64).unwrap()]));
    }
}
