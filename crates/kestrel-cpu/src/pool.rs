//! Max and average pooling over NCHW planes (2-D windows, no dilation), parallel over planes.
//! Same semantics as the reference (`kestrel_core::ops::pool`): NaN propagates through max,
//! `count_include_pad` counts padding inside the padded extent only.

use kestrel_core::ops::pool::{PoolGeometry, PoolKind};
use rayon::prelude::*;

/// A pooling layer prepared once: the window's tap range for every output row and column.
#[derive(Clone, Debug)]
pub struct PreparedPool {
    pub geom: PoolGeometry,
    kind: PoolKind,
    count_include_pad: bool,
    /// Per output row / column: `[start, end)` of in-range input taps and the padded-extent count.
    rows: Vec<(usize, usize, usize)>,
    cols: Vec<(usize, usize, usize)>,
}

fn ranges(
    out: usize,
    input: usize,
    k: usize,
    s: usize,
    pb: usize,
    pe: usize,
) -> Vec<(usize, usize, usize)> {
    (0..out)
        .map(|o| {
            let start = (o * s) as isize - pb as isize;
            let end_padded = (start + k as isize).min((input + pe) as isize);
            // a window wholly inside the end padding (pads larger than the kernel) is empty
            let lo = (start.max(0) as usize).min(input);
            let hi = (end_padded.min(input as isize)).max(lo as isize) as usize;
            (lo, hi, (end_padded - start).max(0) as usize)
        })
        .collect()
}

impl PreparedPool {
    /// Prepares the layer when this kernel handles its geometry (2-D, dilation 1).
    pub fn new(geom: PoolGeometry, kind: PoolKind, count_include_pad: bool) -> Option<Self> {
        // a 2-D window over 2-D planes only (depth padding could add output planes)
        if geom.kernel[0] != 1
            || geom.input[0] != 1
            || geom.output[0] != 1
            || geom.dilation != [1, 1, 1]
        {
            return None;
        }
        let rows = ranges(
            geom.output[1],
            geom.input[1],
            geom.kernel[1],
            geom.stride[1],
            geom.pad_begin[1],
            geom.pad_end[1],
        );
        let cols = ranges(
            geom.output[2],
            geom.input[2],
            geom.kernel[2],
            geom.stride[2],
            geom.pad_begin[2],
            geom.pad_end[2],
        );
        Some(PreparedPool {
            geom,
            kind,
            count_include_pad,
            rows,
            cols,
        })
    }

    /// Max or average.
    pub fn kind(&self) -> PoolKind {
        self.kind
    }

    /// Per output row: `[start, end)` of its window's in-range input rows, and the window's
    /// extent inside the padded input.
    pub(crate) fn row_ranges(&self) -> &[(usize, usize, usize)] {
        &self.rows
    }

