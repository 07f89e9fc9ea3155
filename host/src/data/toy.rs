//! Two-dimensional toy distributions generated from a seed.
//!
//! All toys draw from [`ddm_core::Rng`] and evaluate their trigonometry with `libm`, so a
//! `(toy, n, seed)` triple gives bit-identical samples on every machine. Each is laid out to fit (almost all of its mass) in `[-1, 1]^2`, the range
//! the diffusion schedules assume for clean data:
//!
//! | toy | distribution | range | labels |
//! | --- | --- | --- | --- |
//! | `8gaussians` | 8 equal-weight isotropic Gaussians, means on a circle of radius [`EIGHT_GAUSSIANS_RADIUS`] = 0.8 at angles `k * 45°`, std [`EIGHT_GAUSSIANS_STD`] = 0.05 | radius 0.8 ± 4 std = 1.0 | mode `k` (0..8) |
//! | `moons` | scikit-learn's two moons, centred and scaled by 0.6, plus isotropic noise of std [`MOONS_NOISE_STD`] = 0.05 | x in [-0.9, 0.9], y in [-0.45, 0.45] before noise | moon (0 upper, 1 lower) |
//! | `swissroll` | the 2-D swiss roll `t (cos t, sin t)`, `t` uniform in `[1.5π, 4.5π]`, divided by 5π, plus noise of std [`SWISSROLL_NOISE_STD`] = 0.02 | radius in [0.3, 0.9] before noise | none |
//! | `checkerboard` | uniform on the 8 dark squares of a 4x4 board covering `[-1, 1]^2` (square `(i, j)` with `i + j` even, squares 0.5 wide) | exactly `[-1, 1)^2` | none |
//!
//! Adjacent 8-Gaussians modes are `2 * 0.8 * sin(22.5°) ≈ 0.61` apart, about 12 standard
//! deviations: the modes are well separated. The mixture is exactly the one
//! [`eight_gaussians_mixture`] returns, so the core's Gaussian-mixture oracle can score it.

use std::f32::consts::{FRAC_1_SQRT_2, PI};
use std::fmt;
use std::str::FromStr;

use ddm_core::{GaussianMixture, Rng};

use super::Dataset;
use crate::error::{Error, Result};

/// Number of samples a toy data set has unless asked otherwise.
pub const DEFAULT_TOY_SAMPLES: usize = 8000;

/// Radius of the circle the 8-Gaussians means lie on.
pub const EIGHT_GAUSSIANS_RADIUS: f32 = 0.8;
/// Standard deviation of each 8-Gaussians component (the same in both coordinates).
pub const EIGHT_GAUSSIANS_STD: f32 = 0.05;
/// Standard deviation of the noise added to the two moons.
pub const MOONS_NOISE_STD: f32 = 0.05;
/// Standard deviation of the noise added to the swiss roll.
pub const SWISSROLL_NOISE_STD: f32 = 0.02;

const R: f32 = EIGHT_GAUSSIANS_RADIUS;
const D: f32 = EIGHT_GAUSSIANS_RADIUS * FRAC_1_SQRT_2;

/// Means of the 8-Gaussians mixture, row-major `[8, 2]`: mode `k` is at angle `k * 45°`
/// (counter-clockwise from the positive x axis) on the circle of radius
/// [`EIGHT_GAUSSIANS_RADIUS`]. The axis-aligned coordinates are exact zeros.
pub const EIGHT_GAUSSIANS_MEANS: [f32; 16] = [
    R, 0.0, //
    D, D, //
    0.0, R, //
    -D, D, //
    -R, 0.0, //
    -D, -D, //
    0.0, -R, //
    D, -D, //
];
/// Standard deviations of the 8-Gaussians components (all [`EIGHT_GAUSSIANS_STD`]).
pub const EIGHT_GAUSSIANS_STDS: [f32; 8] = [EIGHT_GAUSSIANS_STD; 8];
/// Weights of the 8-Gaussians components (all 1/8).
pub const EIGHT_GAUSSIANS_WEIGHTS: [f32; 8] = [0.125; 8];

/// The 8-Gaussians distribution as the core's exact mixture (dimension 2, 8 components),
/// borrowing [`EIGHT_GAUSSIANS_MEANS`], [`EIGHT_GAUSSIANS_STDS`] and
/// [`EIGHT_GAUSSIANS_WEIGHTS`]. Drawing with it (`GaussianMixture::sample`) from `Rng::new(seed)`
/// gives bit for bit the values of `generate(Toy::EightGaussians, n, seed)`.
pub fn eight_gaussians_mixture() -> GaussianMixture<'static> {
    static MEANS: [f32; 16] = EIGHT_GAUSSIANS_MEANS;
    static STDS: [f32; 8] = EIGHT_GAUSSIANS_STDS;
    static WEIGHTS: [f32; 8] = EIGHT_GAUSSIANS_WEIGHTS;
    GaussianMixture::new(&MEANS, &STDS, &WEIGHTS, 2)
        .expect("the 8-Gaussians constants form a valid mixture")
}

