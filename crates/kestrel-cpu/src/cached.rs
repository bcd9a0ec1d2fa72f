//! Convolutional caching on the CPU: run a plan on a new frame recomputing only what changed.
//!
//! Every value of the graph is kept between frames together with a *dirty region*: which of its
//! spatial positions changed since the previous frame. The caller marks the input's changed
//! positions; each step derives its output's dirty region from its inputs' and
//! - skips the step when nothing it reads changed (its cached output is still exact);
//! - for a 2-D convolution whose dirty share is below [`CacheOptions::dense_fraction`],
//!   recomputes only the dirty outputs: the dirty mask is cut into bands of rows, each band into
//!   runs of dirty columns, and each rectangle is computed from a crop of the input with its
//!   own explicit zero padding, then written into the cached output;
//! - otherwise computes the step densely (exact).
//!
//! Invariant (by induction over the steps): after `run_cached`, every value equals what a dense
//! run on the same input tensor would give. A step's output position is marked dirty whenever
//! any input position in its window is dirty (a superset of the true dependency), so a position
//! left clean reads only unchanged values and keeps its exact cached result.

use crate::plan::{check_input, value, Kernel, Step};
use crate::CpuPlan;
use crate::ExecState;
use kestrel_core::ops::conv::ConvGeometry;
use kestrel_core::ops::Op;
use kestrel_core::{Error, Result, Tensor};

/// Which spatial positions of a value changed since the previous frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Dirty {
    Clean,
    /// Everything (or a value without a spatial layout).
    All,
    /// Per position of the last two dims (`h` x `w`), shared by all channels. Built by
    /// [`Dirty::mask`]: `count` is the number of set bits, which is neither 0 nor `h * w`
    /// (those are `Clean` and `All`); the bits are shared, so cloning is cheap.
    Mask {
        h: usize,
        w: usize,
        bits: std::sync::Arc<Vec<bool>>,
        count: usize,
    },
}

impl Dirty {
    /// The region of a mask (`h * w` bits, row-major): `Clean`, `All` or a `Mask`.
    pub fn mask(h: usize, w: usize, bits: Vec<bool>) -> Dirty {
        debug_assert_eq!(bits.len(), h * w);
        let count = count_set(&bits);
        if count == 0 {
            Dirty::Clean
        } else if count == bits.len() {
            Dirty::All
        } else {
            Dirty::Mask {
                h,
                w,
                bits: std::sync::Arc::new(bits),
                count,
            }
        }
    }

    /// Share of positions that are dirty.
    pub fn fraction(&self) -> f64 {
        match self {
            Dirty::Clean => 0.0,
            Dirty::All => 1.0,
            Dirty::Mask { count, bits, .. } => *count as f64 / bits.len().max(1) as f64,
        }
    }

    pub fn is_clean(&self) -> bool {
        matches!(self, Dirty::Clean)
    }

    /// Union of two regions of the same value shape.
    fn union(a: &Dirty, b: &Dirty) -> Dirty {
        match (a, b) {
            (Dirty::Clean, x) | (x, Dirty::Clean) => x.clone(),
            (
                Dirty::Mask { h, w, bits, .. },
                Dirty::Mask {
                    h: h2,
                    w: w2,
                    bits: b2,
                    ..
                },
            ) if h == h2 && w == w2 => {
                let mut bits = bits.to_vec();
                or_into(&mut bits, b2);
                Dirty::mask(*h, *w, bits)
            }
            _ => Dirty::All,
        }
    }
}

/// The geometry of a convolution restricted to output rows `oy0..oy1` and columns `ox0..ox1`
/// (2-D, one image): its input is the crop `cy0..cy1` x `cx0..cx1` of the layer's input that
/// those outputs read, with explicit zero padding where their windows leave the map. Returns
/// it with the crop, or `None` when the windows lie wholly in padding.
pub fn crop_geometry(
    geom: &ConvGeometry,
    [oy0, oy1, ox0, ox1]: [usize; 4],
) -> Option<(ConvGeometry, [usize; 4])> {
    let span = |o0: usize, o1: usize, d: usize| {
        let lo = (o0 * geom.stride[d]) as isize - geom.pad_begin[d] as isize;
        let hi = ((o1 - 1) * geom.stride[d]) as isize - geom.pad_begin[d] as isize
            + ((geom.kernel[d] - 1) * geom.dilation[d]) as isize
            + 1; // exclusive
        (lo, hi)
    };
    let (ih, iw) = (geom.input[1], geom.input[2]);
    let (iy0, iy1) = span(oy0, oy1, 1);
    let (ix0, ix1) = span(ox0, ox1, 2);
    let (cy0, cy1) = (iy0.max(0) as usize, (iy1.min(ih as isize)).max(0) as usize);
    let (cx0, cx1) = (ix0.max(0) as usize, (ix1.min(iw as isize)).max(0) as usize);
    let (ch, cw) = (cy1.saturating_sub(cy0), cx1.saturating_sub(cx0));
    if ch == 0 || cw == 0 {
        return None;
    }
    let sub = ConvGeometry {
        input: [1, ch, cw],
        output: [1, oy1 - oy0, ox1 - ox0],
        pad_begin: [
            0,
            (cy0 as isize - iy0) as usize,
            (cx0 as isize - ix0) as usize,
        ],
        pad_end: [
            0,
            (iy1 - cy1 as isize) as usize,
            (ix1 - cx1 as isize) as usize,
        ],
        ..geom.clone()
    };
    Some((sub, [cy0, cy1, cx0, cx1]))
}

