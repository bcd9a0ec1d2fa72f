//! Data movement and shape ops: Concat, Split, Slice, Reshape, Flatten, Transpose, Squeeze,
//! Unsqueeze, Pad, ConstantOfShape, Shape, Gather, GatherND.
//!
//! All of them are generic over the element type.

use super::{norm_axis, req, InferInput};
use crate::{bail, strides_of, with_dtype, Element, Fact, Result, Tensor};

/// The constant value of input `i`; errors when it is missing or not a constant.
pub(crate) fn const_input<'a>(
    inputs: &'a [Option<InferInput<'a>>],
    i: usize,
    what: &str,
) -> Result<&'a Tensor> {
    match req(inputs, i)?.value {
        Some(v) => Ok(v),
        None => {
            bail!("input '{what}' must be a constant (data-dependent shapes are not supported)")
        }
    }
}

/// Converts i64 dims to usize, refusing negative ones.
pub fn shape_vec(v: &[i64]) -> Result<Vec<usize>> {
    let s: Result<Vec<usize>> = v
        .iter()
        .map(|&d| {
            if d < 0 {
                bail!("negative dimension {d} in shape {v:?}")
            } else {
                Ok(d as usize)
            }
        })
        .collect();
    let s = s?;
    crate::checked_numel(&s)?;
    Ok(s)
}

/// A shape given by constant input `i`.
pub(crate) fn shape_from_input(
    inputs: &[Option<InferInput>],
    i: usize,
    what: &str,
) -> Result<Vec<usize>> {
    shape_vec(&const_input(inputs, i, what)?.to_i64_vec())
}

/// Shape op's `[start, end)` clamped to the rank.
pub fn shape_range(rank: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let r = rank as i64;
    let clamp = |v: i64| -> usize {
        let v = if v < 0 { v + r } else { v };
        v.clamp(0, r) as usize
    };
    let s = clamp(start);
    let e = clamp(end.unwrap_or(r));
    (s, e.max(s))
}

// ---------------------------------------------------------------- Concat

pub(crate) fn infer_concat(axis: i64, inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let facts: Vec<&Fact> = inputs.iter().flatten().map(|i| i.fact).collect();
    let first = facts
        .first()
        .ok_or_else(|| crate::Error::invalid("Concat has no inputs"))?;
    let a = norm_axis(axis, first.shape.len())?;
    let mut shape = first.shape.clone();
    shape[a] = 0;
    for f in &facts {
        if f.shape.len() != shape.len() || f.dtype != first.dtype {
            bail!(
                "Concat inputs differ in rank or type: {:?} vs {:?}",
                first.shape,
                f.shape
            );
        }
        for (d, (&x, &y)) in f.shape.iter().zip(&first.shape).enumerate() {
            if d != a && x != y {
                bail!(
                    "Concat inputs {:?} and {:?} differ off axis {a}",
                    first.shape,
                    f.shape
                );
            }
        }
        shape[a] += f.shape[a];
    }
    Ok(vec![Fact::new(first.dtype, shape)])
}

fn concat_t<T: Element>(a: usize, ts: &[&Tensor], out_shape: &[usize]) -> Result<Vec<T>> {
    let outer: usize = out_shape[..a].iter().product();
    let mut out = Vec::with_capacity(crate::checked_numel(out_shape)?);
    let slices: Vec<&[T]> = ts
        .iter()
        .map(|t| t.as_slice::<T>())
        .collect::<Result<_>>()?;
    let chunk: Vec<usize> = ts.iter().map(|t| t.shape()[a..].iter().product()).collect();
    for o in 0..outer {
        for (s, &c) in slices.iter().zip(&chunk) {
            out.extend_from_slice(&s[o * c..(o + 1) * c]);
        }
    }
    Ok(out)
}

/// Reference Concat.
pub fn eval_concat(axis: i64, ts: &[&Tensor]) -> Result<Tensor> {
    let facts: Vec<Fact> = ts.iter().map(|t| super::fact_of(t)).collect();
    let ii: Vec<Option<InferInput>> = facts
        .iter()
        .map(|f| {
            Some(InferInput {
                fact: f,
                value: None,
            })
        })
        .collect();
    let shape = infer_concat(axis, &ii)?.remove(0).shape;
    let a = norm_axis(axis, shape.len())?;
    with_dtype!(ts[0].dtype(), T => Tensor::from_vec(shape.clone(), concat_t::<T>(a, ts, &shape)?))
}

