//! The x86-64 paths. AVX2: int8 widened to int16, `VPMADDWD` multiplies 16 pairs and adds
//! neighbours into 8 int32 lanes, `VPADDD` accumulates (wrapping, like the portable path).
//! VNNI ([`avx_vnni`], [`avx512_vnni`]): `VPDPBUSD` on columns packed as unsigned int8, the
//! same kernels in either encoding of the instruction.

use core::arch::x86_64::*;

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

/// The leading elements of an int8 add whose three requantisations have the `FastRequant`
/// form ([`super::add_prefix`]'s contract), four at a time: the operands widened to int32
/// lanes, each term `apply((v - z) << ADD_LEFT_SHIFT)`, the sum's requantisation
/// ([`fast_apply`]), then the zero point and the clamp as in [`requantize_lanes`]. Returns
/// the number of elements done (a multiple of 4).
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
    let n = dst.len() / 4 * 4;
    let parts = |f: FastRequant| (_mm_set1_epi32(f.multiplier), _mm_set1_epi32(f.right));
    let (lm, lr) = parts(add.lhs);
    let (rm, rr) = parts(add.rhs);
    let (om, or) = parts(add.output);
    // SAFETY: callers keep `i + 4` within the slice.
    let load = |s: &[i8], i: usize| unsafe {
        _mm_cvtepi8_epi32(_mm_cvtsi32_si128(
            s.as_ptr().add(i).cast::<i32>().read_unaligned(),
        ))
    };
    let term = |v: __m128i, z: i32, m, r| {
        let centred = _mm_sub_epi32(v, _mm_set1_epi32(z));
        fast_apply(_mm_slli_epi32::<ADD_LEFT_SHIFT>(centred), m, r)
    };
    let constant = match rhs {
        AddRhs::Term(t) => _mm_set1_epi32(t),
        AddRhs::Each(_) => _mm_setzero_si128(),
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
        let value = fast_apply(_mm_add_epi32(l, r), om, or);
        let value = _mm_min_epi32(
            _mm_max_epi32(value, _mm_set1_epi32(-bound)),
            _mm_set1_epi32(bound),
        );
        let out = _mm_add_epi32(value, _mm_set1_epi32(add.zero_points.output));
        let bytes = _mm_packs_epi16(_mm_packs_epi32(out, out), _mm_packs_epi32(out, out));
        // SAFETY: `i + 4 <= dst.len()`.
        unsafe {
            dst.as_mut_ptr()
                .add(i)
                .cast::<i32>()
                .write_unaligned(_mm_cvtsi128_si32(bytes))
        };
        i += 4;
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

/// Packs the staged taps into the unsigned int8 layout of [`avx_vnni::dot_1x4`], in place: group
/// `g` becomes words `4g..4g + 4`, word `4g + j` holding position `j`'s values at
/// `k = 4g..4g + 4` plus 128 (a 4x4 byte transpose by `VPSHUFB`, then the sign bit flipped),
/// the unsigned operand `VPDPBUSD` needs. Each group is written below the taps still to be
/// read.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_taps_u8(cols: &mut [u32]) {
    let groups = cols.len() / 8;
    let transpose = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let flip = _mm_set1_epi8(i8::MIN);
    let base = cols.as_mut_ptr();
    for g in 0..groups {
        // SAFETY: words `4 groups + 4g..+4` and `4g..4g + 4` are inside `cols` (`8 groups`
        // words); the read precedes the write, which ends at or below the next group's taps.
        unsafe {
            let taps = _mm_loadu_si128(base.add(4 * groups + 4 * g).cast::<__m128i>());
            let packed = _mm_xor_si128(_mm_shuffle_epi8(taps, transpose), flip);
            _mm_storeu_si128(base.add(4 * g).cast::<__m128i>(), packed);
        }
    }
}

/// The requantisation of [`conv_block_avx2`] and the VNNI blocks: [`requantize4`] when the
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

