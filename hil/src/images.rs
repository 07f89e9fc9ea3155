//! What a check writes for people: the device's and the host's samples as PNG grids (image
//! samples, `[C, H, W]` with `C` 1 or 3) and `.npy` arrays, side by side.
//!
//! The grid looks like `ddm sample`'s: values in `[-1, 1]` mapped to `0..=255`, each tile
//! magnified to at least 32 pixels, tiles separated by dark gaps.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

/// Gap between tiles, in output pixels.
const GAP: usize = 2;
/// Colour of the gaps.
const GAP_COLOUR: [u8; 3] = [48, 48, 48];

/// Whether samples of `shape` can be drawn: `[C, H, W]` with `C` 1 or 3.
pub fn is_image_shape(shape: &[usize]) -> bool {
    matches!(shape, [1 | 3, h, w] if *h > 0 && *w > 0)
}

/// An RGB grid of `samples` (each of image shape `shape`), `ceil(sqrt(n))` tiles a row:
/// `(width, height, pixels)`.
pub fn grid(samples: &[Vec<f32>], shape: &[usize]) -> (usize, usize, Vec<u8>) {
    let (channels, height, width) = (shape[0], shape[1], shape[2]);
    let scale = 32usize.div_ceil(height).max(1);
    let n = samples.len().max(1);
    let columns = ((n as f64).sqrt().ceil() as usize).max(1);
    let rows = n.div_ceil(columns);
    let (tile_w, tile_h) = (width * scale, height * scale);
    let out_w = columns * (tile_w + GAP) + GAP;
    let out_h = rows * (tile_h + GAP) + GAP;
    let mut pixels: Vec<u8> = GAP_COLOUR
        .iter()
        .copied()
        .cycle()
        .take(out_w * out_h * 3)
        .collect();
    let to_byte = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
    for (index, sample) in samples.iter().enumerate() {
        let x0 = GAP + (index % columns) * (tile_w + GAP);
        let y0 = GAP + (index / columns) * (tile_h + GAP);
        for y in 0..height * scale {
            for x in 0..width * scale {
                let at = |c: usize| {
                    to_byte(sample[c * height * width + (y / scale) * width + x / scale])
                };
                let rgb = if channels == 1 {
                    [at(0); 3]
                } else {
                    [at(0), at(1), at(2)]
                };
                let offset = ((y0 + y) * out_w + x0 + x) * 3;
                pixels[offset..offset + 3].copy_from_slice(&rgb);
            }
        }
    }
    (out_w, out_h, pixels)
}

fn write_png(path: &Path, samples: &[Vec<f32>], shape: &[usize]) -> anyhow::Result<()> {
    let (width, height, pixels) = grid(samples, shape);
    let mut encoder = png::Encoder::new(
        BufWriter::new(File::create(path)?),
        width as u32,
        height as u32,
    );
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&pixels)?;
    Ok(())
}

fn write_npy(path: &Path, shape: &[usize], values: &[f32]) -> anyhow::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(File::create(path)?))
        .begin_nd()?;
    writer.extend(values.iter().copied())?;
    writer.finish()?;
    Ok(())
}

/// Writes `device.npy`, `host.npy` (`[num, ...sample_shape]`, `f32`) and, for image samples,
/// `device.png` and `host.png` into `dir`. Returns the paths written.
pub fn write_samples(
    dir: &Path,
    sample_shape: &[usize],
    device: &[Vec<f32>],
    host: &[Vec<f32>],
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, samples) in [("device", device), ("host", host)] {
        let flat: Vec<f32> = samples.iter().flatten().copied().collect();
        let mut shape = vec![samples.len()];
        shape.extend_from_slice(sample_shape);
        let npy = dir.join(format!("{name}.npy"));
        write_npy(&npy, &shape, &flat)?;
        written.push(npy);
        if is_image_shape(sample_shape) && !samples.is_empty() {
            let png = dir.join(format!("{name}.png"));
            write_png(&png, samples, sample_shape)?;
            written.push(png);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_are_scaled_placed_and_mapped_to_bytes() {
        // Two 1x2x2 samples: [-1, 1; 0, 2] and all zeros; tiles 16x magnified (32 pixels).
        let samples = vec![vec![-1.0, 1.0, 0.0, 2.0], vec![0.0; 4]];
        let (w, h, pixels) = grid(&samples, &[1, 2, 2]);
        assert_eq!((w, h), (2 * (32 + GAP) + GAP, 32 + 2 * GAP));
        let px = |x: usize, y: usize| &pixels[(y * w + x) * 3..(y * w + x) * 3 + 3];
        assert_eq!(px(0, 0), GAP_COLOUR);
        assert_eq!(px(GAP, GAP), [0, 0, 0]);
        assert_eq!(px(GAP + 16, GAP), [255; 3]);
        assert_eq!(px(GAP + 31, GAP + 31), [255; 3], "2 is clamped to 1");
        assert_eq!(px(GAP, GAP + 16), [128; 3]);
        assert!(is_image_shape(&[1, 8, 8]) && !is_image_shape(&[64]));
    }
}
