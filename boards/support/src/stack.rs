//! The stack's high-water mark, by painting: [`paint`] fills the unused stack with a pattern
//! at the start of `main`; [`high_water`] later finds how far down the pattern was
//! overwritten.
//!
//! The stack is cortex-m-rt's: from `_stack_start` (its top) down to `_stack_end`. Where a
//! linker setup moves the stack without moving `_stack_end` (flip-link puts it below the
//! static data), the region is not known and both functions do nothing.

use core::ptr::{addr_of, read_volatile, write_volatile};

/// The pattern painted into the unused stack.
const PAINT: u32 = 0xcdcd_cdcd;
/// Bytes below the current stack pointer left alone while painting (the painting code's own
/// frame and interrupt frames).
const RED_ZONE: usize = 256;

extern "C" {
    static _stack_start: u32;
    static _stack_end: u32;
}

/// `(bottom, top)` of the stack, if the current stack pointer lies inside it.
fn region() -> Option<(usize, usize)> {
    // Only the addresses of the linker symbols are taken, never their contents.
    let (top, bottom) = (
        addr_of!(_stack_start) as usize,
        addr_of!(_stack_end) as usize,
    );
    let sp = cortex_m::register::msp::read() as usize;
    (bottom < sp && sp <= top).then_some((bottom, top))
}

/// Paints the unused part of the stack. Call it once, early in `main`.
pub fn paint() {
    let Some((bottom, _)) = region() else { return };
    let sp = cortex_m::register::msp::read() as usize;
    let mut word = bottom.next_multiple_of(4);
    while word + 4 <= sp.saturating_sub(RED_ZONE) {
        // SAFETY: the word lies between the end of the static data and the stack pointer
        // (minus a margin): stack memory that nothing uses yet.
        unsafe { write_volatile(word as *mut u32, PAINT) };
        word += 4;
    }
}

/// `(bytes used at most, stack size)` since [`paint`]; `None` if the stack is not where
/// cortex-m-rt's symbols say.
pub fn high_water() -> Option<(usize, usize)> {
    let (bottom, top) = region()?;
    let mut word = bottom.next_multiple_of(4);
    // SAFETY: reads of stack memory below the stack pointer's high-water mark and above the
    // static data, all inside RAM.
    while word < top && unsafe { read_volatile(word as *const u32) } == PAINT {
        word += 4;
    }
    Some((top - word, top - bottom))
}