/// Number of `true` values (counted as bytes, vectorised).
fn count_set(bits: &[bool]) -> usize {
    bits.iter().map(|&b| b as usize).sum()
}

/// Tuning of the cached executor.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Per-layer change threshold, in 8-bit levels of the layer's output range (`range / 255`
    /// per level, range = max - min of that output on the last dense frame). After a
    /// convolution or pooling step is recomputed, an output position whose values all moved by
    /// at most this keeps its previous value and is not passed on as changed. 0 = only
    /// positions whose values did not change at all are pruned (exact).
    pub layer_levels: f32,
    /// Per-node overrides of `layer_levels` (by node name), as picked by `kestrel tune-cache`.
    pub layer_levels_by_node: std::collections::HashMap<String, f32>,
    /// A convolution whose dirty share of outputs is above this is computed densely: the cost
    /// of crops (halo recomputation, smaller GEMMs) outweighs the saving (see docs/CACHING.md
    /// for the measurement behind the default).
    pub dense_fraction: f64,
    /// Rows of output per band when cutting a dirty mask into rectangles.
    pub band_rows: usize,
    /// Runs of dirty columns in a band closer than this (at least the kernel width) are merged
    /// into one rectangle: fewer, larger crops (each crop has a fixed cost) for a little more
    /// recomputation.
    pub merge_gap: usize,
    /// Also re-threshold the outputs of convolution/pooling steps that ran densely (one more
    /// pass over the old and new output; the outputs of partially recomputed convolutions are
    /// always re-thresholded, while still in cache). Off by default: on a memory-bound CPU the
    /// extra pass costs more than the pruning saves (docs/CACHING.md).
    pub prune_dense: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            layer_levels: 0.0,
            layer_levels_by_node: Default::default(),
            dense_fraction: 0.5,
            band_rows: 8,
            merge_gap: 2,
            prune_dense: false,
        }
    }
}

/// What the last frame computed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CacheStats {
    /// MACs of a dense run.
    pub macs_dense: u64,
    /// MACs actually computed (halo overlap of crops included).
    pub macs_computed: u64,
    pub steps_skipped: usize,
    pub steps_partial: usize,
    pub steps_dense: usize,
    /// Output positions recomputed by thresholded steps, and how many of them moved by more
    /// than their layer's threshold (were passed on as changed).
    pub positions_recomputed: u64,
    pub positions_changed: u64,
}

/// The state a stream keeps between frames: all values and their dirty regions.
#[derive(Default)]
pub struct CacheState {
    exec: ExecState,
    dirty: Vec<Dirty>,
    step_macs: Vec<u64>,
    /// Per value and channel (one entry for values without an NCHW layout): max - min of its
    /// values on the last dense (cold) frame; the unit of the per-layer thresholds.
    range: Vec<Vec<f32>>,
    /// Values that must be recomputed on the next frame whatever their inputs' regions say
    /// (set by [`CpuPlan::shift_cache`] for values it could not shift).
    pub(crate) forced: Vec<bool>,
    warm: bool,
    pub stats: CacheStats,
}

impl CacheState {
    /// Forgets every cached value: the next frame is computed densely (scene cut).
    pub fn reset(&mut self) {
        self.warm = false;
        self.forced.clear();
        let vals: Vec<Tensor> = self
            .exec
            .values
            .iter_mut()
            .filter_map(|v| v.take())
            .collect();
        for t in vals {
            self.exec.release(t);
        }
    }

    /// Values the next cached run recomputes whatever their inputs' regions say (set by a
    /// motion shift; empty otherwise).
    pub fn forced(&self) -> &[bool] {
        &self.forced
    }

    /// The cached value `v`, if any (for in-place updates such as motion shifts).
    pub(crate) fn value_mut(&mut self, v: usize) -> Option<&mut Tensor> {
        self.exec.values.get_mut(v).and_then(|t| t.as_mut())
    }

    /// True once a frame has been computed.
    pub fn is_warm(&self) -> bool {
        self.warm
    }
}

/// max - min of a tensor's finite f32 values per channel of a 4-D NCHW (batch 1) tensor, or
/// over all values (one entry) for other tensors; empty for non-f32 tensors.
fn channel_ranges(t: &Tensor) -> Vec<f32> {
    use rayon::prelude::*;
    let Ok(v) = t.as_f32() else {
        return Vec::new();
    };
    let per = match spatial(t.shape()) {
        Some((h, w)) => (h * w).max(1),
        None => v.len().max(1),
    };
    v.par_chunks(per)
        .map(|c| {
            let (lo, hi) = c
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                    // NaN/inf compare false or are excluded by the finite check below
                    (if x < lo { x } else { lo }, if x > hi { x } else { hi })
                });
            let r = hi - lo;
            if r.is_finite() && r > 0.0 {
                r
            } else {
                0.0
            }
        })
        .collect()
}

/// Whether a value moved from `a` to `b` by more than `t`; a NaN difference counts as moved
/// (a cache never hides a NaN).
#[inline]
fn moved_beyond(a: f32, b: f32, t: f32) -> bool {
    let d = (a - b).abs();
    d > t || d.is_nan()
}

/// Threshold of channel `c` from per-channel thresholds (a single entry applies to all).
#[inline]
fn channel_threshold(t: &[f32], c: usize) -> f32 {
    t.get(c).or(t.last()).copied().unwrap_or(0.0)
}

