//! The aarch64 paths: plain NEON (every aarch64 CPU: `SMULL` into int16 products and
//! `SADALP` pairwise into int32) and NEON dot product (`SDOT`, CPUs with `asimddp`: four int8
//! products summed into each int32 lane), both on the same int8 layout of the im2col columns
//! ([`pack_taps_s8`]).
//!
//! `SDOT` and `SMMLA` (the int8 matrix multiply of CPUs with `i8mm`, which the whole
//! convolutions of `blocked` use) are written as inline assembly: their intrinsics are not
//! stable in the Rust this crate supports.
//!
//! The convolution blocks ([`conv_block`], [`conv_block_s8`], [`conv_block_pair_s8`]) run
//! `conv2d::block_outputs` with the products and the requantisation (in NEON lanes,
//! [`requantize4`]) inlined; two runs of four positions share each load of sixteen weights
//! ([`conv_block_pair`], [`conv_block_pair_s8`]: on the dot-product path one `SDOT` by element
//! per group and run).

use core::arch::aarch64::{
    int32x4_t, int8x16_t, int8x16x4_t, int8x8_t, vaddq_f32, vaddq_s32, vaddvq_s32, vandq_s32,
    vceqq_s32, vcombine_s16, vcvtaq_s32_f32, vcvtq_f32_s32, vdupq_laneq_s32, vdupq_n_f32,
    vdupq_n_s16, vdupq_n_s32, vdupq_n_u32, vdupq_n_u8, veorq_u8, vget_low_s16, vget_low_s8,
    vld1_s8, vld1q_s32, vld1q_s8, vld1q_u8, vld2q_s32, vmaxq_s32, vmaxvq_s32, vmaxvq_u32,
    vmlal_high_s8, vmovl_high_s16, vmovl_s16, vmovl_s8, vmull_high_s8, vmull_s8, vmulq_f32,
    vorrq_u32, vpadalq_s16, vpaddlq_s8, vpaddq_s32, vqaddq_s32, vqmovn_s16, vqmovn_s32,
    vqrdmulhq_s32, vqtbl1q_u8, vqtbl4q_s8, vqtbx4q_s8, vreinterpretq_s32_s8, vreinterpretq_s8_s32,
    vreinterpretq_s8_u32, vrshlq_s32, vshlq_n_s32, vshrq_n_s32, vst1_s8, vst1q_s32, vst1q_s8,
    vst1q_u8, vsubq_s16, vsubq_u8,
};

#[cfg(feature = "std")]
pub(super) mod blocked;

use super::plain_dot;
use crate::format::{ADD_LEFT_SHIFT, MIN_SHIFT};
use crate::kernels::add::{AddRhs, FastAdd};
use crate::kernels::conv2d::{block_outputs, Block};
use crate::kernels::{requant_at, requantize, FastRequant};
use crate::quant::Requant;

/// `acc_j + sum_k w[k] c_j[k]` on the int8 layout of [`pack_taps_s8`] without the
/// dot-product instructions: per group, the four positions' columns times the group's four
/// weights in every lane by `SMULL` and `SMULL2` (int16 products: an int8 product fits), each
/// pair of products added into an int32 lane by `SADALP`, the lanes of each position added at
/// the end.
///
/// # Safety
/// None beyond NEON, which every aarch64 CPU has; `unsafe` for the raw loads.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot_1x4(w: &[i8], cols: &[u32], acc: [i32; 4]) -> [i32; 4] {
    let groups = (w.len() / 4).min(cols.len() / 4);
    // Lanes of `low`: positions 0 and 1, two per position; of `high`: positions 2 and 3.
    let (mut low, mut high) = (vdupq_n_s32(0), vdupq_n_s32(0));
    for g in 0..groups {
        // SAFETY: `g < groups`: bytes `4g..4g + 4` of `w` and words `4g..4g + 4` of `cols`.
        let (word, c) = unsafe {
            (
                w.as_ptr().add(4 * g).cast::<u32>().read_unaligned(),
                vld1q_s8(cols.as_ptr().add(4 * g).cast()),
            )
        };
        let wv = vreinterpretq_s8_u32(vdupq_n_u32(word));
        (low, high) = mull_pairs(low, high, c, wv);
    }
    let sums = lanes(vpaddq_s32(low, high));
    let mut out = acc;
    for (a, s) in out.iter_mut().zip(sums) {
        *a = a.wrapping_add(s);
    }
    out
}

/// `SMULL` / `SMULL2` of the columns `c` (four positions' four values) with the weights `w`,
/// each product pair added into `low` (positions 0, 1) and `high` (positions 2, 3) by `SADALP`.
#[inline]
#[target_feature(enable = "neon")]
fn mull_pairs(
    low: int32x4_t,
    high: int32x4_t,
    c: int8x16_t,
    w: int8x16_t,
) -> (int32x4_t, int32x4_t) {
    (
        vpadalq_s16(low, vmull_s8(vget_low_s8(c), vget_low_s8(w))),
        vpadalq_s16(high, vmull_high_s8(c, w)),
    )
}

/// `acc_r + sum_i x_i rows[r]_i` (slices of one length): 16 inputs at a time, `SMULL` into
/// int16 (an int8 product fits) and `SADALP` pairwise into int32; the rest one by one.
///
/// # Safety
/// None beyond NEON; `unsafe` for the raw loads.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot_rows<const R: usize>(
    x: &[i8],
    rows: [&[i8]; R],
    acc: [i32; R],
) -> [i32; R] {
    let n = rows.iter().fold(x.len(), |n, row| n.min(row.len()));
    // SAFETY: `i + 16 <= n` at every call.
    let load = |s: &[i8], i: usize| unsafe { vld1q_s8(s.as_ptr().add(i)) };
    let mut sums = [vdupq_n_s32(0); R];
    let mut i = 0;
    while i + 16 <= n {
        let xv = load(x, i);
        for (sum, row) in sums.iter_mut().zip(rows) {
            let wv = load(row, i);
            *sum = vpadalq_s16(*sum, vmull_s8(vget_low_s8(xv), vget_low_s8(wv)));
            *sum = vpadalq_s16(*sum, vmull_high_s8(xv, wv));
        }
        i += 16;
    }
    finish(x, rows, acc, sums, i, n)
}

