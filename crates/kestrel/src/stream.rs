//! Streaming inference with convolutional caching: consecutive frames are mostly alike, so
//! only what changed is recomputed.
//!
//! Per frame, [`Stream::run_frame`]:
//! 1. compares the input tensor with the stream's *reference input* in blocks of
//!    `block` x `block` pixels (metric: [`ChangeMetric`]); a block whose change exceeds the
//!    threshold is *changed*;
//! 2. copies the changed blocks into the reference (only those: unchanged blocks keep their old
//!    values, so slow drift accumulates against the reference until it crosses the threshold and
//!    the block is refreshed; it can never build up unseen);
//! 3. runs the plan on the reference with the changed blocks marked dirty
//!    ([`kestrel_cpu::cached`]): steps whose inputs did not change are skipped, convolutions
//!    recompute only their dirty rectangles (or run densely above a measured dirty share),
//!    everything else runs densely when touched.
//!
//! Guarantee: the outputs equal a dense run on the reference input (up to float summation
//! order in the cropped convolutions), and the reference differs from the true frame only in
//! unchanged blocks, by at most the threshold per value with [`ChangeMetric::MaxAbs`]. Changed
//! regions are therefore computed exactly from the current pixels. A frame whose changed share
//! exceeds `scene_cut` resets the stream (dense run, new reference).

use crate::{Model, Session, SessionOptions};
use kestrel_core::{Error, Result, Tensor};
use kestrel_cpu::cached::{CacheOptions, CacheState, Dirty};

/// How a block's change is measured against the reference.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum ChangeMetric {
    /// Largest absolute change of any value in the block (the bounded default).
    MaxAbs,
    /// Mean absolute change over the block.
    MeanAbs,
    /// Block PSNR in dB against the reference (DeepCache); changed when below `threshold`
    /// (dB, given in [`StreamOptions::psnr_db`]).
    Psnr,
    /// L1 distance of 16-bin per-channel histograms, normalised to 0..=2 (DeepMon); changed
    /// when above [`StreamOptions::histogram_distance`].
    Histogram,
}

/// Options of a [`Stream`].
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Caching on; off runs every frame densely (same API, for comparison).
    pub enabled: bool,
    /// Block edge in input pixels.
    pub block: usize,
    /// Per-channel change threshold in input-tensor units (MaxAbs / MeanAbs). Use
    /// [`StreamOptions::threshold_from_levels`] to set it in 8-bit pixel levels.
    pub threshold: Vec<f32>,
    pub metric: ChangeMetric,
    pub psnr_db: f32,
    pub histogram_distance: f32,
    /// Changed share of the input above which the frame counts as a scene cut.
    pub scene_cut: f64,
    /// Camera-motion compensation: a global shift of the scene by a multiple of this many
    /// model-input pixels (0 = off) is searched for, up to `motion_range` pixels; when it
    /// explains the frame much better than no shift, the cached activations move with it
    /// ([`kestrel_cpu::CpuPlan::shift_cache`]; values whose stride does not divide the shift
    /// are recomputed).
    pub motion_step: usize,
    pub motion_range: usize,
    /// Before the stream has timed its own frames (see [`crate::stream_cost`]), a frame whose
    /// predicted computed share of MACs (the changed region propagated through the graph,
    /// [`kestrel_cpu::CpuPlan::predict_cached_fraction`]) is above this runs on the ordinary
    /// dense executor instead. Once timed, the measured costs decide. 1.0 never falls back
    /// (and turns the cost model off). Default measured in docs/CACHING.md.
    pub dense_above: f64,
    /// After a fallback to dense frames, only every `probe_every`-th frame is checked for a
    /// return to caching (change detection and prediction cost ~3% of a MobileNetV2 frame);
    /// the frames between run densely at no extra cost.
    pub probe_every: usize,
    /// Hysteresis: after a fallback the cache is rebuilt (a dense run that keeps every value,
    /// ~1.3x a plain dense frame) only when a probe predicts a cached frame below
    /// `rebuild_below` times the dense cost (or a share below `rebuild_below * dense_above`
    /// before the costs are timed), so a stream hovering at the crossover does not thrash.
    pub rebuild_below: f64,
    pub cache: CacheOptions,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            enabled: true,
            block: 8,
            threshold: vec![0.0],
            metric: ChangeMetric::MaxAbs,
            psnr_db: 40.0,
            histogram_distance: 0.1,
            scene_cut: 0.9,
            motion_step: 8,
            motion_range: 32,
            dense_above: 0.7,
            probe_every: 4,
            rebuild_below: 0.8,
            cache: CacheOptions::default(),
        }
    }
}