// ---------------------------------------------------------------- Split

fn split_sizes(
    dim: usize,
    split: Option<&Tensor>,
    num_outputs: Option<usize>,
    n_outputs: usize,
) -> Result<Vec<usize>> {
    if let Some(s) = split {
        let v = shape_vec(&s.to_i64_vec())?;
        if v.iter().sum::<usize>() != dim {
            bail!("Split sizes {v:?} do not sum to {dim}");
        }
        return Ok(v);
    }
    let n = num_outputs.unwrap_or(n_outputs).max(1);
    if num_outputs.is_none() && !dim.is_multiple_of(n) {
        bail!("cannot split {dim} into {n} equal parts");
    }
    let part = dim.div_ceil(n);
    Ok((0..n)
        .map(|i| part.min(dim.saturating_sub(i * part)))
        .collect())
}

pub(crate) fn infer_split(
    axis: i64,
    num_outputs: Option<usize>,
    inputs: &[Option<InferInput>],
    n_outputs: usize,
) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let a = norm_axis(axis, x.shape.len())?;
    let split = match inputs.get(1).copied().flatten() {
        Some(_) => Some(const_input(inputs, 1, "split")?),
        None => None,
    };
    let sizes = split_sizes(x.shape[a], split, num_outputs, n_outputs)?;
    Ok(sizes
        .iter()
        .map(|&s| {
            let mut sh = x.shape.clone();
            sh[a] = s;
            Fact::new(x.dtype, sh)
        })
        .collect())
}

/// Reference Split.
pub fn eval_split(
    axis: i64,
    num_outputs: Option<usize>,
    x: &Tensor,
    split: Option<&Tensor>,
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let a = norm_axis(axis, x.rank())?;
    let sizes = split_sizes(x.shape()[a], split, num_outputs, n_outputs)?;
    let mut start = 0i64;
    let mut outs = Vec::new();
    for s in sizes {
        let mut starts = vec![0i64; x.rank()];
        let mut ends: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
        starts[a] = start;
        ends[a] = start + s as i64;
        let steps = vec![1i64; x.rank()];
        outs.push(slice_with(x, &starts, &ends, &steps)?);
        start += s as i64;
    }
    Ok(outs)
}

// ---------------------------------------------------------------- Slice

/// Per-axis starts, ends, steps, and the output shape.
type SliceParams = (Vec<i64>, Vec<i64>, Vec<i64>, Vec<usize>);

