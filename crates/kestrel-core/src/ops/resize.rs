//! Resize: nearest, linear and cubic, every ONNX coordinate transformation mode.
//!
//! Resampling is separable: each resized axis is processed in turn, and every output position
//! along it is described by a list of `(source index, weight)` taps (or the extrapolation fill).

use super::{norm_axis, req, InferInput};
use crate::{bail, Fact, Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResizeMode {
    #[default]
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CoordMode {
    #[default]
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NearestMode {
    #[default]
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AspectPolicy {
    #[default]
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Resize attributes (opset 10 to 19).
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coord: CoordMode,
    pub nearest_mode: NearestMode,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub antialias: bool,
    pub axes: Option<Vec<i64>>,
    pub keep_aspect_ratio_policy: AspectPolicy,
}

impl Default for ResizeAttrs {
    fn default() -> Self {
        ResizeAttrs {
            mode: ResizeMode::Nearest,
            coord: CoordMode::HalfPixel,
            nearest_mode: NearestMode::RoundPreferFloor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            axes: None,
            keep_aspect_ratio_policy: AspectPolicy::Stretch,
        }
    }
}

/// Resolved plan: per axis, output size, scale, and roi `(start, end)`.
struct ResizePlan {
    out: Vec<usize>,
    scales: Vec<f32>,
    roi: Vec<(f32, f32)>,
}

fn non_empty(t: Option<&Tensor>) -> Option<&Tensor> {
    t.filter(|t| !t.is_empty())
}

fn plan(
    a: &ResizeAttrs,
    shape: &[usize],
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> Result<ResizePlan> {
    let r = shape.len();
    let axes: Vec<usize> = match &a.axes {
        Some(ax) => ax.iter().map(|&x| norm_axis(x, r)).collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    let mut out = shape.to_vec();
    let mut sc = vec![1f32; r];
    let mut rois = vec![(0f32, 1f32); r];
    if let Some(roi) = non_empty(roi) {
        let v = roi.to_f64_vec();
        if v.len() != 2 * axes.len() {
            bail!("Resize roi has {} values for {} axes", v.len(), axes.len());
        }
        for (i, &ax) in axes.iter().enumerate() {
            rois[ax] = (v[i] as f32, v[axes.len() + i] as f32);
        }
    }
    match (non_empty(scales), non_empty(sizes)) {
        (Some(_), Some(_)) => bail!("Resize takes scales or sizes, not both"),
        (None, None) => bail!("Resize needs scales or sizes"),
        (Some(s), None) => {
            let v = s.to_f64_vec();
            if v.len() != axes.len() {
                bail!("Resize has {} scales for {} axes", v.len(), axes.len());
            }
            for (i, &ax) in axes.iter().enumerate() {
                if v[i] <= 0.0 {
                    bail!("Resize scale {} must be positive", v[i]);
                }
                sc[ax] = v[i] as f32;
                out[ax] = (shape[ax] as f64 * v[i] as f32 as f64).floor() as usize;
            }
        }
        (None, Some(s)) => {
            let v = s.to_i64_vec();
            if v.len() != axes.len() || v.iter().any(|&d| d < 0) {
                bail!("Resize sizes {v:?} do not match axes {axes:?}");
            }
            let ratio = |i: usize| v[i] as f32 / shape[axes[i]].max(1) as f32;
            match a.keep_aspect_ratio_policy {
                AspectPolicy::Stretch => {
                    for (i, &ax) in axes.iter().enumerate() {
                        out[ax] = v[i] as usize;
                        sc[ax] = ratio(i);
                    }
                }
                p => {
                    let rs = (0..axes.len()).map(ratio);
                    let s = if p == AspectPolicy::NotLarger {
                        rs.fold(f32::INFINITY, f32::min)
                    } else {
                        rs.fold(0.0, f32::max)
                    };
                    for &ax in &axes {
                        sc[ax] = s;
                        out[ax] = (s * shape[ax] as f32 + 0.5).floor() as usize;
                    }
                }
            }
        }
    }
    crate::checked_numel(&out)?;
    if a.antialias && sc.iter().any(|&s| s < 1.0) && a.mode != ResizeMode::Nearest {
        bail!("Resize with antialias=1 while downsampling is not supported");
    }
    Ok(ResizePlan {
        out,
        scales: sc,
        roi: rois,
    })
}

pub(crate) fn infer_resize(a: &ResizeAttrs, inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let get = |i: usize, what: &str| -> Result<Option<&Tensor>> {
        match inputs.get(i).copied().flatten() {
            Some(_) => Ok(Some(super::movement::const_input(inputs, i, what)?)),
            None => Ok(None),
        }
    };
    let p = plan(
        a,
        &x.shape,
        get(1, "roi")?,
        get(2, "scales")?,
        get(3, "sizes")?,
    )?;
    Ok(vec![Fact::new(x.dtype, p.out)])
}

/// The output position `x` mapped to the input coordinate system.
fn source_coord(
    a: &ResizeAttrs,
    x: usize,
    scale: f32,
    len_in: usize,
    len_out: usize,
    roi: (f32, f32),
) -> f32 {
    let x = x as f32;
    let (li, lo) = (len_in as f32, len_out as f32);
    match a.coord {
        CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
        CoordMode::HalfPixelSymmetric => {
            let adj = lo / (scale * li);
            let center = li / 2.0;
            let offset = center * (1.0 - adj);
            offset + (x + 0.5) / scale - 0.5
        }
        CoordMode::PytorchHalfPixel => {
            if len_out > 1 {
                (x + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        CoordMode::AlignCorners => {
            // ONNX uses the unrounded output length (scale * input length)
            let lo = scale * li;
            if len_out == 1 || lo <= 1.0 {
                0.0
            } else {
                x * (li - 1.0) / (lo - 1.0)
            }
        }
        CoordMode::Asymmetric => x / scale,
        CoordMode::TfCropAndResize => {
            if len_out > 1 {
                roi.0 * (li - 1.0) + x * (roi.1 - roi.0) * (li - 1.0) / (lo - 1.0)
            } else {
                0.5 * (roi.0 + roi.1) * (li - 1.0)
            }
        }
    }
}

/// Taps of one output position; `None` means the extrapolation value.
fn taps(a: &ResizeAttrs, c: f32, len_in: usize) -> Option<Vec<(usize, f32)>> {
    let last = len_in as isize - 1;
    if a.coord == CoordMode::TfCropAndResize && (c < 0.0 || c > last as f32) {
        return None;
    }
    let clampi = |i: isize| i.clamp(0, last) as usize;
    match a.mode {
        ResizeMode::Nearest => {
            let f = c.floor();
            let frac = c - f;
            let i = match a.nearest_mode {
                NearestMode::RoundPreferFloor => {
                    if frac == 0.5 {
                        f
                    } else {
                        c.round()
                    }
                }
                NearestMode::RoundPreferCeil => {
                    if frac == 0.5 {
                        f + 1.0
                    } else {
                        c.round()
                    }
                }
                NearestMode::Floor => f,
                NearestMode::Ceil => c.ceil(),
            };
            Some(vec![(clampi(i as isize), 1.0)])
        }
        ResizeMode::Linear => {
            let c = c.clamp(0.0, last as f32);
            let i0 = c.floor() as isize;
            let w = c - i0 as f32;
            Some(vec![(clampi(i0), 1.0 - w), (clampi(i0 + 1), w)])
        }
        ResizeMode::Cubic => {
            let f = c.floor();
            let s = c - f;
            let am = a.cubic_coeff_a;
            let cw = |t: f32| -> f32 {
                let t = t.abs();
                if t <= 1.0 {
                    ((am + 2.0) * t - (am + 3.0)) * t * t + 1.0
                } else if t < 2.0 {
                    ((am * t - 5.0 * am) * t + 8.0 * am) * t - 4.0 * am
                } else {
                    0.0
                }
            };
            let mut v: Vec<(isize, f32)> = (-1..=2)
                .map(|k| (f as isize + k, cw(s - k as f32)))
                .collect();
            if a.exclude_outside {
                v.retain(|&(i, _)| i >= 0 && i <= last);
                let sum: f32 = v.iter().map(|t| t.1).sum();
                for t in &mut v {
                    t.1 /= sum;
                }
            }
            Some(v.into_iter().map(|(i, w)| (clampi(i), w)).collect())
        }
    }
}

/// Resamples axis `ax` of `data` (shape `shape`) to `len_out`.
fn resample_axis(
    a: &ResizeAttrs,
    data: &[f32],
    shape: &[usize],
    ax: usize,
    len_out: usize,
    scale: f32,
    roi: (f32, f32),
) -> Vec<f32> {
    let len_in = shape[ax];
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    let t: Vec<Option<Vec<(usize, f32)>>> = (0..len_out)
        .map(|x| taps(a, source_coord(a, x, scale, len_in, len_out, roi), len_in))
        .collect();
    let mut out = Vec::with_capacity(outer * len_out * inner);
    for o in 0..outer {
        for tp in &t {
            for i in 0..inner {
                out.push(match tp {
                    None => a.extrapolation_value,
                    Some(v) => v
                        .iter()
                        .map(|&(s, w)| w * data[(o * len_in + s) * inner + i])
                        .sum(),
                });
            }
        }
    }
    out
}

/// Reference Resize (inputs: X, roi?, scales?, sizes?).
pub fn eval_resize(a: &ResizeAttrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = super::reqt(inputs, 0)?;
    let p = plan(
        a,
        x.shape(),
        super::opt(inputs, 1),
        super::opt(inputs, 2),
        super::opt(inputs, 3),
    )?;
    let mut shape = x.shape().to_vec();
    let mut data = x.as_f32()?.to_vec();
    for ax in 0..shape.len() {
        let identity =
            p.out[ax] == shape[ax] && p.scales[ax] == 1.0 && a.coord != CoordMode::TfCropAndResize;
        if identity {
            continue;
        }
        data = resample_axis(a, &data, &shape, ax, p.out[ax], p.scales[ax], p.roi[ax]);
        shape[ax] = p.out[ax];
    }
    Tensor::from_vec(shape, data)
}
