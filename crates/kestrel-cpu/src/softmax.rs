//! Softmax over one axis of an f32 tensor laid out `[outer, n, inner]`, in place.
//!
//! Over the channels of an NCHW map (detector heads: MTCNN P-Net's 2-class softmax at every
//! position) the reference walks each position's `n` values at stride `inner` with a scalar
//! `exp`. Here positions go 16 to a vector (AVX-512): the maximum over the `n` rows, then
//! `exp(x - max)` by a Cephes-style polynomial (range reduction by ln 2, degree-6 polynomial,
//! `vscalefps` for the power of two; within 2 ulp of `f32::exp` over the range softmax uses,
//! tested), the sum, and a division, as the reference does; chunks of positions are
//! independent tasks. Rows along the last axis (`inner == 1`, classifier outputs) and
//! non-AVX-512 machines run [`kestrel_core::ops::norm::softmax_rows`]. NaN and infinities
//! behave as in the reference (a row with a NaN, or of -inf, gives NaN).

#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

/// Positions per task.
#[cfg(target_arch = "x86_64")]
const CHUNK: usize = 2048;

/// Softmax of each of the `outer × inner` rows of length `n` (stride `inner`) of `data`.
pub fn softmax(data: &mut [f32], inner: usize, n: usize) {
    let vector = inner >= 16
        && n >= 1
        && crate::simd::active_path() == crate::simd::SimdPath::Avx512
        && cfg!(target_arch = "x86_64");
    if !vector {
        kestrel_core::ops::norm::softmax_rows(data, inner, n);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    data.par_chunks_mut(n * inner).for_each(|block| {
        // one [n, inner] block: chunks of positions, each a task writing only its columns
        let ptr = crate::direct::SharedMut(block.as_mut_ptr());
        (0..inner.div_ceil(CHUNK)).into_par_iter().for_each(|c| {
            let p0 = c * CHUNK;
            let len = CHUNK.min(inner - p0);
            // SAFETY: AVX-512 detected; columns p0..p0+len of the block's n rows lie inside
            // it, and only this task touches them.
            unsafe { x86::columns(ptr.get().add(p0), inner, n, len) };
        });
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Softmax over `n` rows (stride `inner`) of `len` columns starting at `p`.
    ///
    /// # Safety
    /// avx512f present; `p + k * inner + j` valid for reads and writes for `k < n`,
    /// `j < len`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn columns(p: *mut f32, inner: usize, n: usize, len: usize) {
        let mut j = 0;
        while j < len {
            let lanes = (len - j).min(16);
            let mask: __mmask16 = if lanes == 16 {
                0xffff
            } else {
                (1u16 << lanes) - 1
            };
            // SAFETY: masked lanes stay inside the `len` columns of each row.
            unsafe {
                let at = |k: usize| p.add(k * inner + j);
                let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
                for k in 0..n {
                    // max returns its second operand when either is NaN: a NaN is kept
                    m = _mm512_max_ps(m, _mm512_maskz_loadu_ps(mask, at(k)));
                }
                let mut s = _mm512_setzero_ps();
                for k in 0..n {
                    let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, at(k)), m));
                    _mm512_mask_storeu_ps(at(k), mask, e);
                    s = _mm512_add_ps(s, e);
                }
                for k in 0..n {
                    let e = _mm512_maskz_loadu_ps(mask, at(k));
                    _mm512_mask_storeu_ps(at(k), mask, _mm512_div_ps(e, s));
                }
            }
            j += 16;
        }
    }

    /// `e^x` per lane for `x <= 0` (softmax's arguments): Cephes' `expf` (x = n ln 2 + r,
    /// |r| <= ln 2 / 2, degree-6 polynomial in r, times 2^n by `vscalefps`); -inf gives 0, NaN
    /// stays NaN; arguments below -104 give 0 (or the smallest subnormals).
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp(x: __m512) -> __m512 {
        // min/max return their second operand when either is NaN: NaN passes through
        let x = _mm512_max_ps(_mm512_set1_ps(-104.0), x);
        let x = _mm512_min_ps(_mm512_set1_ps(88.7), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        // r = x - n ln 2, ln 2 split in two parts for precision
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut y = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
        }
        let r2 = _mm512_mul_ps(r, r);
        let y = _mm512_fmadd_ps(y, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        _mm512_scalef_ps(y, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_on_channels_and_rows() {
        for (outer, n, inner) in [
            (1, 2, 5000),
            (2, 3, 37),
            (1, 7, 16),
            (3, 1000, 1),
            (1, 1, 40),
        ] {
            let x: Vec<f32> = (0..outer * n * inner)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37)
                .collect();
            let (mut got, mut want) = (x.clone(), x);
            softmax(&mut got, inner, n);
            kestrel_core::ops::norm::softmax_rows(&mut want, inner, n);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 2e-6 * w.abs().max(1e-30) + 1e-37,
                    "({outer}, {n}, {inner}) at {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn non_finite_values_behave_as_in_the_reference() {
        let inner = 32;
        let mut x = vec![0.5f32; 3 * inner];
        x[1] = f32::NAN; // column 1: NaN row
        for k in 0..3 {
            x[k * inner + 2] = f32::NEG_INFINITY; // column 2: all -inf
        }
        x[3] = f32::NEG_INFINITY; // column 3: one -inf (weight 0)
        x[inner + 4] = f32::INFINITY; // column 4: +inf (NaN, as inf - inf)
        let (mut got, mut want) = (x.clone(), x);
        softmax(&mut got, inner, 3);
        kestrel_core::ops::norm::softmax_rows(&mut want, inner, 3);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6,
                "at {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        if crate::simd::active_path() != crate::simd::SimdPath::Avx512 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            let mut worst = 0u32;
            let mut v = -103.0f32;
            while v <= 0.0 {
                let xs: [f32; 16] = std::array::from_fn(|i| v + i as f32 * 1e-3);
                let mut out = [0f32; 16];
                // SAFETY: AVX-512 detected; 16 floats each way.
                unsafe {
                    _mm512_storeu_ps(out.as_mut_ptr(), x86::exp(_mm512_loadu_ps(xs.as_ptr())))
                };
                for (x, y) in xs.iter().zip(out) {
                    let want = x.exp();
                    if want > 1e-37 {
                        worst =
                            worst
                                .max((y.to_bits() as i64 - want.to_bits() as i64).unsigned_abs()
                                    as u32);
                    }
                }
                v += 0.173;
            }
            assert!(worst <= 2, "exp within {worst} ulp");
        }
    }
}
