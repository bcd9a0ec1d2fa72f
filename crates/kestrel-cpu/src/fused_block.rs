//! The expansion half of an inverted-residual block (MobileNetV2, EfficientNet): a 1x1
//! convolution that widens the channels (×4-6) followed by the depthwise convolution that
//! reads it, run band by band so that the wide tensor never goes to memory.
//!
//! Unfused, the expansion writes `C_exp × H × W` floats (4.8 MB for MobileNetV2's 96 channels
//! at 112x112) and the depthwise layer reads them back: on a core with ~10 GB/s of memory
//! bandwidth those two passes cost more than the arithmetic. Here each worker owns a
//! contiguous range of output rows and walks it in bands of `B` output rows: the expansion
//! computes the input rows the band needs into a per-thread buffer of `C_exp` planes of
//! `R = (B - 1)·s + k` rows (sized to stay in L2), the depthwise kernel
//! ([`crate::depthwise_rows`]) reads them from there and writes its output rows; the
//! `k - s` rows that consecutive bands share are moved to the buffer's top instead of being
//! recomputed. Only a range's first band recomputes rows (the halo of its neighbour range).
//!
//! Exactness: every output value is the same sum, in the same order, as the unfused layers
//! compute (the expansion's GEMM sums its K = C_in products in one K block whatever the band;
//! the depthwise kernel's taps are the same), so fused and unfused outputs are bit-identical.
//!
//! Applies (see [`applies`]) on the AVX-512 path when the expansion is an ungrouped 1x1
//! layer with f32 arithmetic and a clamp activation (or none), and the depthwise layer runs
//! the row kernel; the plan fuses only a pair whose wide tensor is read by the depthwise
//! layer alone, and only when that tensor is larger than [`MIN_FUSED_BYTES`].

use crate::conv::PreparedConv;
use crate::direct::SharedMut;
use crate::sgemm::{DenseB, Epilogue};
use kestrel_core::ops::conv::ConvGeometry;
use rayon::prelude::*;
use std::cell::Cell;

/// Wide tensors up to this size stay in the unfused layers: they fit the caches anyway, and
/// the unfused 1x1 kernel splits its work over the threads more finely.
pub const MIN_FUSED_BYTES: usize = 1 << 20;

/// Bytes of expanded rows one band keeps (per thread; `KESTREL_FUSED_BAND_KB` overrides):
/// a third of a 1 MB L2, leaving room for the input rows, the weights and the output rows.
fn band_budget_bytes() -> usize {
    static KB: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *KB.get_or_init(|| {
        std::env::var("KESTREL_FUSED_BAND_KB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(320)
    }) * 1024
}

/// Whether `KESTREL_FUSED_BLOCKS=0` turned the fusion off (A/B runs).
pub fn disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("KESTREL_FUSED_BLOCKS").is_ok_and(|v| v == "0"))
}