impl StreamOptions {
    /// Sets the threshold to `levels` 8-bit pixel levels (0..255) through the preset's
    /// normalisation: `levels * scale / std[c]` per channel.
    pub fn threshold_from_levels(&mut self, levels: f32, preset: &crate::Preset) {
        self.threshold = (0..3)
            .map(|c| levels * preset.scale / preset.std[c])
            .collect();
    }
}

/// What one frame did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FrameCacheStats {
    /// Share of input blocks that changed.
    pub changed_blocks: f64,
    /// MACs computed / MACs of a dense run.
    pub computed_fraction: f64,
    pub steps_skipped: usize,
    pub steps_partial: usize,
    pub steps_dense: usize,
    /// Of the conv/pool output positions recomputed, the share that moved by more than the
    /// layer threshold and was passed on as changed (1 when none was recomputed).
    pub passed_on_fraction: f64,
    pub scene_cut: bool,
    /// The camera motion `[dx, dy]` (model-input pixels) compensated on this frame.
    pub motion: [isize; 2],
    /// How the frame ran: `cached` (reusing the previous frame's values), `rebuild` (a dense
    /// run that keeps every value for the next frames), or `dense` (the ordinary executor: the
    /// predicted saving was too small; the cache is rebuilt later).
    pub mode: &'static str,
    /// Predicted share of MACs a cached run would compute (before per-layer pruning).
    pub predicted_fraction: f64,
    /// Largest |frame - reference| left in reused blocks (input-tensor units).
    pub max_input_deviation: f32,
}

/// Longest spacing of probes in a dense streak (frames).
const MAX_PROBE_INTERVAL: usize = 32;

/// A stream over one model. Several streams can share one [`Model`]; each keeps its own cache.
pub struct Stream {
    /// The session cached frames (and cache rebuilds) run on: its CPU plan keeps one step per
    /// node and only region-capable kernels (see `Session::set_for_caching`).
    session: Session,
    /// A plain session for dense frames on the CPU, so they run the same kernels as a session
    /// without caching (Winograd, fused residual Adds); its plan is built at the first dense
    /// frame. None on the GPU, where the caching session's dense path already is the GPU plan.
    dense: Option<Session>,
    cache: CacheState,
    reference: Option<Tensor>,
    opts: StreamOptions,
    /// Frames run densely in a row since the last fallback (0 while caching).
    dense_run: usize,
    /// In a dense streak: dense frames left before the next probe, and the current spacing of
    /// probes (doubles after each probe that stays dense, up to [`MAX_PROBE_INTERVAL`]).
    until_probe: usize,
    probe_interval: usize,
    /// Timed dense and cached frames: decides which way a frame runs.
    cost: crate::stream_cost::CostModel,
    /// On the GPU: the persistent plan cached frames run on (see [`crate::stream_gpu`]).
    gpu: Option<crate::stream_gpu::GpuCache>,
    /// On the GPU, a node of the graph has no GPU kernel: frames cache on the CPU instead.
    gpu_unavailable: bool,
}

impl Stream {
    pub fn new(model: &Model, session_opts: SessionOptions, opts: StreamOptions) -> Result<Stream> {
        if model.inputs().len() != 1 {
            return Err(Error::invalid(format!(
                "a stream needs a single-input model; '{}' has {} inputs",
                model.name(),
                model.inputs().len()
            )));
        }
        let mut session = Session::new(model, session_opts.clone())?;
        session.set_for_caching();
        let dense = if session.on_gpu() {
            None
        } else {
            Some(Session::new(model, session_opts)?)
        };
        Ok(Stream {
            session,
            dense,
            cache: CacheState::default(),
            reference: None,
            opts,
            dense_run: 0,
            until_probe: 0,
            probe_interval: 0,
            cost: Default::default(),
            gpu: None,
            gpu_unavailable: false,
        })
    }

