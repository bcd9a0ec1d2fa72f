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

/// Channels one [`depthwise_block`] call computes together (one vector of lanes).
pub const BLOCK: usize = 16;

/// Filters rearranged for [`depthwise_block`]: for each block of [`BLOCK`] channels, tap after
/// tap, one value per channel (zero past the last channel).
pub fn pack_block_weights(w: &[f32], channels: usize, taps: usize) -> Vec<f32> {
    let blocks = channels.div_ceil(BLOCK);
    let mut p = vec![0f32; blocks * taps * BLOCK];
    for c in 0..channels {
        for t in 0..taps {
            p[((c / BLOCK) * taps + t) * BLOCK + c % BLOCK] = w[c * taps + t];
        }
    }
    p
}

/// Depthwise convolution of up to [`BLOCK`] channels at once, vectorised across channels
/// instead of along rows (for small planes, where rows are too short to fill a vector and the
/// per-plane set-up dominates): the channels' padded input is interleaved into
/// `[row][col][BLOCK]`, every output pixel is `taps` vector multiply-adds, and the result is
/// de-interleaved into the channel planes with bias and clamp applied.
///
/// `x`: the block's `cb` input planes (`cb * ih * iw`), `wb`: this block's packed filters
/// ([`pack_block_weights`]), `bias`: `cb` values, `out`: `cb` output planes, `post`: the
/// clamp `(lo, hi)` when fused (the caller applies other activations after), `buf` scratch.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_block(
    g: &ConvGeometry,
    x: &[f32],
    cb: usize,
    wb: &[f32],
    bias: &[f32],
    out: &mut [f32],
    clamp: Option<(f32, f32)>,
    buf: &mut Vec<f32>,
) {
    match active_path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: active_path() returns Avx512 only when avx512f and fma were detected.
        SimdPath::Avx512 => unsafe { block_avx512(g, x, cb, wb, bias, out, clamp, buf) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: active_path() returns Avx2Fma only when avx2 and fma were detected.
        SimdPath::Avx2Fma => unsafe { block_avx2(g, x, cb, wb, bias, out, clamp, buf) },
        _ => block_body(g, x, cb, wb, bias, out, clamp, buf),
    }
}

/// Sizes a channel block works with: input, output and kernel extents, the strides (1 along an
/// axis with one output, where a stride never applies), dilations, leading pads, and the
/// zero-padded extent `ph × pw` every tap of every output reads.
struct BlockExtent {
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sy: usize,
    sx: usize,
    dy: usize,
    dx: usize,
    py: isize,
    px: isize,
    ph: usize,
    pw: usize,
}

impl BlockExtent {
    fn of(g: &ConvGeometry) -> Self {
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let [_, kh, kw] = g.kernel;
        let sy = if oh == 1 { 1 } else { g.stride[1] };
        let sx = if ow == 1 { 1 } else { g.stride[2] };
        let (dy, dx) = (g.dilation[1], g.dilation[2]);
        BlockExtent {
            ih,
            iw,
            oh,
            ow,
            kh,
            kw,
            sy,
            sx,
            dy,
            dx,
            py: g.pad_begin[1] as isize,
            px: g.pad_begin[2] as isize,
            ph: (oh - 1) * sy + (kh - 1) * dy + 1,
            pw: (ow - 1) * sx + (kw - 1) * dx + 1,
        }
    }
}

