//! The int8 products inside the linear and convolution kernels, on each target's fastest
//! instructions, and the choice among them; with them, the vector forms of the
//! requantisations around the products (linear layers four or eight rows at a time,
//! `linear_rows`), of the int8 add (`add_prefix`) and of group norm's moments and map
//! (`moments`, `affine_prefix`).
//!
//! Three inner loops carry nearly every multiply-accumulate of an int8 network:
//! [`dot_1x4`] (one convolution weight row against four im2col columns, after
//! [`pack_taps`] laid them out), [`dot_2x1`] and [`dot_3x1`] (two or three linear-layer rows
//! against one input). Each has one implementation per [`Path`]:
//!
//! - **portable** (`dsp`): plain Rust everywhere, and on ARMv7E-M (Cortex-M4 / M7) the DSP
//!   extension's `SXTB16` + `SMLAD` in inline assembly, CMSIS-NN style;
//! - **AVX2** (`x86`, x86-64 with `std`, chosen when the CPU has it): int8 widened to int16 and
//!   multiplied pairwise into int32 with `VPMADDWD`, 16 multiply-accumulates per instruction;
//! - **AVX-VNNI** (`x86`, x86-64 with `std` on a CPU with AVX-VNNI, such as Intel's Alder Lake
//!   and Sapphire Rapids or AMD's Zen 5): whole convolutions (`conv_whole`) as a
//!   register-blocked product on `VPDPBUSD`, four unsigned-by-signed int8 products summed into
//!   each int32 lane, 32 per instruction, read straight from a channel-blocked copy of the
//!   input whose bytes are int8 plus 128 (the unsigned operand; the weights' sum times 128 is
//!   subtracted from the bias); the rest as on the AVX2 path;
//! - **AVX-512 VNNI** (`x86`, x86-64 with `std` on a CPU with AVX-512 F, BW, VL and VNNI, such
//!   as Intel's Ice Lake and later Xeons or AMD's Zen 4 and Zen 5; preferred to AVX-VNNI where
//!   both exist): the same with the EVEX encoding of `VPDPBUSD`, on 512-bit vectors for rows
//!   of more than 8 positions;
//! - **NEON** (`neon`, every aarch64 CPU): widening multiplies into int16 (`SMULL`) added
//!   pairwise into int32 (`SADALP`);
//! - **NEON dot product** (`neon`, aarch64 with `std` on a CPU with `asimddp`, such as Jetson
//!   Orin's Cortex-A78AE or the Pi 5's A76): `SDOT`, four int8 products summed into each int32
//!   lane, 16 per instruction;
//! - **NEON int8 matrix multiply** (`neon`, aarch64 with `std` on a CPU with `asimddp` and
//!   `i8mm`, such as Neoverse V1 / V2 / N2 and Cortex-A710 or later): the dot-product path's
//!   kernels, except whole convolutions, which multiply 2x8 by 8x2 int8 matrices (`SMMLA`, 32
//!   products per instruction) on a copy with eight channels per pixel.
//!
//! The NEON paths pack the im2col columns as int8, four reduction indices of one column per
//! word, instead of the int16 pairs of the portable and AVX2 paths.
//!
//! Every path computes the same exact integer sums (modulo 2^32, never reached by a valid
//! blob), so every path gives the same bytes: the choice changes the speed, never the result.
//! The tests check each path against the plain definition, and the kernels on every path
//! against the portable one.

use super::conv2d::{block_outputs, Block, ConvGeometry};
use super::requantize;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
use super::FastRequant;
use crate::kernels::add::{AddRhs, FastAdd};
use crate::quant::Requant;

#[cfg(feature = "std")]
mod blocked;
mod dsp;
#[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
use neon::blocked::Product;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
// Without `std` no CPU feature is detected at run time, so the dot-product kernels are unused.
#[cfg_attr(not(feature = "std"), allow(dead_code))]
mod neon;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86;

/// An implementation of the int8 products that this CPU can run. Only [`Path::detect`],
/// [`Path::portable`] and [`Path::available`] make one, so holding a `Path` proves that its
/// instructions exist here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Portable,
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    Avx2,
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    Avx512Vnni,
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    AvxVnni,
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    Neon,
    #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
    NeonDot,
    /// NEON dot product and the int8 matrix multiply (`SMMLA`) on the channel-blocked copy.
    #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
    NeonI8mm,
}

