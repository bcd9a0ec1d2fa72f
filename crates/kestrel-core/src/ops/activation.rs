//! Elementwise unary functions (activations and math), Clip and PRelu.

use super::binary::{broadcast_shape, broadcast_strides, for_each_broadcast};
use crate::{bail, Element, Result, Tensor};

/// An elementwise f32 → f32 function. Also used as the activation fused into Conv and Gemm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Tanh,
    Exp,
    Sqrt,
    /// Clip with constant bounds (from a Clip whose min/max inputs are constants).
    Clip {
        min: f32,
        max: f32,
    },
}

impl Unary {
    pub fn name(&self) -> &'static str {
        match self {
            Unary::Relu => "Relu",
            Unary::LeakyRelu { .. } => "LeakyRelu",
            Unary::Sigmoid => "Sigmoid",
            Unary::HardSigmoid { .. } => "HardSigmoid",
            Unary::HardSwish => "HardSwish",
            Unary::Tanh => "Tanh",
            Unary::Exp => "Exp",
            Unary::Sqrt => "Sqrt",
            Unary::Clip { .. } => "Clip",
        }
    }

    /// The function on one value. NaN propagates as IEEE says (Relu(NaN) = NaN).
    #[inline]
    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Unary::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Unary::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Unary::Sigmoid => {
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            Unary::HardSigmoid { alpha, beta } => clamp_nan(alpha * x + beta, 0.0, 1.0),
            Unary::HardSwish => x * clamp_nan(x / 6.0 + 0.5, 0.0, 1.0),
            Unary::Tanh => x.tanh(),
            Unary::Exp => x.exp(),
            Unary::Sqrt => x.sqrt(),
            Unary::Clip { min, max } => clamp_nan(x, min, max),
        }
    }

    /// Applies the function in place.
    pub fn apply_slice(&self, xs: &mut [f32]) {
        for x in xs {
            *x = self.apply(*x);
        }
    }

    /// Reference evaluation (f32 only).
    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.as_f32()?.to_vec();
        self.apply_slice(&mut y);
        Tensor::from_vec(x.shape().to_vec(), y)
    }
}

/// `min(max(x, lo), hi)` that keeps NaN (and gives `hi` when `lo > hi`, as ONNX Clip does).
#[inline]
fn clamp_nan(x: f32, lo: f32, hi: f32) -> f32 {
    let v = if x < lo { lo } else { x };
    if v > hi {
        hi
    } else {
        v
    }
}

/// Clip with optional bound inputs; works on f32 and the integer types.
#[allow(clippy::bool_comparison)]
pub fn eval_clip(x: &Tensor, min: Option<&Tensor>, max: Option<&Tensor>) -> Result<Tensor> {
    let lo = min.map(|t| t.scalar_f64()).transpose()?;
    let hi = max.map(|t| t.scalar_f64()).transpose()?;
    crate::with_dtype!(x.dtype(), T => {
        let lo = lo.map(T::from_f64);
        let hi = hi.map(T::from_f64);
        let v: Vec<T> = x.as_slice::<T>()?.iter().map(|&v| {
            let mut v = v;
            if let Some(l) = lo { if v < l { v = l; } }
            if let Some(h) = hi { if v > h { v = h; } }
            v
        }).collect();
        Tensor::from_vec(x.shape().to_vec(), v)
    })
}

/// PRelu: `x < 0 ? slope * x : x`, slope broadcast to x (numpy rules).
pub fn eval_prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let shape = broadcast_shape(x.shape(), slope.shape())?;
    if shape != x.shape() {
        bail!(
            "PRelu slope {:?} does not broadcast to X {:?}",
            slope.shape(),
            x.shape()
        );
    }
    let xs = x.as_f32()?;
    let ss = slope.as_f32()?;
    let sa = broadcast_strides(x.shape(), &shape);
    let sb = broadcast_strides(slope.shape(), &shape);
    let mut out = vec![0f32; xs.len()];
    let mut k = 0;
    for_each_broadcast(&shape, &sa, &sb, |ia, ib| {
        let v = xs[ia];
        out[k] = if v < 0.0 { ss[ib] * v } else { v };
        k += 1;
    });
    Tensor::from_vec(shape, out)
}