/// After a dense recomputation of a 4-D NCHW (batch 1) output: every position outside
/// `candidates`, or whose values all moved by at most their channel's threshold from `prev`, gets
/// its previous values back (what downstream layers were computed from); the others are the new
/// dirty region. NaN changes count as changes. Returns the positions examined, the positions
/// changed and the region.
fn keep_unchanged(
    prev: &Tensor,
    new: &mut Tensor,
    candidates: &Dirty,
    thresholds: &[f32],
) -> Result<(u64, u64, Dirty)> {
    use rayon::prelude::*;
    let shape = new.shape().to_vec();
    let Some((h, w)) = spatial(&shape) else {
        return Ok((0, 0, candidates.clone()));
    };
    let c = shape[1];
    let plane = h * w;
    let p = prev.as_f32()?;
    let n = new.as_f32_mut()?;
    let mut bits: Vec<bool> = match candidates {
        Dirty::Clean => vec![false; plane],
        Dirty::All => vec![true; plane],
        Dirty::Mask { bits, .. } => bits.to_vec(),
    };
    let examined = count_set(&bits) as u64;
    const CHUNK: usize = 512;
    {
        let n: &[f32] = n;
        bits.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(k, bits)| {
                let start = k * CHUNK;
                let mut moved = vec![false; bits.len()];
                for ch in 0..c {
                    let t = channel_threshold(thresholds, ch);
                    let off = ch * plane + start;
                    let (pp, nn) = (&p[off..][..bits.len()], &n[off..][..bits.len()]);
                    for ((m, a), b) in moved.iter_mut().zip(pp).zip(nn) {
                        // `!(d <= t)`: NaN counts as a change
                        *m |= moved_beyond(*a, *b, t);
                    }
                }
                for (b, m) in bits.iter_mut().zip(moved) {
                    *b &= m;
                }
            });
    }
    let bits_ref = &bits;
    n.par_chunks_mut(plane)
        .zip(p.par_chunks(plane))
        .for_each(|(nn, pp)| {
            for ((x, &a), &b) in nn.iter_mut().zip(pp).zip(bits_ref) {
                if !b {
                    *x = a;
                }
            }
        });
    let changed = count_set(&bits) as u64;
    Ok((examined, changed, Dirty::mask(h, w, bits)))
}

/// Spatial dims `(h, w)` of a 4-D NCHW value with batch 1.
pub(crate) fn spatial(shape: &[usize]) -> Option<(usize, usize)> {
    (shape.len() == 4 && shape[0] == 1).then(|| (shape[2], shape[3]))
}

/// `dst[i] |= src[i]` over the common length, as bytes (vectorised).
#[inline]
fn or_into(dst: &mut [bool], src: &[bool]) {
    let n = dst.len().min(src.len());
    // SAFETY: bool has the size and alignment of u8 and is 0 or 1; viewing bools as bytes is
    // always valid, and the OR of two bytes that are 0 or 1 is 0 or 1, a valid bool, so writing
    // the bytes back keeps `dst` valid. The slices do not overlap (one is &mut).
    let (d, s) = unsafe {
        (
            std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, n),
            std::slice::from_raw_parts(src.as_ptr() as *const u8, n),
        )
    };
    for (a, b) in d.iter_mut().zip(s) {
        *a |= *b;
    }
}

/// `out[o] |= inp[o * stride + k * dilation - pad]` for every tap `k` of a 1-D window, over
/// the outputs whose tap lies inside `inp` (a vectorisable OR of shifted slices for stride 1).
fn or_window_1d(
    inp: &[bool],
    out: &mut [bool],
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
) {
    let n = inp.len() as isize;
    for k in 0..kernel {
        let offset = (k * dilation) as isize - pad as isize;
        // outputs o with 0 <= o * stride + offset < n
        let first = if offset >= 0 {
            0
        } else {
            ((-offset) as usize).div_ceil(stride)
        };
        let last = if n - 1 - offset < 0 {
            0
        } else {
            (((n - 1 - offset) as usize) / stride + 1).min(out.len())
        };
        if first >= last {
            continue;
        }
        let start = (first as isize * stride as isize + offset) as usize;
        if stride == 1 {
            or_into(&mut out[first..last], &inp[start..]);
        } else {
            for (o, &i) in out[first..last]
                .iter_mut()
                .zip(inp[start..].iter().step_by(stride))
            {
                *o |= i;
            }
        }
    }
}

/// Output mask of a sliding window (conv or pool) over an input mask: output position dirty iff
/// a tap of its window (dilation holes included, padding excluded) reads a dirty input position.
fn window_mask(
    inp: &[bool],
    (ih, iw): (usize, usize),
    (oh, ow): (usize, usize),
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
) -> Vec<bool> {
    // columns first, per input row: tmp[iy][ox]
    let mut tmp = vec![false; ih * ow];
    for iy in 0..ih {
        let row = &inp[iy * iw..][..iw];
        if row.iter().any(|&b| b) {
            or_window_1d(
                row,
                &mut tmp[iy * ow..][..ow],
                kernel[1],
                stride[1],
                dilation[1],
                pad[1],
            );
        }
    }
    // then rows: output row oy ORs the column-dilated input rows its window taps
    let mut out = vec![false; oh * ow];
    for ky in 0..kernel[0] {
        let offset = (ky * dilation[0]) as isize - pad[0] as isize;
        for oy in 0..oh {
            let iy = (oy * stride[0]) as isize + offset;
            if iy < 0 || iy >= ih as isize {
                continue;
            }
            or_into(&mut out[oy * ow..][..ow], &tmp[iy as usize * ow..][..ow]);
        }
    }
    out
}

