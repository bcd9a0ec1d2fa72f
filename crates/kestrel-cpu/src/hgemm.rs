//! GEMM with native half-precision arithmetic (x86-64 AVX512-FP16): `C (f32) = A · B` with A the
//! weights packed in `f16` ([`PackedA`] with MR = 8, stored in `f16`) and B packed to `f16`
//! block by block from any [`BSource`].
//!
//! Accumulation: products are summed in `f16` over at most [`F16_CHAIN`] consecutive terms of
//! the reduction, then each partial sum is widened and added in `f32`. The `f16` part of any sum
//! therefore has at most `F16_CHAIN` terms (bounding both its rounding error and its range);
//! the long sum is `f32`. If a partial sum overflows (±inf) or becomes NaN, [`hgemm`] reports it
//! and the caller recomputes the layer with `f32` arithmetic (see `PreparedConv`).
//!
//! 32 `f16` lanes per register give twice the multiply-adds of the `f32` kernels per
//! instruction. Only CPUs with AVX512-FP16 run this path ([`available`]).

use crate::sgemm::{BSource, Epilogue, PackedA, KC};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Rows of one microkernel tile (equals the AVX-512 f32 kernel's MR, so packed weights are
/// shared).
pub const HMR: usize = 8;
/// Columns of one microkernel tile (two registers of 32 halves).
pub const HNR: usize = 64;
/// Longest run of products accumulated in `f16` before the partial sum is added in `f32`.
pub const F16_CHAIN: usize = 32;
/// Columns of one packed B block.
const HNC: usize = 384;

/// True when this CPU can run the fp16-arithmetic kernels (AVX512-FP16 with AVX-512BW) and the
/// AVX-512 path is active (the packed weights use its MR).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512fp16")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && crate::simd::active_path() == crate::simd::SimdPath::Avx512
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

thread_local! {
    static BUF32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF16: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Raw C pointer for tasks writing disjoint tiles.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);
// SAFETY: tasks write disjoint (row range × column range) regions of C (see `hgemm`).
unsafe impl Send for CPtr {}
// SAFETY: as above.
unsafe impl Sync for CPtr {}
impl CPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `C (m × n, row stride ldc) = A · B` with fp16 arithmetic, then `epi` on each finished tile.
/// Returns `false` when some partial sum overflowed or became NaN (C is then unusable).
///
/// # Panics
/// When [`available`] is false, A is not stored in `f16` with MR = [`HMR`], or C is too small.
pub fn hgemm(
    a: &PackedA,
    b: &dyn BSource,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    epi: Epilogue,
) -> bool {
    assert!(available(), "hgemm needs AVX512-FP16");
    let (m, k) = (a.m, a.k);
    let a16 = a.f16_bits().expect("hgemm needs f16 weights");
    assert_eq!(a.mr(), HMR, "hgemm needs MR = {HMR} panels");
    if m == 0 || n == 0 {
        return true;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "C too small");
    let threads = rayon::current_num_threads().max(1);
    let m_panels = m.div_ceil(HMR);
    let n_chunks = n.div_ceil(HNC);
    let m_chunks = (2 * threads).div_ceil(n_chunks).clamp(1, m_panels);
    let per = m_panels.div_ceil(m_chunks);
    let m_chunks = m_panels.div_ceil(per);
    let ok = AtomicBool::new(true);
    let cptr = CPtr(c.as_mut_ptr());
    (0..m_chunks * n_chunks).into_par_iter().for_each(|task| {
        let (mi, ni) = (task / n_chunks, task % n_chunks);
        let (p0, p1) = (mi * per, ((mi + 1) * per).min(m_panels));
        let n0 = ni * HNC;
        let nc = HNC.min(n - n0);
        let npan = nc.div_ceil(HNR);
        BUF32.with(|b32| {
            BUF16.with(|b16| {
                let (mut b32, mut b16) = (b32.borrow_mut(), b16.borrow_mut());
                b32.resize(KC * npan * HNR, 0.0);
                b16.resize(KC * npan * HNR, 0);
                for k0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - k0);
                    let len = kc * npan * HNR;
                    b.pack(k0, kc, n0, nc, HNR, &mut b32[..len]);
                    // SAFETY: u16 and half::f16 have the same layout.
                    let dst: &mut [half::f16] =
                        unsafe { std::slice::from_raw_parts_mut(b16.as_mut_ptr().cast(), len) };
                    crate::fp16::f32_to_f16_on(crate::fp16::convert_path(), &b32[..len], dst);
                    let last = k0 + kc == k;
                    for j in 0..npan {
                        let bp = b16[j * kc * HNR..].as_ptr();
                        let cols = HNR.min(nc - j * HNR);
                        let col0 = n0 + j * HNR;
                        for p in p0..p1 {
                            let ap = a16[(p * k + k0) * HMR..].as_ptr();
                            let rows = HMR.min(m - p * HMR);
                            let row0 = p * HMR;
                            let fine = if rows == HMR && cols == HNR {
                                // SAFETY: the panels hold HMR*kc and kc*HNR halves; the tile lies
                                // inside C and belongs to this task; available() was checked.
                                unsafe {
                                    tile(kc, ap, bp, cptr.get().add(row0 * ldc + col0), ldc, k0 > 0)
                                }
                            } else {
                                let mut t = [0f32; HMR * HNR];
                                // SAFETY: `t` is an HMR x HNR tile at stride HNR.
                                let fine = unsafe { tile(kc, ap, bp, t.as_mut_ptr(), HNR, false) };
                                for r in 0..rows {
                                    for q in 0..cols {
                                        // SAFETY: (row0 + r, col0 + q) is inside C and this
                                        // task's region.
                                        unsafe {
                                            let d = cptr.get().add((row0 + r) * ldc + col0 + q);
                                            *d = if k0 > 0 {
                                                *d + t[r * HNR + q]
                                            } else {
                                                t[r * HNR + q]
                                            };
                                        }
                                    }
                                }
                                fine
                            };
                            if !fine {
                                ok.store(false, Ordering::Relaxed);
                            }
                            if last {
                                for r in 0..rows {
                                    // SAFETY: the tile row lies inside this task's region of C.
                                    unsafe {
                                        epi.apply(
                                            row0 + r,
                                            cptr.get().add((row0 + r) * ldc + col0),
                                            cols,
                                        )
                                    };
                                }
                            }
                        }
                    }
                }
            })
        });
    });
    ok.load(Ordering::Relaxed)
}

