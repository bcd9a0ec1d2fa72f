//! Inverted-residual blocks (MobileNetV2, EfficientNet) run band by band: the 1x1 expansion
//! that widens the channels (×4-6), the depthwise convolution that reads it, and the 1x1
//! projection that narrows them again (with the block's residual Add), as one step, so that
//! neither the wide tensor nor the depthwise output goes to memory.
//!
//! Unfused, the expansion writes `C_exp × H × W` floats (4.8 MB for MobileNetV2's 96 channels
//! at 112x112), the depthwise layer reads them back and writes its own output, which the
//! projection reads again: on a core with ~10 GB/s of memory bandwidth those passes cost as
//! much as the arithmetic. Here each worker owns a contiguous range of output rows and walks
//! it in bands of `B` output rows: the expansion computes the input rows the band needs into
//! a per-thread buffer of `C_exp` planes of `R = (B - 1)·s + k` rows, the depthwise kernel
//! ([`crate::depthwise_rows`]) reads them there and writes the band's rows into a second
//! per-thread buffer, and the projection's GEMM reads that one and writes the block's output
//! rows (adding the residual's rows while they are in cache). Both buffers together stay
//! within an L2-sized budget. The `k - s` input rows that consecutive bands share are moved
//! to the buffer's top instead of being recomputed; only a range's first band recomputes rows
//! (the halo of its neighbour range).
//!
//! A block may lack the expansion (MobileNetV2's first block: depthwise and projection) or
//! the projection (then the step ends with the depthwise output).
//!
//! Exactness: every expansion and depthwise value is the same sum, in the same order, as the
//! unfused layers compute (the expansion's GEMM sums its K = C_in products in one K block
//! whatever the band; the depthwise kernel's taps are the same), so an expansion + depthwise
//! step is bit-identical to the two layers; the projection sums in the packed GEMM's order
//! and adds the residual after the bias (equal to the unfused kernels up to float rounding).
//!
//! Applies (see [`expansion_applies`], [`projection_applies`]) on the AVX-512 path when the
//! 1x1 layers are ungrouped, f32 arithmetic, with a clamp activation (or none), and the
//! depthwise layer runs the row kernel; the plan fuses only tensors that no other step reads,
//! and only when one of them is larger than [`min_fused_bytes`].

use crate::conv::PreparedConv;
use crate::direct::SharedMut;
use crate::sgemm::{DenseB, Epilogue};
use kestrel_core::ops::conv::ConvGeometry;
use kestrel_core::ops::Unary;
use rayon::prelude::*;
use std::cell::Cell;

/// Blocks whose intermediate tensors are all up to this size stay in the unfused layers:
/// they fit the caches anyway, and the unfused kernels split their work over the threads
/// more finely (`KESTREL_FUSED_MIN_KB` overrides, for A/B runs).
pub fn min_fused_bytes() -> usize {
    static KB: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    kib_setting(&KB, "KESTREL_FUSED_MIN_KB", 1024)
}

/// Bytes of band buffers per thread (`KESTREL_FUSED_BAND_KB` overrides): a third of a 1 MB
/// L2, leaving room for the input rows, the weights and the output rows.
fn band_budget_bytes() -> usize {
    static KB: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    kib_setting(&KB, "KESTREL_FUSED_BAND_KB", 320)
}

/// Bytes from the KiB count in environment variable `var` (read once into `cell`), else
/// `default` KiB.
fn kib_setting(cell: &std::sync::OnceLock<usize>, var: &str, default: usize) -> usize {
    *cell.get_or_init(|| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }) * 1024
}

/// Whether `KESTREL_FUSED_BLOCKS=0` turned the fusion off (A/B runs).
pub fn disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("KESTREL_FUSED_BLOCKS").is_ok_and(|v| v == "0"))
}

