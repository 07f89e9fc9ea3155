//! int8 convolution on the VNNI paths as a register-blocked matrix product read straight from
//! the channel-blocked copy of the input (`kernels::dot::blocked`: bytes plus 128, the
//! unsigned operand of `VPDPBUSD`, the bias corrected by `-128 sum w`).
//!
//! **The product.** A tile of up to four output channels by 16 (or 8) positions of one output
//! row keeps its sums in eight (four) vectors, positions in lanes: per channel group and tap,
//! two column loads, one broadcast weight word per channel and two `VPDPBUSD`s per channel.
//! The sums are requantised in the lanes (`FastRequant`'s form; anything else in scalar code)
//! and stored as a row segment. Positions past the row's end are computed on the words that
//! follow and dropped; a store may run into the next row of the same channel, which is stored
//! later. Every sum is the exact integer `bias + sum x w` (wrapping like every path), so the
//! bytes are those of every other path.

use core::arch::x86_64::*;
use std::vec::Vec;

use super::super::blocked::{channel_rows, with_workspace, Blocked, Packed};
use super::fast_apply8;
use crate::kernels::conv2d::ConvGeometry;
use crate::kernels::{requant_at, requantize, FastRequant};

/// Copies `x` (`in_channels x H x W`) into `buf` as [`Blocked`] lays it out, every byte plus
/// 128: eight pixels of a row at a time (four channel rows interleaved by `PUNPCKLBW` /
/// `PUNPCKLWD`), then four, the rest one by one ([`Blocked::copy_pixels`]).
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
unsafe fn copy_blocked(g: &ConvGeometry, b: &Blocked, x: &[i8], zx: i8, buf: &mut Vec<u32>) {
    b.fill(zx, 0x80, buf);
    let (h, w, p, s) = (g.in_height, g.in_width, g.padding, g.stride);
    let flip = _mm_set1_epi8(i8::MIN);
    let padding = _mm_set1_epi8(zx);
    let evens_odds = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    for group in 0..b.groups {
        for iy in 0..h {
            let (ry, row) = ((iy + p) % s, (iy + p) / s);
            let rows = channel_rows(g, x, group, iy);
            let mut ix = 0;
            while ix + 8 <= w {
                let load = |j: usize| match rows[j] {
                    // SAFETY: `ix + 8 <= w`, the row's length.
                    Some(r) => unsafe { _mm_loadl_epi64(r.as_ptr().add(ix).cast()) },
                    None => padding,
                };
                let low = _mm_unpacklo_epi8(load(0), load(1));
                let high = _mm_unpacklo_epi8(load(2), load(3));
                let first = _mm_xor_si128(_mm_unpacklo_epi16(low, high), flip);
                let second = _mm_xor_si128(_mm_unpackhi_epi16(low, high), flip);
                let column = ix + p;
                if s == 1 {
                    let at = b.at(group, 0, 0, row, column);
                    let dst = &mut buf[at..at + 8];
                    // SAFETY: `dst` holds 8 words; the stores have no alignment requirement.
                    unsafe {
                        _mm_storeu_si128(dst.as_mut_ptr().cast(), first);
                        _mm_storeu_si128(dst.as_mut_ptr().add(4).cast(), second);
                    }
                } else {
                    // Words of even and odd offset go to the planes of their column parity.
                    let split =
                        _mm256_permutevar8x32_epi32(_mm256_set_m128i(second, first), evens_odds);
                    let even = b.at(group, ry, column % 2, row, column / 2);
                    let odd = b.at(group, ry, (column + 1) % 2, row, column.div_ceil(2));
                    let even = &mut buf[even..even + 4];
                    // SAFETY: `even` holds 4 words; no alignment requirement.
                    unsafe {
                        _mm_storeu_si128(even.as_mut_ptr().cast(), _mm256_castsi256_si128(split))
                    };
                    let odd = &mut buf[odd..odd + 4];
                    // SAFETY: as above.
                    unsafe {
                        _mm_storeu_si128(
                            odd.as_mut_ptr().cast(),
                            _mm256_extracti128_si256::<1>(split),
                        )
                    };
                }
                ix += 8;
            }
            if ix + 4 <= w {
                let load = |j: usize| match rows[j] {
                    // SAFETY: `ix + 4 <= w`, the row's length; no alignment requirement.
                    Some(r) => unsafe {
                        _mm_cvtsi32_si128(r.as_ptr().add(ix).cast::<i32>().read_unaligned())
                    },
                    None => padding,
                };
                let low = _mm_unpacklo_epi8(load(0), load(1));
                let high = _mm_unpacklo_epi8(load(2), load(3));
                let words = _mm_xor_si128(_mm_unpacklo_epi16(low, high), flip);
                let column = ix + p;
                if s == 1 {
                    let at = b.at(group, 0, 0, row, column);
                    let dst = &mut buf[at..at + 4];
                    // SAFETY: `dst` holds 4 words; no alignment requirement.
                    unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), words) };
                } else {
                    // Words 0 and 2, then 1 and 3, to the planes of their column parity.
                    let split = _mm_shuffle_epi32::<0b11_01_10_00>(words);
                    let even = b.at(group, ry, column % 2, row, column / 2);
                    let dst = &mut buf[even..even + 2];
                    // SAFETY: `dst` holds 2 words; no alignment requirement.
                    unsafe { _mm_storel_epi64(dst.as_mut_ptr().cast(), split) };
                    let odd = b.at(group, ry, (column + 1) % 2, row, column.div_ceil(2));
                    let dst = &mut buf[odd..odd + 2];
                    // SAFETY: as above.
                    unsafe {
                        _mm_storel_epi64(dst.as_mut_ptr().cast(), _mm_unpackhi_epi64(split, split))
                    };
                }
            }
        }
    }
    b.copy_pixels(g, x, zx, 0x80, w / 4 * 4, buf);
}

