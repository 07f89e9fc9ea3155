//! The x86-64 paths. AVX2: int8 widened to int16, `VPMADDWD` multiplies 16 pairs and adds
//! neighbours into 8 int32 lanes, `VPADDD` accumulates (wrapping, like the portable path).
//! The VNNI paths run whole convolutions on `VPDPBUSD` ([`blocked`], in either encoding of the
//! instruction) and everything else on the AVX2 kernels here; the element-wise kernels
//! (adds, group norm's moments and affine map, table lookups) are AVX2 on every x86-64 path.

use core::arch::x86_64::*;

pub(super) mod blocked;

use super::plain_dot;
use crate::format::{ADD_LEFT_SHIFT, MIN_SHIFT};
use crate::kernels::add::{AddRhs, FastAdd};
use crate::kernels::conv2d::{block_outputs, Block};
use crate::kernels::{requant_at, requantize, FastRequant};
use crate::quant::Requant;

/// The eight int32 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2")]
fn lanes(v: __m256i) -> [i32; 8] {
    let mut out = [0i32; 8];
    // SAFETY: `out` holds 32 bytes; the store has no alignment requirement.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
    out
}

/// `dsp::pack_taps` (the int16 packed layout, same words): per group, one `VPSHUFB` puts each
/// position's four taps in the layout's order `(k0, k2, k1, k3)` and `VPMOVSXBW` widens the 16
/// bytes into the group's 16 int16.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_taps(cols: &mut [u32]) {
    let groups = cols.len() / 8;
    // Output byte 4j + i takes tap k = (0, 2, 1, 3)[i] of position j: input byte 4k + j.
    #[rustfmt::skip]
    let order = _mm_setr_epi8(0, 8, 4, 12, 1, 9, 5, 13, 2, 10, 6, 14, 3, 11, 7, 15);
    let base = cols.as_mut_ptr();
    for g in 0..groups {
        // SAFETY: words `4 groups + 4g..+4` and `8g..8g + 8` are inside `cols` (`8 groups`
        // words); the read precedes the write, which never reaches taps not read yet
        // (`8g + 8 <= 4 groups + 4g + 4`).
        unsafe {
            let taps = _mm_loadu_si128(base.add(4 * groups + 4 * g).cast::<__m128i>());
            let packed = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(taps, order));
            _mm256_storeu_si256(base.add(8 * g).cast::<__m256i>(), packed);
        }
    }
}

/// `dot_1x4` on the int16 packed layout of `dsp::pack_taps`: group `g`'s eight words are one
/// 256-bit vector, position `j`'s int16 values `(c[4g], c[4g+2], c[4g+1], c[4g+3])`; the group's
/// four weights are broadcast, moved into the high byte of each int16 in that order by
/// `VPSHUFB` and sign-extended by an arithmetic shift, then `VPMADDWD` leaves each position's
/// two partial sums in lanes `2j`, `2j + 1`.
///
/// # Safety
/// The CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dot_1x4(w: &[i8], cols: &[u32], acc: [i32; 4]) -> [i32; 4] {
    let groups = (w.len() / 4).min(cols.len() / 8);
    // Byte 2i + 1 of each int16 slot gets weight index (0, 2, 1, 3)[i % 4]; -128 zeroes.
    #[rustfmt::skip]
    let spread = _mm256_setr_epi8(
        -128, 0, -128, 2, -128, 1, -128, 3, -128, 0, -128, 2, -128, 1, -128, 3,
        -128, 0, -128, 2, -128, 1, -128, 3, -128, 0, -128, 2, -128, 1, -128, 3,
    );
    let weights = |g: usize| {
        // SAFETY: `g < groups`, so bytes `4g..4g + 4` are inside `w`.
        let word = unsafe { w.as_ptr().add(4 * g).cast::<i32>().read_unaligned() };
        _mm256_srai_epi16::<8>(_mm256_shuffle_epi8(_mm256_set1_epi32(word), spread))
    };
    // SAFETY: `g < groups`, so words `8g..8g + 8` are inside `cols`.
    let columns = |g: usize| unsafe { _mm256_loadu_si256(cols.as_ptr().add(8 * g).cast()) };
    let (mut sum0, mut sum1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let mut g = 0;
    while g + 2 <= groups {
        sum0 = _mm256_add_epi32(sum0, _mm256_madd_epi16(columns(g), weights(g)));
        sum1 = _mm256_add_epi32(sum1, _mm256_madd_epi16(columns(g + 1), weights(g + 1)));
        g += 2;
    }
    if g < groups {
        sum0 = _mm256_add_epi32(sum0, _mm256_madd_epi16(columns(g), weights(g)));
    }
    let l = lanes(_mm256_add_epi32(sum0, sum1));
    let mut out = acc;
    for (j, a) in out.iter_mut().enumerate() {
        *a = a.wrapping_add(l[2 * j]).wrapping_add(l[2 * j + 1]);
    }
    out
}

