//! int8 convolution on the aarch64 paths (`std`) as a register-blocked matrix product read
//! straight from the channel-blocked copy of the input (`kernels::dot::blocked`: signed bytes,
//! offset 0; one 16-byte load holds a step's weight words for a tile's four channels).
//!
//! A tile is four output channels by up to 16 (dot product) or 8 (plain NEON) positions of
//! one output row, positions in lanes, four per vector:
//!
//! - **NEON dot product**: per channel group and tap, one weight load, one column load per
//!   four positions and one `SDOT` by element per channel and column vector (16 products);
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
    vld1q_s32, vld1q_s8, vpaddq_s32, vqmovn_s16, vqmovn_s32, vreinterpretq_s8_s32, vst1q_s32,
    vst1q_s8,
};

use super::super::blocked::{with_workspace, Blocked, Packed};
use super::{mull_pairs, requantize_lanes, sdot_lane};
use crate::kernels::conv2d::ConvGeometry;
use crate::kernels::{requant_at, requantize, FastRequant};

/// Output positions from which a convolution runs here rather than on the im2col blocks: below
/// it the copy, the packed-weights check and the per-call set-up cost more than the blocks'
/// staging they save (BENCHMARKS.md, "Whole convolutions on a channel-blocked copy").
const MIN_POSITIONS: usize = 128;

/// What every tile of one call reads.
struct Tiles<'a> {
    copy: &'a [u32],
    offsets: &'a [usize],
    /// The largest offset: a tile of `4 V` positions from word `q` reads below
    /// `q + reach + 4 V`.
    reach: usize,
    packed: &'a Packed,
    /// Each channel's corrected bias (`Workspace::correct`).
    corrected: &'a [i32],
    fast: &'a [Option<FastRequant>],
    requant: &'a [u8],
    zy: i32,
    out_channels: usize,
    b: Blocked,
}

/// Where a tile lies: its first channel (a multiple of 4), its first word in the copy, and the
/// output row, column and number of valid positions it stores.
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
        let steps = self.offsets.len();
        let words = &self.packed.words[at.oc * steps..(at.oc + 4) * steps];
        assert!(at.q + self.reach + 4 * vectors <= self.copy.len());
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

/// The convolution's outputs on the dot-product path (`dot`) or the plain NEON one, as the
/// module docs describe; `conv2d::conv2d_s8_on`'s arguments with the lengths it checked.
/// Returns `false` (nothing written) for geometries the copy does not take and outputs of
/// fewer than [`MIN_POSITIONS`] positions.
///
/// # Safety
/// With `dot`, the CPU must have the dot-product instructions (`asimddp`).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
pub(in super::super) unsafe fn conv(
    dot: bool,
    g: &ConvGeometry,
    x: &[i8],
    zx: i8,
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    zy: i32,
    y: &mut [i8],
) -> bool {
    let Some(b) = Blocked::new(g) else {
        return false;
    };
    if b.out_h * b.out_w < MIN_POSITIONS {
        return false;
    }
    with_workspace(|workspace| {
        let index = workspace.pack(g, weights);
        workspace.correct(index, bias, 0);
        b.fill(zx, 0, &mut workspace.copy);
        b.copy_pixels(g, x, zx, 0, 0, &mut workspace.copy);
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
            b,
        };
        let widest = if dot { 16 } else { 8 };
        for oc in (0..g.out_channels).step_by(4) {
            for oy in 0..b.out_h {
                let mut ox = 0;
                while ox < b.out_w {
                    let n = (b.out_w - ox).min(widest);
                    let at = At {
                        oc,
                        q: oy * b.wq + ox,
                        oy,
                        ox,
                        n,
                    };
                    // SAFETY: `dot` only where the CPU has the dot-product instructions.
                    match (dot, n.div_ceil(4)) {
                        (true, 1) => unsafe { tile_dot::<1>(&t, at, y) },
                        (true, 2) => unsafe { tile_dot::<2>(&t, at, y) },
                        (true, 3) => unsafe { tile_dot::<3>(&t, at, y) },
                        (true, _) => unsafe { tile_dot::<4>(&t, at, y) },
                        (false, 1) => tile_plain::<1>(&t, at, y),
                        (false, _) => tile_plain::<2>(&t, at, y),
                    }
                    ox += n;
                }
            }
        }
    });
    true
}
