//! How many CPU threads candle uses.
//!
//! candle's CPU kernels size their thread pools from environment variables read when the pools
//! are first used: `RAYON_NUM_THREADS` (matrix products through `gemm`, rayon's global pool,
//! candle's private pool) and `CANDLE_NUM_THREADS` (element-wise kernels). [`configure`] sets
//! both and builds rayon's global pool, so it must run before the first tensor operation.
//!
//! The default, [`DEFAULT_THREADS`], is 1. On the 2-core machine of BENCHMARKS.md the demo's
//! MLP trains at 97 steps/s on one thread and 84 on two (its kernels are too small to pay for
//! the hand-off), and two threads collapse whenever another process uses the second core.
//! Convolutional models gain from more threads (the preset UNet about 1.6x on two cores):
//! pass `--threads N` (or 0 for one per core) for them.

/// Threads used unless `--threads` says otherwise.
pub const DEFAULT_THREADS: usize = 1;

/// Makes candle (and rayon) use `threads` threads (0: one per available core). Call it once,
/// at the start of `main`, before any other thread exists.
pub fn configure(threads: usize) {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let value = threads.to_string();
    // Setting the environment is sound here: `main` calls this before starting any thread.
    std::env::set_var("RAYON_NUM_THREADS", &value);
    std::env::set_var("CANDLE_NUM_THREADS", &value);
    // Fails only if the global pool already exists, which then keeps its size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
}