/// The dirty region of a 2-D sliding-window op's output (conv or pool; fields in the 3-D
/// `[d, h, w]` form of the geometries) from its input's region.
fn window_dirty(
    input: &Dirty,
    output: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    dilation: [usize; 3],
    pad: [usize; 3],
) -> Dirty {
    match input {
        Dirty::Mask { h, w, bits, .. } => Dirty::mask(
            output[1],
            output[2],
            window_mask(
                bits,
                (*h, *w),
                (output[1], output[2]),
                [kernel[1], kernel[2]],
                [stride[1], stride[2]],
                [dilation[1], dilation[2]],
                [pad[1], pad[2]],
            ),
        ),
        d => d.clone(),
    }
}

/// Cuts a mask into rectangles `(y0, y1, x0, x1)` (half-open): bands of `band` rows, in each
/// band the runs of columns dirty in any of its rows, runs closer than `gap` merged.
fn rectangles(bits: &[bool], h: usize, w: usize, band: usize, gap: usize) -> Vec<[usize; 4]> {
    let mut rects = Vec::new();
    let band = band.max(1);
    for y0 in (0..h).step_by(band) {
        let y1 = (y0 + band).min(h);
        let mut cols = vec![false; w];
        for y in y0..y1 {
            or_into(&mut cols, &bits[y * w..(y + 1) * w]);
        }
        // trim the band to its dirty rows
        let rows: Vec<usize> = (y0..y1)
            .filter(|&y| bits[y * w..(y + 1) * w].iter().any(|&b| b))
            .collect();
        let (Some(&ry0), Some(&ry1)) = (rows.first(), rows.last()) else {
            continue;
        };
        let mut x = 0;
        let mut runs: Vec<[usize; 2]> = Vec::new();
        while x < w {
            if cols[x] {
                let s = x;
                while x < w && cols[x] {
                    x += 1;
                }
                match runs.last_mut() {
                    Some(r) if s - r[1] < gap => r[1] = x,
                    _ => runs.push([s, x]),
                }
            } else {
                x += 1;
            }
        }
        rects.extend(runs.into_iter().map(|[a, b]| [ry0, ry1 + 1, a, b]));
    }
    rects
}

