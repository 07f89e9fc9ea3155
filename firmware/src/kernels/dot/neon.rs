//! The aarch64 paths: plain NEON (every aarch64 CPU: widening multiply-accumulates on the
//! int16 packed layout of `dsp::pack_taps`) and NEON dot product (`SDOT`, CPUs with
//! `asimddp`: four int8 products summed into each int32 lane, on an int8 layout).
//!
//! `SDOT` is written as inline assembly: its intrinsic is not stable in the Rust this crate
//! supports.

use core::arch::aarch64::{
    int32x4_t, int8x16_t, vaddvq_s32, vcreate_s8, vdup_n_u32, vdupq_n_s32, vdupq_n_u32,
    vget_low_s16, vget_low_s8, vld1q_s16, vld1q_s8, vld1q_u8, vmlal_high_s16, vmlal_s16, vmovl_s8,
    vmull_high_s8, vmull_s8, vpadalq_s16, vqtbl1q_u8, vreinterpret_s8_u32, vreinterpretq_s8_u32,
    vst1q_u8, vtbl1_s8,
};

use super::plain_dot;

/// `acc_j + sum_k w[k] c_j[k]` on the int16 packed layout: per group of four weights, their
/// int16 values in the layout's order `(w0, w2, w1, w3)` (`TBL`, then widened), and one
/// `SMLAL` per position into that position's four int32 lanes.
///
/// # Safety
/// None beyond NEON, which every aarch64 CPU has; `unsafe` for the raw loads.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot_1x4(w: &[i8], cols: &[u32], acc: [i32; 4]) -> [i32; 4] {
    let groups = (w.len() / 4).min(cols.len() / 8);
    let order = vcreate_s8(u64::from_le_bytes([0, 2, 1, 3, 0, 2, 1, 3]));
    let mut sums = [vdupq_n_s32(0); 4];
    for g in 0..groups {
        // SAFETY: `g < groups`: bytes `4g..4g + 4` of `w` and words `8g..8g + 8` of `cols`
        // are inside the slices.
        let (word, c01, c23) = unsafe {
            (
                w.as_ptr().add(4 * g).cast::<u32>().read_unaligned(),
                vld1q_s16(cols.as_ptr().add(8 * g).cast()),
                vld1q_s16(cols.as_ptr().add(8 * g + 4).cast()),
            )
        };
        let wq = vmovl_s8(vtbl1_s8(vreinterpret_s8_u32(vdup_n_u32(word)), order));
        let wl = vget_low_s16(wq);
        sums[0] = vmlal_s16(sums[0], vget_low_s16(c01), wl);
        sums[1] = vmlal_high_s16(sums[1], c01, wq);
        sums[2] = vmlal_s16(sums[2], vget_low_s16(c23), wl);
        sums[3] = vmlal_high_s16(sums[3], c23, wq);
    }
    let mut out = acc;
    for (a, sum) in out.iter_mut().zip(sums) {
        *a = a.wrapping_add(vaddvq_s32(sum));
    }
    out
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
