//! Row-chunk AVX-512 transforms for Winograd F(m x m, 3x3) ([`crate::winograd`]): the same
//! results as the gather/scatter transforms of [`crate::winograd_avx512`], computed from
//! contiguous loads and stores.
//!
//! A chunk is up to 16 consecutive tiles of one tile row. Input: the chunk's α input rows are
//! read with plain (masked) vector loads, `Bᵀ` is applied down the columns first (element-wise
//! over the row, so contiguous vectors suffice), and the results go to a small L1 buffer; the
//! stride-m values each tile needs for the second, horizontal `Bᵀ` are then picked out of that
//! buffer with two-source permutes (`vpermt2ps`), 1-3 per vector instead of one 16-element
//! gather. Output: after `Aᵀ M A`, the m vectors of an output row (one per column inside the
//! tile, lanes = tiles) are interleaved by permutes and blends into m contiguous vectors and
//! stored (masked at the edges) instead of scattered.
//!
//! Measured (one thread, `examples/winobench.rs`): VGG-16's 64-channel 224 px layer in F(6x6)
//! spent 10.2 / 9.6 ms in the gather / scatter transforms against 8.0 ms in its GEMMs. A chunk
//! costs the same with 1 tile as with 16, so narrow maps (few tiles per row) keep the gather
//! transforms (see [`rows_pay`]).

use crate::winograd_avx512::{mat_apply, output_columns, tile_matrices, Band};
use std::arch::x86_64::*;

/// Floats per row of the column-transformed buffer: 16 (m + 1) for m <= 6, enough for the
/// 16 m + 2 input columns of a chunk.
const ROW: usize = 112;

/// Whether the row-chunk transforms beat the gathers for a tile grid `tw` tiles wide: a chunk
/// of one row costs about as much as a full one, ~3x less than a 16-tile gather, so rows of
/// fewer than 8 tiles (28 px maps in F(4x4), 14 px in F(2x2)) keep the gathers.
/// `KESTREL_WINO_TRANSFORMS=rows|gather` (read once) forces one kind, for tests and
/// measurements.
pub fn rows_pay(tw: usize) -> bool {
    static FORCED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let forced = FORCED.get_or_init(
        || match std::env::var("KESTREL_WINO_TRANSFORMS").as_deref() {
            Ok("rows") => Some(true),
            Ok("gather") => Some(false),
            _ => None,
        },
    );
    forced.unwrap_or(tw >= 8)
}

/// The chunks of a band: (tile row, first tile column, tiles), up to 16 tiles of one row each,
/// in tile order.
fn chunks(b: &Band) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let rows = if b.t1 > b.t0 {
        b.t0 / b.tw..(b.t1 - 1) / b.tw + 1
    } else {
        0..0
    };
    rows.flat_map(move |ty| {
        let first = b.t0.max(ty * b.tw) - ty * b.tw;
        let end = b.t1.min((ty + 1) * b.tw) - ty * b.tw;
        (first..end)
            .step_by(16)
            .map(move |tx0| (ty, tx0, (end - tx0).min(16)))
    })
}

/// The lanes `lo..hi` (clamped to 0..16) as a mask.
fn lane_range(lo: isize, hi: isize) -> __mmask16 {
    let (lo, hi) = (lo.clamp(0, 16) as u32, hi.clamp(0, 16) as u32);
    if hi <= lo {
        return 0;
    }
    let upto = |n: u32| if n >= 16 { 0xffffu32 } else { (1u32 << n) - 1 };
    (upto(hi) & !upto(lo)) as __mmask16
}

