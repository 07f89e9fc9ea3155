//! A folder of PNG and JPEG images, resized to one size.
//!
//! Every `.png`, `.jpg` and `.jpeg` file (extension case-insensitive) directly inside the folder
//! is decoded (the format is recognised by content), converted to grayscale or RGB, and resized
//! to the requested height and width with a triangle (bilinear, area-aware when shrinking)
//! filter; the aspect ratio is not kept. An alpha channel is dropped, not composited.
//! Hidden files (names starting with `.`) and files with other extensions are skipped. Files
//! are taken in the byte order of their names, so the sample order is stable.
//!
//! Labels follow torchvision's `ImageFolder` convention: a folder with no image directly inside
//! but sub-folders that hold images is a labelled data set, one class per sub-folder, class `k`
//! the `k`-th sub-folder in the byte order of the names (hidden and image-less sub-folders
//! skipped). A folder with images directly inside is unlabelled and its sub-folders are
//! skipped.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::DynamicImage;

use super::Dataset;
use crate::error::{Error, Result};

/// Height and width images are resized to unless asked otherwise.
pub const DEFAULT_IMAGE_SIZE: usize = 28;
/// Channels images are converted to unless asked otherwise (1: grayscale).
pub const DEFAULT_CHANNELS: usize = 1;
/// Largest accepted output height or width.
pub const MAX_IMAGE_SIZE: usize = 4096;
/// File extensions that are loaded (compared ASCII case-insensitively).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Output format of the images of a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageFormat {
    /// Height in pixels, `1..=MAX_IMAGE_SIZE`.
    pub height: usize,
    /// Width in pixels, `1..=MAX_IMAGE_SIZE`.
    pub width: usize,
    /// 1 (grayscale, ITU-R BT.709 luma) or 3 (RGB).
    pub channels: usize,
}

impl Default for ImageFormat {
    /// 28x28 grayscale.
    fn default() -> Self {
        ImageFormat {
            height: DEFAULT_IMAGE_SIZE,
            width: DEFAULT_IMAGE_SIZE,
            channels: DEFAULT_CHANNELS,
        }
    }
}

impl ImageFormat {
    /// A square format of `size` x `size` pixels with `channels` channels.
    pub fn square(size: usize, channels: usize) -> Self {
        ImageFormat {
            height: size,
            width: size,
            channels,
        }
    }

    /// The shape of one sample: `[channels, height, width]`.
    pub fn shape(&self) -> Vec<usize> {
        vec![self.channels, self.height, self.width]
    }

    /// Checks the sizes and the channel count.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a size is 0 or above [`MAX_IMAGE_SIZE`], or `channels` is not 1
    /// or 3.
    pub fn validate(&self) -> Result<()> {
        for (what, size) in [("height", self.height), ("width", self.width)] {
            if !(1..=MAX_IMAGE_SIZE).contains(&size) {
                return Err(Error::Invalid(format!(
                    "image {what} {size} is outside 1..={MAX_IMAGE_SIZE}"
                )));
            }
        }
        if !matches!(self.channels, 1 | 3) {
            return Err(Error::Invalid(format!(
                "images can have 1 (grayscale) or 3 (RGB) channels, not {}",
                self.channels
            )));
        }
        Ok(())
    }
}

/// The image files of `dir` that [`load`] reads, sorted by name.
///
/// # Errors
/// [`Error::Io`] naming `dir` (or an entry of it) when it cannot be listed.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let hidden = path
            .file_name()
            .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."));
        let wanted = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)));
        if wanted && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Decodes the image file `path` and converts it to `format`: `[C, H, W]` channel-planar
/// values, pixel `p` in `0..=255` scaled to `p / 127.5 - 1` in `[-1, 1]`.
///
/// # Errors
/// [`Error::Invalid`] for a bad `format`; [`Error::Io`] naming `path` when it cannot be read;
/// [`Error::Corrupt`] naming `path` when it is not a decodable PNG or JPEG.
pub fn load_image(path: &Path, format: ImageFormat) -> Result<Vec<f32>> {
    format.validate()?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let image = image::load_from_memory(&bytes)
        .map_err(|e| Error::corrupt(path, format!("cannot decode image: {e}")))?;
    Ok(convert(&image, format))
}