impl CpuPlan {
    /// Runs the plan on a frame, reusing the previous frame's values where `input_dirty` (one
    /// region per graph input, in order) says nothing changed. The first frame, and the first
    /// after [`CacheState::reset`], is computed densely whatever the regions say.
    pub fn run_cached(
        &self,
        cache: &mut CacheState,
        inputs: Vec<Tensor>,
        input_dirty: Vec<Dirty>,
        opts: &CacheOptions,
    ) -> Result<Vec<Tensor>> {
        let g = self.graph();
        if self.storage() != crate::StoragePrecision::F32 {
            return Err(Error::invalid(
                "convolutional caching runs with f32 storage only (fp16 storage is not supported with --cache on yet)",
            ));
        }
        if inputs.len() != g.inputs.len() || input_dirty.len() != g.inputs.len() {
            return Err(Error::invalid(format!(
                "cached run: model has {} inputs, {} tensors and {} regions given",
                g.inputs.len(),
                inputs.len(),
                input_dirty.len()
            )));
        }
        if cache.exec.values.len() != g.values.len() {
            cache.exec.values.resize_with(g.values.len(), || None);
            cache.warm = false;
        }
        if cache.step_macs.len() != self.steps.len() {
            cache.step_macs = self.step_macs().to_vec();
        }
        cache.exec.forget_lent();
        let warm = cache.warm;
        cache.dirty = vec![Dirty::Clean; g.values.len()];
        for ((gi, t), d) in g.inputs.iter().zip(inputs).zip(input_dirty) {
            if g.constant(gi.value).is_some() {
                continue;
            }
            check_input(g, gi.value, &t)?;
            if let Some(old) = cache.exec.values[gi.value].replace(t) {
                cache.exec.release(old);
            }
            cache.dirty[gi.value] = if warm { d } else { Dirty::All };
        }
        let mut stats = CacheStats::default();
        if cache.range.len() != g.values.len() {
            cache.range = vec![Vec::new(); g.values.len()];
        }
        self.pool.install(|| {
            crate::hot::run_hot(|| -> Result<()> {
                for (si, step) in self.steps.iter().enumerate() {
                    let node = &g.nodes[step.node];
                    let macs = cache.step_macs[si];
                    stats.macs_dense += macs;
                    let forced = step
                        .outputs
                        .iter()
                        .any(|&o| cache.forced.get(o).copied().unwrap_or(false));
                    let out_dirty = if forced {
                        Dirty::All
                    } else {
                        self.propagate(step, &cache.dirty, warm)
                    };
                    if out_dirty.is_clean() {
                        stats.steps_skipped += 1;
                        continue;
                    }
                    // Conv and pooling outputs are re-thresholded (see `CacheOptions::layer_levels`).
                    let thresholded = warm
                        && step.outputs.len() == 1
                        && matches!(
                            &step.kernel,
                            Kernel::Conv(pc) if pc.geom.spatial_rank == 2 && pc.geom.batch == 1
                        ) | matches!(
                            &step.kernel,
                            Kernel::Pool(pp) if pp.geom.spatial_rank == 2 && pp.geom.batch == 1
                        );
                    let levels = opts
                        .layer_levels_by_node
                        .get(&node.name)
                        .copied()
                        .unwrap_or(opts.layer_levels)
                        .max(0.0);
                    // After a motion shift the uncovered positions of every value hold fill values,
                    // not outputs of their inputs: a recomputed position equal to its fill must still
                    // be passed on, so nothing is pruned on such a frame (threshold -1: every
                    // recomputed position counts as changed).
                    let moved = !cache.forced.is_empty();
                    let threshold: Vec<f32> = if moved {
                        vec![-1.0]
                    } else {
                        cache.range[step.outputs[0]]
                            .iter()
                            .map(|r| levels / 255.0 * r)
                            .collect()
                    };
                    let result_dirty = match (&step.kernel, &out_dirty) {
                        (Kernel::Pool(pp), Dirty::Mask { h, w, bits, .. })
                            if pp.geom.spatial_rank == 2
                                && pp.geom.batch == 1
                                && out_dirty.fraction() <= opts.dense_fraction
                                && cache.exec.values[step.outputs[0]].is_some() =>
                        {
                            let rects = rectangles(bits, *h, *w, opts.band_rows, 1);
                            let mut out =
                                cache.exec.values[step.outputs[0]].take().expect("checked");
                            let r = (|| -> Result<()> {
                                let x = value(g, &cache.exec, step.inputs[0].expect("pool input"))?;
                                pp.run_rects(x.as_f32()?, out.as_f32_mut()?, &rects);
                                Ok(())
                            })();
                            cache.exec.values[step.outputs[0]] = Some(out);
                            r.map_err(|e| e.at_node(&node.name, node.op.name()))?;
                            let plane = (h * w).max(1) as u64;
                            let area: usize =
                                rects.iter().map(|r| (r[1] - r[0]) * (r[3] - r[2])).sum();
                            stats.macs_computed += macs * area as u64 / plane;
                            stats.steps_partial += 1;
                            out_dirty.clone()
                        }
                        (_, Dirty::Mask { h, w, bits, .. })
                            if out_dirty.fraction() <= opts.dense_fraction
                                && self.pointwise_in_regions(step, cache) =>
                        {
                            let computed = self
                                .pointwise_regions(cache, step, bits, *h, *w)
                                .map_err(|e| e.at_node(&node.name, node.op.name()))?;
                            let plane = (h * w).max(1) as u64;
                            stats.macs_computed += macs * computed / plane;
                            stats.steps_partial += 1;
                            out_dirty.clone()
                        }
                        (Kernel::Conv(pc), Dirty::Mask { h, w, bits, .. })
                            if pc.supports_regions()
                                && pc.geom.spatial_rank == 2
                                && pc.geom.batch == 1
                                && out_dirty.fraction() <= opts.dense_fraction =>
                        {
                            let (computed, changed) = self
                                .conv_regions(cache, step, bits, *h, *w, &threshold, opts)
                                .map_err(|e| e.at_node(&node.name, node.op.name()))?;
                            let plane = (h * w).max(1) as u64;
                            stats.macs_computed += macs * computed / plane;
                            stats.positions_recomputed += computed;
                            stats.positions_changed += count_set(&changed) as u64;
                            stats.steps_partial += 1;
                            Dirty::mask(*h, *w, changed)
                        }
                        _ => {
                            let old: Vec<Option<Tensor>> = step
                                .outputs
                                .iter()
                                .map(|&o| cache.exec.values[o].take())
                                .collect();
                            self.run_step_with(&mut cache.exec, step, false)
                                .map_err(|e| e.at_node(&node.name, node.op.name()))?;
                            stats.macs_computed += macs;
                            stats.steps_dense += 1;
                            let mut d = out_dirty.clone();
                            if thresholded && opts.prune_dense {
                                let o = step.outputs[0];
                                if let (Some(prev), Some(new)) =
                                    (old[0].as_ref(), cache.exec.values[o].as_mut())
                                {
                                    if prev.shape() == new.shape() {
                                        let (n, changed, region) =
                                            keep_unchanged(prev, new, &out_dirty, &threshold)?;
                                        stats.positions_recomputed += n;
                                        stats.positions_changed += changed;
                                        d = region;
                                    }
                                }
                            } else if !warm {
                                for &o in &step.outputs {
                                    if let Some(t) = cache.exec.values[o].as_ref() {
                                        cache.range[o] = channel_ranges(t);
                                    }
                                }
                            }
                            for t in old.into_iter().flatten() {
                                cache.exec.release(t);
                            }
                            d
                        }
                    };
                    for &o in &step.outputs {
                        cache.dirty[o] = result_dirty.clone();
                    }
                }
                Ok(())
            })
        })?;
        cache.exec.forget_lent();
        cache.warm = true;
        cache.forced.clear();
        cache.stats = stats;
        g.outputs
            .iter()
            .map(|&o| value(g, &cache.exec, o).cloned())
            .collect()
    }

    /// Takes the graph inputs of the last cached run back out of the cache (in input order; a
    /// missing one is skipped), so a caller can keep them without a copy. The next
    /// [`CpuPlan::run_cached`] gets them again.
    pub fn take_cached_inputs(&self, cache: &mut CacheState) -> Vec<Tensor> {
        let g = self.graph();
        g.inputs
            .iter()
            .filter(|gi| g.constant(gi.value).is_none())
            .filter_map(|gi| cache.exec.values.get_mut(gi.value).and_then(|v| v.take()))
            .collect()
    }