/// Input transform of one channel plane `x` (`ih × iw`) for the band's tiles into
/// `v[ξ * ldv + (t - t0)]`, exactly as [`crate::winograd_avx512::input_plane`] computes it.
///
/// # Safety
/// The CPU must support AVX-512F and FMA; `x` holds `ih * iw` floats; `v` is valid for writes
/// at `ξ * ldv + j` for `ξ < α²`, `j < t1 - t0`, and nothing else writes there meanwhile.
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn input_plane_rows<const AL: usize, const M: usize>(
    b: &Band,
    x: &[f32],
    v: *mut f32,
    ldv: usize,
) {
    let bt = tile_matrices::<AL, M>().0;
    assert!(x.len() >= b.ih * b.iw && 16 * (M + 1) <= ROW);
    // lanes l read column M l + j of the buffer: in windows of `lw` lanes, each window one
    // permute of two vectors loaded from M w lw + j (the largest: M = 6, w = 2, j = 7 reads up
    // to float 111 of the 112 written)
    let lw = (31 / M + 1).min(16);
    let windows = 16usize.div_ceil(lw);
    let idx_arr: [i32; 16] = std::array::from_fn(|l| (M * (l % lw)) as i32);
    // SAFETY: the array holds 16 i32
    let idx = unsafe { _mm512_loadu_si512(idx_arr.as_ptr().cast()) };
    let mut buf = [[0f32; ROW]; 8];
    let (ih, iw) = (b.ih as isize, b.iw as isize);
    for (ty, tx0, n) in chunks(b) {
        let iy0 = (ty * M) as isize - b.py;
        let xs = (tx0 * M) as isize - b.px;
        // columns first: T[r][x] = Σ_i Bᵀ[r][i] d[i][x] over the chunk's 16 (M + 1) columns
        for k in 0..M + 1 {
            let x0 = xs + 16 * k as isize;
            let cols = lane_range(-x0, iw - x0);
            let d: [__m512; AL] = std::array::from_fn(|i| {
                let iy = iy0 + i as isize;
                if cols == 0 || iy < 0 || iy >= ih {
                    _mm512_setzero_ps()
                } else {
                    // SAFETY: lane e reads column x0 + e of row iy only where the mask holds
                    // it inside 0..iw (0 <= iy < ih): masked-off lanes are not accessed, so the
                    // pointer may lie outside the plane
                    unsafe {
                        _mm512_maskz_loadu_ps(cols, x.as_ptr().wrapping_offset(iy * iw + x0).cast())
                    }
                }
            });
            let t = mat_apply(bt, &d);
            for (r, &tr) in t.iter().enumerate() {
                // SAFETY: 16 k + 16 <= 16 (M + 1) <= ROW floats of row r
                unsafe { _mm512_storeu_ps(buf[r].as_mut_ptr().add(16 * k), tr) };
            }
        }
        // then rows: V[r][c] = Σ_j T[r][M l + j] Bᵀ[c][j] for the tiles l of the chunk
        let keep = lane_range(0, n as isize);
        let col = ty * b.tw + tx0 - b.t0;
        for (r, row) in buf.iter().enumerate().take(AL) {
            let e: [__m512; AL] = std::array::from_fn(|j| {
                let p = row.as_ptr();
                let mut acc = _mm512_setzero_ps();
                for w in 0..windows {
                    let o = M * w * lw + j;
                    // SAFETY: o + 32 <= ROW (see `lw`)
                    let got = unsafe {
                        _mm512_permutex2var_ps(
                            _mm512_loadu_ps(p.add(o)),
                            idx,
                            _mm512_loadu_ps(p.add(o + 16)),
                        )
                    };
                    acc = _mm512_mask_blend_ps(lane_range((w * lw) as isize, 16), acc, got);
                }
                acc
            });
            let vrow = mat_apply(bt, &e);
            for (c, &vv) in vrow.iter().enumerate() {
                // SAFETY: ξ = α r + c < α², columns col .. col + n inside the band (masked)
                unsafe { _mm512_mask_storeu_ps(v.add((r * AL + c) * ldv + col), keep, vv) };
            }
        }
    }
}

