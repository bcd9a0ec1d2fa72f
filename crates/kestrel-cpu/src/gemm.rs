//! `A · Bᵀ` for fully connected layers (GEMV when M = 1): each output is a dot product of two
//! contiguous rows, so FC weights are streamed once at memory speed. Convolutions use the packed
//! GEMM of [`crate::sgemm`].

use crate::simd::{dot, dot4};
use rayon::prelude::*;

/// `C (m×n) = A (m×k) · Bᵀ` where `bt` is `n×k` row-major (each output is a dot product of two
/// contiguous rows). Used for fully connected layers with pre-transposed weights.
pub fn sgemm_nt(m: usize, n: usize, k: usize, a: &[f32], bt: &[f32], c: &mut [f32]) {
    if m == 1 {
        // VGG-16's fc6, 411 MB of weights, one thread: 24 -> 15-17 ms (onnxruntime 17.3)
        return gemv_by4(n, k, a, bt, c, dot, dot4);
    }
    gemm_nt_by(m, n, k, a, bt, c, dot)
}

/// [`sgemm_nt`] with `bt` stored in half precision (widened as it streams; `f32` arithmetic).
pub fn gemm_nt_f16w(m: usize, n: usize, k: usize, a: &[f32], bt: &[half::f16], c: &mut [f32]) {
    use crate::fp16::{dot4_f16, dot_f16};
    if m == 1 {
        return gemv_by4(n, k, a, bt, c, dot_f16, dot4_f16);
    }
    gemm_nt_by(m, n, k, a, bt, c, dot_f16)
}

/// GEMV (`m = 1`): outputs in parallel chunks of 64, four weight rows per pass (`dot4`: one
/// read of `a`, four memory streams; a single stream left this memory-bound loop at ~16 GB/s),
/// the chunk's last 1-3 rows one at a time. `dot4` must equal four `dot`s bit for bit, so the
/// result does not depend on the chunking.
fn gemv_by4<W: Sync>(
    n: usize,
    k: usize,
    a: &[f32],
    bt: &[W],
    c: &mut [f32],
    dot: impl Fn(&[f32], &[W]) -> f32 + Sync,
    dot4: impl Fn(&[f32], [&[W]; 4]) -> [f32; 4] + Sync,
) {
    assert!(a.len() >= k && bt.len() >= k * n && c.len() >= n);
    c[..n].par_chunks_mut(64).enumerate().for_each(|(q, cs)| {
        let row = |j: usize| &bt[(q * 64 + j) * k..][..k];
        let done = cs.len() / 4 * 4;
        let mut quads = cs.chunks_exact_mut(4);
        for (i, out) in (&mut quads).enumerate() {
            let j = 4 * i;
            out.copy_from_slice(&dot4(&a[..k], [row(j), row(j + 1), row(j + 2), row(j + 3)]));
        }
        for (j, out) in quads.into_remainder().iter_mut().enumerate() {
            *out = dot(&a[..k], row(done + j));
        }
    });
}

/// The driver for `m > 1`: rows of C in parallel, each output a `dot` of a row of A and a row
/// of `bt`.
fn gemm_nt_by<W: Sync>(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    bt: &[W],
    c: &mut [f32],
    dot: impl Fn(&[f32], &[W]) -> f32 + Sync,
) {
    assert!(a.len() >= m * k && bt.len() >= k * n && c.len() >= m * n);
    let c = &mut c[..m * n];
    c.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, out) in row.iter_mut().enumerate() {
            *out = dot(&a[i * k..(i + 1) * k], &bt[j * k..(j + 1) * k]);
        }
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Plain triple loop, the reference for the GEMM tests.
    pub(crate) fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn gemv_four_rows_at_once_equals_one_at_a_time() {
        // n = 70: one 64-output chunk of 16 quads and one of 1 quad + 2 single rows; k with a
        // tail after the 16-float blocks
        let (n, k) = (70, 1037);
        let a: Vec<f32> = (0..k).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
        let bt: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let mut c = vec![f32::NAN; n];
        sgemm_nt(1, n, k, &a, &bt, &mut c);
        for j in 0..n {
            let want = dot(&a, &bt[j * k..(j + 1) * k]);
            assert_eq!(c[j].to_bits(), want.to_bits(), "output {j}");
        }
    }

    #[test]
    fn gemv_four_f16_rows_at_once_equals_one_at_a_time() {
        let (n, k) = (70, 1037);
        let a: Vec<f32> = (0..k).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
        let bt: Vec<half::f16> = (0..n * k)
            .map(|i| half::f16::from_f32(((i * 5 % 13) as f32 - 6.0) * 0.1))
            .collect();
        let mut c = vec![f32::NAN; n];
        gemm_nt_f16w(1, n, k, &a, &bt, &mut c);
        for j in 0..n {
            let want = crate::fp16::dot_f16(&a, &bt[j * k..(j + 1) * k]);
            assert_eq!(c[j].to_bits(), want.to_bits(), "output {j}");
        }
    }

    #[test]
    fn matches_naive_on_odd_shapes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 13, 7),
            (13, 127, 3),
            (5, 600, 19),
            (8, 1, 33),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let want = naive(m, n, k, &a, &b);
            let mut bt = vec![0f32; n * k];
            for p in 0..k {
                for j in 0..n {
                    bt[j * k + p] = b[p * n + j];
                }
            }
            let mut c2 = vec![f32::NAN; m * n];
            sgemm_nt(m, n, k, &a, &bt, &mut c2);
            for i in 0..m * n {
                assert!((c2[i] - want[i]).abs() < 1e-4, "nt {m}x{n}x{k} at {i}");
            }
        }
    }
}
