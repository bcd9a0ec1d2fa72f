//! A convolution and the max pooling that alone reads its output, run band by band: a band of
//! pooled rows is made from the few convolution rows its windows cover, computed into a
//! per-thread buffer that stays in L2, so the convolution's full output (SqueezeNet's and
//! ResNet's first layers: 3 MB; MTCNN P-Net's at 640x480: 12 MB) is never written to memory
//! and read back.
//!
//! Bands are independent tasks: the convolution rows that two neighbouring bands' windows
//! share (one row for a 3x3 stride-2 window) are computed by both. The values are those of the
//! layers run one after the other: each convolution row is computed by the same kernel from
//! the same input crop ([`PreparedConv::run_region`], kinds whose region runs sum in the
//! layer's own order), and the pooling of a band is the layer's own per-plane kernel over the
//! band's rows.

use crate::cached::crop_geometry;
use crate::conv::{ConvKernelKind, PreparedConv};
use crate::pool::PreparedPool;
use kestrel_core::ops::pool::PoolKind;
use rayon::prelude::*;

/// Default bytes of convolution output one band holds (per thread; a share of a 1 MB L2).
const BAND_BYTES: usize = 512 << 10;

/// Bytes of convolution output per band: `KESTREL_CONV_POOL_BAND_KB` (for measuring), else
/// [`BAND_BYTES`]. Read once.
fn band_bytes() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("KESTREL_CONV_POOL_BAND_KB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(BAND_BYTES, |kb| kb.max(1) << 10)
    })
}

/// Whether `KESTREL_CONV_POOL=0` turns the fusion off (A/B runs). Read once.
pub fn disabled() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var("KESTREL_CONV_POOL").is_ok_and(|v| v == "0"))
}

/// A convolution followed by the max pooling of its output (see the module docs).
#[derive(Debug)]
pub struct ConvPool {
    pub conv: PreparedConv,
    pub pool: PreparedPool,
}

/// Whether `conv` followed by `pool` can run as one [`ConvPool`]: one image, 2-D, a kernel kind
/// whose region runs give the layer's own values (not Winograd, FFT or f16 arithmetic), a max
/// pooling over exactly the convolution's output, and an output big enough to matter (more
/// than one band).
pub fn applies(conv: &PreparedConv, pool: &PreparedPool) -> bool {
    let (g, p) = (&conv.geom, &pool.geom);
    let kind_ok = matches!(
        conv.kind,
        ConvKernelKind::Stem
            | ConvKernelKind::Direct
            | ConvKernelKind::ImplicitGemm
            | ConvKernelKind::Im2colGemm
    ) && conv.f16_arith_state().is_none()
        && !conv.has_f16_weights()
        && conv.supports_regions();
    let row_bytes = g.c_out * g.output[2] * 4;
    kind_ok
        && pool.kind() == PoolKind::Max
        && g.spatial_rank == 2
        && p.spatial_rank == 2
        && g.batch == 1
        && p.batch == 1
        && g.input[0] == 1
        && g.output[0] == 1
        && p.channels == g.c_out
        && p.input == g.output
        && g.output[1] * row_bytes > 2 * band_bytes()
}

impl ConvPool {
    /// The kernel's name in profiles.
    pub fn name(&self) -> String {
        format!("{}->maxpool", self.conv.kernel_name())
    }

    /// `out = maxpool(conv(x))`: `x` the convolution's `c_in × ih × iw` input, `out` the pooled
    /// `c_out × ph × pw` output. Runs on the current rayon pool.
    pub fn run(&self, x: &[f32], out: &mut [f32]) {
        let g = &self.conv.geom;
        let p = &self.pool.geom;
        let (c, ow) = (g.c_out, g.output[2]);
        let (ph, pw) = (p.output[1], p.output[2]);
        let (ih, iw) = (g.input[1], g.input[2]);
        assert!(
            x.len() >= g.c_in * ih * iw && out.len() >= c * ph * pw,
            "ConvPool::run: buffers smaller than the layers"
        );
        let bands = band_ranges(self, rayon::current_num_threads());
        let o = crate::direct::SharedMut(out.as_mut_ptr());
        bands.par_iter().for_each_init(
            || (Vec::new(), Vec::new(), Vec::new(), Vec::new()),
            |(xin, rows, scratch, pbuf), &(py0, py1)| {
                let pool_rows = self.pool.row_ranges();
                // the convolution rows the band's windows read (in range; padding rows read
                // nothing)
                let r0 = pool_rows[py0..py1].iter().map(|r| r.0).min().unwrap_or(0);
                let r1 = pool_rows[py0..py1].iter().map(|r| r.1).max().unwrap_or(0);
                let band_rows: Vec<(usize, usize, usize)> = pool_rows[py0..py1]
                    .iter()
                    .map(|&(a, b, n)| {
                        if a < b {
                            (a - r0, b - r0, n)
                        } else {
                            (0, 0, n)
                        }
                    })
                    .collect();
                let n = r1.saturating_sub(r0);
                if n > 0 {
                    let Some((sub, [cy0, _, cx0, _])) = crop_geometry(g, [r0, r1, 0, ow]) else {
                        unreachable!("ONNX pads are smaller than the kernel extent")
                    };
                    let (ch, cw) = (sub.input[1], sub.input[2]);
                    xin.resize(g.c_in * ch * cw, 0.0);
                    for ci in 0..g.c_in {
                        for y in 0..ch {
                            let src = &x[(ci * ih + cy0 + y) * iw + cx0..][..cw];
                            xin[(ci * ch + y) * cw..][..cw].copy_from_slice(src);
                        }
                    }
                    rows.resize(c * n * ow, 0.0);
                    self.conv.run_region(&sub, xin, rows, scratch);
                }
                let mut bg = p.clone();
                bg.input[1] = n;
                bg.output[1] = py1 - py0;
                for plane in 0..c {
                    // SAFETY: bands are disjoint row ranges of every output plane and
                    // `out` holds c planes of ph × pw floats (checked above); nothing else
                    // touches `out` during the call.
                    let orows = unsafe {
                        std::slice::from_raw_parts_mut(
                            o.get().add(plane * ph * pw + py0 * pw),
                            (py1 - py0) * pw,
                        )
                    };
                    let xs = if n > 0 {
                        &rows[plane * n * ow..][..n * ow]
                    } else {
                        &[][..]
                    };
                    crate::pool::max_plane(&bg, &band_rows, xs, orows, pbuf);
                }
            },
        );
    }
}

/// Splits the pooled rows into bands `[py0, py1)`: as few as make each band's convolution rows
/// fit [`band_bytes`], rounded up to a multiple of `threads` so the workers get equal shares.
fn band_ranges(cp: &ConvPool, threads: usize) -> Vec<(usize, usize)> {
    let g = &cp.conv.geom;
    let ph = cp.pool.geom.output[1];
    let row_bytes = (g.c_out * g.output[2] * 4).max(1);
    let (k, s) = (cp.pool.geom.kernel[1], cp.pool.geom.stride[1].max(1));
    let conv_rows = |b: usize| (b.saturating_sub(1) * s + k) * row_bytes;
    let threads = threads.max(1);
    let mut count = threads;
    loop {
        let per = ph.div_ceil(count);
        if per <= 1 || conv_rows(per) <= band_bytes() {
            return (0..ph)
                .step_by(per.max(1))
                .map(|a| (a, (a + per.max(1)).min(ph)))
                .collect();
        }
        count += threads;
    }
}
