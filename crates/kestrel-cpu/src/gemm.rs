//! Single-precision matrix products used by convolution and fully connected layers.
//! Row-major throughout. Work is split across the current rayon pool.

use crate::simd::{axpy, axpy4, dot};
use rayon::prelude::*;

/// Columns of C processed per block so that the B panel and C rows stay in cache.
const NB: usize = 512;

/// `C (m×n) = A (m×k) · B (k×n)`, overwriting C.
pub fn sgemm_nn(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    let c = &mut c[..m * n];
    c.par_chunks_mut(4 * n).enumerate().for_each(|(q, cq)| {
        let i0 = q * 4;
        let rows = cq.len() / n.max(1);
        for j0 in (0..n).step_by(NB) {
            let j1 = (j0 + NB).min(n);
            for r in 0..rows {
                cq[r * n + j0..r * n + j1].fill(0.0);
            }
            if rows == 4 {
                for p in 0..k {
                    let coef = [
                        a[i0 * k + p],
                        a[(i0 + 1) * k + p],
                        a[(i0 + 2) * k + p],
                        a[(i0 + 3) * k + p],
                    ];
                    let (c0, rest) = cq.split_at_mut(n);
                    let (c1, rest) = rest.split_at_mut(n);
                    let (c2, c3) = rest.split_at_mut(n);
                    axpy4(
                        coef,
                        &b[p * n + j0..p * n + j1],
                        [
                            &mut c0[j0..j1],
                            &mut c1[j0..j1],
                            &mut c2[j0..j1],
                            &mut c3[j0..j1],
                        ],
                    );
                }
            } else {
                for r in 0..rows {
                    for p in 0..k {
                        axpy(
                            a[(i0 + r) * k + p],
                            &b[p * n + j0..p * n + j1],
                            &mut cq[r * n + j0..r * n + j1],
                        );
                    }
                }
            }
        }
    });
}

/// `C (m×n) = A (m×k) · Bᵀ` where `bt` is `n×k` row-major (each output is a dot product of two
/// contiguous rows). Used for fully connected layers with pre-transposed weights.
pub fn sgemm_nt(m: usize, n: usize, k: usize, a: &[f32], bt: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && bt.len() >= k * n && c.len() >= m * n);
    let c = &mut c[..m * n];
    if m == 1 {
        c.par_chunks_mut(64).enumerate().for_each(|(q, cs)| {
            for (j, out) in cs.iter_mut().enumerate() {
                let col = q * 64 + j;
                *out = dot(&a[..k], &bt[col * k..(col + 1) * k]);
            }
        });
    } else {
        c.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            for (j, out) in row.iter_mut().enumerate() {
                *out = dot(&a[i * k..(i + 1) * k], &bt[j * k..(j + 1) * k]);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
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
            let mut c = vec![f32::NAN; m * n];
            sgemm_nn(m, n, k, &a, &b, &mut c);
            let mut bt = vec![0f32; n * k];
            for p in 0..k {
                for j in 0..n {
                    bt[j * k + p] = b[p * n + j];
                }
            }
            let mut c2 = vec![f32::NAN; m * n];
            sgemm_nt(m, n, k, &a, &bt, &mut c2);
            for i in 0..m * n {
                assert!((c[i] - want[i]).abs() < 1e-4, "nn {m}x{n}x{k} at {i}");
                assert!((c2[i] - want[i]).abs() < 1e-4, "nt {m}x{n}x{k} at {i}");
            }
        }
    }
}