    /// The session dense frames run on.
    fn dense_session(&mut self) -> &mut Session {
        self.dense.as_mut().unwrap_or(&mut self.session)
    }

    pub fn options(&self) -> &StreamOptions {
        &self.opts
    }

    pub fn model(&self) -> &Model {
        self.session.model()
    }

    /// The reference input the last frame's outputs were computed from. None before the first
    /// frame, when caching is off, and after a dense frame of a streak whose next frame is not a
    /// probe (the frame is only kept, a 0.6-3.7 MB copy, when the next frame compares with it).
    pub fn reference(&self) -> Option<&Tensor> {
        self.reference.as_ref()
    }

    /// Forgets the cached state (scene cut): the next frame is computed densely.
    pub fn reset(&mut self) {
        self.cache.reset();
        self.reference = None;
        self.dense_run = 0;
        self.until_probe = 0;
        if let Some(g) = self.gpu.as_mut() {
            g.warm = false;
        }
    }

    /// The stream's timed costs (dense frame, cached frame by predicted share).
    pub fn cost_model(&self) -> &crate::stream_cost::CostModel {
        &self.cost
    }

    /// A frame on the ordinary dense executor (exact on the true frame); the frame becomes the
    /// reference and the cache is dropped.
    /// `started`: when the frame began (its whole cost is what the cost model compares).
    fn run_dense(
        &mut self,
        input: Tensor,
        mut stats: FrameCacheStats,
        started: std::time::Instant,
    ) -> Result<(Vec<Tensor>, FrameCacheStats)> {
        self.cache.reset();
        // only a probe compares with the reference: keep this frame when the next one probes
        let next_probes =
            self.until_probe == 0 || self.cost.dense_ms().is_none() || self.opts.dense_above >= 1.0;
        self.reference = next_probes.then(|| input.clone());
        self.dense_run += 1;
        let outs = self.dense_session().run(vec![input])?;
        self.cost
            .observe_dense(started.elapsed().as_secs_f64() * 1e3);
        stats.mode = "dense";
        stats.computed_fraction = 1.0;
        stats.passed_on_fraction = 1.0;
        stats.max_input_deviation = 0.0;
        Ok((outs, stats))
    }

