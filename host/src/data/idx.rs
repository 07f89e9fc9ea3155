//! MNIST and Fashion-MNIST in the IDX format, gzip-compressed or raw.
//!
//! An IDX file is a big-endian header followed by the data: the magic number `0x0000_08NN`
//! (`0x08`: unsigned bytes, `NN`: number of dimensions), one `u32` per dimension, then the
//! values in row-major order. Images are 3-D (`0x0000_0803`: count, rows, columns), labels 1-D
//! (`0x0000_0801`: count). Files may be gzip-compressed; that is recognised by the gzip magic
//! number, never by the file name.
//!
//! A split is the pair `{train,t10k}-images-idx3-ubyte` + `{train,t10k}-labels-idx1-ubyte`
//! in one folder, each name optionally with `.gz`; the `train-images.idx3-ubyte` spelling is
//! accepted as well. Debian's `dataset-fashion-mnist` package installs Fashion-MNIST, gzipped,
//! in [`FASHION_MNIST_SYSTEM_DIR`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{gz, Dataset};
use crate::error::{Error, Result};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Side of the MNIST and Fashion-MNIST images.
pub const MNIST_SIDE: usize = 28;
/// Number of classes of MNIST and Fashion-MNIST.
pub const MNIST_CLASSES: u8 = 10;
/// Where Debian's `dataset-fashion-mnist` package puts the Fashion-MNIST files.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Which half of a data set with a fixed train/test division to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Split {
    /// The training split (`train-*` files; 60000 samples for MNIST and Fashion-MNIST).
    #[default]
    Train,
    /// The test split (`t10k-*` files; 10000 samples).
    Test,
}

impl Split {
    /// The split's name: `train` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// The file name prefix of the split in the MNIST layout: `train` or `t10k`.
    pub fn file_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = Error;

    /// Parses `train` or `test` (ASCII case-insensitive; `t10k` is accepted for `test`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything else.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "test" | "t10k" => Ok(Split::Test),
            _ => Err(Error::Invalid(format!(
                "unknown split {s:?}; valid splits: train, test"
            ))),
        }
    }
}

/// A stack of 8-bit images read from an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows of each image.
    pub rows: usize,
    /// Columns of each image.
    pub cols: usize,
    /// `count * rows * cols` pixels, row-major `[count, rows, cols]`.
    pub pixels: Vec<u8>,
}

/// Reads the header of an IDX file of unsigned bytes: checks `magic` and returns the
/// dimensions and the data that follows them.
fn parse_header<'a>(
    bytes: &'a [u8],
    magic: u32,
    what: &str,
    path: &Path,
) -> Result<(Vec<usize>, &'a [u8])> {
    let dims = (magic & 0xff) as usize;
    let header = 4 * (1 + dims);
    if bytes.len() < 4 {
        return Err(Error::corrupt(
            path,
            format!(
                "truncated: {} bytes, too short for an IDX header",
                bytes.len()
            ),
        ));
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        return Err(Error::corrupt(
            path,
            format!(
                "bad IDX magic number {found:#010x}, expected {magic:#010x} \
                 ({what}: unsigned bytes, {dims} dimension{})",
                if dims == 1 { "" } else { "s" }
            ),
        ));
    }
    if bytes.len() < header {
        return Err(Error::corrupt(
            path,
            format!(
                "truncated: {} bytes, the IDX header of {what} needs {header}",
                bytes.len()
            ),
        ));
    }
    let sizes = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    Ok((sizes, &bytes[header..]))
}

/// Checks that `data` holds exactly `expected` bytes.
fn check_payload(data: &[u8], expected: usize, what: &str, path: &Path) -> Result<()> {
    if data.len() < expected {
        return Err(Error::corrupt(
            path,
            format!(
                "truncated: the header announces {what} of {expected} bytes, only {} follow",
                data.len()
            ),
        ));
    }
    if data.len() > expected {
        return Err(Error::corrupt(
            path,
            format!(
                "{} unexpected bytes after the {expected} bytes of {what}",
                data.len() - expected
            ),
        ));
    }
    Ok(())
}