impl Path {
    /// The portable path (on ARMv7E-M, its DSP-extension assembly): available everywhere.
    pub const fn portable() -> Path {
        Path(Kind::Portable)
    }

    /// The fastest path of this CPU: AVX-512 VNNI, else AVX-VNNI, else AVX2 on x86-64 CPUs
    /// that have them, and NEON int8 matrix multiply, else NEON dot product on aarch64 CPUs
    /// that have them (detected at run time, in `std` builds), plain NEON on other aarch64
    /// CPUs, else the portable path.
    pub fn detect() -> Path {
        Path::available().last().unwrap_or(Path::portable())
    }

    /// Every path this CPU runs, the portable one first and the fastest last.
    pub fn available() -> impl Iterator<Item = Path> {
        let candidates = [
            Some(Kind::Portable),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Some(Kind::Neon),
            #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
            std::arch::is_aarch64_feature_detected!("dotprod").then_some(Kind::NeonDot),
            #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
            (std::arch::is_aarch64_feature_detected!("dotprod")
                && std::arch::is_aarch64_feature_detected!("i8mm"))
            .then_some(Kind::NeonI8mm),
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            std::is_x86_feature_detected!("avx2").then_some(Kind::Avx2),
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("avxvnni"))
                .then_some(Kind::AvxVnni),
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            (std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("avx512vl"))
            .then_some(Kind::Avx512Vnni),
        ];
        candidates.into_iter().flatten().map(Path)
    }

    /// The path's name: `portable`, `avx2`, `avx512-vnni`, `avx-vnni`, `neon`, `neon-dotprod`
    /// or `neon-i8mm`.
    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Portable => "portable",
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            Kind::Avx2 => "avx2",
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            Kind::Avx512Vnni => "avx512-vnni",
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            Kind::AvxVnni => "avx-vnni",
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Kind::Neon => "neon",
            #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
            Kind::NeonDot => "neon-dotprod",
            #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
            Kind::NeonI8mm => "neon-i8mm",
        }
    }
}

/// Packs the staged taps in `cols` (`8 n` words; on entry word `4 n + k`, for `k < 4 n`, holds
/// the four positions' int8 values at reduction index `k`, position `j` in byte `j`) into the
/// layout `path`'s [`dot_1x4`] reads, in place.
#[inline]
pub(crate) fn pack_taps(path: Path, cols: &mut [u32]) {
    match path.0 {
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: every aarch64 CPU has NEON.
        Kind::Neon => unsafe { neon::pack_taps_s8(cols) },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: as above.
        Kind::NeonDot | Kind::NeonI8mm => unsafe { neon::pack_taps_s8(cols) },
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        // SAFETY: the x86-64 kinds exist only where the CPU has AVX2.
        Kind::Avx2 | Kind::AvxVnni | Kind::Avx512Vnni => unsafe { x86::pack_taps(cols) },
        _ => dsp::pack_taps(cols),
    }
}

/// Where group `g` (reduction indices `4g..4g + 4`) of the columns [`pack_taps`] packed for
/// `path` starts, in words: `8g` on the int16 layouts, `4g` on the int8 one.
#[inline]
pub(crate) fn group_start(path: Path, g: usize) -> usize {
    match path.0 {
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Kind::Neon => 4 * g,
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        Kind::NeonDot | Kind::NeonI8mm => 4 * g,
        _ => 8 * g,
    }
}

/// `acc_j + sum_k w[k] c_j[k]` for the four columns `c_j` that [`pack_taps`] packed for `path`
/// into `cols` (or a suffix of them from a [`group_start`]), over the first `n` groups, `n` the
/// number of whole groups in `w` and in `cols`: one output channel at four output positions.
/// `w` may have any alignment.
#[inline]
pub(crate) fn dot_1x4(path: Path, w: &[i8], cols: &[u32], acc: [i32; 4]) -> [i32; 4] {
    match path.0 {
        Kind::Portable => dsp::dot_1x4(w, cols, acc),
        // SAFETY (each arm): the kind exists only where the CPU has its instructions.
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kind::Avx2 | Kind::AvxVnni | Kind::Avx512Vnni => unsafe { x86::dot_1x4(w, cols, acc) },
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Kind::Neon => unsafe { neon::dot_1x4(w, cols, acc) },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        Kind::NeonDot | Kind::NeonI8mm => unsafe { neon::dot_1x4_s8(w, cols, acc) },
    }
}