    /// Runs one frame (the model's single input). Returns the outputs and what was reused.
    pub fn run_frame(&mut self, input: Tensor) -> Result<(Vec<Tensor>, FrameCacheStats)> {
        let started = std::time::Instant::now();
        if !self.opts.enabled {
            let outs = self.dense_session().run(vec![input])?;
            return Ok((
                outs,
                FrameCacheStats {
                    changed_blocks: 1.0,
                    computed_fraction: 1.0,
                    ..Default::default()
                },
            ));
        }
        let shape = input.shape().to_vec();
        if self
            .reference
            .as_ref()
            .is_some_and(|r| r.shape() != shape.as_slice())
        {
            self.reset();
        }
        let input = if self.session.on_gpu() && !self.gpu_unavailable {
            match self.run_frame_gpu(input)? {
                Ok(done) => return Ok(done),
                Err(input) => input,
            }
        } else {
            input
        };
        let mut stats = FrameCacheStats::default();
        // between probes of a dense streak: no detection, no prediction (until the costs are
        // known, every frame is a probe)
        let adaptive = self.opts.dense_above < 1.0;
        if self.dense_run > 0
            && (self.cost.dense_ms().is_some() || !adaptive)
            && self.until_probe > 0
        {
            self.until_probe -= 1;
            stats.changed_blocks = 1.0;
            stats.predicted_fraction = 1.0;
            return self.run_dense(input, stats, started);
        }
        // the first frame builds the cache (there is nothing to predict from)
        let first = self.reference.is_none();
        if first {
            // the dense session's plan (kernel choice, weight packing: ~0.3 s for VGG-16) is
            // built with the first frame, which rebuilds the cache anyway, not on the first
            // dense frame of the stream; and it runs once on this frame (its buffers allocated
            // and first touched: P-Net at 640x480 43 ms against 23 warm), so that the first
            // dense frame is as fast as the later ones and the cost model times a warm one
            if let Some(d) = self.dense.as_mut() {
                d.prepare(std::slice::from_ref(&shape))?;
                d.run(vec![input.clone()])?;
            }
        }
        let plan = self.session.prepare(&[shape])?;
        // camera motion: a pan moves the cached activations with the scene (a cold cache only
        // predicts with it: the rebuild computes everything anyway)
        let mut moved = None;
        let mut cold_forced = Vec::new();
        if let (Some(r), true) = (self.reference.as_mut(), self.opts.motion_step > 0) {
            let still_below = self.opts.threshold.iter().fold(0f32, |m, &t| m.max(t));
            if let Some((dx, dy)) = estimate_shift(
                r,
                &input,
                self.opts.motion_step,
                self.opts.motion_range,
                still_below,
            )? {
                let usable = if self.cache.is_warm() {
                    plan.shift_cache(&mut self.cache, dx, dy)
                } else {
                    match plan.motion_forced(dx, dy) {
                        Some(f) => {
                            cold_forced = f;
                            true
                        }
                        None => false,
                    }
                };
                if usable {
                    if let [1, c, h, w] = *r.shape() {
                        let x = r.as_f32_mut()?;
                        for p in x.chunks_mut(h * w).take(c) {
                            kestrel_cpu::shift::shift_planes(p, h, w, dx, dy);
                        }
                    }
                    moved = Some((dx, dy));
                }
            }
        }
        let dirty = match self.reference.as_mut() {
            None => {
                self.reference = Some(input.clone());
                Dirty::All
            }
            Some(r) => {
                let d = detect_into(r, &input, &self.opts, &mut stats)?;
                if matches!(d, Dirty::All) {
                    Dirty::All
                } else {
                    match (moved, r.shape()) {
                        (Some((dx, dy)), &[1, _, h, w]) => with_motion_bands(d, h, w, dx, dy),
                        _ => d,
                    }
                }
            }
        };
        if let Some((dx, dy)) = moved {
            stats.motion = [dx, dy];
        }
        if matches!(dirty, Dirty::All) {
            stats.changed_blocks = 1.0;
        }
        stats.predicted_fraction = match &dirty {
            Dirty::All => 1.0,
            // (the prediction stops early past 95%: no cached frame pays there)
            d => plan.predict_cached_fraction(
                if self.cache.is_warm() {
                    self.cache.forced()
                } else {
                    &cold_forced
                },
                std::slice::from_ref(d),
                &self.opts.cache,
                0.95,
            ),
        };
        let p = stats.predicted_fraction;
        let in_streak = self.dense_run > 0;
        let go_dense = if first || !adaptive || p == 0.0 {
            // nothing changed: a warm cache skips every step; a cold one is rebuilt once, which
            // makes the following still frames free
            false
        } else if self.cost.dense_ms().is_none() {
            // time one dense frame first: the cached path is only worth it against that
            true
        } else {
            let margin = if in_streak {
                self.opts.rebuild_below
            } else {
                1.0
            };
            match self.cost.prefer_cached(p, margin) {
                Some(cached) => !cached,
                // not timed yet: explore with the static rule
                None => p > self.opts.dense_above,
            }
        };
        if go_dense {
            // Too little to reuse (or not yet timed): the ordinary executor on the true frame,
            // the cache dropped (rebuilt from a later frame that predicts a saving). Probes
            // back off while they keep failing.
            self.probe_interval = if in_streak {
                (self.probe_interval * 2).min(MAX_PROBE_INTERVAL)
            } else {
                self.opts.probe_every.max(1)
            };
            self.until_probe = self.probe_interval - 1;
            return self.run_dense(input, stats, started);
        }
        self.dense_run = 0;
        stats.mode = if self.cache.is_warm() {
            "cached"
        } else {
            "rebuild"
        };
        // the reference moves into the cache for the run and back out after it (no copy)
        let reference = self.reference.take().expect("set above");
        let rebuild = !self.cache.is_warm();
        let outs = plan.run_cached(
            &mut self.cache,
            vec![reference],
            vec![dirty],
            &self.opts.cache,
        );
        // the whole frame, change detection and prediction included
        let ms = started.elapsed().as_secs_f64() * 1e3;
        // the first frame pays for first-touch allocation of every activation: not a sample
        if outs.is_ok() && !first {
            self.cost.observe_cached(if rebuild { 1.0 } else { p }, ms);
        }
        self.reference = plan.take_cached_inputs(&mut self.cache).pop();
        let outs = outs?;
        if self.reference.is_none() {
            return Err(Error::invalid("cached run lost its reference input"));
        }
        let s = &self.cache.stats;
        stats.computed_fraction = s.macs_computed as f64 / s.macs_dense.max(1) as f64;
        stats.steps_skipped = s.steps_skipped;
        stats.steps_partial = s.steps_partial;
        stats.steps_dense = s.steps_dense;
        stats.passed_on_fraction = if s.positions_recomputed == 0 {
            1.0
        } else {
            s.positions_changed as f64 / s.positions_recomputed as f64
        };
        Ok((outs, stats))
    }
}

