//! A latent diffusion model (the Fashion-MNIST latent UNet of BENCHMARKS.md, "Latent
//! diffusion", with its autoencoder's decoder in the same int8 blob) generates latents and
//! decodes them into 28x28 images on the Cortex-M4 under QEMU and on aarch64 Linux under
//! qemu-aarch64 exactly as the host does, within the budget (arena at most 128 KB,
//! flash at most 512 KB); its figures, instructions per image included, match `hil/golden/`
//! (`DDM_BLESS=1` rewrites them).
//!
//! Needs `qemu-system-arm`, `qemu-aarch64` and the targets of the other QEMU tests.

use std::path::PathBuf;
use std::time::Duration;

use ddm_firmware::{required_arena_bytes, Blob, BlobKind, Precision};
use ddm_hil::check::{Backend, CheckOptions};

mod common;
use common::{matches_golden, passed};

/// The most bytes of RAM (arena) and flash (the whole image: runtime, board code and blob)
/// the Fashion-MNIST latent model may take: 128 KB and 512 KB, counted in thousands.
const ARENA_LIMIT: usize = 128_000;
const FLASH_LIMIT: u64 = 512_000;

/// The Fashion-MNIST latent model of `hil/fixtures`: int8 denoiser on 4x7x7 latents and the
/// decoder to 1x28x28, DDIM in 10 steps.
fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/fashion-latent-int8.ddm")
}

#[test]
fn the_fixture_is_a_latent_model_within_the_budget() {
    let bytes = std::fs::read(fixture()).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    assert_eq!(blob.kind(), BlobKind::Model);
    assert_eq!(blob.precision(), Precision::Int8);
    let decoder = blob.decoder().expect("the fixture has a decoder");
    assert_eq!(decoder.precision(), Precision::Int8);
    let dims = |shape: ddm_firmware::Shape| shape.dims().0[..shape.dims().1].to_vec();
    assert_eq!(dims(blob.sample_shape()), [4, 7, 7]);
    assert_eq!(dims(blob.image_shape()), [1, 28, 28]);
    assert_eq!(blob.sampler_defaults().steps, 10);
    let arena = required_arena_bytes(&blob).unwrap();
    assert!(arena <= ARENA_LIMIT, "arena {arena} bytes");
    assert!(
        bytes.len() as u64 <= FLASH_LIMIT,
        "blob {} bytes",
        bytes.len()
    );
}

#[test]
fn a_latent_model_generates_and_decodes_on_cortex_m4_bit_for_bit() {
    let options = CheckOptions {
        seed: 0,
        num: 2,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new("qemu-mps2-an386", fixture())
    };
    let report = passed(&options);
    println!("{}", report.device);
    print!("{}", report.figures);
    assert_eq!(
        report.device.steps.len(),
        20,
        "10 calls for each of 2 samples"
    );
    assert_eq!(
        report.device.decodes.len(),
        2,
        "one decoder call per sample"
    );
    assert_eq!(report.device.images.len(), 2);
    assert_eq!(report.sample_shape, [1, 28, 28], "images, not latents");
    for image in &report.device.images {
        assert_eq!(image.len(), 28 * 28);
        assert!(image.iter().all(|v| (-1.0..=1.0).contains(v)));
        // A decoded garment, not a constant: its pixels spread over the range.
        let (low, high) = image
            .iter()
            .fold((1.0f32, -1.0f32), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(high - low > 1.0, "{low}..{high}");
    }
    let figures = &report.figures;
    assert!(figures.arena_bytes <= ARENA_LIMIT);
    let flash = figures.flash_bytes.expect("the ELF's flash");
    assert!(flash <= FLASH_LIMIT, "flash {flash} bytes");
    assert_eq!(figures.decoder_macs, Some(20_440_448));
    assert!(figures.instructions_per_decode.is_some());
    matches_golden(figures);
}

#[test]
fn a_latent_model_generates_and_decodes_on_qemu_aarch64_bit_for_bit() {
    let options = CheckOptions {
        backend: Backend::LinuxArm { command: None },
        seed: 3,
        num: 2,
        timeout: Duration::from_secs(300),
        ..CheckOptions::new("jetson", fixture())
    };
    let report = passed(&options);
    assert_eq!(report.device.steps.len(), 20);
    assert_eq!(report.device.decodes.len(), 2);
}
