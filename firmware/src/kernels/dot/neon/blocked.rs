//! int8 convolution on the aarch64 paths (`std`) as a register-blocked matrix product read
//! straight from the channel-blocked copy of the input (`kernels::dot::blocked`: signed bytes,
//! offset 0; one 16-byte load holds a step's weight words for a tile's four channels).
//!
//! A tile is four output channels by up to 16 (dot product, matrix multiply) or 8 (plain
//! NEON) positions of one output row, positions in lanes, four per vector:
//!
//! - **NEON dot product**: per channel group and tap, one weight load, one column load per
//!   four positions and one `SDOT` by element per channel and column vector (16 products);
//! - **NEON int8 matrix multiply** (CPUs with `i8mm` and `asimddp`): on a copy with two
//!   channel groups side by side at each pixel (`Blocked::depth` 2), per pair of groups and
//!   tap, the four channels' weight words of both groups zipped into two 2x8 matrices (a
//!   channel pair each; a last odd group pairs with zero weights), then per two positions one
//!   load of their eight channels (an 8x2 matrix) and one `SMMLA` per channel pair (32
//!   products);
//! - **NEON**: per channel group and tap, each channel's weight word in every lane (`DUP` by
//!   element), then per column vector `SMULL` / `SMULL2` (int16 products: an int8 product
//!   fits) added pairwise into int32 by `SADALP`, the pairs of each position added at the end.
//!
//! The sums are requantised in the lanes (`FastRequant`'s form; anything else in scalar code)
//! and stored as a row segment: positions past the row's end are computed on the words that
//! follow and dropped; a store may run into the next row of the same channel, which is
//! stored later. Every sum is the exact integer `bias + sum x w` (wrapping), so the bytes are
//! those of every other path.

use core::arch::aarch64::{
    int32x4_t, int8x16_t, vaddq_s32, vcombine_s16, vcombine_s8, vdupq_laneq_s32, vdupq_n_s32,
    vdupq_n_s8, vld1_s8, vld1q_s32, vld1q_s8, vpaddq_s32, vqmovn_s16, vqmovn_s32,
    vreinterpretq_s16_s8, vreinterpretq_s32_s16, vreinterpretq_s32_s64, vreinterpretq_s64_s32,
    vreinterpretq_s8_s32, vst1q_s32, vst1q_s8, vuzp1q_s32, vuzp2q_s32, vzip1q_s16, vzip1q_s32,
    vzip1q_s64, vzip1q_s8, vzip2q_s16, vzip2q_s32, vzip2q_s64, vzip2q_s8,
};

use super::super::blocked::{channel_rows, with_workspace, Blocked, Packed};
use super::{mull_pairs, requantize_lanes, sdot_lane, smmla};
use crate::kernels::conv2d::ConvGeometry;
use crate::kernels::{requant_at, requantize, FastRequant};

/// Which instructions multiply a tile's weights and columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in super::super) enum Product {
    /// `SMULL` / `SMULL2` and `SADALP` (every aarch64 CPU).
    Plain,
    /// `SDOT` by element (`asimddp`).
    Dot,
    /// `SMMLA` on pairs of steps (`i8mm`).
    Matrix,
}

/// Output positions from which a convolution runs here rather than on the im2col blocks: below
/// it the copy, the packed-weights check and the per-call set-up cost more than the blocks'
/// staging they save (BENCHMARKS.md, "Whole convolutions on a channel-blocked copy").
const MIN_POSITIONS: usize = 128;

/// What every tile of one call reads.
struct Tiles<'a> {
    copy: &'a [u32],
    offsets: &'a [usize],
    /// The largest offset: a tile of `4 V` positions from word `q` reads below
    /// `q + reach + 4 V depth`.
    reach: usize,
    packed: &'a Packed,
    /// Each channel's corrected bias (`Workspace::correct`).
    corrected: &'a [i32],
    fast: &'a [Option<FastRequant>],
    requant: &'a [u8],
    zy: i32,
    out_channels: usize,
    /// Kernel taps (`kernel^2`): the steps per channel group.
    taps: usize,
    b: Blocked,
}

/// Where a tile lies: its first channel (a multiple of 4), its first word in the copy (that of
/// its first position), and the output row, column and number of valid positions it stores.
#[derive(Clone, Copy)]
struct At {
    oc: usize,
    q: usize,
    oy: usize,
    ox: usize,
    n: usize,
}