/// `acc_r + lanes of sums[r] + the plain dot product of elements i..n`.
#[inline]
#[target_feature(enable = "neon")]
fn finish<const R: usize>(
    x: &[i8],
    rows: [&[i8]; R],
    acc: [i32; R],
    sums: [int32x4_t; R],
    i: usize,
    n: usize,
) -> [i32; R] {
    let mut out = acc;
    for ((a, sum), row) in out.iter_mut().zip(sums).zip(rows) {
        *a = a
            .wrapping_add(vaddvq_s32(sum))
            .wrapping_add(plain_dot(&x[i..n], &row[i..n]));
    }
    out
}

/// `acc + sum over each int32 lane of the four int8 products of a and b in that lane`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: one register-only instruction of the enabled `dotprod` feature.
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// `acc + a b^T` on 2x2 int32 (lanes `[r0 c0, r0 c1, r1 c0, r1 c1]`): row `r` of `a` and row
/// `c` of `b` are their 8-byte halves, each lane the sum of eight int8 products (`SMMLA`).
#[inline]
#[target_feature(enable = "neon,i8mm")]
pub(super) fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: one register-only instruction of the enabled `i8mm` feature.
    unsafe {
        core::arch::asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Packs the staged taps (`cols`: `8 n` words, word `4 n + k` holding the four positions at
/// reduction index `k`) into the int8 layout of [`dot_1x4_s8`], in place: group `g` becomes
/// words `4g..4g + 4`, word `4g + j` holding position `j`'s values at `k = 4g..4g + 4` (a 4x4
/// byte transpose, one `TBL`). Each group is written below the taps still to be read.
///
/// # Safety
/// None beyond NEON; `unsafe` for the raw loads and stores.
#[target_feature(enable = "neon")]
pub(super) unsafe fn pack_taps_s8(cols: &mut [u32]) {
    let groups = cols.len() / 8;
    let transpose = [0u8, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];
    // SAFETY: the 16 bytes of the local array.
    let transpose = unsafe { vld1q_u8(transpose.as_ptr()) };
    let base = cols.as_mut_ptr();
    for g in 0..groups {
        // SAFETY: words `4 groups + 4g..+4` and `4g..4g + 4` are inside `cols` (`8 groups`
        // words); the read precedes the write, which ends at or below the next group's taps.
        unsafe {
            let taps = vld1q_u8(base.add(4 * groups + 4 * g).cast::<u8>());
            vst1q_u8(base.add(4 * g).cast::<u8>(), vqtbl1q_u8(taps, transpose));
        }
    }
}

/// `acc_j + sum_k w[k] c_j[k]` on the int8 layout of [`pack_taps_s8`]: per group one `SDOT`
/// of the four positions' words against the group's four weights in every lane.
///
/// # Safety
/// The CPU must have the dot-product instructions (`asimddp`).
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn dot_1x4_s8(w: &[i8], cols: &[u32], acc: [i32; 4]) -> [i32; 4] {
    let groups = (w.len() / 4).min(cols.len() / 4);
    let (mut sum0, mut sum1) = (vdupq_n_s32(0), vdupq_n_s32(0));
    // SAFETY (both closures): `g < groups`, so the 4 weight bytes at `4g` and the 4 words at
    // `4g` (inside the first half of `cols`) are in bounds.
    let weights = |g: usize| {
        let word = unsafe { w.as_ptr().add(4 * g).cast::<u32>().read_unaligned() };
        vreinterpretq_s8_u32(vdupq_n_u32(word))
    };
    let columns = |g: usize| unsafe { vld1q_s8(cols.as_ptr().add(4 * g).cast()) };
    let mut g = 0;
    while g + 2 <= groups {
        sum0 = sdot(sum0, columns(g), weights(g));
        sum1 = sdot(sum1, columns(g + 1), weights(g + 1));
        g += 2;
    }
    if g < groups {
        sum0 = sdot(sum0, columns(g), weights(g));
    }
    let mut lanes = [0i32; 4];
    // SAFETY: `lanes` holds four int32.
    unsafe { core::arch::aarch64::vst1q_s32(lanes.as_mut_ptr(), sum0) };
    let mut more = [0i32; 4];
    // SAFETY: as above.
    unsafe { core::arch::aarch64::vst1q_s32(more.as_mut_ptr(), sum1) };
    let mut out = acc;
    for ((a, l), m) in out.iter_mut().zip(lanes).zip(more) {
        *a = a.wrapping_add(l).wrapping_add(m);
    }
    out
}

/// [`dot_rows`] with `SDOT`: 16 inputs against each row per instruction.
///
/// # Safety
/// The CPU must have the dot-product instructions (`asimddp`).
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn dot_rows_s8<const R: usize>(
    x: &[i8],
    rows: [&[i8]; R],
    acc: [i32; R],
) -> [i32; R] {
    let n = rows.iter().fold(x.len(), |n, row| n.min(row.len()));
    // SAFETY: `i + 16 <= n` at every call.
    let load = |s: &[i8], i: usize| unsafe { vld1q_s8(s.as_ptr().add(i)) };
    let mut sums = [vdupq_n_s32(0); R];
    let mut i = 0;
    while i + 16 <= n {
        let xv = load(x, i);
        for (sum, row) in sums.iter_mut().zip(rows) {
            *sum = sdot(*sum, xv, load(row, i));
        }
        i += 16;
    }
    finish(x, rows, acc, sums, i, n)
}

/// `acc +` per lane the four products of that lane's bytes of `a` with the four bytes of
/// element `I` (0 to 3) of `b`: `SDOT` by element.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot_lane<const I: i32>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: one register-only instruction of the enabled `dotprod` feature; `I` is a lane
    // index of a 4-lane vector (an out-of-range constant fails to assemble).
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.4b[{i}]",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            i = const I,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// The four int32 lanes of `v`.
#[inline]
#[target_feature(enable = "neon")]
fn lanes(v: int32x4_t) -> [i32; 4] {
    let mut out = [0i32; 4];
    // SAFETY: `out` holds four int32.
    unsafe { vst1q_s32(out.as_mut_ptr(), v) };
    out
}

/// `sat_i8(zy + requant(acc_j))` for four accumulators, exactly `kernels::requantize`: when
/// `requant` has the `FastRequant` form, in NEON lanes as gemmlowp does it (`SQRDMULH` is the
/// doubling high multiply `(x M + 2^30) >> 31` for `M != i32::MIN`; `SRSHL` by `-right` after
/// subtracting 1 from negative values is the division by `2^right` rounding ties away from
/// zero; saturating adds and narrows are the zero point and the clamp), else in scalar code.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn requantize4(acc: [i32; 4], requant: Requant, zy: i32) -> [i8; 4] {
    let Some(fast) = FastRequant::new(requant) else {
        return requantize(acc, requant, zy);
    };
    // SAFETY: `acc` holds four int32.
    let x = unsafe { vld1q_s32(acc.as_ptr()) };
    let v = requantize_lanes(x, fast, zy);
    let narrow = vqmovn_s16(vcombine_s16(vqmovn_s32(v), vqmovn_s32(v)));
    let mut out = [0i8; 8];
    // SAFETY: `out` holds eight int8.
    unsafe { vst1_s8(out.as_mut_ptr(), narrow) };
    [out[0], out[1], out[2], out[3]]
}

/// [`requantize4`] for eight accumulators with one requantisation.
#[inline]
#[target_feature(enable = "neon")]
fn requantize8(acc: [i32; 8], requant: Requant, zy: i32) -> [i8; 8] {
    let Some(fast) = FastRequant::new(requant) else {
        return requantize(acc, requant, zy);
    };
    // SAFETY: `acc` holds eight int32.
    let (low, high) = unsafe { (vld1q_s32(acc.as_ptr()), vld1q_s32(acc.as_ptr().add(4))) };
    let (low, high) = (
        requantize_lanes(low, fast, zy),
        requantize_lanes(high, fast, zy),
    );
    let narrow = vqmovn_s16(vcombine_s16(vqmovn_s32(low), vqmovn_s32(high)));
    let mut out = [0i8; 8];
    // SAFETY: `out` holds eight int8.
    unsafe { vst1_s8(out.as_mut_ptr(), narrow) };
    out
}

/// `zy + FastRequant::apply(x)` per lane, saturating (the int8 clamp is the caller's narrow).
#[inline]
#[target_feature(enable = "neon")]
fn requantize_lanes(x: int32x4_t, fast: FastRequant, zy: i32) -> int32x4_t {
    vqaddq_s32(fast_apply(x, fast), vdupq_n_s32(zy))
}

/// `FastRequant::apply` per lane.
#[inline]
#[target_feature(enable = "neon")]
fn fast_apply(x: int32x4_t, fast: FastRequant) -> int32x4_t {
    let high = vqrdmulhq_s32(x, vdupq_n_s32(fast.multiplier));
    // `right` is in 0..=31 (`FastRequant::new`); `SRSHL` by a negative amount shifts right
    // with rounding half up, so negative values first move down by one (when right > 0: the
    // sign bit of `-right` is set) to round their ties away from zero.
    let shift = vdupq_n_s32(fast.right.clamp(0, 31).wrapping_neg());
    let fixup = vshrq_n_s32::<31>(vandq_s32(high, shift));
    vrshlq_s32(vqaddq_s32(high, fixup), shift)
}

/// The leading elements of an int8 add whose three requantisations have the `FastRequant`
/// form ([`super::add_prefix`]'s contract), eight at a time: the operands widened to int32
/// lanes, each term `apply((v - z) << ADD_LEFT_SHIFT)`, the sum's requantisation, the zero
/// point and the clamp, all in NEON lanes. Returns the number of elements done (a multiple
/// of 8).
#[target_feature(enable = "neon")]
pub(super) fn add_prefix(
    add: &FastAdd,
    lhs: Option<&[i8]>,
    rhs: AddRhs<'_>,
    dst: &mut [i8],
) -> usize {
    let n = dst.len() / 8 * 8;
    let widen = |v: int8x8_t, z: i16| {
        let centred = vsubq_s16(vmovl_s8(v), vdupq_n_s16(z));
        (
            vshlq_n_s32::<ADD_LEFT_SHIFT>(vmovl_s16(vget_low_s16(centred))),
            vshlq_n_s32::<ADD_LEFT_SHIFT>(vmovl_high_s16(centred)),
        )
    };
    let constant = match rhs {
        AddRhs::Term(term) => Some(vdupq_n_s32(term)),
        AddRhs::Each(_) => None,
    };
    let zy = vdupq_n_s32(add.zero_points.output);
    let mut i = 0;
    while i < n {
        // SAFETY: `i + 8 <= n <= dst.len()`, and `lhs` and an `Each` right operand have
        // `dst`'s length (the caller checks).
        let (a, b) = unsafe {
            let a = match lhs {
                Some(lhs) => vld1_s8(lhs.as_ptr().add(i)),
                None => vld1_s8(dst.as_ptr().add(i)),
            };
            let b = match rhs {
                AddRhs::Each(rhs) => Some(vld1_s8(rhs.as_ptr().add(i))),
                AddRhs::Term(_) => None,
            };
            (a, b)
        };
        let (a0, a1) = widen(a, add.zero_points.lhs as i16);
        let (l0, l1) = (fast_apply(a0, add.lhs), fast_apply(a1, add.lhs));
        let (r0, r1) = match (b, constant) {
            (Some(b), _) => {
                let (b0, b1) = widen(b, add.zero_points.rhs as i16);
                (fast_apply(b0, add.rhs), fast_apply(b1, add.rhs))
            }
            (None, Some(term)) => (term, term),
            (None, None) => unreachable!("an add's right operand is a slice or a term"),
        };
        let out = |l, r| vqaddq_s32(fast_apply(vaddq_s32(l, r), add.output), zy);
        let (o0, o1) = (out(l0, r0), out(l1, r1));
        let bytes = vqmovn_s16(vcombine_s16(vqmovn_s32(o0), vqmovn_s32(o1)));
        // SAFETY: `i + 8 <= dst.len()`.
        unsafe { vst1_s8(dst.as_mut_ptr().add(i), bytes) };
        i += 8;
    }
    n
}

/// `conv2d::block_outputs` with [`dot_1x4`] and [`requantize4`] inlined (the plain NEON path).
///
/// # Safety
/// None beyond NEON; `unsafe` for the raw loads of the products.
#[target_feature(enable = "neon")]
pub(super) unsafe fn conv_block(block: &Block<'_>, cols: &[u32], y: &mut [i8]) {
    block_outputs(
        block,
        y,
        // SAFETY: NEON is enabled; group `g` starts at word `4g`.
        |w, g, acc| unsafe { dot_1x4(w, &cols[4 * g..], acc) },
        |acc, requant, zy| requantize4(acc, requant, zy),
    );
}

/// `conv2d::block_outputs` with [`dot_1x4_s8`] and [`requantize4`] inlined.
///
/// # Safety
/// The CPU must have the dot-product instructions (`asimddp`).
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn conv_block_s8(block: &Block<'_>, cols: &[u32], y: &mut [i8]) {
    block_outputs(
        block,
        y,
        // SAFETY: as this function's; group `g` starts at word `4g`.
        |w, g, acc| unsafe { dot_1x4_s8(w, &cols[4 * g..], acc) },
        |acc, requant, zy| requantize4(acc, requant, zy),
    );
}

/// Transposes each group of staged taps in place into the int8 layout of [`dot_1x4_s8`]
/// (word `4g + j`: position `j`'s values at `k = 4g..4g + 4`): `taps` holds the staged words
/// (word `k`: the four positions at `k`), a multiple of 4.
#[inline]
#[target_feature(enable = "neon")]
fn transpose_taps_s8(taps: &mut [u32]) {
    let transpose = [0u8, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15];
    // SAFETY: the 16 bytes of the local array.
    let transpose = unsafe { vld1q_u8(transpose.as_ptr()) };
    for group in taps.chunks_exact_mut(4) {
        let at = group.as_mut_ptr().cast::<u8>();
        // SAFETY: `group` holds 16 bytes, read before they are written.
        unsafe { vst1q_u8(at, vqtbl1q_u8(vld1q_u8(at), transpose)) };
    }
}

/// [`dot_1x4_s8`] for two runs of four positions, `first` and `second` packed alike: sixteen
/// weights (four groups) per load, each group's four multiplied with both runs' columns by one
/// `SDOT` by element per run; the last groups one at a time.
///
/// # Safety
/// The CPU must have the dot-product instructions (`asimddp`).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot_2x4_s8(w: &[i8], first: &[u32], second: &[u32], acc: [i32; 8]) -> [i32; 8] {
    let groups = (w.len() / 4).min(first.len() / 4).min(second.len() / 4);
    // SAFETY (both closures): callers keep `g < groups`, so the 4 words at `4g` of each half
    // are inside it.
    let columns = |cols: &[u32], g: usize| unsafe { vld1q_s8(cols.as_ptr().add(4 * g).cast()) };
    let zero = vdupq_n_s32(0);
    let (mut a0, mut a1, mut b0, mut b1) = (zero, zero, zero, zero);
    let mut g = 0;
    while g + 4 <= groups {
        // SAFETY: `g + 4 <= groups`: bytes `4g..4g + 16` of `w` are inside it.
        let wv = unsafe { vld1q_s8(w.as_ptr().add(4 * g)) };
        a0 = sdot_lane::<0>(a0, columns(first, g), wv);
        b0 = sdot_lane::<0>(b0, columns(second, g), wv);
        a1 = sdot_lane::<1>(a1, columns(first, g + 1), wv);
        b1 = sdot_lane::<1>(b1, columns(second, g + 1), wv);
        a0 = sdot_lane::<2>(a0, columns(first, g + 2), wv);
        b0 = sdot_lane::<2>(b0, columns(second, g + 2), wv);
        a1 = sdot_lane::<3>(a1, columns(first, g + 3), wv);
        b1 = sdot_lane::<3>(b1, columns(second, g + 3), wv);
        g += 4;
    }
    while g < groups {
        // SAFETY: `g < groups`: bytes `4g..4g + 4` of `w`.
        let word = unsafe { w.as_ptr().add(4 * g).cast::<u32>().read_unaligned() };
        let wv = vreinterpretq_s8_u32(vdupq_n_u32(word));
        a0 = sdot(a0, columns(first, g), wv);
        b0 = sdot(b0, columns(second, g), wv);
        g += 1;
    }
    let (a, b) = (lanes(vaddq_s32(a0, a1)), lanes(vaddq_s32(b0, b1)));
    let mut out = acc;
    for (j, o) in out.iter_mut().enumerate() {
        let l = if j < 4 { a[j] } else { b[j - 4] };
        *o = o.wrapping_add(l);
    }
    out
}