/// Per-axis `(start, end, step)` for every axis of `shape` (full range for untouched axes),
/// with ONNX clamping rules applied. Returns also the output shape.
fn slice_params(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<SliceParams> {
    let r = shape.len();
    let mut s: Vec<i64> = vec![0; r];
    let mut e: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let mut st: Vec<i64> = vec![1; r];
    if starts.len() != ends.len() {
        bail!("Slice starts and ends differ in length");
    }
    let default_axes: Vec<i64> = (0..starts.len() as i64).collect();
    let axes = axes.unwrap_or(&default_axes);
    if axes.len() != starts.len() {
        bail!("Slice axes and starts differ in length");
    }
    let mut seen = vec![false; r];
    for (i, &ax) in axes.iter().enumerate() {
        let a = norm_axis(ax, r)?;
        if seen[a] {
            bail!("Slice axis {a} repeated");
        }
        seen[a] = true;
        let d = i64::try_from(shape[a]).map_err(|_| {
            crate::Error::invalid(format!("Slice: dimension {} is too large", shape[a]))
        })?;
        let step = steps.map_or(1, |v| v.get(i).copied().unwrap_or(1));
        if step == 0 {
            bail!("Slice step must not be 0");
        }
        let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (mut b, mut en) = (fix(starts[i]), fix(ends[i]));
        if step > 0 {
            b = b.clamp(0, d);
            en = en.clamp(0, d);
        } else {
            // `max(..).min(..)`, not `clamp`: an empty axis (d = 0) has the empty range [0, -1]
            b = b.max(0).min(d - 1);
            en = en.clamp(-1, d - 1);
        }
        s[a] = b;
        e[a] = en;
        st[a] = step;
    }
    let out: Vec<usize> = (0..r)
        .map(|a| {
            // i128: steps may be as large as i64 allows
            let (b, en, step) = (s[a] as i128, e[a] as i128, st[a] as i128);
            let n = if step > 0 {
                (en - b + step - 1).div_euclid(step)
            } else {
                (b - en + (-step) - 1).div_euclid(-step)
            };
            n.max(0) as usize
        })
        .collect();
    Ok((s, e, st, out))
}

fn slice_t<T: Element>(x: &Tensor, s: &[i64], st: &[i64], out_shape: &[usize]) -> Result<Vec<T>> {
    let xs = x.as_slice::<T>()?;
    let strides = strides_of(x.shape());
    let n = crate::checked_numel(out_shape)?;
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    let r = out_shape.len();
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let mut off = 0i64;
        for a in 0..r {
            off += (s[a] + idx[a] as i64 * st[a]) * strides[a] as i64;
        }
        out.push(xs[off as usize]);
        for a in (0..r).rev() {
            idx[a] += 1;
            if idx[a] < out_shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Ok(out)
}

fn slice_with(x: &Tensor, starts: &[i64], ends: &[i64], steps: &[i64]) -> Result<Tensor> {
    let (s, _, st, out) = slice_params(x.shape(), starts, ends, None, Some(steps))?;
    with_dtype!(x.dtype(), T => Tensor::from_vec(out.clone(), slice_t::<T>(x, &s, &st, &out)?))
}

pub(crate) fn infer_slice(inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let starts = const_input(inputs, 1, "starts")?.to_i64_vec();
    let ends = const_input(inputs, 2, "ends")?.to_i64_vec();
    let axes = match inputs.get(3).copied().flatten() {
        Some(_) => Some(const_input(inputs, 3, "axes")?.to_i64_vec()),
        None => None,
    };
    let steps = match inputs.get(4).copied().flatten() {
        Some(_) => Some(const_input(inputs, 4, "steps")?.to_i64_vec()),
        None => None,
    };
    let (.., out) = slice_params(&x.shape, &starts, &ends, axes.as_deref(), steps.as_deref())?;
    Ok(vec![Fact::new(x.dtype, out)])
}

/// Reference Slice (inputs: data, starts, ends, axes?, steps?).
pub fn eval_slice(inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = super::reqt(inputs, 0)?;
    let starts = super::reqt(inputs, 1)?.to_i64_vec();
    let ends = super::reqt(inputs, 2)?.to_i64_vec();
    let axes = super::opt(inputs, 3).map(|t| t.to_i64_vec());
    let steps = super::opt(inputs, 4).map(|t| t.to_i64_vec());
    let (s, _, st, out) =
        slice_params(x.shape(), &starts, &ends, axes.as_deref(), steps.as_deref())?;
    with_dtype!(x.dtype(), T => Tensor::from_vec(out.clone(), slice_t::<T>(x, &s, &st, &out)?))
}

// ---------------------------------------------------------------- Reshape family

/// Target shape of Reshape: `0` copies the input dim (unless `allowzero`), `-1` is inferred.
pub fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let n: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer_at.is_some() {
                    bail!("Reshape shape {spec:?} has more than one -1");
                }
                infer_at = Some(i);
                out.push(1);
            }
            0 if !allowzero => match input.get(i) {
                Some(&v) => out.push(v),
                None => bail!("Reshape shape {spec:?} copies dim {i} beyond input rank"),
            },
            d if d < 0 => bail!("Reshape shape {spec:?} has invalid dim {d}"),
            d => out.push(d as usize),
        }
    }
    let known = crate::checked_numel(&out)?;
    if let Some(i) = infer_at {
        if known == 0 || !n.is_multiple_of(known) {
            bail!("cannot reshape {input:?} to {spec:?}");
        }
        out[i] = n / known;
    } else if known != n {
        bail!("cannot reshape {input:?} ({n} elements) to {spec:?}");
    }
    Ok(out)
}

pub(crate) fn infer_reshape(allowzero: bool, inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let spec = const_input(inputs, 1, "shape")?.to_i64_vec();
    Ok(vec![Fact::new(
        x.dtype,
        reshape_target(&x.shape, &spec, allowzero)?,
    )])
}

pub(crate) fn infer_flatten(axis: i64, x: &Fact) -> Result<Vec<Fact>> {
    let r = x.shape.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        bail!("Flatten axis {axis} out of range for rank {r}");
    }
    let a = a as usize;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a..].iter().product();
    Ok(vec![Fact::new(x.dtype, vec![outer, inner])])
}