impl Tiles<'_> {
    /// The packed weights of the tile's four channels and the start of its columns, after
    /// checking that every word the tile reads is inside the copy and the weights.
    fn operands(&self, at: At, vectors: usize) -> (&[u32], *const u32) {
        let steps = self.b.groups * self.taps;
        let words = &self.packed.words[at.oc * steps..(at.oc + 4) * steps];
        assert!(at.q + self.reach + 4 * vectors * self.b.depth <= self.copy.len());
        (words, self.copy.as_ptr().wrapping_add(at.q))
    }

    /// Requantises and stores the tile's sums (`sums[m]`: channel `oc + m`'s `V` vectors)
    /// for the channels that exist.
    #[target_feature(enable = "neon")]
    fn store<const V: usize>(&self, at: At, sums: [[int32x4_t; V]; 4], y: &mut [i8]) {
        let plane = self.b.out_h * self.b.out_w;
        let channels = (self.out_channels - at.oc).min(4);
        for (m, sums) in sums.iter().enumerate().take(channels) {
            let channel = at.oc + m;
            let start = channel * plane + at.oy * self.b.out_w + at.ox;
            let dst = &mut y[start..(channel + 1) * plane];
            let n = at.n.min(dst.len());
            match self.fast[channel] {
                Some(fast) => {
                    let mut narrow = [vdupq_n_s32(0); 4];
                    for (v, &s) in sums.iter().enumerate() {
                        narrow[v] = requantize_lanes(s, fast, self.zy);
                    }
                    let bytes = vcombine_s8(
                        vqmovn_s16(vcombine_s16(vqmovn_s32(narrow[0]), vqmovn_s32(narrow[1]))),
                        vqmovn_s16(vcombine_s16(vqmovn_s32(narrow[2]), vqmovn_s32(narrow[3]))),
                    );
                    if dst.len() >= 16 {
                        // A whole store stays inside this channel's plane: later rows,
                        // stored later, only. SAFETY: `dst` holds 16 bytes.
                        unsafe { vst1q_s8(dst.as_mut_ptr(), bytes) };
                    } else {
                        let mut all = [0i8; 16];
                        // SAFETY: `all` holds 16 bytes.
                        unsafe { vst1q_s8(all.as_mut_ptr(), bytes) };
                        dst[..n].copy_from_slice(&all[..n]);
                    }
                }
                None => {
                    let mut lanes = [0i32; 16];
                    for (v, &s) in sums.iter().enumerate() {
                        // SAFETY: `lanes` holds `4 V <= 16` words from `4 v`.
                        unsafe { vst1q_s32(lanes.as_mut_ptr().add(4 * v), s) };
                    }
                    let out = requantize(lanes, requant_at(self.requant, channel), self.zy);
                    dst[..n].copy_from_slice(&out[..n]);
                }
            }
        }
    }
}

/// The tile's sums started at each channel's corrected bias.
#[inline]
#[target_feature(enable = "neon")]
fn start<const V: usize>(t: &Tiles<'_>, oc: usize) -> [[int32x4_t; V]; 4] {
    let c = &t.corrected[oc..oc + 4];
    [
        [vdupq_n_s32(c[0]); V],
        [vdupq_n_s32(c[1]); V],
        [vdupq_n_s32(c[2]); V],
        [vdupq_n_s32(c[3]); V],
    ]
}

/// A tile on the dot-product path: `4 V` positions.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn tile_dot<const V: usize>(t: &Tiles<'_>, at: At, y: &mut [i8]) {
    let (words, base) = t.operands(at, V);
    let mut acc = start::<V>(t, at.oc);
    for (step, &offset) in t.offsets.iter().enumerate() {
        // SAFETY: the weights' step `step` (4 words) and the `4 V` words from `offset` are
        // inside the slices (`operands`).
        let w = unsafe { vld1q_s8(words.as_ptr().add(4 * step).cast()) };
        let at = base.wrapping_add(offset);
        // `acc[lane][v]`: the loop over `v` indexes four rows of `acc` at once.
        #[allow(clippy::needless_range_loop)]
        for v in 0..V {
            // SAFETY: as above.
            let c: int8x16_t = unsafe { vld1q_s8(at.add(4 * v).cast()) };
            acc[0][v] = sdot_lane::<0>(acc[0][v], c, w);
            acc[1][v] = sdot_lane::<1>(acc[1][v], c, w);
            acc[2][v] = sdot_lane::<2>(acc[2][v], c, w);
            acc[3][v] = sdot_lane::<3>(acc[3][v], c, w);
        }
    }
    t.store::<V>(at, acc, y);
}

