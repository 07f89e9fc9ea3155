//! Element-wise sum, or a vector `[C]` added to every position of `[C, H, W]`.
//!
//! `rhs` has `lhs`'s length, or `C` elements with `lhs.len() = C x spatial`. With
//! `lhs = None` the sum is computed in place in `dst`, which holds the left operand.

use super::dot::{add_prefix, adds_in_lanes, Path};
use super::FastRequant;
use crate::error::{check_len, Error, Result};
use crate::format::ADD_LEFT_SHIFT;
use crate::quant::{saturate_i8, AddParams, AddZeroPoints};

/// An int8 add whose three requantisations have the `FastRequant` form and whose zero points
/// are int8 values: the form the vector kernels take (`kernels::dot::add_prefix`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastAdd {
    pub(crate) lhs: FastRequant,
    pub(crate) rhs: FastRequant,
    pub(crate) output: FastRequant,
    pub(crate) zero_points: AddZeroPoints,
}

impl FastAdd {
    /// The fast form of an add, if it has it.
    fn new(params: &AddParams, zero_points: AddZeroPoints) -> Option<Self> {
        let int8 = |z: i32| (-128..=127).contains(&z);
        let AddZeroPoints { lhs, rhs, output } = zero_points;
        if !(int8(lhs) && int8(rhs) && int8(output)) {
            return None;
        }
        Some(FastAdd {
            lhs: FastRequant::new(params.lhs)?,
            rhs: FastRequant::new(params.rhs)?,
            output: FastRequant::new(params.output)?,
            zero_points,
        })
    }

    /// The right operand's requantised term for the value `b`.
    fn rhs_term(&self, b: i8) -> i32 {
        self.rhs
            .apply((i32::from(b) - self.zero_points.rhs) << ADD_LEFT_SHIFT)
    }

    /// One output, `AddParams::apply` with the right operand's term given.
    fn element(&self, a: i8, rhs_term: i32) -> i8 {
        let l = self
            .lhs
            .apply((i32::from(a) - self.zero_points.lhs) << ADD_LEFT_SHIFT);
        let sum = self.output.apply(l.wrapping_add(rhs_term));
        saturate_i8(sum.saturating_add(self.zero_points.output))
    }
}

/// The right operand of a run of an add's outputs: one value per output, or one term (the
/// requantised value of a broadcast element) for the whole run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AddRhs<'a> {
    /// One int8 value per output.
    Each(&'a [i8]),
    /// One requantised term for every output of the run.
    Term(i32),
}

