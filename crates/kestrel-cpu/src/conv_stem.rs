//! AVX-512 direct convolution for layers with few input channels — a network's first layer,
//! on the 3 planes of an RGB image — straight from NCHW, with no padded copy.
//!
//! The GEMM-shaped kernels are a poor fit there: the sum has only `3 k²` terms, so a tile's
//! set-up and its output stores cost as much as its arithmetic. Here one vector holds 16
//! output columns of one output row; each tap's 16 input values are loaded once (a masked
//! unaligned load at stride 1, two loads and a `vpermt2ps` de-interleave at stride 2, masks
//! zeroing the padding) and multiplied into 16 output channels at once (16 accumulators, the
//! weights broadcast from a packed `[oc block][c][ky][kx][16]` copy). Bias and a clamp
//! activation are applied before the stores. Rows are spread over threads.

use crate::depthwise_rows::lane_mask;
use kestrel_core::ops::conv::ConvGeometry;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Most input channels a layer may have for this kernel.
pub const MAX_C_IN: usize = 4;

/// Output channels computed together.
const OC_BLOCK: usize = 16;

/// 16-column strips computed together: `STRIPS x OC_BLOCK` accumulators; per tap `OC_BLOCK`
/// weight broadcasts and `STRIPS` input vectors feed `STRIPS x OC_BLOCK` FMAs. Measured
/// (examples/stembench.rs, one thread, MobileNetV2 / SqueezeNet / ResNet / VGG-16 first
/// layers): 16 x 1 0.22 / 0.45 / 1.93 / 1.78 ms; 8 x 2 0.29 / 0.58 / 2.87 / 1.73; 12 x 2 0.28 /
/// 0.57 / 2.73 / 1.98; 24 x 1 0.34 / 0.53 / 2.33 / 1.99; 8 x 3 0.35 / 0.69 / 3.19 / 1.91 (the
/// wider tiles spill). ResNet's 7x7 stem stays on the direct GEMM kernel (1.81-1.88 ms there).
const STRIPS: usize = 1;

/// Whether [`run`] handles this geometry: ungrouped 2-D, at most [`MAX_C_IN`] input
/// channels, a square 3x3 or 5x5 filter at stride 1 or 2 (both axes), no dilation, rows of
/// 8+ outputs.
pub fn handles(g: &ConvGeometry) -> bool {
    let sx = if g.output[2] == 1 { 1 } else { g.stride[2] };
    let sy = if g.output[1] == 1 { 1 } else { g.stride[1] };
    g.group == 1
        && g.c_in <= MAX_C_IN
        && g.input[0] == 1
        && g.output[0] == 1
        && g.kernel[0] == 1
        && matches!(g.kernel[2], 3 | 5)
        && g.kernel[1] == g.kernel[2]
        && (sx == 1 || sx == 2)
        && sy == sx
        && g.dilation[1] == 1
        && g.dilation[2] == 1
        && g.output[2] >= 8
}

/// The ONNX-layout filters `[c_out][c_in][k][k]` packed for [`run`]:
/// `[c_out / 16 blocks][c_in][k][k][16]`, zero past the last output channel.
pub fn pack(w: &[f32], c_out: usize, c_in: usize, k: usize) -> Vec<f32> {
    let taps = c_in * k * k;
    let blocks = c_out.div_ceil(OC_BLOCK);
    let mut p = vec![0f32; blocks * taps * OC_BLOCK];
    for o in 0..c_out {
        let (b, j) = (o / OC_BLOCK, o % OC_BLOCK);
        for t in 0..taps {
            p[(b * taps + t) * OC_BLOCK + j] = w[o * taps + t];
        }
    }
    p
}

