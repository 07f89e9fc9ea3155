//! The dual 16-bit multiply-accumulate inner loops of the int8 linear and convolution kernels,
//! and the im2col packing that feeds them: the crate's inline assembly.
//!
//! On ARMv7E-M (Cortex-M4 and M7: targets `thumbv7em-*`, where the build script sets
//! `cfg(ddm_dsp)`; stable Rust never sets `cfg(target_feature = "dsp")`) they are written in
//! inline assembly with the DSP extension, CMSIS-NN style: int8 weights are read four at a
//! time as one 32-bit word and sign-extended into two pairs of int16 with `SXTB16`
//! (`(w0, w2)`) and `SXTB16 .., ROR #8` (`(w1, w3)`), and `SMLAD` adds two products to an
//! accumulator in one instruction. Everywhere else (the host, Cortex-M0 and M33 builds) the
//! portable Rust versions below compute the same sums.
//!
//! Both versions compute exact integer sums modulo 2^32 (`SMLAD` wraps like
//! [`i32::wrapping_add`]; with int8 operands no product pair comes near overflowing), and
//! integer addition is associative and commutative, so they give the same `i32` as any other
//! order of the same multiply-accumulates: the kernels' results do not depend on the target.
//! The unit tests below check the portable versions and the packing against plain dot
//! products; the assembly is checked on the device against the host, bit for bit, by
//! `ddm-hil` (`cargo test -p ddm-hil` runs the int8 MLP, hence the linear loops;
//! `ddm-hil --model hil/fixtures/unet-8x8-int8.ddm` the convolution ones).
//!
//! # The packed column layout (`cols`)
//!
//! The convolution's im2col buffer holds four columns (output positions) `c_0..c_3` of int16
//! values, interleaved by groups of four reduction indices `k = 4g..4g + 4`: group `g` is the
//! eight words `cols[8g..8g + 8]`, and for position `j`
//!
//! ```text
//! cols[8g + 2j]     = (c_j[4g],     c_j[4g + 2])   low half, high half
//! cols[8g + 2j + 1] = (c_j[4g + 1], c_j[4g + 3])
//! ```
//!
//! the order `SXTB16` gives the weights in, so one `LDRD` per position and group feeds two
//! `SMLAD`s ([`pack_taps`] writes it, [`dot_1x4`] reads it).

// The portable versions of the DSP instructions (and what the tests check the packing with).

/// Sign-extends bytes 0 and 2 of `v` into the low and high halves (`SXTB16`).
#[cfg(any(test, not(ddm_dsp)))]
#[inline(always)]
fn sxtb16(v: u32) -> u32 {
    let lo = u32::from(v as u8 as i8 as i16 as u16);
    let hi = u32::from((v >> 16) as u8 as i8 as i16 as u16);
    lo | hi << 16
}

/// Sign-extends bytes 1 and 3 of `v` into the low and high halves (`SXTB16 .., ROR #8`).
#[cfg(any(test, not(ddm_dsp)))]
#[inline(always)]
fn sxtb16_ror8(v: u32) -> u32 {
    sxtb16(v >> 8)
}

/// `acc + a.lo b.lo + a.hi b.hi` on the signed int16 halves of `a` and `b`, wrapping (`SMLAD`).
#[cfg(any(test, not(ddm_dsp)))]
#[inline(always)]
fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let lo = i32::from(a as i16) * i32::from(b as i16);
    let hi = i32::from((a >> 16) as i16) * i32::from((b >> 16) as i16);
    acc.wrapping_add(lo).wrapping_add(hi)
}

/// The little-endian word of `bytes[..4]` (0 if shorter): one possibly unaligned `LDR`.
#[cfg(not(ddm_dsp))]
#[inline(always)]
fn word(bytes: &[i8]) -> u32 {
    let word = bytes
        .get(..4)
        .and_then(|b| <[i8; 4]>::try_from(b).ok())
        .unwrap_or_default();
    u32::from_le_bytes(word.map(|b| b as u8))
}

/// `(a.lo, b.lo)`: the low halves of `a` and `b` (`PKHBT .., LSL #16`).
#[cfg(any(test, not(ddm_dsp)))]
#[inline(always)]
fn lows(a: u32, b: u32) -> u32 {
    (a & 0xFFFF) | (b << 16)
}

