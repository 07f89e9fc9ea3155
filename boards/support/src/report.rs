//! The run every board image makes: generate the configured samples, time each network call,
//! toggle the status LED once per step and print the crate's line protocol over defmt.

use ddm_firmware::{required_arena_bytes_for_steps, Blob, StepInfo};
use defmt::Display2Format;
use embedded_hal::digital::OutputPin;

use crate::clock::Clock;
use crate::trace::{fnv1a, generate_observed, StepObserver};
use crate::{RunConfig, IMAGE_CHUNK_BYTES};

/// Why a run failed (already printed as an `error:` line when [`run`] returns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// The runtime refused the blob or the settings, or failed while generating.
    Runtime(ddm_firmware::Error),
    /// The output buffer does not hold one sample.
    OutputLength {
        /// Elements of one sample.
        expected: usize,
        /// Elements of the buffer.
        actual: usize,
    },
}

impl core::fmt::Display for RunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RunError::Runtime(error) => write!(f, "{error}"),
            RunError::OutputLength { expected, actual } => write!(
                f,
                "the output buffer holds {actual} values, a sample has {expected}"
            ),
        }
    }
}

/// The board's name and the pieces [`run`] needs from it.
pub struct Board<'a, C, L> {
    /// Name in the report (the board crate's directory name).
    pub name: &'a str,
    /// Times each network call.
    pub clock: &'a mut C,
    /// Toggled before every network call, so a person sees the board work.
    pub led: &'a mut L,
}

/// Times the network call of each step, toggles the LED and prints one `step` line per step.
struct StepReporter<'b, 'a, C, L> {
    board: &'b mut Board<'a, C, L>,
    sample: u64,
    started: u64,
    ticks: u64,
    led_on: bool,
}

impl<C: Clock, L: OutputPin> StepObserver for StepReporter<'_, '_, C, L> {
    fn before_network(&mut self, _step: StepInfo) {
        // An LED that cannot be switched is not worth failing the run for.
        self.led_on = !self.led_on;
        let _ = if self.led_on {
            self.board.led.set_high()
        } else {
            self.board.led.set_low()
        };
        self.started = self.board.clock.now();
    }

    fn after_network(&mut self, _step: StepInfo) {
        self.ticks = self.board.clock.now().wrapping_sub(self.started);
    }

    fn after_step(&mut self, step: StepInfo, x: &[f32]) {
        defmt::info!(
            "step sample={=u64} index={=u32} t={=u32} ticks={=u64} fnv={=u32:#010x}",
            self.sample,
            step.index,
            step.timestep,
            self.ticks,
            fnv1a(x)
        );
    }

    fn before_decode(&mut self) {
        self.started = self.board.clock.now();
    }

    fn after_decode(&mut self) {
        let ticks = self.board.clock.now().wrapping_sub(self.started);
        defmt::info!("decode sample={=u64} ticks={=u64}", self.sample, ticks);
    }
}

/// Generates `config.num` samples with the model in `blob`, printing the whole protocol (see
/// the crate documentation) from the `ddm` line to `done`.
///
/// `arena` must hold [`required_arena_bytes_for_steps`] for `config.steps`, `out` one
/// generated sample ([`Blob::image_len`]: a latent model's decoded image).
/// On failure the reason is printed as an `error:` line and returned; the board then ends the
/// run with a failure status.
pub fn run<C: Clock, L: OutputPin>(
    board: &mut Board<'_, C, L>,
    blob: &[u8],
    arena: &mut [u8],
    out: &mut [f32],
    config: &RunConfig,
) -> Result<(), RunError> {
    let result = generate_all(board, blob, arena, out, config);
    match &result {
        Ok(()) => defmt::info!("done"),
        Err(error) => defmt::error!("error: {}", Display2Format(error)),
    }
    result
}

fn generate_all<C: Clock, L: OutputPin>(
    board: &mut Board<'_, C, L>,
    blob: &[u8],
    arena: &mut [u8],
    out: &mut [f32],
    config: &RunConfig,
) -> Result<(), RunError> {
    defmt::info!(
        "ddm board={=str} clock={=str} hz={=u32}",
        board.name,
        board.clock.name(),
        board.clock.hz()
    );
    let blob = Blob::parse(blob).map_err(RunError::Runtime)?;
    let arena_bytes =
        required_arena_bytes_for_steps(&blob, config.steps as usize).map_err(RunError::Runtime)?;
    defmt::info!(
        "model precision={=str} nodes={=usize} sample_len={=usize} macs={=u64} blob_bytes={=usize} arena_bytes={=usize} decoder_macs={=u64}",
        blob.precision().name(),
        blob.node_count(),
        blob.image_len(),
        blob.macs(),
        blob.bytes().len(),
        arena_bytes,
        blob.decoder().map_or(0, |decoder| decoder.macs())
    );
    let resolved = config
        .settings(0)
        .resolve(&blob)
        .map_err(RunError::Runtime)?;
    defmt::info!(
        "run sampler={=str} steps={=u32} seed={=u64} num={=u64}",
        resolved.kind.name(),
        resolved.steps,
        config.seed,
        config.num
    );
    if out.len() != blob.image_len() {
        return Err(RunError::OutputLength {
            expected: blob.image_len(),
            actual: out.len(),
        });
    }
    for sample in 0..config.num {
        let mut reporter = StepReporter {
            board: &mut *board,
            sample,
            started: 0,
            ticks: 0,
            led_on: false,
        };
        generate_observed(&blob, arena, &config.settings(sample), out, &mut reporter)
            .map_err(RunError::Runtime)?;
        let _ = board.led.set_low();
        for (index, chunk) in bytemuck::cast_slice::<f32, u8>(out)
            .chunks(IMAGE_CHUNK_BYTES)
            .enumerate()
        {
            defmt::info!(
                "image sample={=u64} offset={=usize} bytes={=[u8]}",
                sample,
                index * IMAGE_CHUNK_BYTES,
                chunk
            );
        }
        defmt::info!("sample index={=u64} fnv={=u32:#010x}", sample, fnv1a(out));
    }
    if let Some((used, size)) = crate::stack::high_water() {
        defmt::info!("stack used={=usize} size={=usize}", used, size);
    }
    Ok(())
}
