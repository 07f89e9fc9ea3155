//! `.npy` files of `f32` arrays (C order), the exchange format for samples and noise.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use npyz::WriterBuilder;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// An `f32` array read from an `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values in C (row-major) order.
    pub values: Vec<f32>,
}

impl Array {
    /// Number of rows (the first dimension; 1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Number of values per row.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
}

/// Reads a little-endian `f32` array in C order.
///
/// Errors: [`Error::Io`] when the file cannot be opened, [`Error::Corrupt`] when it is not an
/// `.npy` file, holds another dtype, is in Fortran order, is empty, or contains NaN/inf.
pub fn read_f32(path: &Path) -> Result<Array> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .map_err(|e| Error::corrupt(path, format!("not a valid .npy file ({e})")))?;
    let dtype = npy.dtype().descr();
    if dtype != "'<f4'" {
        return Err(Error::corrupt(
            path,
            format!("dtype is {dtype}, expected little-endian float32 ('<f4')"),
        ));
    }
    if npy.order() != npyz::Order::C {
        return Err(Error::corrupt(
            path,
            "Fortran-order arrays are not supported",
        ));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let values: Vec<f32> = npy
        .into_vec()
        .map_err(|e| Error::corrupt(path, format!("truncated or unreadable data ({e})")))?;
    if values.is_empty() {
        return Err(Error::corrupt(path, "the array is empty"));
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::corrupt(
            path,
            format!("value {index} is {} (NaN or infinite)", values[index]),
        ));
    }
    Ok(Array { shape, values })
}

/// Writes `values` as a little-endian `f32` array of `shape`, atomically (a reader never sees
/// a partial file). `values.len()` must equal the product of `shape`.
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    if shape.iter().product::<usize>() != values.len() {
        return Err(Error::Invalid(format!(
            "cannot write {} values as an array of shape {shape:?}",
            values.len()
        )));
    }
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    write_atomic(path, |file| {
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(file)
            .begin_nd()?;
        writer.extend(values.iter().copied())?;
        writer.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        write_f32(&path, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let array = read_f32(&path).unwrap();
        assert_eq!(array.shape, vec![2, 3]);
        assert_eq!(array.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!((array.rows(), array.row_len()), (2, 3));

        assert!(write_f32(&path, &[2, 2], &[1.0]).is_err());

        let nan = dir.path().join("nan.npy");
        write_f32(&nan, &[2], &[1.0, f32::NAN]).unwrap();
        assert!(matches!(read_f32(&nan), Err(Error::Corrupt { .. })));

        let garbage = dir.path().join("garbage.npy");
        std::fs::write(&garbage, b"not numpy").unwrap();
        let message = read_f32(&garbage).unwrap_err().to_string();
        assert!(message.contains("garbage.npy"), "{message}");

        let f64_file = dir.path().join("f64.npy");
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[2])
            .writer(std::fs::File::create(&f64_file).unwrap())
            .begin_nd()
            .unwrap();
        writer.extend([1.0f64, 2.0]).unwrap();
        writer.finish().unwrap();
        let message = read_f32(&f64_file).unwrap_err().to_string();
        assert!(message.contains("float32"), "{message}");

        assert!(matches!(
            read_f32(&dir.path().join("missing.npy")),
            Err(Error::Io { .. })
        ));
    }
}