/// A tile on the int8 matrix multiply path: `4 V` positions (`V` at most 4) on the copy with
/// two channel groups side by side (depth 2), as the module docs describe.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn tile_mmla<const V: usize>(t: &Tiles<'_>, at: At, y: &mut [i8]) {
    let (words, base) = t.operands(at, V);
    let zero = vdupq_n_s32(0);
    // `acc[h][u]`: channels `oc + 2h` and `oc + 2h + 1` by positions `2u` and `2u + 1`, lanes
    // `[c p, c p+1, c+1 p, c+1 p+1]`.
    let mut acc = [[zero; 8]; 2];
    let mut offsets = t.offsets.iter();
    for pair in (0..t.b.groups).step_by(2) {
        let second = pair + 1 < t.b.groups;
        for tap in 0..t.taps {
            let step = pair * t.taps + tap;
            // SAFETY: the weights' steps of groups `pair` and `pair + 1` at `tap` (4 words
            // each) and the `8 V` words from the step's offset are inside the slices
            // (`operands`).
            let (w0, w1) = unsafe {
                let w0 = vld1q_s32(words.as_ptr().add(4 * step).cast());
                match second {
                    true => (
                        w0,
                        vld1q_s32(words.as_ptr().add(4 * (step + t.taps)).cast()),
                    ),
                    false => (w0, zero),
                }
            };
            let channels = [
                vreinterpretq_s8_s32(vzip1q_s32(w0, w1)),
                vreinterpretq_s8_s32(vzip2q_s32(w0, w1)),
            ];
            let from = base.wrapping_add(offsets.next().copied().unwrap_or(0));
            // Indexed: the compiler keeps `acc` in registers only with the loop unrolled.
            #[allow(clippy::needless_range_loop)]
            for u in 0..2 * V {
                // Positions `2u` and `2u + 1`, eight channels each. SAFETY: as above.
                let c: int8x16_t = unsafe { vld1q_s8(from.add(4 * u).cast()) };
                acc[0][u] = smmla(acc[0][u], channels[0], c);
                acc[1][u] = smmla(acc[1][u], channels[1], c);
            }
        }
    }
    let mut sums = start::<V>(t, at.oc);
    for (h, acc) in acc.iter().enumerate() {
        for v in 0..V {
            let (p, q) = (
                vreinterpretq_s64_s32(acc[2 * v]),
                vreinterpretq_s64_s32(acc[2 * v + 1]),
            );
            let (c, d) = (
                vreinterpretq_s32_s64(vzip1q_s64(p, q)),
                vreinterpretq_s32_s64(vzip2q_s64(p, q)),
            );
            sums[2 * h][v] = vaddq_s32(sums[2 * h][v], c);
            sums[2 * h + 1][v] = vaddq_s32(sums[2 * h + 1][v], d);
        }
    }
    t.store::<V>(at, sums, y);
}

/// A tile on the plain NEON path: `4 V` positions (`V` at most 2: two int32 vectors per
/// channel and column vector).
#[inline]
#[target_feature(enable = "neon")]
fn tile_plain<const V: usize>(t: &Tiles<'_>, at: At, y: &mut [i8]) {
    let (words, base) = t.operands(at, V);
    let zero = vdupq_n_s32(0);
    // Per channel and column vector: lanes (position 0, 0, 1, 1) and (2, 2, 3, 3).
    let mut low = [[zero; V]; 4];
    let mut high = [[zero; V]; 4];
    for (step, &offset) in t.offsets.iter().enumerate() {
        // SAFETY: as in `tile_dot`.
        let w = unsafe { vld1q_s32(words.as_ptr().add(4 * step).cast()) };
        let weights = [
            vreinterpretq_s8_s32(vdupq_laneq_s32::<0>(w)),
            vreinterpretq_s8_s32(vdupq_laneq_s32::<1>(w)),
            vreinterpretq_s8_s32(vdupq_laneq_s32::<2>(w)),
            vreinterpretq_s8_s32(vdupq_laneq_s32::<3>(w)),
        ];
        let at = base.wrapping_add(offset);
        for v in 0..V {
            // SAFETY: as in `tile_dot`.
            let c: int8x16_t = unsafe { vld1q_s8(at.add(4 * v).cast()) };
            for m in 0..4 {
                (low[m][v], high[m][v]) = mull_pairs(low[m][v], high[m][v], c, weights[m]);
            }
        }
    }
    let mut acc = start::<V>(t, at.oc);
    for m in 0..4 {
        for v in 0..V {
            acc[m][v] = vaddq_s32(acc[m][v], vpaddq_s32(low[m][v], high[m][v]));
        }
    }
    t.store::<V>(at, acc, y);
}