/// Transposes each group of staged taps in place into the unsigned int8 layout of
/// [`avx_vnni::dot_1x4`] (word `4g + j`: position `j`'s values at `k = 4g..4g + 4`, plus 128):
/// `taps` holds the staged words (word `k`: the four positions at `k`), a multiple of 4.
///
/// # Safety
/// The CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose_taps_u8(taps: &mut [u32]) {
    let transpose = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let flip = _mm_set1_epi8(i8::MIN);
    for group in taps.chunks_exact_mut(4) {
        // SAFETY: `group` holds 16 bytes, read before they are written.
        unsafe {
            let at = group.as_mut_ptr().cast::<__m128i>();
            let packed = _mm_xor_si128(_mm_shuffle_epi8(_mm_loadu_si128(at), transpose), flip);
            _mm_storeu_si128(at, packed);
        }
    }
}

/// [`requantize_block`] for eight accumulators of one channel (one multiplier and shift).
#[inline]
#[target_feature(enable = "avx2")]
fn requantize8(acc: [i32; 8], requant: Requant, zy: i32) -> [i8; 8] {
    let (low, high) = (
        [acc[0], acc[1], acc[2], acc[3]],
        [acc[4], acc[5], acc[6], acc[7]],
    );
    let (low, high) = (
        requantize_block(low, requant, zy),
        requantize_block(high, requant, zy),
    );
    [
        low[0], low[1], low[2], low[3], high[0], high[1], high[2], high[3],
    ]
}

