//! What the whole-convolution kernels of the SIMD paths share (`std` builds): a
//! channel-blocked copy of the input that the products read straight from (no im2col), the
//! weights packed once in the order the products walk, and the per-thread buffers.
//!
//! **The copy.** Each call copies the input (`in_channels x H x W` int8) into words of four
//! consecutive channels at one pixel (each byte plus the path's `offset`: 128 where the
//! product takes unsigned columns, 0 elsewhere), surrounded by `padding` pixels of the zero
//! point and, for stride 2, split into four planes by the parity of the padded row and
//! column. For stride `s`, kernel tap `(ky, kx)` of output position `(oy, ox)` then reads word
//! `oy wq + ox` of plane `(ky mod s, kx mod s)`, moved by the tap's offset
//! `(ky / s) wq + kx / s` (`wq`: the plane's width): consecutive output positions of a row
//! read consecutive words, for every tap and channel group ([`Blocked`]). A tile whose last
//! vector reaches past a row's end computes positions on the words that follow and drops
//! them; the kernels choose each tile's width so that it reads at most 15 positions past its
//! last valid position, and the copy ends with [`SLACK`] spare positions for the last row.
//! For products that take eight channels of a pixel at once (`SMMLA`), two groups' words lie
//! side by side at each pixel ([`Blocked::depth`]).
//!
//! **The weights.** Each output channel's weights become one word per channel group and
//! tap, in the product's order (group, kernel row, kernel column; channels past
//! `in_channels` zero), four output channels interleaved per step (word `(q steps + step) 4 +
//! m` for channel `4q + m`; the channel count padded to a multiple of 4 with zero weights),
//! and each channel's weight sum is kept. They are packed once per weights slice and kept
//! (per thread) with a copy of the weights they came from, which every call compares, so a
//! blob whose bytes change, or another blob at the same address, is repacked. The bias, which
//! the timestep-aware quantisation changes between time groups, is corrected by
//! `-offset sum w` on every call ([`Workspace::correct`]).

use std::cell::RefCell;
use std::vec::Vec;

use crate::kernels::conv2d::ConvGeometry;

/// Spare positions (of `depth` words) at the end of the copy: more than the 15 positions a
/// tile may read past the last valid position of the last row of the last plane.
pub(super) const SLACK: usize = 16;

/// Most packed weight sets kept per thread (a network's convolutions); more clears them.
const MAX_PACKED: usize = 256;

/// Geometry of the channel-blocked copy of one convolution's input.
#[derive(Debug, Clone, Copy)]
pub(super) struct Blocked {
    /// Channel groups of four (`ceil(in_channels / 4)`).
    pub(super) groups: usize,
    /// Channel groups side by side at each pixel: 1, or 2 for products that take eight
    /// channels of a pixel at once (a pixel's words of groups `2j` and `2j + 1` then lie next
    /// to each other, the pixels two words apart; a last odd group's partner is padding).
    pub(super) depth: usize,
    pub(super) stride: usize,
    kernel: usize,
    /// Height and width of each plane, in words.
    hq: usize,
    pub(super) wq: usize,
    pub(super) out_h: usize,
    pub(super) out_w: usize,
}

impl Blocked {
    /// The copy for `g` (already checked by the caller) with `depth` (1 or 2) groups side by
    /// side, `None` for sizes that overflow.
    pub(super) fn new(g: &ConvGeometry, depth: usize) -> Option<Self> {
        let (out_h, out_w) = g.output_size()?;
        let s = g.stride;
        let hp = g.in_height.checked_add(g.padding.checked_mul(2)?)?;
        let wp = g.in_width.checked_add(g.padding.checked_mul(2)?)?;
        let b = Blocked {
            groups: g.in_channels.div_ceil(4),
            depth,
            stride: s,
            kernel: g.kernel,
            hq: hp.div_ceil(s),
            wq: wp.div_ceil(s),
            out_h,
            out_w,
        };
        b.groups
            .div_ceil(depth)
            .checked_mul(depth * s * s)?
            .checked_mul(b.hq.checked_mul(b.wq)?)?
            .checked_add(depth * SLACK)?;
        Some(b)
    }

