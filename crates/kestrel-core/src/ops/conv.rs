//! Conv and ConvTranspose: attributes, geometry, shape inference and reference kernels.
//!
//! 1-D, 2-D and 3-D convolutions share one implementation: spatial dimensions are normalised to
//! three (missing leading ones have size 1, kernel 1, stride 1, no padding). Backends use
//! [`ConvGeometry`], the fully resolved description of one convolution.

use super::{req, InferInput, Unary};
use crate::{bail, DType, Fact, Result, Tensor};

/// ONNX `auto_pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AutoPad {
    #[default]
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Conv attributes. Empty `strides`/`dilations`/`pads` mean the ONNX defaults (1, 1, 0).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ConvAttrs {
    pub kernel_shape: Option<Vec<usize>>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`.
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
    pub group: usize,
    /// Activation applied to the output (set by the fusion pass).
    pub activation: Option<Unary>,
}

/// ConvTranspose attributes.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ConvTransposeAttrs {
    pub kernel_shape: Option<Vec<usize>>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
    pub output_padding: Vec<usize>,
    pub output_shape: Option<Vec<usize>>,
    pub auto_pad: AutoPad,
    pub group: usize,
}

/// A fully resolved convolution, spatial dimensions normalised to `[D, H, W]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub group: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub dilation: [usize; 3],
    pub pad_begin: [usize; 3],
    pub pad_end: [usize; 3],
    pub output: [usize; 3],
    /// Number of spatial dimensions of the original op (1, 2 or 3).
    pub spatial_rank: usize,
}

impl ConvGeometry {
    /// Output shape `[N, C_out, spatial...]` in the op's own rank.
    pub fn output_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch, self.c_out];
        s.extend_from_slice(&self.output[3 - self.spatial_rank..]);
        s
    }
    /// Input channels per group.
    pub fn c_in_per_group(&self) -> usize {
        self.c_in / self.group
    }
    /// Output channels per group.
    pub fn c_out_per_group(&self) -> usize {
        self.c_out / self.group
    }
    /// True when every group has one input and one output channel... per input channel
    /// (depthwise convolution with channel multiplier 1).
    pub fn is_depthwise(&self) -> bool {
        self.group == self.c_in && self.group == self.c_out && self.group > 1
    }
    /// Kernel volume.
    pub fn kernel_volume(&self) -> usize {
        self.kernel.iter().product()
    }
}

fn attr_or(v: &[usize], n: usize, default: usize) -> Result<Vec<usize>> {
    if v.is_empty() {
        Ok(vec![default; n])
    } else if v.len() == n {
        Ok(v.to_vec())
    } else {
        bail!("attribute has {} values, expected {n}", v.len())
    }
}

fn to3(v: &[usize], fill: usize) -> [usize; 3] {
    let mut a = [fill; 3];
    a[3 - v.len()..].copy_from_slice(v);
    a
}

/// Largest dilated kernel extent and padding accepted (positions).
pub const MAX_WINDOW_EXTENT: usize = 1 << 20;