/// Transposes a 16x16 block of floats held in 16 vectors (`r[i][j]` becomes `r[j][i]`): four
/// stages of in-lane unpacks and 128-bit lane shuffles, 64 shuffles in all (the interleave of
/// 16 pixels of 16 channels that would otherwise take 16 gathers or scatters).
///
/// # Safety
/// Needs avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose16(r: &mut [std::arch::x86_64::__m512; 16]) {
    use std::arch::x86_64::*;
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4a + b]: rows 4a..4a+3 of columns b, b+4, b+8, b+12 (one per 128-bit lane)
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (grp, k) = (i / 4, i % 4);
        let (a, b) = (t[grp * 4 + k / 2], t[grp * 4 + k / 2 + 2]);
        let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
        _mm512_castpd_ps(if k % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    // v[k] (k < 4): columns k / k+8 of rows 0-7; v[4 + k]: columns 4+k / 12+k of rows 0-7;
    // v[8..16] the same for rows 8-15
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let half = (i / 8) * 8;
        let (k, hi) = (i % 4, (i % 8) >= 4);
        let (a, b) = (u[half + k], u[half + 4 + k]);
        if hi {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        }
    });
    for k in 0..4 {
        r[k] = _mm512_shuffle_f32x4::<0x88>(v[k], v[8 + k]);
        r[k + 8] = _mm512_shuffle_f32x4::<0xdd>(v[k], v[8 + k]);
        r[k + 4] = _mm512_shuffle_f32x4::<0x88>(v[4 + k], v[12 + k]);
        r[k + 12] = _mm512_shuffle_f32x4::<0xdd>(v[4 + k], v[12 + k]);
    }
}

