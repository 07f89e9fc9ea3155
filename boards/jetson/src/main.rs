//! `ddm-jetson`: ddm on aarch64 Linux (NVIDIA Jetson, Raspberry Pi).
//!
//! 1. Generates the int8 model embedded at build time (`DDM_MODEL_BLOB`, with the sampler,
//!    seed and count variables of ddm-board-build) through the device runtime,
//!    exactly as a Cortex-M does, and prints ddm-board-support's line protocol on stdout as
//!    plain text (ticks are nanoseconds of `Instant`). The `ddm-hil` harness's `linux-arm`
//!    backend checks the samples bit for bit against the host.
//! 2. With `--reference MODEL-F32.ddm` and/or `--onnx FILE.onnx` (repeatable; needs the `onnx`
//!    feature, which builds tract), times network calls on `--calls` inputs `(x_t, t)` and
//!    prints, before `done`, `network inputs calls=<n>` once the inputs are made, then one
//!    line per engine:
//!    `network engine=<int8|f32|onnx:<file>> [path=<p>] calls=<n> ns_per_call=<n>
//!    max_abs_output=<m> max_abs_diff=<d|n/a>`, the difference being the largest
//!    `|output - f32 runtime output|` over all inputs (`n/a` without `--reference`) and `path`
//!    the int8 product path of the device runtime's engines (`ddm_firmware::Path`: `neon`,
//!    `neon-dotprod` or `neon-i8mm` here). Without `--reference`, each engine's calls run
//!    between its line and the line before it, with nothing else but its setup:
//!    scripts/bench-aarch64-instructions.sh counts the instructions between them under
//!    qemu-aarch64.
//!
//! Exit status 0 after `done`; 1 with an `error: ...` line otherwise; 2 for bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ddm_board_support::{fnv1a, generate_observed, StepObserver, IMAGE_CHUNK_BYTES};
use ddm_core::Rng;
use ddm_firmware::{network_arena_bytes, required_arena_bytes_for_steps, Blob, Network, StepInfo};

ddm_board_support::include_model!();

/// Command-line options.
#[derive(Debug, Default)]
struct Options {
    /// An f32 blob of the same model: the reference of the network comparison.
    reference: Option<PathBuf>,
    /// ONNX exports of the model to run through tract.
    onnx: Vec<PathBuf>,
    /// Network calls per engine in the comparison.
    calls: usize,
}

const USAGE: &str =
    "usage: ddm-jetson [--reference MODEL-F32.ddm] [--onnx FILE.onnx]... [--calls N]";

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        calls: 8,
        ..Options::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--reference" => options.reference = Some(value()?.into()),
            "--onnx" => options.onnx.push(value()?.into()),
            "--calls" => {
                options.calls = value()?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--calls needs an integer > 0")?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument `{arg}`\n{USAGE}")),
        }
    }
    Ok(options)
}

/// Times each network call and prints the `step` lines.
struct Steps {
    sample: u64,
    started: Instant,
    nanos: u128,
}

impl StepObserver for Steps {
    fn before_network(&mut self, _step: StepInfo) {
        self.started = Instant::now();
    }

    fn after_network(&mut self, _step: StepInfo) {
        self.nanos = self.started.elapsed().as_nanos();
    }

    fn after_step(&mut self, step: StepInfo, x: &[f32]) {
        println!(
            "step sample={} index={} t={} ticks={} fnv={:#010x}",
            self.sample,
            step.index,
            step.timestep,
            self.nanos,
            fnv1a(x)
        );
    }

    fn before_decode(&mut self) {
        self.started = Instant::now();
    }

    fn after_decode(&mut self) {
        let nanos = self.started.elapsed().as_nanos();
        println!("decode sample={} ticks={nanos}", self.sample);
    }
}

/// The generation report (the protocol up to, not including, `done`).
fn generate_all(blob: &Blob<'_>) -> Result<(), String> {
    println!("ddm board=jetson clock=monotonic-ns hz=1000000000");
    println!("blob path={MODEL_SOURCE}");
    let arena_bytes =
        required_arena_bytes_for_steps(blob, RUN.steps as usize).map_err(|e| e.to_string())?;
    println!(
        "model precision={} nodes={} sample_len={} macs={} blob_bytes={} arena_bytes={} decoder_macs={}",
        blob.precision().name(),
        blob.node_count(),
        blob.image_len(),
        blob.macs(),
        blob.bytes().len(),
        arena_bytes,
        blob.decoder().map_or(0, |decoder| decoder.macs())
    );
    let resolved = RUN.settings(0).resolve(blob).map_err(|e| e.to_string())?;
    println!(
        "run sampler={} steps={} seed={} num={}",
        resolved.kind.name(),
        resolved.steps,
        RUN.seed,
        RUN.num
    );
    let mut arena = vec![0u8; arena_bytes];
    let mut out = vec![0.0f32; blob.image_len()];
    for sample in 0..RUN.num {
        let mut steps = Steps {
            sample,
            started: Instant::now(),
            nanos: 0,
        };
        generate_observed(
            blob,
            &mut arena,
            &RUN.settings(sample),
            &mut out,
            &mut steps,
        )
        .map_err(|e| e.to_string())?;
        let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
        for (index, chunk) in bytes.chunks(IMAGE_CHUNK_BYTES).enumerate() {
            let list: Vec<String> = chunk.iter().map(u8::to_string).collect();
            println!(
                "image sample={sample} offset={} bytes=[{}]",
                index * IMAGE_CHUNK_BYTES,
                list.join(", ")
            );
        }
        println!("sample index={sample} fnv={:#010x}", fnv1a(&out));
    }
    Ok(())
}

