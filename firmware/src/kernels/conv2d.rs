//! 2-D convolution: square kernel, stride 1 or 2, zero padding, no dilation or groups.
//!
//! **int8** ([`conv2d_s8`]): im2col and a matrix product, CMSIS-NN style. Four output
//! positions at a time, the input values each one reads are gathered (padded taps read the
//! input zero point `zx`; the folded bias subtracts `zx sum(w)` for all taps, so padding is
//! zero in real terms) and widened to int16 in a scratch buffer from the arena
//! ([`s8_scratch_words`]); every output channel's weight row is then multiplied with the four
//! columns at once, two multiply-accumulates per instruction on Cortex-M4 (`SMLAD`, see
//! `kernels::dsp`). On the x86-64 VNNI paths (`std`) the whole convolution runs instead as a
//! register-blocked product read straight from a channel-blocked copy of the input
//! (`kernels::dot::conv_whole`), without the scratch. The sums are exact integers, so the
//! result is the plain definition's on every target.
//!
//! **Float** ([`conv2d_f32`]): loop order output channel, output row, then a chunk of up to
//! [`CHUNK`] output columns whose accumulators live in a stack array; for each input channel,
//! kernel row and kernel column, one weight is broadcast over the chunk's columns:
//! `acc[j] += x[ic, iy, (ox0 + j) s + kx - p] w`. For stride 1 the inner loop runs over
//! contiguous input and accumulators, so LLVM vectorises it on the host. Only the columns whose
//! input lies inside the image are in that loop; padded taps are skipped. 3x3 stride-1 kernels
//! (the common case) fuse the three kernel columns of a row into one pass over the
//! accumulators. The accumulation order is input channel, kernel row, kernel column, then the
//! bias is added.

use super::dot::{conv_block, conv_block_pair, conv_whole, pack_taps, pairs_runs, Path};
use super::{float_at, WeightFormat};
use crate::cast;
use crate::error::{check_len, Error, Result};
use crate::quant::Requant;

/// Output columns accumulated at once (the stack array holds this many `i32` or `f32`).
pub const CHUNK: usize = 64;

/// Shapes and hyper-parameters of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConvGeometry {
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub in_height: usize,
    /// Input width.
    pub in_width: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size `k` (the kernel is `k x k`).
    pub kernel: usize,
    /// Stride (1 or 2).
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl ConvGeometry {
    /// Output height and width, if the kernel fits the padded input and the stride is 1 or 2.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        if !(1..=2).contains(&self.stride) || self.kernel == 0 {
            return None;
        }
        let size = |n: usize| {
            n.checked_add(self.padding.checked_mul(2)?)?
                .checked_sub(self.kernel)
                .map(|span| span / self.stride + 1)
        };
        Some((size(self.in_height)?, size(self.in_width)?))
    }

    /// Checks the slice lengths of a run and returns the output size.
    fn check(&self, input: usize, weights: usize, output: usize) -> Result<(usize, usize)> {
        let dims = [
            self.in_channels,
            self.in_height,
            self.in_width,
            self.out_channels,
        ];
        if dims.contains(&0) {
            return Err(Error::InvalidModel("convolution with an empty dimension"));
        }
        let (out_h, out_w) = self.output_size().ok_or(Error::InvalidModel(
            "convolution kernel larger than the padded input, or stride not 1 or 2",
        ))?;
        let product = |dims: &[usize]| dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let expect = |what, dims: &[usize], actual| {
            check_len(what, product(dims).unwrap_or(usize::MAX), actual)
        };
        expect(
            "convolution input",
            &[self.in_channels, self.in_height, self.in_width],
            input,
        )?;
        expect(
            "convolution weights",
            &[
                self.out_channels,
                self.in_channels,
                self.kernel,
                self.kernel,
            ],
            weights,
        )?;
        expect(
            "convolution output",
            &[self.out_channels, out_h, out_w],
            output,
        )?;
        Ok((out_h, out_w))
    }

    /// Accumulator indices `lo..hi` (within a chunk starting at column `ox0` of length `n`)
    /// whose input column for kernel column `kx` lies inside the image.
    #[inline]
    fn valid_columns(&self, kx: usize, ox0: usize, n: usize) -> (usize, usize) {
        let (s, p, w) = (self.stride, self.padding, self.in_width);
        // First output column whose input column ox s + kx - p is >= 0, and one past the last
        // whose input column is <= w - 1.
        let first = if p > kx { (p - kx).div_ceil(s) } else { 0 };
        let end = if w + p > kx {
            (w - 1 + p - kx) / s + 1
        } else {
            0
        };
        let lo = first.clamp(ox0, ox0 + n) - ox0;
        let hi = end.clamp(ox0, ox0 + n) - ox0;
        (lo, hi.max(lo))
    }
}

