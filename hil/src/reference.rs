//! The host's run of the same blob with the same settings, through the same device runtime
//! (`ddm-firmware` compiled for the host): what every device run must equal, bit for bit.

use ddm_board_support::{fnv1a, generate_observed, RunConfig, StepObserver};
use ddm_firmware::{generate, required_arena_bytes_for_steps, Blob, StepInfo};

/// One step of the host's trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStep {
    /// Step index.
    pub index: u32,
    /// Training timestep of its network call.
    pub timestep: u32,
    /// FNV-1a of the sample after the step.
    pub fnv: u32,
}

/// The host's samples and trajectories.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRun {
    /// The generated samples (by [`ddm_firmware::generate()`]), by index.
    pub images: Vec<Vec<f32>>,
    /// Each sample's steps.
    pub steps: Vec<Vec<HostStep>>,
    /// Arena bytes of the run (the plan's figure).
    pub arena_bytes: usize,
    /// Multiply-accumulates per network call.
    pub macs: u64,
    /// Multiply-accumulates of a latent model's decoder call (0 without a decoder).
    pub decoder_macs: u64,
    /// Whether the model decodes each sample (a latent model: one decoder call per sample).
    pub has_decoder: bool,
}

#[derive(Default)]
struct Trajectory(Vec<HostStep>);

impl StepObserver for Trajectory {
    fn after_step(&mut self, step: StepInfo, x: &[f32]) {
        self.0.push(HostStep {
            index: step.index,
            timestep: step.timestep,
            fnv: fnv1a(x),
        });
    }
}

/// Why the host could not produce the reference.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReferenceError {
    /// The runtime refused the blob or the settings.
    #[error("the host runtime refused the blob or settings: {0}")]
    Runtime(#[from] ddm_firmware::Error),
    /// ddm-board-support's traced generation differs from the firmware's on the host: a bug
    /// there, reported instead of comparing the device with the wrong reference.
    #[error(
        "ddm-board-support's traced generation differs from ddm_firmware::generate on the \
         host for sample {0}: fix ddm-firmware's generate_observed"
    )]
    TraceDiffers(u64),
}

/// Generates `config.num` samples of `blob` on the host, with each step's checksum.
pub fn host_run(blob: &[u8], config: &RunConfig) -> Result<HostRun, ReferenceError> {
    let blob = Blob::parse(blob)?;
    let arena_bytes = required_arena_bytes_for_steps(&blob, config.steps as usize)?;
    let mut arena = vec![0u8; arena_bytes];
    let mut images = Vec::new();
    let mut steps = Vec::new();
    for sample in 0..config.num {
        let settings = config.settings(sample);
        let mut image = vec![0.0f32; blob.image_len()];
        generate(&blob, &mut arena, &settings, &mut image)?;
        let mut traced = vec![0.0f32; blob.image_len()];
        let mut trajectory = Trajectory::default();
        generate_observed(&blob, &mut arena, &settings, &mut traced, &mut trajectory)?;
        if !bits_equal(&traced, &image) {
            return Err(ReferenceError::TraceDiffers(sample));
        }
        images.push(image);
        steps.push(trajectory.0);
    }
    Ok(HostRun {
        images,
        steps,
        arena_bytes,
        macs: blob.macs(),
        decoder_macs: blob.decoder().map_or(0, |decoder| decoder.macs()),
        has_decoder: blob.decoder().is_some(),
    })
}

/// Whether two `f32` slices are equal bit for bit.
pub fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}
