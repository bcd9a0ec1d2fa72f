//! Convolutional caching on the GPU: a [`crate::Stream`] whose session runs on the GPU keeps a
//! persistent GPU plan (every value in its own device buffer, see
//! [`kestrel_gpu::GpuPlan::run_region`]) and runs each frame as a region run: the rows of the
//! input that changed (the same change detection and reference update as on the CPU) are
//! propagated through the graph, clean nodes are skipped, and the tiled, depthwise and 1x1
//! convolutions recompute only the workgroups covering their dirty rows.
//!
//! The granularity is a band of whole rows per value (the bounding rows of the changed blocks),
//! not the CPU executor's per-position masks: a small moving object costs its rows across the
//! full width. Every value stays on the device between frames; only the input goes up and the
//! outputs come back, as in a dense GPU run. Camera-motion compensation and per-layer
//! thresholds are CPU-only.
//!
//! Frame policy: the time of a whole run (every dispatch, no change detection) is measured on
//! the two frames after the first (the faster counts) and then every 64 cached frames and on
//! every dense frame (a moving average); a cached frame (change detection included)
//! that is not faster than `0.95 x` that starts a dense streak: the next frames run whole
//! without change detection (the frame becomes the reference, the cache stays warm), and a
//! probe every few frames (spacing doubling while probes fail, as on the CPU) checks whether
//! caching pays again. `dense_above >= 1.0` turns the policy off (every frame cached).

use crate::stream::FrameCacheStats;
use kestrel_core::{Result, Tensor};
use kestrel_cpu::cached::Dirty;
use kestrel_gpu::{Band, GpuPlan};

/// A stream's GPU cache: the persistent plan for one input shape.
pub(crate) struct GpuCache {
    pub plan: GpuPlan,
    pub shape: Vec<usize>,
    /// The plan's buffers hold a complete run (false before the first run and after a failed
    /// one: the next run computes everything).
    pub warm: bool,
    /// A whole run's wall time (ms): the faster of the first two timed runs, then a moving
    /// average of later ones.
    pub whole_ms: Option<f64>,
    /// Whole runs timed so far.
    pub whole_samples: usize,
    /// Cached frames since the last whole run: after [`RETIME_EVERY`] one frame runs whole to
    /// refresh the time.
    pub cached_since_whole: usize,
}

/// Cached frames between two timed whole runs.
pub(crate) const RETIME_EVERY: usize = 64;

/// A cached frame must beat a whole run by this factor to count as paying.
pub(crate) const PAYS_BELOW: f64 = 0.95;

/// The GPU frame policy after a cached frame that took `ms` against a whole run of `whole`
/// ms: 0 when it paid (keep caching); else the dense frames to run before the next probe,
/// `probe_every` after a caching streak, doubling (up to `max`) when a probe ends a dense
/// streak (`in_streak`) and still does not pay.
pub(crate) fn next_probe_interval(
    ms: f64,
    whole: f64,
    in_streak: bool,
    interval: usize,
    probe_every: usize,
    max: usize,
) -> usize {
    if ms < PAYS_BELOW * whole {
        return 0;
    }
    let next = if in_streak { interval * 2 } else { probe_every };
    next.clamp(1, max)
}

/// The bounding rectangle of a dirty mask.
pub(crate) fn band_of(d: &Dirty) -> Band {
    match d {
        Dirty::Clean => Band::Clean,
        Dirty::All => Band::All,
        Dirty::Mask { w, bits, .. } => {
            let w = (*w).max(1);
            let (mut r0, mut r1, mut c0, mut c1) = (usize::MAX, 0, usize::MAX, 0);
            for (y, row) in bits.chunks(w).enumerate() {
                let first = row.iter().position(|&b| b);
                let last = row.iter().rposition(|&b| b);
                if let (Some(a), Some(b)) = (first, last) {
                    (r0, r1) = (r0.min(y), y + 1);
                    (c0, c1) = (c0.min(a), c1.max(b + 1));
                }
            }
            if r0 == usize::MAX {
                Band::Clean
            } else {
                Band::rect(r0, r1, c0, c1)
            }
        }
    }
}

impl GpuCache {
    /// Runs the reference input with `band` changed since the last run (everything when the
    /// cache is cold) and fills the frame's statistics.
    pub fn run(
        &mut self,
        reference: &Tensor,
        band: Band,
        stats: &mut FrameCacheStats,
    ) -> Result<Vec<Tensor>> {
        let band = if self.warm { band } else { Band::All };
        stats.mode = if !self.warm {
            "rebuild"
        } else if band == Band::All {
            "dense"
        } else {
            "cached"
        };
        self.warm = false;
        let (outs, _, s) = self
            .plan
            .run_region(std::slice::from_ref(reference), &[band], false)?;
        self.warm = true;
        stats.predicted_fraction = s.macs_computed as f64 / s.macs_dense.max(1) as f64;
        stats.computed_fraction = stats.predicted_fraction;
        stats.steps_skipped = s.dispatches_skipped;
        stats.steps_partial = s.dispatches_partial;
        stats.steps_dense = s.dispatches_whole;
        stats.passed_on_fraction = 1.0;
        Ok(outs)
    }

    /// Whether the next frame should be a timed whole run: the first two after the rebuild
    /// (the first run after a rebuild can pay one-off costs, so the faster one counts) and one
    /// every [`RETIME_EVERY`] cached frames.
    pub fn wants_timing(&self) -> bool {
        self.warm && (self.whole_samples < 2 || self.cached_since_whole >= RETIME_EVERY)
    }

    /// Records the wall time of a whole run without change detection.
    pub fn observe_whole(&mut self, ms: f64) {
        self.whole_ms = Some(match self.whole_ms {
            None => ms,
            Some(w) if self.whole_samples < 2 => w.min(ms),
            Some(w) => 0.7 * w + 0.3 * ms,
        });
        self.whole_samples += 1;
        self.cached_since_whole = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_that_do_not_pay_start_a_dense_streak_whose_probes_back_off() {
        // pays: keep caching
        assert_eq!(next_probe_interval(5.0, 10.0, false, 0, 4, 32), 0);
        assert_eq!(next_probe_interval(9.4, 10.0, true, 8, 4, 32), 0);
        // does not pay (not 5% faster): a streak of probe_every frames
        assert_eq!(next_probe_interval(9.6, 10.0, false, 0, 4, 32), 4);
        // a failed probe at the end of a streak doubles the spacing, up to the cap
        assert_eq!(next_probe_interval(11.0, 10.0, true, 4, 4, 32), 8);
        assert_eq!(next_probe_interval(11.0, 10.0, true, 32, 4, 32), 32);
    }

    #[test]
    fn a_mask_becomes_its_bounding_rectangle() {
        let mut bits = vec![false; 6 * 5];
        bits[2 * 5 + 1] = true;
        bits[4 * 5 + 4] = true;
        assert_eq!(band_of(&Dirty::mask(6, 5, bits)), Band::rect(2, 5, 1, 5));
        assert_eq!(band_of(&Dirty::Clean), Band::Clean);
        assert_eq!(band_of(&Dirty::All), Band::All);
    }
}
