//! The op set. One enum variant per op, each holding all of its attributes in typed form.
//!
//! Parameters that ONNX moved from attributes to inputs over the opsets (Slice starts, Pad pads,
//! Squeeze axes, Clip bounds, ...) are *always inputs* here: importers turn old-opset attributes
//! into constant inputs, so every op has one form. After [`crate::prepare::prepare`], those inputs
//! are constants and shape inference can read them.
//!
//! For every op this module gives: shape/dtype inference ([`Op::infer`]), the plain reference
//! implementation ([`Op::eval`]) and the cost ([`Op::macs`]). The `match`es are exhaustive: a new
//! variant fails to compile until every one of them handles it.

pub mod activation;
pub mod binary;
pub mod conv;
pub mod gemm;
pub mod movement;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod resize;

pub use activation::Unary;
pub use binary::BinaryOp;
pub use conv::{AutoPad, ConvAttrs, ConvTransposeAttrs};
pub use gemm::GemmAttrs;
pub use movement::PadMode;
pub use pool::PoolAttrs;
pub use resize::ResizeAttrs;

use crate::{bail, DType, Fact, Result, Tensor};

/// What shape inference sees of one input: its fact and, when it is a constant, its value.
#[derive(Clone, Copy, Debug)]
pub struct InferInput<'a> {
    pub fact: &'a Fact,
    pub value: Option<&'a Tensor>,
}

/// Broad family of an op, used by reports (time share per family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpFamily {
    Conv,
    Gemm,
    Pool,
    Elementwise,
    Normalization,
    DataMovement,
    Other,
}

impl OpFamily {
    pub fn name(self) -> &'static str {
        match self {
            OpFamily::Conv => "Conv",
            OpFamily::Gemm => "Gemm",
            OpFamily::Pool => "Pool",
            OpFamily::Elementwise => "Elementwise",
            OpFamily::Normalization => "Normalization",
            OpFamily::DataMovement => "DataMovement",
            OpFamily::Other => "Other",
        }
    }
}