thread_local! {
    /// The worker's band buffer (taken out while in use).
    static BAND: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// A 1x1 expansion and the depthwise layer that reads it, run as one step.
pub struct ExpandDepthwise {
    pub expand: Box<PreparedConv>,
    pub dw: Box<PreparedConv>,
}

/// Whether `expand` → `dw` can run fused (see the module doc); the plan also checks that the
/// wide tensor has no other reader.
pub fn applies(expand: &PreparedConv, dw: &PreparedConv) -> bool {
    let (e, d) = (&expand.geom, &dw.geom);
    !disabled()
        && expand.pointwise_gemm().is_some()
        && dw.depthwise_rows().is_some()
        && e.batch == d.batch
        && e.c_out == d.c_in
        && e.output == d.input
        && e.spatial_rank == 2
        && d.spatial_rank == 2
        && 4 * e.c_out * e.output[1] * e.output[2] > MIN_FUSED_BYTES
}

/// The depthwise layer's output rows `o0..o1` read input rows `lo..hi` (clipped to the map).
fn rows_needed(d: &ConvGeometry, o0: usize, o1: usize) -> (usize, usize) {
    let (s, k, p) = (
        d.stride[1] as isize,
        d.kernel[1] as isize,
        d.pad_begin[1] as isize,
    );
    let lo = (o0 as isize * s - p).max(0) as usize;
    let hi = ((o1 as isize - 1) * s - p + k).clamp(0, d.input[1] as isize) as usize;
    (lo, hi.max(lo))
}

impl ExpandDepthwise {
    /// Output rows per band: as many as keep `C_exp` planes of the rows they read within the
    /// band budget, a multiple of the depthwise kernel's 4-row groups, at least 4.
    fn band_rows(&self) -> usize {
        let d = &self.dw.geom;
        let (s, k) = (d.stride[1].max(1), d.kernel[1]);
        let row_bytes = 4 * d.c_in * d.input[2];
        let fit = band_budget_bytes() / row_bytes.max(1);
        let b = if fit > k { (fit - k) / s + 1 } else { 1 };
        (b / 4 * 4).max(4).min(d.output[1].max(1))
    }

    /// Runs both layers: `x` the expansion's `N × C_in × H × W` input, `out` the depthwise
    /// layer's `N × C_exp × OH × OW` output.
    pub fn run(&self, x: &[f32], out: &mut [f32]) {
        let (e, d) = (&self.expand.geom, &self.dw.geom);
        let in_len = e.c_in * e.input[1] * e.input[2];
        let out_len = d.c_out * d.output[1] * d.output[2];
        assert!(x.len() >= e.batch * in_len && out.len() >= d.batch * out_len);
        let oh = d.output[1];
        let b = self.band_rows();
        // contiguous row ranges, one per worker, in whole bands where that still gives every
        // worker one
        let threads = rayon::current_num_threads().max(1);
        let ranges = oh.div_ceil(b).min(threads).max(1);
        let per = oh.div_ceil(ranges);
        let per = if per >= b {
            per.div_ceil(b) * b
        } else {
            per.div_ceil(4) * 4
        };
        for n in 0..e.batch {
            let xn = &x[n * in_len..][..in_len];
            let on = SharedMut(out[n * out_len..].as_mut_ptr());
            (0..oh.div_ceil(per)).into_par_iter().for_each(|r| {
                let (r0, r1) = (r * per, ((r + 1) * per).min(oh));
                // SAFETY: range r writes output rows r0..r1 of every channel plane of image n,
                // disjoint from every other range's rows.
                unsafe { self.run_rows(xn, on, r0..r1, b) };
            });
        }
    }

    /// Output rows `rows` of one image, band by band (see the module doc).
    ///
    /// # Safety
    /// `out` points at the image's `C_exp × OH × OW` output; no one else writes rows `rows`.
    unsafe fn run_rows(&self, x: &[f32], out: SharedMut, rows: std::ops::Range<usize>, b: usize) {
        let (e, d) = (&self.expand.geom, &self.dw.geom);
        let (h, w) = (e.input[1], e.input[2]);
        let (oh, ow) = (d.output[1], d.output[2]);
        let cexp = d.c_in;
        let (s, k) = (d.stride[1], d.kernel[1]);
        let cap = (b - 1) * s + k;
        let (pa, ebias, eact, uk) = self.expand.pointwise_gemm().expect("checked by applies");
        let dwp = self.dw.depthwise_rows().expect("checked by applies");
        let kk = d.kernel[1] * d.kernel[2];
        let mut buf = BAND.with(|c| c.take());
        if buf.len() < cexp * cap * w {
            buf.resize(cexp * cap * w, 0.0);
        }
        // input rows held in the buffer: held.0 .. held.1, from its top
        let mut held = (0usize, 0usize);
        let epi = Epilogue {
            row_bias: Some(ebias),
            activation: eact,
        };
        for o0 in rows.clone().step_by(b) {
            let o1 = (o0 + b).min(rows.end);
            let (lo, hi) = rows_needed(d, o0, o1);
            debug_assert!(lo >= held.0 && hi - lo <= cap);
            // rows shared with the previous band move to the top
            let kept = held.1.saturating_sub(lo).min(hi - lo);
            if kept > 0 && lo > held.0 {
                let from = (lo - held.0) * w;
                for ch in 0..cexp {
                    let p = ch * cap * w;
                    buf.copy_within(p + from..p + from + kept * w, p);
                }
            }
            let start = lo + kept;
            if hi > start {
                crate::sgemm::gemm_serial(
                    pa,
                    &DenseB {
                        data: &x[start * w..],
                        ld: h * w,
                    },
                    (hi - start) * w,
                    &mut buf[kept * w..],
                    cap * w,
                    uk,
                    epi,
                );
            }
            held = (lo, hi);
            // the band's own geometry: its input rows start at `lo` (padding above only where
            // `lo` is the map's first row)
            let mut g = d.clone();
            g.batch = 1;
            g.input[1] = hi - lo;
            g.output[1] = o1 - o0;
            g.pad_begin[1] = lo + d.pad_begin[1] - o0 * s;
            g.pad_end[1] = ((o1 - o0 - 1) * s + k).saturating_sub(g.pad_begin[1] + hi - lo);
            for ch in 0..cexp {
                // SAFETY: rows o0..o1 of output plane ch are this range's alone (the caller's
                // contract), and the pointer is the plane's row o0; the input plane holds
                // (hi - lo) rows of w.
                unsafe {
                    dw_plane(
                        &g,
                        &buf[ch * cap * w..][..(hi - lo) * w],
                        &dwp.weights[ch * kk..][..kk],
                        dwp.bias[ch],
                        Some(dwp.clamp),
                        out.get().add(ch * oh * ow + o0 * ow),
                        o1 - o0,
                    )
                };
            }
        }
        BAND.with(|c| c.set(buf));
    }
}

/// [`crate::depthwise_rows::plane`] on output rows `0..rows` of the band geometry `g`.
///
/// # Safety
/// As for `plane`; `ExpandDepthwise` exists only where [`PreparedConv::depthwise_rows`] is
/// `Some`: the AVX-512 path and a geometry the row kernel handles (the band geometry differs
/// in its rows and vertical padding only).
#[cfg(target_arch = "x86_64")]
unsafe fn dw_plane(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: *mut f32,
    rows: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { crate::depthwise_rows::plane(g, x, w, bias, clamp, out, 0..rows) }
}

/// The row kernel is x86-64 only, so no fused step exists elsewhere.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn dw_plane(
    _: &ConvGeometry,
    _: &[f32],
    _: &[f32],
    _: f32,
    _: Option<(f32, f32)>,
    _: *mut f32,
    _: usize,
) {
    unreachable!("fused expansion + depthwise steps are made on x86-64 only")
}