/// `sat_i8(zy + FastRequant::apply(x))` for the eight lanes of `x` before the saturation, one
/// multiplier and shift `right` (in `0..=31`) for all, `zy` an int8: clamped to `+-2^16`
/// first, which cannot change the saturated result.
#[inline]
#[target_feature(enable = "avx2")]
fn requantize_vector(x: __m256i, multiplier: __m256i, right: __m128i, zy: __m256i) -> __m256i {
    let value = fast_apply8(x, multiplier, right);
    let bound = 1 << 16;
    let value = _mm256_min_epi32(
        _mm256_max_epi32(value, _mm256_set1_epi32(-bound)),
        _mm256_set1_epi32(bound),
    );
    _mm256_add_epi32(value, zy)
}

/// The int8 bytes of `V` vectors of requantised lanes (in `-2^16 - 128..=2^16 + 127`),
/// saturated: `8 V` bytes from the start of the result.
#[inline]
#[target_feature(enable = "avx2")]
fn pack_bytes<const V: usize>(values: [__m256i; V]) -> __m128i {
    let (a, b) = (values[0], if V > 1 { values[1] } else { values[0] });
    // Per 128-bit half: a's four lanes, b's four (int16), then as bytes twice over; dwords 0,
    // 4, 1, 5 are a's lanes 0-3, a's 4-7, b's 0-3, b's 4-7.
    let words = _mm256_packs_epi32(a, b);
    let bytes = _mm256_packs_epi16(words, words);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5);
    _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(bytes, order))
}

/// Stores the first `n` (at most 16) bytes of `bytes` at `dst[..n]`, writing all 16 where
/// `dst` holds them.
#[inline]
#[target_feature(enable = "avx2")]
fn store_bytes(bytes: __m128i, dst: &mut [i8], n: usize) {
    if dst.len() >= 16 {
        // SAFETY: `dst` holds at least 16 bytes; no alignment requirement.
        unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), bytes) };
        return;
    }
    let mut all = [0i8; 16];
    // SAFETY: `all` holds 16 bytes.
    unsafe { _mm_storeu_si128(all.as_mut_ptr().cast(), bytes) };
    let n = n.min(16).min(dst.len());
    dst[..n].copy_from_slice(&all[..n]);
}