/// `acc_r + sum_i x_i rows[r]_i` over every element (all slices of one length, a multiple of
/// 4): 16 inputs at a time widened to int16 once for all rows, the rest one by one.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dot_rows<const R: usize>(
    x: &[i8],
    rows: [&[i8]; R],
    acc: [i32; R],
) -> [i32; R] {
    let n = rows.iter().fold(x.len(), |n, row| n.min(row.len()));
    // SAFETY: `i + 16 <= n` at every call, so 16 bytes from `i` are inside the slice.
    let load = |s: &[i8], i: usize| unsafe {
        _mm256_cvtepi8_epi16(_mm_loadu_si128(s.as_ptr().add(i).cast::<__m128i>()))
    };
    let mut sums = [_mm256_setzero_si256(); R];
    let mut i = 0;
    while i + 16 <= n {
        let xv = load(x, i);
        for (sum, row) in sums.iter_mut().zip(rows) {
            *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(xv, load(row, i)));
        }
        i += 16;
    }
    let mut out = acc;
    for ((a, sum), row) in out.iter_mut().zip(sums).zip(rows) {
        let total = lanes(sum).iter().fold(0i32, |t, &l| t.wrapping_add(l));
        *a = a
            .wrapping_add(total)
            .wrapping_add(plain_dot(&x[i..n], &row[i..n]));
    }
    out
}

/// `sat_i8(zy + rounding_divide_by_pot((x M + 2^30) >> 31, right))` for four accumulators
/// with one multiplier `M` and shift: [`requantize_lanes`] with both broadcast.
///
/// # Safety
/// The CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn requantize4(acc: [i32; 4], multiplier: i32, right: i32, zy: i32) -> [i8; 4] {
    // SAFETY: `acc` holds 16 bytes; the load has no alignment requirement.
    let x = unsafe { _mm_loadu_si128(acc.as_ptr().cast::<__m128i>()) };
    requantize_lanes(x, _mm_set1_epi32(multiplier), _mm_set1_epi32(right), zy)
}

/// `sat_i8(zy + rounding_divide_by_pot((x_j M_j + 2^30) >> 31, right_j))` for the four lanes
/// of `x`, each with its own multiplier `M_j` and shift `right_j` (in `0..=31`):
/// `FastRequant::apply`, the zero point and the clamp of `kernels::requantize`, in 64-bit
/// lanes for the product (`VPMULDQ`), 32-bit lanes for the rounding division and saturating
/// packs for the clamp. `zy` must be an int8 (the caller checks), so clamping the requantised
/// value to `+-2^16` first cannot change the result and the addition cannot overflow.
#[inline]
#[target_feature(enable = "avx2")]
fn requantize_lanes(x: __m128i, multipliers: __m128i, right: __m128i, zy: i32) -> [i8; 4] {
    let value = fast_apply(x, multipliers, right);
    let bound = 1 << 16;
    let value = _mm_min_epi32(
        _mm_max_epi32(value, _mm_set1_epi32(-bound)),
        _mm_set1_epi32(bound),
    );
    let out = _mm_add_epi32(value, _mm_set1_epi32(zy));
    let bytes = _mm_packs_epi16(_mm_packs_epi32(out, out), _mm_packs_epi32(out, out));
    _mm_cvtsi128_si32(bytes).to_le_bytes().map(|b| b as i8)
}