/// The AVX-512 channel block for stride-1 layers with rows of 12+ outputs: the interleave
/// loads 16 pixels of each of the 16 channel rows
/// and transposes them in registers ([`transpose16`]; masked gathers only for the pixels of a
/// row's padded edges), and 16 output pixels at a time are accumulated in 16 vectors,
/// transposed back and stored as 16-float row segments of the channel planes.
///
/// # Safety
/// Needs avx512f and fma; the slices have the sizes [`depthwise_block`] documents.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512(
    g: &ConvGeometry,
    x: &[f32],
    cb: usize,
    wb: &[f32],
    bias: &[f32],
    out: &mut [f32],
    clamp: Option<(f32, f32)>,
    buf: &mut Vec<f32>,
) {
    use std::arch::x86_64::*;
    const L: usize = BLOCK;
    let e = BlockExtent::of(g);
    let (ih, iw, oh, ow, kh, kw) = (e.ih, e.iw, e.oh, e.ow, e.kh, e.kw);
    let (sy, sx, dy, dx, py, px, ph, pw) = (e.sy, e.sx, e.dy, e.dx, e.py, e.px, e.ph, e.pw);
    let (in_plane, out_plane) = (ih * iw, oh * ow);
    // stride 2 and rows shorter than 12 outputs: the gather kernel measured faster (dwbench);
    // KESTREL_DW_GATHER=1 forces it everywhere (A/B measurements)
    static FORCE_GATHER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let force =
        *FORCE_GATHER.get_or_init(|| std::env::var("KESTREL_DW_GATHER").is_ok_and(|v| v == "1"));
    if force || sx != 1 || ow < 12 {
        // SAFETY: the same features and slice contract.
        return unsafe { block_avx512_gather(g, x, cb, wb, bias, out, clamp, buf) };
    }
    // plane offsets must fit the gather's i32 lanes
    if cb * in_plane.max(out_plane) >= i32::MAX as usize {
        return block_body(g, x, cb, wb, bias, out, clamp, buf);
    }
    assert!(x.len() >= cb * in_plane && out.len() >= cb * out_plane && wb.len() >= kh * kw * L);
    // the last 16-pixel group of an output row may read up to 16 * sx pixels past the row
    let margin = (16 * sx + 1) * L;
    if buf.len() < ph * pw * L + margin {
        buf.resize(ph * pw * L + margin, 0.0);
    }
    let inp = &mut buf[..ph * pw * L + margin];
    let mask: __mmask16 = if cb >= L { 0xffff } else { (1u16 << cb) - 1 };
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let in_idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(in_plane as i32));
    let zero = _mm512_setzero_ps();
    let ipm = inp.as_mut_ptr();
    for r in 0..ph {
        let iy = r as isize - py;
        // SAFETY: r < ph: row r starts inside `inp`.
        let row = unsafe { ipm.add(r * pw * L) };
        if iy < 0 || iy >= ih as isize {
            for c in 0..pw {
                // SAFETY: (r * pw + c + 1) * L <= ph * pw * L.
                unsafe { _mm512_storeu_ps(row.add(c * L), zero) };
            }
            continue;
        }
        let src_row = iy as usize * iw;
        let mut c = 0;
        while c < pw {
            let ix = c as isize - px;
            if ix >= 0 && ix as usize + 16 <= iw && c + 16 <= pw {
                // 16 pixels of every channel row, transposed into 16 pixels of 16 channels
                let mut v = [zero; 16];
                for (l, vl) in v.iter_mut().enumerate().take(cb) {
                    // SAFETY: l < cb and ix + 16 <= iw: inside channel l's row iy.
                    *vl = unsafe {
                        _mm512_loadu_ps(x.as_ptr().add(l * in_plane + src_row + ix as usize))
                    };
                }
                // SAFETY: avx512f is enabled in this function.
                unsafe { transpose16(&mut v) };
                for (j, vj) in v.iter().enumerate() {
                    // SAFETY: c + j < pw: inside the padded row.
                    unsafe { _mm512_storeu_ps(row.add((c + j) * L), *vj) };
                }
                c += 16;
                continue;
            }
            let v = if ix >= 0 && ix < iw as isize {
                let at = src_row + ix as usize;
                // SAFETY: lane l < cb reads x[l * in_plane + at] < cb * in_plane <= x.len()
                // (masked lanes are not read).
                unsafe {
                    _mm512_mask_i32gather_ps::<4>(
                        zero,
                        mask,
                        in_idx,
                        x.as_ptr().add(at) as *const _,
                    )
                }
            } else {
                zero
            };
            // SAFETY: (r * pw + c + 1) * L <= inp.len().
            unsafe { _mm512_storeu_ps(row.add(c * L), v) };
            c += 1;
        }
    }
    let mut bv = [0f32; L];
    bv[..cb].copy_from_slice(&bias[..cb]);
    // SAFETY: bv holds L floats.
    let bv = unsafe { _mm512_loadu_ps(bv.as_ptr()) };
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let taps = kh * kw;
    let ip = inp.as_ptr();
    let step = sx * L; // floats between horizontally adjacent outputs' windows
    for oy in 0..oh {
        let mut ox0 = 0;
        while ox0 < ow {
            let n = (ow - ox0).min(16);
            let base = ((oy * sy) * pw + ox0 * sx) * L;
            let mut acc = [bv; 16];
            for t in 0..taps {
                let o = base + ((t / kw) * dy * pw + (t % kw) * dx) * L;
                // SAFETY: wb holds taps * L floats; output j < n reads inside the padded block,
                // j >= n (discarded) at most 16 * sx pixels past the row, inside the margin.
                unsafe {
                    let w = _mm512_loadu_ps(wb.as_ptr().add(t * L));
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(ip.add(o + j * step)), *a);
                    }
                }
            }
            if clamp.is_some() {
                for a in acc.iter_mut() {
                    // max/min return their second operand when either is NaN: NaN is kept
                    *a = _mm512_min_ps(vhi, _mm512_max_ps(vlo, *a));
                }
            }
            // SAFETY: avx512f is enabled in this function.
            unsafe { transpose16(&mut acc) };
            let keep: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
            for (l, a) in acc.iter().enumerate().take(cb) {
                // SAFETY: lanes < n write out[l * out_plane + oy * ow + ox0 ..][..n], inside
                // channel l's plane (l < cb).
                unsafe {
                    _mm512_mask_storeu_ps(
                        out.as_mut_ptr().add(l * out_plane + oy * ow + ox0),
                        keep,
                        *a,
                    )
                };
            }
            ox0 += 16;
        }
    }
}

