//! Reductions: ArgMax, TopK, ReduceMean.

use super::{norm_axis, req, InferInput};
use crate::{bail, with_dtype, DType, Element, Fact, Result, Tensor};

/// `(outer, dim, inner)` sizes around axis `a`.
fn split_at_axis(shape: &[usize], a: usize) -> (usize, usize, usize) {
    (
        shape[..a].iter().product(),
        shape[a],
        shape[a + 1..].iter().product(),
    )
}

pub(crate) fn infer_argmax(axis: i64, keepdims: bool, x: &Fact) -> Result<Vec<Fact>> {
    let a = norm_axis(axis, x.shape.len())?;
    let mut s = x.shape.clone();
    if keepdims {
        s[a] = 1;
    } else {
        s.remove(a);
    }
    Ok(vec![Fact::new(DType::I64, s)])
}

fn argmax_t<T: Element>(x: &Tensor, a: usize, last: bool) -> Result<Vec<i64>> {
    let xs = x.as_slice::<T>()?;
    let (outer, d, inner) = split_at_axis(x.shape(), a);
    if d == 0 {
        bail!("ArgMax over an empty axis");
    }
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0;
            for k in 1..d {
                let v = xs[(o * d + k) * inner + i];
                let b = xs[(o * d + best) * inner + i];
                if v > b || (last && v == b) {
                    best = k;
                }
            }
            out.push(best as i64);
        }
    }
    Ok(out)
}

/// Reference ArgMax.
pub fn eval_argmax(axis: i64, keepdims: bool, last: bool, x: &Tensor) -> Result<Tensor> {
    let a = norm_axis(axis, x.rank())?;
    let f = infer_argmax(axis, keepdims, &super::fact_of(x))?;
    let v = with_dtype!(x.dtype(), T => argmax_t::<T>(x, a, last)?);
    Tensor::from_vec(f[0].shape.clone(), v)
}

pub(crate) fn infer_topk(axis: i64, inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let k = super::movement::const_input(inputs, 1, "K")?.scalar_f64()? as i64;
    let a = norm_axis(axis, x.shape.len())?;
    if k < 0 || k as usize > x.shape[a] {
        bail!("TopK k={k} exceeds axis size {}", x.shape[a]);
    }
    let mut s = x.shape.clone();
    s[a] = k as usize;
    Ok(vec![
        Fact::new(x.dtype, s.clone()),
        Fact::new(DType::I64, s),
    ])
}

/// Reference TopK. Ties keep the lower index first, as ONNX requires.
pub fn eval_topk(
    axis: i64,
    largest: bool,
    _sorted: bool,
    x: &Tensor,
    k: &Tensor,
) -> Result<Vec<Tensor>> {
    let a = norm_axis(axis, x.rank())?;
    let k = k.scalar_f64()? as i64;
    let (outer, d, inner) = split_at_axis(x.shape(), a);
    if k < 0 || k as usize > d {
        bail!("TopK k={k} exceeds axis size {d}");
    }
    let k = k as usize;
    let mut s = x.shape().to_vec();
    s[a] = k;
    let vals = x.to_f64_vec();
    let mut idx_out = vec![0i64; outer * k * inner];
    for o in 0..outer {
        for i in 0..inner {
            let mut order: Vec<usize> = (0..d).collect();
            let at = |j: usize| vals[(o * d + j) * inner + i];
            order.sort_by(|&p, &q| {
                let (vp, vq) = (at(p), at(q));
                let c = if largest {
                    vq.partial_cmp(&vp)
                } else {
                    vp.partial_cmp(&vq)
                };
                c.unwrap_or(std::cmp::Ordering::Equal).then(p.cmp(&q))
            });
            for (j, &src) in order[..k].iter().enumerate() {
                idx_out[(o * k + j) * inner + i] = src as i64;
            }
        }
    }
    let indices = Tensor::from_vec(s.clone(), idx_out)?;
    let values = super::movement::eval_gather_along(x, a, &indices)?;
    Ok(vec![values, indices])
}

fn reduce_axes(rank: usize, axes: Option<&Tensor>, noop: bool) -> Result<Option<Vec<usize>>> {
    let ax = axes.map(|t| t.to_i64_vec()).unwrap_or_default();
    if ax.is_empty() {
        return Ok(if noop {
            None
        } else {
            Some((0..rank).collect())
        });
    }
    let mut v: Vec<usize> = ax
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Result<_>>()?;
    v.sort();
    v.dedup();
    Ok(Some(v))
}

fn reduced_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    let mut s = Vec::new();
    for (i, &d) in shape.iter().enumerate() {
        if axes.contains(&i) {
            if keepdims {
                s.push(1);
            }
        } else {
            s.push(d);
        }
    }
    s
}

pub(crate) fn infer_reduce_mean(
    keepdims: bool,
    noop: bool,
    inputs: &[Option<InferInput>],
) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let axes = match inputs.get(1).copied().flatten() {
        Some(_) => Some(super::movement::const_input(inputs, 1, "axes")?),
        None => None,
    };
    let shape = match reduce_axes(x.shape.len(), axes, noop)? {
        Some(ax) => reduced_shape(&x.shape, &ax, keepdims),
        None => x.shape.clone(),
    };
    Ok(vec![Fact::new(x.dtype, shape)])
}

/// Reference ReduceMean.
pub fn eval_reduce_mean(
    keepdims: bool,
    noop: bool,
    x: &Tensor,
    axes: Option<&Tensor>,
) -> Result<Tensor> {
    let Some(ax) = reduce_axes(x.rank(), axes, noop)? else {
        return Ok(x.clone());
    };
    let xs = x.as_f32()?;
    let shape = x.shape();
    let full_keep = reduced_shape(shape, &ax, true);
    let n_out = full_keep.iter().product::<usize>();
    let count: usize = ax.iter().map(|&a| shape[a]).product();
    let mut sums = vec![0f64; n_out];
    let out_strides = crate::strides_of(&full_keep);
    let r = shape.len();
    let mut idx = vec![0usize; r];
    for &v in xs {
        let mut o = 0;
        for a in 0..r {
            if !ax.contains(&a) {
                o += idx[a] * out_strides[a];
            }
        }
        sums[o] += v as f64;
        for a in (0..r).rev() {
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    let out: Vec<f32> = sums
        .iter()
        .map(|&s| {
            if count == 0 {
                f32::NAN
            } else {
                (s / count as f64) as f32
            }
        })
        .collect();
    Tensor::from_vec(reduced_shape(shape, &ax, keepdims), out)
}
