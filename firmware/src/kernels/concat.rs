//! Channel concatenation. With channel-major layouts every input is one contiguous block of
//! the output, so the network copies input `k` into the output slice at its channel offset.
//!
//! int8 inputs whose parameters differ from the output's are rescaled as TFLite's int8 add
//! rescales its inputs: `(q - z_in) << 20` times the fixed-point `scale_in / (2^20 scale_out)`,
//! plus `z_out`. The pre-shift makes the result the correctly rounded one up to the Q31
//! multiplier's error, where multiplying the small value `q - z_in` directly would round twice
//! (and be off by one for a sizeable share of inputs when scaling down).

use crate::error::{check_len, Result};
use crate::format::ADD_LEFT_SHIFT;
use crate::quant::{saturate_i8, QuantParams, Requant};

/// The fixed-point multiplier [`concat_part_s8`] expects for an input with scale `input` and
/// an output with scale `output`: `input / (2^20 output)`.
pub fn concat_requant(input: f32, output: f32) -> crate::Result<Requant> {
    Requant::from_real(f64::from(input) / (f64::from(1u32 << ADD_LEFT_SHIFT) * f64::from(output)))
}

/// Inputs from which [`concat_part_s8`] tabulates the rescaling over the 256 int8 values (in
/// `std` builds; the device keeps the element-by-element loop its figures were measured
/// with).
pub const TABLE_MIN_LEN: usize = 512;

/// Copies one int8 input block into its slice of the output, rescaling from `input` to
/// `output` parameters with `requant` ([`concat_requant`]) unless they are the same (from
/// [`TABLE_MIN_LEN`] inputs through a table of the same function of each value).
pub fn concat_part_s8(
    src: &[i8],
    input: QuantParams,
    output: QuantParams,
    requant: Requant,
    dst: &mut [i8],
) -> Result<()> {
    check_len("concat input", dst.len(), src.len())?;
    if input.same_as(&output) {
        dst.copy_from_slice(src);
    } else {
        let rescale = |q: i8| {
            let v = requant.apply((i32::from(q) - input.zero_point) << ADD_LEFT_SHIFT);
            saturate_i8(v.saturating_add(output.zero_point))
        };
        #[cfg(feature = "std")]
        if dst.len() >= TABLE_MIN_LEN {
            let table: [i8; 256] = core::array::from_fn(|i| rescale(i as u8 as i8));
            for (d, &q) in dst.iter_mut().zip(src) {
                *d = table[usize::from(q as u8)];
            }
            return Ok(());
        }
        for (d, &q) in dst.iter_mut().zip(src) {
            *d = rescale(q);
        }
    }
    Ok(())
}

/// Copies one float input block into its slice of the output.
pub fn concat_part_f32(src: &[f32], dst: &mut [f32]) -> Result<()> {
    check_len("concat input", dst.len(), src.len())?;
    dst.copy_from_slice(src);
    Ok(())
}
