//! Nearest-neighbour upsampling by 2: `y[c, y, x] = x[c, y / 2, x / 2]`. Works for any element
//! type, so int8 activations keep their quantisation parameters.

use crate::error::{check_len, Error, Result};

/// Upsamples `[channels, height, width]` in `x` to `[channels, 2 height, 2 width]` in `y`.
pub fn upsample2x<T: Copy>(
    channels: usize,
    height: usize,
    width: usize,
    x: &[T],
    y: &mut [T],
) -> Result<()> {
    if channels == 0 || height == 0 || width == 0 {
        return Err(Error::InvalidModel("upsampling an empty feature map"));
    }
    let plane = height.saturating_mul(width);
    check_len("upsample input", channels.saturating_mul(plane), x.len())?;
    check_len("upsample output", x.len().saturating_mul(4), y.len())?;
    for (src, dst) in x.chunks_exact(plane).zip(y.chunks_exact_mut(4 * plane)) {
        for (row, rows) in src.chunks_exact(width).zip(dst.chunks_exact_mut(4 * width)) {
            let (top, bottom) = rows.split_at_mut(2 * width);
            for (pair, &v) in top.chunks_exact_mut(2).zip(row) {
                pair.fill(v);
            }
            bottom.copy_from_slice(top);
        }
    }
    Ok(())
}