/// `conv2d::block_outputs` for eight positions, two runs of four staged in `first` and
/// `second`: both halves transposed in place, then [`dot_2x4_s8`] and [`requantize8`]
/// inlined.
///
/// # Safety
/// The CPU must have the dot-product instructions (`asimddp`).
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn conv_block_pair_s8(
    block: &Block<'_>,
    first: &mut [u32],
    second: &mut [u32],
    y: &mut [i8],
) {
    transpose_taps_s8(first);
    transpose_taps_s8(second);
    let (first, second) = (&*first, &*second);
    block_outputs(
        block,
        y,
        // SAFETY: as this function's; group `g` starts at word `4g` of each half.
        |w, g, acc| unsafe { dot_2x4_s8(w, &first[4 * g..], &second[4 * g..], acc) },
        |acc, requant, zy| requantize8(acc, requant, zy),
    );
}

/// [`dot_1x4`] for two runs of four positions, `first` and `second` packed alike: each
/// group's four weights spread once (sixteen loaded at a time, `DUP` by lane) for both runs.
///
/// # Safety
/// None beyond NEON; `unsafe` for the raw loads.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_2x4(w: &[i8], first: &[u32], second: &[u32], acc: [i32; 8]) -> [i32; 8] {
    let groups = (w.len() / 4).min(first.len() / 4).min(second.len() / 4);
    // SAFETY: callers keep `g < groups`, so the 4 words at `4g` of each half are inside it.
    let columns = |cols: &[u32], g: usize| unsafe { vld1q_s8(cols.as_ptr().add(4 * g).cast()) };
    let zero = vdupq_n_s32(0);
    let (mut a_low, mut a_high, mut b_low, mut b_high) = (zero, zero, zero, zero);
    let mut both = |g: usize, wv: int8x16_t| {
        (a_low, a_high) = mull_pairs(a_low, a_high, columns(first, g), wv);
        (b_low, b_high) = mull_pairs(b_low, b_high, columns(second, g), wv);
    };
    let mut g = 0;
    while g + 4 <= groups {
        // SAFETY: `g + 4 <= groups`: bytes `4g..4g + 16` of `w` are inside it.
        let words = vreinterpretq_s32_s8(unsafe { vld1q_s8(w.as_ptr().add(4 * g)) });
        both(g, vreinterpretq_s8_s32(vdupq_laneq_s32::<0>(words)));
        both(g + 1, vreinterpretq_s8_s32(vdupq_laneq_s32::<1>(words)));
        both(g + 2, vreinterpretq_s8_s32(vdupq_laneq_s32::<2>(words)));
        both(g + 3, vreinterpretq_s8_s32(vdupq_laneq_s32::<3>(words)));
        g += 4;
    }
    while g < groups {
        // SAFETY: `g < groups`: bytes `4g..4g + 4` of `w`.
        let word = unsafe { w.as_ptr().add(4 * g).cast::<u32>().read_unaligned() };
        both(g, vreinterpretq_s8_u32(vdupq_n_u32(word)));
        g += 1;
    }
    let (a, b) = (
        lanes(vpaddq_s32(a_low, a_high)),
        lanes(vpaddq_s32(b_low, b_high)),
    );
    let mut out = acc;
    for (j, o) in out.iter_mut().enumerate() {
        let l = if j < 4 { a[j] } else { b[j - 4] };
        *o = o.wrapping_add(l);
    }
    out
}

