//! Machine peaks for the roofline: FMA throughput and streaming memory bandwidth, measured with
//! micro-benchmarks on the SIMD path the kernels use.

use crate::simd::active_path;
#[cfg(target_arch = "x86_64")]
use crate::simd::SimdPath;
use std::time::Instant;

/// Independent accumulator registers in the FMA loop (enough to hide FMA latency on two ports).
const ACC: usize = 12;

/// Returns (flops done, sink) for `iters` iterations of the loop on the active SIMD path.
fn fma_loop(iters: usize, seed: f32) -> (f64, f32) {
    match active_path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: active_path() returns Avx512 only when avx512f and fma were detected.
        SimdPath::Avx512 => (2.0 * 16.0 * ACC as f64 * iters as f64, unsafe {
            fma_avx512(iters, seed)
        }),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: active_path() returns Avx2Fma only when avx2 and fma were detected.
        SimdPath::Avx2Fma => (2.0 * 8.0 * ACC as f64 * iters as f64, unsafe {
            fma_avx2(iters, seed)
        }),
        _ => {
            let mut acc = [seed; ACC];
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = a.mul_add(0.999_99, 1e-7);
                }
            }
            (2.0 * ACC as f64 * iters as f64, acc.iter().sum())
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn fma_avx512(iters: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_99);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(seed); ACC];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for r in acc {
        s = _mm512_add_ps(s, r);
    }
    _mm512_reduce_add_ps(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_99);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(seed); ACC];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let mut out = [0f32; 8];
    let mut s = _mm256_setzero_ps();
    for r in acc {
        s = _mm256_add_ps(s, r);
    }
    // SAFETY: `out` holds exactly 8 f32, the width of one unaligned 256-bit store.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// Peak f32 FMA throughput in GFLOP/s with `threads` threads each running the FMA loop
/// (best of 3 trials).
pub fn fma_gflops(threads: usize) -> f64 {
    let iters = 10_000_000;
    let mut best = 0f64;
    for trial in 0..3 {
        let t0 = Instant::now();
        let (flops, sink) = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads.max(1))
                .map(|i| s.spawn(move || fma_loop(iters, 1.0 + (i + trial) as f32 * 1e-3)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or((0.0, 0.0)))
                .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
        });
        let dt = t0.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        best = best.max(flops / dt / 1e9);
    }
    best
}

/// Streaming bandwidth in GB/s: `a[i] = b[i] + s * c[i]` over arrays far larger than the caches,
/// split across `threads` threads (best of 3; 12 bytes counted per element).
pub fn triad_gbps(threads: usize) -> f64 {
    let n = 32 << 20; // 32 Mi floats = 128 MiB per array
    let mut a = vec![0f32; n];
    let b = vec![1f32; n];
    let c = vec![2f32; n];
    let threads = threads.max(1);
    let chunk = n.div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..3 {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for ((ac, bc), cc) in a
                .chunks_mut(chunk)
                .zip(b.chunks(chunk))
                .zip(c.chunks(chunk))
            {
                s.spawn(move || {
                    for ((x, y), z) in ac.iter_mut().zip(bc).zip(cc) {
                        *x = y + 0.5 * z;
                    }
                });
            }
        });
        let dt = t0.elapsed().as_secs_f64();
        std::hint::black_box(&a);
        best = best.max(12.0 * n as f64 / dt / 1e9);
    }
    best
}
