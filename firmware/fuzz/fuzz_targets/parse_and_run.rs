//! Parses the input as a model blob; if it is valid, runs one network evaluation and one
//! two-step generation in a fixed arena, as a device would. Any panic, out-of-bounds access or
//! hang is a bug: untrusted blobs must only produce typed errors.
//!
//! The CRCs are recomputed before parsing, a latent model's nested decoder's first (otherwise
//! almost every mutation would stop at a CRC check); the unit tests cover the CRC itself.
#![no_main]

use ddm_firmware::format::{
    CRC32, CRC_OFFSET, CRC_START, HEADER_LEN, SECTION_DECODER, SECTION_ENTRY_LEN,
};
use ddm_firmware::{generate, Blob, GenerateSettings, Network, SamplerOptions};
use libfuzzer_sys::fuzz_target;

/// The arena of a small device.
const ARENA: usize = 64 * 1024;

/// The little-endian `u32` at `at`, if it is there.
fn word(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Recomputes the CRC of the blob in `bytes` (a no-op when it is too short to have one).
fn seal(bytes: &mut [u8]) {
    let Some(total) = word(bytes, 12) else {
        return;
    };
    let end = total.clamp(CRC_START, bytes.len());
    let crc = CRC32.checksum(&bytes[CRC_START..end]);
    bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Seals a decoder section's nested blob, if the table names one that lies in `bytes`.
fn seal_decoder(bytes: &mut [u8]) {
    let count = word(bytes, 20).unwrap_or(0).min(8);
    for index in 0..count {
        let at = HEADER_LEN + index * SECTION_ENTRY_LEN;
        if word(bytes, at) != Some(SECTION_DECODER as usize) {
            continue;
        }
        let (Some(offset), Some(len)) = (word(bytes, at + 4), word(bytes, at + 8)) else {
            return;
        };
        if let Some(nested) = offset
            .checked_add(len)
            .and_then(|end| bytes.get_mut(offset..end))
        {
            seal(nested);
        }
        return;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    seal_decoder(&mut bytes);
    seal(&mut bytes);
    let Ok(blob) = Blob::parse(&bytes) else {
        return;
    };
    let mut arena = vec![0u8; ARENA];
    let x: Vec<f32> = (0..blob.sample_len()).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut out = vec![0.0f32; blob.output_len()];
    if let Ok(mut network) = Network::new(blob, &mut arena) {
        let _ = network.run(&x, 7, &mut out);
    }
    let settings = GenerateSettings {
        sampler: SamplerOptions {
            steps: Some(2),
            ..SamplerOptions::none()
        },
        ..GenerateSettings::new(1, 0)
    };
    let mut image = vec![0.0f32; blob.image_len()];
    let _ = generate(&blob, &mut arena, &settings, &mut image);
    if let Some(decoder) = blob.decoder() {
        let mut decoded = vec![0.0f32; decoder.output_len()];
        if let Ok(mut network) = Network::new(decoder, &mut arena) {
            let _ = network.run(&x, 0, &mut decoded);
        }
    }
});
