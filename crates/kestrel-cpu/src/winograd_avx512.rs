//! AVX-512 transforms for Winograd F(m x m, 3x3) ([`crate::winograd`]; F(4x4) and F(2x2)),
//! 16 tiles per vector.
//!
//! Input: for 16 tiles at once, the α² values `d[i][j]` of each tile's α x α patch (α = m + 2)
//! are gathered straight from the NCHW plane (masked gathers: padding reads as zero, no padded
//! copy), then `V = Bᵀ d B` is computed with the constant matrix folded into adds and FMAs, and
//! the α² results are stored as 16-tile row segments of `V[ξ][c][tiles]`. Output: the α²
//! vectors `M[ξ][o][16 tiles]` give `Y = Aᵀ M A` (m² vectors, the m x m outputs of 16 tiles),
//! plus bias and clamp, scattered into the output plane (masked past its edges).
//!
//! The layer runs in bands of tiles (see `PreparedWinograd::run`) so that a band's `V` and `M`
//! stay in cache between the transforms and the α² GEMMs.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Bᵀ of F(4x4, 3x3) (interpolation points 0, ±1, ±2); the same as `winograd::matrices`.
pub static BT6: [[f32; 6]; 6] = [
    [4., 0., -5., 0., 1., 0.],
    [0., -4., -4., 1., 1., 0.],
    [0., 4., -4., -1., 1., 0.],
    [0., -2., -1., 2., 1., 0.],
    [0., 2., -1., -2., 1., 0.],
    [0., 4., 0., -5., 0., 1.],
];

/// Aᵀ of F(4x4, 3x3).
pub static AT4: [[f32; 6]; 4] = [
    [1., 1., 1., 1., 1., 0.],
    [0., 1., -1., 2., -2., 0.],
    [0., 1., 1., 4., 4., 0.],
    [0., 1., -1., 8., -8., 1.],
];

/// Bᵀ of F(6x6, 3x3) (interpolation points 0, ±1, ±2, ±1/2); the same as `winograd::matrices`.
pub static BT8: [[f32; 8]; 8] = [
    [1., 0., -21. / 4., 0., 21. / 4., 0., -1., 0.],
    [0., 1., 1., -17. / 4., -17. / 4., 1., 1., 0.],
    [0., -1., 1., 17. / 4., -17. / 4., -1., 1., 0.],
    [0., 0.5, 0.25, -2.5, -1.25, 2., 1., 0.],
    [0., -0.5, 0.25, 2.5, -1.25, -2., 1., 0.],
    [0., 2., 4., -2.5, -5., 0.5, 1., 0.],
    [0., -2., 4., 2.5, -5., -0.5, 1., 0.],
    [0., -1., 0., 21. / 4., 0., -21. / 4., 0., 1.],
];

/// Aᵀ of F(6x6, 3x3).
pub static AT6: [[f32; 8]; 6] = [
    [1., 1., 1., 1., 1., 1., 1., 0.],
    [0., 1., -1., 2., -2., 0.5, -0.5, 0.],
    [0., 1., 1., 4., 4., 0.25, 0.25, 0.],
    [0., 1., -1., 8., -8., 0.125, -0.125, 0.],
    [0., 1., 1., 16., 16., 0.0625, 0.0625, 0.],
    [0., 1., -1., 32., -32., 0.03125, -0.03125, 1.],
];

/// Bᵀ of F(2x2, 3x3).
pub static BT4: [[f32; 4]; 4] = [
    [1., 0., -1., 0.],
    [0., 1., 1., 0.],
    [0., -1., 1., 0.],
    [0., 1., 0., -1.],
];

/// Aᵀ of F(2x2, 3x3).
pub static AT2: [[f32; 4]; 2] = [[1., 1., 1., 0.], [0., 1., -1., -1.]];