/// Input row of kernel row `ky` for output row `oy`, if it is inside the image.
#[inline]
fn input_row(g: &ConvGeometry, oy: usize, ky: usize) -> Option<usize> {
    (oy * g.stride + ky)
        .checked_sub(g.padding)
        .filter(|&iy| iy < g.in_height)
}

/// Adds kernel row `w_row` (one input channel, one kernel row) applied to input row `x_row`
/// to the accumulators of output columns `ox0..ox0 + acc.len()`, one kernel column at a time,
/// only for the accumulators in `cols` and the taps inside the image.
#[inline(always)]
fn row_pass<X: Copy, A: Copy>(
    g: &ConvGeometry,
    x_row: &[X],
    weights: impl Iterator<Item = A>,
    ox0: usize,
    acc: &mut [A],
    cols: core::ops::Range<usize>,
    mac: impl Fn(A, X, A) -> A,
) {
    let n = acc.len();
    for (kx, wv) in weights.enumerate() {
        let (lo, hi) = g.valid_columns(kx, ox0, n);
        let (lo, hi) = (
            lo.clamp(cols.start, cols.end),
            hi.clamp(cols.start, cols.end),
        );
        if hi <= lo {
            continue;
        }
        let inner = &mut acc[lo..hi];
        let ix0 = (ox0 + lo) * g.stride + kx - g.padding;
        if g.stride == 1 {
            let len = inner.len();
            for (a, &xv) in inner.iter_mut().zip(&x_row[ix0..ix0 + len]) {
                *a = mac(*a, xv, wv);
            }
        } else {
            for (a, &xv) in inner.iter_mut().zip(x_row[ix0..].iter().step_by(g.stride)) {
                *a = mac(*a, xv, wv);
            }
        }
    }
}

/// The accumulators `lo..hi` of a chunk whose three taps are all inside the image, when the
/// fused 3x3 stride-1 path applies (`None` otherwise).
#[inline]
fn fused_columns(g: &ConvGeometry, ox0: usize, n: usize) -> Option<(usize, usize)> {
    if g.kernel != 3 || g.stride != 1 {
        return None;
    }
    // Stride 1: the first valid column decreases and the last valid column decreases with kx,
    // so the columns valid for every tap are those of kx = 0 from below and kx = 2 from above.
    let (lo, _) = g.valid_columns(0, ox0, n);
    let (_, hi) = g.valid_columns(2, ox0, n);
    (lo < hi).then_some((lo, hi))
}

/// Output positions the int8 kernel computes per pass: the im2col columns it packs.
pub const S8_POSITIONS: usize = 4;

/// `u32` words of scratch [`conv2d_s8`] needs for a fan-in of `fan_in` (`in_channels k k`),
/// `None` on overflow: [`S8_POSITIONS`] im2col columns of int16, `2 n` words for `n = fan_in`
/// rounded up to a multiple of 4 (8 bytes per element of the fan-in).
pub fn s8_scratch_words(fan_in: usize) -> Option<usize> {
    fan_in.checked_next_multiple_of(4)?.checked_mul(2)
}

/// Largest kernel, and padding, of the row-segment im2col path ([`stage_segment`]).
const SEGMENT_MAX_KERNEL: usize = 7;
const SEGMENT_MAX_PADDING: usize = 3;