/// Copies every input row into the channel-blocked copy `buf` (already filled), 16 pixels at
/// a time (8 for rows of 8 to 15; the last step of a row overlaps the one before it when the
/// width is not a multiple), and returns the columns done: `in_width`, or 0 for rows of fewer
/// than 8 pixels, which the portable copy takes. The rows of a group's four channels are
/// interleaved by `ZIP` into one word per pixel, with depth 2 the words of the pair's two
/// groups interleaved again, and for stride 2 (the other stride `ConvGeometry` allows is 1)
/// the pixels of even and odd padded columns parted by `UZP` into their planes.
#[target_feature(enable = "neon")]
fn copy_columns(g: &ConvGeometry, b: &Blocked, x: &[i8], zx: i8, buf: &mut [u32]) -> usize {
    let (h, w, p, s, d) = (g.in_height, g.in_width, g.padding, g.stride, b.depth);
    let n = match w {
        16.. => 16,
        8..16 => 8,
        _ => return 0,
    };
    let padding = vdupq_n_s8(zx);
    // A group's words for pixels `ix..ix + n`: four vectors of four pixels (with `n` 8, the
    // last two repeat the first two).
    let words = |rows: &[Option<&[i8]>; 4], ix: usize| -> [int32x4_t; 4] {
        let load = |j: usize| match rows[j] {
            // SAFETY: `ix + n <= w`, the row's length.
            Some(r) if n == 16 => unsafe { vld1q_s8(r.as_ptr().add(ix)) },
            Some(r) => {
                // SAFETY: as above.
                let half = unsafe { vld1_s8(r.as_ptr().add(ix)) };
                vcombine_s8(half, half)
            }
            None => padding,
        };
        let (r0, r1, r2, r3) = (load(0), load(1), load(2), load(3));
        let (low01, high01) = (vzip1q_s8(r0, r1), vzip2q_s8(r0, r1));
        let (low23, high23) = (vzip1q_s8(r2, r3), vzip2q_s8(r2, r3));
        let quad = |a: int8x16_t, b: int8x16_t, high: bool| {
            let (a, b) = (vreinterpretq_s16_s8(a), vreinterpretq_s16_s8(b));
            vreinterpretq_s32_s16(if high {
                vzip2q_s16(a, b)
            } else {
                vzip1q_s16(a, b)
            })
        };
        [
            quad(low01, low23, false),
            quad(low01, low23, true),
            quad(high01, high23, false),
            quad(high01, high23, true),
        ]
    };
    let store = |buf: &mut [u32], at: usize, v: int32x4_t| {
        let dst = &mut buf[at..at + 4];
        // SAFETY: `dst` holds 4 words; `ST1` has no alignment requirement.
        unsafe { vst1q_s32(dst.as_mut_ptr().cast(), v) };
    };
    for first in (0..b.groups).step_by(d) {
        for iy in 0..h {
            let (ry, row) = ((iy + p) % s, (iy + p) / s);
            let own = channel_rows(g, x, first, iy);
            // With depth 2, the pair's second group (a last odd group's partner: channels past
            // `in_channels`, the padding).
            let partner = match d {
                1 => [None; 4],
                _ => channel_rows(g, x, first + 1, iy),
            };
            let last = w - n;
            for ix in (0..last).step_by(n).chain([last]) {
                let a = words(&own, ix);
                // The pixels' units in order, `d` words each, four words per vector.
                let mut units = [vdupq_n_s32(0); 8];
                if d == 1 {
                    units[..4].copy_from_slice(&a);
                } else {
                    let c = words(&partner, ix);
                    for k in 0..4 {
                        units[2 * k] = vzip1q_s32(a[k], c[k]);
                        units[2 * k + 1] = vzip2q_s32(a[k], c[k]);
                    }
                }
                let units = &units[..n / 4 * d];
                let column = ix + p;
                if s == 1 {
                    let at = b.at(first, 0, 0, row, column);
                    for (k, &v) in units.iter().enumerate() {
                        store(buf, at + 4 * k, v);
                    }
                } else {
                    // Pixels of even offset go to the plane of `column`'s parity, the others
                    // to the other plane, one word (depth 1) or two (depth 2) per pixel.
                    let even = b.at(first, ry, column % 2, row, column / 2);
                    let odd = b.at(first, ry, (column + 1) % 2, row, column.div_ceil(2));
                    for (k, pair) in units.chunks_exact(2).enumerate() {
                        let (e, o) = match d {
                            1 => (vuzp1q_s32(pair[0], pair[1]), vuzp2q_s32(pair[0], pair[1])),
                            _ => {
                                let (x0, x1) = (
                                    vreinterpretq_s64_s32(pair[0]),
                                    vreinterpretq_s64_s32(pair[1]),
                                );
                                (
                                    vreinterpretq_s32_s64(vzip1q_s64(x0, x1)),
                                    vreinterpretq_s32_s64(vzip2q_s64(x0, x1)),
                                )
                            }
                        };
                        store(buf, even + 4 * k, e);
                        store(buf, odd + 4 * k, o);
                    }
                }
            }
        }
    }
    w
}