impl Stream {
    /// A GPU region run failed: on an `Auto` session a device fault drops the GPU cache and the
    /// frame (given back) continues on the CPU path, whose dense frames fall back with the
    /// session; anything else is the caller's error.
    #[allow(clippy::type_complexity)]
    fn gpu_failed(
        &mut self,
        e: Error,
        input: Tensor,
    ) -> Result<std::result::Result<(Vec<Tensor>, FrameCacheStats), Tensor>> {
        match e {
            Error::Device(why) if self.session.backend() == crate::Backend::Auto => {
                eprintln!(
                    "kestrel: caching stream: the GPU failed ({why}); caching continues on the CPU"
                );
                self.gpu = None;
                self.gpu_unavailable = true;
                self.reset();
                Ok(Err(input))
            }
            e => Err(e),
        }
    }

    /// A frame on the GPU cache (see [`crate::stream_gpu`]); the input given back when the
    /// graph cannot run wholly on the GPU (said once on stderr; the stream then caches on the
    /// CPU).
    #[allow(clippy::type_complexity)]
    fn run_frame_gpu(
        &mut self,
        input: Tensor,
    ) -> Result<std::result::Result<(Vec<Tensor>, FrameCacheStats), Tensor>> {
        let shape = input.shape().to_vec();
        if self.gpu.as_ref().is_none_or(|g| g.shape != shape) {
            self.gpu = None;
            self.reference = None;
            let plan = match self.session.gpu_region_plan(std::slice::from_ref(&shape)) {
                Ok(p) => p,
                // the persistent plan needs more device memory than a dense one: without it,
                // cached frames run on the CPU (dense frames stay on the GPU)
                Err(Error::Device(why)) => {
                    eprintln!(
                        "kestrel: caching stream: no GPU cache ({why}); cached frames run on the CPU"
                    );
                    self.gpu_unavailable = true;
                    return Ok(Err(input));
                }
                Err(e) => return Err(e),
            };
            match plan {
                Some(plan) => {
                    self.gpu = Some(crate::stream_gpu::GpuCache {
                        plan,
                        shape,
                        warm: false,
                        whole_ms: None,
                        whole_samples: 0,
                        cached_since_whole: 0,
                    })
                }
                None => {
                    eprintln!(
                        "kestrel: caching stream: a node of '{}' has no GPU kernel; cached frames run on the CPU",
                        self.session.model().name()
                    );
                    self.gpu_unavailable = true;
                    return Ok(Err(input));
                }
            }
        }
        let started = std::time::Instant::now();
        let mut stats = FrameCacheStats::default();
        let adaptive = self.opts.dense_above < 1.0;
        let cache = self.gpu.as_mut().expect("built above");
        // a dense streak (or the one whole run that times the dense cost): no change detection,
        // the frame becomes the reference, every dispatch runs
        let timing_run = adaptive && cache.wants_timing();
        if cache.warm && (timing_run || (adaptive && self.until_probe > 0)) {
            self.until_probe = self.until_probe.saturating_sub(1);
            stats.changed_blocks = 1.0;
            let outs = match cache.run(&input, kestrel_gpu::Band::All, &mut stats) {
                Ok(o) => o,
                Err(e) => return self.gpu_failed(e, input),
            };
            let cache = self.gpu.as_mut().expect("built above");
            cache.observe_whole(started.elapsed().as_secs_f64() * 1e3);
            self.reference = Some(input);
            self.dense_run += 1;
            return Ok(Ok((outs, stats)));
        }
        let band = match self.reference.as_mut() {
            None => {
                // (a copy: the frame goes on to the CPU path if the GPU fails)
                self.reference = Some(input.clone());
                stats.changed_blocks = 1.0;
                kestrel_gpu::Band::All
            }
            Some(r) => crate::stream_gpu::band_of(&detect_into(r, &input, &self.opts, &mut stats)?),
        };
        let t1 = std::time::Instant::now();
        let reference = self.reference.as_ref().expect("set above");
        let cache = self.gpu.as_mut().expect("built above");
        let warm_before = cache.warm;
        let outs = match cache.run(reference, band, &mut stats) {
            Ok(o) => o,
            Err(e) => return self.gpu_failed(e, input),
        };
        let cache = self.gpu.as_mut().expect("built above");
        cache.cached_since_whole += 1;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if trace_enabled() {
            eprintln!(
                "kestrel: gpu stream: detect {:.3} ms, run {:.3} ms, band {band:?}, computed {:.3}",
                (t1 - started).as_secs_f64() * 1e3,
                t1.elapsed().as_secs_f64() * 1e3,
                stats.computed_fraction
            );
        }
        // the policy: does a cached frame beat a whole run?
        if let (true, true, Some(whole)) = (adaptive, warm_before, cache.whole_ms) {
            self.probe_interval = crate::stream_gpu::next_probe_interval(
                ms,
                whole,
                self.dense_run > 0,
                self.probe_interval,
                self.opts.probe_every,
                MAX_PROBE_INTERVAL,
            );
            self.until_probe = self.probe_interval;
        }
        self.dense_run = 0;
        Ok(Ok((outs, stats)))
    }
}

