//! AVX-512 direct convolution for layers with few input channels — a network's first layer,
//! on the 3 planes of an RGB image — straight from NCHW.
//!
//! The GEMM-shaped kernels are a poor fit there: the sum has only `3 k²` terms, so a tile's
//! set-up and its output stores cost as much as its arithmetic. Here one vector holds 16
//! output columns of one output row; each tap's 16 input values are loaded once (an unaligned
//! load at stride 1, two loads and a `vpermt2ps` de-interleave at stride 2) and multiplied into
//! 16 output channels at once (16 accumulators, the weights broadcast from a packed
//! `[oc block][c][ky][kx][16]` copy). Bias, a PRelu and a clamp activation are applied before
//! the stores. Rows are spread over threads in bands; each band first copies the input rows it
//! reads into a zero-padded per-thread tile (a few KB, in L1), so that no load needs a mask:
//! masked loads and stores are much slower on AMD Zen 4. The strip's accumulators stay in
//! registers (the general epilogue runs out of line and takes them by value: taking their
//! address made LLVM store them after every FMA). Measured (examples/stembench.rs, one thread):
//! SqueezeNet's first layer 0.575 ms with masked loads -> 0.433 ms, VGG-16's 2.80 -> 1.75 ms.

use kestrel_core::ops::conv::ConvGeometry;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Most input channels a layer may have for this kernel.
pub const MAX_C_IN: usize = 4;

/// Output channels computed together.
const OC_BLOCK: usize = 16;

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
    let s = stride_of(g);
    assert!(
        (s == 1 || s == 2) && (oh == 1 || ow == 1 || g.stride[1] == g.stride[2]),
        "conv_stem::run: strides {:?} outside what `handles` accepts",
        g.stride
    );
    // tasks write disjoint rows of the output planes
    let o = crate::direct::SharedMut(out.as_mut_ptr());
    // tasks: bands of rows, every output block of each row in turn, from a zero-padded copy
    // of the band's input rows (in L1): every load is a whole plain one (masked loads are
    // much slower on AMD Zen 4, see `crate::masked`) and no tap checks its row
    let bands = oh.div_ceil(ROW_BAND);
    (0..bands).into_par_iter().for_each(|band| {
        TILE.with(|tile| {
            let mut tile = tile.borrow_mut();
            band_rows(g, packed, bias, clamp, slope, x, o, band, &mut tile);
        })
    });
}

