//! Parses the input as a model blob; if it is valid, runs one network evaluation and one
//! two-step generation in a fixed arena, as a device would. Any panic, out-of-bounds access or
//! hang is a bug: untrusted blobs must only produce typed errors.
//!
//! The CRC is recomputed before parsing (otherwise almost every mutation would stop at the CRC
//! check); the unit tests cover the CRC itself.
#![no_main]

use ddm_firmware::format::{CRC32, CRC_OFFSET, CRC_START};
use ddm_firmware::{generate, Blob, GenerateSettings, Network};
use libfuzzer_sys::fuzz_target;

/// The arena of a small device.
const ARENA: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() >= 16 {
        let total = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
        let end = total.clamp(CRC_START, bytes.len());
        let crc = CRC32.checksum(&bytes[CRC_START..end]);
        bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(blob) = Blob::parse(&bytes) else {
        return;
    };
    let mut arena = vec![0u8; ARENA];
    let x: Vec<f32> = (0..blob.sample_len()).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut out = vec![0.0f32; x.len()];
    if let Ok(mut network) = Network::new(blob, &mut arena) {
        let _ = network.run(&x, 7, &mut out);
    }
    let settings = GenerateSettings {
        steps: Some(2),
        ..GenerateSettings::new(1, 0)
    };
    let _ = generate(&blob, &mut arena, &settings, &mut out);
});
