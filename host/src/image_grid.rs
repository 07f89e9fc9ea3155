//! PNG grids of image samples.

use std::io::Write;
use std::path::Path;

use image::{ImageEncoder, RgbImage};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// Gap between tiles, in output pixels.
const GAP: u32 = 2;
/// Colour of the gaps.
const GAP_COLOUR: [u8; 3] = [48, 48, 48];

/// Whether samples of `shape` can be drawn as images: `[C, H, W]` with `C` 1 or 3.
pub fn is_image_shape(shape: &[usize]) -> bool {
    matches!(shape, [1 | 3, h, w] if *h > 0 && *w > 0)
}

/// The default magnification for tiles `height` pixels high: the smallest integer that makes
/// them at least 32 pixels high (8x8 digits: 4, 28x28 images: 2).
pub fn default_scale(height: usize) -> u32 {
    32usize.div_ceil(height.max(1)).max(1) as u32
}

/// A grid of `samples` (`[n, C, H, W]` row-major, values in `[-1, 1]`, clamped) with
/// `columns` tiles per row (default: `ceil(sqrt(n))`), each magnified `scale` times by
/// nearest neighbour, separated by dark gaps. Grayscale samples are drawn grey.
///
/// # Errors
/// [`Error::Invalid`] when `shape` is not an image shape, `samples` is empty or not a whole
/// number of samples, or `scale` is 0.
pub fn grid(
    samples: &[f32],
    shape: &[usize],
    columns: Option<usize>,
    scale: u32,
) -> Result<RgbImage> {
    if !is_image_shape(shape) {
        return Err(Error::Invalid(format!(
            "a PNG grid needs image samples of shape [C, H, W] with C = 1 or 3, not {shape:?}"
        )));
    }
    let (channels, height, width) = (shape[0], shape[1], shape[2]);
    let len = channels * height * width;
    if samples.is_empty() || !samples.len().is_multiple_of(len) || scale == 0 {
        return Err(Error::Invalid(format!(
            "{} values are not a whole number of {shape:?} samples (or scale 0)",
            samples.len()
        )));
    }
    let n = samples.len() / len;
    let columns = columns
        .unwrap_or_else(|| (n as f64).sqrt().ceil() as usize)
        .clamp(1, n);
    let rows = n.div_ceil(columns);
    let tile_w = width as u32 * scale;
    let tile_h = height as u32 * scale;
    let out_w = columns as u32 * (tile_w + GAP) + GAP;
    let out_h = rows as u32 * (tile_h + GAP) + GAP;
    let mut image = RgbImage::from_pixel(out_w, out_h, image::Rgb(GAP_COLOUR));
    let to_byte = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
    for (index, sample) in samples.chunks_exact(len).enumerate() {
        let x0 = GAP + (index % columns) as u32 * (tile_w + GAP);
        let y0 = GAP + (index / columns) as u32 * (tile_h + GAP);
        for y in 0..height {
            for x in 0..width {
                let pixel = |c: usize| to_byte(sample[c * height * width + y * width + x]);
                let rgb = if channels == 1 {
                    [pixel(0); 3]
                } else {
                    [pixel(0), pixel(1), pixel(2)]
                };
                for dy in 0..scale {
                    for dx in 0..scale {
                        image.put_pixel(
                            x0 + x as u32 * scale + dx,
                            y0 + y as u32 * scale + dy,
                            image::Rgb(rgb),
                        );
                    }
                }
            }
        }
    }
    Ok(image)
}

/// Writes [`grid`] of `samples` to `path` as a PNG, atomically, with the default columns and
/// [`default_scale`].
pub fn write_grid(path: &Path, samples: &[f32], shape: &[usize]) -> Result<()> {
    let height = shape.get(1).copied().unwrap_or(1);
    let image = grid(samples, shape, None, default_scale(height))?;
    write_png(path, &image)
}

/// Writes an RGB image to `path` as a PNG, atomically.
pub fn write_png(path: &Path, image: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    write_atomic(path, |w| w.write_all(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_are_scaled_placed_and_mapped_to_bytes() {
        // Two 1x2x2 samples: [-1, 1; 0, 2] and all zeros.
        let samples = [-1.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0];
        let image = grid(&samples, &[1, 2, 2], Some(2), 3).unwrap();
        assert_eq!(image.dimensions(), (2 * (6 + GAP) + GAP, 6 + 2 * GAP));
        assert_eq!(image.get_pixel(GAP, GAP).0, [0, 0, 0]);
        assert_eq!(image.get_pixel(GAP + 3, GAP + 2).0, [255, 255, 255]);
        assert_eq!(
            image.get_pixel(GAP + 5, GAP + 5).0,
            [255; 3],
            "2 is clamped to 1"
        );
        assert_eq!(image.get_pixel(GAP, GAP + 3).0, [128; 3]);
        assert_eq!(image.get_pixel(0, 0).0, GAP_COLOUR);
        assert_eq!(default_scale(8), 4);
        assert_eq!(default_scale(28), 2);
        assert!(grid(&samples, &[8], None, 1).is_err());
        assert!(grid(&samples[..3], &[1, 2, 2], None, 1).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        write_grid(&path, &samples, &[1, 2, 2]).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back.dimensions().0, 2 * (2 * 16 + GAP) + GAP);
    }
}