    /// Predicts the share of a dense run's MACs that [`CpuPlan::run_cached`] would compute for
    /// these input regions, from the regions alone (no arithmetic): each step's region is
    /// propagated as in a cached run, without the per-layer pruning (so this is an upper
    /// bound); a convolution under `dense_fraction` counts the rectangles it would recompute,
    /// any other touched step its full MACs. The prediction assumes a warm cache (a cold one computes everything).
    /// It stops as soon as the share passes `stop_above` (returning a share above it).
    /// Values flagged in `forced` (recomputed anyway, e.g. after a motion shift:
    /// [`CacheState::forced`], [`CpuPlan::motion_forced`]) count as all dirty.
    pub fn predict_cached_fraction(
        &self,
        forced: &[bool],
        input_dirty: &[Dirty],
        opts: &CacheOptions,
        stop_above: f64,
    ) -> f64 {
        let g = self.graph();
        let mut dirty = vec![Dirty::Clean; g.values.len()];
        for (gi, d) in g.inputs.iter().zip(input_dirty) {
            dirty[gi.value] = d.clone();
        }
        let step_macs = self.step_macs();
        let total: f64 = step_macs.iter().map(|&m| m as f64).sum();
        let mut computed = 0f64;
        for (step, &macs) in self.steps.iter().zip(step_macs) {
            if total > 0.0 && computed / total > stop_above {
                return computed / total;
            }
            let macs = macs as f64;
            let is_forced = step
                .outputs
                .iter()
                .any(|&o| forced.get(o).copied().unwrap_or(false));
            let d = if is_forced {
                Dirty::All
            } else {
                self.propagate(step, &dirty, true)
            };
            let share = match (&step.kernel, &d) {
                (_, Dirty::Clean) => 0.0,
                (Kernel::Conv(pc), Dirty::Mask { h, w, bits, .. })
                    if pc.supports_regions()
                        && pc.geom.spatial_rank == 2
                        && pc.geom.batch == 1
                        && d.fraction() <= opts.dense_fraction =>
                {
                    // the rectangles a cached run would compute (they cover the mask)
                    let gap = pc.geom.kernel[2].max(opts.merge_gap);
                    let area: usize = rectangles(bits, *h, *w, opts.band_rows, gap)
                        .iter()
                        .map(|r| (r[1] - r[0]) * (r[3] - r[2]))
                        .sum();
                    area as f64 / (h * w).max(1) as f64
                }
                _ => 1.0,
            };
            computed += macs * share;
            for &o in &step.outputs {
                dirty[o] = d.clone();
            }
        }
        if total > 0.0 {
            computed / total
        } else {
            0.0
        }
    }

    /// The dirty region of a step's outputs from its inputs' regions.
    fn propagate(&self, step: &Step, dirty: &[Dirty], warm: bool) -> Dirty {
        if !warm {
            return Dirty::All;
        }
        let g = self.graph();
        let ins: Vec<&Dirty> = step.inputs.iter().flatten().map(|&v| &dirty[v]).collect();
        if ins.iter().all(|d| d.is_clean()) {
            return Dirty::Clean;
        }
        let out_shape = &g.values[step.outputs[0]]
            .fact
            .as_ref()
            .expect("prepared")
            .shape;
        let in_shape = |i: usize| {
            step.inputs[i]
                .and_then(|v| g.values[v].fact.as_ref())
                .map(|f| f.shape.clone())
                .unwrap_or_default()
        };
        let first = step.inputs[0].map(|v| &dirty[v]).unwrap_or(&Dirty::Clean);
        match &step.kernel {
            Kernel::Conv(pc) if pc.geom.spatial_rank == 2 => {
                let c = &pc.geom;
                window_dirty(first, c.output, c.kernel, c.stride, c.dilation, c.pad_begin)
            }
            Kernel::Pool(pp) if pp.geom.spatial_rank == 2 => {
                let c = &pp.geom;
                window_dirty(first, c.output, c.kernel, c.stride, c.dilation, c.pad_begin)
            }
            // elementwise: same positions; an input broadcast over space spreads everywhere
            Kernel::Unary(_)
            | Kernel::Binary(_)
            | Kernel::ChannelPRelu { .. }
            | Kernel::Concat { .. } => self.positionwise(step, dirty, out_shape),
            // position-wise ops run by the reference kernels: PRelu, BatchNorm, Clip with bound
            // inputs, elementwise ops, and Softmax over the channels of an NCHW value
            Kernel::Reference(op)
                if matches!(
                    op,
                    Op::PRelu | Op::BatchNorm { .. } | Op::Clip | Op::Unary(_) | Op::Binary(_)
                ) || matches!(op, Op::Softmax { axis, legacy: false }
                    if out_shape.len() == 4 && (*axis == 1 || *axis == -3)) =>
            {
                self.positionwise(step, dirty, out_shape)
            }
            // Softmax over the channels of an NCHW value (its own kernel)
            Kernel::Softmax { n, inner }
                if out_shape.len() == 4
                    && *n == out_shape[1]
                    && *inner == out_shape[2] * out_shape[3] =>
            {
                self.positionwise(step, dirty, out_shape)
            }
            Kernel::View => {
                if spatial(out_shape).is_some()
                    && spatial(&in_shape(0)) == spatial(out_shape)
                    && in_shape(0)[1] == out_shape[1]
                {
                    first.clone()
                } else {
                    Dirty::All
                }
            }
            _ => Dirty::All,
        }
    }

    /// The dirty region of a position-wise step (elementwise with broadcasting, channel Concat,
    /// channel Softmax): the union of its inputs' regions when they share the output's spatial
    /// layout; an input broadcast over space (or laid out otherwise) dirties everything.
    fn positionwise(&self, step: &Step, dirty: &[Dirty], out_shape: &[usize]) -> Dirty {
        let g = self.graph();
        let in_shape = |i: usize| {
            step.inputs[i]
                .and_then(|v| g.values[v].fact.as_ref())
                .map(|f| f.shape.clone())
                .unwrap_or_default()
        };
        let out_sp = spatial(out_shape);
        let mut acc = Dirty::Clean;
        for (i, v) in step.inputs.iter().enumerate() {
            let Some(v) = v else { continue };
            let d = &dirty[*v];
            if d.is_clean() {
                continue;
            }
            let same_space = out_sp.is_some() && spatial(&in_shape(i)) == out_sp;
            let is_concat_on_channels = match &step.kernel {
                Kernel::Concat { .. } => {
                    let s = in_shape(i);
                    s.len() == 4 && s[0] == 1 && s[2..] == out_shape[2..]
                }
                _ => true,
            };
            acc = if same_space && is_concat_on_channels {
                Dirty::union(&acc, d)
            } else {
                Dirty::All
            };
        }
        acc
    }