/// `(a.hi, b.hi)`: the high halves of `a` and `b` (`PKHTB .., ASR #16`).
#[cfg(any(test, not(ddm_dsp)))]
#[inline(always)]
fn highs(a: u32, b: u32) -> u32 {
    (a >> 16) | (b & 0xFFFF_0000)
}

/// Packs staged taps into the packed layout (module docs), in place. `cols` holds `8 n`
/// words; on entry word `4 n + k` (for `k < 4 n`) holds the four positions' int8 values at
/// reduction index `k`, position `j` in byte `j` (little-endian). Group `g` is written over
/// words `8g..8g + 8`, which only overlap taps of groups already read, so the conversion
/// runs from the first group to the last in the same buffer.
///
/// Per group of four taps: `sxtb16` splits each tap word into the even and odd positions,
/// and `PKHBT` / `PKHTB` pair the low and the high halves of taps `k` and `k + 2`.
#[inline(never)]
pub(crate) fn pack_taps(cols: &mut [u32]) {
    let groups = cols.len() / 8;
    #[cfg(ddm_dsp)]
    {
        if groups == 0 {
            return;
        }
        // SAFETY: the loop runs `groups` times; iteration `g` reads the 4 words at
        // `4 groups + 4g` and then writes the 8 words at `8g`, all inside `cols` (`8 groups`
        // words, 4-byte aligned as LDM/STM need), exclusively borrowed for the block. A write
        // of iteration `g` ends at word `8g + 8 <= 4 groups + 4g + 4`, so it never reaches a
        // tap word not read yet. The explicit registers hold, in order: the four tap words
        // (r0, r1, r5, r8), their sign-extended halves, and the eight packed words in STM's
        // ascending register order (r0, r1, r2, r3, r4, r5, r8, r9); all are declared
        // clobbered, as are the flags.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldm {src}!, {{r0, r1, r5, r8}}",
                // Even positions (0, 2) and odd positions (1, 3) of taps k0..k3.
                "sxtb16 r2, r0, ror #8",
                "sxtb16 r0, r0",
                "sxtb16 r3, r1, ror #8",
                "sxtb16 r1, r1",
                "sxtb16 r9, r5, ror #8",
                "sxtb16 r5, r5",
                "sxtb16 r10, r8, ror #8",
                "sxtb16 r8, r8",
                // Position 0 and 2 of (k0, k2), then of (k1, k3), then positions 1 and 3.
                "pkhtb r4, r5, r0, asr #16",
                "pkhbt r0, r0, r5, lsl #16",
                "pkhtb r5, r8, r1, asr #16",
                "pkhbt r1, r1, r8, lsl #16",
                "pkhtb r8, r9, r2, asr #16",
                "pkhbt r2, r2, r9, lsl #16",
                "pkhtb r9, r10, r3, asr #16",
                "pkhbt r3, r3, r10, lsl #16",
                "stm {dst}!, {{r0, r1, r2, r3, r4, r5, r8, r9}}",
                "subs {n}, {n}, #1",
                "bne 2b",
                n = inout(reg) groups => _,
                src = inout(reg) cols[4 * groups..].as_ptr() => _,
                dst = inout(reg) cols.as_mut_ptr() => _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                options(nostack)
            );
        }
    }
    #[cfg(not(ddm_dsp))]
    for g in 0..groups {
        let t = 4 * groups + 4 * g;
        let Some(&[v0, v1, v2, v3]) = cols.get(t..t + 4) else {
            return;
        };
        let [v0, v1, v2, v3] = [v0, v1, v2, v3].map(u32::from_le);
        // Positions 0 and 2 (even) and 1 and 3 (odd) at k = 4g, 4g + 1, 4g + 2, 4g + 3.
        let (e0, o0) = (sxtb16(v0), sxtb16_ror8(v0));
        let (e1, o1) = (sxtb16(v1), sxtb16_ror8(v1));
        let (e2, o2) = (sxtb16(v2), sxtb16_ror8(v2));
        let (e3, o3) = (sxtb16(v3), sxtb16_ror8(v3));
        let packed = [
            lows(e0, e2),
            lows(e1, e3),
            lows(o0, o2),
            lows(o1, o3),
            highs(e0, e2),
            highs(e1, e3),
            highs(o0, o2),
            highs(o1, o3),
        ];
        if let Some(out) = cols.get_mut(8 * g..8 * g + 8) {
            out.copy_from_slice(&packed);
        }
    }
}