/// Bᵀ and Aᵀ of F(M x M, 3x3) (α = `AL` = M + 2; F(6x6), F(4x4) and F(2x2)), as references to the
/// statics above: inside the transforms the matrices are then known at compile time, so
/// their zero and ±1 entries fold away (passed in as arguments they measured 1.5x slower).
pub(crate) fn tile_matrices<const AL: usize, const M: usize>(
) -> (&'static [[f32; AL]; AL], &'static [[f32; AL]; M]) {
    assert!(
        (AL, M) == (8, 6) || (AL, M) == (6, 4) || (AL, M) == (4, 2),
        "F({M}x{M}, 3x3) with alpha {AL}"
    );
    let (bt, at): (*const f32, *const f32) = match AL {
        8 => (BT8.as_ptr().cast(), AT6.as_ptr().cast()),
        6 => (BT6.as_ptr().cast(), AT4.as_ptr().cast()),
        _ => (BT4.as_ptr().cast(), AT2.as_ptr().cast()),
    };
    // SAFETY: (AL, M) is (8, 6), (6, 4) or (4, 2) (asserted), so the pointed-to statics have exactly
    // the types [[f32; AL]; AL] and [[f32; AL]; M]; statics live for the whole program.
    unsafe { (&*bt.cast(), &*at.cast()) }
}

/// Where a band of tiles lies: tiles `t0..t1` of a `tw`-wide tile grid over an `oh × ow`
/// output (input `ih × iw`, leading pads `py`, `px`).
#[derive(Clone, Copy, Debug)]
pub struct Band {
    pub t0: usize,
    pub t1: usize,
    pub tw: usize,
    pub ih: usize,
    pub iw: usize,
    pub oh: usize,
    pub ow: usize,
    pub py: isize,
    pub px: isize,
}

/// `Σ_k mat[r][k] · x[k]` for each row `r` of a constant matrix (zero, ±1 coefficients folded
/// away once inlined and unrolled).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn mat_apply<const R: usize, const K: usize>(
    mat: &[[f32; K]; R],
    x: &[__m512; K],
) -> [__m512; R] {
    // SAFETY: only inlined into avx512f functions (the callers below).
    unsafe {
        let mut out = [_mm512_setzero_ps(); R];
        for (o, row) in out.iter_mut().zip(mat) {
            let mut acc = _mm512_setzero_ps();
            for (&c, &v) in row.iter().zip(x) {
                if c == 1.0 {
                    acc = _mm512_add_ps(acc, v);
                } else if c == -1.0 {
                    acc = _mm512_sub_ps(acc, v);
                } else if c != 0.0 {
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(c), v, acc);
                }
            }
            *o = acc;
        }
        out
    }
}

/// The tile row / column of each lane of the 16 tiles starting at `t`, and the lanes in use.
fn lanes(b: &Band, t: usize) -> ([i32; 16], [i32; 16], __mmask16) {
    let (mut ty, mut tx) = ([0i32; 16], [0i32; 16]);
    let n = (b.t1 - t).min(16);
    for l in 0..n {
        ty[l] = ((t + l) / b.tw) as i32;
        tx[l] = ((t + l) % b.tw) as i32;
    }
    let mask = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
    (ty, tx, mask)
}