/// One HMR x HNR tile over `kc` reduction steps; returns false on overflow/NaN.
///
/// # Safety
/// `a` holds `HMR * kc` halves, `b` holds `kc * HNR` halves, `c` is valid for HMR rows of HNR
/// floats at stride `ldc`; the CPU has AVX512-FP16 and AVX-512BW.
#[inline]
unsafe fn tile(
    kc: usize,
    a: *const u16,
    b: *const u16,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: forwarded contract.
        unsafe { x86::tile_8x64(kc, a, b, c, ldc, acc) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kc, a, b, c, ldc, acc);
        unreachable!("hgemm is only available on x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{F16_CHAIN, HMR, HNR};
    use std::arch::x86_64::*;

    /// Classes checked after each f16 chain: QNaN (0x01), +inf (0x08), -inf (0x10), SNaN (0x80).
    const BAD: i32 = 0x99;

    /// # Safety
    /// See [`super::tile`].
    #[target_feature(enable = "avx512fp16,avx512f,avx512bw")]
    pub unsafe fn tile_8x64(
        kc: usize,
        a: *const u16,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) -> bool {
        let mut bad: u32 = 0;
        let mut add = acc;
        let mut k0 = 0;
        // SAFETY: every pointer offset stays inside the panels / tile described by the contract.
        unsafe {
            while k0 < kc {
                let kb = F16_CHAIN.min(kc - k0);
                let mut r = [[_mm512_setzero_si512(); 2]; HMR];
                for kk in k0..k0 + kb {
                    let bp = b.add(kk * HNR);
                    let b0 = _mm512_loadu_si512(bp as *const _);
                    let b1 = _mm512_loadu_si512(bp.add(32) as *const _);
                    let ap = a.add(kk * HMR);
                    for (i, row) in r.iter_mut().enumerate() {
                        // the weight comes in as an embedded {1to32} broadcast of a memory
                        // operand, folded into the load port (a separate vpbroadcastw would
                        // take the shuffle port the FMAs share)
                        let ai = ap.add(i);
                        std::arch::asm!(
                            "vfmadd231ph {c0}, {b0}, word ptr [{a}]{{1to32}}",
                            "vfmadd231ph {c1}, {b1}, word ptr [{a}]{{1to32}}",
                            c0 = inout(zmm_reg) row[0],
                            c1 = inout(zmm_reg) row[1],
                            b0 = in(zmm_reg) b0,
                            b1 = in(zmm_reg) b1,
                            a = in(reg) ai,
                            options(pure, readonly, nostack, preserves_flags),
                        );
                    }
                }
                for (i, row) in r.iter().enumerate() {
                    for (h, &vi) in row.iter().enumerate() {
                        bad |= _mm512_fpclass_ph_mask::<BAD>(_mm512_castsi512_ph(vi)) as u32;
                        let lo = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<0>(vi));
                        let hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(vi));
                        let cp = c.add(i * ldc + h * 32);
                        if add {
                            _mm512_storeu_ps(cp, _mm512_add_ps(_mm512_loadu_ps(cp), lo));
                            _mm512_storeu_ps(
                                cp.add(16),
                                _mm512_add_ps(_mm512_loadu_ps(cp.add(16)), hi),
                            );
                        } else {
                            _mm512_storeu_ps(cp, lo);
                            _mm512_storeu_ps(cp.add(16), hi);
                        }
                    }
                }
                add = true;
                k0 += kb;
            }
        }
        bad == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sgemm::DenseB;
    use crate::ukernel::Ukernel;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum();
            }
        }
        c
    }

    #[test]
    fn fp16_arithmetic_matches_the_reference_within_fp16_tolerance() {
        if !available() {
            eprintln!("AVX512-FP16 not available: fp16-arithmetic GEMM not tested on this CPU");
            return;
        }
        let uk = Ukernel::active();
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 13, 7),
            (13, 127, 3),
            (9, 600, 300),
            (127, 65, 13),
            (64, 385, 257),
            (8, 64, 1000),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.05)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let want = naive(m, n, k, &a, &b);
            // error bound: inputs rounded to f16 (2 x 2^-11 per product), f16 chains of
            // F16_CHAIN terms (each addition 2^-11 of the running partial sum)
            let abs: Vec<f64> = naive(
                m,
                n,
                k,
                &a.iter().map(|v| v.abs()).collect::<Vec<_>>(),
                &b.iter().map(|v| v.abs()).collect::<Vec<_>>(),
            );
            let pa = PackedA::new(&a, m, k, k, &uk).into_f16();
            let mut c = vec![f32::NAN; m * n];
            assert!(hgemm(
                &pa,
                &DenseB { data: &b, ld: n },
                n,
                &mut c,
                n,
                Epilogue::default()
            ));
            let u = 2f64.powi(-11);
            for i in 0..m * n {
                let tol = abs[i] * u * (3.0 + F16_CHAIN as f64) + 1e-6;
                assert!(
                    (c[i] as f64 - want[i]).abs() <= tol,
                    "{m}x{n}x{k} at {i}: {} vs {} (tol {tol})",
                    c[i],
                    want[i]
                );
            }
        }
    }

    #[test]
    fn an_overflowing_partial_sum_is_reported() {
        if !available() {
            return;
        }
        let uk = Ukernel::active();
        let (m, n, k) = (8, 64, 16);
        let a = vec![200.0f32; m * k];
        let b = vec![30.0f32; k * n]; // 16 x 6000 = 96000 > 65504
        let pa = PackedA::new(&a, m, k, k, &uk).into_f16();
        let mut c = vec![0f32; m * n];
        assert!(!hgemm(
            &pa,
            &DenseB { data: &b, ld: n },
            n,
            &mut c,
            n,
            Epilogue::default()
        ));
        let b = vec![3.0f32; k * n];
        assert!(hgemm(
            &pa,
            &DenseB { data: &b, ld: n },
            n,
            &mut c,
            n,
            Epilogue::default()
        ));
        assert!(c.iter().all(|&v| v == 9600.0));
    }
}