/// The per-channel requantisation of a call, in the form the tiles use: `Some((multiplier,
/// right))` in `FastRequant`'s form with an int8 zero point, else `None` (scalar).
type ChannelRequant = Option<(__m256i, __m128i)>;

/// What every tile of one call reads.
struct Tiles<'a> {
    copy: &'a [u32],
    offsets: &'a [usize],
    /// The largest offset: a tile of `8 V` positions from word `q` reads below
    /// `q + reach + 8 V`.
    reach: usize,
    packed: &'a Packed,
    /// Each channel's corrected bias (`Workspace::correct`).
    corrected: &'a [i32],
    requants: &'a [ChannelRequant],
    requant: &'a [u8],
    zy: i32,
    b: Blocked,
}

/// The convolution's outputs, as the module docs describe, on `VPDPBUSD` in the encoding that
/// `$dpbusd` and `$features` name. Returns `false` (nothing written) for geometries the copy
/// does not take.
macro_rules! blocked_conv {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dpbusd:ident, wide: $wide:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU must have the instructions `$features` names; the lengths must be those
        /// `conv2d_s8` checks.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(in super::super) unsafe fn $name(
            g: &ConvGeometry,
            x: &[i8],
            zx: i8,
            weights: &[i8],
            bias: &[u8],
            requant: &[u8],
            zy: i32,
            y: &mut [i8],
        ) -> bool {
            let Some(b) = Blocked::new(g, 1) else {
                return false;
            };

            /// A tile of `M` channels from `oc` by `8 V` positions from word `q` of the
            /// copy, stored at output row `oy`, column `ox` (`n` of its positions valid).
            #[inline]
            #[target_feature(enable = $features)]
            fn tile<const M: usize, const V: usize>(
                t: &Tiles<'_>,
                (oc, q, oy, ox, n): (usize, usize, usize, usize, usize),
                y: &mut [i8],
            ) {
                let steps = t.offsets.len();
                let words = &t.packed.words[oc * steps..(oc + 4) * steps];
                let mut acc = [[_mm256_setzero_si256(); V]; M];
                for (m, acc) in acc.iter_mut().enumerate() {
                    *acc = [_mm256_set1_epi32(t.corrected[oc + m]); V];
                }
                // Every word this tile reads lies inside the copy (the slack), checked once.
                assert!(q + t.reach + 8 * V <= t.copy.len() && words.len() == 4 * steps);
                let base = t.copy.as_ptr().wrapping_add(q);
                for (step, &offset) in t.offsets.iter().enumerate() {
                    let at = base.wrapping_add(offset);
                    let mut columns = [_mm256_setzero_si256(); V];
                    for (v, c) in columns.iter_mut().enumerate() {
                        // SAFETY: inside the copy (the assertion above).
                        *c = unsafe { _mm256_loadu_si256(at.add(8 * v).cast()) };
                    }
                    for (m, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: `4 step + m < words.len()` (the assertion above).
                        let word = unsafe { *words.get_unchecked(4 * step + m) };
                        let w = _mm256_set1_epi32(word as i32);
                        for (a, &c) in acc.iter_mut().zip(&columns) {
                            *a = $dpbusd(*a, c, w);
                        }
                    }
                }
                let plane = t.b.out_h * t.b.out_w;
                for (m, acc) in acc.iter().enumerate() {
                    let channel = oc + m;
                    let start = channel * plane + oy * t.b.out_w + ox;
                    let dst = &mut y[start..(channel + 1) * plane];
                    match t.requants[channel] {
                        Some((multiplier, right)) => {
                            let zy = _mm256_set1_epi32(t.zy);
                            let mut values = [_mm256_setzero_si256(); V];
                            for (value, &a) in values.iter_mut().zip(acc) {
                                *value = requantize_vector(a, multiplier, right, zy);
                            }
                            // A whole store stays inside this channel's plane: later rows,
                            // stored later, only.
                            store_bytes(pack_bytes(values), dst, n);
                        }
                        None => {
                            let mut lanes = [0i32; 16];
                            for (v, &a) in acc.iter().enumerate() {
                                // SAFETY: `lanes` holds `8 V <= 16` words from `8 v`.
                                unsafe {
                                    _mm256_storeu_si256(lanes.as_mut_ptr().add(8 * v).cast(), a)
                                };
                            }
                            let out = requantize(lanes, requant_at(t.requant, channel), t.zy);
                            let n = n.min(dst.len());
                            dst[..n].copy_from_slice(&out[..n]);
                        }
                    }
                }
            }

            with_workspace(|workspace| {
                let index = workspace.pack(g, weights);
                workspace.correct(index, bias, 0x80);
                // SAFETY: this function's CPU features include AVX2.
                unsafe { copy_blocked(g, &b, x, zx, &mut workspace.copy) };
                b.offsets(&mut workspace.offsets);
                let requants: Vec<ChannelRequant> = (0..g.out_channels)
                    .map(|oc| {
                        FastRequant::new(requant_at(requant, oc))
                            .filter(|_| (-128..=127).contains(&zy))
                            .map(|f| {
                                (
                                    _mm256_set1_epi32(f.multiplier),
                                    _mm_cvtsi32_si128(f.right.clamp(0, 31)),
                                )
                            })
                    })
                    .collect();
                let t = Tiles {
                    copy: &workspace.copy,
                    offsets: &workspace.offsets,
                    reach: workspace.offsets.iter().copied().max().unwrap_or(0),
                    packed: workspace.packed(index),
                    corrected: &workspace.corrected,
                    requants: &requants,
                    requant,
                    zy,
                    b,
                };
                let mut oc = 0;
                while oc < g.out_channels {
                    let m = (g.out_channels - oc).min(4);
                    for oy in 0..b.out_h {
                        let mut ox = 0;
                        while ox < b.out_w {
                            let left = b.out_w - ox;
                            let n = left.min(if $wide { 32 } else { 16 });
                            let at = (oc, oy * b.wq + ox, oy, ox, n);
                            if $wide && n > 8 {
                                // SAFETY: wide only in the AVX-512 function, whose features
                                // include `tile512`'s.
                                #[allow(unused_unsafe)]
                                unsafe {
                                    match (m, n > 16) {
                                        (4, true) => tile512::<4, 2>(&t, at, y),
                                        (3, true) => tile512::<3, 2>(&t, at, y),
                                        (2, true) => tile512::<2, 2>(&t, at, y),
                                        (_, true) => tile512::<1, 2>(&t, at, y),
                                        (4, false) => tile512::<4, 1>(&t, at, y),
                                        (3, false) => tile512::<3, 1>(&t, at, y),
                                        (2, false) => tile512::<2, 1>(&t, at, y),
                                        (_, false) => tile512::<1, 1>(&t, at, y),
                                    }
                                }
                                ox += n;
                                continue;
                            }
                            match (m, n > 8) {
                                (4, true) => tile::<4, 2>(&t, at, y),
                                (3, true) => tile::<3, 2>(&t, at, y),
                                (2, true) => tile::<2, 2>(&t, at, y),
                                (_, true) => tile::<1, 2>(&t, at, y),
                                (4, false) => tile::<4, 1>(&t, at, y),
                                (3, false) => tile::<3, 1>(&t, at, y),
                                (2, false) => tile::<2, 1>(&t, at, y),
                                (_, false) => tile::<1, 1>(&t, at, y),
                            }
                            ox += n;
                        }
                    }
                    oc += m;
                }
            });
            true
        }
    };
}