/// [`conv_block_pair_s8`] on plain NEON: both halves transposed in place, then [`dot_2x4`]
/// and [`requantize8`] inlined.
///
/// # Safety
/// None beyond NEON; `unsafe` for the raw loads of the products.
#[target_feature(enable = "neon")]
pub(super) unsafe fn conv_block_pair(
    block: &Block<'_>,
    first: &mut [u32],
    second: &mut [u32],
    y: &mut [i8],
) {
    transpose_taps_s8(first);
    transpose_taps_s8(second);
    let (first, second) = (&*first, &*second);
    block_outputs(
        block,
        y,
        // SAFETY: NEON is enabled; group `g` starts at word `4g` of each half.
        |w, g, acc| unsafe { dot_2x4(w, &first[4 * g..], &second[4 * g..], acc) },
        |acc, requant, zy| requantize8(acc, requant, zy),
    );
}

/// The leading rows of an int8 linear layer (`kernels::linear::linear_s8`'s arguments: the
/// input zero point is folded into the bias), four at a time: one `SDOT` per 16 inputs and
/// row, then [`finish_rows`]. Returns the number of rows done: `y.len()` rounded down to a
/// multiple of 4 when `x.len()` is a non-zero multiple of 16, else 0 (the caller computes the
/// rest). Every output is exactly `linear_s8`'s.
///
/// # Safety
/// The CPU must have the dot-product instructions (`asimddp`); `weights` must hold
/// `x.len() y.len()` values, `bias` `4 y.len()` bytes and `requant` `8 y.len()` (the caller
/// checks).
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn linear_rows_s8(
    x: &[i8],
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    zy: i32,
    y: &mut [i8],
) -> usize {
    let n = x.len();
    if n == 0 || !n.is_multiple_of(16) {
        return 0;
    }
    for (r, (w, y)) in weights
        .chunks_exact(4 * n)
        .zip(y.chunks_exact_mut(4))
        .enumerate()
    {
        let mut sums = [vdupq_n_s32(0); 4];
        let mut i = 0;
        while i < n {
            // SAFETY: `i + 16 <= n`: 16 bytes of `x` and of each row `k` (bytes `k n + i..`
            // of `w`, which holds `4 n`) from `i`.
            unsafe {
                let xv = vld1q_s8(x.as_ptr().add(i));
                for (k, sum) in sums.iter_mut().enumerate() {
                    *sum = sdot(*sum, xv, vld1q_s8(w.as_ptr().add(k * n + i)));
                }
            }
            i += 16;
        }
        // SAFETY: the caller's lengths cover rows `4r..4r + 4`.
        unsafe { finish_rows(sums, bias, requant, r, zy, y) };
    }
    y.len() / 4 * 4
}

