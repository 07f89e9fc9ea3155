//! 2-D convolution as im2col + GEMM, with its input and weight gradients.
//!
//! Per sample, `col` is the `[C_in k k, H' W']` matrix whose row `(c, ky, kx)` holds input
//! channel `c` shifted by `(ky, kx)` (zeros where the window leaves the image), so that the
//! output `[C_out, H' W']` is the product `W col` with `W` viewed as `[C_out, C_in k k]`:
//!
//! - forward: `Y_b = W col(X_b) + b`;
//! - input gradient: `dX_b = col2im(Wᵀ dY_b)` (col2im adds every column entry back to the
//!   input pixel it was copied from);
//! - weight gradient: `dW = sum_b dY_b col(X_b)ᵀ`, `db = sum_b` row sums of `dY_b`.
//!
//! A 1x1 stride-1 convolution without padding needs no `col` (it is the input itself). `col`
//! is rebuilt in the backward pass rather than kept from the forward one: it is `k²` times
//! the input's size, and rebuilding it is a copy next to a product `C_out` times longer.

use candle_core::{Layout, Shape, Tensor};
use gemm::Parallelism;

use super::matmul::{matmul, Operand};
use super::simd::{self, vectorize, Kernel};
use super::weighted::{self, weighted_custom_ops, WeightedLayer};
use super::{for_sample_runs, gradient_free_op, reduce_over_batch, threads, zeros, Float, Fused};
use crate::error::{Error, Result};

/// `x: [B, C_in, H, W]` convolved with `weight: [C_out, C_in, k, k]` (stride `stride`, zero
/// padding `padding`) plus `bias: [C_out]`: `[B, C_out, H', W']` with
/// `H' = (H + 2 padding - k) / stride + 1`. Differentiable in all three arguments.
///
/// # Errors
/// [`Error::Invalid`] when the shapes do not fit together or the kernel does not fit in the
/// padded image; [`Error::Candle`] when the tensors are not CPU `f32`/`f64` tensors of one type.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let geometry = Geometry::new(x.dims(), weight.dims(), stride, padding)?;
    if let Some(bias) = bias {
        if bias.dims() != [geometry.c_out] {
            return Err(Error::Invalid(format!(
                "conv2d: bias of shape {:?} for {} output channels",
                bias.dims(),
                geometry.c_out
            )));
        }
    }
    Ok(weighted::apply(Conv2d { geometry }, x, weight, bias)?)
}

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    batch: usize,
    c_in: usize,
    height: usize,
    width: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    out_height: usize,
    out_width: usize,
}

impl Geometry {
    fn new(x: &[usize], w: &[usize], stride: usize, padding: usize) -> Result<Self> {
        let (&[batch, c_in, height, width], &[c_out, w_in, kernel, kernel_w]) = (x, w) else {
            return Err(Error::Invalid(format!(
                "conv2d: expected an input [B, C, H, W] and a kernel [O, C, k, k], got {x:?} \
                 and {w:?}"
            )));
        };
        if w_in != c_in || kernel != kernel_w || kernel == 0 || stride == 0 {
            return Err(Error::Invalid(format!(
                "conv2d: kernel {w:?} (stride {stride}) does not fit the input {x:?}"
            )));
        }
        if height + 2 * padding < kernel || width + 2 * padding < kernel {
            return Err(Error::Invalid(format!(
                "conv2d: a {kernel}x{kernel} kernel does not fit a {height}x{width} input \
                 padded by {padding}"
            )));
        }
        Ok(Geometry {
            batch,
            c_in,
            height,
            width,
            c_out,
            kernel,
            stride,
            padding,
            out_height: (height + 2 * padding - kernel) / stride + 1,
            out_width: (width + 2 * padding - kernel) / stride + 1,
        })
    }

    /// Rows of `col` (the GEMM's inner dimension): `C_in k k`.
    fn col_rows(&self) -> usize {
        self.c_in * self.kernel * self.kernel
    }

    /// Output pixels per channel (the GEMM's columns).
    fn out_pixels(&self) -> usize {
        self.out_height * self.out_width
    }

