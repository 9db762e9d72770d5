//! Which threads a pass's parallel work outside the products runs on.
//!
//! Why one choice per model: a decode step alternates products with small parts that
//! used to run on one thread or on the worker's rayon pool (attention, the sampling
//! prepass). Our Q4_1/Q8_0 kernels run on candle's barrier pool, whose thread spins for
//! a while after each product before it sleeps, while the dense kernels run on the
//! worker's rayon pool. Work handed to the other pool between two products found that
//! pool's thread asleep, and the spinning thread holding the core it needed: `perf` of
//! SmolLM2 at 16 samples on 2 cores put 97% of attention on the worker's own thread,
//! and the barrier thread spinning 23% of the run. So a model whose products run on the
//! barrier pool runs the rest of its parallel work there too, and a dense model keeps
//! the rayon pool ([`crate::linear::Linear::pool`] says which).

use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The thread pool a model's parallel work runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The current rayon pool (the worker's own, or its wide pool for a wide pass).
    Rayon,
    /// candle's barrier pool, which our quantized kernels use.
    Barrier,
}

impl Pool {
    /// Calls `f` on disjoint ranges that together cover `0..n`, spread over the pool's
    /// threads when the current rayon pool has more than one thread (the worker's
    /// choice: one thread for a small model's narrow passes) and there is more than one
    /// item; otherwise `f(0..n)` on this thread. Items are handed out one small range at
    /// a time, so unequal items (sequences of unequal length) balance.
    pub fn for_each_range(self, n: usize, f: impl Fn(Range<usize>) + Sync) {
        if n == 0 {
            return;
        }
        if n == 1 || rayon::current_num_threads() <= 1 {
            f(0..n);
            return;
        }
        match self {
            Pool::Barrier => on_barrier_pool(n, GRABS_PER_THREAD, f),
            Pool::Rayon => (0..n).into_par_iter().for_each(|i| f(i..i + 1)),
        }
    }
}

/// Ranges handed out per thread by [`on_barrier_pool`] by default, as candle's
/// `execute_chunked` does.
pub const GRABS_PER_THREAD: usize = 8;

/// Calls `f` on disjoint ranges covering `0..n` on candle's barrier pool (every thread
/// it has, whatever the current rayon pool), about `grabs` ranges per thread taken from
/// a shared cursor.
///
/// Why a choice: the thread that finishes first waits for the other's last range, on
/// average half a range; but a range also starts cold (a kernel's prefetch runs within
/// it), which costs where the work streams from memory. So a product of many rows
/// takes finer ranges than one row's ([`crate::quant_groups`] says how many).
///
/// Must not be called from inside a job of the barrier pool: its call lock is held
/// until the job returns (candle's own `execute_chunked` runs such a call inline on its
/// worker threads, but not on the calling thread either).
pub fn on_barrier_pool(n: usize, grabs: usize, f: impl Fn(Range<usize>) + Sync) {
    if n == 0 {
        return;
    }
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    if threads == 1 || n == 1 {
        f(0..n);
        return;
    }
    let chunk = n.div_ceil(threads * grabs.max(1)).max(1);
    let cursor = AtomicUsize::new(0);
    pool.execute(|_| loop {
        let start = cursor.fetch_add(chunk, Ordering::Relaxed);
        if start >= n {
            break;
        }
        f(start..n.min(start + chunk));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(pool: Pool, n: usize, threads: usize) -> Vec<usize> {
        let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let run = || {
            pool.for_each_range(n, |range| {
                for i in range {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(run);
        counts.into_iter().map(AtomicUsize::into_inner).collect()
    }

    #[test]
    fn every_item_runs_exactly_once_on_either_pool_and_any_thread_count() {
        for pool in [Pool::Rayon, Pool::Barrier] {
            for threads in [1, 2, 3] {
                for n in [0, 1, 2, 7, 16, 100] {
                    assert_eq!(
                        covered(pool, n, threads),
                        vec![1; n],
                        "{pool:?} {threads} {n}"
                    );
                }
            }
        }
    }
}
