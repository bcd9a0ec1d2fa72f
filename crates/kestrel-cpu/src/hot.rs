//! Keeps a run's worker threads awake between layers.
//!
//! Every kernel forks its work on the rayon pool and joins it before the next step. Between two
//! steps the calling thread does a little serial work (buffer bookkeeping, small ops); rayon's
//! idle workers go to sleep after a few rounds without work and waking one takes tens of
//! microseconds in a VM, paid at every layer. Measured on this 2-core machine (40 layers of
//! 200 us parallel work with 20 us serial gaps): 164 us per layer as is, 127 us with the
//! workers kept spinning (the ideal is 120). [`run_hot`] parks one job on each other worker
//! for the duration of the run: it spins on [`rayon::yield_now`], which executes any pending
//! rayon job, so the workers pick up each layer's tasks at once. The workers are busy for the
//! whole run (as onnxruntime's spinning thread pool is); between runs they sleep as usual.

use std::sync::atomic::{AtomicBool, Ordering};

/// Sets the flag when dropped, so the spinners stop even if the run panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `f` on the current rayon pool with its other workers kept awake (see the module doc).
/// Must be called from inside the pool (e.g. within `ThreadPool::install`); with one thread it
/// simply runs `f`. `KESTREL_SPIN=0` turns it off (for measuring).
pub fn run_hot<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("KESTREL_SPIN").as_deref() == Ok("0"));
    let n = rayon::current_num_threads();
    if n <= 1 || off {
        return f();
    }
    let stop = AtomicBool::new(false);
    let owner = rayon::current_thread_index();
    rayon::scope(|s| {
        for _ in 1..n {
            s.spawn(|_| {
                // the caller itself may pop a spinner while it waits for a join: skip it there
                if rayon::current_thread_index() == owner {
                    return;
                }
                while !stop.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        f()
    })
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    #[test]
    fn parallel_work_inside_a_hot_run_completes_and_is_correct() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let total: u64 = pool.install(|| {
                super::run_hot(|| {
                    (0..50u64)
                        .map(|layer| (0..1000u64).into_par_iter().map(|i| i * layer).sum::<u64>())
                        .sum()
                })
            });
            assert_eq!(total, (0..50u64).sum::<u64>() * (0..1000u64).sum::<u64>());
        }
    }

    #[test]
    fn a_panicking_run_releases_the_spinners() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| super::run_hot(|| panic!("boom")))
        }));
        assert!(r.is_err());
        // the pool still works afterwards
        assert_eq!(pool.install(|| (0..10).into_par_iter().sum::<i32>()), 45);
    }
}