/// [`linear_rows_s8`] on plain NEON: per 16 inputs and row, `SMULL` and `SMLAL2` put two
/// products in each int16 lane ([`products16`]: the weights' symmetric range makes them fit)
/// and `SADALP` adds the lanes pairwise into int32. Eight rows at a time, 64 inputs per step
/// ([`rows8_steps64`]), then 16 at a time; a last group of four rows alone.
///
/// # Safety
/// As [`linear_rows_s8`], without the dot-product instructions; the weights must lie in
/// `-MAX_WEIGHT..=MAX_WEIGHT` (a weight of -128 may give a wrong sum, not undefined behaviour).
#[target_feature(enable = "neon")]
pub(super) unsafe fn linear_rows(
    x: &[i8],
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    zy: i32,
    y: &mut [i8],
) -> usize {
    let n = x.len();
    if n == 0 || !n.is_multiple_of(16) {
        return 0;
    }
    let eights = weights.chunks_exact(8 * n).zip(y.chunks_exact_mut(8));
    for (r, (w, y)) in eights.enumerate() {
        let steps = n / 64;
        // SAFETY: `x` holds `n >= 64 steps` bytes and `w` eight rows of `n`.
        let mut sums = unsafe { rows8_steps64(x.as_ptr(), w.as_ptr(), n, steps) };
        // SAFETY: as above, from `64 steps` on.
        unsafe { add_rows(&mut sums, x, w, 64 * steps) };
        // SAFETY: the caller's lengths cover rows `8r..8r + 8`, quads `2r` and `2r + 1`.
        unsafe { finish_rows(sums, bias, requant, 2 * r, zy, y) };
    }
    let four = 8 * (y.len() / 8);
    if let (Some(w), Some(y)) = (
        weights.get(four * n..(four + 4) * n),
        y.get_mut(four..four + 4),
    ) {
        let mut sums = [vdupq_n_s32(0); 4];
        // SAFETY: `w` holds four rows of `n`.
        unsafe { add_rows(&mut sums, x, w, 0) };
        // SAFETY: the caller's lengths cover rows `four..four + 4`.
        unsafe { finish_rows(sums, bias, requant, four / 4, zy, y) };
    }
    y.len() / 4 * 4
}

