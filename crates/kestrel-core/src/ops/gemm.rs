//! Gemm and MatMul.

use super::binary::{broadcast_shape, broadcast_strides, for_each_broadcast};
use super::{req, InferInput, Unary};
use crate::{bail, Fact, Result, Tensor};

/// Gemm attributes: `Y = alpha * op(A) * op(B) + beta * C`.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
    /// Activation applied to Y (set by the fusion pass).
    pub activation: Option<Unary>,
}

impl Default for GemmAttrs {
    fn default() -> Self {
        GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
            activation: None,
        }
    }
}

/// `(M, K, N)` of a Gemm from the shapes of A and B.
pub fn gemm_dims(a: &GemmAttrs, sa: &[usize], sb: &[usize]) -> Result<(usize, usize, usize)> {
    if sa.len() != 2 || sb.len() != 2 {
        bail!("Gemm needs 2-D A and B, got {sa:?} and {sb:?}");
    }
    let (m, k) = if a.trans_a {
        (sa[1], sa[0])
    } else {
        (sa[0], sa[1])
    };
    let (k2, n) = if a.trans_b {
        (sb[1], sb[0])
    } else {
        (sb[0], sb[1])
    };
    if k != k2 {
        bail!("Gemm inner dimensions differ: A {sa:?}, B {sb:?}");
    }
    Ok((m, k, n))
}

pub(crate) fn infer_gemm(a: &GemmAttrs, inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let fa = req(inputs, 0)?.fact;
    let fb = req(inputs, 1)?.fact;
    let (m, _, n) = gemm_dims(a, &fa.shape, &fb.shape)?;
    if let Some(c) = inputs.get(2).copied().flatten() {
        let s = broadcast_shape(&c.fact.shape, &[m, n])?;
        if s != [m, n] {
            bail!("Gemm C {:?} does not broadcast to [{m}, {n}]", c.fact.shape);
        }
    }
    Ok(vec![Fact::new(fa.dtype, vec![m, n])])
}

/// Reference Gemm.
pub fn eval_gemm(a: &GemmAttrs, ta: &Tensor, tb: &Tensor, tc: Option<&Tensor>) -> Result<Tensor> {
    let (m, k, n) = gemm_dims(a, ta.shape(), tb.shape())?;
    let av = ta.as_f32()?;
    let bv = tb.as_f32()?;
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k {
                let x = if a.trans_a {
                    av[p * m + i]
                } else {
                    av[i * k + p]
                };
                let w = if a.trans_b {
                    bv[j * k + p]
                } else {
                    bv[p * n + j]
                };
                acc += x * w;
            }
            y[i * n + j] = a.alpha * acc;
        }
    }
    if let Some(c) = tc {
        if a.beta != 0.0 {
            let cv = c.as_f32()?;
            let sc = broadcast_strides(c.shape(), &[m, n]);
            let mut idx = 0;
            for_each_broadcast(&[m, n], &[n, 1], &sc, |_, ic| {
                y[idx] += a.beta * cv[ic];
                idx += 1;
            });
        }
    }
    if let Some(act) = &a.activation {
        act.apply_slice(&mut y);
    }
    Tensor::from_vec(vec![m, n], y)
}

/// Output shape of numpy matmul, with the batch shape and `(M, K, N)`.
pub fn matmul_shape(sa: &[usize], sb: &[usize]) -> Result<(Vec<usize>, usize, usize, usize)> {
    if sa.is_empty() || sb.is_empty() {
        bail!("MatMul inputs must have rank >= 1");
    }
    let a2: Vec<usize> = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.to_vec()
    };
    let b2: Vec<usize> = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        bail!("MatMul inner dimensions differ: {sa:?} x {sb:?}");
    }
    let batch = broadcast_shape(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    let mut out = batch.clone();
    if sa.len() > 1 {
        out.push(m);
    }
    if sb.len() > 1 {
        out.push(n);
    }
    Ok((out, m, k, n))
}

pub(crate) fn infer_matmul(inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let fa = req(inputs, 0)?.fact;
    let fb = req(inputs, 1)?.fact;
    let (out, ..) = matmul_shape(&fa.shape, &fb.shape)?;
    Ok(vec![Fact::new(fa.dtype, out)])
}

/// Reference MatMul (numpy semantics, batch dims broadcast).
pub fn eval_matmul(ta: &Tensor, tb: &Tensor) -> Result<Tensor> {
    let (out, m, k, n) = matmul_shape(ta.shape(), tb.shape())?;
    let sa = ta.shape();
    let sb = tb.shape();
    let ba: Vec<usize> = if sa.len() > 2 {
        sa[..sa.len() - 2].to_vec()
    } else {
        vec![]
    };
    let bb: Vec<usize> = if sb.len() > 2 {
        sb[..sb.len() - 2].to_vec()
    } else {
        vec![]
    };
    let batch = broadcast_shape(&ba, &bb)?;
    let stride_a = broadcast_strides(&ba, &batch);
    let stride_b = broadcast_strides(&bb, &batch);
    let av = ta.as_f32()?;
    let bv = tb.as_f32()?;
    let mut y = Vec::with_capacity(crate::checked_numel(&out)?);
    for_each_broadcast(&batch, &stride_a, &stride_b, |ia, ib| {
        let a0 = ia * m * k;
        let b0 = ib * k * n;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f32;
                for p in 0..k {
                    acc += av[a0 + i * k + p] * bv[b0 + p * n + j];
                }
                y.push(acc);
            }
        }
    });
    Tensor::from_vec(out, y)
}
