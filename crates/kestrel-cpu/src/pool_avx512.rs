//! AVX-512 max pooling of one NCHW plane for horizontal strides 1 and 2 (every pooling layer of
//! the benchmark models): for each output row, the maximum over the window's input rows is
//! taken 16 columns at a time into a row buffer whose borders hold -inf (the padding), then
//! every kernel column is one unaligned load (stride 1) or one even/odd de-interleave of two
//! loads (`vpermt2ps`, stride 2) and a `vmaxps` per 16 outputs.
//!
//! NaN: `vmaxps` does not propagate NaN from both operands, so the vertical pass also records
//! whether any input value it read was NaN; a plane with a NaN is reported back (`false`) and
//! the caller recomputes it with the NaN-propagating portable loops. Signed zeros: max(-0, +0)
//! may return either zero (they compare equal).

use kestrel_core::ops::pool::PoolGeometry;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether [`max_plane`] handles this geometry (horizontal stride 1 or 2, or one output column).
pub fn handles(g: &PoolGeometry) -> bool {
    g.stride[2] <= 2 || g.output[2] == 1
}

/// Max pooling of the plane `x` (input extent `g.input[1..]`) into `o` (output extent
/// `g.output[1..]`); `rows[oy]` is the in-range input row range of output row `oy`. Returns
/// `false`, with `o` partly written, when the plane holds a NaN.
///
/// # Safety
/// The CPU must support AVX-512F; `g` must satisfy [`handles`]; `x` and `o` must hold at least
/// one input / output plane and `rows` one entry per output row, each within the input height.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn max_plane(
    g: &PoolGeometry,
    rows: &[(usize, usize, usize)],
    x: &[f32],
    o: &mut [f32],
    buf: &mut Vec<f32>,
) -> bool {
    let [_, _, iw] = g.input;
    let [_, _, ow] = g.output;
    let kw = g.kernel[2];
    let sx = if ow == 1 { 1 } else { g.stride[2] };
    let px = g.pad_begin[2];
    debug_assert!(sx <= 2);
    assert!(x.len() >= g.input[1] * iw && o.len() >= rows.len() * ow);
    let ow16 = ow.div_ceil(16) * 16;
    // every load of the horizontal pass stays inside: up to (ow16 - 16) * sx + kw - 1 + 31
    let len = (px + iw).max(ow16 * sx + kw + 32);
    // two row buffers: the vertical pass of output row oy + 1 runs before the horizontal pass
    // of row oy, so the horizontal pass's unaligned loads do not wait on the vertical pass's
    // just-issued stores (store forwarding fails across two stores: ~2x slower on small maps)
    buf.clear();
    buf.resize(2 * len, f32::NEG_INFINITY);
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let mut nan: __mmask16 = 0;
    // SAFETY: loads read rows y0..y1 <= ih of the plane, columns below iw (the tail masked);
    // each row buffer holds `len` floats, past every horizontal load (see `len`); stores write
    // row oy < rows.len() of the output, columns below ow (the tail masked).
    unsafe {
        let xp = x.as_ptr();
        let bufp = buf.as_mut_ptr();
        let op = o.as_mut_ptr();
        // vertical pass of output row oy into buffer oy % 2 (borders keep -inf); false when
        // its window lies wholly in the padding
        let vertical = |oy: usize, nan: &mut __mmask16| -> bool {
            let (y0, y1, _) = rows[oy];
            if y0 >= y1 {
                return false;
            }
            assert!(y1 <= g.input[1]);
            let dst = bufp.add((oy % 2) * len + px);
            let mut i = 0;
            while i < iw {
                let mask: __mmask16 = if iw - i >= 16 {
                    0xffff
                } else {
                    (1u16 << (iw - i)) - 1
                };
                let mut m = crate::masked::load(mask, xp.add(y0 * iw + i));
                *nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(m, m);
                for y in y0 + 1..y1 {
                    let v = crate::masked::load(mask, xp.add(y * iw + i));
                    *nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                    m = _mm512_max_ps(m, v);
                }
                crate::masked::store(mask, dst.add(i), m);
                i += 16;
            }
            true
        };
        // horizontal pass of output row oy from its buffer, 16 outputs at a time
        let horizontal = |oy: usize, filled: bool| {
            let orow = op.add(oy * ow);
            if !filled {
                // a window wholly in the padding
                std::slice::from_raw_parts_mut(orow, ow).fill(f32::NEG_INFINITY);
                return;
            }
            let r = bufp.add((oy % 2) * len).cast_const();
            let mut c = 0;
            while c < ow {
                let mut acc = neg_inf;
                if sx == 1 {
                    for kx in 0..kw {
                        acc = _mm512_max_ps(acc, _mm512_loadu_ps(r.add(c + kx)));
                    }
                } else {
                    let mut kx = 0;
                    while kx < kw {
                        let lo = _mm512_loadu_ps(r.add(2 * c + kx));
                        let hi = _mm512_loadu_ps(r.add(2 * c + kx + 16));
                        acc = _mm512_max_ps(acc, _mm512_permutex2var_ps(lo, even, hi));
                        if kx + 1 < kw {
                            acc = _mm512_max_ps(acc, _mm512_permutex2var_ps(lo, odd, hi));
                        }
                        kx += 2;
                    }
                }
                let n = (ow - c).min(16);
                let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
                crate::masked::store(mask, orow.add(c), acc);
                c += 16;
            }
        };
        let mut prev = None;
        for oy in 0..rows.len() {
            let filled = vertical(oy, &mut nan);
            if let Some((py_, pf)) = prev {
                horizontal(py_, pf);
            }
            prev = Some((oy, filled));
        }
        if let Some((py_, pf)) = prev {
            horizontal(py_, pf);
        }
    }
    nan == 0
}