    /// Whether a position-wise step (activation, channel PRelu, same-shape binary op) can be
    /// recomputed on regions: f32 NCHW batch-1 output, every input of the output's shape, and a
    /// cached output from the previous frame to update.
    fn pointwise_in_regions(&self, step: &Step, cache: &CacheState) -> bool {
        let g = self.graph();
        let kind_ok = matches!(
            &step.kernel,
            Kernel::Unary(_) | Kernel::ChannelPRelu { .. } | Kernel::Binary(_)
        );
        if !kind_ok || step.outputs.len() != 1 {
            return false;
        }
        let out = step.outputs[0];
        let Some(f) = g.values[out].fact.as_ref() else {
            return false;
        };
        // the position-wise operands (a channel PRelu's slope is part of its kernel)
        let operands = match step.kernel {
            Kernel::Binary(_) => 2,
            _ => 1,
        };
        spatial(&f.shape).is_some()
            && f.dtype == kestrel_core::DType::F32
            && step.inputs.len() >= operands
            && step.inputs[..operands].iter().all(|v| {
                v.and_then(|v| g.values[v].fact.as_ref())
                    .is_some_and(|i| i.shape == f.shape && i.dtype == f.dtype)
            })
            && matches!(&cache.exec.values[out], Some(t) if t.shape() == f.shape.as_slice())
    }

    /// Recomputes a position-wise step on the dirty rectangles of its output, in place in the
    /// cached output (channel planes in parallel). Returns the positions computed.
    fn pointwise_regions(
        &self,
        cache: &mut CacheState,
        step: &Step,
        bits: &[bool],
        h: usize,
        w: usize,
    ) -> Result<u64> {
        use rayon::prelude::*;
        let g = self.graph();
        let out_id = step.outputs[0];
        let mut out = cache.exec.values[out_id]
            .take()
            .ok_or_else(|| Error::invalid("cached output missing"))?;
        // single-row runs (no band overhang), runs closer than 16 merged
        let rects = rectangles(bits, h, w, 1, 16);
        let result = (|| -> Result<u64> {
            let operands = match step.kernel {
                Kernel::Binary(_) => 2,
                _ => 1,
            };
            let ins: Vec<&[f32]> = step.inputs[..operands]
                .iter()
                .map(|v| value(g, &cache.exec, v.expect("checked"))?.as_f32())
                .collect::<Result<_>>()?;
            let plane = h * w;
            let o = out.as_f32_mut()?;
            o.par_chunks_mut(plane).enumerate().for_each(|(c, op)| {
                let off = c * plane;
                for &[y0, y1, x0, x1] in &rects {
                    for y in y0..y1 {
                        let r = y * w + x0..y * w + x1;
                        let dst = &mut op[r.clone()];
                        let src = |k: usize| &ins[k][off + r.start..off + r.end];
                        match &step.kernel {
                            Kernel::Unary(u) => {
                                dst.copy_from_slice(src(0));
                                crate::simd::activate(dst, *u);
                            }
                            Kernel::ChannelPRelu { slope, .. } => {
                                dst.copy_from_slice(src(0));
                                crate::plan::prelu_slice(dst, slope[c]);
                            }
                            Kernel::Binary(bop) => {
                                for ((d, &a), &b) in dst.iter_mut().zip(src(0)).zip(src(1)) {
                                    *d = bop.apply_f32(a, b);
                                }
                            }
                            _ => unreachable!("checked by pointwise_in_regions"),
                        }
                    }
                }
            });
            Ok(rects
                .iter()
                .map(|r| ((r[1] - r[0]) * (r[3] - r[2])) as u64)
                .sum())
        })();
        cache.exec.values[out_id] = Some(out);
        result
    }

