//! Views of arena bytes as typed slices, through `bytemuck`'s checked casts.
//!
//! Activations live in the caller's `&mut [u8]` arena. Kernels need them as `f32` or `i8`
//! slices; these functions reinterpret a byte slice in place after checking alignment and
//! length. They never touch blob (flash) data, which is always decoded from little-endian
//! bytes, so an unaligned blob is never read through a misaligned pointer.

use crate::error::{Error, Result};

const MISALIGNED: Error = Error::Malformed("misaligned f32 activation");

/// `bytes` as `f32`s; it must be 4-byte aligned and a multiple of 4 bytes long.
pub(crate) fn f32s(bytes: &[u8]) -> Result<&[f32]> {
    bytemuck::try_cast_slice(bytes).map_err(|_| MISALIGNED)
}

/// `bytes` as mutable `f32`s; it must be 4-byte aligned and a multiple of 4 bytes long.
pub(crate) fn f32s_mut(bytes: &mut [u8]) -> Result<&mut [f32]> {
    bytemuck::try_cast_slice_mut(bytes).map_err(|_| MISALIGNED)
}

/// `bytes` as mutable `u32`s; it must be 4-byte aligned and a multiple of 4 bytes long.
pub(crate) fn u32s_mut(bytes: &mut [u8]) -> Result<&mut [u32]> {
    bytemuck::try_cast_slice_mut(bytes).map_err(|_| MISALIGNED)
}

/// `bytes` as `i8`s.
pub(crate) fn i8s(bytes: &[u8]) -> &[i8] {
    bytemuck::must_cast_slice(bytes)
}

/// `bytes` as mutable `i8`s.
pub(crate) fn i8s_mut(bytes: &mut [u8]) -> &mut [i8] {
    bytemuck::must_cast_slice_mut(bytes)
}

/// `words` as mutable bytes (native order).
pub(crate) fn u32s_as_bytes_mut(words: &mut [u32]) -> &mut [u8] {
    bytemuck::must_cast_slice_mut(words)
}
