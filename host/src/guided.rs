//! Generating a requested class: a class-conditional denoiser under classifier-free guidance.
//!
//! [`Guided`] wraps any [`Denoiser`] whose [`classes`](Denoiser::classes) is `Some` and turns
//! it into the denoiser of one class: each prediction is the conditional one, combined with
//! the unconditional one by [`ddm_core::Guidance`] when the scale is above 1 (two network
//! calls per step then, one otherwise). Every sampler of [`crate::sampling::generate`] takes
//! it like any other denoiser.

use ddm_core::{Guidance, Prediction};

use crate::error::{Error, Result};
use crate::sampling::Denoiser;

pub use ddm_core::guidance::DEFAULT_SCALE as DEFAULT_GUIDANCE;

/// The denoiser of one class of a class-conditional denoiser, with guidance.
pub struct Guided<'d> {
    inner: &'d mut dyn Denoiser,
    class: u32,
    guidance: Guidance,
    unconditional: Vec<f32>,
}

impl std::fmt::Debug for Guided<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guided")
            .field("class", &self.class)
            .field("guidance", &self.guidance)
            .finish_non_exhaustive()
    }
}

impl<'d> Guided<'d> {
    /// `inner` asked for class `class` with guidance scale `scale` (diffusers'
    /// `guidance_scale`: 1 is the conditional model alone).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `inner` is unconditional, `class` is not one of its classes, or
    /// the scale is not finite and `>= 1`.
    pub fn new(inner: &'d mut dyn Denoiser, class: u32, scale: f32) -> Result<Self> {
        let Some(classes) = inner.classes() else {
            return Err(Error::Invalid(
                "this model is unconditional: --class and --guidance need a model trained \
                 with --conditional"
                    .into(),
            ));
        };
        check_class(class, classes)?;
        let guidance =
            Guidance::new(scale).map_err(|e| Error::Invalid(format!("--guidance {scale}: {e}")))?;
        Ok(Guided {
            inner,
            class,
            guidance,
            unconditional: Vec::new(),
        })
    }

    /// The requested class.
    pub fn class(&self) -> u32 {
        self.class
    }

    /// Asks for class `class` from now on.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `class` is not one of the model's classes.
    pub fn set_class(&mut self, class: u32) -> Result<()> {
        check_class(class, self.inner.classes().unwrap_or(0))?;
        self.class = class;
        Ok(())
    }
}

impl Denoiser for Guided<'_> {
    fn sample_shape(&self) -> Vec<usize> {
        self.inner.sample_shape()
    }

    fn prediction(&self) -> Prediction {
        self.inner.prediction()
    }

    fn predict(&mut self, x: &[f32], t: u32, out: &mut [f32]) -> Result<()> {
        self.inner.predict_class(x, t, Some(self.class), out)?;
        if self.guidance.needs_unconditional() {
            self.unconditional.resize(out.len(), 0.0);
            self.inner
                .predict_class(x, t, None, &mut self.unconditional)?;
            self.guidance.apply(&self.unconditional, out)?;
        }
        Ok(())
    }
}

fn check_class(class: u32, classes: usize) -> Result<()> {
    if class as usize >= classes {
        return Err(Error::Invalid(format!(
            "class {class} is outside the model's classes 0..{}",
            classes.saturating_sub(1)
        )));
    }
    Ok(())
}

/// Parses `--class`: `all` (every class of the model), or a comma-separated list of class
/// indices, each below `classes`.
///
/// # Errors
/// [`Error::Invalid`] for an empty list, a word that is not a class index, or a class out of
/// range.
pub fn parse_classes(text: &str, classes: usize) -> Result<Vec<u32>> {
    if text.trim() == "all" {
        return Ok((0..classes as u32).collect());
    }
    let list = text
        .split(',')
        .map(|word| {
            let class: u32 = word.trim().parse().map_err(|_| {
                Error::Invalid(format!(
                    "--class {text}: {word:?} is not a class index (a list like 3,7 or `all`)"
                ))
            })?;
            check_class(class, classes)?;
            Ok(class)
        })
        .collect::<Result<Vec<u32>>>()?;
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1-D denoiser that predicts `class + 1` (or 0 without a class) and counts its calls.
    struct Constant {
        calls: usize,
    }

    impl Denoiser for Constant {
        fn sample_shape(&self) -> Vec<usize> {
            vec![1]
        }
        fn prediction(&self) -> Prediction {
            Prediction::Eps
        }
        fn predict(&mut self, x: &[f32], t: u32, out: &mut [f32]) -> Result<()> {
            self.predict_class(x, t, None, out)
        }
        fn classes(&self) -> Option<usize> {
            Some(3)
        }
        fn predict_class(
            &mut self,
            _: &[f32],
            _: u32,
            c: Option<u32>,
            out: &mut [f32],
        ) -> Result<()> {
            self.calls += 1;
            out.fill(c.map_or(0.0, |c| c as f32 + 1.0));
            Ok(())
        }
    }

    #[test]
    fn guidance_combines_and_skips_the_unconditional_call_at_one() {
        let mut inner = Constant { calls: 0 };
        let mut out = [0.0f32; 2];
        Guided::new(&mut inner, 2, 1.0)
            .unwrap()
            .predict(&[0.0; 2], 5, &mut out)
            .unwrap();
        assert_eq!((out, inner.calls), ([3.0, 3.0], 1));
        Guided::new(&mut inner, 1, 2.5)
            .unwrap()
            .predict(&[0.0; 2], 5, &mut out)
            .unwrap();
        // u = 0, c = 2: 0 + 2.5 (2 - 0).
        assert_eq!((out, inner.calls), ([5.0, 5.0], 3));
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut inner = Constant { calls: 0 };
        assert!(Guided::new(&mut inner, 3, 1.0)
            .unwrap_err()
            .to_string()
            .contains("0..2"));
        assert!(Guided::new(&mut inner, 0, 0.5).is_err());
        assert!(Guided::new(&mut inner, 0, f32::NAN).is_err());
        struct Plain;
        impl Denoiser for Plain {
            fn sample_shape(&self) -> Vec<usize> {
                vec![1]
            }
            fn prediction(&self) -> Prediction {
                Prediction::Eps
            }
            fn predict(&mut self, _: &[f32], _: u32, _: &mut [f32]) -> Result<()> {
                Ok(())
            }
        }
        let err = Guided::new(&mut Plain, 0, 1.0).unwrap_err().to_string();
        assert!(err.contains("unconditional"), "{err}");
        assert_eq!(parse_classes("all", 3).unwrap(), vec![0, 1, 2]);
        assert_eq!(parse_classes("2, 0", 3).unwrap(), vec![2, 0]);
        for bad in ["3", "x", "", "1,,2", "-1"] {
            assert!(parse_classes(bad, 3).is_err(), "{bad}");
        }
    }
}
