//! The schedule section: the training schedule, the default sampler and `alphas_cumprod`.

use crate::error::{Error, Result};
use crate::format::*;
use crate::settings::{
    betas_from_code, prediction_from_code, sampler_from_code, spacing_from_code,
    variance_from_code, ModelSchedule, SPACING_GIVEN,
};
use ddm_core::sampler::{DEFAULT_CORRECTOR_STEPS, DEFAULT_SNR};
use ddm_core::timesteps::{GivenTimesteps, Spacing, MAX_GIVEN_STEPS};
use ddm_core::{SamplerConfig, SamplerKind};

pub(super) fn parse_schedule(section: &[u8]) -> Result<(ModelSchedule, SamplerConfig, &[u8])> {
    let fail = Error::InvalidSchedule;
    let word = |at: usize| read_u32(section, at).ok_or(fail("section too short"));
    let float = |at: usize| read_f64(section, at).ok_or(fail("section too short"));
    let flag = |at: usize| match word(at)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(fail("flags must be 0 or 1")),
    };
    let train_steps = word(4)?;
    let steps_usize = usize::try_from(train_steps).unwrap_or(usize::MAX);
    if !(1..=MAX_TRAIN_STEPS).contains(&steps_usize) {
        return Err(fail("train steps out of range"));
    }
    // Given timesteps (as many as the default steps) follow the table.
    let given_len = match word(40)? {
        SPACING_GIVEN => match usize::try_from(word(36)?) {
            Ok(len @ 1..=MAX_GIVEN_STEPS) => len,
            _ => return Err(fail("given timesteps must number 1 to 16")),
        },
        _ => 0,
    };
    let table_end = SCHEDULE_HEADER_LEN + 4 * steps_usize;
    if section.len() != table_end + 4 * given_len {
        return Err(fail(
            "section length does not match the train and given steps",
        ));
    }
    let spacing = if given_len > 0 {
        let mut given = [0u32; MAX_GIVEN_STEPS];
        for (i, slot) in given.iter_mut().take(given_len).enumerate() {
            *slot = word(table_end + 4 * i)?;
        }
        let values = given
            .get(..given_len)
            .ok_or(fail("too many given timesteps"))?;
        Spacing::Given(
            GivenTimesteps::new(values)
                .map_err(|_| fail("given timesteps must be strictly descending"))?,
        )
    } else {
        spacing_from_code(word(40)?)?
    };
    let schedule = ModelSchedule {
        betas: betas_from_code(word(0)?, float(8)?, float(16)?)?,
        train_steps,
        zero_terminal_snr: flag(24)?,
        prediction: prediction_from_code(word(28)?)?,
    };
    let clip = flag(56)?;
    let radius = f32::from_bits(word(60)?);
    let kind = sampler_from_code(word(32)?)?;
    let (corrector_steps, snr) = match kind {
        SamplerKind::PredictorCorrector => (word(68)?, f32::from_bits(word(72)?)),
        _ if word(68)? != 0 || word(72)? != 0 => {
            return Err(fail(
                "corrector settings belong to the predictor-corrector sampler",
            ))
        }
        _ => (DEFAULT_CORRECTOR_STEPS, DEFAULT_SNR),
    };
    let sampler = SamplerConfig {
        kind,
        steps: word(36)?,
        spacing,
        steps_offset: word(44)?,
        eta: f32::from_bits(word(48)?),
        variance: variance_from_code(word(52)?)?,
        clip_sample: clip.then_some(radius),
        first_order_penultimate: flag(64)?,
        corrector_steps,
        snr,
    };
    if !clip && word(60)? != 0 {
        return Err(fail("the clip radius must be 0 without clipping"));
    }
    if word(76)? != 0 {
        return Err(fail("reserved words must be 0"));
    }
    let alphas = section
        .get(SCHEDULE_HEADER_LEN..table_end)
        .ok_or(fail("section too short"))?;
    // The same check the samplers' schedule makes (`Blob::alpha_bar_schedule`).
    let table = ddm_core::Schedule::from_le_bytes(alphas)
        .map_err(|_| fail("alphas_cumprod must lie in [0, 1] and not increase"))?;
    // The check every sampler configuration gets, wherever it comes from.
    sampler.validate(&table).map_err(|error| match error {
        ddm_core::Error::InvalidParameter(what) => fail(what),
        _ => fail("the default steps and offset do not fit the train steps"),
    })?;
    Ok((schedule, sampler, alphas))
}
