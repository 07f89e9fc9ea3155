//! The timestep samplers' settings on the command line, shared by `ddm sample`, `ddm export`
//! and `ddm hil`: one flag, one meaning, resolved by the core's rule
//! ([`ddm_core::SamplerOptions::resolve`]).

use ddm_core::loss_weight::ReverseVariance;
use ddm_core::timesteps::GivenTimesteps;
use ddm_core::{SamplerOptions, Spacing};

use crate::sampling::SamplerChoice;
use crate::schedule_args::SpacingName;
use crate::{Error, Result};

/// DDPM's reverse variances by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VarianceName {
    /// rho^2 = beta (diffusers' "fixed_large").
    Beta,
    /// rho^2 = posterior variance (diffusers' "fixed_small").
    Posterior,
}

impl From<VarianceName> for ReverseVariance {
    fn from(name: VarianceName) -> Self {
        match name {
            VarianceName::Beta => ReverseVariance::Beta,
            VarianceName::Posterior => ReverseVariance::Posterior,
        }
    }
}

/// Sampler settings besides the sampler and its step count: each one given replaces the
/// default (or, for a model blob, the blob's stored setting); each one left out keeps it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SamplerArgs {
    /// Timestep spacing [default: for ddim and ddpm leading with an eps network and trailing
    /// with v or x0; trailing for dpmpp-2m; linspace for pc and pf-ode; trailing on a
    /// zero-terminal-SNR schedule; leading for an eps network on a schedule ending in almost
    /// pure noise (cosine); a model blob: its own].
    #[arg(long, value_enum, conflicts_with = "timesteps")]
    pub spacing: Option<SpacingName>,
    /// The inference timesteps themselves, noisiest first: 1 to 16 strictly descending
    /// integers below the training steps T, comma-separated (as diffusers' `timesteps=`);
    /// they set the step count [default: the spacing's; a distilled student: its own].
    #[arg(long, value_name = "T1,T2,...", value_parser = parse_timesteps)]
    pub timesteps: Option<GivenTimesteps>,
    /// Offset added to leading timesteps [default: 0].
    #[arg(long, conflicts_with = "timesteps")]
    pub steps_offset: Option<u32>,
    /// DDIM's eta: 0 is deterministic, 1 matches DDPM's noise [default: 0].
    #[arg(long)]
    pub eta: Option<f32>,
    /// DDPM's reverse variance [default: posterior].
    #[arg(long, value_enum)]
    pub variance: Option<VarianceName>,
    /// Clamp every x0 estimate (Langevin: its final denoised output) to [-R, R] [default: no
    /// clamp].
    #[arg(long, value_name = "R")]
    pub clip_sample: Option<f32>,
    /// DPM-Solver++: take the second to last step at first order as well as the last
    /// [default: only the last, as diffusers].
    #[arg(long)]
    pub first_order_penultimate: bool,
    /// Predictor-corrector (pc): Langevin corrector steps per timestep, 0 for the reverse
    /// diffusion predictor alone [default: 1].
    #[arg(long, value_name = "M")]
    pub pc_corrector_steps: Option<u32>,
    /// Predictor-corrector: the corrector's signal-to-noise ratio [default: 0.16].
    #[arg(long, value_name = "R")]
    pub pc_snr: Option<f32>,
}

/// `--timesteps`: comma-separated timesteps, as [`GivenTimesteps::new`] takes them.
fn parse_timesteps(text: &str) -> std::result::Result<GivenTimesteps, String> {
    let values = text
        .split(',')
        .map(|part| part.trim().parse::<u32>())
        .collect::<std::result::Result<Vec<u32>, _>>()
        .map_err(|_| format!("{text:?} is not a comma-separated list of timesteps"))?;
    GivenTimesteps::new(&values).map_err(|error| error.to_string())
}

impl SamplerArgs {
    /// `steps` as given, else as many as `--timesteps` gives.
    pub fn steps_or_given(&self, steps: Option<usize>) -> Option<usize> {
        steps.or(self.timesteps.map(|given| given.len()))
    }

    /// The core's options (no sampler kind or step count: the command adds them).
    pub fn options(&self) -> SamplerOptions {
        SamplerOptions {
            spacing: self
                .timesteps
                .map(Spacing::Given)
                .or(self.spacing.map(Into::into)),
            steps_offset: self.steps_offset,
            eta: self.eta,
            variance: self.variance.map(Into::into),
            clip_sample: self.clip_sample.map(Some),
            first_order_penultimate: self.first_order_penultimate.then_some(true),
            corrector_steps: self.pc_corrector_steps,
            snr: self.pc_snr,
            ..SamplerOptions::none()
        }
    }
}