thread_local! {
    /// The worker's band buffers: expanded rows, depthwise output rows (taken out while in
    /// use).
    static BAND: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// The projection closing a fused block.
pub struct Projection {
    pub conv: Box<PreparedConv>,
    /// A residual Add after the projection (the step's last input, laid out like its output),
    /// and the activation after that Add: `Some(post)`; `None` without a residual.
    pub residual: Option<Option<Unary>>,
}

/// An inverted-residual block run as one step (see the module doc): at least two of the
/// three convolutions.
pub struct FusedBlock {
    pub expand: Option<Box<PreparedConv>>,
    pub dw: Box<PreparedConv>,
    pub project: Option<Projection>,
}

/// Whether `expand` → `dw` can run fused (see the module doc); the plan also checks that the
/// wide tensor has no other reader.
pub fn expansion_applies(expand: &PreparedConv, dw: &PreparedConv) -> bool {
    let (e, d) = (&expand.geom, &dw.geom);
    !disabled()
        && expand.pointwise_gemm().is_some()
        && dw.depthwise_rows().is_some()
        && e.batch == d.batch
        && e.c_out == d.c_in
        && e.output == d.input
        && e.spatial_rank == 2
        && d.spatial_rank == 2
}

/// Whether `dw` → `project` can run fused (`residual`: with an Add after the projection,
/// whose own activation must then be none).
pub fn projection_applies(dw: &PreparedConv, project: &PreparedConv, residual: bool) -> bool {
    let (d, p) = (&dw.geom, &project.geom);
    !disabled()
        && dw.depthwise_rows().is_some()
        && project.pointwise_gemm().is_some()
        && (!residual || project.activation().is_none())
        && d.batch == p.batch
        && d.c_out == p.c_in
        && d.output == p.input
        && d.spatial_rank == 2
        && p.spatial_rank == 2
}

/// Bytes of one image's output of a convolution.
pub fn output_bytes(c: &PreparedConv) -> usize {
    4 * c.geom.c_out * c.geom.output.iter().product::<usize>()
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

impl FusedBlock {
    /// The kernel's name in profiles.
    pub fn name(&self) -> String {
        let mut n = String::new();
        if self.expand.is_some() {
            n.push_str("1x1+");
        }
        n.push_str("dw");
        if let Some(p) = &self.project {
            n.push_str("+1x1");
            if let Some(post) = p.residual {
                n.push_str("+add");
                if post.is_some() {
                    n.push_str("+act");
                }
            }
        }
        n + "-fused"
    }

    /// Whether the step's last input is a residual (see [`Projection::residual`]).
    pub fn has_residual(&self) -> bool {
        self.project.as_ref().is_some_and(|p| p.residual.is_some())
    }

    /// The geometry of the step's first layer (its input is the step's input).
    fn first(&self) -> &ConvGeometry {
        self.expand.as_ref().map_or(&self.dw.geom, |e| &e.geom)
    }

    /// The geometry of the step's last layer (its output is the step's output).
    fn last(&self) -> &ConvGeometry {
        self.project
            .as_ref()
            .map_or(&self.dw.geom, |p| &p.conv.geom)
    }

    /// Output rows per band: as many as keep the expanded rows they read and their depthwise
    /// output rows within the band budget, a multiple of the depthwise kernel's 4-row groups,
    /// at least 4.
    fn band_rows(&self) -> usize {
        let d = &self.dw.geom;
        let (s, k) = (d.stride[1].max(1), d.kernel[1]);
        let row_in = if self.expand.is_some() {
            4 * d.c_in * d.input[2]
        } else {
            0
        };
        let row_out = if self.project.is_some() {
            4 * d.c_out * d.output[2]
        } else {
            0
        };
        let budget = band_budget_bytes().saturating_sub(k.saturating_sub(s) * row_in);
        let b = budget / (s * row_in + row_out).max(1);
        (b / 4 * 4).max(4).min(d.output[1].max(1))
    }

    /// Runs the block: `x` the first layer's `N × C × H × W` input, `residual` (when
    /// [`FusedBlock::has_residual`]) laid out like `out`, the last layer's output.
    pub fn run(&self, x: &[f32], residual: Option<&[f32]>, out: &mut [f32]) {
        let (f, l) = (self.first(), self.last());
        let in_len = f.c_in * f.input[1] * f.input[2];
        let out_len = l.c_out * l.output[1] * l.output[2];
        assert!(x.len() >= f.batch * in_len && out.len() >= l.batch * out_len);
        assert_eq!(residual.is_some(), self.has_residual());
        if let Some(r) = residual {
            assert!(r.len() >= l.batch * out_len);
        }
        let oh = self.dw.geom.output[1];
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
        for n in 0..f.batch {
            let xn = &x[n * in_len..][..in_len];
            let rn = residual.map(|r| &r[n * out_len..][..out_len]);
            let on = SharedMut(out[n * out_len..].as_mut_ptr());
            (0..oh.div_ceil(per)).into_par_iter().for_each(|r| {
                let (r0, r1) = (r * per, ((r + 1) * per).min(oh));
                // SAFETY: range r writes output rows r0..r1 of every channel plane of image n,
                // disjoint from every other range's rows.
                unsafe { self.run_rows(xn, rn, on, r0..r1, b) };
            });
        }
    }

    /// Output rows `rows` of one image, band by band (see the module doc).
    ///
    /// # Safety
    /// `out` points at the image's output (the last layer's `C × OH × OW`); no one else
    /// accesses its rows `rows` during the call.
    unsafe fn run_rows(
        &self,
        x: &[f32],
        residual: Option<&[f32]>,
        out: SharedMut,
        rows: std::ops::Range<usize>,
        b: usize,
    ) {
        let d = &self.dw.geom;
        let (h, w) = (d.input[1], d.input[2]);
        let (oh, ow) = (d.output[1], d.output[2]);
        let cexp = d.c_in;
        let (s, k) = (d.stride[1], d.kernel[1]);
        let cap = (b - 1) * s + k;
        let dwp = self.dw.depthwise_rows().expect("checked at fusion");
        let kk = d.kernel[1] * d.kernel[2];
        let (mut buf, mut dwbuf) = BAND.with(|c| c.take());
        if self.expand.is_some() && buf.len() < cexp * cap * w {
            buf.resize(cexp * cap * w, 0.0);
        }
        if self.project.is_some() && dwbuf.len() < cexp * b * ow {
            dwbuf.resize(cexp * b * ow, 0.0);
        }
        // input rows held in the buffer: held.0 .. held.1, from its top
        let mut held = (0usize, 0usize);
        for o0 in rows.clone().step_by(b) {
            let o1 = (o0 + b).min(rows.end);
            let (lo, hi) = rows_needed(d, o0, o1);
            // where the depthwise layer reads plane ch's rows lo..hi: the expanded rows in
            // the buffer, or the step's input itself
            let (src, src_plane): (&[f32], usize) = match &self.expand {
                Some(e) => {
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
                        let (pa, bias, act, uk) = e.pointwise_gemm().expect("checked at fusion");
                        // SAFETY: the buffer holds cexp planes of cap * w floats, rows kept..
                        // (hi - lo) <= cap of each are written; it is this thread's own.
                        unsafe {
                            crate::sgemm::gemm_serial(
                                pa,
                                &DenseB {
                                    data: &x[start * w..],
                                    ld: h * w,
                                },
                                (hi - start) * w,
                                buf[kept * w..].as_mut_ptr(),
                                cap * w,
                                uk,
                                Epilogue {
                                    row_bias: Some(bias),
                                    activation: act,
                                    row_slope: None,
                                },
                            )
                        };
                    }
                    held = (lo, hi);
                    (&buf[..], cap * w)
                }
                None => (&x[lo * w..], h * w),
            };
            // the band's own geometry: its input rows start at `lo` (padding above only where
            // `lo` is the map's first row)
            let mut g = d.clone();
            g.batch = 1;
            g.input[1] = hi - lo;
            g.output[1] = o1 - o0;
            g.pad_begin[1] = lo + d.pad_begin[1] - o0 * s;
            g.pad_end[1] = ((o1 - o0 - 1) * s + k).saturating_sub(g.pad_begin[1] + hi - lo);
            for ch in 0..cexp {
                let dst = match &self.project {
                    Some(_) => dwbuf[ch * b * ow..].as_mut_ptr(),
                    None => out.get().wrapping_add(ch * oh * ow + o0 * ow),
                };
                // SAFETY: the destination holds (o1 - o0) rows of ow: this thread's buffer,
                // or rows o0..o1 of output plane ch, this range's alone (the caller's
                // contract); the source plane holds (hi - lo) rows of w.
                unsafe {
                    dw_plane(
                        &g,
                        &src[ch * src_plane..][..(hi - lo) * w],
                        &dwp.weights[ch * kk..][..kk],
                        dwp.bias[ch],
                        Some(dwp.clamp),
                        dst,
                        o1 - o0,
                    )
                };
            }
            if let Some(p) = &self.project {
                let (pa, bias, act, uk) = p.conv.pointwise_gemm().expect("checked at fusion");
                let n = (o1 - o0) * ow;
                let plane = oh * ow;
                let c0 = out.get().wrapping_add(o0 * ow);
                // SAFETY: columns o0 * ow .. o1 * ow of every output plane are rows o0..o1,
                // this range's alone (the caller's contract).
                unsafe {
                    crate::sgemm::gemm_serial(
                        pa,
                        &DenseB {
                            data: &dwbuf,
                            ld: b * ow,
                        },
                        n,
                        c0,
                        plane,
                        uk,
                        Epilogue {
                            row_bias: Some(bias),
                            activation: act,
                            row_slope: None,
                        },
                    )
                };
                if let (Some(post), Some(r)) = (p.residual, residual) {
                    for co in 0..p.conv.geom.c_out {
                        let at = co * plane + o0 * ow;
                        // SAFETY: as for the GEMM above: row band o0..o1 of plane co
                        let o = unsafe { std::slice::from_raw_parts_mut(out.get().add(at), n) };
                        for (a, &v) in o.iter_mut().zip(&r[at..at + n]) {
                            *a += v;
                        }
                        if let Some(u) = post {
                            u.apply_slice(o);
                        }
                    }
                }
            }
        }
        BAND.with(|c| c.set((buf, dwbuf)));
    }
}

/// [`crate::depthwise_rows::plane`] on output rows `0..rows` of the band geometry `g`.
///
/// # Safety
/// As for `plane`; a `FusedBlock` exists only where [`PreparedConv::depthwise_rows`] is
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