/// The convolution's outputs with `product`'s instructions, as the module docs describe;
/// `conv2d::conv2d_s8_on`'s arguments with the lengths it checked. Returns `false` (nothing
/// written) for geometries the copy does not take and outputs of fewer than
/// [`MIN_POSITIONS`] positions.
///
/// # Safety
/// The CPU must have `product`'s instructions: the dot product (`asimddp`) for
/// [`Product::Dot`], the int8 matrix multiply (`i8mm`) for [`Product::Matrix`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
pub(in super::super) unsafe fn conv(
    product: Product,
    g: &ConvGeometry,
    x: &[i8],
    zx: i8,
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    zy: i32,
    y: &mut [i8],
) -> bool {
    let depth = match product {
        Product::Matrix => 2,
        Product::Plain | Product::Dot => 1,
    };
    let Some(b) = Blocked::new(g, depth) else {
        return false;
    };
    if b.out_h * b.out_w < MIN_POSITIONS {
        return false;
    }
    with_workspace(|workspace| {
        let index = workspace.pack(g, weights);
        workspace.correct(index, bias, 0);
        b.fill(zx, 0, &mut workspace.copy);
        let from = copy_columns(g, &b, x, zx, &mut workspace.copy);
        b.copy_pixels(g, x, zx, 0, from, &mut workspace.copy);
        b.offsets(&mut workspace.offsets);
        let fast: std::vec::Vec<Option<FastRequant>> = (0..g.out_channels)
            .map(|oc| FastRequant::new(requant_at(requant, oc)))
            .collect();
        let t = Tiles {
            copy: &workspace.copy,
            offsets: &workspace.offsets,
            reach: workspace.offsets.iter().copied().max().unwrap_or(0),
            packed: workspace.packed(index),
            corrected: &workspace.corrected,
            fast: &fast,
            requant,
            zy,
            out_channels: g.out_channels,
            taps: g.kernel * g.kernel,
            b,
        };
        let widest = match product {
            Product::Plain => 8,
            Product::Dot | Product::Matrix => 16,
        };
        for oc in (0..g.out_channels).step_by(4) {
            for oy in 0..b.out_h {
                let mut ox = 0;
                while ox < b.out_w {
                    let n = (b.out_w - ox).min(widest);
                    let at = At {
                        oc,
                        q: (oy * b.wq + ox) * depth,
                        oy,
                        ox,
                        n,
                    };
                    // SAFETY: `Dot` and `Matrix` only where the CPU has their instructions
                    // (this function's contract).
                    match (product, n.div_ceil(4)) {
                        (Product::Dot, 1) => unsafe { tile_dot::<1>(&t, at, y) },
                        (Product::Dot, 2) => unsafe { tile_dot::<2>(&t, at, y) },
                        (Product::Dot, 3) => unsafe { tile_dot::<3>(&t, at, y) },
                        (Product::Dot, _) => unsafe { tile_dot::<4>(&t, at, y) },
                        (Product::Matrix, 1) => unsafe { tile_mmla::<1>(&t, at, y) },
                        (Product::Matrix, 2) => unsafe { tile_mmla::<2>(&t, at, y) },
                        (Product::Matrix, 3) => unsafe { tile_mmla::<3>(&t, at, y) },
                        (Product::Matrix, _) => unsafe { tile_mmla::<4>(&t, at, y) },
                        (Product::Plain, 1) => tile_plain::<1>(&t, at, y),
                        (Product::Plain, _) => tile_plain::<2>(&t, at, y),
                    }
                    ox += n;
                }
            }
        }
    });
    true
}