/// Adds to `sums[k]` the products of row `k` (`w[k n..]`, `n = x.len()`) with `x` from input
/// `from` on, 16 at a time ([`products16`]).
///
/// # Safety
/// `n - from` must be a multiple of 16 and `w` hold `R n` values in `-MAX_WEIGHT..=MAX_WEIGHT`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn add_rows<const R: usize>(sums: &mut [int32x4_t; R], x: &[i8], w: &[i8], from: usize) {
    let n = x.len();
    let mut i = from;
    while i < n {
        // SAFETY: `i + 16 <= n` (the contract), 16 bytes of `x` and of row `k` (bytes
        // `k n + i..` of `w`, which holds `R n`) from `i`.
        unsafe {
            let xv = vld1q_s8(x.as_ptr().add(i));
            for (k, sum) in sums.iter_mut().enumerate() {
                *sum = products16(*sum, xv, vld1q_s8(w.as_ptr().add(k * n + i)));
            }
        }
        i += 16;
    }
}

/// `SMULL`, `SMLAL2` and `SADALP` (as [`products16`]) of four rows' 16 weights (registers
/// `$w`) with 16 inputs (register `$x`) into the four rows' sums (operands `$s`), with
/// `v16`..`v19` holding the int16 products: the text of twelve instructions.
#[rustfmt::skip]
macro_rules! products16_x4 {
    ($x:literal, [$w0:literal, $w1:literal, $w2:literal, $w3:literal],
     [$s0:literal, $s1:literal, $s2:literal, $s3:literal]) => {
        concat!(
            "smull v16.8h, ", $w0, ".8b, ", $x, ".8b\n",
            "smull v17.8h, ", $w1, ".8b, ", $x, ".8b\n",
            "smull v18.8h, ", $w2, ".8b, ", $x, ".8b\n",
            "smull v19.8h, ", $w3, ".8b, ", $x, ".8b\n",
            "smlal2 v16.8h, ", $w0, ".16b, ", $x, ".16b\n",
            "smlal2 v17.8h, ", $w1, ".16b, ", $x, ".16b\n",
            "smlal2 v18.8h, ", $w2, ".16b, ", $x, ".16b\n",
            "smlal2 v19.8h, ", $w3, ".16b, ", $x, ".16b\n",
            "sadalp {", $s0, ":v}.4s, v16.8h\n",
            "sadalp {", $s1, ":v}.4s, v17.8h\n",
            "sadalp {", $s2, ":v}.4s, v18.8h\n",
            "sadalp {", $s3, ":v}.4s, v19.8h\n",
        )
    };
}

/// `products16_x4` over 64 inputs (`v0`..`v3`) and four rows' 64 weights, loaded from the
/// row pointers `$r` (post-incremented) into `v4`..`v7` and `v20`..`v31`.
#[rustfmt::skip]
macro_rules! products64_x4 {
    ([$r0:literal, $r1:literal, $r2:literal, $r3:literal], $s:tt) => {
        concat!(
            "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{", $r0, "}], #64\n",
            "ld1 {{v20.16b, v21.16b, v22.16b, v23.16b}}, [{", $r1, "}], #64\n",
            "ld1 {{v24.16b, v25.16b, v26.16b, v27.16b}}, [{", $r2, "}], #64\n",
            "ld1 {{v28.16b, v29.16b, v30.16b, v31.16b}}, [{", $r3, "}], #64\n",
            products16_x4!("v0", ["v4", "v20", "v24", "v28"], $s),
            products16_x4!("v1", ["v5", "v21", "v25", "v29"], $s),
            products16_x4!("v2", ["v6", "v22", "v26", "v30"], $s),
            products16_x4!("v3", ["v7", "v23", "v27", "v31"], $s),
        )
    };
}

