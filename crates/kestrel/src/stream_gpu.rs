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
}

/// The rows of an input that a dirty mask touches.
pub(crate) fn band_of(d: &Dirty) -> Band {
    match d {
        Dirty::Clean => Band::Clean,
        Dirty::All => Band::All,
        Dirty::Mask { w, bits, .. } => {
            let w = (*w).max(1);
            let first = bits.iter().position(|&b| b);
            let last = bits.iter().rposition(|&b| b);
            match (first, last) {
                (Some(a), Some(b)) => Band::Rows(a / w, b / w + 1),
                _ => Band::Clean,
            }
        }
    }
}

impl GpuCache {
    /// Runs the reference input with `band` changed since the last run (everything when the
    /// cache is cold) and fills the frame's statistics.
    pub fn run(
        &mut self,
        reference: Tensor,
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
        let (outs, _, s) = self.plan.run_region(vec![reference], &[band], false)?;
        self.warm = true;
        stats.predicted_fraction = s.macs_computed as f64 / s.macs_dense.max(1) as f64;
        stats.computed_fraction = stats.predicted_fraction;
        stats.steps_skipped = s.dispatches_skipped;
        stats.steps_partial = s.dispatches_partial;
        stats.steps_dense = s.dispatches_whole;
        stats.passed_on_fraction = 1.0;
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_becomes_its_bounding_rows() {
        let mut bits = vec![false; 6 * 5];
        bits[2 * 5 + 1] = true;
        bits[4 * 5 + 4] = true;
        assert_eq!(band_of(&Dirty::mask(6, 5, bits)), Band::Rows(2, 5));
        assert_eq!(band_of(&Dirty::Clean), Band::Clean);
        assert_eq!(band_of(&Dirty::All), Band::All);
    }
}
