//! Factorisations of one weight tensor: leading singular subspaces through the symmetric
//! eigen-decomposition of a Gram matrix (nalgebra), Tucker-2 (HOSVD on the two channel modes)
//! and truncated SVD. All matrices are row-major `f32` slices in, `f64` arithmetic inside.

use nalgebra::{DMatrix, SymmetricEigen};

/// The leading eigenpairs of `A Aᵀ` for a row-major `rows x cols` matrix A: eigenvalues (the
/// squared singular values of A) in decreasing order and the matching eigenvectors as columns of
/// a `rows x rows` matrix.
pub fn left_subspace(a: &[f32], rows: usize, cols: usize) -> (Vec<f64>, DMatrix<f64>) {
    let m = DMatrix::from_fn(rows, cols, |i, j| a[i * cols + j] as f64);
    gram_eigen(&(&m * m.transpose()))
}

/// Eigen-decomposition of a symmetric positive semi-definite matrix, sorted decreasingly.
pub fn gram_eigen(g: &DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
    let n = g.nrows();
    let e = SymmetricEigen::new(g.clone());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| e.eigenvalues[j].total_cmp(&e.eigenvalues[i]));
    let values = order.iter().map(|&i| e.eigenvalues[i].max(0.0)).collect();
    let vectors = DMatrix::from_fn(n, n, |r, c| e.eigenvectors[(r, order[c])]);
    (values, vectors)
}

/// Smallest rank whose eigenvalues hold at least `energy` of the total (1 <= rank <= len).
pub fn rank_for_energy(values: &[f64], energy: f64) -> usize {
    let total: f64 = values.iter().sum();
    if total <= 0.0 {
        return 1;
    }
    let mut acc = 0.0;
    for (i, v) in values.iter().enumerate() {
        acc += v;
        if acc >= energy * total * (1.0 - 1e-12) {
            return i + 1;
        }
    }
    values.len().max(1)
}

/// Mode-1 unfolding of a conv weight `[o, i, k]` (k = kernel volume): rows are input channels.
pub fn unfold_input_mode(w: &[f32], o: usize, i: usize, k: usize) -> Vec<f32> {
    let mut a = vec![0f32; i * o * k];
    for oo in 0..o {
        for ii in 0..i {
            for kk in 0..k {
                a[ii * (o * k) + oo * k + kk] = w[(oo * i + ii) * k + kk];
            }
        }
    }
    a
}

/// The three weights of a Tucker-2 decomposition of `w [o, i, k]` with factor matrices
/// `u_out [o x r_out]` and `u_in [i x r_in]` (orthonormal columns):
/// first `[r_in, i]` (= u_inᵀ), core `[r_out, r_in, k]`, last `[o, r_out]` (= u_out).
pub fn tucker2(
    w: &[f32],
    (o, i, k): (usize, usize, usize),
    u_out: &DMatrix<f64>,
    u_in: &DMatrix<f64>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (r_out, r_in) = (u_out.ncols(), u_in.ncols());
    let first: Vec<f32> = (0..r_in)
        .flat_map(|r| (0..i).map(move |ii| (r, ii)))
        .map(|(r, ii)| u_in[(ii, r)] as f32)
        .collect();
    // t[o][r_in][k] = sum_i W[o,i,k] u_in[i, r_in]
    let mut t = vec![0f64; o * r_in * k];
    for oo in 0..o {
        for ii in 0..i {
            for r in 0..r_in {
                let u = u_in[(ii, r)];
                if u == 0.0 {
                    continue;
                }
                for kk in 0..k {
                    t[(oo * r_in + r) * k + kk] += w[(oo * i + ii) * k + kk] as f64 * u;
                }
            }
        }
    }
    let mut core = vec![0f32; r_out * r_in * k];
    for ro in 0..r_out {
        for oo in 0..o {
            let u = u_out[(oo, ro)];
            for j in 0..r_in * k {
                core[ro * r_in * k + j] += (t[oo * r_in * k + j] * u) as f32;
            }
        }
    }
    let last: Vec<f32> = (0..o)
        .flat_map(|oo| (0..r_out).map(move |r| (oo, r)))
        .map(|(oo, r)| u_out[(oo, r)] as f32)
        .collect();
    (first, core, last)
}

