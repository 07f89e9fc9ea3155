//! optdigits: 1797 handwritten digits of 8x8 pixels, embedded in the binary.
//!
//! The data is the test split of the UCI "Optical Recognition of Handwritten Digits" data set
//! (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0), shipped as `host/data/optdigits/digits.csv.gz`
//! (see the `README.md` beside it for origin and attribution). Each CSV row holds 64 pixel
//! values in `0..=16` (row-major 8x8) followed by the class label in `0..=9`.

use std::path::{Path, PathBuf};

use super::{gz, Dataset};
use crate::error::{Error, Result};

/// The gzip-compressed CSV, embedded at compile time.
pub const OPTDIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/optdigits/digits.csv.gz");
/// Where the embedded file lives in the repository; errors about it name this path.
pub const EMBEDDED_PATH: &str = "host/data/optdigits/digits.csv.gz";
/// Number of rows (samples) in the data set.
pub const SAMPLES: usize = 1797;
/// Side of the square images.
pub const SIDE: usize = 8;
/// Number of classes (digits 0..=9).
pub const CLASSES: u32 = 10;
/// Largest pixel value (pixels are counts of set bits in 4x4 blocks, 0..=16).
pub const MAX_PIXEL: u8 = 16;

/// Loads the embedded data set.
///
/// Returns a [`Dataset`] named `optdigits`: 1797 samples of shape `[1, 8, 8]`, pixel `p` in
/// `0..=16` scaled to `p / 8 - 1` in `[-1, 1]`, labels `0..=9`.
///
/// # Errors
/// None in a correct build; [`Error::Corrupt`] naming [`EMBEDDED_PATH`] if the embedded file
/// were damaged.
pub fn load() -> Result<Dataset> {
    parse(OPTDIGITS_CSV_GZ, Path::new(EMBEDDED_PATH))
}

/// Loads an optdigits CSV from `path`, gzip-compressed or plain (recognised by content).
/// Same contract as [`load`].
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; otherwise as [`parse`].
pub fn load_file(path: &Path) -> Result<Dataset> {
    let csv = gz::read_maybe_gzip(path)?;
    parse_csv(&csv, path)
}

/// Parses optdigits from `bytes`, gzip-compressed or plain CSV; `source` names the data in
/// errors.
///
/// # Errors
/// [`Error::Corrupt`] naming `source` when the data is not gzip/UTF-8 text, a row does not have
/// 65 integer fields, a pixel is above 16, a label above 9, or there are not exactly
/// [`SAMPLES`] rows.
pub fn parse(bytes: &[u8], source: &Path) -> Result<Dataset> {
    if gz::is_gzip(bytes) {
        parse_csv(&gz::gunzip(bytes, source)?, source)
    } else {
        parse_csv(bytes, source)
    }
}