/// `acc_j + sum_k w[k] c_j[k]` for the four columns `c_j` of `cols` (packed layout, module
/// docs) over `k < 4 n`, where `n = min(w.len() / 4, cols.len() / 8)`: one output channel at
/// four output positions. `w` may have any alignment.
#[inline]
pub(crate) fn dot_1x4(w: &[i8], cols: &[u32], acc: [i32; 4]) -> [i32; 4] {
    let groups = (w.len() / 4).min(cols.len() / 8);
    #[cfg(ddm_dsp)]
    {
        if groups == 0 {
            return acc;
        }
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // One group: 4 weights against 4 positions, 16 MACs in 15 instructions.
        macro_rules! group {
            () => {
                concat!(
                    "ldr {w}, [{pw}], #4\n",
                    "sxtb16 {wa}, {w}\n",
                    "sxtb16 {w}, {w}, ror #8\n",
                    "ldrd {c0}, {c1}, [{pc}], #8\n",
                    "smlad {a0}, {wa}, {c0}, {a0}\n",
                    "smlad {a0}, {w}, {c1}, {a0}\n",
                    "ldrd {c0}, {c1}, [{pc}], #8\n",
                    "smlad {a1}, {wa}, {c0}, {a1}\n",
                    "smlad {a1}, {w}, {c1}, {a1}\n",
                    "ldrd {c0}, {c1}, [{pc}], #8\n",
                    "smlad {a2}, {wa}, {c0}, {a2}\n",
                    "smlad {a2}, {w}, {c1}, {a2}\n",
                    "ldrd {c0}, {c1}, [{pc}], #8\n",
                    "smlad {a3}, {wa}, {c0}, {a3}\n",
                    "smlad {a3}, {w}, {c1}, {a3}\n",
                )
            };
        }
        // SAFETY: the loop runs `groups` times and reads `4 groups` bytes from `w` and
        // `8 groups` words from `cols`, which `groups` bounds; both slices outlive the block.
        // `LDRD` needs the 4-byte alignment `&[u32]` has; the weights are read with `LDR`, which
        // ARMv7-M allows unaligned. Only the temporaries and the flags are clobbered, and the
        // group body does not touch the flags `LSRS` set (odd count in C, pairs left in Z).
        unsafe {
            core::arch::asm!(
                "lsrs {n}, {n}, #1",
                "bcc 2f",
                group!(),
                "2:",
                "beq 4f",
                "3:",
                group!(),
                group!(),
                "subs {n}, {n}, #1",
                "bne 3b",
                "4:",
                n = inout(reg) groups => _,
                pw = inout(reg) w.as_ptr() => _,
                pc = inout(reg) cols.as_ptr() => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                w = out(reg) _,
                wa = out(reg) _,
                c0 = out(reg) _,
                c1 = out(reg) _,
                options(pure, readonly, nostack)
            );
        }
        [a0, a1, a2, a3]
    }
    #[cfg(not(ddm_dsp))]
    {
        let mut acc = acc;
        for (bytes, group) in w.chunks_exact(4).zip(cols.chunks_exact(8)).take(groups) {
            let v = word(bytes);
            let (even, odd) = (sxtb16(v), sxtb16_ror8(v));
            for (a, pair) in acc.iter_mut().zip(group.chunks_exact(2)) {
                *a = smlad(odd, pair[1], smlad(even, pair[0], *a));
            }
        }
        acc
    }
}

