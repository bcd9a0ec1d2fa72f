//! The measured cost model behind a [`crate::Stream`]'s choice between a cached frame and a
//! plain dense frame.
//!
//! A cached run pays for what it recomputes *and* for keeping every activation, cutting dirty
//! regions into crops and tracking masks; how those compare with a dense run depends on the
//! model, the input size and the machine (on a 2-core x86 with ~10 GB/s per core, a cached
//! MobileNetV2 frame that computes 55% of the MACs already costs as much as a dense one; a
//! cached P-Net frame at 640x480 costs more than a dense one even at 40%). So the stream does
//! not guess: it times its own frames. Dense frames give the dense cost (an exponential moving
//! average); cached frames and cache rebuilds (a cached run that computes everything, predicted
//! share 1) are fitted by exponentially weighted least squares as
//! `cached_ms = a + b * predicted_fraction`. A frame runs cached only where the fit predicts it
//! is cheaper than a dense one.

/// Forgetting factor per observation: older frames weigh `DECAY^age`.
const DECAY: f64 = 0.9;

/// Cached frames to time before the fit is trusted.
const MIN_CACHED: usize = 3;

/// Online estimate of dense and cached frame costs (milliseconds).
#[derive(Clone, Debug, Default)]
pub struct CostModel {
    dense_ms: Option<f64>,
    /// Dense frames seen. The first one's time only stands until the second: its session's
    /// first run pays one-off costs (first-touch allocation of every activation: P-Net 4.1 ms
    /// against 1.4), so the second replaces it when faster.
    dense_seen: usize,
    // weighted sums of the cached observations (p, t)
    w: f64,
    sp: f64,
    spp: f64,
    st: f64,
    spt: f64,
    /// Cached observations with p < 1, and rebuilds (p = 1), seen so far.
    cached_seen: usize,
    rebuilds_seen: usize,
}

impl CostModel {
    /// A dense frame took `ms` (the second replaces the first when faster, see `dense_seen`).
    pub fn observe_dense(&mut self, ms: f64) {
        self.dense_seen += 1;
        self.dense_ms = Some(match self.dense_ms {
            Some(d) if self.dense_seen == 2 => d.min(ms),
            Some(d) => DECAY * d + (1.0 - DECAY) * ms,
            None => ms,
        });
    }

    /// A cached frame (or a rebuild, `predicted` = 1) took `ms`.
    pub fn observe_cached(&mut self, predicted: f64, ms: f64) {
        let p = predicted.clamp(0.0, 1.0);
        self.w = DECAY * self.w + 1.0;
        self.sp = DECAY * self.sp + p;
        self.spp = DECAY * self.spp + p * p;
        self.st = DECAY * self.st + ms;
        self.spt = DECAY * self.spt + p * ms;
        if p >= 1.0 {
            self.rebuilds_seen += 1;
        } else {
            self.cached_seen += 1;
        }
    }

    /// The dense frame cost, once measured.
    pub fn dense_ms(&self) -> Option<f64> {
        self.dense_ms
    }

    /// Whether a dense frame, a cache rebuild and a few cached frames have been timed (before
    /// that the stream explores with its static rule).
    pub fn ready(&self) -> bool {
        self.dense_ms.is_some() && self.rebuilds_seen > 0 && self.cached_seen >= MIN_CACHED
    }

    /// Estimated cost of a cached frame predicted to compute share `p` of the MACs: the
    /// weighted least-squares line through the observations, or (with observations at a
    /// single share only) their weighted mean scaled proportionally.
    pub fn cached_ms(&self, p: f64) -> Option<f64> {
        if self.w <= 0.0 {
            return None;
        }
        let mean_p = self.sp / self.w;
        let mean_t = self.st / self.w;
        let var_p = self.spp / self.w - mean_p * mean_p;
        if var_p > 1e-4 {
            let b = (self.spt / self.w - mean_p * mean_t) / var_p;
            let a = mean_t - b * mean_p;
            // a cached run never costs less than at p = 0 nor grows with less work
            Some((a + b.max(0.0) * p).max(0.0))
        } else {
            Some(mean_t * (p.max(0.05) / mean_p.max(0.05)))
        }
    }

    /// Whether a frame predicted to compute share `p` should run cached: `Some(true/false)`
    /// once the model is [`CostModel::ready`], comparing the estimate with `margin` times the
    /// dense cost; `None` before.
    pub fn prefer_cached(&self, p: f64, margin: f64) -> Option<bool> {
        if !self.ready() {
            return None;
        }
        Some(self.cached_ms(p)? < margin * self.dense_ms?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_line_and_compares_with_dense() {
        let mut m = CostModel::default();
        assert_eq!(m.prefer_cached(0.1, 1.0), None);
        // the first dense frame's time stands until a faster second one replaces it
        m.observe_dense(40.0);
        assert_eq!(m.dense_ms(), Some(40.0));
        m.observe_dense(10.0);
        assert_eq!(m.dense_ms(), Some(10.0));
        m.observe_cached(1.0, 13.0);
        assert_eq!(m.prefer_cached(0.1, 1.0), None, "too few cached frames yet");
        for p in [0.2, 0.3, 0.25, 0.35] {
            m.observe_cached(p, 2.0 + 11.0 * p);
        }
        let est = m.cached_ms(0.3).unwrap();
        assert!((est - 5.3).abs() < 0.3, "{est}");
        assert_eq!(m.prefer_cached(0.3, 1.0), Some(true));
        assert_eq!(m.prefer_cached(0.9, 1.0), Some(false));
    }

    #[test]
    fn a_slow_cached_path_is_abandoned() {
        let mut m = CostModel::default();
        m.observe_dense(10.0);
        m.observe_dense(10.0);
        m.observe_cached(1.0, 14.0);
        for _ in 0..5 {
            m.observe_cached(0.4, 13.0);
        }
        assert_eq!(m.prefer_cached(0.4, 1.0), Some(false));
    }
}