fn parse_csv(csv: &[u8], source: &Path) -> Result<Dataset> {
    let corrupt = |reason: String| Error::corrupt(PathBuf::from(source), reason);
    let text = std::str::from_utf8(csv)
        .map_err(|e| corrupt(format!("not UTF-8 text (not an optdigits CSV?): {e}")))?;
    let pixels = SIDE * SIDE;
    let mut values = Vec::with_capacity(SAMPLES * pixels);
    let mut labels = Vec::with_capacity(SAMPLES);
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let row = index + 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != pixels + 1 {
            return Err(corrupt(format!(
                "line {row}: {} fields, expected {} (64 pixels and a label)",
                fields.len(),
                pixels + 1
            )));
        }
        for (column, field) in fields[..pixels].iter().enumerate() {
            let pixel: u8 = field
                .parse()
                .ok()
                .filter(|&p| p <= MAX_PIXEL)
                .ok_or_else(|| {
                    corrupt(format!(
                        "line {row}, pixel {column}: {field:?} is not an integer in 0..={MAX_PIXEL}"
                    ))
                })?;
            values.push(f32::from(pixel) * (2.0 / f32::from(MAX_PIXEL)) - 1.0);
        }
        let field = fields[pixels];
        let label: u32 = field.parse().ok().filter(|&l| l < CLASSES).ok_or_else(|| {
            corrupt(format!(
                "line {row}: label {field:?} is not an integer in 0..{CLASSES}"
            ))
        })?;
        labels.push(label);
    }
    if labels.len() != SAMPLES {
        return Err(corrupt(format!(
            "{} rows, expected {SAMPLES}",
            labels.len()
        )));
    }
    Ok(Dataset {
        name: "optdigits".to_owned(),
        shape: vec![1, SIDE, SIDE],
        values,
        labels: Some(labels),
    })
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

    fn embedded_csv() -> String {
        String::from_utf8(gz::gunzip(OPTDIGITS_CSV_GZ, Path::new(EMBEDDED_PATH)).unwrap()).unwrap()
    }

    #[test]
    fn embedded_data_has_1797_samples_in_range_with_10_classes() {
        let data = load().unwrap();
        assert_eq!(data.name, "optdigits");
        assert_eq!(data.shape, vec![1, 8, 8]);
        assert_eq!(data.len(), SAMPLES);
        assert_eq!(data.values.len(), SAMPLES * 64);
        assert!(data.values.iter().all(|v| (-1.0..=1.0).contains(v)));
        // Both ends of the range occur: blank background and fully set blocks.
        assert!(data.values.contains(&-1.0) && data.values.contains(&1.0));
        let labels = data.labels.as_ref().unwrap();
        assert_eq!(labels.len(), SAMPLES);
        for class in 0..CLASSES {
            let count = labels.iter().filter(|&&l| l == class).count();
            assert!(count > 150, "class {class}: {count} samples");
        }
        // The first row of the file, pixel by pixel.
        let first: Vec<f32> = embedded_csv()
            .lines()
            .next()
            .unwrap()
            .split(',')
            .take(64)
            .map(|f| f.parse::<f32>().unwrap() / 8.0 - 1.0)
            .collect();
        assert_eq!(data.sample(0), &first[..]);
    }

    #[test]
    fn a_written_file_round_trips_gzip_or_plain() {
        let dir = tempfile::tempdir().unwrap();
        let csv = embedded_csv();
        let plain = dir.path().join("digits.csv");
        let packed = dir.path().join("digits.csv.gz");
        std::fs::write(&plain, &csv).unwrap();
        std::fs::write(&packed, gzip(csv.as_bytes())).unwrap();
        let embedded = load().unwrap();
        assert_eq!(load_file(&plain).unwrap(), embedded);
        assert_eq!(load_file(&packed).unwrap(), embedded);
    }

    fn write_and_load(name: &str, csv: &str) -> Error {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, gzip(csv.as_bytes())).unwrap();
        let err = load_file(&path).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(name), "{err}");
        err
    }

    #[test]
    fn wrong_row_count_is_corrupt_and_names_the_file() {
        let csv = embedded_csv();
        let short: Vec<&str> = csv.lines().take(SAMPLES - 1).collect();
        let err = write_and_load("short.csv.gz", &short.join("\n"));
        assert!(err.to_string().contains("1796 rows"), "{err}");
    }

    #[test]
    fn bad_label_pixel_or_field_count_is_corrupt() {
        let csv = embedded_csv();
        let mut lines: Vec<String> = csv.lines().map(str::to_owned).collect();
        let good = lines[5].clone();

        let (pixels, _) = good.rsplit_once(',').unwrap();
        lines[5] = format!("{pixels},10");
        let err = write_and_load("label.csv.gz", &lines.join("\n"));
        assert!(err.to_string().contains("line 6: label \"10\""), "{err}");

        lines[5] = format!("17,{}", good.split_once(',').unwrap().1);
        let err = write_and_load("pixel.csv.gz", &lines.join("\n"));
        assert!(err.to_string().contains("line 6, pixel 0"), "{err}");

        lines[5] = format!("0,{good}");
        let err = write_and_load("fields.csv.gz", &lines.join("\n"));
        assert!(err.to_string().contains("66 fields"), "{err}");
    }

    #[test]
    fn binary_garbage_is_corrupt() {
        let err = parse(&[0xff, 0xfe, 0x00, 0x80], Path::new("garbage.bin")).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.bin"), "{err}");
    }
}
