//! MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool.

use super::conv::{window_output, AutoPad};
use crate::{bail, Fact, Result, Tensor};

/// Attributes of MaxPool and AveragePool. Empty `strides`/`dilations`/`pads` mean 1, 1, 0.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PoolAttrs {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
    /// AveragePool only: padded positions count in the divisor.
    pub count_include_pad: bool,
}

/// Max or average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

/// A resolved pooling window geometry, spatial dims normalised to `[D, H, W]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    pub batch: usize,
    pub channels: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub dilation: [usize; 3],
    pub pad_begin: [usize; 3],
    pub pad_end: [usize; 3],
    pub output: [usize; 3],
    pub spatial_rank: usize,
}

impl PoolGeometry {
    pub fn output_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch, self.channels];
        s.extend_from_slice(&self.output[3 - self.spatial_rank..]);
        s
    }
}

fn pad3(v: &[usize], fill: usize) -> [usize; 3] {
    let mut a = [fill; 3];
    a[3 - v.len()..].copy_from_slice(v);
    a
}

/// Resolves the pooling geometry for input shape `x`.
pub fn pool_geometry(a: &PoolAttrs, x: &[usize]) -> Result<PoolGeometry> {
    if x.len() < 3 || x.len() > 5 {
        bail!("pooling input must have rank 3 to 5, got {x:?}");
    }
    let nsp = x.len() - 2;
    if a.kernel_shape.len() != nsp {
        bail!(
            "kernel_shape {:?} does not match input rank {}",
            a.kernel_shape,
            x.len()
        );
    }
    let get = |v: &Vec<usize>, n: usize, d: usize| -> Result<Vec<usize>> {
        if v.is_empty() {
            Ok(vec![d; n])
        } else if v.len() == n {
            Ok(v.clone())
        } else {
            bail!("attribute has {} values, expected {n}", v.len())
        }
    };
    let strides = get(&a.strides, nsp, 1)?;
    let dil = get(&a.dilations, nsp, 1)?;
    let pads = get(&a.pads, 2 * nsp, 0)?;
    let (mut pb, mut pe, mut out) = (vec![], vec![], vec![]);
    for i in 0..nsp {
        let (b, e, o) = window_output(
            x[2 + i],
            a.kernel_shape[i],
            strides[i],
            dil[i],
            (pads[i], pads[nsp + i]),
            a.auto_pad,
            a.ceil_mode,
        )?;
        pb.push(b);
        pe.push(e);
        out.push(o);
    }
    Ok(PoolGeometry {
        batch: x[0],
        channels: x[1],
        input: pad3(&x[2..], 1),
        kernel: pad3(&a.kernel_shape, 1),
        stride: pad3(&strides, 1),
        dilation: pad3(&dil, 1),
        pad_begin: pad3(&pb, 0),
        pad_end: pad3(&pe, 0),
        output: pad3(&out, 1),
        spatial_rank: nsp,
    })
}

pub(crate) fn infer_pool(a: &PoolAttrs, x: &Fact) -> Result<Vec<Fact>> {
    let g = pool_geometry(a, &x.shape)?;
    Ok(vec![Fact::new(x.dtype, g.output_shape())])
}

pub(crate) fn infer_global(x: &Fact) -> Result<Vec<Fact>> {
    if x.shape.len() < 3 {
        bail!("global pooling needs rank >= 3, got {:?}", x.shape);
    }
    let mut s = x.shape.clone();
    for d in &mut s[2..] {
        *d = 1;
    }
    Ok(vec![Fact::new(x.dtype, s)])
}

/// Taps of one window along one axis: the in-range input positions and the divisor
/// contribution when padding counts.
fn window_taps(o: usize, i: usize, g: &PoolGeometry) -> (Vec<usize>, usize) {
    let start = (o * g.stride[i]) as isize - g.pad_begin[i] as isize;
    let end_limit = (g.input[i] + g.pad_end[i]) as isize;
    let mut taps = Vec::new();
    let mut padded_count = 0;
    for k in 0..g.kernel[i] {
        let p = start + (k * g.dilation[i]) as isize;
        if p >= end_limit {
            break;
        }
        padded_count += 1;
        if p >= 0 && p < g.input[i] as isize {
            taps.push(p as usize);
        }
    }
    (taps, padded_count)
}

/// Reference pooling. Windows entirely in padding give -inf (max) or 0 (average).
pub fn eval_pool_geometry(
    g: &PoolGeometry,
    x: &Tensor,
    kind: PoolKind,
    count_include_pad: bool,
) -> Result<Tensor> {
    let xs = x.as_f32()?;
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let mut out = Vec::with_capacity(g.batch * g.channels * od * oh * ow);
    let tz: Vec<_> = (0..od).map(|o| window_taps(o, 0, g)).collect();
    let ty: Vec<_> = (0..oh).map(|o| window_taps(o, 1, g)).collect();
    let tx: Vec<_> = (0..ow).map(|o| window_taps(o, 2, g)).collect();
    for nc in 0..g.batch * g.channels {
        let base = nc * id * ih * iw;
        for (zs, zc) in &tz {
            for (ys, yc) in &ty {
                for (xs_, xc) in &tx {
                    let mut acc = match kind {
                        PoolKind::Max => f32::NEG_INFINITY,
                        PoolKind::Average => 0.0,
                    };
                    let mut nan = false;
                    for &z in zs {
                        for &y in ys {
                            for &xx in xs_ {
                                let v = xs[base + (z * ih + y) * iw + xx];
                                match kind {
                                    PoolKind::Max => {
                                        if v.is_nan() {
                                            nan = true;
                                        } else if v > acc {
                                            acc = v;
                                        }
                                    }
                                    PoolKind::Average => acc += v,
                                }
                            }
                        }
                    }
                    let v = match kind {
                        PoolKind::Max if nan => f32::NAN,
                        PoolKind::Max => acc,
                        PoolKind::Average => {
                            let n = if count_include_pad {
                                zc * yc * xc
                            } else {
                                zs.len() * ys.len() * xs_.len()
                            };
                            if n == 0 {
                                0.0
                            } else {
                                acc / n as f32
                            }
                        }
                    };
                    out.push(v);
                }
            }
        }
    }
    Tensor::from_vec(g.output_shape(), out)
}

/// Reference MaxPool / AveragePool.
pub fn eval_pool(a: &PoolAttrs, x: &Tensor, kind: PoolKind) -> Result<Tensor> {
    let g = pool_geometry(a, x.shape())?;
    eval_pool_geometry(&g, x, kind, a.count_include_pad)
}

/// Reference global pooling over all spatial positions.
pub fn eval_global(x: &Tensor, kind: PoolKind) -> Result<Tensor> {
    let f = infer_global(&super::fact_of(x))?;
    let xs = x.as_f32()?;
    let nc = x.shape()[0] * x.shape()[1];
    let plane: usize = x.shape()[2..].iter().product();
    let out: Vec<f32> = (0..nc)
        .map(|i| {
            let s = &xs[i * plane..(i + 1) * plane];
            match kind {
                PoolKind::Average => s.iter().sum::<f32>() / plane.max(1) as f32,
                PoolKind::Max => s.iter().copied().fold(f32::NEG_INFINITY, |a, v| {
                    if v.is_nan() || a.is_nan() {
                        f32::NAN
                    } else {
                        a.max(v)
                    }
                }),
            }
        })
        .collect();
    Tensor::from_vec(f[0].shape.clone(), out)
}