/// The partial sums (as [`finish_rows`] takes them) of eight rows `w + k n` (`k < 8`) times
/// `x` over their first `64 steps` values, 64 per step: one `LD1` of four registers for the
/// input and for each row, then [`products16`]'s `SMULL`, `SMLAL2` and `SADALP` on each 16:
/// 107 instructions for 512 products (written out because the compiler splits each `LD1`
/// into two `LDP` and adds an address computation per row).
///
/// # Safety
/// `x` must be readable for `64 steps` bytes and `w` for `7 n + 64 steps`; the weights must
/// lie in `-MAX_WEIGHT..=MAX_WEIGHT`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn rows8_steps64(x: *const i8, w: *const i8, n: usize, steps: usize) -> [int32x4_t; 8] {
    let [mut s0, mut s1, mut s2, mut s3, mut s4, mut s5, mut s6, mut s7] = [vdupq_n_s32(0); 8];
    if steps > 0 {
        // SAFETY: the loop reads `64 steps` bytes from `x` and from each row pointer (this
        // function's contract), register-only arithmetic otherwise.
        unsafe {
            core::arch::asm!(
                "2:",
                "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{x}], #64",
                "subs {steps}, {steps}, #1",
                products64_x4!(["w0", "w1", "w2", "w3"], ["s0", "s1", "s2", "s3"]),
                products64_x4!(["w4", "w5", "w6", "w7"], ["s4", "s5", "s6", "s7"]),
                "b.ne 2b",
                x = inout(reg) x => _,
                w0 = inout(reg) w => _,
                w1 = inout(reg) w.add(n) => _,
                w2 = inout(reg) w.add(2 * n) => _,
                w3 = inout(reg) w.add(3 * n) => _,
                w4 = inout(reg) w.add(4 * n) => _,
                w5 = inout(reg) w.add(5 * n) => _,
                w6 = inout(reg) w.add(6 * n) => _,
                w7 = inout(reg) w.add(7 * n) => _,
                steps = inout(reg) steps => _,
                s0 = inout(vreg) s0,
                s1 = inout(vreg) s1,
                s2 = inout(vreg) s2,
                s3 = inout(vreg) s3,
                s4 = inout(vreg) s4,
                s5 = inout(vreg) s5,
                s6 = inout(vreg) s6,
                s7 = inout(vreg) s7,
                out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                out("v24") _, out("v25") _, out("v26") _, out("v27") _,
                out("v28") _, out("v29") _, out("v30") _, out("v31") _,
                options(readonly, nostack)
            );
        }
    }
    [s0, s1, s2, s3, s4, s5, s6, s7]
}

/// `sum` plus the 16 products `x_i w_i`, by lanes: `SMULL` multiplies the low halves into
/// int16, `SMLAL2` adds the high halves' products to the same lanes and `SADALP` adds the
/// int16 lanes pairwise into `sum`'s int32 lanes. Exact while no `w_i` is -128: a product is
/// then at most `128 * 127` in magnitude and two of them fit an int16 lane (with `w = x =
/// -128` twice a lane would wrap).
#[inline]
#[target_feature(enable = "neon")]
fn products16(sum: int32x4_t, x: int8x16_t, w: int8x16_t) -> int32x4_t {
    vpadalq_s16(
        sum,
        vmlal_high_s8(vmull_s8(vget_low_s8(x), vget_low_s8(w)), x, w),
    )
}

/// The outputs of rows `4q..4q + S` of a linear layer (`S / 4` groups of four from group
/// `q`) from their products' partial sums (`sums[k]`: row `4q + k`, to be summed over its
/// lanes): each group's four totals in one vector by pairwise adds, the bias added, and the
/// channels' requantisations applied in NEON lanes (as [`requantize4`], each lane with its own
/// multiplier and shift; unless every requantisation of the rows has the `FastRequant` form,
/// the rows are requantised in scalar code).
///
/// Always inlined (the kernels call it once per four or eight rows); NEON is enabled in every
/// aarch64 build, so it needs no `#[target_feature]` of its own.
///
/// # Safety
/// `S` must be 4 or 8; `bias` must hold `4 (4q + S)` bytes and `requant` `8 (4q + S)`; `y`
/// holds `S` outputs.
#[inline(always)]
unsafe fn finish_rows<const S: usize>(
    sums: [int32x4_t; S],
    bias: &[u8],
    requant: &[u8],
    q: usize,
    zy: i32,
    y: &mut [i8],
) {
    let groups = S / 4;
    let mut acc = [vdupq_n_s32(0); 2];
    let (mut multipliers, mut shifts) = (acc, acc);
    for g in 0..groups {
        let s = &sums[4 * g..4 * g + 4];
        let totals = vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]));
        // SAFETY: group `q + g` has 16 bytes of bias and 32 of requantisation (this
        // function's contract); `LD1` and `LD2` take any alignment, and aarch64 Linux is
        // little-endian like the blob.
        let pairs = unsafe {
            acc[g] = vaddq_s32(totals, vld1q_s32(bias.as_ptr().add(16 * (q + g)).cast()));
            vld2q_s32(requant.as_ptr().add(32 * (q + g)).cast())
        };
        (multipliers[g], shifts[g]) = (pairs.0, pairs.1);
    }
    // Fast when no shift is positive and no multiplier is i32::MIN, in every lane.
    let (mut slow, mut largest_shift) = (vdupq_n_u32(0), vdupq_n_s32(0));
    for g in 0..groups {
        slow = vorrq_u32(slow, vceqq_s32(multipliers[g], vdupq_n_s32(i32::MIN)));
        largest_shift = vmaxq_s32(largest_shift, shifts[g]);
    }
    if vmaxvq_s32(largest_shift) <= 0 && vmaxvq_u32(slow) == 0 {
        let mut v = acc;
        for g in 0..groups {
            let high = vqrdmulhq_s32(acc[g], multipliers[g]);
            // As `requantize_lanes`, with the lanes' own (non-positive) shifts.
            let shift = vmaxq_s32(shifts[g], vdupq_n_s32(MIN_SHIFT.max(-31)));
            let fixup = vshrq_n_s32::<31>(vandq_s32(high, shift));
            let divided = vrshlq_s32(vqaddq_s32(high, fixup), shift);
            v[g] = vqaddq_s32(divided, vdupq_n_s32(zy));
        }
        let narrow = vqmovn_s16(vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[groups - 1])));
        let mut out = [0i8; 8];
        // SAFETY: `out` holds eight int8.
        unsafe { vst1_s8(out.as_mut_ptr(), narrow) };
        y.copy_from_slice(&out[..S]);
    } else {
        for (k, (y, acc)) in y
            .iter_mut()
            .zip(acc.iter().flat_map(|&a| lanes(a)))
            .enumerate()
        {
            let [out] = requantize([acc], requant_at(requant, 4 * q + k), zy);
            *y = out;
        }
    }
}

