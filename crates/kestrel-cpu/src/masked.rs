//! Masked 512-bit loads and stores that fall back to plain ones when the mask is full.
//!
//! AMD Zen 4 runs masked AVX-512 loads and stores much slower than plain ones (measured on the
//! development VM, SqueezeNet's first layer as a C replica of [`crate::conv_stem`]: 0.507 ms
//! with masked loads and stores everywhere, 0.425 with plain loads where the mask is full,
//! 0.390 with plain stores too). Kernels whose masks are full except at a row's end call these
//! instead of the intrinsics: one well-predicted branch per access.

use std::arch::x86_64::*;

/// 16 floats from `p`, lanes outside `mask` zero and not read.
///
/// # Safety
/// avx512f present; every lane in `mask` readable (all 16 when `mask` is full).
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn load(mask: __mmask16, p: *const f32) -> __m512 {
    // SAFETY: forwarded contract.
    unsafe {
        if mask == 0xffff {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }
}

/// Stores the lanes of `v` in `mask` to `p`; the others are not written.
///
/// # Safety
/// avx512f present; every lane in `mask` writable (all 16 when `mask` is full).
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn store(mask: __mmask16, p: *mut f32, v: __m512) {
    // SAFETY: forwarded contract.
    unsafe {
        if mask == 0xffff {
            _mm512_storeu_ps(p, v)
        } else {
            _mm512_mask_storeu_ps(p, mask, v)
        }
    }
}