/// One image: `out = clamp(bias + conv(x))`; `x` is the `c_in × ih × iw` input, `out` the
/// `c_out × oh × ow` output, `packed` from [`pack`], `bias` one value per output channel,
/// `clamp` `(lo, hi)` or `None` (NaN propagates). Runs on the current rayon pool.
///
/// # Safety
/// The CPU must support AVX-512F and FMA, and `g` must satisfy [`handles`] or be a region of a
/// layer that does (other extents and pads: convolutional caching).
#[cfg(target_arch = "x86_64")]
pub unsafe fn run(
    g: &ConvGeometry,
    packed: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    slope: Option<&[f32]>,
    x: &[f32],
    out: &mut [f32],
) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let k = g.kernel[2];
    assert!(
        x.len() >= g.c_in * ih * iw
            && out.len() >= g.c_out * oh * ow
            && bias.len() >= g.c_out
            && slope.is_none_or(|s| s.len() >= g.c_out)
            && packed.len() >= g.c_out.div_ceil(OC_BLOCK) * g.c_in * k * k * OC_BLOCK
    );
    // one stride for both axes: a stride never applies along an axis with one output (a
    // region of an accepted layer may have a single row or column)
    let s = match (oh, ow) {
        (1, 1) => 1,
        (_, 1) => g.stride[1],
        _ => g.stride[2],
    };
    assert!(
        (s == 1 || s == 2) && (oh == 1 || ow == 1 || g.stride[1] == g.stride[2]),
        "conv_stem::run: strides {:?} outside what `handles` accepts",
        g.stride
    );
    // tasks write disjoint rows of the output planes
    let o = crate::direct::SharedMut(out.as_mut_ptr());
    // tasks: bands of rows, every output block of each row in turn
    let blocks = g.c_out.div_ceil(OC_BLOCK);
    let bands = oh.div_ceil(ROW_BAND);
    (0..bands).into_par_iter().for_each(|band| {
        for oy in band * ROW_BAND..((band + 1) * ROW_BAND).min(oh) {
            for b in 0..blocks {
                // SAFETY: the caller's contract (CPU features, `handles`); the lengths were
                // checked above; this task writes only its rows of the output planes.
                unsafe {
                    let a = (g, packed, bias, clamp, slope, x, o.get(), oy, b);
                    match (k, s, block_width(g.c_out, b)) {
                        (3, 1, 16) => row::<3, 1, 16>(a),
                        (3, 1, 12) => row::<3, 1, 12>(a),
                        (3, 1, 8) => row::<3, 1, 8>(a),
                        (3, 1, _) => row::<3, 1, 4>(a),
                        (3, _, 16) => row::<3, 2, 16>(a),
                        (3, _, 12) => row::<3, 2, 12>(a),
                        (3, _, 8) => row::<3, 2, 8>(a),
                        (3, _, _) => row::<3, 2, 4>(a),
                        (5, 1, 16) => row::<5, 1, 16>(a),
                        (5, 1, 12) => row::<5, 1, 12>(a),
                        (5, 1, 8) => row::<5, 1, 8>(a),
                        (5, 1, _) => row::<5, 1, 4>(a),
                        (_, _, 16) => row::<5, 2, 16>(a),
                        (_, _, 12) => row::<5, 2, 12>(a),
                        (_, _, 8) => row::<5, 2, 8>(a),
                        _ => row::<5, 2, 4>(a),
                    }
                }
            }
        }
    });
}

/// Output rows per task.
const ROW_BAND: usize = 2;

/// Output channels block `b` computes: its valid channels rounded up to a multiple of 4 (the
/// only block of a layer with 10 output channels, MTCNN P-Net's first, runs 12 accumulators
/// instead of 16: that layer at 640x480, one thread, 2.6-2.9 -> 2.0 ms).
fn block_width(c_out: usize, b: usize) -> usize {
    (c_out - b * OC_BLOCK).min(OC_BLOCK).div_ceil(4) * 4
}

/// One output row's arguments: the layer, packed filters, bias, clamp, PRelu slopes, input,
/// output, the row `oy` and the output-channel block `b`.
type RowArgs<'a> = (
    &'a ConvGeometry,
    &'a [f32],
    &'a [f32],
    Option<(f32, f32)>,
    Option<&'a [f32]>,
    &'a [f32],
    *mut f32,
    usize,
    usize,
);