fn axes_input(inputs: &[Option<InferInput>], i: usize) -> Result<Option<Vec<i64>>> {
    match inputs.get(i).copied().flatten() {
        Some(_) => Ok(Some(const_input(inputs, i, "axes")?.to_i64_vec())),
        None => Ok(None),
    }
}

pub(crate) fn infer_squeeze(inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let axes = axes_input(inputs, 1)?;
    let r = x.shape.len();
    let drop: Vec<usize> = match axes {
        Some(ax) => {
            let v: Vec<usize> = ax.iter().map(|&a| norm_axis(a, r)).collect::<Result<_>>()?;
            for &a in &v {
                if x.shape[a] != 1 {
                    bail!("Squeeze axis {a} has size {}, not 1", x.shape[a]);
                }
            }
            v
        }
        None => (0..r).filter(|&a| x.shape[a] == 1).collect(),
    };
    let shape = (0..r)
        .filter(|a| !drop.contains(a))
        .map(|a| x.shape[a])
        .collect();
    Ok(vec![Fact::new(x.dtype, shape)])
}

pub(crate) fn infer_unsqueeze(inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let axes =
        axes_input(inputs, 1)?.ok_or_else(|| crate::Error::invalid("Unsqueeze needs axes"))?;
    let r = x.shape.len() + axes.len();
    let mut ins: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, r))
        .collect::<Result<_>>()?;
    ins.sort();
    if ins.windows(2).any(|w| w[0] == w[1]) {
        bail!("Unsqueeze axes {axes:?} repeat");
    }
    let mut src = x.shape.iter();
    let shape = (0..r)
        .map(|a| {
            if ins.contains(&a) {
                1
            } else {
                *src.next().unwrap_or(&1)
            }
        })
        .collect();
    Ok(vec![Fact::new(x.dtype, shape)])
}

// ---------------------------------------------------------------- Transpose

fn resolve_perm(perm: Option<&[usize]>, r: usize) -> Result<Vec<usize>> {
    let p: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..r).rev().collect(),
    };
    let mut seen = vec![false; r];
    if p.len() != r
        || p.iter()
            .any(|&a| a >= r || std::mem::replace(&mut seen[a], true))
    {
        bail!("Transpose perm {p:?} is not a permutation of rank {r}");
    }
    Ok(p)
}

pub(crate) fn infer_transpose(perm: Option<&[usize]>, x: &Fact) -> Result<Vec<Fact>> {
    let p = resolve_perm(perm, x.shape.len())?;
    Ok(vec![Fact::new(
        x.dtype,
        p.iter().map(|&a| x.shape[a]).collect(),
    )])
}

fn transpose_t<T: Element>(x: &Tensor, p: &[usize], out_shape: &[usize]) -> Result<Vec<T>> {
    let xs = x.as_slice::<T>()?;
    let in_strides = strides_of(x.shape());
    let st: Vec<usize> = p.iter().map(|&a| in_strides[a]).collect();
    let n = xs.len();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    let r = out_shape.len();
    let mut idx = vec![0usize; r];
    let mut off = 0usize;
    for _ in 0..n {
        out.push(xs[off]);
        for a in (0..r).rev() {
            idx[a] += 1;
            off += st[a];
            if idx[a] < out_shape[a] {
                break;
            }
            off -= st[a] * out_shape[a];
            idx[a] = 0;
        }
    }
    Ok(out)
}

/// Reference Transpose.
pub fn eval_transpose(perm: Option<&[usize]>, x: &Tensor) -> Result<Tensor> {
    let p = resolve_perm(perm, x.rank())?;
    let shape: Vec<usize> = p.iter().map(|&a| x.shape()[a]).collect();
    with_dtype!(x.dtype(), T => Tensor::from_vec(shape.clone(), transpose_t::<T>(x, &p, &shape)?))
}

// ---------------------------------------------------------------- Pad

/// Pad mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PadMode {
    #[default]
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// Full per-axis `(begin, end)` pads (may be negative) from the pads and optional axes inputs.
fn pad_amounts(rank: usize, pads: &[i64], axes: Option<&[i64]>) -> Result<Vec<(i64, i64)>> {
    let default_axes: Vec<i64> = (0..rank as i64).collect();
    let axes = axes.unwrap_or(&default_axes);
    if pads.len() != 2 * axes.len() {
        bail!("Pad has {} pads for {} axes", pads.len(), axes.len());
    }
    let mut out = vec![(0i64, 0i64); rank];
    for (i, &a) in axes.iter().enumerate() {
        let a = norm_axis(a, rank)?;
        out[a] = (pads[i], pads[axes.len() + i]);
    }
    Ok(out)
}

