//! `ddm schedule`: print a schedule and its inference timesteps.

use clap::Args as ClapArgs;
use ddm::schedule_args::{BetaScheduleName, ScheduleSpec, SpacingName, VeArgs};
use ddm_core::timesteps::{fill_timesteps, previous};
use ddm_core::Schedule;
use serde_json::json;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Shape of the betas.
    #[arg(long, value_enum, default_value_t = BetaScheduleName::Linear)]
    beta_schedule: BetaScheduleName,
    /// Number of training steps T.
    #[arg(long, default_value_t = 1000)]
    train_steps: usize,
    /// Number of inference steps N.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// How the N timesteps are spread over 0..T.
    #[arg(long, value_enum, default_value_t = SpacingName::Leading)]
    spacing: SpacingName,
    /// Offset added to leading timesteps.
    #[arg(long, default_value_t = 0)]
    steps_offset: usize,
    /// Rescale the schedule to zero terminal SNR.
    #[arg(long)]
    zero_snr: bool,
    #[command(flatten)]
    ve: VeArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let spec = ScheduleSpec {
        beta_schedule: args.beta_schedule,
        train_steps: args.train_steps,
        zero_snr: args.zero_snr,
        sigmas: args.ve.sigmas(args.beta_schedule, None)?,
    };
    let table = spec.alphas_cumprod()?;
    let schedule = Schedule::new(&table)?;
    let mut timesteps = vec![0u32; args.steps];
    fill_timesteps(
        &schedule,
        args.spacing.into(),
        args.steps_offset,
        &mut timesteps,
    )?;
    let previous: Vec<Option<usize>> = (0..timesteps.len())
        .map(|i| previous(&timesteps, i))
        .collect();
    let alphas: Vec<f64> = timesteps
        .iter()
        .map(|&t| schedule.alpha_bar(t as usize))
        .collect();
    let previous_alphas: Vec<f64> = previous.iter().map(|&p| schedule.alpha_bar_at(p)).collect();

    if args.json {
        let output = json!({
            "beta_schedule": args.beta_schedule,
            "train_steps": args.train_steps,
            "zero_snr": args.zero_snr,
            "spacing": args.spacing,
            "steps_offset": args.steps_offset,
            "timesteps": timesteps,
            "alphas_cumprod": alphas,
            // -1 marks the final step, which lands on clean data (alpha-bar = 1).
            "prev_timesteps": previous
                .iter()
                .map(|p| p.map_or(-1, |t| t as i64))
                .collect::<Vec<_>>(),
            "prev_alphas_cumprod": previous_alphas,
            "snr": timesteps.iter().map(|&t| schedule.snr(t as usize)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(());
    }
    println!(
        "{:>5} {:>6} {:>6} {:>12} {:>12} {:>12}",
        "step", "t", "prev", "alpha_bar", "prev_abar", "log_snr"
    );
    for (i, &t) in timesteps.iter().enumerate() {
        let prev = previous[i].map_or("clean".to_string(), |p| p.to_string());
        println!(
            "{:>5} {:>6} {:>6} {:>12.6e} {:>12.6e} {:>12.4}",
            i,
            t,
            prev,
            alphas[i],
            previous_alphas[i],
            schedule.log_snr(t as usize)
        );
    }
    Ok(())
}
