//! 1x1 convolutions with very few output channels on large maps (detector heads: MTCNN P-Net's
//! 32 -> 2 and 32 -> 4 over every position of the frame).
//!
//! The GEMM microkernel computes 8 output channels x 32 positions per tile, reading 32 positions
//! of every input plane per tile: with 2-4 output channels three quarters of its arithmetic is
//! padding, and its input access is K interleaved streams advancing 128 bytes at a time. Here
//! the output is computed chunk by chunk of [`CHUNK`] positions (M rows of it stay in L1):
//! initialised to the bias, then every input plane's run of the chunk (4 KB, contiguous) is
//! read once and added to all M output rows, four planes per pass (AVX-512: 16 positions per
//! vector, `out += w0 x0 + w1 x1 + w2 x2 + w3 x3` with fused multiply-adds in plane order), and
//! the clamp (none, Relu, Clip) applied while the chunk is still in cache. Chunks are
//! independent tasks.
//!
//! Measured in docs/PERFORMANCE.md (session 12); `KESTREL_NARROW_POINTWISE=0` keeps the GEMM.

use rayon::prelude::*;

/// Most output channels this kernel takes (the GEMM's row panel is 8).
pub const MAX_OUT: usize = 4;
/// Fewest positions (the GEMM is as good on small maps, where a layer is short anyway).
pub const MIN_PLANE: usize = 4096;
/// Positions per chunk: 4 KB of each plane; `MAX_OUT` output rows of it are 16 KB (L1).
const CHUNK: usize = 1024;

/// Whether a 1x1, stride-1, ungrouped layer with `m` output channels on `plane` positions runs
/// here: at most [`MAX_OUT`] output channels, [`MIN_PLANE`]+ positions, a clamp activation
/// (`clamp` from [`crate::sgemm::clamp_of`]), and `KESTREL_NARROW_POINTWISE` not `0`.
pub fn applies(m: usize, plane: usize, clamp: Option<(f32, f32)>) -> bool {
    (1..=MAX_OUT).contains(&m) && plane >= MIN_PLANE && clamp.is_some() && enabled()
}

fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KESTREL_NARROW_POINTWISE").map_or(true, |v| v != "0"))
}

/// `out[o][p] = clamp(bias[o] + Σ_k w[o][k] · x[k][p])` for `o < m`, `p < plane`: `w` row-major
/// `m × k`, `x` `k` planes of `plane` values, `out` `m` planes; `lo <= hi` (NaN kept: IEEE
/// max/min with the value second).
#[allow(clippy::too_many_arguments)]
pub fn run(
    w: &[f32],
    bias: &[f32],
    m: usize,
    k: usize,
    plane: usize,
    x: &[f32],
    out: &mut [f32],
    (lo, hi): (f32, f32),
) {
    assert!(m <= MAX_OUT && w.len() >= m * k && bias.len() >= m);
    assert!(x.len() >= k * plane && out.len() >= m * plane);
    // tasks write disjoint chunks of positions of every output row
    let optr = crate::direct::SharedMut(out.as_mut_ptr());
    let avx512 = crate::simd::active_path() == crate::simd::SimdPath::Avx512;
    (0..plane.div_ceil(CHUNK)).into_par_iter().for_each(|c| {
        let p0 = c * CHUNK;
        let n = CHUNK.min(plane - p0);
        let mut rows: [&mut [f32]; MAX_OUT] = Default::default();
        for (o, r) in rows.iter_mut().enumerate().take(m) {
            // SAFETY: row o's positions p0..p0+n lie inside `out` (m planes of `plane`); this
            // task alone writes them (chunks are disjoint).
            *r = unsafe { std::slice::from_raw_parts_mut(optr.get().add(o * plane + p0), n) };
        }
        let rows = &mut rows[..m];
        for (o, r) in rows.iter_mut().enumerate() {
            r.fill(bias[o]);
        }
        let mut kk = 0;
        while kk < k {
            let kn = (k - kk).min(4);
            let planes: [&[f32]; 4] =
                std::array::from_fn(|j| &x[(kk + j.min(kn - 1)) * plane + p0..][..n]);
            // only the kn planes that exist (a zero weight times an infinite input is NaN)
            let xs = &planes[..kn];
            let mut ws = [[0f32; 4]; MAX_OUT];
            for (o, wo) in ws.iter_mut().enumerate().take(m) {
                for (j, v) in wo.iter_mut().enumerate().take(kn) {
                    *v = w[o * k + kk + j];
                }
            }
            if avx512 {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the AVX-512 path was detected; every slice holds n floats.
                unsafe {
                    x86::accumulate4(rows, &ws, xs, n)
                };
            } else {
                accumulate4(rows, &ws, xs, n);
            }
            kk += kn;
        }
        for r in rows.iter_mut() {
            for v in r.iter_mut() {
                // comparisons, not f32::max/min, so that NaN stays NaN
                *v = if *v < lo {
                    lo
                } else if *v > hi {
                    hi
                } else {
                    *v
                };
            }
        }
    });
}

