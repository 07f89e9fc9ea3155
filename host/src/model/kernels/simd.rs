//! Vectorisable element-wise building blocks.
//!
//! The loops are plain Rust written so that LLVM vectorises them (fixed-width lane arrays,
//! no branches in the body); [`vectorize`] compiles a kernel for the best instruction set of
//! the running CPU (AVX-512, AVX2+FMA, or the baseline), so the kernels and the helpers here
//! are `#[inline(always)]` to be compiled inside it.

use pulp::{Simd, WithSimd};

use super::Float;

/// A loop nest that [`vectorize`] compiles for the running CPU's instruction set.
///
/// Implementations mark [`run`](Kernel::run) `#[inline(always)]`, so that its body is
/// compiled inside the function that enables the instruction set. (A closure would not do:
/// its body is a function of its own that LLVM may leave out of line, compiled for the
/// baseline instruction set.)
pub(crate) trait Kernel {
    /// What the kernel returns.
    type Output;
    /// Runs the kernel.
    fn run(self) -> Self::Output;
}

/// Runs `kernel` compiled for the best instruction set the CPU has (chosen by `pulp` at run
/// time).
#[inline(always)]
pub(crate) fn vectorize<K: Kernel>(kernel: K) -> K::Output {
    pulp::Arch::new().dispatch(Call(kernel))
}

/// A kernel as `pulp` takes it.
struct Call<K>(K);

impl<K: Kernel> WithSimd for Call<K> {
    type Output = K::Output;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> K::Output {
        self.0.run()
    }
}

/// `e^x` for `f32` without branches or table look-ups, so that it vectorises.
///
/// `x` is clamped to `[-87.3, 88.3]` (the result stays finite and normal), split as
/// `x = n ln 2 + r` with `|r| <= ln 2 / 2` (Cody-Waite, two constants), `e^r` from a degree-6
/// polynomial (Cephes' `expf` coefficients) and `2^n` put into the exponent bits. The error is
/// below 2 ulp over the range.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e_r = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e_r * scale
}

/// `x sigmoid(x)`.
#[inline(always)]
pub(crate) fn silu<T: Float>(x: T) -> T {
    x / (T::ONE + (-x).exp())
}

/// The derivative of SiLU: `s (1 + x (1 - s))` with `s = sigmoid(x)`.
#[inline(always)]
pub(crate) fn silu_derivative<T: Float>(x: T) -> T {
    let s = T::ONE / (T::ONE + (-x).exp());
    s * (T::ONE + x * (T::ONE - s))
}

/// Lanes of the accumulators below (a multiple of every SIMD width in elements).
const LANES: usize = 16;
/// Elements summed in the element type before the block's sum is added in `f64`.
const BLOCK: usize = 512;

/// `sum_i f(i)` over `0..len` in blocks: `LANES` independent accumulators of `T` within a
/// block of `BLOCK` elements, the block sums added in `f64`. Deterministic (fixed order), and
/// accurate for `f32` at the sizes of a normalisation group.
#[inline(always)]
pub(crate) fn sum_by<T: Float>(len: usize, f: impl Fn(usize) -> T) -> f64 {
    let mut total = 0.0f64;
    let mut start = 0;
    while start < len {
        let end = (start + BLOCK).min(len);
        let mut lanes = [T::ZERO; LANES];
        let mut i = start;
        while i + LANES <= end {
            for (lane, acc) in lanes.iter_mut().enumerate() {
                *acc += f(i + lane);
            }
            i += LANES;
        }
        let mut rest = T::ZERO;
        for j in i..end {
            rest += f(j);
        }
        let mut block = 0.0f64;
        for acc in lanes {
            block += acc.to_f64();
        }
        total += block + rest.to_f64();
        start = end;
    }
    total
}

/// `sum(xs)`, see [`sum_by`].
#[inline(always)]
pub(crate) fn sum<T: Float>(xs: &[T]) -> f64 {
    sum_by(xs.len(), |i| xs[i])
}

/// `dst += src` element-wise (equal lengths).
pub(crate) fn add_assign<T: Float>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len());
    vectorize(AddAssign { dst, src })
}

/// `dst += src`.
struct AddAssign<'a, T> {
    dst: &'a mut [T],
    src: &'a [T],
}

impl<T: Float> Kernel for AddAssign<'_, T> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for (d, &s) in self.dst.iter_mut().zip(self.src) {
            *d += s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            let ulp = f64::from(f32::EPSILON) * exact;
            worst = worst.max((got - exact).abs() / ulp);
            x += 0.0137;
        }
        assert!(worst < 2.0, "worst error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) > 0.0 && exp_f32(1000.0).is_finite());
    }

    #[test]
    fn sums_are_accurate() {
        let xs: Vec<f32> = (0..10_000).map(|i| (i % 7) as f32 * 0.1 + 1e3).collect();
        let exact: f64 = xs.iter().map(|&x| f64::from(x)).sum();
        assert!((sum(&xs) - exact).abs() / exact < 1e-6);
        assert_eq!(sum::<f64>(&[]), 0.0);
        assert_eq!(sum(&[1.0f64, 2.0, 3.0]), 6.0);
    }

    #[test]
    fn silu_and_its_derivative() {
        for x in [-30.0f64, -2.0, -0.5, 0.0, 0.3, 4.0, 30.0] {
            let s = 1.0 / (1.0 + (-x).exp());
            assert!((silu(x) - x * s).abs() < 1e-12);
            let h = 1e-6;
            let numeric = (silu(x + h) - silu(x - h)) / (2.0 * h);
            assert!((silu_derivative(x) - numeric).abs() < 1e-8, "{x}");
            let single = silu(x as f32) as f64;
            assert!(
                (single - x * s).abs() <= 1e-6 * (1.0 + (x * s).abs()),
                "{x}"
            );
        }
    }
}