/// The AVX-512 channel block for stride-2 layers and short rows (where it measured faster than
/// [`block_avx512`]): the interleave is one masked gather per padded pixel and the
/// de-interleave one masked scatter per output pixel, straight from the accumulator.
///
/// # Safety
/// Needs avx512f and fma; the slices have the sizes [`depthwise_block`] documents.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512_gather(
    g: &ConvGeometry,
    x: &[f32],
    cb: usize,
    wb: &[f32],
    bias: &[f32],
    out: &mut [f32],
    clamp: Option<(f32, f32)>,
    buf: &mut Vec<f32>,
) {
    use std::arch::x86_64::*;
    const L: usize = BLOCK;
    let BlockExtent {
        ih,
        iw,
        oh,
        ow,
        kh,
        kw,
        sy,
        sx,
        dy,
        dx,
        py,
        px,
        ph,
        pw,
    } = BlockExtent::of(g);
    let (in_plane, out_plane) = (ih * iw, oh * ow);
    // plane offsets must fit the gather's i32 lanes
    if cb * in_plane.max(out_plane) >= i32::MAX as usize {
        return block_body(g, x, cb, wb, bias, out, clamp, buf);
    }
    assert!(x.len() >= cb * in_plane && out.len() >= cb * out_plane && wb.len() >= kh * kw * L);
    if buf.len() < ph * pw * L {
        buf.resize(ph * pw * L, 0.0);
    }
    let inp = &mut buf[..ph * pw * L];
    let mask: __mmask16 = if cb >= L { 0xffff } else { (1u16 << cb) - 1 };
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let in_idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(in_plane as i32));
    let out_idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(out_plane as i32));
    let zero = _mm512_setzero_ps();
    for r in 0..ph {
        let iy = r as isize - py;
        for c in 0..pw {
            let ix = c as isize - px;
            let v = if iy >= 0 && iy < ih as isize && ix >= 0 && ix < iw as isize {
                let at = iy as usize * iw + ix as usize;
                // SAFETY: lane l < cb reads x[l * in_plane + at] < cb * in_plane <= x.len()
                // (masked lanes are not read).
                unsafe {
                    _mm512_mask_i32gather_ps::<4>(
                        zero,
                        mask,
                        in_idx,
                        x.as_ptr().add(at) as *const _,
                    )
                }
            } else {
                zero
            };
            // SAFETY: (r * pw + c) * L + L <= inp.len().
            unsafe { _mm512_storeu_ps(inp.as_mut_ptr().add((r * pw + c) * L), v) };
        }
    }
    let mut bv = [0f32; L];
    bv[..cb].copy_from_slice(&bias[..cb]);
    // SAFETY: bv holds L floats.
    let bv = unsafe { _mm512_loadu_ps(bv.as_ptr()) };
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let taps = kh * kw;
    // tap offsets (in floats) from the pixel's top-left corner
    let offs: [usize; 25] = std::array::from_fn(|t| {
        if t < taps {
            ((t / kw) * dy * pw + (t % kw) * dx) * L
        } else {
            0
        }
    });
    let ip = inp.as_ptr();
    for oy in 0..oh {
        for ox in 0..ow {
            let base = ((oy * sy) * pw + ox * sx) * L;
            let mut acc = bv;
            if taps <= 25 {
                for (t, &o) in offs.iter().enumerate().take(taps) {
                    // SAFETY: every tap of every output lies inside the padded block (ph x pw
                    // pixels of L floats); wb holds taps * L floats.
                    unsafe {
                        let s = _mm512_loadu_ps(ip.add(base + o));
                        let w = _mm512_loadu_ps(wb.as_ptr().add(t * L));
                        acc = _mm512_fmadd_ps(w, s, acc);
                    }
                }
            } else {
                for t in 0..taps {
                    let o = ((t / kw) * dy * pw + (t % kw) * dx) * L;
                    // SAFETY: as above.
                    unsafe {
                        let s = _mm512_loadu_ps(ip.add(base + o));
                        let w = _mm512_loadu_ps(wb.as_ptr().add(t * L));
                        acc = _mm512_fmadd_ps(w, s, acc);
                    }
                }
            }
            if clamp.is_some() {
                // max/min return their second operand when either is NaN: NaN is kept
                acc = _mm512_min_ps(vhi, _mm512_max_ps(vlo, acc));
            }
            // SAFETY: lane l < cb writes out[l * out_plane + oy * ow + ox] < cb * out_plane.
            unsafe {
                _mm512_mask_i32scatter_ps::<4>(
                    out.as_mut_ptr().add(oy * ow + ox) as *mut _,
                    mask,
                    out_idx,
                    acc,
                )
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx2(
    g: &ConvGeometry,
    x: &[f32],
    cb: usize,
    wb: &[f32],
    bias: &[f32],
    out: &mut [f32],
    clamp: Option<(f32, f32)>,
    buf: &mut Vec<f32>,
) {
    block_body(g, x, cb, wb, bias, out, clamp, buf)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block_body(
    g: &ConvGeometry,
    x: &[f32],
    cb: usize,
    wb: &[f32],
    bias: &[f32],
    out: &mut [f32],
    clamp: Option<(f32, f32)>,
    buf: &mut Vec<f32>,
) {
    const L: usize = BLOCK;
    let BlockExtent {
        ih,
        iw,
        oh,
        ow,
        kh,
        kw,
        sy,
        sx,
        dy,
        dx,
        py,
        px,
        ph,
        pw,
    } = BlockExtent::of(g);
    let in_len = ph * pw * L;
    let out_len = oh * ow * L;
    if buf.len() < in_len + out_len {
        buf.resize(in_len + out_len, 0.0);
    }
    let (inp, obuf) = buf.split_at_mut(in_len);
    // 1. interleave: inp[(r * pw + c) * L + l] = padded input of channel l (zero padding,
    // zero lanes past `cb`); channel by channel, so the reads stream along each row
    let in_plane = ih * iw;
    inp.fill(0.0);
    let c_lo = px.max(0) as usize; // first padded column holding input
    let skip = (-px).max(0) as usize; // input columns cut by negative padding
    let ncols = iw.saturating_sub(skip).min(pw.saturating_sub(c_lo));
    for r in 0..ph {
        let iy = r as isize - py;
        if iy < 0 || iy >= ih as isize {
            continue;
        }
        let row = &mut inp[(r * pw + c_lo) * L..][..ncols * L];
        for l in 0..cb {
            let src = &x[l * in_plane + iy as usize * iw + skip..][..ncols];
            for (d, &v) in row.chunks_exact_mut(L).zip(src) {
                d[l] = v;
            }
        }
    }
    // 2. every output pixel: taps vector multiply-adds, bias and clamp in registers
    let b: [f32; L] = std::array::from_fn(|l| if l < cb { bias[l] } else { 0.0 });
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let taps = kh * kw;
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = b;
            for ky in 0..kh {
                let r = oy * sy + ky * dy;
                for kx in 0..kw {
                    let c = ox * sx + kx * dx;
                    let s: &[f32; L] = inp[(r * pw + c) * L..][..L].try_into().expect("L lanes");
                    let w: &[f32; L] = wb[(ky * kw + kx) * L..][..L].try_into().expect("L lanes");
                    for l in 0..L {
                        acc[l] = w[l].mul_add(s[l], acc[l]);
                    }
                }
            }
            if clamp.is_some() {
                for v in acc.iter_mut() {
                    // comparisons keep NaN
                    let t = if *v < lo { lo } else { *v };
                    *v = if t > hi { hi } else { t };
                }
            }
            obuf[(oy * ow + ox) * L..][..L].copy_from_slice(&acc);
        }
    }
    debug_assert_eq!(wb.len(), taps * L);
    // 3. de-interleave into the channel planes
    let plane = oh * ow;
    for l in 0..cb {
        let o = &mut out[l * plane..(l + 1) * plane];
        for (v, s) in o.iter_mut().zip(obuf.chunks_exact(L)) {
            *v = s[l];
        }
    }
}
