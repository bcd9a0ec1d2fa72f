//! Half-precision (IEEE binary16) storage: conversion between `f32` and `f16` slices and the dot
//! product of an `f32` row with an `f16` row (fully connected layers with fp16 weights).
//!
//! Arithmetic stays in `f32`; only storage is `f16`. Conversions round to nearest-even (the IEEE
//! default) and keep infinities, NaN and subnormals: x86-64 uses the hardware converters
//! (`vcvtph2ps`/`vcvtps2ph`: AVX-512F, or F16C beside AVX2), chosen at run time with the rest of
//! [`crate::simd`]; every other CPU uses the `half` crate (which uses the native `fcvt` of
//! aarch64 when the CPU has FEAT_FP16). All paths give bit-identical results (tested).

use crate::simd::active_path;
#[cfg(target_arch = "x86_64")]
use crate::simd::SimdPath;
use half::f16;
use rayon::prelude::*;

/// Elements per parallel task of the whole-tensor conversions.
const PAR_CHUNK: usize = 1 << 15;

/// Whether the x86-64 F16C converters may be used on the AVX2 path (detected once).
#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    static F16C: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *F16C.get_or_init(|| std::arch::is_x86_feature_detected!("f16c"))
}

/// Which converter runs: the SIMD path, downgraded to portable when AVX2 lacks F16C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvertPath {
    Avx512,
    F16c,
    Portable,
}

/// The converter for the active SIMD path.
pub fn convert_path() -> ConvertPath {
    match active_path() {
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx512 => ConvertPath::Avx512,
        #[cfg(target_arch = "x86_64")]
        SimdPath::Avx2Fma if has_f16c() => ConvertPath::F16c,
        _ => ConvertPath::Portable,
    }
}

/// Rounds `src` into `dst` (equal lengths) on the given path.
pub fn f32_to_f16_on(path: ConvertPath, src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16: lengths differ");
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Avx512 path is only returned by convert_path() when avx512f was detected;
        // tests pass it explicitly only after detecting it.
        ConvertPath::Avx512 => unsafe { x86::f32_to_f16_avx512(src, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for avx2 + f16c.
        ConvertPath::F16c => unsafe { x86::f32_to_f16_f16c(src, dst) },
        _ => {
            use half::slice::HalfFloatSliceExt;
            dst.convert_from_f32_slice(src)
        }
    }
}

/// Widens `src` into `dst` (equal lengths) on the given path.
pub fn f16_to_f32_on(path: ConvertPath, src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: lengths differ");
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see f32_to_f16_on.
        ConvertPath::Avx512 => unsafe { x86::f16_to_f32_avx512(src, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see f32_to_f16_on.
        ConvertPath::F16c => unsafe { x86::f16_to_f32_f16c(src, dst) },
        _ => {
            use half::slice::HalfFloatSliceExt;
            src.convert_to_f32_slice(dst)
        }
    }
}

/// Rounds `src` into `dst` on the active path, in parallel chunks on the current rayon pool.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16: lengths differ");
    let path = convert_path();
    if src.len() <= PAR_CHUNK {
        return f32_to_f16_on(path, src, dst);
    }
    dst.par_chunks_mut(PAR_CHUNK)
        .zip(src.par_chunks(PAR_CHUNK))
        .for_each(|(d, s)| f32_to_f16_on(path, s, d));
}

/// Widens `src` into `dst` on the active path, in parallel chunks on the current rayon pool.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: lengths differ");
    let path = convert_path();
    if src.len() <= PAR_CHUNK {
        return f16_to_f32_on(path, src, dst);
    }
    dst.par_chunks_mut(PAR_CHUNK)
        .zip(src.par_chunks(PAR_CHUNK))
        .for_each(|(d, s)| f16_to_f32_on(path, s, d));
}

/// Replaces every value by the nearest `f16` value (kept in `f32` storage): what storing and
/// reloading it in half precision gives.
pub fn round_to_f16(xs: &mut [f32]) {
    let mut tmp = vec![f16::ZERO; xs.len().min(PAR_CHUNK)];
    let path = convert_path();
    for c in xs.chunks_mut(PAR_CHUNK) {
        let t = &mut tmp[..c.len()];
        f32_to_f16_on(path, c, t);
        f16_to_f32_on(path, t, c);
    }
}

