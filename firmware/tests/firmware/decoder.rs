//! Latent models: a denoiser and its decoder in one blob, network blobs, one arena for both.

use ddm_firmware::format::{HEADER_LEN, SECTION_DECODER, SECTION_ENTRY_LEN};
use ddm_firmware::plan::ArenaLayout;
use ddm_firmware::writer::{seal, write_blob, write_latent_blob, write_network, ModelSpec};
use ddm_firmware::{
    generate, network_arena_bytes, required_arena_bytes, Blob, BlobKind, Error, GenerateSettings,
    Network, Precision, Shape,
};

use crate::common::*;

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// What a latent model must generate: the denoiser's sample (its own blob, no decoder), run
/// through the decoder's network blob, clamped to `[-1, 1]`; also the unclamped image.
fn composed(
    denoiser: &ModelSpec,
    decoder: &ModelSpec,
    settings: &GenerateSettings,
) -> (Vec<f32>, Vec<f32>) {
    let bytes = write_blob(denoiser).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    let mut arena = vec![0u8; required_arena_bytes(&blob).unwrap()];
    let mut latent = vec![0.0f32; blob.sample_len()];
    generate(&blob, &mut arena, settings, &mut latent).unwrap();
    let network_bytes = write_network(decoder).unwrap();
    let network = Blob::parse(&network_bytes).unwrap();
    let mut arena = vec![0u8; network_arena_bytes(&network).unwrap()];
    let mut image = vec![0.0f32; network.output_len()];
    Network::new(network, &mut arena)
        .unwrap()
        .run(&latent, 0, &mut image)
        .unwrap();
    let clamped = image.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
    (clamped, image)
}

#[test]
fn a_latent_model_generates_the_decoded_sample_clamped() {
    for (denoiser, decoder) in [
        (tiny_unet(100), tiny_decoder(4)),
        (int8_unet(100), int8_decoder(4)),
    ] {
        let bytes = write_latent_blob(&denoiser, &decoder).unwrap();
        let blob = Blob::parse(&bytes).unwrap();
        assert_eq!(blob.kind(), BlobKind::Model);
        assert_eq!(blob.sample_shape(), Shape::new(&[2, 6, 6]).unwrap());
        assert_eq!(blob.output_shape(), blob.sample_shape());
        assert_eq!(blob.image_shape(), Shape::new(&[3, 12, 12]).unwrap());
        assert_eq!(blob.image_len(), 432);
        let decoder_blob = blob.decoder().expect("a decoder");
        assert_eq!(decoder_blob.kind(), BlobKind::Network);
        assert_eq!(decoder_blob.output_len(), 432);
        assert!(decoder_blob.decoder().is_none());

        let mut outside = 0;
        for index in 0..3 {
            let settings = GenerateSettings::new(7, index);
            let mut arena = vec![0u8; required_arena_bytes(&blob).unwrap()];
            let mut image = vec![0.0f32; blob.image_len()];
            generate(&blob, &mut arena, &settings, &mut image).unwrap();
            let (expected, unclamped) = composed(&denoiser, &decoder, &settings);
            assert_eq!(bits(&image), bits(&expected), "sample {index}");
            assert!(image.iter().all(|v| (-1.0..=1.0).contains(v)));
            outside += unclamped.iter().filter(|v| v.abs() > 1.0).count();
        }
        assert!(outside > 0, "the test decoder never leaves [-1, 1]");

        // A sample-sized output buffer is refused before anything runs.
        let mut arena = vec![0u8; required_arena_bytes(&blob).unwrap()];
        let mut short = vec![0.0f32; blob.sample_len()];
        let err = generate(&blob, &mut arena, &GenerateSettings::new(0, 0), &mut short);
        assert!(matches!(err, Err(Error::LengthMismatch { .. })), "{err:?}");
    }
}