/// Every output channel's outputs of one run of four positions of an int8 convolution
/// (`conv2d::block_outputs`) on `path`, from the columns [`pack_taps`] packed for it: on the
/// x86-64 and aarch64 paths one call whose products and requantisations are inlined.
#[inline]
pub(crate) fn conv_block(path: Path, block: &Block<'_>, cols: &[u32], y: &mut [i8]) {
    match path.0 {
        // SAFETY (each arm): the kind exists only where the CPU has its instructions.
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kind::Avx2 | Kind::AvxVnni | Kind::Avx512Vnni => unsafe {
            x86::conv_block_avx2(block, cols, y)
        },
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Kind::Neon => unsafe { neon::conv_block(block, cols, y) },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        Kind::NeonDot | Kind::NeonI8mm => unsafe { neon::conv_block_s8(block, cols, y) },
        Kind::Portable => block_outputs(
            block,
            y,
            |w, g, acc| dsp::dot_1x4(w, &cols[8 * g..], acc),
            requantize,
        ),
        #[allow(unreachable_patterns)]
        _ => block_outputs(
            block,
            y,
            |w, g, acc| dot_1x4(path, w, &cols[group_start(path, g)..], acc),
            |acc, requant, zy| requantize4(path, acc, requant, zy),
        ),
    }
}

/// A whole int8 convolution on `path`'s own layout when it has one (the VNNI paths:
/// `x86::blocked`), `conv2d::conv2d_s8_on`'s arguments with the lengths it checked: whether
/// it did (on any other path, or a geometry it does not take, nothing is written and the
/// caller runs the im2col blocks). The same bytes as every path.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn conv_whole(
    path: Path,
    g: &ConvGeometry,
    x: &[i8],
    zx: i8,
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    zy: i32,
    y: &mut [i8],
) -> bool {
    match path.0 {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        // SAFETY: `AvxVnni` exists only where the CPU has AVX2 and AVX-VNNI; the caller
        // checked the lengths.
        Kind::AvxVnni => unsafe {
            x86::blocked::conv_avx_vnni(g, x, zx, weights, bias, requant, zy, y)
        },
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        // SAFETY: `Avx512Vnni` exists only where the CPU has AVX2, AVX-512 VNNI and AVX512VL;
        // the caller checked the lengths.
        Kind::Avx512Vnni => unsafe {
            x86::blocked::conv_avx512_vnni(g, x, zx, weights, bias, requant, zy, y)
        },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: every aarch64 CPU has NEON; the caller checked the lengths.
        Kind::Neon => unsafe {
            neon::blocked::conv(Product::Plain, g, x, zx, weights, bias, requant, zy, y)
        },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: `NeonDot` exists only where the CPU has the dot-product instructions; the
        // caller checked the lengths.
        Kind::NeonDot => unsafe {
            neon::blocked::conv(Product::Dot, g, x, zx, weights, bias, requant, zy, y)
        },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: `NeonI8mm` exists only where the CPU has the dot-product and int8 matrix
        // multiply instructions; the caller checked the lengths.
        Kind::NeonI8mm => unsafe {
            neon::blocked::conv(Product::Matrix, g, x, zx, weights, bias, requant, zy, y)
        },
        _ => {
            let _ = (g, x, zx, weights, bias, requant, zy, y);
            false
        }
    }
}

/// Whether `path` computes two runs of four positions at once ([`conv_block_pair`]): the
/// NEON paths, whose weights then serve eight positions per load.
#[inline]
pub(crate) fn pairs_runs(path: Path) -> bool {
    match path.0 {
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Kind::Neon => true,
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        Kind::NeonDot | Kind::NeonI8mm => true,
        _ => false,
    }
}

/// [`conv_block`] for two runs of four positions (`block.n` is 8), each staged in one half of
/// the scratch (`first`, `second`: the taps layout [`pack_taps`] reads, in their first words),
/// when [`pairs_runs`] holds for `path`. Returns whether it did: on any other path it computes
/// nothing and the caller runs the positions four at a time.
#[inline]
pub(crate) fn conv_block_pair(
    path: Path,
    block: &Block<'_>,
    first: &mut [u32],
    second: &mut [u32],
    y: &mut [i8],
) -> bool {
    match path.0 {
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Kind::Neon => {
            // SAFETY: every aarch64 CPU has NEON.
            unsafe { neon::conv_block_pair(block, first, second, y) };
            true
        }
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        Kind::NeonDot | Kind::NeonI8mm => {
            // SAFETY: `NeonDot` and `NeonI8mm` exist only where the CPU has the dot-product
            // instructions.
            unsafe { neon::conv_block_pair_s8(block, first, second, y) };
            true
        }
        _ => {
            let _ = (block, first, second, y);
            false
        }
    }
}