/// `(acc_0 + sum_i x_i w0_i, acc_1 + sum_i x_i w1_i)` over `i < 4 n`, where
/// `n = min(x.len(), w0.len(), w1.len()) / 4`: two rows of a linear layer, in any alignment.
#[inline]
pub(crate) fn dot_2x1(x: &[i8], w0: &[i8], w1: &[i8], acc: [i32; 2]) -> [i32; 2] {
    let groups = x.len().min(w0.len()).min(w1.len()) / 4;
    #[cfg(ddm_dsp)]
    {
        if groups == 0 {
            return acc;
        }
        let [mut a0, mut a1] = acc;
        // One group: 4 inputs against 2 rows, 8 MACs in 13 instructions.
        macro_rules! group {
            () => {
                concat!(
                    "ldr {x}, [{px}], #4\n",
                    "sxtb16 {xa}, {x}\n",
                    "sxtb16 {x}, {x}, ror #8\n",
                    "ldr {w}, [{pw0}], #4\n",
                    "sxtb16 {wa}, {w}\n",
                    "sxtb16 {w}, {w}, ror #8\n",
                    "smlad {a0}, {wa}, {xa}, {a0}\n",
                    "smlad {a0}, {w}, {x}, {a0}\n",
                    "ldr {w}, [{pw1}], #4\n",
                    "sxtb16 {wa}, {w}\n",
                    "sxtb16 {w}, {w}, ror #8\n",
                    "smlad {a1}, {wa}, {xa}, {a1}\n",
                    "smlad {a1}, {w}, {x}, {a1}\n",
                )
            };
        }
        // SAFETY: the loop runs `groups` times and reads `4 groups` bytes from each of `x`,
        // `w0` and `w1`, which `groups` bounds; the slices outlive the block. Only `LDR` reads
        // memory, which ARMv7-M allows unaligned. Only the temporaries and the flags are
        // clobbered, and the group body does not touch the flags `LSRS` set.
        unsafe {
            core::arch::asm!(
                "lsrs {n}, {n}, #1",
                "bcc 2f",
                group!(),
                "2:",
                "beq 4f",
                "3:",
                group!(),
                group!(),
                "subs {n}, {n}, #1",
                "bne 3b",
                "4:",
                n = inout(reg) groups => _,
                px = inout(reg) x.as_ptr() => _,
                pw0 = inout(reg) w0.as_ptr() => _,
                pw1 = inout(reg) w1.as_ptr() => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                x = out(reg) _,
                xa = out(reg) _,
                w = out(reg) _,
                wa = out(reg) _,
                options(pure, readonly, nostack)
            );
        }
        [a0, a1]
    }
    #[cfg(not(ddm_dsp))]
    {
        let n = 4 * groups;
        let dot = |w: &[i8]| {
            x[..n].iter().zip(&w[..n]).fold(0i32, |acc, (&x, &w)| {
                acc.wrapping_add(i32::from(x) * i32::from(w))
            })
        };
        [acc[0].wrapping_add(dot(w0)), acc[1].wrapping_add(dot(w1))]
    }
}