/// `KESTREL_STREAM_TRACE` set: per-frame timings of the GPU stream on stderr.
fn trace_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KESTREL_STREAM_TRACE").is_some())
}

/// Adds to an input region, after a motion `(dx, dy)`, the band the motion uncovered and the
/// border row/column on the far side (positions whose windows now reach the border; see
/// `kestrel_cpu::shift`).
fn with_motion_bands(d: Dirty, h: usize, w: usize, dx: isize, dy: isize) -> Dirty {
    let mut bits = match &d {
        Dirty::Clean => vec![false; h * w],
        Dirty::All => return Dirty::All,
        Dirty::Mask { bits, .. } => bits.to_vec(),
    };
    let (ax, ay) = (dx.unsigned_abs().min(w), dy.unsigned_abs().min(h));
    for y in 0..h {
        for x in 0..w {
            let uncovered = (dx > 0 && x < ax)
                || (dx < 0 && x >= w - ax)
                || (dy > 0 && y < ay)
                || (dy < 0 && y >= h - ay);
            let far = (dx > 0 && x == w - 1)
                || (dx < 0 && x == 0)
                || (dy > 0 && y == h - 1)
                || (dy < 0 && y == 0);
            if uncovered || far {
                bits[y * w + x] = true;
            }
        }
    }
    Dirty::mask(h, w, bits)
}

