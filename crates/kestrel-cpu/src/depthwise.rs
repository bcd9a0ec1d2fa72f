//! Depthwise 2-D convolution (one filter per channel), any kernel size, stride and dilation.
//!
//! Per output row, each input row it needs is copied once into a zero-padded buffer split into
//! `stride` phases, so every kernel tap becomes a contiguous multiply-add over the output row
//! (vectorised for the active SIMD path; the whole plane loop is compiled per path so the inner
//! loops inline).

use crate::simd::active_path;
#[cfg(target_arch = "x86_64")]
use crate::simd::SimdPath;
use kestrel_core::ops::conv::ConvGeometry;

/// A bias and clamp applied to each output row as it is written (see [`depthwise_plane`]).
#[derive(Clone, Copy, Debug)]
pub struct RowPost {
    pub bias: f32,
    pub lo: f32,
    pub hi: f32,
}

impl RowPost {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        let x = v + self.bias;
        // comparisons keep NaN
        let x = if x < self.lo { self.lo } else { x };
        if x > self.hi {
            self.hi
        } else {
            x
        }
    }
}

/// Computes one channel plane: `out[oh*ow] = Σ taps w * x`, then `post` (bias + clamp) on each
/// row while it is in cache when given (else the caller applies bias/activation). `x` is the
/// `ih*iw` input plane, `w` the `kh*kw` filter, `buf` scratch.
pub fn depthwise_plane(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    buf: &mut Vec<f32>,
    post: Option<RowPost>,
) {
    match active_path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: active_path() returns Avx512 only when avx512f and fma were detected.
        SimdPath::Avx512 => unsafe { plane_avx512(g, x, w, out, buf, post) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: active_path() returns Avx2Fma only when avx2 and fma were detected.
        SimdPath::Avx2Fma => unsafe { plane_avx2(g, x, w, out, buf, post) },
        _ => plane_body(g, x, w, out, buf, post),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn plane_avx512(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    buf: &mut Vec<f32>,
    post: Option<RowPost>,
) {
    plane_body(g, x, w, out, buf, post)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    buf: &mut Vec<f32>,
    post: Option<RowPost>,
) {
    plane_body(g, x, w, out, buf, post)
}

#[inline(always)]
fn plane_body(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    buf: &mut Vec<f32>,
    post: Option<RowPost>,
) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let [_, kh, kw] = g.kernel;
    // a stride never applies along an axis with one output (and may be absurdly large there)
    let sy = if oh == 1 { 1 } else { g.stride[1] };
    let sx = if ow == 1 { 1 } else { g.stride[2] };
    let (dy, dx) = (g.dilation[1], g.dilation[2]);
    let (py, px) = (g.pad_begin[1] as isize, g.pad_begin[2] as isize);
    // the zero-padded input plane, just large enough for every tap of every output
    let ph = (oh - 1) * sy + (kh - 1) * dy + 1;
    let pw = (ow - 1) * sx + (kw - 1) * dx + 1;
    let phw = pw.div_ceil(sx); // width of one stride phase
                               // taps are read 16 columns at a time; the margin keeps the last chunk inside the buffer (its
                               // extra lanes compute discarded outputs)
    const MARGIN: usize = 16;
    let ow_pad = ow.div_ceil(16) * 16;
    let plane_len = ph * pw + MARGIN;
    let phases_len = if sx > 1 { sx * ph * phw + MARGIN } else { 0 };
    buf.resize(plane_len + phases_len + ow_pad, 0.0);
    let (plane, rest) = buf.split_at_mut(plane_len);
    let (phases, opad) = rest.split_at_mut(phases_len);
    for r in 0..ph {
        let dst = &mut plane[r * pw..(r + 1) * pw];
        let iy = r as isize - py;
        if iy < 0 || iy >= ih as isize {
            dst.fill(0.0);
            continue;
        }
        let src = &x[iy as usize * iw..][..iw];
        let lo = (px.max(0) as usize).min(pw);
        let skip = (-px).max(0) as usize; // negative padding drops leading input columns
        let n = iw.saturating_sub(skip).min(pw - lo);
        dst[..lo].fill(0.0);
        dst[lo..lo + n].copy_from_slice(&src[skip..skip + n]);
        dst[lo + n..].fill(0.0);
    }
    plane[ph * pw..].fill(0.0);
    if sx == 2 {
        // the common case, a plain de-interleave per row (vectorises; the generic loop below
        // made stride-2 layers 8x slower per output than stride-1 ones)
        let (p0, p1) = phases.split_at_mut(ph * phw);
        for r in 0..ph {
            let row = &plane[r * pw..(r + 1) * pw];
            let (d0, d1) = (&mut p0[r * phw..][..phw], &mut p1[r * phw..][..phw]);
            let pairs = pw / 2;
            for ((a, b), c) in d0.iter_mut().zip(d1.iter_mut()).zip(row.chunks_exact(2)) {
                *a = c[0];
                *b = c[1];
            }
            d0[pairs..].fill(0.0);
            d1[pairs..].fill(0.0);
            if pw % 2 == 1 {
                d0[pairs] = row[pw - 1];
            }
        }
        phases[sx * ph * phw..].fill(0.0);
    } else if sx > 1 {
        // phase q holds columns q, q + sx, q + 2 sx, ... of every padded row
        for q in 0..sx {
            for r in 0..ph {
                let row = &plane[r * pw..(r + 1) * pw];
                let d = &mut phases[(q * ph + r) * phw..][..phw];
                for (i, v) in d.iter_mut().enumerate() {
                    *v = row.get(i * sx + q).copied().unwrap_or(0.0);
                }
            }
        }
        phases[sx * ph * phw..].fill(0.0);
    }
    // every tap of output row oy reads data[row_base(oy) + offs[t] ..][..ow_pad]
    let (data, row_stride): (&[f32], usize) = if sx == 1 { (plane, pw) } else { (phases, phw) };
    let offs: Vec<usize> = (0..kh * kw)
        .map(|t| {
            let (ky, kx) = (t / kw, t % kw);
            let off = kx * dx;
            if sx == 1 {
                ky * dy * pw + off
            } else {
                (off % sx) * ph * phw + ky * dy * phw + off / sx
            }
        })
        .collect();
    for oy in 0..oh {
        let o = &mut out[oy * ow..][..ow];
        let base = oy * sy * row_stride;
        if kh == 3 && kw == 3 {
            taps_row::<9>(
                opad,
                data,
                base,
                offs[..9].try_into().expect("9 taps"),
                w[..9].try_into().expect("9 taps"),
            );
            finish_row(o, &opad[..ow], post);
        } else if kh == 5 && kw == 5 {
            taps_row::<25>(
                opad,
                data,
                base,
                offs[..25].try_into().expect("25 taps"),
                w[..25].try_into().expect("25 taps"),
            );
            finish_row(o, &opad[..ow], post);
        } else {
            o.fill(0.0);
            for (t, &wv) in w[..kh * kw].iter().enumerate() {
                for (a, &b) in o.iter_mut().zip(&data[base + offs[t]..][..ow]) {
                    *a = wv.mul_add(b, *a);
                }
            }
            if let Some(p) = post {
                o.iter_mut().for_each(|v| *v = p.apply(*v));
            }
        }
    }
}

/// Writes a finished row: a copy, or bias + clamp on the way.
#[inline(always)]
fn finish_row(o: &mut [f32], src: &[f32], post: Option<RowPost>) {
    match post {
        None => o.copy_from_slice(src),
        Some(p) => {
            for (d, &v) in o.iter_mut().zip(src) {
                *d = p.apply(v);
            }
        }
    }
}

/// `o[i] = Σ_t w[t] * data[base + offs[t] + i]` for `i < o.len()` (a multiple of 16), all taps
/// accumulated in registers (one store per output), 16 outputs at a time.
#[inline(always)]
fn taps_row<const T: usize>(
    o: &mut [f32],
    data: &[f32],
    base: usize,
    offs: &[usize; T],
    w: &[f32; T],
) {
    const L: usize = 16;
    let mut i = 0;
    while i + L <= o.len() {
        let mut acc = [0f32; L];
        for t in 0..T {
            let s: &[f32; L] = data[base + offs[t] + i..][..L]
                .try_into()
                .expect("16 elements");
            let wt = w[t];
            for l in 0..L {
                acc[l] = wt.mul_add(s[l], acc[l]);
            }
        }
        o[i..i + L].copy_from_slice(&acc);
        i += L;
    }
}