/// `acc_r + sum_i x_i wr_i` for the three rows `w0`, `w1`, `w2` over `i < 4 n`, where
/// `n = min(x.len(), w0.len(), w1.len(), w2.len()) / 4`: three rows of a linear layer, in any
/// alignment (each input word is loaded and sign-extended once for the three rows).
#[inline]
pub(crate) fn dot_3x1(x: &[i8], w0: &[i8], w1: &[i8], w2: &[i8], acc: [i32; 3]) -> [i32; 3] {
    let groups = x.len().min(w0.len()).min(w1.len()).min(w2.len()) / 4;
    #[cfg(ddm_dsp)]
    {
        if groups == 0 {
            return acc;
        }
        let [mut a0, mut a1, mut a2] = acc;
        // One group: 4 inputs against 3 rows, 12 MACs in 18 instructions.
        macro_rules! group {
            () => {
                concat!(
                    "ldr {x}, [{px}], #4\n",
                    "sxtb16 {xa}, {x}\n",
                    "sxtb16 {x}, {x}, ror #8\n",
                    "ldr {w}, [{pw0}], #4\n",
                    "sxtb16 {wa}, {w}\n",
                    "sxtb16 {w}, {w}, ror #8\n",
                    "smlad {a0}, {wa}, {xa}, {a0}\n",
                    "smlad {a0}, {w}, {x}, {a0}\n",
                    "ldr {w}, [{pw1}], #4\n",
                    "sxtb16 {wa}, {w}\n",
                    "sxtb16 {w}, {w}, ror #8\n",
                    "smlad {a1}, {wa}, {xa}, {a1}\n",
                    "smlad {a1}, {w}, {x}, {a1}\n",
                    "ldr {w}, [{pw2}], #4\n",
                    "sxtb16 {wa}, {w}\n",
                    "sxtb16 {w}, {w}, ror #8\n",
                    "smlad {a2}, {wa}, {xa}, {a2}\n",
                    "smlad {a2}, {w}, {x}, {a2}\n",
                )
            };
        }
        // SAFETY: as in `dot_2x1`, with a third row: `4 groups` bytes are read from each of
        // `x`, `w0`, `w1` and `w2`, which `groups` bounds. The twelve operands take every
        // register inline assembly may use.
        unsafe {
            core::arch::asm!(
                "lsrs {n}, {n}, #1",
                "bcc 2f",
                group!(),
                "2:",
                "beq 4f",
                "3:",
                group!(),
                group!(),
                "subs {n}, {n}, #1",
                "bne 3b",
                "4:",
                n = inout(reg) groups => _,
                px = inout(reg) x.as_ptr() => _,
                pw0 = inout(reg) w0.as_ptr() => _,
                pw1 = inout(reg) w1.as_ptr() => _,
                pw2 = inout(reg) w2.as_ptr() => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                x = out(reg) _,
                xa = out(reg) _,
                w = out(reg) _,
                wa = out(reg) _,
                options(pure, readonly, nostack)
            );
        }
        [a0, a1, a2]
    }
    #[cfg(not(ddm_dsp))]
    {
        let n = 4 * groups;
        let (x, w0, w1, w2) = (&x[..n], &w0[..n], &w1[..n], &w2[..n]);
        let [a0, a1] = dot_2x1(x, w0, w1, [acc[0], acc[1]]);
        let [a2, _] = dot_2x1(x, w2, w2, [acc[2], 0]);
        [a0, a1, a2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u32) -> std::vec::Vec<i8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 24) as u8 as i8
            })
            .collect()
    }

    fn dot(a: &[i8], b: &[i8]) -> i32 {
        a.iter()
            .zip(b)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum()
    }

    #[test]
    fn sign_extension_and_dual_multiply_accumulate() {
        assert_eq!(sxtb16(0x80FF_7F01), 0xFFFF_0001);
        assert_eq!(sxtb16_ror8(0x80FF_7F01), 0xFF80_007F);
        assert_eq!(smlad(0xFFFF_0002, 0x0003_0004, 10), 10 + 8 - 3);
        assert_eq!(smlad(0x8000_8000, 0x8000_8000, 0), i32::MIN);
    }

    #[test]
    fn packed_columns_give_the_plain_dot_products() {
        for k in [0, 4, 8, 12, 36, 288] {
            let w = bytes(k, 1);
            let columns: std::vec::Vec<_> = (0..4).map(|j| bytes(k, 10 + j)).collect();
            // Stage the taps in the upper half, as the convolution does.
            let mut cols = std::vec![0xDEAD_BEEFu32; 2 * k];
            for i in 0..k {
                let lanes = [0, 1, 2, 3].map(|j| columns[j][i] as u8);
                cols[k + i] = u32::from_le_bytes(lanes).to_le();
            }
            pack_taps(&mut cols);
            let start = [1, -2, 3, i32::MAX];
            let acc = dot_1x4(&w, &cols, start);
            for (j, column) in columns.iter().enumerate() {
                assert_eq!(
                    acc[j],
                    start[j].wrapping_add(dot(&w, column)),
                    "k {k} j {j}"
                );
            }
        }
    }

    #[test]
    fn three_rows_give_the_plain_dot_products() {
        for n in [0, 4, 8, 12, 64, 256] {
            let (x, w0) = (bytes(n + 3, 1), bytes(n + 1, 2));
            let (w1, w2) = (bytes(n + 2, 3), bytes(n + 5, 4));
            let acc = dot_3x1(&x, &w0, &w1, &w2, [5, -7, 9]);
            assert_eq!(acc[0], 5 + dot(&x[..n], &w0[..n]), "n {n}");
            assert_eq!(acc[1], -7 + dot(&x[..n], &w1[..n]), "n {n}");
            assert_eq!(acc[2], 9 + dot(&x[..n], &w2[..n]), "n {n}");
        }
    }

    #[test]
    fn two_rows_give_the_plain_dot_products() {
        for n in [0, 4, 8, 12, 64, 256] {
            let (x, w0, w1) = (bytes(n + 3, 1), bytes(n + 1, 2), bytes(n + 2, 3));
            let acc = dot_2x1(&x, &w0, &w1, [5, -7]);
            assert_eq!(acc[0], 5 + dot(&x[..n], &w0[..n]), "n {n}");
            assert_eq!(acc[1], -7 + dot(&x[..n], &w1[..n]), "n {n}");
        }
    }
}