/// Parses an IDX image file (already decompressed); `path` names it in errors.
///
/// # Errors
/// [`Error::Corrupt`] naming `path` for a magic number other than [`IMAGES_MAGIC`], a header or
/// pixel data shorter than announced (truncated), or bytes beyond the announced data.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    let (dims, data) = parse_header(bytes, IMAGES_MAGIC, "images", path)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    let expected = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .ok_or_else(|| {
            Error::corrupt(
                path,
                format!("impossible dimensions {count} x {rows} x {cols}"),
            )
        })?;
    let what = format!("{count} images of {rows}x{cols}");
    check_payload(data, expected, &what, path)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: data.to_vec(),
    })
}

/// Parses an IDX label file (already decompressed); `path` names it in errors.
///
/// # Errors
/// [`Error::Corrupt`] naming `path` for a magic number other than [`LABELS_MAGIC`], fewer label
/// bytes than announced (truncated), or bytes beyond them.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let (dims, data) = parse_header(bytes, LABELS_MAGIC, "labels", path)?;
    check_payload(data, dims[0], &format!("{} labels", dims[0]), path)?;
    Ok(data.to_vec())
}

/// Reads and parses an IDX image file, gzip-compressed or raw.
///
/// # Errors
/// [`Error::Io`] naming `path` when it cannot be read, otherwise as [`parse_images`].
pub fn read_images(path: &Path) -> Result<IdxImages> {
    parse_images(&gz::read_maybe_gzip(path)?, path)
}

/// Reads and parses an IDX label file, gzip-compressed or raw.
///
/// # Errors
/// [`Error::Io`] naming `path` when it cannot be read, otherwise as [`parse_labels`].
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(&gz::read_maybe_gzip(path)?, path)
}

/// Finds the IDX file `stem` (e.g. `train-images-idx3-ubyte`) in `dir`: the first of `stem`,
/// `stem.gz`, and the same two with the last `-` turned into `.` (`train-images.idx3-ubyte`)
/// that is a file.
///
/// # Errors
/// [`Error::Io`] (not found) naming `dir/stem` and the other names tried.
pub fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let mut names = vec![stem.to_owned(), format!("{stem}.gz")];
    if let Some((head, tail)) = stem.split_once("-idx") {
        let dotted = format!("{head}.idx{tail}");
        names.push(format!("{dotted}.gz"));
        names.push(dotted);
    }
    for name in &names {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(Error::io(
        dir.join(stem),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no such file (also tried {})", names[1..].join(", ")),
        ),
    ))
}

/// Combines an image file and a label file into a [`Dataset`] named `name`: shape
/// `[1, rows, cols]`, pixel `p` scaled to `p / 127.5 - 1` in `[-1, 1]`, one label per image.
///
/// `side` = `Some((rows, cols))` requires images of exactly that size; `classes` =
/// `Some(k)` requires every label to be below `k`.
///
/// # Errors
/// [`Error::Io`] when a file cannot be read; [`Error::Corrupt`] naming the file for bad magic,
/// truncation, wrong dimensions (images of another size than `side`), an empty image file,
/// labels out of range, or a label file whose count differs from the image file's.
pub fn load_pair(
    images_path: &Path,
    labels_path: &Path,
    name: &str,
    side: Option<(usize, usize)>,
    classes: Option<u8>,
) -> Result<Dataset> {
    let images = read_images(images_path)?;
    if let Some((rows, cols)) = side {
        if (images.rows, images.cols) != (rows, cols) {
            return Err(Error::corrupt(
                images_path,
                format!(
                    "wrong dimensions: images are {}x{}, expected {rows}x{cols}",
                    images.rows, images.cols
                ),
            ));
        }
    }
    if images.count == 0 || images.rows == 0 || images.cols == 0 {
        return Err(Error::corrupt(
            images_path,
            format!(
                "no image data ({} images of {}x{})",
                images.count, images.rows, images.cols
            ),
        ));
    }
    let labels = read_labels(labels_path)?;
    if labels.len() != images.count {
        return Err(Error::corrupt(
            labels_path,
            format!(
                "{} labels, but {} holds {} images",
                labels.len(),
                images_path.display(),
                images.count
            ),
        ));
    }
    if let Some(classes) = classes {
        if let Some((i, &bad)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(Error::corrupt(
                labels_path,
                format!("label {i} is {bad}, expected 0..{classes}"),
            ));
        }
    }
    Ok(Dataset {
        name: name.to_owned(),
        shape: vec![1, images.rows, images.cols],
        values: images
            .pixels
            .iter()
            .map(|&p| f32::from(p) / 127.5 - 1.0)
            .collect(),
        labels: Some(labels.into_iter().map(u32::from).collect()),
    })
}