/// Resolves pads and output size of one spatial dimension for a sliding window op.
/// Returns `(pad_begin, pad_end, output)`.
pub fn window_output(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pads: (usize, usize),
    auto_pad: AutoPad,
    ceil_mode: bool,
) -> Result<(usize, usize, usize)> {
    if stride == 0 || dilation == 0 || kernel == 0 {
        bail!("kernel, stride and dilation must be positive");
    }
    // no real network comes near these; beyond them the padded planes kernels build would not
    // fit in memory (and the arithmetic could overflow)
    let dk = (kernel - 1)
        .checked_mul(dilation)
        .and_then(|v| v.checked_add(1))
        .filter(|&v| v <= MAX_WINDOW_EXTENT)
        .ok_or_else(|| {
            crate::Error::invalid(format!(
                "kernel {kernel} with dilation {dilation} spans more than {MAX_WINDOW_EXTENT} positions"
            ))
        })?;
    if pads.0 > MAX_WINDOW_EXTENT || pads.1 > MAX_WINDOW_EXTENT {
        bail!("pads {pads:?} exceed {MAX_WINDOW_EXTENT}");
    }
    // a stride beyond the padded input only ever places one window: same result as stride 1
    // there, and keeps every later product small
    let padded = input
        .checked_add(pads.0)
        .and_then(|v| v.checked_add(pads.1))
        .ok_or_else(|| {
            crate::Error::invalid(format!("input {input} with pads {pads:?} overflows"))
        })?;
    let stride = stride.min(padded.saturating_add(1));
    match auto_pad {
        AutoPad::NotSet => {
            if padded < dk {
                bail!("window of extent {dk} does not fit padded input of size {padded}");
            }
            let span = padded - dk;
            let mut out = if ceil_mode {
                span.div_ceil(stride) + 1
            } else {
                span / stride + 1
            };
            // the last window must start inside the input or the begin padding
            if ceil_mode && (out - 1) * stride >= input + pads.0 {
                out -= 1;
            }
            Ok((pads.0, pads.1, out))
        }
        AutoPad::Valid => {
            if input < dk {
                bail!("window of extent {dk} does not fit input of size {input}");
            }
            Ok((0, 0, (input - dk) / stride + 1))
        }
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + dk).saturating_sub(input);
            let small = total / 2;
            let big = total - small;
            if auto_pad == AutoPad::SameUpper {
                Ok((small, big, out))
            } else {
                Ok((big, small, out))
            }
        }
    }
}

/// Resolves the geometry of a Conv from the input and weight shapes.
pub fn conv_geometry(a: &ConvAttrs, x: &[usize], w: &[usize]) -> Result<ConvGeometry> {
    if x.len() < 3 || x.len() > 5 {
        bail!("Conv input must have rank 3 to 5, got {x:?}");
    }
    if w.len() != x.len() {
        bail!(
            "Conv weight rank {} differs from input rank {}",
            w.len(),
            x.len()
        );
    }
    let nsp = x.len() - 2;
    let group = a.group.max(1);
    let (c_in, c_out) = (x[1], w[0]);
    if c_in % group != 0 || c_out % group != 0 {
        bail!("channels in {c_in} / out {c_out} are not divisible by group {group}");
    }
    if w[1] * group != c_in {
        bail!(
            "weight {w:?} expects {} input channels, input has {c_in}",
            w[1] * group
        );
    }
    let kernel = match &a.kernel_shape {
        Some(k) if k.as_slice() != &w[2..] => {
            bail!("kernel_shape {k:?} differs from the weight's {:?}", &w[2..])
        }
        _ => w[2..].to_vec(),
    };
    let strides = attr_or(&a.strides, nsp, 1)?;
    let dil = attr_or(&a.dilations, nsp, 1)?;
    let pads = attr_or(&a.pads, 2 * nsp, 0)?;
    let mut out = Vec::new();
    let (mut pb, mut pe) = (Vec::new(), Vec::new());
    for i in 0..nsp {
        let (b, e, o) = window_output(
            x[2 + i],
            kernel[i],
            strides[i],
            dil[i],
            (pads[i], pads[nsp + i]),
            a.auto_pad,
            false,
        )?;
        pb.push(b);
        pe.push(e);
        out.push(o);
    }
    Ok(ConvGeometry {
        batch: x[0],
        c_in,
        c_out,
        group,
        input: to3(&x[2..], 1),
        kernel: to3(&kernel, 1),
        stride: to3(&strides, 1),
        dilation: to3(&dil, 1),
        pad_begin: to3(&pb, 0),
        pad_end: to3(&pe, 0),
        output: to3(&out, 1),
        spatial_rank: nsp,
    })
}