thread_local! {
    /// The calling thread's padded band of input rows (see [`Tile`]).
    static TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The output rows of band `band`, every output-channel block, from the band's padded input
/// rows (built in `tile`).
#[allow(clippy::too_many_arguments)]
fn band_rows(
    g: &ConvGeometry,
    packed: &[f32],
    bias: &[f32],
    clamp: Option<(f32, f32)>,
    slope: Option<&[f32]>,
    x: &[f32],
    o: crate::direct::SharedMut,
    band: usize,
    tile: &mut Vec<f32>,
) {
    let [_, oh, ow] = g.output;
    let k = g.kernel[2];
    let s = stride_of(g);
    let blocks = g.c_out.div_ceil(OC_BLOCK);
    let tile_w = ow.div_ceil(16) * 16 * s + k - 1;
    {
        let oy0 = band * ROW_BAND;
        let oy1 = ((band + 1) * ROW_BAND).min(oh);
        let tile_rows = (oy1 - oy0 - 1) * s + k;
        fill_tile(g, x, oy0 * s, tile_rows, tile_w, tile);
        let t = Tile {
            data: tile.as_ptr(),
            w: tile_w,
            rows: tile_rows,
            oy0,
        };
        for oy in oy0..oy1 {
            for b in 0..blocks {
                // SAFETY: the caller's contract (CPU features, `handles`); the lengths were
                // checked above; the tile holds the band's padded rows; this task writes only
                // its rows of the output planes.
                unsafe {
                    let a = (g, packed, bias, clamp, slope, &t, o.get(), oy, b);
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
    }
}

/// The one stride of both axes (a stride never applies along an axis with one output: a
/// region of an accepted layer may have a single row or column).
fn stride_of(g: &ConvGeometry) -> usize {
    match (g.output[1], g.output[2]) {
        (1, 1) => 1,
        (_, 1) => g.stride[1],
        _ => g.stride[2],
    }
}

/// A band's input rows, zero-padded: `c_in` planes of `rows × w` floats, row `r` of plane `c`
/// holding input row `r + first - pad_top` of channel `c` from column `pad_left` on (zeros
/// outside the input); `oy0` is the band's first output row.
struct Tile {
    data: *const f32,
    w: usize,
    rows: usize,
    oy0: usize,
}

/// Fills `tile` with input rows `first - pad_top ..` (`rows` of them) of every channel,
/// each `w` floats wide and shifted right by the left padding, zeros outside the input.
fn fill_tile(
    g: &ConvGeometry,
    x: &[f32],
    first: usize,
    rows: usize,
    w: usize,
    tile: &mut Vec<f32>,
) {
    let [_, ih, iw] = g.input;
    let (py, px) = (g.pad_begin[1], g.pad_begin[2]);
    // every float is written below (no clearing pass first)
    tile.resize(g.c_in * rows * w, 0.0);
    // input columns 0..n land at tile columns px..px + n
    let lo = px.min(w);
    let n = iw.min(w - lo);
    for c in 0..g.c_in {
        for r in 0..rows {
            let dst = &mut tile[(c * rows + r) * w..][..w];
            let iy = (first + r) as isize - py as isize;
            if iy < 0 || iy >= ih as isize {
                dst.fill(0.0);
                continue;
            }
            let src = &x[(c * ih + iy as usize) * iw..][..n];
            dst[..lo].fill(0.0);
            dst[lo..lo + n].copy_from_slice(src);
            dst[lo + n..].fill(0.0);
        }
    }
}

/// Output rows per task.
const ROW_BAND: usize = 4;

/// Output channels block `b` computes: its valid channels rounded up to a multiple of 4 (the
/// only block of a layer with 10 output channels, MTCNN P-Net's first, runs 12 accumulators
/// instead of 16: that layer at 640x480, one thread, 2.6-2.9 -> 2.0 ms).
fn block_width(c_out: usize, b: usize) -> usize {
    (c_out - b * OC_BLOCK).min(OC_BLOCK).div_ceil(4) * 4
}

/// One output row's arguments: the layer, packed filters, bias, clamp, PRelu slopes, the
/// band's padded input, output, the row `oy` and the output-channel block `b`.
type RowArgs<'a> = (
    &'a ConvGeometry,
    &'a [f32],
    &'a [f32],
    Option<(f32, f32)>,
    Option<&'a [f32]>,
    &'a Tile,
    *mut f32,
    usize,
    usize,
);

/// Output row `oy` of the first `NB` output planes of block `b` (`NB` a multiple of 4, at
/// most 16, covering the block's valid channels), for a `K × K` filter at stride `S`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn row<const K: usize, const S: usize, const NB: usize>(
    (g, packed, bias, clamp, slope, tile, out, oy, b): RowArgs,
) {
    let [_, oh, ow] = g.output;
    let (c_in, c_out) = (g.c_in, g.c_out);
    let taps = c_in * K * K;
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let wp = packed[b * taps * OC_BLOCK..][..taps * OC_BLOCK].as_ptr();
    // the block's biases, zero past the last channel (so the strips' set-up has no early exit)
    let mut bpad = [0f32; OC_BLOCK];
    let have = (c_out - b * OC_BLOCK).min(OC_BLOCK);
    bpad[..have].copy_from_slice(&bias[b * OC_BLOCK..][..have]);
    // the tile rows of this output row's first tap row
    let r0 = (oy - tile.oy0) * S;
    assert!(r0 + K <= tile.rows && ow.div_ceil(16) * 16 * S + K - 1 <= tile.w);
    for c0 in (0..ow).step_by(16) {
        let mut acc: [__m512; NB] = std::array::from_fn(|j| _mm512_set1_ps(bpad[j]));
        // one flat loop over (channel, tap row), weights through a raw pointer: nested loops
        // with bounds-checked slices made LLVM spill the accumulators every tap row
        for t in 0..c_in * K {
            let (c, ky) = (t / K, t % K);
            // tile columns c0·S + kx .. + 16·S of this row exist (asserted above)
            let rowp = tile
                .data
                .wrapping_add((c * tile.rows + r0 + ky) * tile.w + c0 * S);
            for kx in 0..K {
                let p = rowp.wrapping_add(kx);
                // SAFETY: 16 (stride 2: 32) floats from p lie inside the tile row; the block's
                // weights hold `taps × 16` floats (the slice above), tap t·K + kx < taps
                unsafe {
                    let v = if S == 1 {
                        _mm512_loadu_ps(p)
                    } else {
                        let a = _mm512_loadu_ps(p);
                        let b = _mm512_loadu_ps(p.add(16));
                        _mm512_permutex2var_ps(a, even, b)
                    };
                    let w = wp.add((t * K + kx) * OC_BLOCK);
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(*w.add(j)), v, *a);
                    }
                }
            }
        }
        let n = (ow - c0).min(16);
        let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
        let oplane = out.wrapping_add(oy * ow + c0);
        if n == 16 && slope.is_none() && b * OC_BLOCK + NB <= c_out {
            // the common strip: a short body the compiler unrolls, so the accumulators stay
            // in registers
            for (j, &a) in acc.iter().enumerate() {
                let y = _mm512_min_ps(vhi, _mm512_max_ps(vlo, a));
                // SAFETY: plane b·16 + j < c_out, row oy < oh, columns c0 .. c0 + 16 <= ow
                unsafe { _mm512_storeu_ps(oplane.add((b * OC_BLOCK + j) * oh * ow), y) };
            }
            continue;
        }
        // SAFETY: forwarded contract (the strip's row and columns, the block's channels)
        unsafe { store_strip(acc, b, c_out, slope, (vlo, vhi), oplane, oh * ow, mask) };
    }
}