    pub fn run(&self, x: &[f32], out: &mut [f32]) {
        let [_, ih, iw] = self.geom.input;
        let [_, oh, ow] = self.geom.output;
        if self.kind == PoolKind::Max {
            out.par_chunks_mut(oh * ow)
                .enumerate()
                .for_each_init(Vec::new, |buf, (plane, o)| {
                    max_plane(
                        &self.geom,
                        &self.rows,
                        &x[plane * ih * iw..][..ih * iw],
                        o,
                        buf,
                    )
                });
            return;
        }
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(plane, o)| {
                let xp = &x[plane * ih * iw..][..ih * iw];
                for oy in 0..oh {
                    for ox in 0..ow {
                        o[oy * ow + ox] = self.at(xp, oy, ox);
                    }
                }
            });
    }

    /// Recomputes only the output rectangles `[y0, y1, x0, x1)` (half-open) of `out`, which
    /// holds the layer's full output; the rest of `out` is left as it is. Same results as
    /// [`PreparedPool::run`] at those positions.
    pub fn run_rects(&self, x: &[f32], out: &mut [f32], rects: &[[usize; 4]]) {
        let [_, ih, iw] = self.geom.input;
        let [_, oh, ow] = self.geom.output;
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(plane, o)| {
                let xp = &x[plane * ih * iw..][..ih * iw];
                for &[y0, y1, x0, x1] in rects {
                    for oy in y0..y1.min(oh) {
                        for ox in x0..x1.min(ow) {
                            o[oy * ow + ox] = self.at(xp, oy, ox);
                        }
                    }
                }
            });
    }

    /// One output value of a plane `xp`.
    #[inline]
    fn at(&self, xp: &[f32], oy: usize, ox: usize) -> f32 {
        let iw = self.geom.input[2];
        let (y0, y1, ycount) = self.rows[oy];
        let (x0, x1, xcount) = self.cols[ox];
        match self.kind {
            PoolKind::Max => {
                let mut m = f32::NEG_INFINITY;
                let mut nan = false;
                for y in y0..y1 {
                    for &v in &xp[y * iw + x0..y * iw + x1] {
                        nan |= v.is_nan();
                        m = if v > m { v } else { m };
                    }
                }
                if nan {
                    f32::NAN
                } else {
                    m
                }
            }
            PoolKind::Average => {
                let mut s = 0f32;
                for y in y0..y1 {
                    s += xp[y * iw + x0..y * iw + x1].iter().sum::<f32>();
                }
                let n = if self.count_include_pad {
                    ycount * xcount
                } else {
                    (y1 - y0) * (x1 - x0)
                };
                if n == 0 {
                    0.0
                } else {
                    s / n as f32
                }
            }
        }
    }
}

