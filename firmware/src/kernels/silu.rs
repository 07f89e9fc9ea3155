//! SiLU, `x sigmoid(x)`.

use super::dot::{lut_prefix, Path};
use crate::error::{check_len, Result};

/// int8 SiLU through the blob's 256-entry table (entry `i` is the output for input `i - 128`,
/// see [`silu_lut`](crate::quant::silu_lut)), from `src` or in place, on the CPU's fastest
/// [`Path`] ([`silu_s8_on`]).
pub fn silu_s8(lut: &[i8], src: Option<&[i8]>, dst: &mut [i8]) -> Result<()> {
    silu_s8_on(Path::detect(), lut, src, dst)
}

/// [`silu_s8`] on `path`: the lookups in vector lanes on the SIMD paths, the same bytes on
/// every path.
pub fn silu_s8_on(path: Path, lut: &[i8], src: Option<&[i8]>, dst: &mut [i8]) -> Result<()> {
    let lut: &[i8; 256] = lut.try_into().map_err(|_| crate::Error::LengthMismatch {
        what: "SiLU table",
        expected: 256,
        actual: lut.len(),
    })?;
    if let Some(src) = src {
        check_len("SiLU input", dst.len(), src.len())?;
    }
    let done = lut_prefix(path, lut, src, dst);
    let (src, dst) = (src.map(|s| &s[done..]), &mut dst[done..]);
    super::map_into(src, dst, |q| lut[usize::from(q as u8 ^ 0x80)]);
    Ok(())
}

/// `x / (1 + expf(-x))` in `f32`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + libm::expf(-x))
}

/// Float SiLU from `src` or in place.
pub fn silu_f32(src: Option<&[f32]>, dst: &mut [f32]) -> Result<()> {
    if let Some(src) = src {
        check_len("SiLU input", dst.len(), src.len())?;
    }
    super::map_into(src, dst, silu);
    Ok(())
}
