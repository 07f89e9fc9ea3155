//! Reading files that may or may not be gzip-compressed, recognised by content, not by name.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// The two bytes every gzip member starts with (RFC 1952).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `bytes` start with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Decompresses the gzip stream `bytes` (all members of a multi-member file). `path` only
/// names the source in errors.
///
/// # Errors
/// [`Error::Corrupt`] naming `path` when the stream is not valid gzip or is cut short.
pub fn gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(path, format!("invalid or truncated gzip data: {e}")))?;
    Ok(out)
}

/// Reads `path` whole and decompresses it when it starts with the gzip magic number;
/// other content is returned as it is.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read (missing, permissions), [`Error::Corrupt`]
/// when it looks like gzip but does not decompress.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if is_gzip(&bytes) {
        gunzip(&bytes, path)
    } else {
        Ok(bytes)
    }
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

    #[test]
    fn reads_plain_and_gzip_files_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.gz"); // the name lies: content decides
        let packed = dir.path().join("packed.bin");
        std::fs::write(&plain, b"hello").unwrap();
        std::fs::write(&packed, gzip(b"hello")).unwrap();
        assert_eq!(read_maybe_gzip(&plain).unwrap(), b"hello");
        assert_eq!(read_maybe_gzip(&packed).unwrap(), b"hello");
    }

    #[test]
    fn truncated_gzip_is_corrupt_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.gz");
        let packed = gzip(&[7u8; 1000]);
        std::fs::write(&path, &packed[..packed.len() / 2]).unwrap();
        let err = read_maybe_gzip(&path).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("cut.gz"), "{err}");
    }

    #[test]
    fn missing_file_is_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_maybe_gzip(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
