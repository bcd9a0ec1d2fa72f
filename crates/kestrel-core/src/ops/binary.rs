//! Elementwise binary ops with numpy broadcasting.

use super::{req, InferInput};
use crate::{bail, DType, Element, Fact, Result, Tensor};

/// Elementwise binary operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// Output is bool.
    Equal,
}

impl BinaryOp {
    pub fn name(&self) -> &'static str {
        match self {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
            BinaryOp::Equal => "Equal",
        }
    }

    /// The op on two f32 values.
    #[inline]
    pub fn apply_f32(&self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Equal => (a == b) as u8 as f32,
        }
    }
}

/// numpy broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            bail!("shapes {a:?} and {b:?} do not broadcast");
        };
    }
    Ok(out)
}

/// Strides (in elements) for reading a tensor of shape `s` as if it had shape `out` (0 along
/// broadcast dimensions). `s` must broadcast to `out`.
pub fn broadcast_strides(s: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let own = crate::strides_of(s);
    (0..r)
        .map(|i| {
            if i + s.len() < r {
                0
            } else {
                let j = i + s.len() - r;
                if s[j] == 1 && out[i] != 1 {
                    0
                } else {
                    own[j]
                }
            }
        })
        .collect()
}

/// Calls `f(offset_a, offset_b)` for every element of `out` in row-major order.
pub fn for_each_broadcast(
    out: &[usize],
    sa: &[usize],
    sb: &[usize],
    mut f: impl FnMut(usize, usize),
) {
    let n: usize = out.iter().product();
    if n == 0 {
        return;
    }
    let r = out.len();
    if r == 0 {
        f(0, 0);
        return;
    }
    let mut idx = vec![0usize; r];
    let (mut oa, mut ob) = (0usize, 0usize);
    let inner = out[r - 1];
    let (ia, ib) = (sa[r - 1], sb[r - 1]);
    let outer = n / inner;
    for _ in 0..outer {
        for k in 0..inner {
            f(oa + k * ia, ob + k * ib);
        }
        // advance the outer index (dimensions 0..r-1)
        let mut d = r - 1;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < out[d] {
                break;
            }
            oa -= sa[d] * out[d];
            ob -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
}

pub(crate) fn infer_binary(op: BinaryOp, inputs: &[Option<InferInput>]) -> Result<Vec<Fact>> {
    let a = req(inputs, 0)?.fact;
    let b = req(inputs, 1)?.fact;
    if a.dtype != b.dtype {
        bail!(
            "{} inputs have different types {} and {}",
            op.name(),
            a.dtype,
            b.dtype
        );
    }
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let dt = if op == BinaryOp::Equal {
        DType::Bool
    } else {
        a.dtype
    };
    if op != BinaryOp::Equal && matches!(a.dtype, DType::Bool | DType::F16 | DType::BF16) {
        bail!("{} on {} tensors is not supported", op.name(), a.dtype);
    }
    Ok(vec![Fact::new(dt, shape)])
}

fn apply_generic<T: Element, U: Element>(
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(T, T) -> U,
) -> Result<Tensor> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let av = a.as_slice::<T>()?;
    let bv = b.as_slice::<T>()?;
    let n = crate::checked_numel(&shape)?;
    let mut out = Vec::with_capacity(n);
    if a.shape() == b.shape() {
        out.extend(av.iter().zip(bv).map(|(&x, &y)| f(x, y)));
    } else {
        let sa = broadcast_strides(a.shape(), &shape);
        let sb = broadcast_strides(b.shape(), &shape);
        for_each_broadcast(&shape, &sa, &sb, |i, j| out.push(f(av[i], bv[j])));
    }
    Tensor::from_vec(shape, out)
}

macro_rules! int_arith {
    ($op:expr, $a:expr, $b:expr, $t:ty) => {
        match $op {
            BinaryOp::Add => apply_generic::<$t, $t>($a, $b, |x, y| x.wrapping_add(y)),
            BinaryOp::Sub => apply_generic::<$t, $t>($a, $b, |x, y| x.wrapping_sub(y)),
            BinaryOp::Mul => apply_generic::<$t, $t>($a, $b, |x, y| x.wrapping_mul(y)),
            BinaryOp::Div => {
                apply_generic::<$t, $t>($a, $b, |x, y| if y == 0 { 0 } else { x.wrapping_div(y) })
            }
            BinaryOp::Equal => apply_generic::<$t, bool>($a, $b, |x, y| x == y),
        }
    };
}

/// Reference evaluation. Integer division by zero gives 0 (ONNX leaves it undefined).
pub fn eval_binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        bail!(
            "{} inputs have different types {} and {}",
            op.name(),
            a.dtype(),
            b.dtype()
        );
    }
    match a.dtype() {
        DType::F32 => match op {
            BinaryOp::Equal => apply_generic::<f32, bool>(a, b, |x, y| x == y),
            _ => apply_generic::<f32, f32>(a, b, |x, y| op.apply_f32(x, y)),
        },
        DType::F64 => match op {
            BinaryOp::Add => apply_generic::<f64, f64>(a, b, |x, y| x + y),
            BinaryOp::Sub => apply_generic::<f64, f64>(a, b, |x, y| x - y),
            BinaryOp::Mul => apply_generic::<f64, f64>(a, b, |x, y| x * y),
            BinaryOp::Div => apply_generic::<f64, f64>(a, b, |x, y| x / y),
            BinaryOp::Equal => apply_generic::<f64, bool>(a, b, |x, y| x == y),
        },
        DType::I64 => int_arith!(op, a, b, i64),
        DType::I32 => int_arith!(op, a, b, i32),
        DType::I16 => int_arith!(op, a, b, i16),
        DType::I8 => int_arith!(op, a, b, i8),
        DType::U64 => int_arith!(op, a, b, u64),
        DType::U32 => int_arith!(op, a, b, u32),
        DType::U16 => int_arith!(op, a, b, u16),
        DType::U8 => int_arith!(op, a, b, u8),
        DType::Bool if op == BinaryOp::Equal => apply_generic::<bool, bool>(a, b, |x, y| x == y),
        DType::F16 if op == BinaryOp::Equal => {
            apply_generic::<half::f16, bool>(a, b, |x, y| x == y)
        }
        dt => bail!("{} on {dt} tensors is not supported", op.name()),
    }
}