/// `sat(zy + requant(acc_j))` for the four accumulators of a [`dot_1x4`]: exactly
/// `kernels::requantize`, in SIMD lanes on the x86-64 paths when the requantisation has the
/// `FastRequant` form and `zy` is an int8, and on the NEON paths when it has that form.
#[inline]
pub(crate) fn requantize4(path: Path, acc: [i32; 4], requant: Requant, zy: i32) -> [i8; 4] {
    match path.0 {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kind::Avx2 | Kind::AvxVnni | Kind::Avx512Vnni if (-128..=127).contains(&zy) => {
            match FastRequant::new(requant) {
                // SAFETY: `Avx2` exists only where the CPU has AVX2.
                Some(fast) => unsafe { x86::requantize4(acc, fast.multiplier, fast.right, zy) },
                None => requantize(acc, requant, zy),
            }
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: every aarch64 CPU has NEON (and this build enables it).
        Kind::Neon => unsafe { neon::requantize4(acc, requant, zy) },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: as above.
        Kind::NeonDot | Kind::NeonI8mm => unsafe { neon::requantize4(acc, requant, zy) },
        _ => requantize(acc, requant, zy),
    }
}

/// The leading rows of an int8 linear layer computed by a kernel of `path` that takes four
/// rows at a time (plain NEON: eight, then four) with their requantisation in vector lanes
/// (`kernels::linear::linear_s8`'s arguments, its lengths checked by the caller; the weights in
/// `-MAX_WEIGHT..=MAX_WEIGHT`): the number of rows done, each output
/// exactly `linear_s8`'s; 0 on the portable path (whose three rows at a time suit the
/// Cortex-M) and for shapes the kernel does not take.
#[inline]
pub(crate) fn linear_rows(
    path: Path,
    x: &[i8],
    weights: &[i8],
    bias: &[u8],
    requant: &[u8],
    zy: i32,
    y: &mut [i8],
) -> usize {
    match path.0 {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        // SAFETY: the x86-64 kinds exist only where the CPU has AVX2; the caller checked the
        // lengths.
        Kind::Avx2 | Kind::AvxVnni | Kind::Avx512Vnni => unsafe {
            x86::linear_rows(x, weights, bias, requant, zy, y)
        },
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: every aarch64 CPU has NEON; the caller checked the lengths.
        Kind::Neon => unsafe { neon::linear_rows(x, weights, bias, requant, zy, y) },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: `NeonDot` and `NeonI8mm` exist only where the CPU has the dot-product
        // instructions; the caller checked the lengths.
        Kind::NeonDot | Kind::NeonI8mm => unsafe {
            neon::linear_rows_s8(x, weights, bias, requant, zy, y)
        },
        _ => {
            let _ = (x, weights, bias, requant, zy, y);
            0
        }
    }
}

/// Whether `path` has a vector kernel for int8 adds ([`add_prefix`]): every path but the
/// portable one.
#[inline]
pub(crate) fn adds_in_lanes(path: Path) -> bool {
    path.0 != Kind::Portable
}

/// The leading elements of `dst = lhs + rhs` for an add of the fast form (`lhs` `None`: in
/// place), computed in vector lanes on `path`, each exactly `AddParams::apply`; `lhs` and an
/// `Each` right operand have `dst`'s length (the caller checks). Returns the number of
/// elements done: a multiple of the path's vector width, 0 where [`adds_in_lanes`] is false.
#[inline]
pub(crate) fn add_prefix(
    path: Path,
    add: &FastAdd,
    lhs: Option<&[i8]>,
    rhs: AddRhs<'_>,
    dst: &mut [i8],
) -> usize {
    match path.0 {
        // SAFETY (each arm): the kind exists only where the CPU has its instructions.
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kind::Avx2 | Kind::AvxVnni | Kind::Avx512Vnni => unsafe {
            x86::add_prefix(add, lhs, rhs, dst)
        },
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Kind::Neon => unsafe { neon::add_prefix(add, lhs, rhs, dst) },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        Kind::NeonDot | Kind::NeonI8mm => unsafe { neon::add_prefix(add, lhs, rhs, dst) },
        _ => {
            let _ = (add, lhs, rhs, dst);
            0
        }
    }
}

/// `(sum q, sum q^2)` of int8 values, exact, in vector lanes on `path` where it has a kernel
/// for them (the x86-64 paths), `None` elsewhere.
#[inline]
pub(crate) fn moments(path: Path, values: &[i8]) -> Option<(i64, i64)> {
    match path.0 {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        // SAFETY: the x86-64 kinds exist only where the CPU has AVX2.
        Kind::Avx2 | Kind::AvxVnni | Kind::Avx512Vnni => Some(unsafe { x86::moments(values) }),
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: every aarch64 CPU has NEON.
        Kind::Neon => Some(unsafe { neon::moments(values) }),
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: as above.
        Kind::NeonDot | Kind::NeonI8mm => Some(unsafe { neon::moments(values) }),
        _ => {
            let _ = values;
            None
        }
    }
}

/// `(sum q, sum q^2)` of `values`, exact, from a vector kernel `blocks` that sums whole
/// blocks of `block` bytes exactly as long as it is given at most `flush` blocks at a time
/// (its int32 lanes' limit): the values in runs of `flush` blocks, then the last whole
/// blocks, then the rest one by one.
#[cfg(any(
    all(feature = "std", target_arch = "x86_64"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
fn moments_in_blocks(
    values: &[i8],
    block: usize,
    flush: usize,
    blocks: impl Fn(&[i8]) -> (i64, i64),
) -> (i64, i64) {
    let (mut sum, mut sum_sq) = (0i64, 0i64);
    let mut runs = values.chunks_exact(block * flush);
    for run in runs.by_ref() {
        let (s, q) = blocks(run);
        sum += s;
        sum_sq += q;
    }
    let rest = runs.remainder();
    let whole = rest.len() / block * block;
    let (s, q) = blocks(&rest[..whole]);
    sum += s;
    sum_sq += q;
    for &v in &rest[whole..] {
        let v = i64::from(v);
        sum += v;
        sum_sq += v * v;
    }
    (sum, sum_sq)
}

/// The leading elements of `dst = quant::round_to_i8(k q + b, zy)` for `q` from `src` (or
/// `dst` in place; `src` as long as `dst`, the caller checks), in vector lanes on `path`,
/// each exactly the scalar result: the number done, a multiple of the vector width; 0 on
/// the portable path, and on x86-64 unless `k` and `b` are finite and `zy` in
/// `-2^15..=2^15`.
#[inline]
pub(crate) fn affine_prefix(
    path: Path,
    k: f32,
    b: f32,
    zy: i32,
    src: Option<&[i8]>,
    dst: &mut [i8],
) -> usize {
    match path.0 {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kind::Avx2 | Kind::AvxVnni | Kind::Avx512Vnni => {
            if !(k.is_finite() && b.is_finite() && (-(1 << 15)..=1 << 15).contains(&zy)) {
                return 0;
            }
            // SAFETY: the x86-64 kinds exist only where the CPU has AVX2; `src` as long as
            // `dst`.
            unsafe { x86::affine_prefix(k, b, zy, src, dst) }
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: every aarch64 CPU has NEON; `src` as long as `dst`.
        Kind::Neon => unsafe { neon::affine_prefix(k, b, zy, src, dst) },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: as above.
        Kind::NeonDot | Kind::NeonI8mm => unsafe { neon::affine_prefix(k, b, zy, src, dst) },
        _ => {
            let _ = (k, b, zy, src, dst);
            0
        }
    }
}

/// The leading elements of `dst = lut[q + 128]` (an int8 table, as SiLU's) for `q` from
/// `src` (or `dst` in place; `src` as long as `dst`, the caller checks), in vector lanes on
/// `path`: the number done, a multiple of the vector width; 0 on the portable path.
#[inline]
pub(crate) fn lut_prefix(path: Path, lut: &[i8; 256], src: Option<&[i8]>, dst: &mut [i8]) -> usize {
    match path.0 {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        // SAFETY: the x86-64 kinds exist only where the CPU has AVX2; `src` as long as `dst`.
        Kind::Avx2 | Kind::AvxVnni | Kind::Avx512Vnni => unsafe { x86::lut_prefix(lut, src, dst) },
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: every aarch64 CPU has NEON; `src` as long as `dst`.
        Kind::Neon => unsafe { neon::lut_prefix(lut, src, dst) },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        // SAFETY: as above.
        Kind::NeonDot | Kind::NeonI8mm => unsafe { neon::lut_prefix(lut, src, dst) },
        _ => {
            let _ = (lut, src, dst);
            0
        }
    }
}

/// `acc_r + sum_i x_i wr_i` for the rows `w0`, `w1` over `i < 4 n`, where
/// `n = min(x.len(), w0.len(), w1.len()) / 4`: two rows of a linear layer, any alignment.
#[inline]
pub(crate) fn dot_2x1(path: Path, x: &[i8], w0: &[i8], w1: &[i8], acc: [i32; 2]) -> [i32; 2] {
    match path.0 {
        Kind::Portable => dsp::dot_2x1(x, w0, w1, acc),
        #[allow(unreachable_patterns)]
        _ => simd_rows(path, x, [w0, w1], acc),
    }
}

/// As [`dot_2x1`] for three rows `w0`, `w1`, `w2` (each input loaded once for the three).
#[inline]
pub(crate) fn dot_3x1(
    path: Path,
    x: &[i8],
    w0: &[i8],
    w1: &[i8],
    w2: &[i8],
    acc: [i32; 3],
) -> [i32; 3] {
    match path.0 {
        Kind::Portable => dsp::dot_3x1(x, w0, w1, w2, acc),
        #[allow(unreachable_patterns)]
        _ => simd_rows(path, x, [w0, w1, w2], acc),
    }
}

/// The rows of [`dot_2x1`] / [`dot_3x1`] on a SIMD path (the portable one never comes here).
#[inline]
#[allow(unused_variables)]
fn simd_rows<const R: usize>(path: Path, x: &[i8], rows: [&[i8]; R], acc: [i32; R]) -> [i32; R] {
    let n = rows.iter().fold(x.len(), |n, row| n.min(row.len())) / 4 * 4;
    let x = &x[..n];
    let rows = rows.map(|row| &row[..n]);
    match path.0 {
        // SAFETY (each arm): the kind exists only where the CPU has its instructions; every
        // slice holds `n` elements.
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kind::Avx2 | Kind::AvxVnni | Kind::Avx512Vnni => unsafe { x86::dot_rows(x, rows, acc) },
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        Kind::Neon => unsafe { neon::dot_rows(x, rows, acc) },
        #[cfg(all(feature = "std", target_arch = "aarch64", target_feature = "neon"))]
        Kind::NeonDot | Kind::NeonI8mm => unsafe { neon::dot_rows_s8(x, rows, acc) },
        _ => {
            let mut acc = acc;
            for (a, row) in acc.iter_mut().zip(rows) {
                *a = a.wrapping_add(plain_dot(x, row));
            }
            acc
        }
    }
}

/// `sum a_i b_i`, wrapping: the definition every path is checked against, and the SIMD paths'
/// tail of fewer elements than one vector.
#[inline]
fn plain_dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).fold(0i32, |acc, (&a, &b)| {
        acc.wrapping_add(i32::from(a) * i32::from(b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Deterministic bytes covering -128..=127 (the extremes included).
    fn bytes(n: usize, seed: u32) -> Vec<i8> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                match i % 17 {
                    0 => -128,
                    5 => 127,
                    _ => (s >> 24) as u8 as i8,
                }
            })
            .collect()
    }

    /// The staged-taps layout `pack_taps` reads, for four columns of `k` values.
    fn staged(columns: &[Vec<i8>], k: usize) -> Vec<u32> {
        let mut cols = std::vec![0xDEAD_BEEFu32; 2 * k];
        for i in 0..k {
            let lanes = [0, 1, 2, 3].map(|j| columns[j][i] as u8);
            cols[k + i] = u32::from_le_bytes(lanes).to_le();
        }
        cols
    }

    #[test]
    fn the_paths_are_listed_portable_first_and_detect_picks_the_last() {
        let paths: Vec<Path> = Path::available().collect();
        assert_eq!(paths[0], Path::portable());
        assert_eq!(Path::detect(), *paths.last().unwrap());
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        {
            let has = |name: &str| paths.iter().any(|p| p.name() == name);
            assert_eq!(has("avx2"), std::is_x86_feature_detected!("avx2"));
            let vnni = std::is_x86_feature_detected!("avxvnni");
            assert_eq!(has("avx-vnni"), has("avx2") && vnni);
            let vnni512 = std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw");
            assert_eq!(has("avx512-vnni"), has("avx2") && vnni512);
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        assert!(paths.iter().any(|p| p.name() == "neon"));
        // A run that means to test given paths (the CPU models of scripts/test-all.sh under
        // qemu-aarch64) names them, so that a path missing on that CPU fails instead of
        // passing untested.
        if let Ok(expected) = std::env::var("DDM_EXPECT_PATHS") {
            let names: Vec<&str> = paths.iter().map(|p| p.name()).collect();
            assert_eq!(names.join(","), expected);
        }
    }

    #[test]
    fn the_fast_kernels_are_the_ones_each_path_takes() {
        // The bytes are the same either way; these are the speed decisions: eight positions
        // per weight load on the NEON paths, linear layers four (plain NEON: eight) rows at a
        // time with vector requantisation on every SIMD path, for fan-ins that are multiples
        // of 16.
        let requant: Vec<u8> = (0..5)
            .flat_map(|_| [(1i32 << 30).to_le_bytes(), (-3i32).to_le_bytes()])
            .flatten()
            .collect();
        for path in Path::available() {
            let name = path.name();
            let pairs = matches!(name, "neon" | "neon-dotprod" | "neon-i8mm");
            assert_eq!(pairs_runs(path), pairs, "{name}");
            let simd = name != "portable";
            for (n, expected) in [(16, if simd { 4 } else { 0 }), (12, 0)] {
                let (x, w) = (bytes(n, 1), bytes(5 * n, 2));
                let mut y = [0i8; 5];
                let done = linear_rows(path, &x, &w, &[0; 20], &requant, 0, &mut y);
                assert_eq!(done, expected, "{name}: fan-in {n}");
            }
        }
    }

    #[test]
    fn every_path_packs_and_multiplies_columns_as_the_plain_dot_product() {
        for path in Path::available() {
            for k in [0, 4, 8, 12, 16, 20, 36, 68, 144, 288] {
                let w = bytes(k + 3, 1);
                let columns: Vec<_> = (0..4).map(|j| bytes(k, 10 + j)).collect();
                let mut cols = staged(&columns, k);
                pack_taps(path, &mut cols);
                let start = [1, -2, 3, i32::MAX];
                let acc = dot_1x4(path, &w, &cols, start);
                for (j, column) in columns.iter().enumerate() {
                    let expected = start[j].wrapping_add(plain_dot(&w[..k], column));
                    assert_eq!(acc[j], expected, "{} k {k} j {j}", path.name());
                }
            }
        }
    }

    #[test]
    fn every_path_multiplies_rows_as_the_plain_dot_product() {
        for path in Path::available() {
            for n in [0, 4, 8, 12, 16, 20, 32, 36, 64, 100, 256, 260] {
                // Lengths past the multiple of 4 and misaligned starts are ignored / allowed.
                let x = bytes(n + 4, 1);
                let (w0, w1, w2) = (bytes(n + 1, 2), bytes(n + 2, 3), bytes(n + 5, 4));
                let (x, w1) = (&x[1..], &w1[..]);
                let [a0, a1] = dot_2x1(path, x, &w0, w1, [5, -7]);
                assert_eq!(
                    a0,
                    5 + plain_dot(&x[..n], &w0[..n]),
                    "{} n {n}",
                    path.name()
                );
                assert_eq!(
                    a1,
                    -7 + plain_dot(&x[..n], &w1[..n]),
                    "{} n {n}",
                    path.name()
                );
                let acc = dot_3x1(path, x, &w0, w1, &w2, [5, -7, i32::MIN]);
                let third = i32::MIN.wrapping_add(plain_dot(&x[..n], &w2[..n]));
                assert_eq!(acc, [a0, a1, third], "{} n {n}", path.name());
            }
        }
    }

    #[test]
    fn every_path_maps_k_q_plus_b_as_round_to_i8() {
        use crate::quant::round_to_i8;
        // Every int8 input (twice over, so the vector width divides it), under slopes and
        // offsets that put `k q + b` on halves (the rounding ties), near the clamp, beyond
        // every int8 and to infinity, with zero points at the kernels' limits.
        let inputs: Vec<i8> = (0..512).map(|i| i as u8 as i8).collect();
        let maps = [
            (0.5, 0.0),
            (0.5, 0.25),
            (-1.5, 0.5),
            (0.999_999_9, -0.5),
            (0.07, 3.3),
            (1e-30, -0.5),
            (300.0, 0.0),
            (1e30, 1.0),
            (3e36, -1.0),
            (-f32::MAX, 0.0),
            (f32::NAN, 0.0),
            (1.0, f32::INFINITY),
        ];
        for path in Path::available() {
            for (k, b) in maps {
                for zy in [
                    -128,
                    -3,
                    0,
                    127,
                    1 << 15,
                    -(1 << 15),
                    (1 << 15) + 1,
                    i32::MIN,
                ] {
                    let expected: Vec<i8> = inputs
                        .iter()
                        .map(|&q| round_to_i8(k * f32::from(q) + b, zy))
                        .collect();
                    let mut out = std::vec![0i8; inputs.len()];
                    let done = affine_prefix(path, k, b, zy, Some(&inputs), &mut out);
                    for (o, &q) in out[done..].iter_mut().zip(&inputs[done..]) {
                        *o = round_to_i8(k * f32::from(q) + b, zy);
                    }
                    assert_eq!(out, expected, "{} k {k} b {b} zy {zy}", path.name());
                    let mut in_place = inputs.clone();
                    let done = affine_prefix(path, k, b, zy, None, &mut in_place);
                    assert_eq!(
                        in_place[..done],
                        expected[..done],
                        "{} in place",
                        path.name()
                    );
                }
            }
        }
    }

    #[test]
    fn every_path_sums_moments_exactly() {
        // Lengths around the 32-byte blocks, and 2^15 blocks (twice the int32 lanes' flush)
        // of extreme values.
        let mut long = std::vec![-128i8; (32 << 15) + 77];
        long[5] = 127;
        for values in [
            bytes(0, 1),
            bytes(31, 2),
            bytes(32, 3),
            bytes(1000, 4),
            long,
        ] {
            let sum: i64 = values.iter().map(|&v| i64::from(v)).sum();
            let sum_sq: i64 = values.iter().map(|&v| i64::from(v) * i64::from(v)).sum();
            for path in Path::available() {
                if let Some(got) = moments(path, &values) {
                    assert_eq!(got, (sum, sum_sq), "{} {}", path.name(), values.len());
                }
            }
        }
    }

    #[test]
    fn every_path_requantises_as_the_scalar_definition() {
        let accumulators = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30) - 1,
            -123_456_789,
            -65_537,
            -3,
            -1,
            0,
            1,
            2,
            77,
            1 << 20,
            987_654_321,
            i32::MAX,
        ];
        let multipliers = [0, 1, 1 << 30, 1_518_500_250, i32::MAX, i32::MIN];
        let mut cases = 0;
        for path in Path::available() {
            for shift in [-40, -31, -30, -17, -8, -1, 0, 1, 5] {
                for multiplier in multipliers {
                    for zy in [-128, -5, 0, 127, 300, i32::MIN] {
                        let requant = Requant { multiplier, shift };
                        for acc in accumulators.windows(4) {
                            let acc = [acc[0], acc[1], acc[2], acc[3]];
                            let expected = requantize(acc, requant, zy);
                            let got = requantize4(path, acc, requant, zy);
                            assert_eq!(got, expected, "{} {acc:?} {requant:?} {zy}", path.name());
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases > 3000);
    }

    #[test]
    fn the_int16_layouts_are_the_portable_layout() {
        // The paths that read the portable int16 layout pack it themselves as the portable
        // code does, word for word (the int8 layouts are checked by their products).
        let k = 36;
        let columns: Vec<_> = (0..4).map(|j| bytes(k, 20 + j)).collect();
        let mut portable = staged(&columns, k);
        dsp::pack_taps(&mut portable);
        for path in Path::available().filter(|&p| group_start(p, 1) == 8) {
            let mut cols = staged(&columns, k);
            pack_taps(path, &mut cols);
            assert_eq!(cols[..2 * k], portable[..2 * k], "{}", path.name());
        }
    }

    #[test]
    fn extreme_values_do_not_saturate() {
        // -128 * -128 summed over a long row: exact on every path (no int16 saturation).
        let n = 1024;
        let (x, w) = (std::vec![-128i8; n], std::vec![-128i8; n]);
        let columns: Vec<_> = (0..4).map(|_| std::vec![-128i8; n]).collect();
        for path in Path::available() {
            let expected = 16384 * n as i32;
            assert_eq!(
                dot_2x1(path, &x, &w, &w, [0, 0]),
                [expected; 2],
                "{}",
                path.name()
            );
            let mut cols = staged(&columns, n);
            pack_taps(path, &mut cols);
            assert_eq!(
                dot_1x4(path, &w, &cols, [0; 4]),
                [expected; 4],
                "{}",
                path.name()
            );
        }
    }
}
