//! BatchNormalization (inference) and Softmax.

use super::norm_axis;
use crate::{bail, Result, Tensor};

/// Per-channel scale and shift equivalent to inference-mode batch normalisation:
/// `y = x * a + b` with `a = scale / sqrt(var + eps)`, `b = bias - mean * a`.
pub fn batch_norm_affine(
    epsilon: f32,
    scale: &[f32],
    bias: &[f32],
    mean: &[f32],
    var: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let a: Vec<f32> = scale
        .iter()
        .zip(var)
        .map(|(&s, &v)| s / (v + epsilon).sqrt())
        .collect();
    let b = bias
        .iter()
        .zip(mean)
        .zip(&a)
        .map(|((&b, &m), &a)| b - m * a)
        .collect();
    (a, b)
}

/// Reference BatchNormalization over axis 1.
pub fn eval_batch_norm(
    epsilon: f32,
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    mean: &Tensor,
    var: &Tensor,
) -> Result<Tensor> {
    let s = x.shape();
    if s.len() < 2 {
        bail!("BatchNormalization needs rank >= 2, got {s:?}");
    }
    let c = s[1];
    for (name, t) in [("scale", scale), ("B", bias), ("mean", mean), ("var", var)] {
        if t.len() != c {
            bail!(
                "BatchNormalization {name} has {} values, expected {c}",
                t.len()
            );
        }
    }
    let (a, b) = batch_norm_affine(
        epsilon,
        scale.as_f32()?,
        bias.as_f32()?,
        mean.as_f32()?,
        var.as_f32()?,
    );
    let plane: usize = s[2..].iter().product();
    let mut y = x.as_f32()?.to_vec();
    for (i, chunk) in y.chunks_mut(plane.max(1)).enumerate() {
        let ch = i % c;
        for v in chunk {
            *v = *v * a[ch] + b[ch];
        }
    }
    Tensor::from_vec(s.to_vec(), y)
}

/// Softmax of each row of length `n` in `data`, in place; a row of -inf gives NaN as in IEEE.
pub fn softmax_rows(data: &mut [f32], inner: usize, n: usize) {
    // layout: [outer, n, inner]
    let outer = data.len() / (n * inner).max(1);
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| o * n * inner + k * inner + i;
            let mut m = f32::NEG_INFINITY;
            for k in 0..n {
                m = m.max(data[at(k)]);
            }
            let mut sum = 0.0;
            for k in 0..n {
                let e = (data[at(k)] - m).exp();
                data[at(k)] = e;
                sum += e;
            }
            for k in 0..n {
                data[at(k)] /= sum;
            }
        }
    }
}

/// Reference Softmax. `legacy` (opset < 13): the input is seen as 2-D
/// `[prod(dims[..axis]), prod(dims[axis..])]` and each row is normalised.
pub fn eval_softmax(axis: i64, legacy: bool, x: &Tensor) -> Result<Tensor> {
    let s = x.shape();
    let mut y = x.as_f32()?.to_vec();
    if s.is_empty() {
        return Tensor::from_vec(vec![], vec![1.0]);
    }
    let a = norm_axis(axis, s.len())?;
    if legacy {
        let n: usize = s[a..].iter().product();
        softmax_rows(&mut y, 1, n);
    } else {
        let inner: usize = s[a + 1..].iter().product();
        softmax_rows(&mut y, inner, s[a]);
    }
    Tensor::from_vec(s.to_vec(), y)
}