    fn in_len(&self) -> usize {
        self.c_in * self.height * self.width
    }

    fn out_len(&self) -> usize {
        self.c_out * self.out_pixels()
    }

    /// Whether the output has the input's size at stride 1 (`2 padding = k - 1`): then row
    /// `(c, ky, kx)` of `col` is input plane `c` shifted by `(ky - p) W + (kx - p)` elements,
    /// with zeros where a window column leaves the image.
    fn same_size(&self) -> bool {
        self.stride == 1 && self.out_height == self.height && self.out_width == self.width
    }

    /// Whether `col` is the input itself (1x1, stride 1, no padding).
    fn pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }

    fn out_shape(&self) -> Shape {
        (self.batch, self.c_out, self.out_height, self.out_width).into()
    }

    /// Whether to split the batch over threads (else each product may use them all).
    fn parallel_batch(&self) -> bool {
        self.batch > 1 && threads() > 1
    }

    /// Parallelism inside one product: all threads when the batch is not split over them
    /// and the product is large enough.
    fn gemm_parallelism(&self) -> Parallelism {
        let work = self.c_out * self.col_rows() * self.out_pixels();
        if self.parallel_batch() || threads() <= 1 || work < (1 << 18) {
            Parallelism::None
        } else {
            Parallelism::Rayon(threads())
        }
    }
}

/// The range of output positions `o` whose input position `o stride + offset - padding` lies
/// in `0..len` (for kernel offset `offset`), clamped to `0..out_len`.
fn valid_range(offset: usize, g: &Geometry, len: usize, out_len: usize) -> (usize, usize) {
    let low = g.padding.saturating_sub(offset).div_ceil(g.stride);
    let high = if len + g.padding > offset {
        ((len - 1 + g.padding - offset) / g.stride + 1).min(out_len)
    } else {
        0
    };
    (low.min(high), high)
}

/// For a [`Geometry::same_size`] convolution, the positions `low..high` of a `col` row of
/// kernel offset `(ky, kx)` whose shifted input position (`position + shift`) is inside the
/// plane, and the shift.
#[inline(always)]
fn shifted_range(g: &Geometry, ky: usize, kx: usize) -> (usize, usize, isize) {
    let len = (g.height * g.width) as isize;
    let shift =
        (ky as isize - g.padding as isize) * g.width as isize + kx as isize - g.padding as isize;
    let low = (-shift).clamp(0, len) as usize;
    let high = (len - shift).clamp(0, len) as usize;
    (low.min(high), high, shift)
}

/// Zeroes the entries of a [`Geometry::same_size`] `col` row of kernel column `kx` whose
/// window column lies in the padding (strided stores, one column at a time).
#[inline(always)]
fn zero_outside_columns<T: Float>(g: &Geometry, kx: usize, row: &mut [T]) {
    let (low, high) = valid_range(kx, g, g.width, g.out_width);
    for column in (0..low).chain(high..g.out_width) {
        for value in row.iter_mut().skip(column).step_by(g.out_width) {
            *value = T::ZERO;
        }
    }
}

/// Writes `col` (`[C_in k k, H' W']`) for one sample `x` (`[C_in, H, W]`).
struct Im2col<'a, T> {
    g: &'a Geometry,
    x: &'a [T],
    col: &'a mut [T],
}