/// `(sum q, sum q^2)` of int8 values, exact: 16 values at a time, the sum by `SADDLP` and
/// `SADALP`, the squares by `SMULL` / `SMULL2` (int16: an int8 square fits) and `SADALP`
/// into int32 lanes (at most `2^16` per lane and block), moved into the `i64` totals every
/// 2^13 blocks (`super::moments_in_blocks`).
#[target_feature(enable = "neon")]
pub(super) fn moments(values: &[i8]) -> (i64, i64) {
    let total = |v: int32x4_t| lanes(v).iter().map(|&l| i64::from(l)).sum::<i64>();
    super::moments_in_blocks(values, 16, 1 << 13, |run| {
        let (mut s, mut q) = (vdupq_n_s32(0), vdupq_n_s32(0));
        for block in run.chunks_exact(16) {
            // SAFETY: `block` holds 16 bytes.
            let v = unsafe { vld1q_s8(block.as_ptr()) };
            s = vpadalq_s16(s, vpaddlq_s8(v));
            q = vpadalq_s16(q, vmull_s8(vget_low_s8(v), vget_low_s8(v)));
            q = vpadalq_s16(q, vmull_high_s8(v, v));
        }
        (total(s), total(q))
    })
}

/// The leading elements of `dst = round_to_i8(k q + b, zy)` for `q` from `src` (or `dst` in
/// place), eight at a time: `k q` and `+ b` in `f32` lanes as the scalar code computes them,
/// `FCVTAS` (round to nearest, ties away from zero, saturating, NaN to 0: exactly
/// `round_to_i32`), the zero point by a saturating add and the clamp by saturating narrows.
/// Returns the number done (a multiple of 8).
///
/// # Safety
/// `src`, if any, as long as `dst`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn affine_prefix(
    k: f32,
    b: f32,
    zy: i32,
    src: Option<&[i8]>,
    dst: &mut [i8],
) -> usize {
    let n = dst.len() / 8 * 8;
    let (kv, bv, zv) = (vdupq_n_f32(k), vdupq_n_f32(b), vdupq_n_s32(zy));
    let map = |q: int32x4_t| {
        let v = vaddq_f32(vmulq_f32(kv, vcvtq_f32_s32(q)), bv);
        vqaddq_s32(vcvtaq_s32_f32(v), zv)
    };
    let mut i = 0;
    while i < n {
        let from = match src {
            Some(src) => src.as_ptr(),
            None => dst.as_ptr(),
        };
        // SAFETY: `i + 8 <= n <= dst.len()`, and `src` as long as `dst`.
        let q = vmovl_s8(unsafe { vld1_s8(from.add(i)) });
        let (low, high) = (map(vmovl_s16(vget_low_s16(q))), map(vmovl_high_s16(q)));
        let bytes = vqmovn_s16(vcombine_s16(vqmovn_s32(low), vqmovn_s32(high)));
        // SAFETY: `i + 8 <= dst.len()`.
        unsafe { vst1_s8(dst.as_mut_ptr().add(i), bytes) };
        i += 8;
    }
    n
}

/// The leading elements of `dst = lut[q + 128]` for `q` from `src` (or `dst` in place), 16 at
/// a time: the table in four 64-byte parts, one `TBL` and three `TBX` (an index outside a
/// part's 64 bytes leaves the byte as it is). Returns the number done (a multiple of 16).
///
/// # Safety
/// `src`, if any, as long as `dst`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn lut_prefix(lut: &[i8; 256], src: Option<&[i8]>, dst: &mut [i8]) -> usize {
    let n = dst.len() / 16 * 16;
    let part = |p: usize| {
        // SAFETY: `p < 4`: bytes `64p..64p + 64` of the table.
        unsafe {
            let at = lut.as_ptr().add(64 * p);
            int8x16x4_t(
                vld1q_s8(at),
                vld1q_s8(at.add(16)),
                vld1q_s8(at.add(32)),
                vld1q_s8(at.add(48)),
            )
        }
    };
    let tables = [part(0), part(1), part(2), part(3)];
    let (flip, sixty_four) = (vdupq_n_u8(0x80), vdupq_n_u8(64));
    let mut i = 0;
    while i < n {
        let from = match src {
            Some(src) => src.as_ptr(),
            None => dst.as_ptr(),
        };
        // SAFETY: `i + 16 <= n <= dst.len()`, and `src` as long as `dst`.
        let q = unsafe { vld1q_u8(from.add(i).cast()) };
        let index = veorq_u8(q, flip);
        let mut out = vqtbl4q_s8(tables[0], index);
        let mut at = index;
        for table in &tables[1..] {
            at = vsubq_u8(at, sixty_four);
            out = vqtbx4q_s8(out, *table, at);
        }
        // SAFETY: `i + 16 <= dst.len()`.
        unsafe { vst1q_s8(dst.as_mut_ptr().add(i), out) };
        i += 16;
    }
    n
}