/// `v` in all four bytes.
#[inline(always)]
fn splat(v: i8) -> u32 {
    u32::from(v as u8) * 0x0101_0101
}

/// The little-endian word of `bytes[at..at + 4]` (0 past the end, which callers rule out): one
/// possibly unaligned `LDR` on Cortex-M.
#[inline(always)]
fn word_at(bytes: &[i8], at: usize) -> u32 {
    let word = at
        .checked_add(4)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| <[i8; 4]>::try_from(b).ok())
        .unwrap_or_default();
    u32::from_le_bytes(word.map(|b| b as u8))
}

/// The little-endian `i32` of `bytes[..4]` (0 if shorter).
#[inline(always)]
fn le_i32(bytes: &[u8]) -> i32 {
    bytes
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, i32::from_le_bytes)
}

/// Where the four values of one kernel column come from in an input row, for four
/// consecutive output positions of one row (stride 1): the word of the row at `offset`,
/// shifted right then left by the given bits, or-ed with `fill` (the padding's `zx` bytes).
#[derive(Clone, Copy, Default)]
struct SegmentTap {
    offset: usize,
    shr: u32,
    shl: u32,
    fill: u32,
}

impl SegmentTap {
    /// The tap whose position 0 reads input column `first` (`first + j` for position `j`) of
    /// rows `width >= 4` wide, `first` in `-3..width + 3` (padding at most 3).
    #[inline(always)]
    fn new(first: isize, width: usize, zx4: u32) -> Self {
        let w = width as isize;
        if first < 0 {
            // The first -first positions read padding: the row's first word, moved up.
            let bits = (-8 * first) as u32;
            SegmentTap {
                offset: 0,
                shr: 0,
                shl: bits,
                fill: zx4 & ((1 << bits) - 1),
            }
        } else if first + 4 > w {
            // The last first + 4 - width read padding: the row's last word, moved down.
            let bits = (8 * (first + 4 - w)) as u32;
            SegmentTap {
                offset: width - 4,
                shr: bits,
                shl: 0,
                fill: zx4 & !(u32::MAX >> bits),
            }
        } else {
            SegmentTap {
                offset: first as usize,
                ..SegmentTap::default()
            }
        }
    }

    #[inline(always)]
    fn read(&self, row: &[i8]) -> u32 {
        ((word_at(row, self.offset) >> self.shr) << self.shl) | self.fill
    }
}

/// Stages four consecutive output positions of row `oy`, from column `ox` (stride 1, all in
/// the row, input rows at least 4 wide, kernel and padding within the segment limits): word
/// `k` of `taps` gets the four positions' values at reduction index `k`, one word load per
/// kernel tap. `k` is the kernel size, a literal at the call sites for the common kernels.
#[inline(always)]
fn stage_segment(
    k: usize,
    g: &ConvGeometry,
    x: &[i8],
    zx: i8,
    oy: usize,
    ox: usize,
    taps: &mut [u8],
) {
    let (w, hw, p) = (g.in_width, g.in_height * g.in_width, g.padding);
    let zx4 = splat(zx);
    let mut columns = [SegmentTap::default(); SEGMENT_MAX_KERNEL];
    for (kx, tap) in columns.iter_mut().enumerate().take(k) {
        *tap = SegmentTap::new((ox + kx) as isize - p as isize, w, zx4);
    }
    let mut rows = [None; SEGMENT_MAX_KERNEL];
    for (ky, row) in rows.iter_mut().enumerate().take(k) {
        *row = input_row(g, oy, ky).map(|iy| iy * w);
    }
    for (plane, taps) in x.chunks_exact(hw).zip(taps.chunks_exact_mut(4 * k * k)) {
        for (row, taps) in rows.iter().zip(taps.chunks_exact_mut(4 * k)) {
            match row {
                Some(start) => {
                    let row = &plane[*start..];
                    for (tap, t) in columns.iter().zip(taps.chunks_exact_mut(4)) {
                        t.copy_from_slice(&tap.read(row).to_le_bytes());
                    }
                }
                None => {
                    for t in taps.chunks_exact_mut(4) {
                        t.copy_from_slice(&zx4.to_le_bytes());
                    }
                }
            }
        }
    }
}