/// Loads one split of an MNIST-layout data set (MNIST or Fashion-MNIST) from `dir`: 28x28
/// images with labels `0..=9`, shape `[1, 28, 28]`, values in `[-1, 1]`, named `name`.
///
/// # Errors
/// As [`find_file`] and [`load_pair`] with `side = (28, 28)` and 10 classes.
pub fn load_mnist_dir(dir: &Path, split: Split, name: &str) -> Result<Dataset> {
    let prefix = split.file_prefix();
    let images = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    load_pair(
        &images,
        &labels,
        name,
        Some((MNIST_SIDE, MNIST_SIDE)),
        Some(MNIST_CLASSES),
    )
}

/// Encodes images as an IDX file (uncompressed): the inverse of [`parse_images`].
///
/// # Panics
/// When `pixels.len() != count * rows * cols` or a size does not fit in a `u32`.
pub fn encode_images(count: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    assert_eq!(pixels.len(), count * rows * cols, "pixel count");
    let mut out = encode_header(IMAGES_MAGIC, &[count, rows, cols]);
    out.extend_from_slice(pixels);
    out
}

/// Encodes labels as an IDX file (uncompressed): the inverse of [`parse_labels`].
///
/// # Panics
/// When there are more than `u32::MAX` labels.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = encode_header(LABELS_MAGIC, &[labels.len()]);
    out.extend_from_slice(labels);
    out
}