/// Output transform of one output channel, exactly as
/// [`crate::winograd_avx512::output_plane`] computes it: `M[ξ][·]` at `m[ξ * ldm + (t - t0)]`,
/// `Y = (Aᵀ M A + bias) + residual` (none when `res` is null), clamped to `(lo, hi)` (NaN
/// kept), stored into the output plane `out` (`oh × ow`).
///
/// # Safety
/// The CPU must support AVX-512F and FMA; `m` holds the band's α² rows at stride `ldm`; `out`
/// is valid for writes of `oh * ow` floats and nothing else writes the band's outputs of this
/// plane meanwhile; `res` is null or valid for reads of `oh * ow` floats.
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn output_plane_rows<const AL: usize, const M: usize>(
    b: &Band,
    m: *const f32,
    ldm: usize,
    bias: f32,
    res: *const f32,
    clamp: (f32, f32),
    out: *mut f32,
) {
    let at = tile_matrices::<AL, M>().1;
    assert!(M.is_multiple_of(2) && M <= 6);
    // output vector q of a row holds columns x = 16 q + e: tile l = x / M, column c = x % M,
    // taken from the pair (Y[c - c % 2], Y[c - c % 2 + 1]) at lane l (+16 for odd c)
    let idx: [__m512i; 6] = std::array::from_fn(|q| {
        let a: [i32; 16] = std::array::from_fn(|e| {
            let x = 16 * q + e;
            ((x / M) + 16 * (x % M % 2)) as i32
        });
        // SAFETY: the array holds 16 i32
        unsafe { _mm512_loadu_si512(a.as_ptr().cast()) }
    });
    let pair_mask = |q: usize, p: usize| -> __mmask16 {
        (0..16)
            .filter(|&e| (16 * q + e) % M / 2 == p)
            .fold(0u16, |acc, e| acc | (1 << e))
    };
    let masks: [[__mmask16; 3]; 6] =
        std::array::from_fn(|q| std::array::from_fn(|p| pair_mask(q, p)));
    let (vlo, vhi) = (_mm512_set1_ps(clamp.0), _mm512_set1_ps(clamp.1));
    let vbias = _mm512_set1_ps(bias);
    for (ty, tx0, n) in chunks(b) {
        let keep = lane_range(0, n as isize);
        let col = ty * b.tw + tx0 - b.t0;
        // SAFETY: columns col .. col + n of the band's α² rows (masked)
        let cols = unsafe { output_columns::<AL, M>(at, m.add(col), ldm, keep) };
        let ox0 = tx0 * M;
        // output columns of this chunk: n tiles, cut at the plane's right edge
        let width = (n * M).min(b.ow - ox0);
        for (r, trow) in cols.iter().enumerate() {
            let oy = ty * M + r;
            if oy >= b.oh {
                break;
            }
            let y = mat_apply(at, trow);
            for q in 0..M {
                if 16 * q >= width {
                    break;
                }
                let mut o = _mm512_permutex2var_ps(y[0], idx[q], y[1]);
                for p in 1..M / 2 {
                    let got = _mm512_permutex2var_ps(y[2 * p], idx[q], y[2 * p + 1]);
                    o = _mm512_mask_blend_ps(masks[q][p], o, got);
                }
                let store = lane_range(0, (width - 16 * q) as isize);
                let at = oy * b.ow + ox0 + 16 * q;
                let mut o = _mm512_add_ps(o, vbias);
                if !res.is_null() {
                    // SAFETY: the stored lanes are inside the plane (below), as for `out`
                    o = _mm512_add_ps(o, unsafe { _mm512_maskz_loadu_ps(store, res.add(at)) });
                }
                // max(lo, x) / min(hi, x) return x when it is NaN
                let o = _mm512_min_ps(vhi, _mm512_max_ps(vlo, o));
                // SAFETY: lanes < width - 16 q are columns ox0 + 16 q + e < ow of row oy < oh
                unsafe { _mm512_mask_storeu_ps(out.add(at), store, o) };
            }
        }
    }
}