/// [`stage_segment`] for the common 3x3 kernel with padding 1 (stride 1): the middle tap's
/// word serves the edge taps too. Positions `ox..ox + 4` read input columns `ox - 1 + kx + j`;
/// at the left edge (`LEFT`: `ox = 0`) kernel column 0 is the middle word moved up a byte
/// with `zx` below, at the right edge (`RIGHT`: `ox + 4 = width`) kernel column 2 is it moved
/// down with `zx` above; elsewhere each kernel column is one word load.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn stage_3x3<const LEFT: bool, const RIGHT: bool>(
    g: &ConvGeometry,
    x: &[i8],
    zx: i8,
    oy: usize,
    ox: usize,
    taps: &mut [u8],
) {
    let (w, hw) = (g.in_width, g.in_height * g.in_width);
    let zx4 = splat(zx);
    let rows = [0, 1, 2].map(|ky| input_row(g, oy, ky).map(|iy| iy * w + ox));
    for (plane, taps) in x.chunks_exact(hw).zip(taps.chunks_exact_mut(36)) {
        for (row, taps) in rows.iter().zip(taps.chunks_exact_mut(12)) {
            let words = match *row {
                Some(at) => {
                    let mid = word_at(plane, at);
                    let left = if LEFT {
                        (mid << 8) | (zx4 & 0xFF)
                    } else {
                        word_at(plane, at.wrapping_sub(1))
                    };
                    let right = if RIGHT {
                        (mid >> 8) | (zx4 & 0xFF00_0000)
                    } else {
                        word_at(plane, at + 1)
                    };
                    [left, mid, right]
                }
                None => [zx4; 3],
            };
            for (t, v) in taps.chunks_exact_mut(4).zip(words) {
                t.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Stages one output position `(oy, ox)`, any geometry: byte `4k` of `lane` gets its value at
/// reduction index `k` (`zx` for padding).
fn stage_position(g: &ConvGeometry, x: &[i8], zx: i8, oy: usize, ox: usize, lane: &mut [u8]) {
    let (k, w, hw, s, p) = (
        g.kernel,
        g.in_width,
        g.in_height * g.in_width,
        g.stride,
        g.padding,
    );
    // Kernel columns lo..hi read input columns ox s + kx - p inside the image.
    let lo = p.saturating_sub(ox * s).min(k);
    let hi = (w + p).saturating_sub(ox * s).clamp(lo, k);
    let mut out = lane.chunks_mut(4).map(|c| &mut c[0]);
    for plane in x.chunks_exact(hw) {
        for ky in 0..k {
            let row = input_row(g, oy, ky).map(|iy| &plane[iy * w..(iy + 1) * w]);
            for kx in 0..k {
                let v = match row {
                    Some(row) if (lo..hi).contains(&kx) => row[ox * s + kx - p],
                    _ => zx,
                };
                if let Some(d) = out.next() {
                    *d = v as u8;
                }
            }
        }
    }
}

/// Stages output positions `p0..p0 + n` (`n <= 4`) into `taps` (`4 fan_in` bytes): byte
/// `4k + j` gets position `p0 + j`'s input value at reduction index `k` (`zx` for padding, 0
/// for `j >= n`). Four positions in one output row take one word load per tap (1x1 kernels
/// without padding read four consecutive positions of each channel at once); anything else
/// (stride 2, a run across rows, narrow images, the last run) is staged position by position.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn stage(g: &ConvGeometry, x: &[i8], zx: i8, out_w: usize, p0: usize, n: usize, taps: &mut [u8]) {
    let (oy, ox) = (p0 / out_w, p0 % out_w);
    let (w, hw) = (g.in_width, g.in_height * g.in_width);
    if n == 4 && g.stride == 1 {
        if g.kernel == 1 && g.padding == 0 {
            // Output positions are input positions: four consecutive bytes of each channel.
            for (t, plane) in taps.chunks_exact_mut(4).zip(x.chunks_exact(hw)) {
                t.copy_from_slice(&word_at(plane, p0).to_le_bytes());
            }
            return;
        }
        if ox + 4 <= out_w
            && w >= 4
            && g.kernel <= SEGMENT_MAX_KERNEL
            && g.padding <= SEGMENT_MAX_PADDING
        {
            match (g.kernel, g.padding, ox == 0, ox + 4 == w) {
                (3, 1, false, false) => stage_3x3::<false, false>(g, x, zx, oy, ox, taps),
                (3, 1, true, false) => stage_3x3::<true, false>(g, x, zx, oy, ox, taps),
                (3, 1, false, true) => stage_3x3::<false, true>(g, x, zx, oy, ox, taps),
                (3, 1, true, true) => stage_3x3::<true, true>(g, x, zx, oy, ox, taps),
                (k, ..) => stage_segment(k, g, x, zx, oy, ox, taps),
            }
            return;
        }
    }
    if n < 4 {
        taps.fill(0);
    }
    for j in 0..n {
        let (oy, ox) = ((p0 + j) / out_w, (p0 + j) % out_w);
        stage_position(g, x, zx, oy, ox, &mut taps[j..]);
    }
}

/// int8 convolution: `y = sat(zy + requant_c(bias_c + sum x w))` with `x` padded by its zero
/// point `zx` (in `-128..=127`, [`Error::InvalidQuantization`] otherwise). `bias` and
/// `requant` as for [`linear_s8`](super::linear::linear_s8); `scratch` holds at least
/// [`s8_scratch_words`] of the fan-in ([`Error::ArenaTooSmall`] otherwise).
///
/// im2col, CMSIS-NN style: for each run of [`S8_POSITIONS`] output positions (in row-major
/// order), the input values each reads (one column of `in_channels k k` values, padded taps
/// `zx`) are gathered, four positions per word, into the upper half of the scratch
/// (`stage`) and widened to int16 in place into the packed column layout
/// (`kernels::dot::pack_taps`); then every output channel's weight row is multiplied with the
/// four columns at once (`kernels::dot::dot_1x4`: on Cortex-M4 `SXTB16` + `SMLAD`, two MACs
/// per instruction, each weight word loaded once per four positions). A fan-in that is not a
/// multiple of 4 ends with one zero-padded group. The last run of a feature map whose size is
/// not a multiple of 4 computes its missing positions on zero columns and drops them.
///
/// The accumulation is exact integer arithmetic (wrapping, never overflowing for a valid
/// blob), so the result equals the plain `bias + sum x w` in any order. The products run on
/// the CPU's fastest [`Path`] ([`Path::detect`]); [`conv2d_s8_on`] chooses it. The x86-64
/// VNNI paths compute the whole convolution on their own layout (module docs); the scratch
/// is checked on every path all the same, so a blob runs, or is refused, alike everywhere.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_s8(
    g: &ConvGeometry,
    x: &[i8],
    input_zero_point: i32,
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    output_zero_point: i32,
    y: &mut [i8],
    scratch: &mut [u32],
) -> Result<()> {
    conv2d_s8_on(
        Path::detect(),
        g,
        x,
        input_zero_point,
        weights,
        bias,
        requant,
        output_zero_point,
        y,
        scratch,
    )
}

/// [`conv2d_s8`] with its products on `path`: the same bytes on every path.
///
/// # Errors
/// As [`conv2d_s8`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_s8_on(
    path: Path,
    g: &ConvGeometry,
    x: &[i8],
    input_zero_point: i32,
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    output_zero_point: i32,
    y: &mut [i8],
    scratch: &mut [u32],
) -> Result<()> {
    let (out_h, out_w) = g.check(x.len(), weights.len(), y.len())?;
    check_len(
        "convolution bias",
        g.out_channels.saturating_mul(4),
        bias.len(),
    )?;
    check_len(
        "convolution requantisation",
        g.out_channels.saturating_mul(8),
        requant.len(),
    )?;
    // `check` verified `out_channels fan_in` elements of weights, so none of this overflows.
    let fan_in = weights.len() / g.out_channels;
    let padded = fan_in.next_multiple_of(4);
    let words = 2 * padded;
    if scratch.len() < words {
        return Err(Error::ArenaTooSmall {
            required: words.saturating_mul(4),
            available: scratch.len().saturating_mul(4),
        });
    }
    let cols = &mut scratch[..words];
    // The padding value is staged as an int8 like the input (a parsed blob's zero points are).
    let zx = i8::try_from(input_zero_point).map_err(|_| {
        Error::InvalidQuantization("the input zero point of a convolution must be an int8")
    })?;
    if conv_whole(path, g, x, zx, weights, bias, requant, output_zero_point, y) {
        return Ok(());
    }
    let positions = out_h * out_w;
    let block = |p0: usize, n: usize| Block {
        weights,
        fan_in,
        bias,
        requant,
        output_zero_point,
        positions,
        p0,
        n,
    };
    let mut p0 = 0;
    while p0 < positions {
        if pairs_runs(path) && positions - p0 >= 2 * S8_POSITIONS {
            // Two runs at once, one in each half of the scratch, packed in place.
            let (first, second) = cols.split_at_mut(padded);
            for (half, start) in [(&mut *first, p0), (&mut *second, p0 + S8_POSITIONS)] {
                let taps = cast::u32s_as_bytes_mut(half);
                let (taps, pad) = taps.split_at_mut(4 * fan_in);
                pad.fill(0);
                stage(g, x, zx, out_w, start, S8_POSITIONS, taps);
            }
            if conv_block_pair(path, &block(p0, 2 * S8_POSITIONS), first, second, y) {
                p0 += 2 * S8_POSITIONS;
                continue;
            }
        }
        let n = (positions - p0).min(S8_POSITIONS);
        {
            let taps = cast::u32s_as_bytes_mut(&mut cols[padded..]);
            let (taps, pad) = taps.split_at_mut(4 * fan_in);
            pad.fill(0);
            stage(g, x, zx, out_w, p0, n, taps);
        }
        pack_taps(path, cols);
        conv_block(path, &block(p0, n), cols, y);
        p0 += n;
    }
    Ok(())
}

/// One run of output positions of an int8 convolution, for every output channel: what
/// [`block_outputs`] needs besides the packed columns.
pub(crate) struct Block<'a> {
    /// `out_channels` rows of `fan_in` weights.
    pub weights: &'a [i8],
    pub fan_in: usize,
    /// Little-endian `i32` per channel.
    pub bias: &'a [u8],
    /// Little-endian `(multiplier, shift)` per channel.
    pub requant: &'a [u8],
    pub output_zero_point: i32,
    /// Output positions per channel (`out_h out_w`).
    pub positions: usize,
    /// The run's first position and its length (at most the `N` of [`block_outputs`]).
    pub p0: usize,
    pub n: usize,
}