pub(crate) fn infer_conv(a: &ConvAttrs, inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let w = req(inputs, 1)?.fact;
    if x.dtype != DType::F32 && x.dtype != DType::F16 {
        bail!("Conv on {} tensors is not supported", x.dtype);
    }
    let g = conv_geometry(a, &x.shape, &w.shape)?;
    if let Some(b) = inputs.get(2).copied().flatten() {
        if b.fact.numel() != g.c_out {
            bail!(
                "Conv bias has {} values, expected {}",
                b.fact.numel(),
                g.c_out
            );
        }
    }
    Ok(vec![Fact::new(x.dtype, g.output_shape())])
}

/// Reference convolution: direct loops over every output and every kernel tap.
pub fn eval_conv(a: &ConvAttrs, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let g = conv_geometry(a, x.shape(), w.shape())?;
    let xs = x.as_f32()?;
    let ws = w.as_f32()?;
    let bs = b.map(|b| b.as_f32()).transpose()?;
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let (cig, cog) = (g.c_in_per_group(), g.c_out_per_group());
    let mut out = vec![0f32; g.batch * g.c_out * od * oh * ow];
    let mut o = 0;
    for n in 0..g.batch {
        for m in 0..g.c_out {
            let grp = m / cog;
            for z in 0..od {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = bs.map_or(0.0, |b| b[m]);
                        for c in 0..cig {
                            let ci = grp * cig + c;
                            for dz in 0..kd {
                                let iz = (z * g.stride[0] + dz * g.dilation[0]) as isize
                                    - g.pad_begin[0] as isize;
                                if iz < 0 || iz >= id as isize {
                                    continue;
                                }
                                for dy in 0..kh {
                                    let iy = (y * g.stride[1] + dy * g.dilation[1]) as isize
                                        - g.pad_begin[1] as isize;
                                    if iy < 0 || iy >= ih as isize {
                                        continue;
                                    }
                                    for dx in 0..kw {
                                        let ix = (xo * g.stride[2] + dx * g.dilation[2]) as isize
                                            - g.pad_begin[2] as isize;
                                        if ix < 0 || ix >= iw as isize {
                                            continue;
                                        }
                                        let xi = (((n * g.c_in + ci) * id + iz as usize) * ih
                                            + iy as usize)
                                            * iw
                                            + ix as usize;
                                        let wi = (((m * cig + c) * kd + dz) * kh + dy) * kw + dx;
                                        acc += xs[xi] * ws[wi];
                                    }
                                }
                            }
                        }
                        out[o] = match &a.activation {
                            Some(act) => act.apply(acc),
                            None => acc,
                        };
                        o += 1;
                    }
                }
            }
        }
    }
    Tensor::from_vec(g.output_shape(), out)
}