/// True when every finite value of `xs` lies within the f16 range (|x| ≤ 65504), so storing
/// them in f16 creates no infinities (NaN and infinities are kept as they are by the conversion).
pub fn fits_f16(xs: &[f32]) -> bool {
    let chunk_max = |c: &[f32]| {
        c.iter()
            .fold(0f32, |m, &v| if v.is_finite() { m.max(v.abs()) } else { m })
    };
    let max = if xs.len() <= PAR_CHUNK {
        chunk_max(xs)
    } else {
        xs.par_chunks(PAR_CHUNK)
            .map(chunk_max)
            .reduce(|| 0.0, f32::max)
    };
    max <= 65504.0
}

/// `Σ x[i]·w[i]` with `w` in half precision, accumulated in `f32` (lengths must match).
pub fn dot_f16(x: &[f32], w: &[f16]) -> f32 {
    assert_eq!(x.len(), w.len(), "dot_f16: lengths differ");
    match convert_path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: convert_path() returns Avx512 only when avx512f (and fma) were detected.
        ConvertPath::Avx512 => unsafe { x86::dot_f16_avx512(x, w) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: F16c only with avx2 + fma + f16c detected.
        ConvertPath::F16c => unsafe { x86::dot_f16_f16c(x, w) },
        _ => dot_f16_portable(x, w),
    }
}

/// Four [`dot_f16`] products of `x` with the rows `w[0..4]` in one pass (`x` read once, four
/// weight streams side by side), each bit-identical to `dot_f16(x, w[i])`. Lengths must match.
pub fn dot4_f16(x: &[f32], w: [&[f16]; 4]) -> [f32; 4] {
    assert!(
        w.iter().all(|r| r.len() == x.len()),
        "dot4_f16: lengths differ"
    );
    match convert_path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: convert_path() returns Avx512 only when avx512f (and fma) were detected.
        ConvertPath::Avx512 => unsafe { x86::dot4_f16_avx512(x, w) },
        _ => w.map(|r| dot_f16(x, r)),
    }
}