/// A 2-D toy distribution (see the [module docs](self) for the exact definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Toy {
    /// Eight Gaussians on a circle (`8gaussians`).
    EightGaussians,
    /// Two interleaving half circles (`moons`).
    Moons,
    /// A 2-D swiss roll spiral (`swissroll`).
    SwissRoll,
    /// A 4x4 checkerboard (`checkerboard`).
    Checkerboard,
}

impl Toy {
    /// Every toy, in the order of the module docs.
    pub const ALL: [Toy; 4] = [
        Toy::EightGaussians,
        Toy::Moons,
        Toy::SwissRoll,
        Toy::Checkerboard,
    ];

    /// The toy's name as written on the command line (`8gaussians`, `moons`, `swissroll`,
    /// `checkerboard`).
    pub fn name(self) -> &'static str {
        match self {
            Toy::EightGaussians => "8gaussians",
            Toy::Moons => "moons",
            Toy::SwissRoll => "swissroll",
            Toy::Checkerboard => "checkerboard",
        }
    }

    /// Number of classes of the toy's labels, or `None` for toys without labels.
    pub fn classes(self) -> Option<u32> {
        match self {
            Toy::EightGaussians => Some(8),
            Toy::Moons => Some(2),
            Toy::SwissRoll | Toy::Checkerboard => None,
        }
    }
}

impl fmt::Display for Toy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Toy {
    type Err = Error;

    /// Parses a toy name (ASCII case-insensitive).
    ///
    /// # Errors
    /// [`Error::Invalid`] listing the valid names.
    fn from_str(s: &str) -> Result<Self> {
        Toy::ALL
            .into_iter()
            .find(|toy| toy.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<&str> = Toy::ALL.iter().map(|t| t.name()).collect();
                Error::Invalid(format!(
                    "unknown toy data set {s:?}; valid toys: {}",
                    names.join(", ")
                ))
            })
    }
}

/// Generates `n` samples of `toy` from `Rng::new(seed)`.
///
/// Returns a [`Dataset`] named `toy:NAME` with shape `[2]`, `n` samples and labels for the toys
/// that have them ([`Toy::classes`]). Deterministic: the same `(toy, n, seed)` gives the same
/// values on every machine, and the first `m` samples for `n >= m` are those for `n = m`.
///
/// # Errors
/// [`Error::Invalid`] when `n` is 0.
pub fn generate(toy: Toy, n: usize, seed: u64) -> Result<Dataset> {
    if n == 0 {
        return Err(Error::Invalid(format!(
            "toy:{toy} needs at least one sample (got 0)"
        )));
    }
    let mut rng = Rng::new(seed);
    let mixture = eight_gaussians_mixture();
    let mut values = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(if toy.classes().is_some() { n } else { 0 });
    for _ in 0..n {
        let (point, label) = match toy {
            Toy::EightGaussians => eight_gaussians_point(&mixture, &mut rng),
            Toy::Moons => moons_point(&mut rng),
            Toy::SwissRoll => (swissroll_point(&mut rng), 0),
            Toy::Checkerboard => (checkerboard_point(&mut rng), 0),
        };
        values.extend_from_slice(&point);
        labels.push(label);
    }
    Ok(Dataset {
        name: format!("toy:{toy}"),
        shape: vec![2],
        values,
        labels: toy.classes().map(|_| labels),
    })
}

/// One draw in the order `GaussianMixture::sample` uses: a uniform for the component, then
/// one normal per coordinate.
fn eight_gaussians_point(mixture: &GaussianMixture<'_>, rng: &mut Rng) -> ([f32; 2], u32) {
    let k = mixture.component_for(rng.uniform());
    let (mean, std) = (mixture.mean(k), mixture.std(k));
    let x = mean[0] + std * rng.normal();
    let y = mean[1] + std * rng.normal();
    ([x, y], k as u32)
}

fn moons_point(rng: &mut Rng) -> ([f32; 2], u32) {
    let moon = rng.below(2);
    let t = PI * rng.uniform();
    // scikit-learn's make_moons: upper (cos t, sin t), lower (1 - cos t, 0.5 - sin t); together
    // they span x in [-1, 2], y in [-0.5, 1]. Centre on (0.5, 0.25) and scale by 0.6.
    let (x, y) = if moon == 0 {
        (libm::cosf(t), libm::sinf(t))
    } else {
        (1.0 - libm::cosf(t), 0.5 - libm::sinf(t))
    };
    let scale = 0.6;
    let x = (x - 0.5) * scale + MOONS_NOISE_STD * rng.normal();
    let y = (y - 0.25) * scale + MOONS_NOISE_STD * rng.normal();
    ([x, y], moon)
}

fn swissroll_point(rng: &mut Rng) -> [f32; 2] {
    let t = 1.5 * PI * (1.0 + 2.0 * rng.uniform());
    let scale = 1.0 / (5.0 * PI);
    let x = t * libm::cosf(t) * scale + SWISSROLL_NOISE_STD * rng.normal();
    let y = t * libm::sinf(t) * scale + SWISSROLL_NOISE_STD * rng.normal();
    [x, y]
}

