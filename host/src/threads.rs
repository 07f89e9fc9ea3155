//! How many CPU threads ddm's kernels and candle use.
//!
//! The thread pools are sized from environment variables read when the pools are first used:
//! `RAYON_NUM_THREADS` (rayon's global pool, on which ddm's fused kernels of
//! [`crate::model::kernels`] and `gemm`'s matrix products run) and `CANDLE_NUM_THREADS`
//! (candle's own element-wise operations). [`configure`] sets both and builds rayon's global
//! pool, so it must run before the first tensor operation.
//!
//! The default, [`DEFAULT_THREADS`], is 0: one thread per core. On the 2-core machine of
//! BENCHMARKS.md ("Training speed against PyTorch") the 28x28 UNet preset trains 1.7x faster
//! on two threads than on one (3.0 against 1.8 steps/s), and the demo's MLP equally fast
//! (its products are kept on one thread: too small to share). With another process busy on
//! the second core, two threads cost the UNet about 15% against one, instead of collapsing as
//! candle's element-wise pool did (its spinning barrier now stays at one thread, see
//! [`configure`]). The results do not depend on the thread count: every sum the kernels split
//! over threads is added in a fixed order.

/// Threads used unless `--threads` says otherwise (0: one per available core).
pub const DEFAULT_THREADS: usize = 0;

/// Makes ddm's kernels, `gemm` and rayon use `threads` threads (0: one per available core)
/// and candle's element-wise operations one thread. Call it once, at the start of `main`,
/// before any other thread exists. On Linux with glibc it also makes the allocator keep freed
/// memory for reuse, so that the large tensors of a training step are not faulted in afresh
/// every step.
pub fn configure(threads: usize) {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let value = threads.to_string();
    // Setting the environment is sound here: `main` calls this before starting any thread.
    std::env::set_var("RAYON_NUM_THREADS", &value);
    // candle's element-wise pool waits for its workers at a spinning barrier: when another
    // process holds a core, every operation waits out a scheduler time slice. The heavy
    // element-wise work runs in ddm's kernels on rayon's pool instead (which lets the calling
    // thread take back work no other thread has started), so candle's pool stays at one.
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    // Fails only if the global pool already exists, which then keeps its size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    keep_freed_memory();
}

/// Makes glibc's allocator keep freed memory for reuse instead of handing it back to the
/// system.
///
/// A training step allocates and frees tensors of up to tens of MiB (activations, gradients).
/// By default glibc serves such sizes with fresh `mmap`s and trims the heap after large frees,
/// so every step faults the same memory in again and the kernel zeroes it: about a tenth of a
/// UNet step on the machine of BENCHMARKS.md. Serving blocks up to 32 MiB from the heap and
/// never trimming it removes that; the cost is that the process keeps its peak heap until it
/// exits, which for training and sampling is reached again every step anyway.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters (the values are in their valid ranges);
    // it is thread-safe.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