/// Portable [`dot_f16`]: widen a block, then a vectorisable `f32` dot product.
fn dot_f16_portable(x: &[f32], w: &[f16]) -> f32 {
    let mut buf = [0f32; 64];
    let mut acc = [0f32; 16];
    let mut s = 0f32;
    for (xs, ws) in x.chunks(64).zip(w.chunks(64)) {
        let b = &mut buf[..ws.len()];
        f16_to_f32_on(ConvertPath::Portable, ws, b);
        if xs.len() == 64 {
            for (xc, bc) in xs.chunks_exact(16).zip(b.chunks_exact(16)) {
                for l in 0..16 {
                    acc[l] = xc[l].mul_add(bc[l], acc[l]);
                }
            }
        } else {
            for (a, c) in xs.iter().zip(b.iter()) {
                s = a.mul_add(*c, s);
            }
        }
    }
    s + acc.iter().sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::f16;
    use std::arch::x86_64::*;

    const ROUND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    /// # Safety
    /// The CPU supports AVX-512F; lengths are equal (checked by the caller).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn f32_to_f16_avx512(src: &[f32], dst: &mut [f16]) {
        let n = src.len();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n for both slices; unaligned loads/stores.
            unsafe {
                let v = _mm512_loadu_ps(src.as_ptr().add(i));
                let h = _mm512_cvtps_ph::<ROUND>(v);
                _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, h);
            }
            i += 16;
        }
        for j in i..n {
            dst[j] = f16::from_f32(src[j]);
        }
    }

    /// # Safety
    /// The CPU supports AVX-512F; lengths are equal.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn f16_to_f32_avx512(src: &[f16], dst: &mut [f32]) {
        let n = src.len();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n for both slices; unaligned loads/stores.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
                _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
            }
            i += 16;
        }
        for j in i..n {
            dst[j] = src[j].to_f32();
        }
    }

    /// # Safety
    /// The CPU supports AVX2 and F16C; lengths are equal.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f32_to_f16_f16c(src: &[f32], dst: &mut [f16]) {
        let n = src.len();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n for both slices; unaligned loads/stores.
            unsafe {
                let v = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = f16::from_f32(src[j]);
        }
    }

    /// # Safety
    /// The CPU supports AVX2 and F16C; lengths are equal.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f16_to_f32_f16c(src: &[f16], dst: &mut [f32]) {
        let n = src.len();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n for both slices; unaligned loads/stores.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = src[j].to_f32();
        }
    }

    /// # Safety
    /// The CPU supports AVX-512F and FMA; lengths are equal.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn dot_f16_avx512(x: &[f32], w: &[f16]) -> f32 {
        let n = x.len();
        let mut i = 0;
        // SAFETY: every load reads i..i+16 with i + 16 <= n (or i+32 for the paired loop).
        unsafe {
            let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            while i + 32 <= n {
                let w0 = _mm512_cvtph_ps(_mm256_loadu_si256(w.as_ptr().add(i) as *const __m256i));
                let w1 =
                    _mm512_cvtph_ps(_mm256_loadu_si256(w.as_ptr().add(i + 16) as *const __m256i));
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(i)), w0, a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(i + 16)), w1, a1);
                i += 32;
            }
            while i + 16 <= n {
                let w0 = _mm512_cvtph_ps(_mm256_loadu_si256(w.as_ptr().add(i) as *const __m256i));
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(i)), w0, a0);
                i += 16;
            }
            let mut s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
            for j in i..n {
                s = x[j].mul_add(w[j].to_f32(), s);
            }
            s
        }
    }

    /// [`dot_f16_avx512`] of four rows at once, each summed in exactly its order (two
    /// accumulators over 32-float steps, one 16-float step, the reduction, the tail).
    ///
    /// # Safety
    /// The CPU supports AVX-512F and FMA; every row is as long as `x`.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn dot4_f16_avx512(x: &[f32], w: [&[f16]; 4]) -> [f32; 4] {
        let n = x.len();
        let mut i = 0;
        let mut a0 = [_mm512_setzero_ps(); 4];
        let mut a1 = [_mm512_setzero_ps(); 4];
        // SAFETY: every load reads i..i+16 (or i..i+32) with that end <= n, in x and each row
        unsafe {
            let wv = |r: usize, at: usize| {
                _mm512_cvtph_ps(_mm256_loadu_si256(w[r].as_ptr().add(at) as *const __m256i))
            };
            while i + 32 <= n {
                let (x0, x1) = (
                    _mm512_loadu_ps(x.as_ptr().add(i)),
                    _mm512_loadu_ps(x.as_ptr().add(i + 16)),
                );
                for r in 0..4 {
                    a0[r] = _mm512_fmadd_ps(x0, wv(r, i), a0[r]);
                    a1[r] = _mm512_fmadd_ps(x1, wv(r, i + 16), a1[r]);
                }
                i += 32;
            }
            while i + 16 <= n {
                let x0 = _mm512_loadu_ps(x.as_ptr().add(i));
                for r in 0..4 {
                    a0[r] = _mm512_fmadd_ps(x0, wv(r, i), a0[r]);
                }
                i += 16;
            }
        }
        std::array::from_fn(|r| {
            let mut s = _mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r]));
            for j in i..n {
                s = x[j].mul_add(w[r][j].to_f32(), s);
            }
            s
        })
    }

    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; lengths are equal.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16_f16c(x: &[f32], w: &[f16]) -> f32 {
        let n = x.len();
        let mut i = 0;
        // SAFETY: every load reads i..i+8 with i + 8 <= n.
        unsafe {
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            while i + 16 <= n {
                let w0 = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(i) as *const __m128i));
                let w1 = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(i + 8) as *const __m128i));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(i)), w0, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(i + 8)), w1, a1);
                i += 16;
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a0, a1));
            let mut s: f32 = lanes.iter().sum();
            for j in i..n {
                s = x[j].mul_add(w[j].to_f32(), s);
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every converter this CPU can run.
    fn paths() -> Vec<ConvertPath> {
        #[allow(unused_mut)] // only x86-64 adds paths
        let mut p = vec![ConvertPath::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && has_f16c()
            {
                p.push(ConvertPath::F16c);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                p.push(ConvertPath::Avx512);
            }
        }
        p
    }

    /// Values that exercise rounding, subnormals, overflow, infinities and NaN.
    fn specials() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            65504.0,  // largest finite f16
            65519.99, // rounds down to 65504
            65520.0,  // rounds to +inf
            -1e9,     // -inf
            f32::INFINITY,
            f32::NEG_INFINITY,
            6.1035156e-5,       // smallest normal f16
            5.9604645e-8,       // smallest subnormal f16
            2.9802322e-8,       // half of it: ties to even → 0
            4.5e-8,             // rounds up to the smallest subnormal
            1e-10,              // underflows to 0
            1.0 + 1.0 / 1024.0, // 1 + 2^-10, exact
            1.0 + 1.0 / 2048.0, // 1 + 2^-11: tie, to even → 1.0
            1.0 + 3.0 / 2048.0, // 1 + 3·2^-11: tie, to even → 1 + 2^-9
            std::f32::consts::PI,
        ];
        v.extend((0..200).map(|i| ((i as f32) * 0.37).sin() * 10f32.powi(i % 9 - 4)));
        v
    }

    #[test]
    fn every_path_rounds_like_half_and_round_trips() {
        let src = specials();
        let want: Vec<f16> = src.iter().map(|&x| f16::from_f32(x)).collect();
        for path in paths() {
            let mut h = vec![f16::ZERO; src.len()];
            f32_to_f16_on(path, &src, &mut h);
            for (i, (a, b)) in h.iter().zip(&want).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{path:?} element {i} ({})",
                    src[i]
                );
            }
            let mut back = vec![0f32; src.len()];
            f16_to_f32_on(path, &h, &mut back);
            for (i, (&a, b)) in back.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_f32().to_bits(), "{path:?} widen {i}");
            }
        }
        let nan = [f32::NAN; 17];
        for path in paths() {
            let mut h = [f16::ZERO; 17];
            f32_to_f16_on(path, &nan, &mut h);
            let mut back = [0f32; 17];
            f16_to_f32_on(path, &h, &mut back);
            assert!(back.iter().all(|v| v.is_nan()), "{path:?} NaN kept");
        }
        // the values named above
        let r = |x: f32| f16::from_f32(x).to_f32();
        assert_eq!(r(65519.99), 65504.0);
        assert_eq!(r(65520.0), f32::INFINITY);
        assert_eq!(r(2.9802322e-8), 0.0);
        assert_eq!(r(4.5e-8), 5.9604645e-8);
        assert_eq!(r(1.0 + 1.0 / 2048.0), 1.0);
        assert_eq!(r(1.0 + 3.0 / 2048.0), 1.0 + 1.0 / 512.0);
    }

    #[test]
    fn range_check_flags_values_beyond_65504() {
        assert!(fits_f16(&[0.0, -65504.0, 65504.0, f32::INFINITY, f32::NAN]));
        assert!(!fits_f16(&[1.0, 65505.0]));
        let mut big = vec![1.0f32; 3 * PAR_CHUNK];
        assert!(fits_f16(&big));
        big[2 * PAR_CHUNK + 5] = -1e6;
        assert!(!fits_f16(&big));
    }

    #[test]
    fn every_f16_value_round_trips_exactly() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for path in paths() {
            let mut wide = vec![0f32; all.len()];
            f16_to_f32_on(path, &all, &mut wide);
            let mut back = vec![f16::ZERO; all.len()];
            f32_to_f16_on(path, &wide, &mut back);
            for (a, b) in all.iter().zip(&back) {
                if a.is_nan() {
                    assert!(b.is_nan());
                } else {
                    assert_eq!(a.to_bits(), b.to_bits(), "{path:?}");
                }
            }
        }
    }

    #[test]
    fn parallel_conversion_and_dot_match_plain_loops() {
        let n = 3 * PAR_CHUNK + 77;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 13 % 97) as f32 - 48.0) * 0.01)
            .collect();
        let mut h = vec![f16::ZERO; n];
        f32_to_f16(&x, &mut h);
        let mut back = vec![0f32; n];
        f16_to_f32(&h, &mut back);
        let mut r = x.clone();
        round_to_f16(&mut r);
        assert_eq!(back, r);
        for &k in &[1usize, 15, 16, 17, 33, 100, 4099] {
            let w: Vec<f16> = (0..k)
                .map(|i| f16::from_f32((i as f32 * 0.7).cos()))
                .collect();
            let want: f64 = x[..k]
                .iter()
                .zip(&w)
                .map(|(&a, b)| a as f64 * b.to_f64())
                .sum();
            let got = dot_f16(&x[..k], &w);
            assert!(
                (got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                "k={k}"
            );
            assert!(
                (dot_f16_portable(&x[..k], &w) as f64 - want).abs() < 1e-4 * (1.0 + want.abs())
            );
        }
    }
}
