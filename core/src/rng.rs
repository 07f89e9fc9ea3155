//! A portable seeded random number generator.
//!
//! [`Rng`] is PCG-XSH-RR 64/32 (O'Neill 2014): 64-bit LCG state, 32-bit output. Gaussian
//! variates come from the Box–Muller transform evaluated in `f32` with [`libm`], so the stream
//! of uniform and normal numbers for a given seed is bit-identical on every target.

use core::f32::consts::TAU;

const MULTIPLIER: u64 = 6_364_136_223_846_793_005;
/// Stream selected by [`Rng::new`].
pub const DEFAULT_STREAM: u64 = 0x5851_f42d_4c95_7f2d;

/// PCG32 generator with a cached second Box–Muller variate.
#[derive(Debug, Clone, PartialEq)]
pub struct Rng {
    state: u64,
    increment: u64,
    spare_normal: Option<f32>,
}

impl Rng {
    /// A generator for `seed` on the default stream.
    pub fn new(seed: u64) -> Self {
        Self::with_stream(seed, DEFAULT_STREAM)
    }

    /// A generator for `seed` on stream `stream`; different streams are independent sequences.
    /// Matches the reference `pcg32_srandom_r(seed, stream)`.
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        let mut rng = Rng {
            state: 0,
            increment: (stream << 1) | 1,
            spare_normal: None,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    /// The next 32 uniformly distributed bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(MULTIPLIER).wrapping_add(self.increment);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rotation = (old >> 59) as u32;
        xorshifted.rotate_right(rotation)
    }

    /// A uniform `f32` in `[0, 1)` with 24 random bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
    }

    /// A uniform integer in `0..bound` (Lemire's unbiased multiply-shift); `bound` must be > 0,
    /// otherwise 0 is returned.
    pub fn below(&mut self, bound: u32) -> u32 {
        if bound == 0 {
            return 0;
        }
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u64::from(self.next_u32()) * u64::from(bound);
            if (product as u32) >= threshold {
                return (product >> 32) as u32;
            }
        }
    }

    /// A standard normal `f32` (Box–Muller; the second variate of each pair is cached).
    pub fn normal(&mut self) -> f32 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = ((self.next_u32() >> 8) + 1) as f32 * (1.0 / 16_777_216.0);
        let u2 = self.uniform();
        let radius = libm::sqrtf(-2.0 * libm::logf(u1));
        let angle = TAU * u2;
        self.spare_normal = Some(radius * libm::sinf(angle));
        radius * libm::cosf(angle)
    }

    /// Fills `out` with standard normal variates, in order.
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        for value in out {
            *value = self.normal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_pcg32_reference_stream() {
        // pcg32-demo from the reference C implementation: seed 42, stream 54.
        let mut rng = Rng::with_stream(42, 54);
        let expected = [
            0xa15c_02b7,
            0x7b47_f409,
            0xba1d_3330,
            0x83d2_f293,
            0xbfa4_784b,
            0xcbed_606e,
        ];
        for value in expected {
            assert_eq!(rng.next_u32(), value);
        }
    }

    #[test]
    fn normal_moments_are_standard() {
        let mut rng = Rng::new(7);
        let n = 200_000;
        let (mut sum, mut sum_sq, mut sum_4) = (0.0f64, 0.0f64, 0.0f64);
        for _ in 0..n {
            let z = f64::from(rng.normal());
            sum += z;
            sum_sq += z * z;
            sum_4 += z * z * z * z;
        }
        let mean = sum / n as f64;
        let var = sum_sq / n as f64 - mean * mean;
        // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032, 4th moment ~0.011.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
        assert!((sum_4 / n as f64 - 3.0).abs() < 0.06, "kurtosis");
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[rng.below(7) as usize] += 1;
        }
        assert!(
            seen.iter().all(|&count| (850..1150).contains(&count)),
            "{seen:?}"
        );
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn uniform_is_in_unit_interval() {
        let mut rng = Rng::new(3);
        for _ in 0..10_000 {
            let u = rng.uniform();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