/// The general strip epilogue of [`row`] (a PRelu, a partial strip or a partial block), out of
/// line so that the common strip keeps its accumulators in registers: PRelu, clamp and the
/// stores of the block's valid channels (lanes in `mask`).
///
/// # Safety
/// As [`row`]: `oplane` is the strip's first output of plane 0 of the layer, planes `plane`
/// floats apart; the lanes in `mask` of planes `b·16 .. c_out` are this task's.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_strip<const NB: usize>(
    acc: [__m512; NB],
    b: usize,
    c_out: usize,
    slope: Option<&[f32]>,
    (vlo, vhi): (__m512, __m512),
    oplane: *mut f32,
    plane: usize,
    mask: __mmask16,
) {
    for (j, &a) in acc.iter().enumerate() {
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
        // SAFETY: plane oc < c_out, the strip's lanes in `mask` (the contract)
        unsafe { crate::masked::store(mask, oplane.add(oc * plane), y) };
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use kestrel_core::ops::conv::{conv_geometry, AutoPad, ConvAttrs, ConvGeometry};

    /// `c_out × oh × ow` by the definition (zero padding, no activation).
    fn naive(g: &ConvGeometry, w: &[f32], bias: &[f32], x: &[f32]) -> Vec<f32> {
        let ([_, ih, iw], [_, oh, ow], k) = (g.input, g.output, g.kernel[2]);
        let mut out = vec![0f32; g.c_out * oh * ow];
        for o in 0..g.c_out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias[o];
                    for c in 0..g.c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * g.stride[1] + ky) as isize - g.pad_begin[1] as isize;
                                let ix = (ox * g.stride[2] + kx) as isize - g.pad_begin[2] as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < ih && (ix as usize) < iw {
                                    s += w[((o * g.c_in + c) * k + ky) * k + kx]
                                        * x[(c * ih + iy as usize) * iw + ix as usize];
                                }
                            }
                        }
                    }
                    out[(o * oh + oy) * ow + ox] = s;
                }
            }
        }
        out
    }

    /// Layers of other widths and pads run one after the other on the same worker (the
    /// per-thread padded tile is reused): each equals the definition, so no stale input of an
    /// earlier layer shows through the padding.
    #[test]
    fn reused_tile_leaves_nothing_of_an_earlier_layer() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma")) {
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        // (c_in, c_out, h, w, k, stride, pad)
        let layers = [
            (3, 16, 20, 53, 3, 1, 0),
            (3, 13, 17, 29, 5, 2, 2),
            (2, 8, 19, 45, 3, 2, 0),
            (3, 20, 11, 24, 3, 1, 1),
        ];
        for round in 0..2 {
            for (i, &(ci, co, h, w, k, s, p)) in layers.iter().enumerate() {
                let a = ConvAttrs {
                    kernel_shape: None,
                    strides: vec![s, s],
                    dilations: vec![1, 1],
                    pads: vec![p; 4],
                    auto_pad: AutoPad::NotSet,
                    group: 1,
                    activation: None,
                };
                let g = conv_geometry(&a, &[1, ci, h, w], &[co, ci, k, k]).unwrap();
                assert!(super::handles(&g));
                let wt: Vec<f32> = (0..co * ci * k * k)
                    .map(|j| ((j * 7 + i) % 13) as f32 * 0.1 - 0.6)
                    .collect();
                let x: Vec<f32> = (0..ci * h * w)
                    .map(|j| ((j * 5 + round) % 11) as f32 * 0.3 + 1.0)
                    .collect();
                let bias: Vec<f32> = (0..co).map(|j| j as f32 * 0.01).collect();
                let packed = super::pack(&wt, co, ci, k);
                let mut out = vec![f32::NAN; co * g.output[1] * g.output[2]];
                // SAFETY: avx512f and fma detected above; `handles` holds.
                pool.install(|| unsafe {
                    super::run(&g, &packed, &bias, None, None, &x, &mut out)
                });
                let want = naive(&g, &wt, &bias, &x);
                for (j, (a, b)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "layer {i} round {round} output {j}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