/// Output row `oy` of the first `NB` output planes of block `b` (`NB` a multiple of 4, at
/// most 16, covering the block's valid channels), for a `K × K` filter at stride `S`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn row<const K: usize, const S: usize, const NB: usize>(
    (g, packed, bias, clamp, slope, x, out, oy, b): RowArgs,
) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let (c_in, c_out) = (g.c_in, g.c_out);
    let (py, px) = (g.pad_begin[1] as isize, g.pad_begin[2] as isize);
    let taps = c_in * K * K;
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let xp = x.as_ptr();
    let wb = &packed[b * taps * OC_BLOCK..][..taps * OC_BLOCK];
    for c0 in (0..ow).step_by(16 * STRIPS) {
        // per strip and tap column: where its 16 (stride 2: 32) input columns start, and
        // their masks (all clear for a strip past the row's end)
        let mut start = [[0isize; K]; STRIPS];
        let mut m0 = [[0u16; K]; STRIPS];
        let mut m1 = [[0u16; K]; STRIPS];
        let mut store_mask = [0u16; STRIPS];
        for q in 0..STRIPS {
            let cq = c0 + 16 * q;
            if cq >= ow {
                continue;
            }
            for kx in 0..K {
                let s = (cq * S + kx) as isize - px;
                start[q][kx] = s;
                m0[q][kx] = lane_mask(s, iw);
                m1[q][kx] = lane_mask(s + 16, iw);
            }
            let n = (ow - cq).min(16);
            store_mask[q] = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
        }
        let mut acc = [[_mm512_setzero_ps(); NB]; STRIPS];
        for (j, &bv) in bias[b * OC_BLOCK..].iter().take(NB).enumerate() {
            for a in acc.iter_mut() {
                a[j] = _mm512_set1_ps(bv);
            }
        }
        for c in 0..c_in {
            for ky in 0..K {
                let iy = (oy * S + ky) as isize - py;
                if iy < 0 || iy >= ih as isize {
                    continue;
                }
                let rowp = xp.wrapping_add((c * ih + iy as usize) * iw);
                for kx in 0..K {
                    let mut v = [_mm512_setzero_ps(); STRIPS];
                    for q in 0..STRIPS {
                        // masked lanes are not read: addresses outside the plane are never
                        // touched (wrapping_offset: no out-of-allocation pointer arithmetic)
                        let p = rowp.wrapping_offset(start[q][kx]);
                        // SAFETY: every unmasked lane is an input column in 0..iw of row
                        // iy < ih of channel c < c_in
                        v[q] = unsafe {
                            if S == 1 {
                                _mm512_maskz_loadu_ps(m0[q][kx], p)
                            } else {
                                let a = _mm512_maskz_loadu_ps(m0[q][kx], p);
                                let b = _mm512_maskz_loadu_ps(m1[q][kx], p.wrapping_add(16));
                                _mm512_permutex2var_ps(a, even, b)
                            }
                        };
                    }
                    let wt: &[f32; NB] = wb[((c * K + ky) * K + kx) * OC_BLOCK..][..NB]
                        .try_into()
                        .expect("one block of weights");
                    for (j, &w) in wt.iter().enumerate() {
                        let wv = _mm512_set1_ps(w);
                        for q in 0..STRIPS {
                            acc[q][j] = _mm512_fmadd_ps(wv, v[q], acc[q][j]);
                        }
                    }
                }
            }
        }
        for q in 0..STRIPS {
            if store_mask[q] == 0 {
                continue;
            }
            for (j, &a) in acc[q].iter().enumerate() {
                let oc = b * OC_BLOCK + j;
                if oc >= c_out {
                    break;
                }
                // a fused PRelu: x < 0 (ordered: NaN is kept) -> slope x
                let a = match slope {
                    Some(s) => {
                        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_setzero_ps());
                        _mm512_mask_mul_ps(a, neg, a, _mm512_set1_ps(s[oc]))
                    }
                    None => a,
                };
                // max(lo, x) / min(hi, x) return x when it is NaN
                let y = _mm512_min_ps(vhi, _mm512_max_ps(vlo, a));
                // SAFETY: plane oc < c_out, row oy < oh, columns within the strip < ow
                unsafe {
                    _mm512_mask_storeu_ps(
                        out.add((oc * oh + oy) * ow + c0 + 16 * q),
                        store_mask[q],
                        y,
                    )
                };
            }
        }
    }
}
