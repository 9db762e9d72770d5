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
use std::sync::Mutex;

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

    /// Runs `f` on every item, spread as [`Pool::for_each_range`] spreads them; every
    /// item runs even if another fails, and the first failure seen is returned.
    pub fn try_for_each_mut<T: Send, E: Send>(
        self,
        items: &mut [T],
        f: impl Fn(&mut T) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        // Each item is taken by one thread; the locks are never contended.
        let items: Vec<Mutex<&mut T>> = items.iter_mut().map(Mutex::new).collect();
        let failed = Mutex::new(None);
        self.for_each_range(items.len(), |range| {
            for item in &items[range] {
                let mut item = item.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = f(&mut item) {
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                }
            }
        });
        match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
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
    fn every_item_is_changed_once_and_the_first_failure_is_returned() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for which in [Pool::Rayon, Pool::Barrier] {
            let mut items: Vec<u32> = (0..40).collect();
            let bump = |x: &mut u32| {
                *x += 100;
                if *x % 10 == 7 {
                    Err(*x)
                } else {
                    Ok(())
                }
            };
            let result = pool.install(|| which.try_for_each_mut(&mut items, bump));
            assert_eq!(
                items,
                (100..140).collect::<Vec<_>>(),
                "{which:?}: every item ran once"
            );
            let failed = result.expect_err("items ending in 7 fail");
            assert!(
                [107, 117, 127, 137].contains(&failed),
                "{which:?}: {failed}"
            );
            let mut none: Vec<u32> = vec![1, 2, 3];
            assert_eq!(
                pool.install(|| which.try_for_each_mut(&mut none, |_| Ok::<_, ()>(()))),
                Ok(())
            );
        }
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