/// Every output channel's outputs at positions `p0..p0 + n` into `y` (`out_channels`
/// `positions` values): `dot(w, g, acc)` adds one channel's products with weights `w` from
/// group `g` of the packed columns on (at the `N` positions of the run), `requantize` turns
/// `N` accumulators into int8; the loop each product path runs with its own inner functions
/// inlined.
#[inline(always)]
pub(crate) fn block_outputs<const N: usize>(
    block: &Block<'_>,
    y: &mut [i8],
    dot: impl Fn(&[i8], usize, [i32; N]) -> [i32; N],
    requantize: impl Fn([i32; N], Requant, i32) -> [i8; N],
) {
    let (fan_in, p0, n) = (block.fan_in, block.p0, block.n);
    let full = fan_in / 4;
    let channels = block
        .weights
        .chunks_exact(fan_in)
        .zip(block.bias.chunks_exact(4))
        .zip(block.requant.chunks_exact(8))
        .zip(y.chunks_exact_mut(block.positions));
    for (((w_row, bias), requant), y_oc) in channels {
        let bias = le_i32(bias);
        let mut acc = dot(w_row, 0, [bias; N]);
        if fan_in % 4 != 0 {
            // The last weights, zero-padded to a group.
            let last = match w_row[4 * full..] {
                [a] => [a, 0, 0, 0],
                [a, b] => [a, b, 0, 0],
                [a, b, c] => [a, b, c, 0],
                _ => [0; 4],
            };
            acc = dot(&last, full, acc);
        }
        let requant = Requant {
            multiplier: le_i32(requant),
            shift: le_i32(&requant[4..]),
        };
        let out = requantize(acc, requant, block.output_zero_point);
        match y_oc.get_mut(p0..p0 + N) {
            // One (unaligned) store.
            Some(y) if n == N => y.copy_from_slice(&out),
            _ => {
                for (y, q) in y_oc[p0..p0 + n].iter_mut().zip(out) {
                    *y = q;
                }
            }
        }
    }
}

