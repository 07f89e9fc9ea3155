//! Element-wise sum, or a vector `[C]` added to every position of `[C, H, W]`.
//!
//! `rhs` has `lhs`'s length, or `C` elements with `lhs.len() = C x spatial`. With
//! `lhs = None` the sum is computed in place in `dst`, which holds the left operand.

use crate::error::{check_len, Error, Result};
use crate::quant::{AddParams, AddZeroPoints};

/// Number of positions each `rhs` element covers.
fn broadcast(len: usize, rhs: usize) -> Result<usize> {
    if rhs == 0 || len % rhs != 0 {
        return Err(Error::LengthMismatch {
            what: "add right operand",
            expected: len,
            actual: rhs,
        });
    }
    Ok(len / rhs)
}

fn add_generic<T: Copy>(
    lhs: Option<&[T]>,
    rhs: &[T],
    dst: &mut [T],
    f: impl Fn(T, T) -> T,
) -> Result<()> {
    if let Some(lhs) = lhs {
        check_len("add left operand", dst.len(), lhs.len())?;
    }
    let spatial = broadcast(dst.len(), rhs.len())?;
    if spatial == 1 {
        match lhs {
            Some(lhs) => {
                for ((d, &a), &b) in dst.iter_mut().zip(lhs).zip(rhs) {
                    *d = f(a, b);
                }
            }
            None => {
                for (d, &b) in dst.iter_mut().zip(rhs) {
                    *d = f(*d, b);
                }
            }
        }
    } else {
        for (c, (d, &b)) in dst.chunks_exact_mut(spatial).zip(rhs).enumerate() {
            super::map_into(lhs.map(|l| &l[c * spatial..(c + 1) * spatial]), d, |a| {
                f(a, b)
            });
        }
    }
    Ok(())
}

/// int8 add (TFLite's / CMSIS-NN's `elementwise_add_s8`, see [`AddParams`]).
pub fn add_s8(
    params: &AddParams,
    zero_points: AddZeroPoints,
    lhs: Option<&[i8]>,
    rhs: &[i8],
    dst: &mut [i8],
) -> Result<()> {
    add_generic(lhs, rhs, dst, |a, b| params.apply(a, b, zero_points))
}

/// Float add.
pub fn add_f32(lhs: Option<&[f32]>, rhs: &[f32], dst: &mut [f32]) -> Result<()> {
    add_generic(lhs, rhs, dst, |a, b| a + b)
}