fn padded_shape(shape: &[usize], amounts: &[(i64, i64)]) -> Result<Vec<usize>> {
    shape
        .iter()
        .zip(amounts)
        .map(|(&d, &(b, e))| {
            let n = (d as i128) + (b as i128) + (e as i128);
            if n < 0 {
                bail!("Pad removes more than the dimension {d}");
            }
            usize::try_from(n)
                .map_err(|_| crate::Error::TooLarge(format!("Pad makes dimension {d} into {n}")))
        })
        .collect()
}

pub(crate) fn infer_pad(inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let pads = const_input(inputs, 1, "pads")?.to_i64_vec();
    let axes = axes_input(inputs, 3)?;
    let amounts = pad_amounts(x.shape.len(), &pads, axes.as_deref())?;
    Ok(vec![Fact::new(x.dtype, padded_shape(&x.shape, &amounts)?)])
}

/// Source index along one axis for output position `o`, or `None` for the constant fill.
fn pad_source(o: i64, begin: i64, d: i64, mode: PadMode) -> Option<i64> {
    let i = o - begin;
    if i >= 0 && i < d {
        return Some(i);
    }
    if d == 0 {
        return None;
    }
    match mode {
        PadMode::Constant => None,
        PadMode::Edge => Some(i.clamp(0, d - 1)),
        PadMode::Wrap => Some(i.rem_euclid(d)),
        PadMode::Reflect => {
            if d == 1 {
                return Some(0);
            }
            let period = 2 * (d - 1);
            let m = i.rem_euclid(period);
            Some(if m < d { m } else { period - m })
        }
    }
}

fn pad_t<T: Element>(
    x: &Tensor,
    amounts: &[(i64, i64)],
    out_shape: &[usize],
    mode: PadMode,
    fill: T,
) -> Result<Vec<T>> {
    let xs = x.as_slice::<T>()?;
    let st = strides_of(x.shape());
    let n = crate::checked_numel(out_shape)?;
    let r = out_shape.len();
    let maps: Vec<Vec<Option<i64>>> = (0..r)
        .map(|a| {
            (0..out_shape[a] as i64)
                .map(|o| pad_source(o, amounts[a].0, x.shape()[a] as i64, mode))
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    for _ in 0..n {
        let mut off = Some(0i64);
        for a in 0..r {
            off = match (off, maps[a][idx[a]]) {
                (Some(o), Some(s)) => Some(o + s * st[a] as i64),
                _ => None,
            };
        }
        out.push(off.map_or(fill, |o| xs[o as usize]));
        for a in (0..r).rev() {
            idx[a] += 1;
            if idx[a] < out_shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Ok(out)
}

/// Reference Pad (inputs: data, pads, constant_value?, axes?).
pub fn eval_pad(mode: PadMode, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = super::reqt(inputs, 0)?;
    let pads = super::reqt(inputs, 1)?.to_i64_vec();
    let axes = super::opt(inputs, 3).map(|t| t.to_i64_vec());
    let amounts = pad_amounts(x.rank(), &pads, axes.as_deref())?;
    let shape = padded_shape(x.shape(), &amounts)?;
    let cv = match super::opt(inputs, 2) {
        Some(t) if !t.is_empty() => t.scalar_f64()?,
        _ => 0.0,
    };
    with_dtype!(x.dtype(), T => Tensor::from_vec(shape.clone(), pad_t::<T>(x, &amounts, &shape, mode, T::from_f64(cv))?))
}

// ---------------------------------------------------------------- ConstantOfShape

/// ConstantOfShape: a tensor of `shape` filled with the single value of `value`.
pub fn eval_constant_of_shape(value: &Tensor, shape: Vec<usize>) -> Result<Tensor> {
    if value.len() != 1 {
        bail!("ConstantOfShape value must have one element");
    }
    with_dtype!(value.dtype(), T => Tensor::full(shape, value.as_slice::<T>()?[0]))
}

// ---------------------------------------------------------------- Gather

pub(crate) fn infer_gather(axis: i64, inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let idx = req(inputs, 1)?.fact;
    let a = norm_axis(axis, x.shape.len())?;
    let mut shape = x.shape[..a].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&x.shape[a + 1..]);
    Ok(vec![Fact::new(x.dtype, shape)])
}

fn gather_t<T: Element>(x: &Tensor, a: usize, idx: &[i64]) -> Result<Vec<T>> {
    let xs = x.as_slice::<T>()?;
    let d = x.shape()[a] as i64;
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let j = if i < 0 { i + d } else { i };
            if j < 0 || j >= d {
                bail!("Gather index {i} is out of range for dimension {d}");
            }
            let start = (o * d as usize + j as usize) * inner;
            out.extend_from_slice(&xs[start..start + inner]);
        }
    }
    Ok(out)
}

/// Reference Gather.
pub fn eval_gather(axis: i64, x: &Tensor, indices: &Tensor) -> Result<Tensor> {
    let a = norm_axis(axis, x.rank())?;
    let idx = indices.to_i64_vec();
    let mut shape = x.shape()[..a].to_vec();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&x.shape()[a + 1..]);
    with_dtype!(x.dtype(), T => Tensor::from_vec(shape.clone(), gather_t::<T>(x, a, &idx)?))
}