/// Float convolution, weights and optional bias in format `W`.
///
/// Each accumulator starts at 0 and adds `x w` for input channel, kernel row and kernel column
/// in that order, skipping padded taps; the bias is added last. The fused 3x3 stride-1 path
/// performs the same additions in the same order, so every path gives the same bits.
pub fn conv2d_f32<W: WeightFormat>(
    g: &ConvGeometry,
    x: &[f32],
    weights: &[u8],
    bias: Option<&[u8]>,
    y: &mut [f32],
) -> Result<()> {
    let weight_count = weights.len() / W::SIZE;
    check_len(
        "convolution weight bytes",
        weight_count * W::SIZE,
        weights.len(),
    )?;
    let (out_h, out_w) = g.check(x.len(), weight_count, y.len())?;
    if let Some(bias) = bias {
        check_len(
            "convolution bias",
            g.out_channels.saturating_mul(W::SIZE),
            bias.len(),
        )?;
    }
    let (h, w, k) = (g.in_height, g.in_width, g.kernel);
    let mac = |a: f32, x: f32, w: f32| a + x * w;
    let mut acc = [0.0f32; CHUNK];
    for (oc, (w_oc, y_oc)) in weights
        .chunks_exact(g.in_channels * k * k * W::SIZE)
        .zip(y.chunks_exact_mut(out_h * out_w))
        .enumerate()
    {
        let bias = float_at::<W>(bias, oc);
        for (oy, y_row) in y_oc.chunks_exact_mut(out_w).enumerate() {
            for (chunk, y_chunk) in y_row.chunks_mut(CHUNK).enumerate() {
                let (ox0, n) = (chunk * CHUNK, y_chunk.len());
                let acc = &mut acc[..n];
                acc.fill(0.0);
                let fused = fused_columns(g, ox0, n);
                for (x_plane, w_ic) in x
                    .chunks_exact(h * w)
                    .zip(w_oc.chunks_exact(k * k * W::SIZE))
                {
                    for (ky, w_row) in w_ic.chunks_exact(k * W::SIZE).enumerate() {
                        let Some(iy) = input_row(g, oy, ky) else {
                            continue;
                        };
                        let x_row = &x_plane[iy * w..(iy + 1) * w];
                        let weights = w_row.chunks_exact(W::SIZE).map(W::decode);
                        match fused {
                            Some((lo, hi)) => {
                                let mut taps = weights.clone();
                                let w0 = taps.next().unwrap_or(0.0);
                                let w1 = taps.next().unwrap_or(0.0);
                                let w2 = taps.next().unwrap_or(0.0);
                                let ix0 = ox0 + lo - g.padding;
                                let xs = &x_row[ix0..ix0 + (hi - lo) + 2];
                                for (a, t) in acc[lo..hi].iter_mut().zip(xs.windows(3)) {
                                    *a = ((*a + t[0] * w0) + t[1] * w1) + t[2] * w2;
                                }
                                row_pass(g, x_row, weights.clone(), ox0, acc, 0..lo, mac);
                                row_pass(g, x_row, weights, ox0, acc, hi..n, mac);
                            }
                            None => row_pass(g, x_row, weights, ox0, acc, 0..n, mac),
                        }
                    }
                }
                for (y, &a) in y_chunk.iter_mut().zip(acc.iter()) {
                    *y = a + bias;
                }
            }
        }
    }
    Ok(())
}
