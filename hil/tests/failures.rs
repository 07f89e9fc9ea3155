//! Every way a board run can go wrong ends in a clear failure with its reason, never a hang
//! or a pass: a blob too large for the board's RAM (refused by the build script, or by the
//! linker), a corrupt blob (refused at build time with the runtime's reason), and a device
//! that fails while generating (the device's error line and exit status). A panicking,
//! faulting or hanging device is covered by `harness_selftest.rs`.

use ddm_core::sampler::SamplerKind;
use ddm_core::timesteps::Spacing;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ddm_core::{BetaSchedule, Prediction, ScheduleConfig};
use ddm_firmware::writer::{write_blob, ModelSpec, NodeSpec, OpSpec, ScheduleSpec, Weights};
use ddm_firmware::{Precision, SamplerConfig};
use ddm_hil::check::{check, CheckOptions};
use ddm_hil::Error;

const BOARD: &str = "qemu-mps2-an386";

/// A directory of its own under the target directory, for generated blobs.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn schedule() -> ScheduleSpec {
    ScheduleSpec::from_config(
        ScheduleConfig {
            betas: BetaSchedule::Linear {
                beta_start: 1e-4,
                beta_end: 0.02,
            },
            train_steps: 100,
            zero_terminal_snr: false,
        },
        Prediction::Eps,
    )
}

/// An f32 model `x -> silu(x)` on samples of `len` values: almost all of its arena is the
/// sampler's sample-sized buffers, so `len` sets the RAM it needs.
fn wide_blob(dir: &Path, len: usize) -> PathBuf {
    let spec = ModelSpec {
        precision: Precision::F32,
        nodes: vec![
            NodeSpec::new(OpSpec::Input { shape: vec![len] }),
            NodeSpec::new(OpSpec::Silu { input: 0 }),
        ],
        output: 1,
        schedule: schedule(),
        sampler: SamplerConfig::with_spacing(SamplerKind::Ddim, 2, Spacing::Leading),
        plan: None,
        time_groups: vec![],
    };
    let path = dir.join(format!("wide-{len}.ddm"));
    std::fs::write(&path, write_blob(&spec).unwrap()).unwrap();
    path
}

fn options(model: PathBuf) -> CheckOptions {
    CheckOptions {
        timeout: Duration::from_secs(120),
        ..CheckOptions::new(BOARD, model)
    }
}

#[test]
fn an_arena_larger_than_the_ram_is_refused_at_build_time() {
    // 17,000 f32 values: x, the output, the scratch and the activations take ~270 KB.
    let model = wide_blob(&scratch("too-large"), 17_000);
    let error = check(&options(model)).expect_err("the arena cannot fit 256 KiB");
    let Error::ModelRejected { board, reason } = &error else {
        panic!("expected the build script's refusal, got: {error}");
    };
    assert_eq!(board, BOARD);
    assert!(
        reason.contains("blob too large for qemu-mps2-an386's RAM")
            && reason.contains("262144 bytes of RAM"),
        "{error}"
    );
    println!("{error}");
}

#[test]
fn an_arena_that_leaves_no_room_for_the_stack_fails_at_link_time() {
    // ~199 KB of arena and the 50 KB output buffer fit the 256 KiB, but leave less than the
    // 16 KiB stack reserve of memory.x: the linker refuses the image.
    let model = wide_blob(&scratch("no-stack"), 12_400);
    let error = check(&options(model)).expect_err("the image cannot fit the RAM");
    let Error::RamOverflow {
        board,
        arena,
        ram,
        linker_says,
    } = &error
    else {
        panic!("expected a RAM overflow, got: {error}");
    };
    assert_eq!(board, BOARD);
    assert_eq!(ram.0, Some(256 * 1024));
    assert!(
        arena.0.is_some_and(|a| a > 190_000 && a < 256 * 1024),
        "{error}"
    );
    assert!(
        linker_says.contains("not enough RAM left for the stack"),
        "{error}"
    );
    assert!(!linker_says.is_empty());
    let message = error.to_string();
    assert!(
        message.starts_with("blob too large for qemu-mps2-an386's RAM"),
        "{message}"
    );
    println!("{message}");
}

#[test]
fn a_corrupt_blob_is_refused_at_build_time_with_the_runtime_reason() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/optdigits-mlp-int8.ddm");
    let mut bytes = std::fs::read(fixture).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let model = scratch("corrupt").join("corrupt.ddm");
    std::fs::write(&model, bytes).unwrap();
    let error = check(&options(model)).expect_err("a corrupt blob must not build");
    let Error::ModelRejected { reason, .. } = &error else {
        panic!("expected the build script's refusal, got: {error}");
    };
    assert!(
        reason.contains("corrupt.ddm is not a usable model blob"),
        "{error}"
    );
    assert!(reason.contains("blob CRC mismatch"), "{error}");
    println!("{error}");
}

#[test]
fn a_truncated_blob_is_refused_at_build_time() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/optdigits-mlp-int8.ddm");
    let bytes = std::fs::read(fixture).unwrap();
    let model = scratch("truncated").join("truncated.ddm");
    std::fs::write(&model, &bytes[..bytes.len() / 3]).unwrap();
    let error = check(&options(model)).expect_err("a truncated blob must not build");
    assert!(
        matches!(&error, Error::ModelRejected { reason, .. } if reason.contains("truncated blob")),
        "{error}"
    );
}

#[test]
fn a_device_that_fails_while_generating_reports_why() {
    // An f32 linear layer with huge weights overflows to infinity: the runtime refuses the
    // output on the device, which prints the reason and panics with it (a failure status).
    let len = 16;
    let spec = ModelSpec {
        precision: Precision::F32,
        nodes: vec![
            NodeSpec::new(OpSpec::Input { shape: vec![len] }),
            NodeSpec::new(OpSpec::Linear {
                input: 0,
                out_features: len,
                weight: Weights::F32(vec![3e38; len * len]),
                bias: None,
            }),
        ],
        output: 1,
        schedule: schedule(),
        sampler: SamplerConfig::with_spacing(SamplerKind::Ddim, 2, Spacing::Leading),
        plan: None,
        time_groups: vec![],
    };
    let model = scratch("overflow").join("overflow.ddm");
    std::fs::write(&model, write_blob(&spec).unwrap()).unwrap();
    let error = check(&options(model)).expect_err("a failing device must not pass");
    let Error::DeviceFailed { status, log, .. } = &error else {
        panic!("expected a device failure, got: {error}");
    };
    assert!(!status.success());
    assert!(
        log.iter().any(|line| line.message.starts_with("error: ")
            && line.message.contains("NaN or infinite values")),
        "{error}"
    );
    let panic = log
        .iter()
        .find(|line| line.message.starts_with("panicked at "))
        .unwrap_or_else(|| panic!("no panic message in the log: {error}"));
    assert!(
        panic.message.contains("generate.rs")
            && panic
                .message
                .contains("generation failed: the network produced NaN"),
        "{}",
        panic.message
    );
    println!("{error}");
}