/// Max pooling of one plane, vectorised across output columns: for each output row, the maximum
/// of the input rows its window covers is taken first (one elementwise pass per row), written
/// once into a -inf padded buffer split into stride phases, so every kernel column is a
/// contiguous elementwise max. NaN propagates (a NaN input makes its windows NaN).
/// Max pooling of one plane: the AVX-512 kernel (`pool_avx512`) for horizontal strides 1 and 2,
/// else the loops above compiled with AVX2 where the CPU has it (an AVX-512 build of these
/// loops measured 2.8x slower than the AVX2 build).
pub(crate) fn max_plane(
    g: &PoolGeometry,
    rows: &[(usize, usize, usize)],
    x: &[f32],
    o: &mut [f32],
    buf: &mut Vec<f32>,
) {
    match crate::simd::active_path() {
        #[cfg(target_arch = "x86_64")]
        crate::simd::SimdPath::Avx512 if crate::pool_avx512::handles(g) => {
            // SAFETY: active_path() returns Avx512 only when avx512f was detected; `handles`
            // was checked; `x`, `o` and `rows` are one plane and its row ranges.
            let done = unsafe { crate::pool_avx512::max_plane(g, rows, x, o, buf) };
            if !done {
                // the plane holds a NaN: the portable loops propagate it
                max_plane_body(g, rows, x, o, buf)
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: active_path() returns Avx512 or Avx2Fma only when avx2 and fma were
        // detected (the AVX-512 path requires them too).
        crate::simd::SimdPath::Avx512 | crate::simd::SimdPath::Avx2Fma => unsafe {
            max_plane_avx2(g, rows, x, o, buf)
        },
        _ => max_plane_body(g, rows, x, o, buf),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_plane_avx2(
    g: &PoolGeometry,
    rows: &[(usize, usize, usize)],
    x: &[f32],
    o: &mut [f32],
    buf: &mut Vec<f32>,
) {
    max_plane_body(g, rows, x, o, buf)
}

#[inline(always)]
fn max_plane_body(
    g: &PoolGeometry,
    rows: &[(usize, usize, usize)],
    x: &[f32],
    o: &mut [f32],
    buf: &mut Vec<f32>,
) {
    let [_, _, iw] = g.input;
    let [_, _, ow] = g.output;
    let kw = g.kernel[2];
    // with one output column the stride never applies (and may be absurdly large)
    let sx = if ow == 1 { 1 } else { g.stride[2] };
    let px = g.pad_begin[2];
    let padded = (ow - 1) * sx + kw;
    let phase_len = padded.div_ceil(sx);
    buf.resize(iw + padded + sx * phase_len, f32::NEG_INFINITY);
    let (vmax, rest) = buf.split_at_mut(iw);
    let (row, phases) = rest.split_at_mut(padded);
    // keeps NaN: a NaN operand on either side wins
    let max_nan = |m: f32, v: f32| if (v > m) | v.is_nan() { v } else { m };
    for (oy, &(y0, y1, _)) in rows.iter().enumerate() {
        let orow = &mut o[oy * ow..][..ow];
        if y0 >= y1 {
            // a window wholly in the padding
            orow.fill(f32::NEG_INFINITY);
            continue;
        }
        vmax.copy_from_slice(&x[y0 * iw..][..iw]);
        for y in y0 + 1..y1 {
            for (m, &v) in vmax.iter_mut().zip(&x[y * iw..][..iw]) {
                *m = max_nan(*m, v);
            }
        }
        let n = iw.min(padded.saturating_sub(px));
        let p0 = px.min(padded);
        row[..p0].fill(f32::NEG_INFINITY);
        row[p0..p0 + n].copy_from_slice(&vmax[..n]);
        row[p0 + n..].fill(f32::NEG_INFINITY);
        let view: &[f32] = if sx == 1 {
            row
        } else if sx == 2 {
            // the common case, a plain de-interleave (vectorises)
            let (p0, p1) = phases.split_at_mut(phase_len);
            let pairs = padded / 2;
            for ((a, b), c) in p0.iter_mut().zip(p1.iter_mut()).zip(row.chunks_exact(2)) {
                *a = c[0];
                *b = c[1];
            }
            p0[pairs..].fill(f32::NEG_INFINITY);
            p1[pairs..phase_len].fill(f32::NEG_INFINITY);
            if padded % 2 == 1 {
                p0[pairs] = row[padded - 1];
            }
            phases
        } else {
            for r in 0..sx {
                for (i, v) in phases[r * phase_len..][..phase_len].iter_mut().enumerate() {
                    *v = row.get(i * sx + r).copied().unwrap_or(f32::NEG_INFINITY);
                }
            }
            phases
        };
        orow.fill(f32::NEG_INFINITY);
        for kx in 0..kw {
            let start = if sx == 1 {
                kx
            } else {
                (kx % sx) * phase_len + kx / sx
            };
            for (m, &v) in orow.iter_mut().zip(&view[start..start + ow]) {
                *m = max_nan(*m, v);
            }
        }
    }
}

/// Global pooling: `out[i]` = mean (Average) or max (Max; NaN propagates) of plane `i` of `x`
/// (planes of `plane` elements, `out.len()` of them), planes in parallel. The mean sums in 16
/// interleaved partial sums (vectorised), so its rounding differs from a sequential sum by a
/// few ulps.
pub fn global_pool(kind: PoolKind, plane: usize, x: &[f32], out: &mut [f32]) {
    assert!(x.len() >= out.len() * plane);
    out.par_chunks_mut(64).enumerate().for_each(|(ci, o)| {
        for (j, v) in o.iter_mut().enumerate() {
            let p = &x[(ci * 64 + j) * plane..][..plane];
            *v = match kind {
                PoolKind::Average if plane == 0 => 0.0,
                PoolKind::Average => crate::simd::sum(p) / plane as f32,
                PoolKind::Max => p.iter().fold(f32::NEG_INFINITY, |m, &v| {
                    if m.is_nan() || !(v > m || v.is_nan()) {
                        m
                    } else {
                        v
                    }
                }),
            };
        }
    });
}
