//! The matrix products of the kernels, through the `gemm` crate.

use gemm::Parallelism;

use super::Float;

/// A row-major matrix operand of [`matmul`]: element `(i, j)` at `ptr[i rs + j cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<T> {
    ptr: *const T,
    row_stride: usize,
    col_stride: usize,
}

impl<T> Operand<T> {
    /// `values` as a row-major matrix with `cols` columns.
    pub(crate) fn rows(values: &[T], cols: usize) -> Self {
        Operand {
            ptr: values.as_ptr(),
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of `values` seen as a row-major matrix with `cols` columns.
    pub(crate) fn transposed(values: &[T], cols: usize) -> Self {
        Operand {
            ptr: values.as_ptr(),
            row_stride: 1,
            col_stride: cols,
        }
    }
}

/// `dst = lhs rhs` (or `dst += lhs rhs` when `accumulate`), `dst` an `m x n` row-major slice,
/// `lhs` `m x k`, `rhs` `k x n`.
///
/// # Safety
/// `lhs` and `rhs` must point to live matrices of these sizes under their strides, not
/// overlapping `dst`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    accumulate: bool,
    lhs: Operand<T>,
    rhs: Operand<T>,
    parallelism: Parallelism,
) {
    debug_assert!(dst.len() >= m * n);
    // SAFETY: `dst` holds `m x n` elements with row stride `n`; the caller guarantees the
    // operands. `gemm` computes `dst = alpha dst + beta lhs rhs`, reading `dst` only when
    // `accumulate`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.ptr,
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}