/// `FastRequant::apply` for the four lanes of `x`, each with its own multiplier and shift
/// `right` (in `0..=31`): `rounding_divide_by_pot((x M + 2^30) >> 31, right)`.
#[inline]
#[target_feature(enable = "avx2")]
fn fast_apply(x: __m128i, multipliers: __m128i, right: __m128i) -> __m128i {
    let product = _mm256_mul_epi32(_mm256_cvtepi32_epi64(x), _mm256_cvtepi32_epi64(multipliers));
    // Bits 31..63 of the rounded product: its low 32 bits after the shift are those of the
    // arithmetic shift, which is all `as i32` keeps.
    let shifted = _mm256_srli_epi64::<31>(_mm256_add_epi64(product, _mm256_set1_epi64x(1 << 30)));
    let lows = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    let high = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(shifted, lows));
    // `quant::rounding_divide_by_pot(high, right)`.
    let exponent = _mm_min_epi32(
        _mm_max_epi32(right, _mm_setzero_si128()),
        _mm_set1_epi32(31),
    );
    let mask = _mm_sub_epi32(
        _mm_sllv_epi32(_mm_set1_epi32(1), exponent),
        _mm_set1_epi32(1),
    );
    let remainder = _mm_and_si128(high, mask);
    let threshold = _mm_add_epi32(_mm_srli_epi32::<1>(mask), _mm_srli_epi32::<31>(high));
    let quotient = _mm_srav_epi32(high, exponent);
    // `cmpgt` is -1 where the remainder rounds up.
    _mm_sub_epi32(quotient, _mm_cmpgt_epi32(remainder, threshold))
}

/// `FastRequant::apply` for the eight lanes of `x`, one multiplier (broadcast in
/// `multiplier`) and shift `right` (in `0..=31`, in the low word of `right`) for all:
/// `rounding_divide_by_pot((x M + 2^30) >> 31, right)`, even and odd lanes' 64-bit products
/// apart (`VPMULDQ`).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn fast_apply8(x: __m256i, multiplier: __m256i, right: __m128i) -> __m256i {
    let round = _mm256_set1_epi64x(1 << 30);
    // Bits 31..63 of the rounded products: their low 32 bits after the shift are those of
    // the arithmetic shift, which is all `as i32` keeps.
    let even = _mm256_srli_epi64::<31>(_mm256_add_epi64(_mm256_mul_epi32(x, multiplier), round));
    let odd = _mm256_srli_epi64::<31>(_mm256_add_epi64(
        _mm256_mul_epi32(_mm256_srli_epi64::<32>(x), multiplier),
        round,
    ));
    let high = _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd));
    // `quant::rounding_divide_by_pot(high, right)`.
    let one = _mm256_set1_epi32(1);
    let mask = _mm256_sub_epi32(_mm256_sll_epi32(one, right), one);
    let remainder = _mm256_and_si256(high, mask);
    let threshold = _mm256_add_epi32(_mm256_srli_epi32::<1>(mask), _mm256_srli_epi32::<31>(high));
    let quotient = _mm256_sra_epi32(high, right);
    // `cmpgt` is -1 where the remainder rounds up.
    _mm256_sub_epi32(quotient, _mm256_cmpgt_epi32(remainder, threshold))
}

/// The int8 bytes of eight int32 lanes, saturated, in the low 8 bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn saturate8(values: __m256i) -> __m128i {
    let words = _mm256_packs_epi32(values, values);
    let bytes = _mm256_packs_epi16(words, words);
    // Dword 0 holds lanes 0-3, dword 4 lanes 4-7.
    let order = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
    _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(bytes, order))
}