/// The sampler options of a command that runs a model blob (`ddm sample --model`,
/// `ddm hil`): `sampler` and `steps` as given on the command line, over `settings`; every
/// option not given is left to the blob.
///
/// # Errors
/// [`Error::Invalid`] for a sampler the device runtime does not have
/// ([`SamplerChoice::device_kind`]) or a step count beyond `u32`.
pub fn blob_sampler_options(
    sampler: Option<SamplerChoice>,
    steps: Option<usize>,
    settings: &SamplerArgs,
) -> Result<SamplerOptions> {
    let kind = sampler.map(SamplerChoice::device_kind).transpose()?;
    let steps = settings
        .steps_or_given(steps)
        .map(|steps| {
            u32::try_from(steps)
                .map_err(|_| Error::Invalid(format!("--steps {steps} is too large")))
        })
        .transpose()?;
    Ok(SamplerOptions {
        kind,
        steps,
        ..settings.options()
    })
}

/// `--sampler`, `--steps` and the sampler settings of a command that only runs model blobs
/// (`ddm hil`): each one given replaces the blob's.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BlobSamplerArgs {
    /// The sampler: ddpm, ddim, dpmpp-2m, pc or pf-ode [default: the blob's].
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerChoice>,
    /// Timesteps walked per sample: the network evaluations of ddpm, ddim and dpmpp-2m; pc
    /// takes --pc-corrector-steps + 1 per timestep, pf-ode 2 steps - 1 in all [default: the
    /// blob's].
    #[arg(long)]
    pub steps: Option<usize>,
    /// The sampler's settings.
    #[command(flatten)]
    pub settings: SamplerArgs,
}

impl BlobSamplerArgs {
    /// The options, over the blob's ([`blob_sampler_options`]).
    ///
    /// # Errors
    /// As [`blob_sampler_options`].
    pub fn options(&self) -> Result<SamplerOptions> {
        blob_sampler_options(self.sampler, self.steps, &self.settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;
    use ddm_core::SamplerKind;

    fn value_name<T: ValueEnum>(value: &T) -> String {
        value.to_possible_value().unwrap().get_name().to_string()
    }

    #[test]
    fn the_command_line_uses_the_cores_names() {
        for kind in SamplerKind::ALL {
            let choice = SamplerChoice::value_variants()
                .iter()
                .find(|choice| choice.kind() == Some(kind))
                .unwrap();
            assert_eq!(value_name(choice), kind.name());
        }
        for name in SpacingName::value_variants() {
            assert_eq!(value_name(name), Spacing::from(*name).name());
        }
        for name in VarianceName::value_variants() {
            assert_eq!(value_name(name), ReverseVariance::from(*name).name());
        }
        assert_eq!(SpacingName::value_variants().len(), Spacing::ALL.len());
        assert_eq!(
            VarianceName::value_variants().len(),
            ReverseVariance::ALL.len()
        );
    }

    #[test]
    fn timesteps_are_given_spacing_and_set_the_step_count() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Flags {
            #[command(flatten)]
            sampler: BlobSamplerArgs,
        }
        let parse = |args: &[&str]| {
            Flags::try_parse_from(std::iter::once("ddm").chain(args.iter().copied()))
                .map(|flags| flags.sampler)
        };
        let flags = parse(&["--timesteps", "999,640,70"]).unwrap();
        let options = flags.options().unwrap();
        assert_eq!(
            options.spacing,
            Some(Spacing::Given(
                GivenTimesteps::new(&[999, 640, 70]).unwrap()
            ))
        );
        assert_eq!(options.steps, Some(3));
        // --steps given wins (the core then refuses a mismatch); --spacing conflicts.
        let flags = parse(&["--timesteps", "999,640,70", "--steps", "4"]).unwrap();
        assert_eq!(flags.options().unwrap().steps, Some(4));
        assert!(parse(&["--timesteps", "999,640", "--spacing", "trailing"]).is_err());
        for bad in ["640,999", "999,,1", "999,x", ""] {
            assert!(parse(&["--timesteps", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn blob_options_take_only_what_is_given() {
        let args = BlobSamplerArgs {
            sampler: Some(SamplerChoice::DpmppTwoM),
            steps: Some(3),
            settings: SamplerArgs {
                eta: Some(0.5),
                first_order_penultimate: true,
                ..SamplerArgs::default()
            },
        };
        assert_eq!(
            args.options().unwrap(),
            SamplerOptions {
                kind: Some(SamplerKind::DpmSolverPp2m),
                steps: Some(3),
                eta: Some(0.5),
                first_order_penultimate: Some(true),
                ..SamplerOptions::none()
            }
        );
        assert_eq!(
            BlobSamplerArgs::default().options().unwrap(),
            SamplerOptions::none()
        );
        let langevin = BlobSamplerArgs {
            sampler: Some(SamplerChoice::Langevin),
            ..BlobSamplerArgs::default()
        };
        assert!(langevin.options().is_err());
    }
}