#[test]
fn one_arena_holds_the_larger_of_the_two_networks() {
    let denoiser = int8_unet(100);
    // A narrow decoder fits inside the denoiser's region; a wide one outgrows it.
    for channels in [2, 32] {
        let bytes = write_latent_blob(&denoiser, &int8_decoder(channels)).unwrap();
        let blob = Blob::parse(&bytes).unwrap();
        let decoder = blob.decoder().unwrap();
        let steps = blob.sampler_defaults().steps as usize;
        let layout = ArenaLayout::new(&blob, steps).unwrap();
        assert_eq!(layout.decoder.start, 0);
        assert_eq!(
            layout.decoder.end + 15,
            network_arena_bytes(&decoder).unwrap()
        );
        let networks = layout.kernel_scratch.end.max(layout.decoder.end);
        assert!(layout.x.start >= networks && layout.x.start < networks + 16);

        let plain = write_blob(&denoiser).unwrap();
        let plain = Blob::parse(&plain).unwrap();
        let without = required_arena_bytes(&plain).unwrap();
        let with = required_arena_bytes(&blob).unwrap();
        let decoder_needs = network_arena_bytes(&decoder).unwrap();
        let denoiser_needs = network_arena_bytes(&plain).unwrap();
        assert_eq!(
            decoder_needs > denoiser_needs,
            channels == 32,
            "both cases are tested"
        );
        if decoder_needs <= denoiser_needs {
            assert_eq!(with, without, "{channels} channels");
        } else {
            assert!(with > without, "{channels} channels");
        }

        // Exactly the required bytes work (at any alignment); one fewer is refused.
        let mut buffer = vec![0u8; with + 8];
        for skew in [0, 3] {
            let arena = &mut buffer[skew..skew + with];
            let mut image = vec![0.0f32; blob.image_len()];
            generate(&blob, arena, &GenerateSettings::new(1, 0), &mut image).unwrap();
        }
        let aligned_start = (16 - buffer.as_ptr() as usize % 16) % 16;
        let arena = &mut buffer[aligned_start..aligned_start + with - 16];
        let mut image = vec![0.0f32; blob.image_len()];
        let err = generate(&blob, arena, &GenerateSettings::new(1, 0), &mut image);
        assert!(matches!(err, Err(Error::ArenaTooSmall { .. })), "{err:?}");
    }
}

#[test]
fn a_network_blob_runs_but_does_not_generate() {
    let decoder = tiny_decoder(4);
    let bytes = write_network(&decoder).unwrap();
    let blob = Blob::parse(&bytes).unwrap();
    assert_eq!(blob.kind(), BlobKind::Network);
    assert_eq!(blob.train_steps(), 0);
    assert!(blob.decoder().is_none());
    assert_eq!(blob.image_shape(), blob.sample_shape());
    let mut arena = vec![0u8; 1 << 16];
    let mut out = vec![0.0f32; blob.sample_len()];
    let err = generate(&blob, &mut arena, &GenerateSettings::new(0, 0), &mut out);
    assert!(matches!(err, Err(Error::InvalidSchedule(_))), "{err:?}");

    // The same network as a model is refused: a model's output has its input's shape.
    let err = write_blob(&decoder).unwrap_err();
    assert!(matches!(err, Error::InvalidNode { .. }), "{err:?}");
    // A network blob has no time groups.
    let mut grouped = int8_decoder(4);
    grouped.time_groups = vec![50];
    assert!(matches!(
        write_network(&grouped),
        Err(Error::InvalidModel(_))
    ));
}

#[test]
fn a_decoder_that_cannot_decode_the_samples_is_refused() {
    // Another input shape than the denoiser's sample.
    let err = write_latent_blob(&tiny_unet(100), &{
        let mut b = Builder::new(&[2, 4, 4], 3);
        let out = b.conv(0, 3, 3, 1, 1);
        b.finish(out, 100, tiny_unet(100).sampler)
    })
    .unwrap_err();
    assert!(matches!(err, Error::Malformed(_)), "{err:?}");
    // Another precision.
    let err = write_latent_blob(&tiny_unet(100), &int8_decoder(4)).unwrap_err();
    assert!(matches!(err, Error::Malformed(_)), "{err:?}");
    let err = write_latent_blob(
        &tiny_unet(100),
        &with_precision(tiny_decoder(4), Precision::F16),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Malformed(_)), "{err:?}");
    // A decoder that reads a timestep.
    let mut b = Builder::new(&[2, 6, 6], 3);
    let t = b.time_embedding(4);
    let h = b.conv(0, 4, 3, 1, 1);
    let h = b.add(h, t);
    let out = b.conv(h, 3, 3, 1, 1);
    let timed = b.finish(out, 100, tiny_unet(100).sampler);
    let err = write_latent_blob(&tiny_unet(100), &timed).unwrap_err();
    assert!(matches!(err, Error::InvalidNode { .. }), "{err:?}");
}

