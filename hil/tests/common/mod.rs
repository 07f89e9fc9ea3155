//! What several HIL tests share: a check that must pass, the golden comparison, deterministic
//! weights and a small int8 model with time groups.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ddm_core::sampler::SamplerKind;
use ddm_core::timesteps::Spacing;
use ddm_core::{BetaSchedule, Prediction, ScheduleConfig};
use ddm_export::calibration::{calibration_timesteps, time_group_boundaries};
use ddm_export::graph::Graph;
use ddm_export::{Calibration, CalibrationConfig, ExportOptions, RangeMethod};
use ddm_firmware::writer::ScheduleSpec;
use ddm_firmware::{Precision, SamplerConfig};
use ddm_hil::check::{check, CheckOptions, CheckReport, Outcome};
use ddm_hil::golden::{bless_requested, check_golden, Figures};

/// Runs `options`' check and returns its report; panics on an error, and on a skip: a QEMU
/// backend is installed wherever these tests run (the CI script installs it).
pub fn passed(options: &CheckOptions) -> Box<CheckReport> {
    match check(options).unwrap_or_else(|error| panic!("{error}")) {
        Outcome::Passed(report) => report,
        Outcome::Skipped(reason) => {
            panic!(
                "the {:?} check cannot be skipped: {reason}",
                options.backend
            )
        }
    }
}

/// Compares `figures` with their golden file (rewrites it under `DDM_BLESS=1`); panics with
/// every figure that drifted beyond its tolerance.
pub fn matches_golden(figures: &Figures) {
    match check_golden(figures, bless_requested()) {
        Ok(message) => println!("golden: {message}"),
        Err(message) => panic!("{message}"),
    }
}

/// Deterministic weights for every parameter of `graph`: fan-in uniform for weights, ones for
/// norm scales, small values for zero-initialised tensors (so that no layer is trivially 0).
pub fn weights(graph: &ddm_export::graph::Graph) -> ddm_export::graph::Weights {
    use ddm_export::graph::{Init, Tensor};
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    graph
        .params
        .iter()
        .map(|p| {
            let len = p.shape.iter().product();
            let data = match p.init {
                Init::Ones => vec![1.0; len],
                Init::Zeros => (0..len).map(|_| 0.05 * uniform()).collect(),
                Init::FanIn { fan_in } => {
                    let bound = 1.0 / (fan_in as f32).sqrt();
                    (0..len).map(|_| bound * uniform()).collect()
                }
            };
            (
                p.name.clone(),
                Tensor {
                    shape: p.shape.clone(),
                    data,
                },
            )
        })
        .collect()
}

/// int8 with MSE ranges, DDIM in 4 steps on trailing timesteps as the default sampler, and
/// the linear schedule of 1000 steps with eps prediction: the export options of the small
/// test models.
pub fn int8_ddim4_options() -> ExportOptions {
    ExportOptions {
        precision: Precision::Int8,
        range: RangeMethod::Mse,
        sampler: SamplerConfig::with_spacing(SamplerKind::Ddim, 4, Spacing::Trailing),
        schedule: ScheduleSpec::from_config(
            ScheduleConfig {
                betas: BetaSchedule::Linear {
                    beta_start: 1e-4,
                    beta_end: 0.02,
                },
                train_steps: 1000,
                zero_terminal_snr: false,
            },
            Prediction::Eps,
        ),
    }
}

/// A small convolutional denoiser on 4x4 images with every int8 operator whose tensors follow
/// the activation parameters (convolution, linear, SiLU table, concatenation, add,
/// GroupNorm), deterministic weights, exported int8 with one time group per step of its
/// default sampler (DDIM, 4 steps, trailing spacing, linear schedule of 1000 steps) into
/// `dir/conv-int8-groups.ddm`. Returns the path and the number of time groups.
pub fn grouped_conv_blob(dir: &Path) -> (PathBuf, usize) {
    let graph: Graph = {
        let mut b = ddm_export::graph::GraphBuilder::new(&[1, 4, 4]);
        let x = b.input();
        let e = b.time_embedding("time.embed", 8).unwrap();
        let e = b.linear("time.fc", e, 4).unwrap();
        let e = b.silu("time.act", e).unwrap();
        let h = b.conv2d("in", x, 4, 3, 1, 1).unwrap();
        let h = b.add("add_time", h, e).unwrap();
        let h = b.group_norm("norm", h, 2).unwrap();
        let h = b.silu("act", h).unwrap();
        let h = b.concat("skip", &[h, x]).unwrap();
        let out = b.conv2d("out", h, 1, 1, 1, 0).unwrap();
        b.finish(out).unwrap()
    };
    let weights = weights(&graph);
    let options = int8_ddim4_options();
    let timesteps = calibration_timesteps(&options.schedule, &options.sampler).unwrap();
    let mut calibration = Calibration::with_time_groups(
        &graph,
        CalibrationConfig::default(),
        time_group_boundaries(&timesteps, 16),
    )
    .unwrap();
    ddm_export::reference::calibrate_with_sampler(
        &graph,
        &weights,
        &mut calibration,
        &options.schedule,
        &options.sampler,
        8,
        0,
    )
    .unwrap();
    let exported = ddm_export::export(&graph, &weights, &calibration, &options).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("conv-int8-groups.ddm");
    std::fs::write(&path, &exported.blob).unwrap();
    (path, exported.report.time_groups)
}