/// `rows[o][i] += Σ_j ws[o][j] · xs[j][i]` over the given planes (1-4), in plane order.
fn accumulate4(rows: &mut [&mut [f32]], ws: &[[f32; 4]; MAX_OUT], xs: &[&[f32]], n: usize) {
    for (r, wo) in rows.iter_mut().zip(ws) {
        for (j, xj) in xs.iter().enumerate() {
            let wj = wo[j];
            for (v, xv) in r[..n].iter_mut().zip(&xj[..n]) {
                *v += wj * xv;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::MAX_OUT;
    use std::arch::x86_64::*;

    /// [`super::accumulate4`] 16 positions per vector: each vector of the planes is loaded
    /// once and added to every output row, the planes in order with fused multiply-adds.
    ///
    /// # Safety
    /// avx512f and fma present; every row and plane slice holds `n` floats.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn accumulate4(
        rows: &mut [&mut [f32]],
        ws: &[[f32; 4]; MAX_OUT],
        xs: &[&[f32]],
        n: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match (rows.len(), xs.len()) {
                (1, 4) => rows_planes::<1, 4>(rows, ws, xs, n),
                (2, 4) => rows_planes::<2, 4>(rows, ws, xs, n),
                (3, 4) => rows_planes::<3, 4>(rows, ws, xs, n),
                (4, 4) => rows_planes::<4, 4>(rows, ws, xs, n),
                (m, 1) => rows_planes_dyn::<1>(m, rows, ws, xs, n),
                (m, 2) => rows_planes_dyn::<2>(m, rows, ws, xs, n),
                (m, _) => rows_planes_dyn::<3>(m, rows, ws, xs, n),
            }
        }
    }

    /// `M` rows, `P` planes, the plane vectors in registers across the rows.
    ///
    /// # Safety
    /// As [`accumulate4`], with `rows.len() == M` and `xs.len() == P`.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn rows_planes<const M: usize, const P: usize>(
        rows: &mut [&mut [f32]],
        ws: &[[f32; 4]; MAX_OUT],
        xs: &[&[f32]],
        n: usize,
    ) {
        let wv: [[__m512; P]; M] =
            std::array::from_fn(|o| std::array::from_fn(|j| _mm512_set1_ps(ws[o][j])));
        let rp: [*mut f32; M] = std::array::from_fn(|o| rows[o].as_mut_ptr());
        let xp: [*const f32; P] = std::array::from_fn(|j| xs[j].as_ptr());
        let full = n / 16 * 16;
        let mut i = 0;
        while i < full {
            // SAFETY: i + 16 <= n for every row and plane slice.
            unsafe {
                let xv: [__m512; P] = std::array::from_fn(|j| _mm512_loadu_ps(xp[j].add(i)));
                for o in 0..M {
                    let mut acc = _mm512_loadu_ps(rp[o].add(i));
                    for j in 0..P {
                        acc = _mm512_fmadd_ps(wv[o][j], xv[j], acc);
                    }
                    _mm512_storeu_ps(rp[o].add(i), acc);
                }
            }
            i += 16;
        }
        tail(rows, ws, xs, full, n);
    }

    /// [`rows_planes`] for any row count (the last 1-3 planes of a layer).
    ///
    /// # Safety
    /// As [`accumulate4`], with `rows.len() == m` and `xs.len() == P`.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn rows_planes_dyn<const P: usize>(
        m: usize,
        rows: &mut [&mut [f32]],
        ws: &[[f32; 4]; MAX_OUT],
        xs: &[&[f32]],
        n: usize,
    ) {
        let full = n / 16 * 16;
        for o in 0..m {
            let wv: [__m512; P] = std::array::from_fn(|j| _mm512_set1_ps(ws[o][j]));
            let rp = rows[o].as_mut_ptr();
            let mut i = 0;
            while i < full {
                // SAFETY: i + 16 <= n for the row and every plane slice.
                unsafe {
                    let mut acc = _mm512_loadu_ps(rp.add(i));
                    for j in 0..P {
                        acc = _mm512_fmadd_ps(wv[j], _mm512_loadu_ps(xs[j].as_ptr().add(i)), acc);
                    }
                    _mm512_storeu_ps(rp.add(i), acc);
                }
                i += 16;
            }
        }
        tail(rows, ws, xs, full, n);
    }

    /// Positions `from..n` one by one (fused multiply-adds in plane order, as the vectors).
    #[target_feature(enable = "avx512f,fma")]
    fn tail(
        rows: &mut [&mut [f32]],
        ws: &[[f32; 4]; MAX_OUT],
        xs: &[&[f32]],
        from: usize,
        n: usize,
    ) {
        for (r, wo) in rows.iter_mut().zip(ws) {
            for t in from..n {
                let mut acc = r[t];
                for (j, xj) in xs.iter().enumerate() {
                    acc = wo[j].mul_add(xj[t], acc);
                }
                r[t] = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain triple loop: every row count, plane tails, a clamp, NaN and infinity
    /// kept where they belong (a zero weight on a missing plane must not turn inf into NaN).
    #[test]
    fn matches_the_reference_with_clamps_and_non_finite_inputs() {
        for (m, k, plane) in [(1, 1, 4100), (2, 32, 5000), (3, 5, 4097), (4, 13, 4096)] {
            let w: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let bias: Vec<f32> = (0..m).map(|o| o as f32 * 0.25 - 0.3).collect();
            let mut x: Vec<f32> = (0..k * plane)
                .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.2)
                .collect();
            x[17] = f32::INFINITY;
            x[(k - 1) * plane + 4095] = f32::NAN;
            for (lo, hi) in [(f32::NEG_INFINITY, f32::INFINITY), (0.0, 6.0)] {
                let mut out = vec![0f32; m * plane];
                run(&w, &bias, m, k, plane, &x, &mut out, (lo, hi));
                for o in 0..m {
                    for p in 0..plane {
                        let mut v = bias[o];
                        for kk in 0..k {
                            v += w[o * k + kk] * x[kk * plane + p];
                        }
                        let want = if v < lo {
                            lo
                        } else if v > hi {
                            hi
                        } else {
                            v
                        };
                        let got = out[o * plane + p];
                        assert!(
                            (got.is_nan() && want.is_nan())
                                || got == want
                                || (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                            "m {m} k {k} at ({o}, {p}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