/// The VNNI kernels for one encoding of `VPDPBUSD` on 256-bit vectors, in a module of their
/// own: every function enables the encoding's instruction set (with AVX2), so that the
/// instruction and the AVX2 ones around it are inlined into the loops.
macro_rules! vnni_kernels {
    ($(#[$doc:meta])* $module:ident, $features:literal, $dpbusd:ident) => {
        $(#[$doc])*
        pub(super) mod $module {
            use core::arch::x86_64::*;

            use super::{lanes, requantize8, requantize_block, transpose_taps_u8};
            use crate::kernels::conv2d::{block_outputs, Block};

            /// `acc_j + sum_k w[k] c_j[k]` on the layout of [`super::pack_taps_u8`] (`u_j[k] =
            /// c_j[k] + 128`): two groups per `VPDPBUSD` (lanes 0-3 the four positions at group
            /// `g`, lanes 4-7 at `g + 1`, each lane summing four products `u w`), and a second
            /// `VPDPBUSD` of ones against the same weights sums them, so that `sum w c = sum w u -
            /// 128 sum w` exactly (wrapping, like every path).
            ///
            /// # Safety
            /// The CPU must have the instructions this module enables.
            #[inline]
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn dot_1x4(
                w: &[i8],
                cols: &[u32],
                acc: [i32; 4],
            ) -> [i32; 4] {
                let groups = (w.len() / 4).min(cols.len() / 4);
                let pairs = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
                let ones = _mm256_set1_epi8(1);
                // Groups `g` and `g + 1`: their weights, each broadcast over its four lanes, and
                // columns.
                let operands = |g: usize| {
                    // SAFETY: callers keep `g + 2 <= groups`: bytes `4g..4g + 8` of `w` and words
                    // `4g..4g + 8` of `cols` are inside the slices.
                    let (w8, c) = unsafe {
                        (
                            _mm_loadl_epi64(w.as_ptr().add(4 * g).cast::<__m128i>()),
                            _mm256_loadu_si256(cols.as_ptr().add(4 * g).cast::<__m256i>()),
                        )
                    };
                    (
                        _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(w8), pairs),
                        c,
                    )
                };
                // Two independent chains of each sum (the instruction's latency, not its
                // throughput, bounds one chain).
                let zero = _mm256_setzero_si256();
                let (mut sum0, mut sum1, mut weights0, mut weights1) = (zero, zero, zero, zero);
                let mut g = 0;
                while g + 4 <= groups {
                    let (w0, c0) = operands(g);
                    let (w1, c1) = operands(g + 2);
                    sum0 = $dpbusd(sum0, c0, w0);
                    sum1 = $dpbusd(sum1, c1, w1);
                    weights0 = $dpbusd(weights0, ones, w0);
                    weights1 = $dpbusd(weights1, ones, w1);
                    g += 4;
                }
                if g + 2 <= groups {
                    let (w0, c0) = operands(g);
                    sum0 = $dpbusd(sum0, c0, w0);
                    weights0 = $dpbusd(weights0, ones, w0);
                    g += 2;
                }
                if g < groups {
                    // The last group alone, in lanes 0-3 (lanes 4-7 get zero weights). SAFETY: `g <
                    // groups`: bytes `4g..4g + 4` of `w` and words `4g..4g + 4` of `cols`.
                    let (word, c) = unsafe {
                        (
                            w.as_ptr().add(4 * g).cast::<i32>().read_unaligned(),
                            _mm_loadu_si128(cols.as_ptr().add(4 * g).cast::<__m128i>()),
                        )
                    };
                    let wv = _mm256_setr_epi32(word, word, word, word, 0, 0, 0, 0);
                    let c = _mm256_castsi128_si256(c);
                    sum1 = $dpbusd(sum1, c, wv);
                    weights1 = $dpbusd(weights1, ones, wv);
                }
                let l = lanes(_mm256_add_epi32(sum0, sum1));
                let s = lanes(_mm256_add_epi32(weights0, weights1));
                let correction = s[0].wrapping_add(s[4]).wrapping_mul(128);
                let mut out = acc;
                for (j, a) in out.iter_mut().enumerate() {
                    *a = a
                        .wrapping_add(l[j])
                        .wrapping_add(l[j + 4])
                        .wrapping_sub(correction);
                }
                out
            }

            /// `conv2d::block_outputs` with [`dot_1x4`] and [`requantize_block`] inlined.
            ///
            /// # Safety
            /// The CPU must have the instructions this module enables.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn conv_block(
                block: &Block<'_>,
                cols: &[u32],
                y: &mut [i8],
            ) {
                block_outputs(
                    block,
                    y,
                    // SAFETY: as this function's; group `g` starts at word `4g`.
                    |w, g, acc| unsafe { dot_1x4(w, &cols[4 * g..], acc) },
                    |acc, requant, zy| requantize_block(acc, requant, zy),
                );
            }

            /// [`dot_1x4`] for two runs of four positions, `first` and `second` packed alike: each
            /// pair of groups' weights is loaded and spread once for the eight positions, and their
            /// sum (the correction for the unsigned columns) computed once.
            ///
            /// # Safety
            /// The CPU must have the instructions this module enables.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn dot_2x4(w: &[i8], first: &[u32], second: &[u32], acc: [i32; 8]) -> [i32; 8] {
                let groups = (w.len() / 4).min(first.len() / 4).min(second.len() / 4);
                let pairs = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
                let ones = _mm256_set1_epi8(1);
                // SAFETY (the three closures): callers keep `g + 2 <= groups`, so bytes `4g..4g +
                // 8` of `w` and words `4g..4g + 8` of each half are inside the slices.
                let weights = |g: usize| {
                    let w8 = unsafe { _mm_loadl_epi64(w.as_ptr().add(4 * g).cast::<__m128i>()) };
                    _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(w8), pairs)
                };
                let load = |cols: &[u32], g: usize| unsafe {
                    _mm256_loadu_si256(cols.as_ptr().add(4 * g).cast::<__m256i>())
                };
                let zero = _mm256_setzero_si256();
                let (mut a0, mut a1, mut b0, mut b1) = (zero, zero, zero, zero);
                let (mut s0, mut s1) = (zero, zero);
                let mut g = 0;
                while g + 4 <= groups {
                    let (w0, w1) = (weights(g), weights(g + 2));
                    a0 = $dpbusd(a0, load(first, g), w0);
                    b0 = $dpbusd(b0, load(second, g), w0);
                    s0 = $dpbusd(s0, ones, w0);
                    a1 = $dpbusd(a1, load(first, g + 2), w1);
                    b1 = $dpbusd(b1, load(second, g + 2), w1);
                    s1 = $dpbusd(s1, ones, w1);
                    g += 4;
                }
                if g + 2 <= groups {
                    let w0 = weights(g);
                    a0 = $dpbusd(a0, load(first, g), w0);
                    b0 = $dpbusd(b0, load(second, g), w0);
                    s0 = $dpbusd(s0, ones, w0);
                    g += 2;
                }
                if g < groups {
                    // The last group alone, in lanes 0-3 (lanes 4-7 get zero weights).
                    // SAFETY: `g < groups`: 4 bytes of `w` and 4 words of each half from `4g`.
                    let (word, c0, c1) = unsafe {
                        (
                            w.as_ptr().add(4 * g).cast::<i32>().read_unaligned(),
                            _mm_loadu_si128(first.as_ptr().add(4 * g).cast::<__m128i>()),
                            _mm_loadu_si128(second.as_ptr().add(4 * g).cast::<__m128i>()),
                        )
                    };
                    let wv = _mm256_setr_epi32(word, word, word, word, 0, 0, 0, 0);
                    a1 = $dpbusd(a1, _mm256_castsi128_si256(c0), wv);
                    b1 = $dpbusd(b1, _mm256_castsi128_si256(c1), wv);
                    s1 = $dpbusd(s1, ones, wv);
                }
                let (a, b) = (
                    lanes(_mm256_add_epi32(a0, a1)),
                    lanes(_mm256_add_epi32(b0, b1)),
                );
                let s = lanes(_mm256_add_epi32(s0, s1));
                let correction = s[0].wrapping_add(s[4]).wrapping_mul(128);
                let mut out = acc;
                for (j, o) in out.iter_mut().enumerate() {
                    let l = if j < 4 { &a } else { &b };
                    let j = j % 4;
                    *o = o
                        .wrapping_add(l[j])
                        .wrapping_add(l[j + 4])
                        .wrapping_sub(correction);
                }
                out
            }

            /// `conv2d::block_outputs` for eight positions, two runs of four staged in `first` and
            /// `second`: both halves transposed in place, then [`dot_2x4`] and the requantisation
            /// inlined.
            ///
            /// # Safety
            /// The CPU must have the instructions this module enables.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn conv_block_pair(
                block: &Block<'_>,
                first: &mut [u32],
                second: &mut [u32],
                y: &mut [i8],
            ) {
                // SAFETY (all three calls): as this function's.
                unsafe {
                    transpose_taps_u8(first);
                    transpose_taps_u8(second);
                }
                let (first, second) = (&*first, &*second);
                block_outputs(
                    block,
                    y,
                    |w, g, acc| unsafe { dot_2x4(w, &first[4 * g..], &second[4 * g..], acc) },
                    |acc, requant, zy| requantize8(acc, requant, zy),
                );
            }
        }
    };
}

vnni_kernels!(
    /// `VPDPBUSD` in AVX-VNNI's VEX encoding (Intel's Alder Lake and Sapphire Rapids, AMD's
    /// Zen 5).
    avx_vnni,
    "avx2,avxvnni",
    _mm256_dpbusd_avx_epi32
);

vnni_kernels!(
    /// `VPDPBUSD` in AVX-512 VNNI's EVEX encoding on 256-bit vectors (AVX512VL: Intel's Ice
    /// Lake and later Xeons, AMD's Zen 4 and Zen 5).
    avx512_vnni,
    "avx2,avx512vnni,avx512vl",
    _mm256_dpbusd_epi32
);