/// The leading elements of an int8 add whose three requantisations have the `FastRequant`
/// form ([`super::add_prefix`]'s contract), eight at a time: the operands widened to int32
/// lanes, each term `apply((v - z) << ADD_LEFT_SHIFT)`, the sum's requantisation
/// ([`fast_apply8`]), then the zero point and the clamp (to `+-2^16` first, which cannot change
/// the saturated result, then by saturating packs). Returns the number of elements done (a
/// multiple of 8).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn add_prefix(
    add: &FastAdd,
    lhs: Option<&[i8]>,
    rhs: AddRhs<'_>,
    dst: &mut [i8],
) -> usize {
    let n = dst.len() / 8 * 8;
    let parts = |f: FastRequant| (_mm256_set1_epi32(f.multiplier), _mm_cvtsi32_si128(f.right));
    let (lm, lr) = parts(add.lhs);
    let (rm, rr) = parts(add.rhs);
    let (om, or) = parts(add.output);
    // SAFETY: callers keep `i + 8` within the slice.
    let load = |s: &[i8], i: usize| unsafe {
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(s.as_ptr().add(i).cast::<__m128i>()))
    };
    let term = |v: __m256i, z: i32, m, r| {
        let centred = _mm256_sub_epi32(v, _mm256_set1_epi32(z));
        fast_apply8(_mm256_slli_epi32::<ADD_LEFT_SHIFT>(centred), m, r)
    };
    let constant = match rhs {
        AddRhs::Term(t) => _mm256_set1_epi32(t),
        AddRhs::Each(_) => _mm256_setzero_si256(),
    };
    let bound = 1 << 16;
    let mut i = 0;
    while i < n {
        let a = match lhs {
            Some(lhs) => load(lhs, i),
            None => load(dst, i),
        };
        let l = term(a, add.zero_points.lhs, lm, lr);
        let r = match rhs {
            AddRhs::Each(rhs) => term(load(rhs, i), add.zero_points.rhs, rm, rr),
            AddRhs::Term(_) => constant,
        };
        let value = fast_apply8(_mm256_add_epi32(l, r), om, or);
        let value = _mm256_min_epi32(
            _mm256_max_epi32(value, _mm256_set1_epi32(-bound)),
            _mm256_set1_epi32(bound),
        );
        let out = saturate8(_mm256_add_epi32(
            value,
            _mm256_set1_epi32(add.zero_points.output),
        ));
        // SAFETY: `i + 8 <= dst.len()`; no alignment requirement.
        unsafe { _mm_storel_epi64(dst.as_mut_ptr().add(i).cast(), out) };
        i += 8;
    }
    n
}

/// The leading rows of an int8 linear layer (`kernels::linear::linear_s8`'s arguments: the
/// input zero point is folded into the bias), four at a time: 16 inputs widened to int16
/// once for the four rows (`VPMADDWD`), the four sums reduced into one vector by `VPHADDD`,
/// the bias added and the four channels' requantisations applied in vector lanes
/// ([`requantize_lanes`], each lane with its own multiplier and shift; a group whose
/// requantisations do not all have the `FastRequant` form is requantised in scalar code).
/// Returns the number of rows done: `y.len()` rounded down to a multiple of 4 when `x.len()`
/// is a non-zero multiple of 16 and `zy` an int8, else 0 (the caller computes the rest).
/// Every output is exactly `linear_s8`'s.
///
/// # Safety
/// The CPU must have AVX2; `weights` must hold `x.len() y.len()` values, `bias` `4 y.len()`
/// bytes and `requant` `8 y.len()` (the caller checks).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn linear_rows(
    x: &[i8],
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    zy: i32,
    y: &mut [i8],
) -> usize {
    let n = x.len();
    if n == 0 || !n.is_multiple_of(16) || !(-128..=127).contains(&zy) {
        return 0;
    }
    // SAFETY: `i + 16 <= n` at every call, so 16 bytes from `i` are inside the slice.
    let load = |s: &[i8], i: usize| unsafe {
        _mm256_cvtepi8_epi16(_mm_loadu_si128(s.as_ptr().add(i).cast::<__m128i>()))
    };
    let rows = y.len() / 4 * 4;
    for (r, (w, y)) in weights
        .chunks_exact(4 * n)
        .zip(y.chunks_exact_mut(4))
        .enumerate()
    {
        let mut sums = [_mm256_setzero_si256(); 4];
        let mut i = 0;
        while i < n {
            let xv = load(x, i);
            for (k, sum) in sums.iter_mut().enumerate() {
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(xv, load(&w[k * n..], i)));
            }
            i += 16;
        }
        // Lanes 0-3: rows 0-3's sums over their lanes 0-3, lanes 4-7 over their lanes 4-7.
        let halves = _mm256_hadd_epi32(
            _mm256_hadd_epi32(sums[0], sums[1]),
            _mm256_hadd_epi32(sums[2], sums[3]),
        );
        let totals = _mm_add_epi32(
            _mm256_castsi256_si128(halves),
            _mm256_extracti128_si256::<1>(halves),
        );
        // SAFETY: rows `4r..4r + 4` have 16 bytes of bias and 32 of requantisation (the
        // caller's lengths); the loads have no alignment requirement, and x86-64 is
        // little-endian like the blob.
        let (bias, pairs) = unsafe {
            let at = requant.as_ptr().add(32 * r).cast::<__m128i>();
            (
                _mm_loadu_si128(bias.as_ptr().add(16 * r).cast::<__m128i>()),
                (_mm_loadu_si128(at), _mm_loadu_si128(at.add(1))),
            )
        };
        let acc = _mm_add_epi32(totals, bias);
        // Words (M0, s0, M1, s1) and (M2, s2, M3, s3) into (M0..M3) and (s0..s3).
        let (low, high) = (_mm_castsi128_ps(pairs.0), _mm_castsi128_ps(pairs.1));
        let multipliers = _mm_castps_si128(_mm_shuffle_ps::<0b10_00_10_00>(low, high));
        let shifts = _mm_castps_si128(_mm_shuffle_ps::<0b11_01_11_01>(low, high));
        let slow = _mm_or_si128(
            _mm_cmpgt_epi32(shifts, _mm_setzero_si128()),
            _mm_cmpeq_epi32(multipliers, _mm_set1_epi32(i32::MIN)),
        );
        if _mm_movemask_epi8(slow) == 0 {
            // `FastRequant`'s `right`: `-max(shift, MIN_SHIFT)`.
            let right = _mm_sub_epi32(
                _mm_setzero_si128(),
                _mm_max_epi32(shifts, _mm_set1_epi32(MIN_SHIFT)),
            );
            y.copy_from_slice(&requantize_lanes(acc, multipliers, right, zy));
        } else {
            let mut lanes = [0i32; 4];
            // SAFETY: `lanes` holds 16 bytes; the store has no alignment requirement.
            unsafe { _mm_storeu_si128(lanes.as_mut_ptr().cast(), acc) };
            for (k, (y, acc)) in y.iter_mut().zip(lanes).enumerate() {
                let [q] = requantize([acc], requant_at(requant, 4 * r + k), zy);
                *y = q;
            }
        }
    }
    rows
}