/// An operation with its attributes. See the module docs for the input conventions.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Inputs: X, W, B?. May carry a fused activation.
    Conv(ConvAttrs),
    /// Inputs: X, W, B?.
    ConvTranspose(ConvTransposeAttrs),
    MaxPool(PoolAttrs),
    AveragePool(PoolAttrs),
    GlobalAveragePool,
    GlobalMaxPool,
    /// Inference-mode batch normalisation. Inputs: X, scale, B, mean, var.
    BatchNorm {
        epsilon: f32,
    },
    /// Elementwise unary function (activations, Exp, Sqrt, constant-bound Clip).
    Unary(Unary),
    /// Clip with bounds as inputs: X, min?, max?.
    Clip,
    /// Inputs: X, slope (broadcast to X).
    PRelu,
    /// `legacy`: opset < 13 semantics (coerce to 2-D at `axis`).
    Softmax {
        axis: i64,
        legacy: bool,
    },
    /// Inputs: A, B, C?. May carry a fused activation.
    Gemm(GemmAttrs),
    /// numpy-style matmul with batch broadcasting.
    MatMul,
    /// Elementwise binary op with numpy broadcasting.
    Binary(BinaryOp),
    Concat {
        axis: i64,
    },
    /// Inputs: X, split?. Without `split`, equal parts (the last smaller with `num_outputs`).
    Split {
        axis: i64,
        num_outputs: Option<usize>,
    },
    /// Inputs: data, starts, ends, axes?, steps?.
    Slice,
    /// Inputs: data, shape.
    Reshape {
        allowzero: bool,
    },
    Flatten {
        axis: i64,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    /// Inputs: data, axes?.
    Squeeze,
    /// Inputs: data, axes.
    Unsqueeze,
    /// Inputs: data, pads, constant_value?, axes?.
    Pad {
        mode: PadMode,
    },
    /// Inputs: X, roi?, scales?, sizes?.
    Resize(ResizeAttrs),
    /// Input: shape. Output filled with `value` (a one-element tensor giving dtype and value).
    ConstantOfShape {
        value: Tensor,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// Inputs: data, indices.
    Gather {
        axis: i64,
    },
    /// Inputs: data, indices.
    GatherND {
        batch_dims: usize,
    },
    Cast {
        to: DType,
    },
    Identity,
    /// Inference-mode dropout: output = input; optional second output is an all-true mask.
    Dropout,
    ArgMax {
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    /// Inputs: X, K. Outputs: values, indices (i64).
    TopK {
        axis: i64,
        largest: bool,
        sorted: bool,
    },
    /// Inputs: data, axes?.
    ReduceMean {
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
}

impl Op {
    /// The op's name as used in reports (ONNX op type; fused ops say so).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(a) if a.activation.is_some() => "Conv+Act",
            Op::Conv(_) => "Conv",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool(_) => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Unary(u) => u.name(),
            Op::Clip => "Clip",
            Op::PRelu => "PRelu",
            Op::Softmax { .. } => "Softmax",
            Op::Gemm(a) if a.activation.is_some() => "Gemm+Act",
            Op::Gemm(_) => "Gemm",
            Op::MatMul => "MatMul",
            Op::Binary(b) => b.name(),
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Slice => "Slice",
            Op::Reshape { .. } => "Reshape",
            Op::Flatten { .. } => "Flatten",
            Op::Transpose { .. } => "Transpose",
            Op::Squeeze => "Squeeze",
            Op::Unsqueeze => "Unsqueeze",
            Op::Pad { .. } => "Pad",
            Op::Resize(_) => "Resize",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Shape { .. } => "Shape",
            Op::Gather { .. } => "Gather",
            Op::GatherND { .. } => "GatherND",
            Op::Cast { .. } => "Cast",
            Op::Identity => "Identity",
            Op::Dropout => "Dropout",
            Op::ArgMax { .. } => "ArgMax",
            Op::TopK { .. } => "TopK",
            Op::ReduceMean { .. } => "ReduceMean",
        }
    }

    /// The family used for per-family time shares.
    pub fn family(&self) -> OpFamily {
        match self {
            Op::Conv(_) | Op::ConvTranspose(_) => OpFamily::Conv,
            Op::Gemm(_) | Op::MatMul => OpFamily::Gemm,
            Op::MaxPool(_) | Op::AveragePool(_) | Op::GlobalAveragePool | Op::GlobalMaxPool => {
                OpFamily::Pool
            }
            Op::Unary(_) | Op::Clip | Op::PRelu | Op::Binary(_) | Op::Cast { .. } => {
                OpFamily::Elementwise
            }
            Op::BatchNorm { .. } | Op::Softmax { .. } => OpFamily::Normalization,
            Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice
            | Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Transpose { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Pad { .. }
            | Op::Resize(_)
            | Op::Gather { .. }
            | Op::GatherND { .. }
            | Op::Identity
            | Op::Dropout => OpFamily::DataMovement,
            Op::ConstantOfShape { .. }
            | Op::Shape { .. }
            | Op::ArgMax { .. }
            | Op::TopK { .. }
            | Op::ReduceMean { .. } => OpFamily::Other,
        }
    }

    /// True when input `slot` is a parameter that shapes the output (Reshape's target, Slice's
    /// bounds, Resize's scales, ...) rather than data. Backends need these to be constants;
    /// sessions specialise graph inputs that feed only such slots.
    pub fn is_param_slot(&self, slot: usize) -> bool {
        match self {
            Op::Reshape { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Split { .. }
            | Op::TopK { .. } => slot == 1,
            Op::ReduceMean { .. } => slot == 1,
            Op::Slice | Op::Pad { .. } | Op::Resize(_) | Op::Clip => slot >= 1,
            Op::ConstantOfShape { .. } => slot == 0,
            _ => false,
        }
    }

    /// True for ops whose output is the input's storage under another shape.
    pub fn is_reshape_only(&self) -> bool {
        matches!(
            self,
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze | Op::Identity
        )
    }

    /// Infers the facts of the outputs from those of the inputs. `n_outputs` is how many outputs
    /// the node declares. Value-dependent shapes (Reshape's target, Slice's bounds, ...) need those
    /// inputs to be constants; otherwise an error says which input must be.
    pub fn infer(&self, inputs: &[Option<InferInput>], n_outputs: usize) -> Result<Vec<Fact>> {
        let x = || -> Result<&Fact> { Ok(req(inputs, 0)?.fact) };
        let same = |dt: DType| -> Result<Vec<Fact>> { Ok(vec![Fact::new(dt, x()?.shape.clone())]) };
        match self {
            Op::Conv(a) => conv::infer_conv(a, inputs),
            Op::ConvTranspose(a) => conv::infer_conv_transpose(a, inputs),
            Op::MaxPool(a) | Op::AveragePool(a) => {
                if n_outputs > 1 {
                    bail!("MaxPool's Indices output is not supported");
                }
                pool::infer_pool(a, x()?)
            }
            Op::GlobalAveragePool | Op::GlobalMaxPool => pool::infer_global(x()?),
            Op::BatchNorm { .. } => {
                if n_outputs > 1 {
                    bail!("training-mode BatchNormalization (mean/var outputs) is not supported");
                }
                same(x()?.dtype)
            }
            Op::Unary(_) | Op::Clip | Op::Softmax { .. } | Op::Identity => same(x()?.dtype),
            Op::PRelu => {
                let s = binary::broadcast_shape(&x()?.shape, &req(inputs, 1)?.fact.shape)?;
                Ok(vec![Fact::new(x()?.dtype, s)])
            }
            Op::Dropout => {
                let mut v = same(x()?.dtype)?;
                if n_outputs > 1 {
                    v.push(Fact::new(DType::Bool, x()?.shape.clone()));
                }
                Ok(v)
            }
            Op::Gemm(a) => gemm::infer_gemm(a, inputs),
            Op::MatMul => gemm::infer_matmul(inputs),
            Op::Binary(b) => binary::infer_binary(*b, inputs),
            Op::Concat { axis } => movement::infer_concat(*axis, inputs),
            Op::Split { axis, num_outputs } => {
                movement::infer_split(*axis, *num_outputs, inputs, n_outputs)
            }
            Op::Slice => movement::infer_slice(inputs),
            Op::Reshape { allowzero } => movement::infer_reshape(*allowzero, inputs),
            Op::Flatten { axis } => movement::infer_flatten(*axis, x()?),
            Op::Transpose { perm } => movement::infer_transpose(perm.as_deref(), x()?),
            Op::Squeeze => movement::infer_squeeze(inputs),
            Op::Unsqueeze => movement::infer_unsqueeze(inputs),
            Op::Pad { .. } => movement::infer_pad(inputs),
            Op::Resize(a) => resize::infer_resize(a, inputs),
            Op::ConstantOfShape { value } => {
                let shape = movement::shape_from_input(inputs, 0, "shape")?;
                Ok(vec![Fact::new(value.dtype(), shape)])
            }
            Op::Shape { start, end } => {
                let (s, e) = movement::shape_range(x()?.shape.len(), *start, *end);
                Ok(vec![Fact::new(DType::I64, vec![e - s])])
            }
            Op::Gather { axis } => movement::infer_gather(*axis, inputs),
            Op::GatherND { batch_dims } => movement::infer_gather_nd(*batch_dims, inputs),
            Op::Cast { to } => same(*to),
            Op::ArgMax { axis, keepdims, .. } => reduce::infer_argmax(*axis, *keepdims, x()?),
            Op::TopK { axis, .. } => reduce::infer_topk(*axis, inputs),
            Op::ReduceMean {
                keepdims,
                noop_with_empty_axes,
            } => reduce::infer_reduce_mean(*keepdims, *noop_with_empty_axes, inputs),
        }
    }

    /// Plain reference implementation: straightforward loops, no tiling or SIMD. Every optimised
    /// kernel is tested against this. `n_outputs` is how many outputs the node declares.
    pub fn eval(&self, inputs: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
        let x = || -> Result<&Tensor> { reqt(inputs, 0) };
        let one = |t: Tensor| Ok(vec![t]);
        match self {
            Op::Conv(a) => one(conv::eval_conv(a, x()?, reqt(inputs, 1)?, opt(inputs, 2))?),
            Op::ConvTranspose(a) => one(conv::eval_conv_transpose(
                a,
                x()?,
                reqt(inputs, 1)?,
                opt(inputs, 2),
            )?),
            Op::MaxPool(a) => one(pool::eval_pool(a, x()?, pool::PoolKind::Max)?),
            Op::AveragePool(a) => one(pool::eval_pool(a, x()?, pool::PoolKind::Average)?),
            Op::GlobalAveragePool => one(pool::eval_global(x()?, pool::PoolKind::Average)?),
            Op::GlobalMaxPool => one(pool::eval_global(x()?, pool::PoolKind::Max)?),
            Op::BatchNorm { epsilon } => one(norm::eval_batch_norm(
                *epsilon,
                x()?,
                reqt(inputs, 1)?,
                reqt(inputs, 2)?,
                reqt(inputs, 3)?,
                reqt(inputs, 4)?,
            )?),
            Op::Unary(u) => one(u.eval(x()?)?),
            Op::Clip => one(activation::eval_clip(x()?, opt(inputs, 1), opt(inputs, 2))?),
            Op::PRelu => one(activation::eval_prelu(x()?, reqt(inputs, 1)?)?),
            Op::Softmax { axis, legacy } => one(norm::eval_softmax(*axis, *legacy, x()?)?),
            Op::Gemm(a) => one(gemm::eval_gemm(a, x()?, reqt(inputs, 1)?, opt(inputs, 2))?),
            Op::MatMul => one(gemm::eval_matmul(x()?, reqt(inputs, 1)?)?),
            Op::Binary(b) => one(binary::eval_binary(*b, x()?, reqt(inputs, 1)?)?),
            Op::Concat { axis } => {
                let ts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
                one(movement::eval_concat(*axis, &ts)?)
            }
            Op::Split { axis, num_outputs } => {
                movement::eval_split(*axis, *num_outputs, x()?, opt(inputs, 1), n_outputs)
            }
            Op::Slice => one(movement::eval_slice(inputs)?),
            Op::Reshape { allowzero } => {
                let shape = movement::reshape_target(
                    x()?.shape(),
                    &reqt(inputs, 1)?.to_i64_vec(),
                    *allowzero,
                )?;
                one(x()?.clone().reshape(shape)?)
            }
            Op::Flatten { axis } => {
                let f = movement::infer_flatten(*axis, &fact_of(x()?))?;
                one(x()?.clone().reshape(f[0].shape.clone())?)
            }
            Op::Squeeze | Op::Unsqueeze => {
                let facts: Vec<Fact> = inputs
                    .iter()
                    .map(|t| t.map_or(Fact::new(DType::F32, vec![]), fact_of))
                    .collect();
                let ii: Vec<Option<InferInput>> = inputs
                    .iter()
                    .zip(&facts)
                    .map(|(t, f)| {
                        t.map(|t| InferInput {
                            fact: f,
                            value: Some(t),
                        })
                    })
                    .collect();
                let f = self.infer(&ii, 1)?;
                one(x()?.clone().reshape(f[0].shape.clone())?)
            }
            Op::Transpose { perm } => one(movement::eval_transpose(perm.as_deref(), x()?)?),
            Op::Pad { mode } => one(movement::eval_pad(*mode, inputs)?),
            Op::Resize(a) => one(resize::eval_resize(a, inputs)?),
            Op::ConstantOfShape { value } => {
                let shape = movement::shape_vec(&reqt(inputs, 0)?.to_i64_vec())?;
                one(movement::eval_constant_of_shape(value, shape)?)
            }
            Op::Shape { start, end } => {
                let (s, e) = movement::shape_range(x()?.rank(), *start, *end);
                let dims: Vec<i64> = x()?.shape()[s..e].iter().map(|&d| d as i64).collect();
                one(Tensor::from_vec(vec![dims.len()], dims)?)
            }
            Op::Gather { axis } => one(movement::eval_gather(*axis, x()?, reqt(inputs, 1)?)?),
            Op::GatherND { batch_dims } => one(movement::eval_gather_nd(
                *batch_dims,
                x()?,
                reqt(inputs, 1)?,
            )?),
            Op::Cast { to } => one(x()?.cast(*to)),
            Op::Identity => one(x()?.clone()),
            Op::Dropout => {
                let mut v = vec![x()?.clone()];
                if n_outputs > 1 {
                    v.push(Tensor::full(x()?.shape().to_vec(), true)?);
                }
                Ok(v)
            }
            Op::ArgMax {
                axis,
                keepdims,
                select_last_index,
            } => one(reduce::eval_argmax(
                *axis,
                *keepdims,
                *select_last_index,
                x()?,
            )?),
            Op::TopK {
                axis,
                largest,
                sorted,
            } => reduce::eval_topk(*axis, *largest, *sorted, x()?, reqt(inputs, 1)?),
            Op::ReduceMean {
                keepdims,
                noop_with_empty_axes,
            } => one(reduce::eval_reduce_mean(
                *keepdims,
                *noop_with_empty_axes,
                x()?,
                opt(inputs, 1),
            )?),
        }
    }

    /// Multiply-accumulate count of one evaluation (0 for ops without arithmetic worth counting).
    pub fn macs(&self, inputs: &[Option<&Fact>], outputs: &[Fact]) -> u64 {
        let out = outputs.first().map_or(0, |f| f.numel() as u64);
        match self {
            Op::Conv(_) => {
                // each output element reads C/group * prod(kernel) weights
                match inputs.get(1).copied().flatten() {
                    Some(w) => out * w.shape[1..].iter().product::<usize>() as u64,
                    None => 0,
                }
            }
            Op::ConvTranspose(_) => match (
                inputs.first().copied().flatten(),
                inputs.get(1).copied().flatten(),
            ) {
                (Some(x), Some(w)) => {
                    x.numel() as u64 * w.shape[1..].iter().product::<usize>() as u64
                }
                _ => 0,
            },
            Op::Gemm(_) | Op::MatMul => match inputs.first().copied().flatten() {
                Some(a) => {
                    let k = match self {
                        Op::Gemm(g) if g.trans_a => a.shape[0],
                        _ => *a.shape.last().unwrap_or(&1),
                    };
                    out * k as u64
                }
                None => 0,
            },
            Op::BatchNorm { .. } => out,
            _ => 0,
        }
    }
}

/// Required input `i` for inference.
pub(crate) fn req<'a>(inputs: &'a [Option<InferInput<'a>>], i: usize) -> Result<InferInput<'a>> {
    match inputs.get(i).copied().flatten() {
        Some(x) => Ok(x),
        None => bail!("required input {i} is missing"),
    }
}

/// Required tensor input `i` for evaluation.
pub(crate) fn reqt<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    match inputs.get(i).copied().flatten() {
        Some(x) => Ok(x),
        None => bail!("required input {i} is missing"),
    }
}

/// Optional tensor input `i`.
pub(crate) fn opt<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// The fact of a tensor.
pub fn fact_of(t: &Tensor) -> Fact {
    Fact::new(t.dtype(), t.shape().to_vec())
}

/// Normalises a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}