/// The global shift `(dx, dy)` (multiples of `step`, at most `range` pixels) that best maps the
/// reference onto the frame, by mean absolute difference of channel 0 on a grid of ~4,096
/// points (every 4th pixel or sparser) over the overlap; `None` unless it beats no shift by half and is not (0, 0). No search when the
/// frame without a shift already differs by less than `still_below` on average (a still
/// camera: the common case costs one pass over the grid).
fn estimate_shift(
    reference: &Tensor,
    input: &Tensor,
    step: usize,
    range: usize,
    still_below: f32,
) -> Result<Option<(isize, isize)>> {
    let [1, _, h, w] = *input.shape() else {
        return Ok(None);
    };
    if reference.shape() != input.shape() || h < 4 * step || w < 4 * step {
        return Ok(None);
    }
    let (x, r) = (input.as_f32()?, reference.as_f32()?);
    // a sampling grid of about 4,096 points whatever the frame size (at least every 4th pixel)
    let grid = (((h * w) as f64 / 4096.0).sqrt() as usize).max(4);
    let mad = |dx: isize, dy: isize| -> f64 {
        // frame(y, x) ~ reference(y - dy, x - dx) over the overlap
        let (mut sum, mut n) = (0f64, 0usize);
        let y0 = dy.max(0) as usize;
        let y1 = (h as isize + dy.min(0)) as usize;
        let x0 = dx.max(0) as usize;
        let x1 = (w as isize + dx.min(0)) as usize;
        for y in (y0..y1).step_by(grid) {
            let ry = (y as isize - dy) as usize;
            for xx in (x0..x1).step_by(grid) {
                let rx = (xx as isize - dx) as usize;
                sum += (x[y * w + xx] - r[ry * w + rx]).abs() as f64;
                n += 1;
            }
        }
        if n == 0 {
            f64::INFINITY
        } else {
            sum / n as f64
        }
    };
    let still = mad(0, 0);
    if still < still_below as f64 {
        return Ok(None);
    }
    let k = (range / step.max(1)) as isize;
    let step = step as isize;
    let mut best = (0, 0, still);
    for j in -k..=k {
        for i in -k..=k {
            if i == 0 && j == 0 {
                continue;
            }
            let m = mad(i * step, j * step);
            if m < best.2 {
                best = (i * step, j * step, m);
            }
        }
    }
    Ok((best.2 < 0.5 * still && (best.0, best.1) != (0, 0)).then_some((best.0, best.1)))
}

/// [`detect_and_update`] with the results recorded in `stats`; a changed share above the
/// scene-cut level is a cut ([`Dirty::All`]).
fn detect_into(
    reference: &mut Tensor,
    input: &Tensor,
    opts: &StreamOptions,
    stats: &mut FrameCacheStats,
) -> Result<Dirty> {
    let (d, changed, dev) = detect_and_update(reference, input, opts)?;
    stats.changed_blocks = changed;
    stats.max_input_deviation = dev;
    if changed > opts.scene_cut {
        stats.scene_cut = true;
        return Ok(Dirty::All);
    }
    Ok(d)
}