/// Input transform of one channel plane `x` (`ih × iw`) for the band's tiles into
/// `v[ξ * ldv + (t - t0)]` (`ξ` in 0..α²), i.e. this channel's row of every `V[ξ]`; `bt` is
/// the output tile size (α = `AL` = M + 2).
///
/// # Safety
/// The CPU must support AVX-512F and FMA; `x` holds `ih * iw` floats; `v` is valid for writes
/// at `ξ * ldv + j` for `ξ < α²`, `j < t1 - t0`, and nothing else writes there meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn input_plane<const AL: usize, const M: usize>(
    b: &Band,
    x: &[f32],
    v: *mut f32,
    ldv: usize,
) {
    let bt = tile_matrices::<AL, M>().0;
    assert!(x.len() >= b.ih * b.iw && b.ih * b.iw < i32::MAX as usize);
    let (ih, iw) = (
        _mm512_set1_epi32(b.ih as i32),
        _mm512_set1_epi32(b.iw as i32),
    );
    let zero_i = _mm512_setzero_si512();
    for t in (b.t0..b.t1).step_by(16) {
        let (ty, tx, lane_mask) = lanes(b, t);
        // SAFETY: the arrays hold 16 i32 each
        let (ty, tx) = unsafe {
            (
                _mm512_loadu_si512(ty.as_ptr().cast()),
                _mm512_loadu_si512(tx.as_ptr().cast()),
            )
        };
        let vm = _mm512_set1_epi32(M as i32);
        let iy0 = _mm512_sub_epi32(_mm512_mullo_epi32(ty, vm), _mm512_set1_epi32(b.py as i32));
        let ix0 = _mm512_sub_epi32(_mm512_mullo_epi32(tx, vm), _mm512_set1_epi32(b.px as i32));
        let mut d = [[_mm512_setzero_ps(); AL]; AL];
        for (i, drow) in d.iter_mut().enumerate() {
            let iy = _mm512_add_epi32(iy0, _mm512_set1_epi32(i as i32));
            let row_ok = _mm512_mask_cmpge_epi32_mask(lane_mask, iy, zero_i)
                & _mm512_cmplt_epi32_mask(iy, ih);
            let row_base = _mm512_mullo_epi32(iy, iw);
            for (j, dv) in drow.iter_mut().enumerate() {
                let ix = _mm512_add_epi32(ix0, _mm512_set1_epi32(j as i32));
                let ok = _mm512_mask_cmpge_epi32_mask(row_ok, ix, zero_i)
                    & _mm512_cmplt_epi32_mask(ix, iw);
                let idx = _mm512_add_epi32(row_base, ix);
                // SAFETY: every unmasked lane indexes row iy < ih, column ix < iw of the plane
                *dv = unsafe {
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), ok, idx, x.as_ptr().cast())
                };
            }
        }
        // columns: T[r][j] = Σ_i Bᵀ[r][i] d[i][j]; rows: V[r][c] = Σ_j T[r][j] Bᵀ[c][j]
        let mut cols = [[_mm512_setzero_ps(); AL]; AL];
        for j in 0..AL {
            let col: [__m512; AL] = std::array::from_fn(|i| d[i][j]);
            let tcol = mat_apply(bt, &col);
            for r in 0..AL {
                cols[r][j] = tcol[r];
            }
        }
        for (r, trow) in cols.iter().enumerate() {
            let vrow = mat_apply(bt, trow);
            for (c, &vv) in vrow.iter().enumerate() {
                // SAFETY: ξ = α r + c < α², column t - t0 .. + 16 (masked) inside the band
                unsafe {
                    _mm512_mask_storeu_ps(v.add((r * AL + c) * ldv + (t - b.t0)), lane_mask, vv)
                };
            }
        }
    }
}

/// The first half of the output transform for 16 tiles: the α² vectors `M[ξ]` loaded from
/// `m[ξ * ldm ..]` (lanes outside `mask` read as 0), then `T = Aᵀ M` down the columns (m x α
/// vectors; the caller applies `A` along the rows).
///
/// # Safety
/// The CPU must support AVX-512F and FMA; `m` must be valid for reads of the lanes in `mask`
/// of 16 floats at `ξ * ldm` for every `ξ < α²`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub(crate) unsafe fn output_columns<const AL: usize, const M: usize>(
    at: &[[f32; AL]; M],
    m: *const f32,
    ldm: usize,
    mask: __mmask16,
) -> [[__m512; AL]; M] {
    let mut mv = [[_mm512_setzero_ps(); AL]; AL];
    for (r, row) in mv.iter_mut().enumerate() {
        for (c, x) in row.iter_mut().enumerate() {
            // SAFETY: the caller's contract, ξ = α r + c < α²
            *x = unsafe { _mm512_maskz_loadu_ps(mask, m.add((r * AL + c) * ldm)) };
        }
    }
    let mut cols = [[_mm512_setzero_ps(); AL]; M];
    for j in 0..AL {
        let col: [__m512; AL] = std::array::from_fn(|i| mv[i][j]);
        let tcol = mat_apply(at, &col);
        for r in 0..M {
            cols[r][j] = tcol[r];
        }
    }
    cols
}