/// The requantisation of [`conv_block_avx2`]: [`requantize4`] when the
/// pair has the fast form and the zero point is an int8, else the scalar definition.
#[inline]
#[target_feature(enable = "avx2")]
fn requantize_block(acc: [i32; 4], requant: Requant, zy: i32) -> [i8; 4] {
    match FastRequant::new(requant) {
        // SAFETY: this function runs only where the CPU has AVX2.
        Some(fast) if (-128..=127).contains(&zy) => unsafe {
            requantize4(acc, fast.multiplier, fast.right, zy)
        },
        _ => requantize(acc, requant, zy),
    }
}

/// `conv2d::block_outputs` with [`dot_1x4`] and [`requantize_block`] inlined.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn conv_block_avx2(block: &Block<'_>, cols: &[u32], y: &mut [i8]) {
    block_outputs(
        block,
        y,
        // SAFETY: as this function's; group `g` starts at word `8g`.
        |w, g, acc| unsafe { dot_1x4(w, &cols[8 * g..], acc) },
        |acc, requant, zy| requantize_block(acc, requant, zy),
    );
}

/// `(sum q, sum q^2)` of int8 values, exact: 32 values at a time widened to int16, `VPMADDWD`
/// against ones and against themselves into int32 lanes (at most `2 x 2^15` per lane and
/// block), moved into the `i64` totals every 2^14 blocks (`super::moments_in_blocks`).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn moments(values: &[i8]) -> (i64, i64) {
    let ones = _mm256_set1_epi16(1);
    let total = |v: __m256i| lanes(v).iter().map(|&l| i64::from(l)).sum::<i64>();
    super::moments_in_blocks(values, 32, 1 << 14, |run| {
        let (mut s, mut q) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for block in run.chunks_exact(32) {
            // SAFETY: `block` holds 32 bytes; no alignment requirement.
            let v = unsafe { _mm256_loadu_si256(block.as_ptr().cast()) };
            for half in [_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)] {
                let wide = _mm256_cvtepi8_epi16(half);
                s = _mm256_add_epi32(s, _mm256_madd_epi16(wide, ones));
                q = _mm256_add_epi32(q, _mm256_madd_epi16(wide, wide));
            }
        }
        (total(s), total(q))
    })
}