blocked_conv!(
    /// [`Blocked`] convolution on AVX-VNNI's `VPDPBUSD`.
    conv_avx_vnni,
    "avx2,avxvnni",
    _mm256_dpbusd_avx_epi32,
    wide: false
);

blocked_conv!(
    /// [`Blocked`] convolution on AVX-512 VNNI's `VPDPBUSD`: rows of more than 8 positions
    /// on 512-bit vectors ([`tile512`]), narrower ones on 256-bit vectors.
    conv_avx512_vnni,
    "avx2,avx512f,avx512bw,avx512vnni,avx512vl",
    _mm256_dpbusd_epi32,
    wide: true
);

/// A tile of `M` channels from `oc` by `16 V` positions from word `q` of the copy on 512-bit
/// vectors, stored at output row `oy`, column `ox` (`n` of its positions valid): the tile of
/// the macro above, each vector twice as wide.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni,avx512vl")]
fn tile512<const M: usize, const V: usize>(
    t: &Tiles<'_>,
    (oc, q, oy, ox, n): (usize, usize, usize, usize, usize),
    y: &mut [i8],
) {
    let steps = t.offsets.len();
    let words = &t.packed.words[oc * steps..(oc + 4) * steps];
    let mut acc = [[_mm512_setzero_si512(); V]; M];
    for (m, acc) in acc.iter_mut().enumerate() {
        *acc = [_mm512_set1_epi32(t.corrected[oc + m]); V];
    }
    // Every word this tile reads lies inside the copy (the slack), checked once.
    assert!(q + t.reach + 16 * V <= t.copy.len() && words.len() == 4 * steps);
    let base = t.copy.as_ptr().wrapping_add(q);
    for (step, &offset) in t.offsets.iter().enumerate() {
        let at = base.wrapping_add(offset);
        let mut columns = [_mm512_setzero_si512(); V];
        for (v, c) in columns.iter_mut().enumerate() {
            // SAFETY: inside the copy (the assertion above).
            *c = unsafe { _mm512_loadu_si512(at.add(16 * v).cast()) };
        }
        for (m, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `4 step + m < words.len()` (the assertion above).
            let word = unsafe { *words.get_unchecked(4 * step + m) };
            let w = _mm512_set1_epi32(word as i32);
            for (a, &c) in acc.iter_mut().zip(&columns) {
                *a = _mm512_dpbusd_epi32(*a, c, w);
            }
        }
    }
    let plane = t.b.out_h * t.b.out_w;
    for (m, acc) in acc.iter().enumerate() {
        let channel = oc + m;
        let start = channel * plane + oy * t.b.out_w + ox;
        let dst = &mut y[start..(channel + 1) * plane];
        match t.requants[channel] {
            Some((multiplier, right)) => {
                let zy = _mm256_set1_epi32(t.zy);
                for (v, &a) in acc.iter().enumerate() {
                    let halves = [
                        requantize_vector(_mm512_castsi512_si256(a), multiplier, right, zy),
                        requantize_vector(_mm512_extracti64x4_epi64::<1>(a), multiplier, right, zy),
                    ];
                    // Whole stores stay inside this channel's plane: later rows, stored
                    // later, only.
                    let from = (16 * v).min(dst.len());
                    let dst = &mut dst[from..];
                    store_bytes(pack_bytes(halves), dst, n.saturating_sub(16 * v));
                }
            }
            None => {
                let mut lanes = [0i32; 32];
                for (v, &a) in acc.iter().enumerate() {
                    // SAFETY: `lanes` holds `16 V <= 32` words from `16 v`.
                    unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().add(16 * v).cast(), a) };
                }
                let out = requantize(lanes, requant_at(t.requant, channel), t.zy);
                let n = n.min(dst.len());
                dst[..n].copy_from_slice(&out[..n]);
            }
        }
    }
}