/// Output transform of one output channel: `M[ξ][·]` at `m[ξ * ldm + (t - t0)]` for the
/// band's tiles, `Y = (Aᵀ M A + bias) + residual` (no residual when `res` is null), clamped to
/// `(lo, hi)` (NaN kept), scattered into the output plane `out` (`oh × ow`).
///
/// # Safety
/// The CPU must support AVX-512F and FMA; `m` holds the band's α² rows at stride `ldm`; `out`
/// is valid for writes of `oh * ow` floats and nothing else writes the band's outputs of this
/// plane meanwhile; `res` is null or valid for reads of `oh * ow` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
pub unsafe fn output_plane<const AL: usize, const M: usize>(
    b: &Band,
    m: *const f32,
    ldm: usize,
    bias: f32,
    res: *const f32,
    clamp: (f32, f32),
    out: *mut f32,
) {
    let at = tile_matrices::<AL, M>().1;
    assert!(b.oh * b.ow < i32::MAX as usize);
    let (oh, ow) = (
        _mm512_set1_epi32(b.oh as i32),
        _mm512_set1_epi32(b.ow as i32),
    );
    let (vlo, vhi) = (_mm512_set1_ps(clamp.0), _mm512_set1_ps(clamp.1));
    let vbias = _mm512_set1_ps(bias);
    for t in (b.t0..b.t1).step_by(16) {
        let (ty, tx, lane_mask) = lanes(b, t);
        // SAFETY: columns t - t0 .. + 16 of the band's α² rows (masked past its end)
        let cols = unsafe { output_columns::<AL, M>(at, m.add(t - b.t0), ldm, lane_mask) };
        // rows: Y[r][c] = Σ_j T[r][j] Aᵀ[c][j]
        // SAFETY: the arrays hold 16 i32 each
        let (ty, tx) = unsafe {
            (
                _mm512_loadu_si512(ty.as_ptr().cast()),
                _mm512_loadu_si512(tx.as_ptr().cast()),
            )
        };
        let vm = _mm512_set1_epi32(M as i32);
        let oy0 = _mm512_mullo_epi32(ty, vm);
        let ox0 = _mm512_mullo_epi32(tx, vm);
        for (r, trow) in cols.iter().enumerate() {
            let yrow = mat_apply(at, trow);
            let oy = _mm512_add_epi32(oy0, _mm512_set1_epi32(r as i32));
            let row_ok = _mm512_mask_cmplt_epi32_mask(lane_mask, oy, oh);
            let row_base = _mm512_mullo_epi32(oy, ow);
            for (c, &y) in yrow.iter().enumerate() {
                let ox = _mm512_add_epi32(ox0, _mm512_set1_epi32(c as i32));
                let ok = _mm512_mask_cmplt_epi32_mask(row_ok, ox, ow);
                let at = _mm512_add_epi32(row_base, ox);
                let mut y = _mm512_add_ps(y, vbias);
                if !res.is_null() {
                    // SAFETY: as for the scatter below: unmasked lanes are inside the plane
                    let r = unsafe {
                        _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), ok, at, res.cast())
                    };
                    y = _mm512_add_ps(y, r);
                }
                // max(lo, x) / min(hi, x) return x when it is NaN
                let y = _mm512_min_ps(vhi, _mm512_max_ps(vlo, y));
                // SAFETY: every unmasked lane is an output position oy < oh, ox < ow
                unsafe { _mm512_mask_i32scatter_ps::<4>(out.cast(), ok, at, y) };
            }
        }
    }
}