/// Truncated SVD of `w [o, i]` through the left subspace `u [o x r]`: `w ≈ u (uᵀ w)`. Returns
/// (first `[r, i]` = uᵀ w, second `[o, r]` = u).
pub fn svd_pair(w: &[f32], o: usize, i: usize, u: &DMatrix<f64>) -> (Vec<f32>, Vec<f32>) {
    let r = u.ncols();
    let mut first = vec![0f32; r * i];
    for rr in 0..r {
        for oo in 0..o {
            let uv = u[(oo, rr)];
            for ii in 0..i {
                first[rr * i + ii] += (uv * w[oo * i + ii] as f64) as f32;
            }
        }
    }
    let second = (0..o)
        .flat_map(|oo| (0..r).map(move |rr| (oo, rr)))
        .map(|(oo, rr)| u[(oo, rr)] as f32)
        .collect();
    (first, second)
}

/// The first `r` columns of `m`.
pub fn leading(m: &DMatrix<f64>, r: usize) -> DMatrix<f64> {
    m.columns(0, r.clamp(1, m.ncols())).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(o: usize, i: usize, k: usize) -> Vec<f32> {
        (0..o * i * k)
            .map(|x| ((x * 7919 % 101) as f32 / 50.0) - 1.0)
            .collect()
    }

    #[test]
    fn full_rank_tucker2_reproduces_the_weights() {
        let (o, i, k) = (13, 7, 9);
        let w = weights(o, i, k);
        let (_, uo) = left_subspace(&w, o, i * k);
        let (_, ui) = left_subspace(&unfold_input_mode(&w, o, i, k), i, o * k);
        let (first, core, last) = tucker2(&w, (o, i, k), &uo, &ui);
        // rebuild: W'[o,i,k] = sum_ro sum_ri last[o,ro] core[ro,ri,k] first[ri,i]
        let (ro_n, ri_n) = (uo.ncols(), ui.ncols());
        let mut err = 0f32;
        for oo in 0..o {
            for ii in 0..i {
                for kk in 0..k {
                    let mut v = 0f32;
                    for ro in 0..ro_n {
                        for ri in 0..ri_n {
                            v += last[oo * ro_n + ro]
                                * core[(ro * ri_n + ri) * k + kk]
                                * first[ri * i + ii];
                        }
                    }
                    err = err.max((v - w[(oo * i + ii) * k + kk]).abs());
                }
            }
        }
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn energy_ranks_respect_bounds() {
        let v = [4.0, 3.0, 2.0, 1.0];
        assert_eq!(rank_for_energy(&v, 0.0), 1);
        assert_eq!(rank_for_energy(&v, 0.4), 1);
        assert_eq!(rank_for_energy(&v, 0.7), 2);
        assert_eq!(rank_for_energy(&v, 1.0), 4);
        assert_eq!(rank_for_energy(&[0.0, 0.0], 0.9), 1);
        let w = weights(5, 3, 1);
        let (vals, vecs) = left_subspace(&w, 5, 3);
        assert_eq!(vals.len(), 5);
        assert!(vals.windows(2).all(|p| p[0] >= p[1]));
        assert!(vals[3] < 1e-9 && vals[4] < 1e-9, "rank <= 3: {vals:?}");
        let (first, second) = svd_pair(&w, 5, 3, &leading(&vecs, 3));
        for oo in 0..5 {
            for ii in 0..3 {
                let v: f32 = (0..3).map(|r| second[oo * 3 + r] * first[r * 3 + ii]).sum();
                assert!((v - w[oo * 3 + ii]).abs() < 1e-5);
            }
        }
    }
}