/// The comparison inputs: `calls` noisy samples from seed stream `1000 + k`, at timesteps
/// spread over `0..T`.
fn inputs(blob: &Blob<'_>, calls: usize) -> Vec<(Vec<f32>, u32)> {
    let last = blob.train_steps().saturating_sub(1);
    (0..calls)
        .map(|k| {
            let mut x = vec![0.0f32; blob.sample_len()];
            Rng::with_stream(RUN.seed, 1000 + k as u64).fill_normal(&mut x);
            let t = (k * last / calls.saturating_sub(1).max(1)) as u32;
            (x, t)
        })
        .collect()
}

/// Runs `blob`'s network on every input: the outputs, the mean nanoseconds per call and the
/// int8 product path.
fn run_network(
    blob: &Blob<'_>,
    inputs: &[(Vec<f32>, u32)],
) -> Result<(Vec<Vec<f32>>, u128, &'static str), String> {
    let mut arena = vec![0u8; network_arena_bytes(blob).map_err(|e| e.to_string())?];
    let mut network = Network::new(*blob, &mut arena).map_err(|e| e.to_string())?;
    let path = network.path().name();
    let started = Instant::now();
    let mut outputs = Vec::new();
    for (x, t) in inputs {
        let mut out = vec![0.0f32; blob.output_len()];
        network.run(x, *t, &mut out).map_err(|e| e.to_string())?;
        outputs.push(out);
    }
    Ok((
        outputs,
        started.elapsed().as_nanos() / inputs.len().max(1) as u128,
        path,
    ))
}

/// Runs an ONNX file through tract on every input (batch 1).
#[cfg(feature = "onnx")]
fn run_onnx(
    path: &std::path::Path,
    shape: &[usize],
    inputs: &[(Vec<f32>, u32)],
) -> Result<(Vec<Vec<f32>>, u128), String> {
    use tract_onnx::prelude::*;
    let fail = |e: TractError| format!("{}: {e:#}", path.display());
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(fail)?;
    let mut dims = vec![1];
    dims.extend_from_slice(shape);
    let started = Instant::now();
    let mut outputs = Vec::new();
    for (x, t) in inputs {
        let x = Tensor::from_shape(&dims, x).map_err(fail)?;
        let t = Tensor::from_shape(&[1], &[*t as f32]).map_err(fail)?;
        let result = model
            .run(tvec!(x.into_tvalue(), t.into_tvalue()))
            .map_err(fail)?;
        let view = result[0].to_plain_array_view::<f32>().map_err(fail)?;
        outputs.push(view.iter().copied().collect());
    }
    Ok((
        outputs,
        started.elapsed().as_nanos() / inputs.len().max(1) as u128,
    ))
}

#[cfg(not(feature = "onnx"))]
fn run_onnx(
    path: &std::path::Path,
    _shape: &[usize],
    _inputs: &[(Vec<f32>, u32)],
) -> Result<(Vec<Vec<f32>>, u128), String> {
    Err(format!(
        "cannot run {}: ddm-jetson was built without the `onnx` feature (cargo build --release --features onnx)",
        path.display()
    ))
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The network comparison lines.
fn compare_engines(blob: &Blob<'_>, options: &Options) -> Result<(), String> {
    if options.reference.is_none() && options.onnx.is_empty() {
        return Ok(());
    }
    let inputs = inputs(blob, options.calls);
    println!("network inputs calls={}", inputs.len());
    let reference_bytes = match &options.reference {
        Some(path) => Some(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    let reference = match &reference_bytes {
        Some(bytes) => {
            let f32_blob = Blob::parse(bytes).map_err(|e| format!("the reference blob: {e}"))?;
            Some(run_network(&f32_blob, &inputs)?)
        }
        None => None,
    };
    let line = |engine: &str, outputs: &[Vec<f32>], nanos: u128| {
        let diff = reference.as_ref().map_or("n/a".to_string(), |(r, _, _)| {
            format!("{:e}", max_abs_diff(outputs, r))
        });
        let max_abs = outputs.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
        println!(
            "network engine={engine} calls={} ns_per_call={nanos} max_abs_output={max_abs:e} \
             max_abs_diff={diff}",
            inputs.len()
        );
    };
    let (outputs, nanos, path) = run_network(blob, &inputs)?;
    line(
        &format!("{} path={path}", blob.precision().name()),
        &outputs,
        nanos,
    );
    if let Some((outputs, nanos, path)) = &reference {
        line(&format!("f32 path={path}"), outputs, *nanos);
    }
    let (dims, rank) = blob.sample_shape().dims();
    for path in &options.onnx {
        let (outputs, nanos) = run_onnx(path, &dims[..rank], &inputs)?;
        let name = path
            .file_name()
            .map_or("onnx".into(), |n| n.to_string_lossy());
        line(&format!("onnx:{name}"), &outputs, nanos);
    }
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let result = Blob::parse(&BLOB.0)
        .map_err(|e| format!("the embedded blob: {e}"))
        .and_then(|blob| {
            generate_all(&blob)?;
            compare_engines(&blob, &options)
        });
    match result {
        Ok(()) => {
            println!("done");
            ExitCode::SUCCESS
        }
        Err(message) => {
            println!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