    fn plane(&self) -> usize {
        self.hq * self.wq
    }

    /// Words of the copy, spare words included (`depth` [`SLACK`]s).
    pub(super) fn words(&self) -> usize {
        let d = self.depth;
        self.groups.div_ceil(d) * d * self.stride * self.stride * self.plane() + d * SLACK
    }

    /// Where word `(row, col)` of plane `(ry, rx)` of channel group `group` lies.
    pub(super) fn at(&self, group: usize, ry: usize, rx: usize, row: usize, col: usize) -> usize {
        let (s, d) = (self.stride, self.depth);
        ((((group / d) * s + ry) * s + rx) * self.plane() + row * self.wq + col) * d + group % d
    }

    /// The word offset of each step of the product (`depth` channel groups from a multiple of
    /// `depth`, kernel row, kernel column), from output position `(0, 0)`; an output position
    /// `(oy, ox)` adds `(oy wq + ox) depth`.
    pub(super) fn offsets(&self, out: &mut Vec<usize>) {
        let (s, k, d) = (self.stride, self.kernel, self.depth);
        out.clear();
        for group in (0..self.groups).step_by(d) {
            for ky in 0..k {
                for kx in 0..k {
                    out.push(self.at(group, ky % s, kx % s, ky / s, kx / s));
                }
            }
        }
    }

    /// `buf` cleared to the copy's size, every word the padding (`zx` plus `offset` in each
    /// byte, which a last odd group's partner keeps); the caller writes the pixels.
    pub(super) fn fill(&self, zx: i8, offset: u8, buf: &mut Vec<u32>) {
        buf.clear();
        buf.resize(self.words(), u32::from_le_bytes([(zx as u8) ^ offset; 4]));
    }

    /// Copies `x` into `buf` (already [`Blocked::fill`]ed) one pixel at a time, from column
    /// `from` of every row on (the columns before it are the caller's): the portable copy.
    pub(super) fn copy_pixels(
        &self,
        g: &ConvGeometry,
        x: &[i8],
        zx: i8,
        offset: u8,
        from: usize,
        buf: &mut [u32],
    ) {
        let (h, w, p, s, d) = (g.in_height, g.in_width, g.padding, g.stride, self.depth);
        for group in 0..self.groups {
            for iy in 0..h {
                let (ry, row) = ((iy + p) % s, (iy + p) / s);
                let rows = channel_rows(g, x, group, iy);
                // Column `c` of the padded row lies in plane `c mod s` at word `c / s`, both
                // followed from column `from + p` on.
                let start = self.at(group, ry, 0, row, 0);
                let plane_words = self.plane() * d;
                let (mut rx, mut col) = ((from + p) % s, (from + p) / s);
                for ix in from..w {
                    let byte = |j: usize| (rows[j].map_or(zx, |r| r[ix]) as u8) ^ offset;
                    buf[start + rx * plane_words + col * d] =
                        u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]);
                    rx += 1;
                    if rx == s {
                        (rx, col) = (0, col + 1);
                    }
                }
            }
        }
    }
}

/// Input row `iy` of the four channels of group `group` (`None` past `in_channels`).
#[inline]
pub(super) fn channel_rows<'x>(
    g: &ConvGeometry,
    x: &'x [i8],
    group: usize,
    iy: usize,
) -> [Option<&'x [i8]>; 4] {
    let (h, w) = (g.in_height, g.in_width);
    core::array::from_fn(|j| {
        let c = 4 * group + j;
        (c < g.in_channels).then(|| &x[(c * h + iy) * w..(c * h + iy + 1) * w])
    })
}