/// The leading elements of `dst = round_to_i8(k q + b, zy)` for `q` from `src` (or `dst` in
/// place), eight at a time: `k q` and `+ b` in `f32` lanes as the scalar code computes them,
/// clamped to `+-2^16` (which cannot change the saturated result), then `round_to_i32`'s
/// truncation and step away from zero, the zero point and saturating packs. `k` and `b` must
/// be finite (so `k q + b` is never NaN) and `zy` in `-2^15..=2^15`; the caller checks.
/// Returns the number done (a multiple of 8).
///
/// # Safety
/// The CPU must have AVX2; `src`, if any, as long as `dst`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn affine_prefix(
    k: f32,
    b: f32,
    zy: i32,
    src: Option<&[i8]>,
    dst: &mut [i8],
) -> usize {
    let n = dst.len() / 8 * 8;
    let (kv, bv, zv) = (_mm256_set1_ps(k), _mm256_set1_ps(b), _mm256_set1_epi32(zy));
    let bound = 65536.0f32;
    let (low, high) = (_mm256_set1_ps(-bound), _mm256_set1_ps(bound));
    let (half, minus_half) = (_mm256_set1_ps(0.5), _mm256_set1_ps(-0.5));
    let mut i = 0;
    while i < n {
        let from = match src {
            Some(src) => src.as_ptr(),
            None => dst.as_ptr(),
        };
        // SAFETY: `i + 8 <= n <= dst.len()`, and `src` as long as `dst`.
        let q = unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(from.add(i).cast())) };
        let v = _mm256_add_ps(_mm256_mul_ps(kv, _mm256_cvtepi32_ps(q)), bv);
        let v = _mm256_min_ps(_mm256_max_ps(v, low), high);
        let t = _mm256_cvttps_epi32(v);
        let fraction = _mm256_sub_ps(v, _mm256_cvtepi32_ps(t));
        // The comparisons' masks are -1 where true: up subtracts, down adds.
        let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(fraction, half));
        let down = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(fraction, minus_half));
        let rounded = _mm256_add_epi32(_mm256_sub_epi32(t, up), down);
        let out = saturate8(_mm256_add_epi32(rounded, zv));
        // SAFETY: as above; no alignment requirement.
        unsafe { _mm_storel_epi64(dst.as_mut_ptr().add(i).cast(), out) };
        i += 8;
    }
    n
}

/// The leading elements of `dst = lut[q + 128]` for `q` from `src` (or `dst` in place), 32 at
/// a time: the table as sixteen 16-byte rows; each byte's low four index bits pick within
/// every row (`VPSHUFB`), its high four the row (a compare and a blend per row). Returns the
/// number done (a multiple of 32).
///
/// # Safety
/// The CPU must have AVX2; `src`, if any, as long as `dst`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn lut_prefix(lut: &[i8; 256], src: Option<&[i8]>, dst: &mut [i8]) -> usize {
    let n = dst.len() / 32 * 32;
    let mut rows = [_mm256_setzero_si256(); 16];
    for (r, row) in rows.iter_mut().enumerate() {
        // SAFETY: bytes `16r..16r + 16` of the table.
        *row = _mm256_broadcastsi128_si256(unsafe {
            _mm_loadu_si128(lut.as_ptr().add(16 * r).cast())
        });
    }
    let (flip, nibble) = (_mm256_set1_epi8(i8::MIN), _mm256_set1_epi8(0x0F));
    let mut i = 0;
    while i < n {
        let from = match src {
            Some(src) => src.as_ptr(),
            None => dst.as_ptr(),
        };
        // SAFETY: `i + 32 <= n <= dst.len()`, and `src` as long as `dst`.
        let index = _mm256_xor_si256(unsafe { _mm256_loadu_si256(from.add(i).cast()) }, flip);
        let low = _mm256_and_si256(index, nibble);
        let high = _mm256_and_si256(_mm256_srli_epi16::<4>(index), nibble);
        let mut out = _mm256_setzero_si256();
        for (r, &row) in rows.iter().enumerate() {
            let mine = _mm256_cmpeq_epi8(high, _mm256_set1_epi8(r as i8));
            out = _mm256_blendv_epi8(out, _mm256_shuffle_epi8(row, low), mine);
        }
        // SAFETY: `i + 32 <= dst.len()`; no alignment requirement.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), out) };
        i += 32;
    }
    n
}
