//! Writes the test suite's model blobs (int8, fp16 and f32 versions of an MLP and a tiny UNet,
//! a latent model with its decoder and the decoder alone as a network blob) into a folder, as
//! a seed corpus for the fuzzer:
//! `cargo run -p ddm-firmware --features std --example fuzz_corpus -- DIR`.

#[path = "../tests/firmware/common.rs"]
#[allow(dead_code)]
mod common;

use ddm_firmware::writer::{write_blob, write_latent_blob, write_network};
use ddm_firmware::Precision;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: fuzz_corpus DIR")?;
    std::fs::create_dir_all(&dir)?;
    let models = [
        ("mlp-f32", common::mlp(100)),
        (
            "mlp-f16",
            common::with_precision(common::mlp(100), Precision::F16),
        ),
        ("mlp-int8", common::int8_mlp(100)),
        ("unet-f32", common::tiny_unet(100)),
        (
            "unet-f16",
            common::with_precision(common::tiny_unet(100), Precision::F16),
        ),
        ("unet-int8", common::int8_unet(100)),
    ];
    for (name, spec) in models {
        let bytes = write_blob(&spec)?;
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{name}.blob")),
            &bytes,
        )?;
        println!("{name}: {} bytes", bytes.len());
    }
    let latent = [
        (
            "latent-int8",
            write_latent_blob(&common::int8_unet(100), &common::int8_decoder(4))?,
        ),
        ("decoder-int8", write_network(&common::int8_decoder(4))?),
    ];
    for (name, bytes) in latent {
        std::fs::write(
            std::path::Path::new(&dir).join(format!("{name}.blob")),
            &bytes,
        )?;
        println!("{name}: {} bytes", bytes.len());
    }
    Ok(())
}