fn encode_header(magic: u32, dims: &[usize]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for &d in dims {
        let d = u32::try_from(d).expect("IDX dimensions fit in a u32");
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// `count` 28x28 images whose pixels encode their index and position, and labels `i % 10`.
    fn fake_mnist(count: usize) -> (Vec<u8>, Vec<u8>) {
        let pixels = (0..count * 28 * 28)
            .map(|i| (i * 7 + i / 784) as u8)
            .collect();
        let labels = (0..count).map(|i| (i % 10) as u8).collect();
        (pixels, labels)
    }

    fn write_split(dir: &Path, prefix: &str, count: usize, gzipped: bool) -> (Vec<u8>, Vec<u8>) {
        let (pixels, labels) = fake_mnist(count);
        let (images, label_file) = (
            encode_images(count, 28, 28, &pixels),
            encode_labels(&labels),
        );
        let (ext, images, label_file) = if gzipped {
            (".gz", gzip(&images), gzip(&label_file))
        } else {
            ("", images, label_file)
        };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), images).unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
            label_file,
        )
        .unwrap();
        (pixels, labels)
    }

    fn assert_corrupt_naming(err: Error, file: &str, text: &str) {
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(file), "{message} does not name {file}");
        assert!(message.contains(text), "{message} does not say {text}");
    }

    #[test]
    fn both_splits_round_trip_gzipped_and_raw() {
        let dir = tempfile::tempdir().unwrap();
        let (pixels, labels) = write_split(dir.path(), "train", 12, true);
        let (test_pixels, _) = write_split(dir.path(), "t10k", 5, false);

        let train = load_mnist_dir(dir.path(), Split::Train, "mnist").unwrap();
        assert_eq!(train.name, "mnist");
        assert_eq!(train.shape, vec![1, 28, 28]);
        assert_eq!(train.len(), 12);
        let expected: Vec<f32> = pixels.iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
        for (a, b) in train.values.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(train.values.first(), Some(&-1.0)); // pixel 0
        assert!(train.values.contains(&1.0)); // some pixel 255
        let labels: Vec<u32> = labels.into_iter().map(u32::from).collect();
        assert_eq!(train.labels, Some(labels));

        let test = load_mnist_dir(dir.path(), Split::Test, "mnist").unwrap();
        assert_eq!(test.len(), 5);
        assert_eq!(test.values[1], test_pixels[1] as f32 / 127.5 - 1.0);
    }

    #[test]
    fn gzip_is_detected_by_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let (pixels, labels) = fake_mnist(3);
        // Raw data behind a .gz name, gzip data behind a plain name.
        let images = dir.path().join("train-images-idx3-ubyte.gz");
        let label_path = dir.path().join("train-labels-idx1-ubyte");
        std::fs::write(&images, encode_images(3, 28, 28, &pixels)).unwrap();
        std::fs::write(&label_path, gzip(&encode_labels(&labels))).unwrap();
        let data = load_mnist_dir(dir.path(), Split::Train, "x").unwrap();
        assert_eq!(data.len(), 3);
    }

    #[test]
    fn dotted_file_names_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let (pixels, labels) = fake_mnist(2);
        std::fs::write(
            dir.path().join("t10k-images.idx3-ubyte"),
            encode_images(2, 28, 28, &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("t10k-labels.idx1-ubyte"),
            encode_labels(&labels),
        )
        .unwrap();
        assert_eq!(
            load_mnist_dir(dir.path(), Split::Test, "x").unwrap().len(),
            2
        );
    }

    #[test]
    fn missing_file_is_io_not_found_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 2, false);
        std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte")).unwrap();
        let err = load_mnist_dir(dir.path(), Split::Train, "mnist").unwrap_err();
        match &err {
            Error::Io { path, error } => {
                assert_eq!(path, &dir.path().join("train-labels-idx1-ubyte"));
                assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(
            err.to_string().contains("train-labels-idx1-ubyte.gz"),
            "{err}"
        );
    }

    #[test]
    fn bad_magic_is_corrupt_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 2, true);
        // A label file where the images belong.
        let (_, labels) = fake_mnist(2);
        let images = dir.path().join("train-images-idx3-ubyte.gz");
        std::fs::write(&images, gzip(&encode_labels(&labels))).unwrap();
        let err = load_mnist_dir(dir.path(), Split::Train, "mnist").unwrap_err();
        assert_corrupt_naming(
            err,
            "train-images-idx3-ubyte.gz",
            "bad IDX magic number 0x00000801",
        );
        // And a PNG-like header.
        let err = parse_labels(b"\x89PNG\r\n\x1a\n", Path::new("x-labels")).unwrap_err();
        assert_corrupt_naming(err, "x-labels", "bad IDX magic");
    }

    #[test]
    fn truncated_files_are_corrupt_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (pixels, labels) = fake_mnist(4);
        let images = encode_images(4, 28, 28, &pixels);
        let path = dir.path().join("cut-images");
        std::fs::write(&path, &images[..images.len() - 1]).unwrap();
        assert_corrupt_naming(read_images(&path).unwrap_err(), "cut-images", "truncated");
        // Cut inside the header.
        std::fs::write(&path, &images[..10]).unwrap();
        assert_corrupt_naming(read_images(&path).unwrap_err(), "cut-images", "truncated");
        std::fs::write(&path, &images[..2]).unwrap();
        assert_corrupt_naming(read_images(&path).unwrap_err(), "cut-images", "truncated");
        // Truncated labels, gzipped whole (the gzip stream itself is intact).
        let labels_path = dir.path().join("cut-labels.gz");
        let encoded = encode_labels(&labels);
        std::fs::write(&labels_path, gzip(&encoded[..encoded.len() - 2])).unwrap();
        assert_corrupt_naming(
            read_labels(&labels_path).unwrap_err(),
            "cut-labels.gz",
            "truncated",
        );
        // A gzip stream cut short.
        let packed = gzip(&images);
        std::fs::write(&path, &packed[..packed.len() - 20]).unwrap();
        assert_corrupt_naming(read_images(&path).unwrap_err(), "cut-images", "gzip");
        // Extra bytes after the data.
        let mut long = images.clone();
        long.push(0);
        std::fs::write(&path, long).unwrap();
        assert_corrupt_naming(
            read_images(&path).unwrap_err(),
            "cut-images",
            "unexpected bytes",
        );
    }

    #[test]
    fn wrong_dimensions_are_corrupt_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let pixels = vec![9u8; 3 * 32 * 32];
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            encode_images(3, 32, 32, &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            encode_labels(&[1, 2, 3]),
        )
        .unwrap();
        let err = load_mnist_dir(dir.path(), Split::Train, "mnist").unwrap_err();
        assert_corrupt_naming(
            err,
            "train-images-idx3-ubyte",
            "images are 32x32, expected 28x28",
        );
        // Without a required size the same files load as [1, 32, 32].
        let data = load_pair(
            &dir.path().join("train-images-idx3-ubyte"),
            &dir.path().join("train-labels-idx1-ubyte"),
            "any",
            None,
            None,
        )
        .unwrap();
        assert_eq!(data.shape, vec![1, 32, 32]);
    }

    #[test]
    fn count_mismatch_and_bad_labels_are_corrupt_naming_the_label_file() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 6, true);
        let labels = dir.path().join("train-labels-idx1-ubyte.gz");
        std::fs::write(&labels, gzip(&encode_labels(&[0, 1, 2, 3, 4]))).unwrap();
        let err = load_mnist_dir(dir.path(), Split::Train, "mnist").unwrap_err();
        assert_corrupt_naming(err, "train-labels-idx1-ubyte.gz", "5 labels, but");

        std::fs::write(&labels, gzip(&encode_labels(&[0, 1, 2, 3, 4, 10]))).unwrap();
        let err = load_mnist_dir(dir.path(), Split::Train, "mnist").unwrap_err();
        assert_corrupt_naming(err, "train-labels-idx1-ubyte.gz", "label 5 is 10");
    }

    #[test]
    fn empty_image_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("e-images");
        let labels = dir.path().join("e-labels");
        std::fs::write(&images, encode_images(0, 28, 28, &[])).unwrap();
        std::fs::write(&labels, encode_labels(&[])).unwrap();
        let err = load_pair(&images, &labels, "e", None, None).unwrap_err();
        assert_corrupt_naming(err, "e-images", "no image data");
    }

    #[test]
    fn splits_parse() {
        assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
        assert_eq!("TEST".parse::<Split>().unwrap(), Split::Test);
        assert_eq!("t10k".parse::<Split>().unwrap(), Split::Test);
        assert!(matches!("val".parse::<Split>(), Err(Error::Invalid(_))));
        assert_eq!(Split::Test.to_string(), "test");
    }

    /// Fashion-MNIST as Debian's `dataset-fashion-mnist` package installs it.
    #[test]
    fn fashion_mnist_loads_from_the_system_dir() {
        let dir = Path::new(FASHION_MNIST_SYSTEM_DIR);
        if !dir.is_dir() {
            eprintln!(
                "note: {FASHION_MNIST_SYSTEM_DIR} is absent (Debian package dataset-fashion-mnist \
                 not installed); skipping the system Fashion-MNIST check"
            );
            return;
        }
        for (split, count) in [(Split::Test, 10_000), (Split::Train, 60_000)] {
            let data = load_mnist_dir(dir, split, "fashion-mnist").unwrap();
            assert_eq!(data.len(), count, "{split}");
            assert_eq!(data.shape, vec![1, 28, 28]);
            assert!(data.values.iter().all(|v| (-1.0..=1.0).contains(v)));
            let labels = data.labels.as_ref().unwrap();
            for class in 0..10 {
                // Fashion-MNIST is balanced: 6000 / 1000 per class.
                let n = labels.iter().filter(|&&l| l == class).count();
                assert_eq!(n, count / 10, "{split} class {class}");
            }
        }
    }
}