/// Resolved ConvTranspose geometry: `(geometry with output = full output size)`.
/// `pad_begin` is the number of leading positions cropped from the full (unpadded) result.
pub fn conv_transpose_geometry(
    a: &ConvTransposeAttrs,
    x: &[usize],
    w: &[usize],
) -> Result<ConvGeometry> {
    if x.len() < 3 || x.len() > 5 || w.len() != x.len() {
        bail!("ConvTranspose input {x:?} / weight {w:?} ranks are not supported");
    }
    let nsp = x.len() - 2;
    let group = a.group.max(1);
    let c_in = x[1];
    if w[0] != c_in {
        bail!(
            "ConvTranspose weight {w:?} expects {} input channels, input has {c_in}",
            w[0]
        );
    }
    if !c_in.is_multiple_of(group) {
        bail!("input channels {c_in} are not divisible by group {group}");
    }
    let c_out = w[1] * group;
    let kernel = w[2..].to_vec();
    let strides = attr_or(&a.strides, nsp, 1)?;
    let dil = attr_or(&a.dilations, nsp, 1)?;
    let pads = attr_or(&a.pads, 2 * nsp, 0)?;
    let opad = attr_or(&a.output_padding, nsp, 0)?;
    let (mut pb, mut pe, mut out) = (vec![0; nsp], vec![0; nsp], vec![0; nsp]);
    for i in 0..nsp {
        let full = strides[i] * (x[2 + i] - 1) + opad[i] + (kernel[i] - 1) * dil[i] + 1;
        let target = match &a.output_shape {
            Some(os) => {
                let os = &os[os.len().saturating_sub(nsp)..];
                Some(os[i])
            }
            None if matches!(a.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) => {
                Some(x[2 + i] * strides[i])
            }
            None => None,
        };
        match target {
            Some(t) if t > full => {
                // a larger requested output acts as extra output padding at the end
                pb[i] = 0;
                pe[i] = 0;
                out[i] = t;
            }
            Some(t) => {
                let total = full - t;
                let (b, e) = if a.auto_pad == AutoPad::SameUpper {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
                pb[i] = b;
                pe[i] = e;
                out[i] = t;
            }
            None => {
                let (b, e) = if a.auto_pad == AutoPad::Valid {
                    (0, 0)
                } else {
                    (pads[i], pads[nsp + i])
                };
                if b + e > full {
                    bail!("ConvTranspose pads exceed the output size");
                }
                pb[i] = b;
                pe[i] = e;
                out[i] = full - b - e;
            }
        }
    }
    Ok(ConvGeometry {
        batch: x[0],
        c_in,
        c_out,
        group,
        input: to3(&x[2..], 1),
        kernel: to3(&kernel, 1),
        stride: to3(&strides, 1),
        dilation: to3(&dil, 1),
        pad_begin: to3(&pb, 0),
        pad_end: to3(&pe, 0),
        output: to3(&out, 1),
        spatial_rank: nsp,
    })
}

pub(crate) fn infer_conv_transpose(
    a: &ConvTransposeAttrs,
    inputs: &[Option<InferInput>],
) -> Result<Vec<Fact>> {
    let x = req(inputs, 0)?.fact;
    let w = req(inputs, 1)?.fact;
    let g = conv_transpose_geometry(a, &x.shape, &w.shape)?;
    Ok(vec![Fact::new(x.dtype, g.output_shape())])
}

/// Reference transposed convolution: scatter each input value through the kernel.
pub fn eval_conv_transpose(
    a: &ConvTransposeAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor> {
    let g = conv_transpose_geometry(a, x.shape(), w.shape())?;
    let xs = x.as_f32()?;
    let ws = w.as_f32()?;
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let (cig, cog) = (g.c_in_per_group(), g.c_out_per_group());
    let plane = od * oh * ow;
    let mut out = vec![0f32; g.batch * g.c_out * plane];
    if let Some(b) = b {
        let bs = b.as_f32()?;
        for n in 0..g.batch {
            for m in 0..g.c_out {
                out[(n * g.c_out + m) * plane..][..plane].fill(bs[m]);
            }
        }
    }
    for n in 0..g.batch {
        for ci in 0..g.c_in {
            let grp = ci / cig;
            for z in 0..id {
                for y in 0..ih {
                    for xx in 0..iw {
                        let v = xs[(((n * g.c_in + ci) * id + z) * ih + y) * iw + xx];
                        for mo in 0..cog {
                            let m = grp * cog + mo;
                            for dz in 0..kd {
                                let oz = (z * g.stride[0] + dz * g.dilation[0]) as isize
                                    - g.pad_begin[0] as isize;
                                if oz < 0 || oz >= od as isize {
                                    continue;
                                }
                                for dy in 0..kh {
                                    let oy = (y * g.stride[1] + dy * g.dilation[1]) as isize
                                        - g.pad_begin[1] as isize;
                                    if oy < 0 || oy >= oh as isize {
                                        continue;
                                    }
                                    for dx in 0..kw {
                                        let ox = (xx * g.stride[2] + dx * g.dilation[2]) as isize
                                            - g.pad_begin[2] as isize;
                                        if ox < 0 || ox >= ow as isize {
                                            continue;
                                        }
                                        let wi = (((ci * cog + mo) * kd + dz) * kh + dy) * kw + dx;
                                        let oi = (n * g.c_out + m) * plane
                                            + (oz as usize * oh + oy as usize) * ow
                                            + ox as usize;
                                        out[oi] += v * ws[wi];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Tensor::from_vec(g.output_shape(), out)
}