/// Marks changed blocks, copies them into `reference`, and returns the pixel-resolution dirty
/// mask, the changed share of blocks and the largest deviation left in unchanged blocks.
fn detect_and_update(
    reference: &mut Tensor,
    input: &Tensor,
    opts: &StreamOptions,
) -> Result<(Dirty, f64, f32)> {
    let shape = input.shape().to_vec();
    let x = input.as_f32()?;
    let r = reference.as_f32_mut()?;
    // NCHW with batch 1 gets a spatial mask; anything else is all-or-nothing.
    let (c, h, w) = match shape.as_slice() {
        [1, c, h, w] if *c <= 4 => (*c, *h, *w),
        _ => {
            let changed = x.iter().zip(r.iter()).any(|(a, b)| a != b);
            if changed {
                r.copy_from_slice(x);
            }
            return Ok((
                if changed { Dirty::All } else { Dirty::Clean },
                changed as u8 as f64,
                0.0,
            ));
        }
    };
    let b = opts.block.max(1);
    let (bh, bw) = (h.div_ceil(b), w.div_ceil(b));
    let thr = |ch: usize| {
        opts.threshold
            .get(ch)
            .or(opts.threshold.last())
            .copied()
            .unwrap_or(0.0)
    };
    let blocks = bh * bw;
    // Per block and channel: the largest |frame - reference| (NaN counted as +inf), the sum of
    // |differences| and of their squares, gathered row by row (vectorisable inner loops).
    let mut bmax = vec![0f32; blocks * c];
    let mut bsum = vec![0f32; blocks * c];
    let mut bsq = vec![0f64; blocks * c];
    let need_sums = matches!(opts.metric, ChangeMetric::MeanAbs | ChangeMetric::Psnr);
    // MaxAbs and Histogram only need the per-block maxima: the |differences| of a block's rows
    // are first folded into one row (elementwise maxima: vectorised), then that row into blocks
    let mut colmax = vec![0f32; w];
    for ch in (0..c).filter(|_| !need_sums) {
        for by in 0..bh {
            colmax.iter_mut().for_each(|v| *v = 0.0);
            for y in by * b..((by + 1) * b).min(h) {
                let o = (ch * h + y) * w;
                for ((m, a), q) in colmax.iter_mut().zip(&x[o..o + w]).zip(&r[o..o + w]) {
                    let d = (a - q).abs();
                    // NaN counts as +inf
                    let d = if d.is_nan() { f32::INFINITY } else { d };
                    *m = if d > *m { d } else { *m };
                }
            }
            for (bx, cm) in colmax.chunks(b).enumerate() {
                bmax[(by * bw + bx) * c + ch] = cm.iter().fold(0f32, |m, &d| m.max(d));
            }
        }
    }
    for ch in (0..c).filter(|_| need_sums) {
        for y in 0..h {
            let o = (ch * h + y) * w;
            let (xr, rr) = (&x[o..o + w], &r[o..o + w]);
            let base = ((y / b) * bw) * c + ch;
            for (bx, (xs, rs)) in xr.chunks(b).zip(rr.chunks(b)).enumerate() {
                let (mut m, mut sum, mut nan) = (0f32, 0f32, false);
                for (a, q) in xs.iter().zip(rs) {
                    let d = (a - q).abs();
                    nan |= d.is_nan();
                    m = if d > m { d } else { m };
                    sum += d;
                }
                let k = base + bx * c;
                bmax[k] = if nan { f32::INFINITY } else { bmax[k].max(m) };
                if need_sums {
                    bsum[k] += sum;
                    bsq[k] += xs
                        .iter()
                        .zip(rs)
                        .map(|(a, q)| ((a - q) as f64).powi(2))
                        .sum::<f64>();
                }
            }
        }
    }
    let mut bits = vec![false; h * w];
    let mut changed_blocks = 0usize;
    let mut deviation = 0f32;
    for by in 0..bh {
        for bx in 0..bw {
            let (y0, y1) = (by * b, ((by + 1) * b).min(h));
            let (x0, x1) = (bx * b, ((bx + 1) * b).min(w));
            let n = ((y1 - y0) * (x1 - x0)) as f32;
            let mut changed = false;
            let mut block_max = 0f32;
            for ch in 0..c {
                let k = (by * bw + bx) * c + ch;
                let (max, sum, sq) = (bmax[k], bsum[k], bsq[k]);
                let t = thr(ch);
                block_max = block_max.max(max);
                changed |= match opts.metric {
                    ChangeMetric::MaxAbs => max > t,
                    ChangeMetric::MeanAbs => sum / n > t || max.is_infinite(),
                    ChangeMetric::Psnr => {
                        let mse = sq / n as f64;
                        // peak: the threshold-independent 8-bit range in tensor units is not
                        // known here; use the channel's |value| range of 2 (normalised inputs)
                        max.is_infinite()
                            || (mse > 0.0 && 10.0 * (4.0 / mse).log10() < opts.psnr_db as f64)
                    }
                    ChangeMetric::Histogram => {
                        let mut hist = [[0i32; 16]; 2];
                        let bin = |v: f32| ((v * 4.0 + 8.0).clamp(0.0, 15.0)) as usize;
                        for y in y0..y1 {
                            let o = (ch * h + y) * w;
                            for i in o + x0..o + x1 {
                                hist[0][bin(x[i])] += 1;
                                hist[1][bin(r[i])] += 1;
                            }
                        }
                        let l1: i32 = (0..16).map(|k| (hist[0][k] - hist[1][k]).abs()).sum();
                        l1 as f32 / n > opts.histogram_distance || max.is_infinite()
                    }
                };
            }
            if changed {
                changed_blocks += 1;
                for ch in 0..c {
                    for y in y0..y1 {
                        let o = (ch * h + y) * w;
                        r[o + x0..o + x1].copy_from_slice(&x[o + x0..o + x1]);
                    }
                }
                for y in y0..y1 {
                    bits[y * w + x0..y * w + x1]
                        .iter_mut()
                        .for_each(|v| *v = true);
                }
            } else {
                deviation = deviation.max(block_max);
            }
        }
    }
    let share = changed_blocks as f64 / (bh * bw).max(1) as f64;
    let dirty = Dirty::mask(h, w, bits);
    Ok((dirty, share, deviation))
}