pub(crate) fn infer_gather_nd(
    batch_dims: usize,
    inputs: &[Option<InferInput>],
) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let idx = req(inputs, 1)?.fact;
    let shape = gather_nd_shape(batch_dims, &x.shape, &idx.shape)?;
    Ok(vec![Fact::new(x.dtype, shape)])
}

fn gather_nd_shape(b: usize, data: &[usize], idx: &[usize]) -> Result<Vec<usize>> {
    let q = idx.len();
    if q == 0 || b >= q || b > data.len() {
        bail!("GatherND shapes data {data:?}, indices {idx:?}, batch_dims {b} are invalid");
    }
    let k = idx[q - 1];
    if k + b > data.len() || data[..b] != idx[..b] {
        bail!("GatherND shapes data {data:?}, indices {idx:?}, batch_dims {b} are invalid");
    }
    let mut shape = idx[..q - 1].to_vec();
    shape.extend_from_slice(&data[b + k..]);
    Ok(shape)
}

/// Reference GatherND.
pub fn eval_gather_nd(b: usize, x: &Tensor, indices: &Tensor) -> Result<Tensor> {
    let shape = gather_nd_shape(b, x.shape(), indices.shape())?;
    let idx = indices.to_i64_vec();
    let q = indices.rank();
    let k = indices.shape()[q - 1];
    let batch: usize = x.shape()[..b].iter().product();
    let per_batch_idx: usize = indices.shape()[b..q - 1].iter().product();
    let slice: usize = x.shape()[b + k..].iter().product();
    let data_batch: usize = x.shape()[b..].iter().product();
    let st = strides_of(&x.shape()[b..]);
    let mut offsets = Vec::with_capacity(batch * per_batch_idx);
    for bi in 0..batch {
        for j in 0..per_batch_idx {
            let tuple = &idx[(bi * per_batch_idx + j) * k..][..k];
            let mut off = bi * data_batch;
            for (t, &v) in tuple.iter().enumerate() {
                let d = x.shape()[b + t] as i64;
                let v = if v < 0 { v + d } else { v };
                if v < 0 || v >= d {
                    bail!("GatherND index out of range for dimension {d}");
                }
                off += v as usize * st[t];
            }
            offsets.push(off);
        }
    }
    with_dtype!(x.dtype(), T => {
        let xs = x.as_slice::<T>()?;
        let mut out: Vec<T> = Vec::with_capacity(offsets.len() * slice);
        for &o in &offsets {
            out.extend_from_slice(&xs[o..o + slice]);
        }
        Tensor::from_vec(shape.clone(), out)
    })
}

/// Gathers along axis `a` with an index tensor of the same rank as `x` (GatherElements
/// semantics); used by TopK.
pub fn eval_gather_along(x: &Tensor, a: usize, indices: &Tensor) -> Result<Tensor> {
    let idx = indices.to_i64_vec();
    let s = indices.shape();
    let outer: usize = s[..a].iter().product();
    let k = s[a];
    let inner: usize = s[a + 1..].iter().product();
    let d = x.shape()[a];
    with_dtype!(x.dtype(), T => {
        let xs = x.as_slice::<T>()?;
        let mut out: Vec<T> = Vec::with_capacity(idx.len());
        for o in 0..outer {
            for j in 0..k {
                for i in 0..inner {
                    let src = idx[(o * k + j) * inner + i] as usize;
                    out.push(xs[(o * d + src) * inner + i]);
                }
            }
        }
        Tensor::from_vec(s.to_vec(), out)
    })
}
