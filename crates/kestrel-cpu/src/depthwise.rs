//! Depthwise 2-D convolution (one filter per channel), any kernel size, stride and dilation.
//!
//! Per output row, each input row it needs is copied once into a zero-padded buffer split into
//! `stride` phases, so every kernel tap becomes a contiguous multiply-add over the output row
//! (vectorised for the active SIMD path; the whole plane loop is compiled per path so the inner
//! loops inline).

use crate::simd::{active_path, SimdPath};
use kestrel_core::ops::conv::ConvGeometry;

/// Computes one channel plane: `out[oh*ow] = Σ taps w * x` (bias/activation applied by the
/// caller). `x` is the `ih*iw` input plane, `w` the `kh*kw` filter, `buf` scratch.
pub fn depthwise_plane(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    buf: &mut Vec<f32>,
) {
    match active_path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: active_path() returns Avx512 only when avx512f and fma were detected.
        SimdPath::Avx512 => unsafe { plane_avx512(g, x, w, out, buf) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: active_path() returns Avx2Fma only when avx2 and fma were detected.
        SimdPath::Avx2Fma => unsafe { plane_avx2(g, x, w, out, buf) },
        _ => plane_body(g, x, w, out, buf),
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
) {
    plane_body(g, x, w, out, buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(g: &ConvGeometry, x: &[f32], w: &[f32], out: &mut [f32], buf: &mut Vec<f32>) {
    plane_body(g, x, w, out, buf)
}

#[inline(always)]
fn plane_body(g: &ConvGeometry, x: &[f32], w: &[f32], out: &mut [f32], buf: &mut Vec<f32>) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let [_, kh, kw] = g.kernel;
    let (sy, sx) = (g.stride[1], g.stride[2]);
    let (dy, dx) = (g.dilation[1], g.dilation[2]);
    let (py, px) = (g.pad_begin[1] as isize, g.pad_begin[2] as isize);
    // padded row length that covers every tap of every output column
    let padded = (ow - 1) * sx + (kw - 1) * dx + 1;
    let phase_len = padded.div_ceil(sx);
    // per kernel row: a zero-padded input row (split into stride phases when sx > 1)
    // taps are read 16 columns at a time; the margin keeps the last chunk in bounds (its extra
    // lanes compute discarded outputs)
    let ow_pad = ow.div_ceil(16) * 16;
    let row_len = padded + sx * phase_len + 16;
    buf.resize(kh * row_len + ow_pad, 0.0);
    let (rows, opad) = buf.split_at_mut(kh * row_len);
    for oy in 0..oh {
        let o = &mut out[oy * ow..][..ow];
        for ky in 0..kh {
            let rb = &mut rows[ky * row_len..][..row_len];
            let (row, phases) = rb.split_at_mut(padded);
            let iy = (oy * sy + ky * dy) as isize - py;
            if iy < 0 || iy >= ih as isize {
                row.fill(0.0);
                phases.fill(0.0);
                continue;
            }
            let src = &x[iy as usize * iw..][..iw];
            // zero-padded copy of the input row: row[i] = x[i - px]
            let lo = (px.max(0) as usize).min(padded);
            let skip = (-px).max(0) as usize; // negative padding drops leading input columns
            let n = iw.saturating_sub(skip).min(padded - lo);
            row[..lo].fill(0.0);
            row[lo..lo + n].copy_from_slice(&src[skip..skip + n]);
            row[lo + n..].fill(0.0);
            if sx > 1 {
                for r in 0..sx {
                    let ph = &mut phases[r * phase_len..][..phase_len];
                    for (i, v) in ph.iter_mut().enumerate() {
                        *v = row.get(i * sx + r).copied().unwrap_or(0.0);
                    }
                }
            }
        }
        // the contiguous source of tap (ky, kx) for output columns 0..ow
        let tap = |ky: usize, kx: usize| -> &[f32] {
            let rb = &rows[ky * row_len..][..row_len];
            let off = kx * dx;
            if sx == 1 {
                &rb[off..off + ow_pad]
            } else {
                let start = padded + (off % sx) * phase_len + off / sx;
                &rb[start..start + ow_pad]
            }
        };
        if kh == 3 && kw == 3 {
            let t: [&[f32]; 9] = std::array::from_fn(|i| tap(i / 3, i % 3));
            let wv: [f32; 9] = std::array::from_fn(|i| w[i]);
            taps_row::<9>(opad, &t, &wv);
            o.copy_from_slice(&opad[..ow]);
        } else if kh == 5 && kw == 5 {
            let t: [&[f32]; 25] = std::array::from_fn(|i| tap(i / 5, i % 5));
            let wv: [f32; 25] = std::array::from_fn(|i| w[i]);
            taps_row::<25>(opad, &t, &wv);
            o.copy_from_slice(&opad[..ow]);
        } else {
            o.fill(0.0);
            for ky in 0..kh {
                for kx in 0..kw {
                    let wv = w[ky * kw + kx];
                    for (a, &b) in o.iter_mut().zip(&tap(ky, kx)[..ow]) {
                        *a = wv.mul_add(b, *a);
                    }
                }
            }
        }
    }
}

/// `o[i] = Σ_t w[t] * src[t][i]`, all taps accumulated in registers (one store per output),
/// 16 outputs at a time.
#[inline(always)]
fn taps_row<const T: usize>(o: &mut [f32], src: &[&[f32]; T], w: &[f32; T]) {
    const L: usize = 16;
    let n = o.len();
    let full = n / L * L;
    let mut i = 0;
    while i < full {
        let mut acc = [0f32; L];
        for t in 0..T {
            let s: &[f32; L] = src[t][i..i + L].try_into().expect("16 elements");
            let wt = w[t];
            for l in 0..L {
                acc[l] = wt.mul_add(s[l], acc[l]);
            }
        }
        o[i..i + L].copy_from_slice(&acc);
        i += L;
    }
    for j in full..n {
        let mut acc = 0f32;
        for t in 0..T {
            acc = w[t].mul_add(src[t][j], acc);
        }
        o[j] = acc;
    }
}
