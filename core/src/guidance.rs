//! Classifier-free guidance (Ho & Salimans 2022) in diffusers' convention.
//!
//! A class-conditional network predicts `c = f(x_t, t, y)` for the requested class `y` and
//! `u = f(x_t, t, none)` with the class dropped. Guidance of scale `w` replaces the prediction
//! by `u + w (c - u)` (diffusers' `guidance_scale`): `w = 1` is the conditional prediction
//! alone (one network call, no guidance), larger `w` pushes samples towards the class.
//! Every sampler takes the guided prediction as it would take the network's, whatever the
//! prediction type (eps, x0 and v are linear in one another at a fixed timestep, so guiding
//! any of them is the same guidance).

use crate::error::{check_len, Error, Result};

/// ddm's default guidance scale (`ddm sample --class` without `--guidance`): the smallest
/// measured scale at which samples are classified as their class at least 95% of the time on
/// optdigits and 90% on Fashion-MNIST (BENCHMARKS.md, "Class-conditional generation and
/// fine-tuning"); the per-class FD grows with the scale.
pub const DEFAULT_SCALE: f32 = 1.5;

/// A validated guidance scale.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Guidance {
    scale: f32,
}

impl Guidance {
    /// No guidance: the conditional prediction alone (`w = 1`).
    pub const NONE: Guidance = Guidance { scale: 1.0 };

    /// ddm's default guidance, [`DEFAULT_SCALE`].
    pub const DEFAULT: Guidance = Guidance {
        scale: DEFAULT_SCALE,
    };

    /// Guidance of scale `scale`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `scale` is finite and `>= 1` (diffusers applies no
    /// guidance at all for scales `<= 1`; ask for the unconditional model by giving no class).
    pub const fn new(scale: f32) -> Result<Self> {
        if !(scale.is_finite() && scale >= 1.0) {
            return Err(Error::InvalidParameter(
                "the guidance scale must be finite and >= 1 (1: no guidance)",
            ));
        }
        Ok(Guidance { scale })
    }

    /// The scale `w`.
    pub fn scale(self) -> f32 {
        self.scale
    }

    /// Whether the unconditional prediction is needed (`w > 1`): one network call per step
    /// without it, two with it.
    pub fn needs_unconditional(self) -> bool {
        self.scale != 1.0
    }

    /// Replaces `conditional` by `unconditional + w (conditional - unconditional)`, element by
    /// element in `f32`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when the two predictions differ in length.
    pub fn apply(self, unconditional: &[f32], conditional: &mut [f32]) -> Result<()> {
        check_len(
            "unconditional prediction",
            conditional.len(),
            unconditional.len(),
        )?;
        if !self.needs_unconditional() {
            return Ok(());
        }
        for (c, &u) in conditional.iter_mut().zip(unconditional) {
            *c = u + self.scale * (*c - u);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_as_diffusers() {
        let u = [1.0f32, -2.0, 0.5];
        let mut c = [2.0f32, -1.0, 0.5];
        Guidance::new(3.0).unwrap().apply(&u, &mut c).unwrap();
        assert_eq!(c, [4.0, 1.0, 0.5]);
        let mut same = [2.0f32, -1.0, 0.5];
        Guidance::NONE.apply(&u, &mut same).unwrap();
        assert_eq!(same, [2.0, -1.0, 0.5]);
        assert!(!Guidance::NONE.needs_unconditional());
        assert!(Guidance::new(1.5).unwrap().needs_unconditional());
        assert!(Guidance::new(2.0)
            .unwrap()
            .apply(&u, &mut [0.0; 2])
            .is_err());
        assert_eq!(
            Guidance::new(1.0).unwrap(),
            Guidance::NONE,
            "1 is the smallest scale"
        );
        assert_eq!(Guidance::new(2.5).unwrap().scale(), 2.5);
        for bad in [0.99, 0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(Guidance::new(bad).is_err(), "{bad}");
        }
    }
}
