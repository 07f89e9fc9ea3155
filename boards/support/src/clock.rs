//! Timing network calls: the [`Clock`] a board provides, and the DWT cycle counter that every
//! Cortex-M3/M4/M7/M33 board can use.

use cortex_m::peripheral::{DCB, DWT};

/// A monotonic tick counter. Ticks are what the report prints; `hz` converts them to time.
pub trait Clock {
    /// Name in the report's `ddm` line (`dwt-cycles`, `systick`, ...).
    fn name(&self) -> &'static str;
    /// Ticks per second.
    fn hz(&self) -> u32;
    /// Ticks since some fixed origin.
    fn now(&mut self) -> u64;
}

/// The DWT cycle counter (`CYCCNT`): CPU cycles, extended to 64 bits in software.
///
/// `CYCCNT` is 32 bits and wraps after `2^32` cycles (67 s at 64 MHz, 20 s at 216 MHz); the
/// extension counts one wrap whenever a reading is smaller than the previous one, so it is
/// exact as long as [`Clock::now`] is called at least once per wrap period, which holds for
/// timing one network call.
#[derive(Debug)]
pub struct DwtClock {
    hz: u32,
    last: u32,
    high: u64,
}

impl DwtClock {
    /// Enables tracing and the cycle counter (unlocking the DWT first, which the Cortex-M7
    /// requires). `hz` is the core clock, for converting cycles to time. Returns `None` on a
    /// core without a cycle counter.
    pub fn start(dcb: &mut DCB, dwt: &mut DWT, hz: u32) -> Option<Self> {
        dcb.enable_trace();
        DWT::unlock();
        if !DWT::has_cycle_counter() {
            return None;
        }
        dwt.set_cycle_count(0);
        dwt.enable_cycle_counter();
        Some(DwtClock {
            hz,
            last: 0,
            high: 0,
        })
    }
}

impl Clock for DwtClock {
    fn name(&self) -> &'static str {
        "dwt-cycles"
    }

    fn hz(&self) -> u32 {
        self.hz
    }

    fn now(&mut self) -> u64 {
        let count = DWT::cycle_count();
        if count < self.last {
            self.high += 1 << 32;
        }
        self.last = count;
        self.high | u64::from(count)
    }
}
