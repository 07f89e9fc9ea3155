//! Views of arena bytes as typed slices: with the DSP inner loops of
//! [`kernels::dsp`](crate::kernels), the crate's only `unsafe` code.
//!
//! Activations live in the caller's `&mut [u8]` arena. Kernels need them as `f32` or `i8`
//! slices; these functions reinterpret a byte slice in place after checking alignment and
//! length. They never touch blob (flash) data, which is always decoded from little-endian
//! bytes, so an unaligned blob is never read through a misaligned pointer.
#![allow(unsafe_code)]

use crate::error::{Error, Result};

const MISALIGNED: Error = Error::Malformed("misaligned f32 activation");

fn check_f32(ptr: *const u8, len: usize) -> Result<()> {
    if !(ptr as usize).is_multiple_of(core::mem::align_of::<f32>()) || !len.is_multiple_of(4) {
        return Err(MISALIGNED);
    }
    Ok(())
}

/// `bytes` as `f32`s; it must be 4-byte aligned and a multiple of 4 bytes long.
pub(crate) fn f32s(bytes: &[u8]) -> Result<&[f32]> {
    check_f32(bytes.as_ptr(), bytes.len())?;
    // SAFETY: the pointer is aligned for f32 and the `len / 4` elements lie inside `bytes`,
    // which the result borrows; every bit pattern is a valid f32.
    Ok(unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4) })
}

/// `bytes` as mutable `f32`s; it must be 4-byte aligned and a multiple of 4 bytes long.
pub(crate) fn f32s_mut(bytes: &mut [u8]) -> Result<&mut [f32]> {
    check_f32(bytes.as_ptr(), bytes.len())?;
    // SAFETY: as in `f32s`; the result takes over the exclusive borrow of `bytes`.
    Ok(unsafe {
        core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<f32>(), bytes.len() / 4)
    })
}

/// `bytes` as mutable `u32`s; it must be 4-byte aligned and a multiple of 4 bytes long.
pub(crate) fn u32s_mut(bytes: &mut [u8]) -> Result<&mut [u32]> {
    check_f32(bytes.as_ptr(), bytes.len())?;
    // SAFETY: u32 has f32's size and alignment, and every bit pattern is valid.
    Ok(unsafe {
        core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<u32>(), bytes.len() / 4)
    })
}

/// `bytes` as `i8`s.
pub(crate) fn i8s(bytes: &[u8]) -> &[i8] {
    // SAFETY: i8 and u8 have the same size, alignment 1 and no invalid bit patterns.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
}

/// `bytes` as mutable `i8`s.
pub(crate) fn i8s_mut(bytes: &mut [u8]) -> &mut [i8] {
    // SAFETY: as in `i8s`, with the exclusive borrow passed on.
    unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<i8>(), bytes.len()) }
}

/// `words` as mutable bytes (native order).
pub(crate) fn u32s_as_bytes_mut(words: &mut [u32]) -> &mut [u8] {
    // SAFETY: u8 has alignment 1 and no invalid bit patterns, the `4 len` bytes are exactly
    // those of `words`, and the result takes over its exclusive borrow.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4) }
}