fn checkerboard_point(rng: &mut Rng) -> [f32; 2] {
    // Column i in 0..4; row j in 0..4 with i + j even: j = 2 * h + (i % 2), h in 0..2.
    let i = rng.below(4);
    let j = 2 * rng.below(2) + i % 2;
    let x = -1.0 + 0.5 * (i as f32 + rng.uniform());
    let y = -1.0 + 0.5 * (j as f32 + rng.uniform());
    [x, y]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toys_are_deterministic_for_a_seed_and_differ_across_seeds() {
        for toy in Toy::ALL {
            let a = generate(toy, 500, 7).unwrap();
            let b = generate(toy, 500, 7).unwrap();
            let c = generate(toy, 500, 8).unwrap();
            assert_eq!(a, b, "{toy}");
            assert_ne!(a.values, c.values, "{toy}");
            assert_eq!(a.shape, vec![2]);
            assert_eq!(a.len(), 500);
            assert_eq!(a.name, format!("toy:{toy}"));
            assert!(a.values.iter().all(|v| v.is_finite()));
            // A shorter run is a prefix of a longer one.
            let short = generate(toy, 100, 7).unwrap();
            assert_eq!(short.values[..], a.values[..200], "{toy}");
        }
    }

    #[test]
    fn toys_stay_within_the_documented_range() {
        for toy in Toy::ALL {
            let data = generate(toy, DEFAULT_TOY_SAMPLES, 1).unwrap();
            let max = data.values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // Gaussian tails can poke slightly past 1; nothing should go far.
            assert!(max <= 1.25, "{toy}: max |value| {max}");
            let inside = data.values.iter().filter(|v| v.abs() <= 1.0).count();
            assert!(
                inside as f64 >= 0.995 * data.values.len() as f64,
                "{toy}: only {inside} of {} values in [-1, 1]",
                data.values.len()
            );
        }
        let board = generate(Toy::Checkerboard, 4000, 3).unwrap();
        for p in board.values.chunks_exact(2) {
            assert!(p.iter().all(|v| (-1.0..1.0).contains(v)), "{p:?}");
            let (i, j) = (((p[0] + 1.0) * 2.0) as i32, ((p[1] + 1.0) * 2.0) as i32);
            assert_eq!((i + j) % 2, 0, "{p:?} is on a light square");
        }
    }

    #[test]
    fn labels_where_natural() {
        let g = generate(Toy::EightGaussians, 4000, 2).unwrap();
        let labels = g.labels.as_ref().unwrap();
        assert_eq!(labels.len(), 4000);
        for k in 0..8 {
            let count = labels.iter().filter(|&&l| l == k).count();
            assert!((400..600).contains(&count), "mode {k}: {count}");
        }
        // Each sample lies near the mean of its labelled mode.
        for (i, &k) in labels.iter().enumerate() {
            let mean = &EIGHT_GAUSSIANS_MEANS[2 * k as usize..2 * k as usize + 2];
            let p = g.sample(i);
            let dist = ((p[0] - mean[0]).powi(2) + (p[1] - mean[1]).powi(2)).sqrt();
            assert!(dist < 6.0 * EIGHT_GAUSSIANS_STD, "sample {i}: {dist}");
        }
        let moons = generate(Toy::Moons, 1000, 2).unwrap();
        let labels = moons.labels.unwrap();
        assert!(labels.iter().all(|&l| l < 2));
        assert!(labels.contains(&0) && labels.contains(&1));
        assert_eq!(generate(Toy::SwissRoll, 10, 0).unwrap().labels, None);
        assert_eq!(generate(Toy::Checkerboard, 10, 0).unwrap().labels, None);
    }

    #[test]
    fn eight_gaussians_match_the_core_mixture_bit_for_bit() {
        let mixture = eight_gaussians_mixture();
        assert_eq!((mixture.dim(), mixture.components()), (2, 8));
        let data = generate(Toy::EightGaussians, 300, 11).unwrap();
        let mut oracle = vec![0.0f32; 600];
        mixture.sample(&mut Rng::new(11), &mut oracle).unwrap();
        assert_eq!(data.values, oracle);
        for k in 0..8 {
            let angle = k as f32 * PI / 4.0;
            let mean = mixture.mean(k);
            assert!((mean[0] - EIGHT_GAUSSIANS_RADIUS * angle.cos()).abs() < 1e-6);
            assert!((mean[1] - EIGHT_GAUSSIANS_RADIUS * angle.sin()).abs() < 1e-6);
        }
    }

    #[test]
    fn names_parse_and_bad_names_list_the_valid_ones() {
        for toy in Toy::ALL {
            assert_eq!(toy.name().parse::<Toy>().unwrap(), toy);
            assert_eq!(toy.to_string().to_uppercase().parse::<Toy>().unwrap(), toy);
        }
        let err = "spiral".parse::<Toy>().unwrap_err();
        assert!(matches!(err, Error::Invalid(_)));
        let text = err.to_string();
        assert!(
            text.contains("spiral") && text.contains("8gaussians") && text.contains("checkerboard")
        );
        assert!(matches!(generate(Toy::Moons, 0, 0), Err(Error::Invalid(_))));
    }
}
