//! AVX-512 depthwise convolution of one channel plane straight from NCHW, with no padded copy
//! and no interleave: 16 output columns per vector, each tap one masked unaligned load
//! (horizontal stride 1) or a de-interleave of two masked loads (`vpermt2ps`, stride 2) and one
//! FMA with the tap's weight broadcast. Masks zero the lanes that fall into the padding, so the
//! borders need no special case; they are computed once per 16-column strip and tap column,
//! and the strip's rows are then swept top to bottom (a strip of a 56-wide plane is a few KB,
//! in L1). Bias and a clamp activation are applied before the store.
//!
//! Covers 2-D layers with 3x3 or 5x5 filters at stride 1 or 2 without dilation (every depthwise
//! layer of MobileNetV2 and EfficientNet), any padding.

use kestrel_core::ops::conv::ConvGeometry;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether [`plane`] handles this geometry (see the module doc).
pub fn handles(g: &ConvGeometry) -> bool {
    let sx = if g.output[2] == 1 { 1 } else { g.stride[2] };
    let sy = if g.output[1] == 1 { 1 } else { g.stride[1] };
    g.input[0] == 1
        && g.output[0] == 1
        && g.kernel[0] == 1
        && (sx == 1 || sx == 2)
        && sy == sx
        && matches!(g.kernel[2], 3 | 5)
        && g.kernel[1] == g.kernel[2]
        && g.dilation[1] == 1
        && g.dilation[2] == 1
}

/// `out = clamp(bias + Σ taps w · x)` for output rows `rows` of one channel plane: `x` is
/// the `ih × iw` input plane, `w` the `k × k` filter, `out` the start of the `oh × ow` output
/// plane; `clamp` is `(lo, hi)` (NaN propagates), `None` for no activation.
///
/// # Safety
/// The CPU must support AVX-512F and FMA; `g` must satisfy [`handles`]; the slices must have
/// the lengths above, `out` must be valid for writes of `oh × ow` floats, and nothing else
/// may access rows `rows` of it during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn plane(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: *mut f32,
    rows: std::ops::Range<usize>,
) {
    let s = if g.output[2] == 1 { 1 } else { g.stride[2] };
    // SAFETY: the caller's contract (avx512f + fma, `handles`, slice lengths) is plane_k's
    unsafe {
        match (g.kernel[2], s) {
            (3, 1) => plane_k::<3, 1>(g, x, w, bias, clamp, out, rows),
            (3, _) => plane_k::<3, 2>(g, x, w, bias, clamp, out, rows),
            (5, 1) => plane_k::<5, 1>(g, x, w, bias, clamp, out, rows),
            _ => plane_k::<5, 2>(g, x, w, bias, clamp, out, rows),
        }
    }
}

/// Output rows computed together (see `plane_k`).
const ROWS: usize = 4;

/// The lanes `i` of a 16-wide load starting at input column `s` with `0 <= s + i < iw`.
#[inline(always)]
pub(crate) fn lane_mask(s: isize, iw: usize) -> u16 {
    let lo = (-s).clamp(0, 16) as u32;
    let hi = (iw as isize - s).clamp(0, 16) as u32;
    let upto = if hi >= 16 { u32::MAX } else { (1u32 << hi) - 1 };
    (upto & !((1u32 << lo) - 1)) as u16
}

/// The kernel for a `K × K` filter at stride `S` (both axes): the filter's taps are held in
/// vectors, and [`ROWS`] output rows of a 16-column strip are accumulated together (independent
/// FMA chains; each input row loaded once for all of them). Every loop but the strip and row
/// sweeps is unrolled at compile time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn plane_k<const K: usize, const S: usize>(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    op: *mut f32,
    rows: std::ops::Range<usize>,
) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let (py, px) = (g.pad_begin[1] as isize, g.pad_begin[2] as isize);
    assert!(x.len() >= ih * iw && w.len() >= K * K && rows.end <= oh);
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let vbias = _mm512_set1_ps(bias);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let mut wv = [[_mm512_setzero_ps(); K]; K];
    for (ky, row) in wv.iter_mut().enumerate() {
        for (kx, v) in row.iter_mut().enumerate() {
            *v = _mm512_set1_ps(w[ky * K + kx]);
        }
    }
    let xp = x.as_ptr();
    // input rows one group of ROWS output rows reads
    let span = (ROWS - 1) * S + K;
    for c0 in (0..ow).step_by(16) {
        // per tap column: where its 16 (stride 2: 32) input columns start, and their masks
        let mut start = [0isize; K];
        let mut m0 = [0u16; K];
        let mut m1 = [0u16; K];
        for kx in 0..K {
            let s = (c0 * S + kx) as isize - px;
            start[kx] = s;
            m0[kx] = lane_mask(s, iw);
            m1[kx] = lane_mask(s + 16, iw);
        }
        let n = (ow - c0).min(16);
        let store_mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
        for oy0 in rows.clone().step_by(ROWS) {
            let mut acc = [vbias; ROWS];
            for t in 0..span {
                let iy = (oy0 * S + t) as isize - py;
                if iy < 0 || iy >= ih as isize {
                    continue;
                }
                let row = xp.wrapping_add(iy as usize * iw);
                let mut v = [_mm512_setzero_ps(); K];
                for kx in 0..K {
                    // masked lanes are not read, so addresses outside the plane are never
                    // touched (wrapping_offset: no out-of-allocation pointer arithmetic)
                    let p = row.wrapping_offset(start[kx]);
                    // SAFETY: every unmasked lane is an input column in 0..iw of row iy < ih
                    v[kx] = unsafe {
                        if S == 1 {
                            _mm512_maskz_loadu_ps(m0[kx], p)
                        } else {
                            let a = _mm512_maskz_loadu_ps(m0[kx], p);
                            let b = _mm512_maskz_loadu_ps(m1[kx], p.wrapping_add(16));
                            _mm512_permutex2var_ps(a, even, b)
                        }
                    };
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    // input row t serves output row oy0 + r through tap row ky = t - r S
                    if t < r * S || t - r * S >= K {
                        continue;
                    }
                    let ky = t - r * S;
                    for kx in 0..K {
                        *acc = _mm512_fmadd_ps(wv[ky][kx], v[kx], *acc);
                    }
                }
            }
            for (r, &acc) in acc.iter().enumerate() {
                if oy0 + r < rows.end {
                    // max(lo, x) / min(hi, x) return x when it is NaN
                    let y = _mm512_min_ps(vhi, _mm512_max_ps(vlo, acc));
                    // SAFETY: row oy0 + r < oh, columns c0 .. c0 + n <= ow of the output plane
                    unsafe { _mm512_mask_storeu_ps(op.add((oy0 + r) * ow + c0), store_mask, y) };
                }
            }
        }
    }
}