fn convert(image: &DynamicImage, format: ImageFormat) -> Vec<f32> {
    let (w, h) = (format.width as u32, format.height as u32);
    let scale = |p: u8| f32::from(p) / 127.5 - 1.0;
    if format.channels == 1 {
        let gray = image.to_luma8();
        let gray = if gray.dimensions() == (w, h) {
            gray
        } else {
            imageops::resize(&gray, w, h, FilterType::Triangle)
        };
        gray.into_raw().into_iter().map(scale).collect()
    } else {
        let rgb = image.to_rgb8();
        let rgb = if rgb.dimensions() == (w, h) {
            rgb
        } else {
            imageops::resize(&rgb, w, h, FilterType::Triangle)
        };
        // Interleaved [H, W, 3] to planar [3, H, W].
        let raw = rgb.into_raw();
        (0..3)
            .flat_map(|c| raw.iter().skip(c).step_by(3).copied())
            .map(scale)
            .collect()
    }
}

/// Loads every image of `dir` (see the [module docs](self)) into a [`Dataset`] named
/// `folder:DIR`: shape `[channels, height, width]`, values in `[-1, 1]`, labels from the
/// class sub-folders when `dir` has no image of its own.
///
/// # Errors
/// [`Error::Invalid`] for a bad `format`; [`Error::Io`] when the folder or a file cannot be
/// read; [`Error::Corrupt`] naming the file for an image that does not decode, and naming `dir`
/// when the folder holds no PNG or JPEG file.
pub fn load(dir: &Path, format: ImageFormat) -> Result<Dataset> {
    format.validate()?;
    let mut files = image_files(dir)?;
    let mut labels = None;
    if files.is_empty() {
        let classes = class_folders(dir)?;
        let mut known = Vec::new();
        for (label, folder) in (0u32..).zip(&classes) {
            let class_files = image_files(folder)?;
            known.extend(std::iter::repeat_n(label, class_files.len()));
            files.extend(class_files);
        }
        labels = Some(known);
    }
    if files.is_empty() {
        return Err(Error::corrupt(
            dir,
            "the folder holds no PNG or JPEG images (.png, .jpg, .jpeg), directly or in class \
             sub-folders",
        ));
    }
    let sample_len = format.channels * format.height * format.width;
    let mut values = Vec::with_capacity(files.len() * sample_len);
    for file in &files {
        values.extend(load_image(file, format)?);
    }
    Ok(Dataset {
        name: format!("folder:{}", dir.display()),
        shape: format.shape(),
        values,
        labels,
    })
}