impl<T: Float> Kernel for Im2col<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Im2col { g, x, col } = self;
        let (k, s, p) = (g.kernel, g.stride, g.padding);
        let (w, ow, n) = (g.width, g.out_width, g.out_pixels());
        let plane_len = g.height * g.width;
        if g.same_size() {
            for (row_index, row) in col.chunks_exact_mut(n).enumerate() {
                let (c, ky, kx) = (row_index / (k * k), row_index / k % k, row_index % k);
                let plane = &x[c * plane_len..][..plane_len];
                let (low, high, shift) = shifted_range(g, ky, kx);
                row[..low].fill(T::ZERO);
                row[high..].fill(T::ZERO);
                if low < high {
                    let from = low.wrapping_add_signed(shift);
                    row[low..high].copy_from_slice(&plane[from..from + high - low]);
                }
                zero_outside_columns(g, kx, row);
            }
            return;
        }
        for c in 0..g.c_in {
            let plane = &x[c * plane_len..][..plane_len];
            for ky in 0..k {
                let (oy_low, oy_high) = valid_range(ky, g, g.height, g.out_height);
                for kx in 0..k {
                    let (ox_low, ox_high) = valid_range(kx, g, g.width, ow);
                    let row = &mut col[((c * k + ky) * k + kx) * n..][..n];
                    row[..oy_low * ow].fill(T::ZERO);
                    row[oy_high * ow..].fill(T::ZERO);
                    for oy in oy_low..oy_high {
                        let src = &plane[(oy * s + ky - p) * w..][..w];
                        let dst = &mut row[oy * ow..][..ow];
                        dst[..ox_low].fill(T::ZERO);
                        dst[ox_high..].fill(T::ZERO);
                        if s == 1 {
                            let from = ox_low + kx - p;
                            dst[ox_low..ox_high]
                                .copy_from_slice(&src[from..from + ox_high - ox_low]);
                        } else {
                            for (ox, d) in dst[ox_low..ox_high].iter_mut().enumerate() {
                                *d = src[(ox_low + ox) * s + kx - p];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds every entry of `col` (`[C_in k k, H' W']`) to the input pixel it was copied from in
/// `dx` (`[C_in, H, W]`): the adjoint of [`Im2col`].
///
/// `col` is scratch: the entries that stand for padding may be overwritten.
struct Col2im<'a, T> {
    g: &'a Geometry,
    col: &'a mut [T],
    dx: &'a mut [T],
}

impl<T: Float> Kernel for Col2im<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Col2im { g, col, dx } = self;
        let (k, s, p) = (g.kernel, g.stride, g.padding);
        let (w, ow, n) = (g.width, g.out_width, g.out_pixels());
        let plane_len = g.height * g.width;
        if g.same_size() {
            for (row_index, row) in col.chunks_exact_mut(n).enumerate() {
                let (c, ky, kx) = (row_index / (k * k), row_index / k % k, row_index % k);
                let plane = &mut dx[c * plane_len..][..plane_len];
                let (low, high, shift) = shifted_range(g, ky, kx);
                // Padding columns would otherwise land on the neighbouring row's pixels.
                zero_outside_columns(g, kx, row);
                if low < high {
                    let from = low.wrapping_add_signed(shift);
                    let dst = &mut plane[from..from + high - low];
                    for (d, &v) in dst.iter_mut().zip(&row[low..high]) {
                        *d += v;
                    }
                }
            }
            return;
        }
        for c in 0..g.c_in {
            let plane = &mut dx[c * plane_len..][..plane_len];
            for ky in 0..k {
                let (oy_low, oy_high) = valid_range(ky, g, g.height, g.out_height);
                for kx in 0..k {
                    let (ox_low, ox_high) = valid_range(kx, g, g.width, ow);
                    let row = &col[((c * k + ky) * k + kx) * n..][..n];
                    for oy in oy_low..oy_high {
                        let dst = &mut plane[(oy * s + ky - p) * w..][..w];
                        let src = &row[oy * ow..][..ow];
                        if s == 1 {
                            let from = ox_low + kx - p;
                            let dst = &mut dst[from..from + ox_high - ox_low];
                            for (d, &v) in dst.iter_mut().zip(&src[ox_low..ox_high]) {
                                *d += v;
                            }
                        } else {
                            for (ox, &v) in src[ox_low..ox_high].iter().enumerate() {
                                dst[(ox_low + ox) * s + kx - p] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The forward operation (custom op 2 without bias, 3 with).
struct Conv2d {
    geometry: Geometry,
}

impl WeightedLayer for Conv2d {
    const NAME: &'static str = "ddm-conv2d";
    type InputGrad = Conv2dInputGrad;
    type WeightGrad = Conv2dWeightGrad;

    fn forward<T: Float>(&self, x: &[T], w: &[T], bias: Option<&[T]>) -> (Vec<T>, Shape) {
        let g = self.geometry;
        let (rows, n) = (g.col_rows(), g.out_pixels());
        let mut y = zeros(g.batch * g.out_len());
        let parallelism = g.gemm_parallelism();
        for_sample_runs(&mut y, g.out_len(), g.parallel_batch(), |samples, y| {
            let mut col = if g.pointwise() {
                Vec::new()
            } else {
                vec![T::ZERO; rows * n]
            };
            for (b, y) in samples.zip(y.chunks_exact_mut(g.out_len())) {
                let x = &x[b * g.in_len()..][..g.in_len()];
                if let Some(bias) = bias {
                    for (row, &value) in y.chunks_exact_mut(n).zip(bias) {
                        row.fill(value);
                    }
                }
                let rhs = if g.pointwise() {
                    x
                } else {
                    vectorize(Im2col {
                        g: &g,
                        x,
                        col: &mut col,
                    });
                    &col
                };
                // SAFETY: `w` is `[C_out, rows]` and `rhs` `[rows, n]`, both row-major and
                // separate from `y`.
                unsafe {
                    matmul(
                        g.c_out,
                        n,
                        rows,
                        y,
                        bias.is_some(),
                        Operand::rows(w, rows),
                        Operand::rows(rhs, n),
                        parallelism,
                    )
                };
            }
        });
        (y, g.out_shape())
    }

    fn input_grad(&self) -> Conv2dInputGrad {
        Conv2dInputGrad {
            geometry: self.geometry,
        }
    }

    fn weight_grad(&self, with_bias: bool) -> Conv2dWeightGrad {
        Conv2dWeightGrad {
            geometry: self.geometry,
            with_bias,
        }
    }

    fn weight_len(&self) -> usize {
        self.geometry.c_out * self.geometry.col_rows()
    }

    fn bias_len(&self) -> usize {
        self.geometry.c_out
    }
}

weighted_custom_ops!(Conv2d);

/// `dX` from `(dY, W)`.
struct Conv2dInputGrad {
    geometry: Geometry,
}

impl Fused<2> for Conv2dInputGrad {
    fn compute<T: Float>(
        &self,
        [(dy, _), (w, _)]: [(&[T], &Layout); 2],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let g = self.geometry;
        let (rows, n) = (g.col_rows(), g.out_pixels());
        let mut dx = zeros(g.batch * g.in_len());
        let parallelism = g.gemm_parallelism();
        for_sample_runs(&mut dx, g.in_len(), g.parallel_batch(), |samples, dx| {
            let mut col = if g.pointwise() {
                Vec::new()
            } else {
                vec![T::ZERO; rows * n]
            };
            for (b, dx) in samples.zip(dx.chunks_exact_mut(g.in_len())) {
                let dy = &dy[b * g.out_len()..][..g.out_len()];
                let dst: &mut [T] = if g.pointwise() { dx } else { &mut col };
                // SAFETY: `Wᵀ` is `[rows, C_out]` (the transpose of the row-major `w`), `dy`
                // is `[C_out, n]`; neither overlaps `dst`.
                unsafe {
                    matmul(
                        rows,
                        n,
                        g.c_out,
                        dst,
                        false,
                        Operand::transposed(w, rows),
                        Operand::rows(dy, n),
                        parallelism,
                    )
                };
                if !g.pointwise() {
                    vectorize(Col2im {
                        g: &g,
                        col: &mut col,
                        dx,
                    });
                }
            }
        });
        Ok((dx, (g.batch, g.c_in, g.height, g.width).into()))
    }
}

gradient_free_op!(CustomOp2 for Conv2dInputGrad, "ddm-conv2d-input-grad");

/// `[dW (flattened), db]` from `(X, dY)`.
struct Conv2dWeightGrad {
    geometry: Geometry,
    with_bias: bool,
}

impl Fused<2> for Conv2dWeightGrad {
    fn compute<T: Float>(
        &self,
        [(x, _), (dy, _)]: [(&[T], &Layout); 2],
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let g = self.geometry;
        let (rows, n) = (g.col_rows(), g.out_pixels());
        let weight_len = g.c_out * rows;
        let len = weight_len + if self.with_bias { g.c_out } else { 0 };
        let parallel = g.parallel_batch();
        let parallelism = g.gemm_parallelism();
        let total = reduce_over_batch::<T>(g.batch, len, parallel, |samples, out| {
            let (dw, db) = out.split_at_mut(weight_len);
            let mut col = if g.pointwise() {
                Vec::new()
            } else {
                vec![T::ZERO; rows * n]
            };
            for (i, b) in samples.enumerate() {
                let x = &x[b * g.in_len()..][..g.in_len()];
                let dy = &dy[b * g.out_len()..][..g.out_len()];
                let col: &[T] = if g.pointwise() {
                    x
                } else {
                    vectorize(Im2col {
                        g: &g,
                        x,
                        col: &mut col,
                    });
                    &col
                };
                // SAFETY: `dy` is `[C_out, n]`, `colᵀ` is `[n, rows]` (the transpose of the
                // row-major `col`), `dw` is `[C_out, rows]` and separate from both.
                unsafe {
                    matmul(
                        g.c_out,
                        rows,
                        n,
                        dw,
                        i > 0,
                        Operand::rows(dy, n),
                        Operand::transposed(col, n),
                        parallelism,
                    )
                };
                for (d, row) in db.iter_mut().zip(dy.chunks_exact(n)) {
                    *d += T::from_f64(simd::sum(row));
                }
            }
        });
        Ok((total, len.into()))
    }
}

gradient_free_op!(CustomOp2 for Conv2dWeightGrad, "ddm-conv2d-weight-grad");

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(h: usize, w: usize, k: usize, s: usize, p: usize) -> Geometry {
        Geometry::new(&[1, 1, h, w], &[1, 1, k, k], s, p).unwrap()
    }

    #[test]
    fn valid_ranges_keep_windows_inside() {
        for (h, k, s, p) in [
            (5, 3, 1, 1),
            (6, 3, 2, 1),
            (5, 1, 1, 0),
            (4, 3, 2, 0),
            (2, 3, 1, 1),
        ] {
            let g = geometry(h, h, k, s, p);
            for offset in 0..k {
                let (low, high) = valid_range(offset, &g, h, g.out_height);
                for o in 0..g.out_height {
                    let i = (o * s + offset) as isize - p as isize;
                    let inside = (0..h as isize).contains(&i);
                    assert_eq!(
                        inside,
                        (low..high).contains(&o),
                        "{h} {k} {s} {p} {offset} {o}"
                    );
                }
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> = <x, col2im(c)> for all x, c: strided, "same" 3x3 and 5x5, valid.
        let cases: [(&[usize], &[usize], usize, usize); 4] = [
            (&[1, 2, 5, 4], &[3, 2, 3, 3], 2, 1),
            (&[1, 2, 5, 4], &[3, 2, 3, 3], 1, 1),
            (&[1, 3, 6, 7], &[2, 3, 5, 5], 1, 2),
            (&[1, 2, 6, 5], &[2, 2, 3, 3], 1, 0),
        ];
        for (x_shape, w_shape, stride, padding) in cases {
            let g = Geometry::new(x_shape, w_shape, stride, padding).unwrap();
            let x: Vec<f64> = (0..g.in_len()).map(|i| (i as f64 * 0.37).sin()).collect();
            let c: Vec<f64> = (0..g.col_rows() * g.out_pixels())
                .map(|i| (i as f64 * 0.11).cos())
                .collect();
            let mut col = vec![f64::NAN; c.len()];
            Im2col {
                g: &g,
                x: &x,
                col: &mut col,
            }
            .run();
            let mut back = vec![0.0; x.len()];
            Col2im {
                g: &g,
                col: &mut c.clone(),
                dx: &mut back,
            }
            .run();
            let lhs: f64 = col.iter().zip(&c).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!(
                (lhs - rhs).abs() < 1e-12,
                "{x_shape:?} {w_shape:?}: {lhs} {rhs}"
            );
        }
    }
}