    /// Recomputes the dirty rectangles of a convolution; a recomputed position where a value
    /// moved by more than its channel's `threshold` is written into the cached output, the
    /// others keep their cached values. Rectangles are computed in parallel (each by the
    /// layer's own kernel on a crop of the input with explicit zero padding). Returns the
    /// number of output positions computed and the mask of those written.
    #[allow(clippy::too_many_arguments)]
    fn conv_regions(
        &self,
        cache: &mut CacheState,
        step: &Step,
        bits: &[bool],
        oh: usize,
        ow: usize,
        threshold: &[f32],
        opts: &CacheOptions,
    ) -> Result<(u64, Vec<bool>)> {
        use rayon::prelude::*;
        let Kernel::Conv(pc) = &step.kernel else {
            unreachable!("checked by the caller")
        };
        let g = self.graph();
        let geom = &pc.geom;
        let x_id = step.inputs[0].expect("conv input");
        let out_id = step.outputs[0];
        let mut out = cache.exec.values[out_id]
            .take()
            .ok_or_else(|| Error::invalid("cached conv output missing"))?;
        let result = (|| -> Result<(u64, Vec<bool>)> {
            let x = value(g, &cache.exec, x_id)?.as_f32()?;
            let (ih, iw) = (geom.input[1], geom.input[2]);
            let (ci, co) = (geom.c_in, geom.c_out);
            let gap = geom.kernel[2].max(opts.merge_gap);
            let rects = rectangles(bits, oh, ow, opts.band_rows, gap);
            // 1. every rectangle from its crop, in parallel
            let computed: Vec<Result<Vec<f32>>> = rects
                .par_iter()
                .map_init(
                    || (Vec::new(), Vec::new()),
                    |(xin, scratch), &[oy0, oy1, ox0, ox1]| {
                        let Some((sub, [cy0, _, cx0, _])) =
                            crop_geometry(geom, [oy0, oy1, ox0, ox1])
                        else {
                            // the window lies wholly in padding (impossible for valid ONNX
                            // pads, which are smaller than the kernel extent)
                            return Err(Error::invalid("cached conv: empty crop"));
                        };
                        let (ch, cw) = (sub.input[1], sub.input[2]);
                        let (rh, rw) = (oy1 - oy0, ox1 - ox0);
                        xin.resize(ci * ch * cw, 0.0);
                        for c in 0..ci {
                            for y in 0..ch {
                                let src = &x[(c * ih + cy0 + y) * iw + cx0..][..cw];
                                xin[(c * ch + y) * cw..][..cw].copy_from_slice(src);
                            }
                        }
                        let mut yout = vec![0f32; co * rh * rw];
                        pc.run_region(&sub, xin, &mut yout, scratch);
                        Ok(yout)
                    },
                )
                .collect();
            let computed: Vec<Vec<f32>> = computed.into_iter().collect::<Result<_>>()?;
            let o = out.as_f32_mut()?;
            // 2. which positions moved beyond their channel's threshold (NaN: moved)
            let moved: Vec<Vec<bool>> = rects
                .par_iter()
                .zip(&computed)
                .map(|(&[oy0, oy1, ox0, ox1], yout)| {
                    let (rh, rw) = (oy1 - oy0, ox1 - ox0);
                    let mut moved = vec![false; rh * rw];
                    for c in 0..co {
                        let t = channel_threshold(threshold, c);
                        for y in 0..rh {
                            let old = &o[(c * oh + oy0 + y) * ow + ox0..][..rw];
                            let new = &yout[(c * rh + y) * rw..][..rw];
                            for ((m, a), b) in moved[y * rw..][..rw].iter_mut().zip(old).zip(new) {
                                *m |= moved_beyond(*a, *b, t);
                            }
                        }
                    }
                    moved
                })
                .collect();
            // only positions of the dirty mask can have changed: the rectangles' other positions
            // read unchanged inputs, so a difference there is the kernel's rounding (Winograd
            // tiles start at the rectangle) and is neither written nor passed on
            let mut changed = vec![false; oh * ow];
            for (&[oy0, oy1, ox0, ox1], m) in rects.iter().zip(&moved) {
                let rw = ox1 - ox0;
                for y in 0..oy1 - oy0 {
                    let at = (oy0 + y) * ow + ox0;
                    for ((c, &m), &b) in changed[at..][..rw]
                        .iter_mut()
                        .zip(&m[y * rw..][..rw])
                        .zip(&bits[at..][..rw])
                    {
                        *c = m && b;
                    }
                }
            }
            // 3. write the moved positions, channel planes in parallel
            o.par_chunks_mut(oh * ow)
                .enumerate()
                .for_each(|(c, plane)| {
                    for (&[oy0, oy1, ox0, ox1], yout) in rects.iter().zip(&computed) {
                        let (rh, rw) = (oy1 - oy0, ox1 - ox0);
                        for y in 0..rh {
                            let dst = &mut plane[(oy0 + y) * ow + ox0..][..rw];
                            let src = &yout[(c * rh + y) * rw..][..rw];
                            let keep = &changed[(oy0 + y) * ow + ox0..][..rw];
                            for ((d, &s), &k) in dst.iter_mut().zip(src).zip(keep) {
                                if k {
                                    *d = s;
                                }
                            }
                        }
                    }
                });
            let n: u64 = rects
                .iter()
                .map(|r| ((r[1] - r[0]) * (r[3] - r[2])) as u64)
                .sum();
            Ok((n, changed))
        })();
        cache.exec.values[out_id] = Some(out);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectangles_cover_exactly_the_dirty_band_columns() {
        let (h, w) = (10, 12);
        let mut bits = vec![false; h * w];
        bits[2 * w + 3] = true;
        bits[2 * w + 9] = true;
        bits[9 * w] = true;
        let r = rectangles(&bits, h, w, 8, 2);
        assert_eq!(r, vec![[2, 3, 3, 4], [2, 3, 9, 10], [9, 10, 0, 1]]);
        let r = rectangles(&bits, h, w, 8, 7);
        assert_eq!(r, vec![[2, 3, 3, 10], [9, 10, 0, 1]]);
        for [y0, y1, x0, x1] in rectangles(&bits, h, w, 3, 3) {
            assert!(y0 < y1 && x0 < x1);
        }
    }

    #[test]
    fn window_mask_marks_every_output_that_reads_a_dirty_input() {
        // 3x3 stride 2 pad 1 on 7x7 -> 4x4; input (3,3) is read by outputs rows/cols 1..=2
        let mut bits = vec![false; 49];
        bits[3 * 7 + 3] = true;
        let m = window_mask(&bits, (7, 7), (4, 4), [3, 3], [2, 2], [1, 1], [1, 1]);
        let dirty: Vec<(usize, usize)> =
            (0..16).filter(|i| m[*i]).map(|i| (i / 4, i % 4)).collect();
        assert_eq!(dirty, vec![(1, 1), (1, 2), (2, 1), (2, 2)]);
    }
}