/// The non-hidden sub-folders of `dir` that hold at least one image, in byte order of their
/// names: the classes of an `ImageFolder`.
fn class_folders(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut folders = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let hidden = path
            .file_name()
            .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."));
        if path.is_dir() && !hidden && !image_files(&path)?.is_empty() {
            folders.push(path);
        }
    }
    folders.sort();
    Ok(folders)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage, RgbaImage};

    #[test]
    fn class_sub_folders_give_labels_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for (class, count) in [("shoe", 2), ("bag", 1), (".hidden", 3), ("empty", 0)] {
            let folder = dir.path().join(class);
            std::fs::create_dir(&folder).unwrap();
            for i in 0..count {
                GrayImage::from_pixel(2, 2, Luma([i as u8 * 40]))
                    .save(folder.join(format!("{i}.png")))
                    .unwrap();
            }
        }
        let data = load(dir.path(), ImageFormat::square(2, 1)).unwrap();
        // bag = 0 (one image), shoe = 1 (two images); hidden and empty folders skipped.
        assert_eq!(data.labels, Some(vec![0, 1, 1]));
        assert_eq!(data.class_count(), Some(2));
        // An image of its own makes the folder an unlabelled set.
        GrayImage::new(2, 2)
            .save(dir.path().join("top.png"))
            .unwrap();
        let flat = load(dir.path(), ImageFormat::square(2, 1)).unwrap();
        assert_eq!((flat.len(), flat.labels), (1, None));
    }

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn grayscale_png_same_size_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let img = GrayImage::from_fn(5, 4, |x, y| Luma([(x * 50 + y * 3) as u8]));
        img.save(dir.path().join("a.png")).unwrap();
        let format = ImageFormat {
            height: 4,
            width: 5,
            channels: 1,
        };
        let data = load(dir.path(), format).unwrap();
        assert_eq!(data.shape, vec![1, 4, 5]);
        assert_eq!(data.len(), 1);
        assert_eq!(data.labels, None);
        assert_eq!(data.name, format!("folder:{}", dir.path().display()));
        let expected: Vec<f32> = img
            .into_raw()
            .iter()
            .map(|&p| p as f32 / 127.5 - 1.0)
            .collect();
        assert_eq!(data.values, expected);
    }

    #[test]
    fn rgb_is_channel_planar_and_gray_conversion_uses_luma() {
        let dir = tempfile::tempdir().unwrap();
        // Left column red, right column blue, 2x2.
        let img = RgbImage::from_fn(2, 2, |x, _| {
            if x == 0 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        img.save(dir.path().join("rb.png")).unwrap();
        let rgb = load(dir.path(), ImageFormat::square(2, 3)).unwrap();
        assert_eq!(rgb.shape, vec![3, 2, 2]);
        #[rustfmt::skip]
        let expected = [
            1.0, -1.0, 1.0, -1.0,   // R plane
            -1.0, -1.0, -1.0, -1.0, // G plane
            -1.0, 1.0, -1.0, 1.0,   // B plane
        ];
        assert_eq!(rgb.values, expected);
        let gray = load(dir.path(), ImageFormat::square(2, 1)).unwrap();
        assert_eq!(gray.shape, vec![1, 2, 2]);
        // BT.709 luma weighs red 0.2126 and blue 0.0722: red is the brighter gray.
        assert!(gray.values[0] > gray.values[1]);
        assert!(gray.values.iter().all(|v| *v < -0.5));
    }

    #[test]
    fn images_of_any_size_and_kind_are_resized_sorted_and_others_skipped() {
        let dir = tempfile::tempdir().unwrap();
        GrayImage::from_pixel(10, 6, Luma([200]))
            .save(dir.path().join("b.png"))
            .unwrap();
        RgbImage::from_pixel(3, 17, Rgb([100, 100, 100]))
            .save(dir.path().join("a.JPG"))
            .unwrap();
        RgbaImage::from_pixel(40, 40, image::Rgba([20, 20, 20, 0]))
            .save(dir.path().join("c.png"))
            .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        std::fs::write(dir.path().join(".hidden.png"), "not an image").unwrap();
        std::fs::create_dir(dir.path().join("sub.png")).unwrap();
        let data = load(dir.path(), ImageFormat::square(8, 1)).unwrap();
        assert_eq!(data.shape, vec![1, 8, 8]);
        assert_eq!(data.len(), 3);
        // a.JPG (lossy, 100), b.png (200), c.png (20, alpha dropped) in name order.
        for (i, level) in [100.0f32, 200.0, 20.0].into_iter().enumerate() {
            let want = level / 127.5 - 1.0;
            assert!(
                data.sample(i).iter().all(|&v| close(v, want, 0.04)),
                "sample {i}: {:?} vs {want}",
                &data.sample(i)[..4]
            );
        }
        let files = image_files(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.JPG", "b.png", "c.png"]);
    }

    #[test]
    fn corrupt_or_truncated_image_is_corrupt_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        GrayImage::from_pixel(4, 4, Luma([1]))
            .save(dir.path().join("good.png"))
            .unwrap();
        std::fs::write(dir.path().join("broken.png"), b"\x89PNG\r\n\x1a\ngarbage").unwrap();
        let err = load(dir.path(), ImageFormat::default()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("broken.png"), "{err}");

        std::fs::remove_file(dir.path().join("broken.png")).unwrap();
        let mut png = Vec::new();
        GrayImage::from_fn(64, 64, |x, y| Luma([(x ^ y) as u8]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(dir.path().join("cut.png"), &png[..png.len() / 2]).unwrap();
        let err = load(dir.path(), ImageFormat::default()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("cut.png"), "{err}");

        std::fs::write(dir.path().join("cut.png"), b"").unwrap();
        let err = load_image(&dir.path().join("cut.png"), ImageFormat::default()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn empty_or_missing_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("readme.md"), "no images").unwrap();
        let err = load(dir.path(), ImageFormat::default()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&*dir.path().to_string_lossy()),
            "{err}"
        );

        let missing = dir.path().join("missing");
        let err = load(&missing, ImageFormat::default()).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn bad_formats_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        for format in [
            ImageFormat::square(0, 1),
            ImageFormat::square(MAX_IMAGE_SIZE + 1, 1),
            ImageFormat::square(28, 2),
            ImageFormat::square(28, 4),
        ] {
            assert!(
                matches!(load(dir.path(), format), Err(Error::Invalid(_))),
                "{format:?}"
            );
        }
    }
}
