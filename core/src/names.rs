//! The names by which a user chooses a sampler, a timestep spacing and a reverse variance:
//! the same word on `ddm`'s command line, in run configuration files, in a board's build
//! variables (`DDM_SAMPLER`, `DDM_SPACING`, `DDM_VARIANCE`), in the HIL harness and in the
//! device's report, decided here once.
//!
//! Each type has `ALL` (every value, in a fixed order), `name` and `from_name`, its inverse:
//! `from_name(v.name()) == Some(v)` for every `v` in `ALL`, and `None` for any other string.

use crate::loss_weight::ReverseVariance;
use crate::sampler::SamplerKind;
use crate::timesteps::Spacing;

impl SamplerKind {
    /// Every sampler kind.
    pub const ALL: [SamplerKind; 5] = [
        SamplerKind::Ddpm,
        SamplerKind::Ddim,
        SamplerKind::DpmSolverPp2m,
        SamplerKind::PredictorCorrector,
        SamplerKind::ProbabilityFlow,
    ];

    /// The sampler's name: `ddpm`, `ddim`, `dpmpp-2m`, `pc` or `pf-ode`.
    pub const fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::DpmSolverPp2m => "dpmpp-2m",
            SamplerKind::PredictorCorrector => "pc",
            SamplerKind::ProbabilityFlow => "pf-ode",
        }
    }

    /// The sampler named `name` ([`SamplerKind::name`]'s inverse).
    pub fn from_name(name: &str) -> Option<SamplerKind> {
        SamplerKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

impl Spacing {
    /// Every spacing.
    pub const ALL: [Spacing; 4] = [
        Spacing::Leading,
        Spacing::Linspace,
        Spacing::Trailing,
        Spacing::LogSnr,
    ];

    /// The spacing's name: `leading`, `linspace`, `trailing` or `logsnr`, or `given` for
    /// [`Spacing::Given`] (which a name alone cannot give: it is not in [`Spacing::ALL`]).
    pub const fn name(self) -> &'static str {
        match self {
            Spacing::Leading => "leading",
            Spacing::Linspace => "linspace",
            Spacing::Trailing => "trailing",
            Spacing::LogSnr => "logsnr",
            Spacing::Given(_) => "given",
        }
    }

    /// The spacing named `name` ([`Spacing::name`]'s inverse over [`Spacing::ALL`]).
    pub fn from_name(name: &str) -> Option<Spacing> {
        Spacing::ALL
            .into_iter()
            .find(|spacing| spacing.name() == name)
    }
}

impl ReverseVariance {
    /// Every reverse variance.
    pub const ALL: [ReverseVariance; 2] = [ReverseVariance::Beta, ReverseVariance::Posterior];

    /// The variance's name: `beta` (diffusers' `fixed_large`) or `posterior` (`fixed_small`).
    pub const fn name(self) -> &'static str {
        match self {
            ReverseVariance::Beta => "beta",
            ReverseVariance::Posterior => "posterior",
        }
    }

    /// The variance named `name` ([`ReverseVariance::name`]'s inverse).
    pub fn from_name(name: &str) -> Option<ReverseVariance> {
        ReverseVariance::ALL
            .into_iter()
            .find(|variance| variance.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_maps_back_to_its_value_and_no_other_string_does() {
        for kind in SamplerKind::ALL {
            assert_eq!(SamplerKind::from_name(kind.name()), Some(kind));
        }
        for spacing in Spacing::ALL {
            assert_eq!(Spacing::from_name(spacing.name()), Some(spacing));
        }
        for variance in ReverseVariance::ALL {
            assert_eq!(ReverseVariance::from_name(variance.name()), Some(variance));
        }
        assert_eq!(SamplerKind::from_name("langevin"), None);
        assert_eq!(SamplerKind::from_name("DDIM"), None);
        assert_eq!(Spacing::from_name("log-snr"), None);
        assert_eq!(Spacing::from_name("given"), None);
        assert_eq!(ReverseVariance::from_name(""), None);
    }
}