/// `(offset, len)` of section `id` of `bytes`.
fn section(bytes: &[u8], id: u32) -> (usize, usize) {
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    (0..word(20))
        .map(|i| HEADER_LEN + i * SECTION_ENTRY_LEN)
        .find(|&at| word(at) == id as usize)
        .map(|at| (word(at + 4), word(at + 8)))
        .unwrap()
}

/// Byte offset of section `id`'s entry in the section table of `bytes`.
fn entry(bytes: &[u8], id: u32) -> usize {
    let count = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| HEADER_LEN + i * SECTION_ENTRY_LEN)
        .find(|&at| bytes[at..at + 4] == id.to_le_bytes())
        .unwrap()
}

/// `latent` (a latent blob whose decoder section is its last bytes) with `decoder` in place of
/// its decoder, lengths and CRC made consistent.
fn with_decoder(latent: &[u8], decoder: &[u8]) -> Vec<u8> {
    let (offset, len) = section(latent, SECTION_DECODER);
    assert_eq!(
        offset + len,
        latent.len(),
        "the decoder is the last section"
    );
    let mut nested = latent[..offset].to_vec();
    nested.extend_from_slice(decoder);
    let at = entry(latent, SECTION_DECODER);
    nested[at + 8..at + 12].copy_from_slice(&(decoder.len() as u32).to_le_bytes());
    let total = nested.len() as u32;
    nested[12..16].copy_from_slice(&total.to_le_bytes());
    seal(&mut nested);
    nested
}

#[test]
fn a_corrupt_decoder_is_a_typed_error() {
    let bytes = write_latent_blob(&int8_unet(100), &int8_decoder(4)).unwrap();
    let (offset, len) = section(&bytes, SECTION_DECODER);
    // A flipped bit inside the decoder, the outer CRC made consistent: the decoder's own CRC
    // catches it.
    let mut flipped = bytes.clone();
    flipped[offset + len / 2] ^= 0x10;
    seal(&mut flipped);
    let err = Blob::parse(&flipped).unwrap_err();
    assert!(matches!(err, Error::CrcMismatch { .. }), "{err:?}");
    // A model nested as the decoder, and a latent model (a decoder inside the decoder:
    // refused before it is read, so nesting never recurses).
    let model = write_blob(&int8_unet(100)).unwrap();
    let err = Blob::parse(&with_decoder(&bytes, &model)).unwrap_err();
    assert_eq!(err, Error::Malformed("the decoder must be a network blob"));
    let err = Blob::parse(&with_decoder(&bytes, &bytes)).unwrap_err();
    assert_eq!(err, Error::Malformed("a decoder has no decoder"));
    // A decoder of another format version than the model's.
    let mut older = write_network(&int8_decoder(4)).unwrap();
    older[4..8].copy_from_slice(&2u32.to_le_bytes());
    seal(&mut older);
    let err = Blob::parse(&with_decoder(&bytes, &older)).unwrap_err();
    assert_eq!(
        err,
        Error::Malformed("the decoder's format version differs from the model's")
    );
    let at = entry(&bytes, SECTION_DECODER);
    // Every truncation of the nested decoder's declared length is refused.
    for cut in [0, 16, len / 2, len - 1] {
        let mut short = bytes.clone();
        short[at + 8..at + 12].copy_from_slice(&(cut as u32).to_le_bytes());
        seal(&mut short);
        assert!(Blob::parse(&short).is_err(), "{cut}");
    }
}