/// One convolution's packed weights (module docs) and what they were packed from.
pub(super) struct Packed {
    address: usize,
    weights: Vec<i8>,
    in_channels: usize,
    kernel: usize,
    /// The words (module docs).
    pub(super) words: Vec<u32>,
    /// Each channel's weight sum (wrapping; 0 for the padding channels).
    sums: Vec<i32>,
}

impl Packed {
    fn new(g: &ConvGeometry, weights: &[i8]) -> Self {
        let (c, k) = (g.in_channels, g.kernel);
        let taps = k * k;
        let steps = c.div_ceil(4) * taps;
        let channels = g.out_channels.next_multiple_of(4);
        let mut words = std::vec![0u32; channels * steps];
        let mut sums = std::vec![0i32; channels];
        for (oc, w_oc) in weights.chunks_exact(c * taps).enumerate() {
            for step in 0..steps {
                let (group, tap) = (step / taps, step % taps);
                let byte = |j: usize| {
                    let ic = 4 * group + j;
                    if ic < c {
                        w_oc[ic * taps + tap] as u8
                    } else {
                        0
                    }
                };
                words[((oc / 4) * steps + step) * 4 + oc % 4] =
                    u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]);
            }
            sums[oc] = w_oc.iter().fold(0i32, |a, &w| a.wrapping_add(i32::from(w)));
        }
        Packed {
            address: weights.as_ptr() as usize,
            weights: weights.to_vec(),
            in_channels: c,
            kernel: k,
            words,
            sums,
        }
    }

    fn packs(&self, g: &ConvGeometry, weights: &[i8]) -> bool {
        self.address == weights.as_ptr() as usize
            && self.in_channels == g.in_channels
            && self.kernel == g.kernel
            && self.weights == weights
    }
}

/// What one thread keeps between calls: the packed weights and the buffers of a call.
#[derive(Default)]
pub(super) struct Workspace {
    packed: Vec<Packed>,
    /// The channel-blocked copy.
    pub(super) copy: Vec<u32>,
    /// The steps' offsets ([`Blocked::offsets`]).
    pub(super) offsets: Vec<usize>,
    /// This call's corrected bias ([`Workspace::correct`]).
    pub(super) corrected: Vec<i32>,
}

impl Workspace {
    /// The index of the packed form of `weights`, packed now if it is not kept.
    pub(super) fn pack(&mut self, g: &ConvGeometry, weights: &[i8]) -> usize {
        if let Some(i) = self.packed.iter().position(|p| p.packs(g, weights)) {
            return i;
        }
        if self.packed.len() >= MAX_PACKED {
            self.packed.clear();
        }
        let fresh = Packed::new(g, weights);
        match self.packed.iter().position(|p| p.address == fresh.address) {
            Some(i) => {
                self.packed[i] = fresh;
                i
            }
            None => {
                self.packed.push(fresh);
                self.packed.len() - 1
            }
        }
    }

    /// The packed weights at `index` (from [`Workspace::pack`]).
    pub(super) fn packed(&self, index: usize) -> &Packed {
        &self.packed[index]
    }

    /// Fills [`Workspace::corrected`] with `bias` (little-endian `i32` per channel) minus
    /// `offset` times each channel's weight sum, wrapping, for the weights at `index`; 0 for
    /// the padding channels.
    pub(super) fn correct(&mut self, index: usize, bias: &[u8], offset: u8) {
        let sums = &self.packed[index].sums;
        self.corrected.clear();
        self.corrected
            .extend(sums.iter().enumerate().map(|(oc, &sum)| {
                let bias = bias
                    .get(4 * oc..4 * oc + 4)
                    .map_or(0, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                bias.wrapping_sub(sum.wrapping_mul(i32::from(offset)))
            }));
    }
}

std::thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

/// Runs `f` with this thread's [`Workspace`].
pub(super) fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|workspace| f(&mut workspace.borrow_mut()))
}