/// Number of positions each `rhs` element covers.
fn broadcast(len: usize, rhs: usize) -> Result<usize> {
    if rhs == 0 || !len.is_multiple_of(rhs) {
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
///
/// Exactly [`AddParams::apply`] on every element; the requantisations take the
/// `FastRequant` form when all three have it, and a broadcast `rhs` term is computed once per
/// channel. On the CPU's fastest [`Path`] ([`Path::detect`]); [`add_s8_on`] chooses it.
pub fn add_s8(
    params: &AddParams,
    zero_points: AddZeroPoints,
    lhs: Option<&[i8]>,
    rhs: &[i8],
    dst: &mut [i8],
) -> Result<()> {
    add_s8_on(Path::detect(), params, zero_points, lhs, rhs, dst)
}

/// [`add_s8`] on `path`: the same bytes on every path. On the SIMD paths an add of the fast
/// form with int8 zero points runs in vector lanes (`kernels::dot::add_prefix`), the last
/// elements of each run one by one.
///
/// # Errors
/// As [`add_s8`].
pub fn add_s8_on(
    path: Path,
    params: &AddParams,
    zero_points: AddZeroPoints,
    lhs: Option<&[i8]>,
    rhs: &[i8],
    dst: &mut [i8],
) -> Result<()> {
    if adds_in_lanes(path) {
        if let Some(add) = FastAdd::new(params, zero_points) {
            return add_in_lanes(path, &add, lhs, rhs, dst);
        }
    }
    let fast = (
        FastRequant::new(params.lhs),
        FastRequant::new(params.rhs),
        FastRequant::new(params.output),
    );
    match fast {
        (Some(l), Some(r), Some(o)) => add_s8_with(
            |a| l.apply(a),
            |b| r.apply(b),
            |s| o.apply(s),
            zero_points,
            lhs,
            rhs,
            dst,
        ),
        _ => add_s8_with(
            |a| params.lhs.apply(a),
            |b| params.rhs.apply(b),
            |s| params.output.apply(s),
            zero_points,
            lhs,
            rhs,
            dst,
        ),
    }
}

/// [`add_s8_on`] for an add of the fast form on a path with vector adds: each run (the whole
/// tensor, or one channel of a broadcast) in vector lanes, its last elements one by one.
fn add_in_lanes(
    path: Path,
    add: &FastAdd,
    lhs: Option<&[i8]>,
    rhs: &[i8],
    dst: &mut [i8],
) -> Result<()> {
    if let Some(lhs) = lhs {
        check_len("add left operand", dst.len(), lhs.len())?;
    }
    let spatial = broadcast(dst.len(), rhs.len())?;
    let run = |lhs: Option<&[i8]>, rhs: AddRhs<'_>, dst: &mut [i8]| {
        let done = add_prefix(path, add, lhs, rhs, dst);
        for (i, d) in dst.iter_mut().enumerate().skip(done) {
            let a = lhs.map_or(*d, |l| l[i]);
            let b = match rhs {
                AddRhs::Each(rhs) => add.rhs_term(rhs[i]),
                AddRhs::Term(term) => term,
            };
            *d = add.element(a, b);
        }
    };
    if spatial == 1 {
        run(lhs, AddRhs::Each(rhs), dst);
    } else {
        for (c, (d, &b)) in dst.chunks_exact_mut(spatial).zip(rhs).enumerate() {
            let l = lhs.map(|l| &l[c * spatial..(c + 1) * spatial]);
            run(l, AddRhs::Term(add.rhs_term(b)), d);
        }
    }
    Ok(())
}

/// Elements from which [`add_s8`] tabulates each operand's requantised term over its 256
/// values (in `std` builds: the two tables take 2 KiB of stack, which a microcontroller's
/// stack is not sized for).
pub const TABLE_MIN_LEN: usize = 1024;

/// [`add_s8`] with the three requantisations given as functions.
#[inline(always)]
fn add_s8_with(
    lhs_scale: impl Fn(i32) -> i32,
    rhs_scale: impl Fn(i32) -> i32,
    output_scale: impl Fn(i32) -> i32,
    zero_points: AddZeroPoints,
    lhs: Option<&[i8]>,
    rhs: &[i8],
    dst: &mut [i8],
) -> Result<()> {
    if let Some(lhs) = lhs {
        check_len("add left operand", dst.len(), lhs.len())?;
    }
    let spatial = broadcast(dst.len(), rhs.len())?;
    let lhs_term = |a: i8| lhs_scale((i32::from(a) - zero_points.lhs) << ADD_LEFT_SHIFT);
    let rhs_term = |b: i8| rhs_scale((i32::from(b) - zero_points.rhs) << ADD_LEFT_SHIFT);
    let output = |s: i32| saturate_i8(output_scale(s).saturating_add(zero_points.output));
    #[cfg(feature = "std")]
    if dst.len() >= TABLE_MIN_LEN {
        // The same terms, each computed once per operand value.
        let table = |term: &dyn Fn(i8) -> i32| -> [i32; 256] {
            core::array::from_fn(|i| term(i as u8 as i8))
        };
        let (lhs_table, rhs_table) = (table(&lhs_term), table(&rhs_term));
        let lhs_term = |a: i8| lhs_table[usize::from(a as u8)];
        let rhs_term = |b: i8| rhs_table[usize::from(b as u8)];
        add_terms(lhs_term, rhs_term, output, lhs, rhs, dst, spatial);
        return Ok(());
    }
    add_terms(lhs_term, rhs_term, output, lhs, rhs, dst, spatial);
    Ok(())
}

/// `dst = output(lhs_term(a) + rhs_term(b))` element by element, `rhs` broadcast over
/// `spatial` positions per element (lengths checked by the caller).
#[inline(always)]
fn add_terms(
    lhs_term: impl Fn(i8) -> i32,
    rhs_term: impl Fn(i8) -> i32,
    output: impl Fn(i32) -> i8,
    lhs: Option<&[i8]>,
    rhs: &[i8],
    dst: &mut [i8],
    spatial: usize,
) {
    let sum = |a: i8, b: i32| output(lhs_term(a).wrapping_add(b));
    if spatial == 1 {
        match lhs {
            Some(lhs) => {
                for ((d, &a), &b) in dst.iter_mut().zip(lhs).zip(rhs) {
                    *d = sum(a, rhs_term(b));
                }
            }
            None => {
                for (d, &b) in dst.iter_mut().zip(rhs) {
                    *d = sum(*d, rhs_term(b));
                }
            }
        }
    } else {
        for (c, (d, &b)) in dst.chunks_exact_mut(spatial).zip(rhs).enumerate() {
            let b = rhs_term(b);
            let l = lhs.map(|l| &l[c * spatial..(c + 1) * spatial]);
            super::map_into(l, d, |a| sum(a, b));
        }
    }
}

/// Float add.
pub fn add_f32(lhs: Option<&[f32]>, rhs: &[f32], dst: &mut [f32]) -> Result<()> {
    add_generic(lhs, rhs, dst, |a, b| a + b)
}
