//! ONNX node → [`Op`], opset-aware. Parameters that older opsets gave as attributes become
//! constant inputs so that the IR has one form per op (see `kestrel_core::ops`).

use crate::attrs::NodeAttrs;
use kestrel_core::ops::resize::{AspectPolicy, CoordMode, NearestMode, ResizeMode};
use kestrel_core::ops::{
    AutoPad, BinaryOp, ConvAttrs, ConvTransposeAttrs, GemmAttrs, PadMode, PoolAttrs, ResizeAttrs,
    Unary,
};
use kestrel_core::{Error, Op, Result, Tensor};

/// A converted node: the op, plus constants to place at input slots.
pub struct Converted {
    pub op: Op,
    pub const_inputs: Vec<(usize, Tensor)>,
}

fn plain(op: Op) -> Result<Converted> {
    Ok(Converted {
        op,
        const_inputs: vec![],
    })
}

fn i64s(v: Vec<i64>) -> Tensor {
    Tensor::from_vec(vec![v.len()], v).expect("1-D")
}

fn auto_pad(a: &NodeAttrs) -> Result<AutoPad> {
    Ok(match a.string("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => return Err(a.unsupported(format!("auto_pad '{other}'"))),
    })
}

fn pool_attrs(a: &NodeAttrs) -> Result<PoolAttrs> {
    Ok(PoolAttrs {
        kernel_shape: a
            .usizes("kernel_shape")?
            .ok_or_else(|| a.invalid("kernel_shape is required"))?,
        strides: a.usizes("strides")?.unwrap_or_default(),
        dilations: a.usizes("dilations")?.unwrap_or_default(),
        pads: a.usizes("pads")?.unwrap_or_default(),
        auto_pad: auto_pad(a)?,
        ceil_mode: a.bool("ceil_mode", false)?,
        count_include_pad: a.bool("count_include_pad", false)?,
    })
}

/// The tensor of a Constant node (any of its value_* forms).
pub fn constant_value(a: &NodeAttrs) -> Result<Tensor> {
    if let Some(t) = a.tensor("value")? {
        return Ok(t);
    }
    if a.has("value_float") {
        return Ok(Tensor::scalar(a.float("value_float", 0.0)?));
    }
    if let Some(v) = a.floats("value_floats")? {
        return Tensor::from_vec(vec![v.len()], v);
    }
    if a.has("value_int") {
        return Ok(Tensor::scalar(a.int("value_int", 0)?));
    }
    if let Some(v) = a.ints("value_ints")? {
        return Ok(i64s(v));
    }
    Err(a.unsupported("only tensor, float(s) and int(s) constants are supported"))
}

/// Converts one node.
pub fn convert_node(a: &NodeAttrs) -> Result<Converted> {
    let opset = a.opset;
    let unary = |u: Unary| plain(Op::Unary(u));
    match a.op_type {
        "Conv" => plain(Op::Conv(ConvAttrs {
            kernel_shape: a.usizes("kernel_shape")?,
            strides: a.usizes("strides")?.unwrap_or_default(),
            dilations: a.usizes("dilations")?.unwrap_or_default(),
            pads: a.usizes("pads")?.unwrap_or_default(),
            auto_pad: auto_pad(a)?,
            group: a.int("group", 1)?.max(1) as usize,
            activation: None,
        })),
        "ConvTranspose" => plain(Op::ConvTranspose(ConvTransposeAttrs {
            kernel_shape: a.usizes("kernel_shape")?,
            strides: a.usizes("strides")?.unwrap_or_default(),
            dilations: a.usizes("dilations")?.unwrap_or_default(),
            pads: a.usizes("pads")?.unwrap_or_default(),
            output_padding: a.usizes("output_padding")?.unwrap_or_default(),
            output_shape: a.usizes("output_shape")?,
            auto_pad: auto_pad(a)?,
            group: a.int("group", 1)?.max(1) as usize,
        })),
        "MaxPool" => {
            if a.int("storage_order", 0)? != 0 {
                return Err(a.unsupported("storage_order=1"));
            }
            plain(Op::MaxPool(pool_attrs(a)?))
        }
        "AveragePool" => plain(Op::AveragePool(pool_attrs(a)?)),
        "GlobalAveragePool" => plain(Op::GlobalAveragePool),
        "GlobalMaxPool" => plain(Op::GlobalMaxPool),
        "BatchNormalization" => {
            if a.int("training_mode", 0)? != 0 {
                return Err(a.unsupported("training_mode=1"));
            }
            if a.int("spatial", 1)? == 0 {
                return Err(a.unsupported("spatial=0"));
            }
            plain(Op::BatchNorm {
                epsilon: a.float("epsilon", 1e-5)?,
            })
        }
        "Relu" => unary(Unary::Relu),
        "Sigmoid" => unary(Unary::Sigmoid),
        "Tanh" => unary(Unary::Tanh),
        "Exp" => unary(Unary::Exp),
        "Sqrt" => unary(Unary::Sqrt),
        "HardSwish" => unary(Unary::HardSwish),
        "LeakyRelu" => unary(Unary::LeakyRelu {
            alpha: a.float("alpha", 0.01)?,
        }),
        "HardSigmoid" => unary(Unary::HardSigmoid {
            alpha: a.float("alpha", 0.2)?,
            beta: a.float("beta", 0.5)?,
        }),
        "Clip" if opset < 11 => unary(Unary::Clip {
            min: a.float("min", f32::NEG_INFINITY)?,
            max: a.float("max", f32::INFINITY)?,
        }),
        "Clip" => plain(Op::Clip),
        "PRelu" => plain(Op::PRelu),
        "Softmax" => {
            let legacy = opset < 13;
            plain(Op::Softmax {
                axis: a.int("axis", if legacy { 1 } else { -1 })?,
                legacy,
            })
        }
        "Gemm" => plain(Op::Gemm(GemmAttrs {
            alpha: a.float("alpha", 1.0)?,
            beta: a.float("beta", 1.0)?,
            trans_a: a.bool("transA", false)?,
            trans_b: a.bool("transB", false)?,
            activation: None,
        })),
        "MatMul" => plain(Op::MatMul),
        "Add" => plain(Op::Binary(BinaryOp::Add)),
        "Sub" => plain(Op::Binary(BinaryOp::Sub)),
        "Mul" => plain(Op::Binary(BinaryOp::Mul)),
        "Div" => plain(Op::Binary(BinaryOp::Div)),
        "Equal" => plain(Op::Binary(BinaryOp::Equal)),
        "Concat" => plain(Op::Concat {
            axis: a.int("axis", i64::MIN).and_then(|v| {
                if v == i64::MIN {
                    Err(a.invalid("axis is required"))
                } else {
                    Ok(v)
                }
            })?,
        }),
        "Split" => {
            let mut c = plain(Op::Split {
                axis: a.int("axis", 0)?,
                num_outputs: match a.int("num_outputs", 0)? {
                    0 => None,
                    n if n > 0 => Some(n as usize),
                    n => return Err(a.invalid(format!("num_outputs {n}"))),
                },
            })?;
            if opset < 13 {
                if let Some(s) = a.ints("split")? {
                    c.const_inputs.push((1, i64s(s)));
                }
            }
            Ok(c)
        }
        "Slice" => {
            let mut c = plain(Op::Slice)?;
            if opset < 10 {
                let starts = a
                    .ints("starts")?
                    .ok_or_else(|| a.invalid("starts is required"))?;
                let ends = a
                    .ints("ends")?
                    .ok_or_else(|| a.invalid("ends is required"))?;
                c.const_inputs.push((1, i64s(starts)));
                c.const_inputs.push((2, i64s(ends)));
                if let Some(ax) = a.ints("axes")? {
                    c.const_inputs.push((3, i64s(ax)));
                }
            }
            Ok(c)
        }
        "Reshape" => plain(Op::Reshape {
            allowzero: a.bool("allowzero", false)?,
        }),
        "Flatten" => plain(Op::Flatten {
            axis: a.int("axis", 1)?,
        }),
        "Transpose" => plain(Op::Transpose {
            perm: a.usizes("perm")?,
        }),
        "Squeeze" | "Unsqueeze" => {
            let mut c = plain(if a.op_type == "Squeeze" {
                Op::Squeeze
            } else {
                Op::Unsqueeze
            })?;
            if opset < 13 {
                if let Some(ax) = a.ints("axes")? {
                    c.const_inputs.push((1, i64s(ax)));
                }
            }
            Ok(c)
        }
        "Pad" => {
            let mode = match a.string("mode", "constant")?.as_str() {
                "constant" => PadMode::Constant,
                "reflect" => PadMode::Reflect,
                "edge" => PadMode::Edge,
                "wrap" => PadMode::Wrap,
                other => return Err(a.unsupported(format!("mode '{other}'"))),
            };
            let mut c = plain(Op::Pad { mode })?;
            if opset < 11 {
                let pads = a
                    .ints("pads")?
                    .ok_or_else(|| a.invalid("pads is required"))?;
                c.const_inputs.push((1, i64s(pads)));
                c.const_inputs
                    .push((2, Tensor::scalar(a.float("value", 0.0)?)));
            }
            Ok(c)
        }
        "Resize" => convert_resize(a),
        "ConstantOfShape" => plain(Op::ConstantOfShape {
            value: a.tensor("value")?.unwrap_or_else(|| Tensor::scalar(0f32)),
        }),
        "Shape" => plain(Op::Shape {
            start: a.int("start", 0)?,
            end: if a.has("end") {
                Some(a.int("end", 0)?)
            } else {
                None
            },
        }),
        "Gather" => plain(Op::Gather {
            axis: a.int("axis", 0)?,
        }),
        "GatherND" => {
            let b = a.int("batch_dims", 0)?;
            if b < 0 {
                return Err(a.invalid("batch_dims must be >= 0"));
            }
            plain(Op::GatherND {
                batch_dims: b as usize,
            })
        }
        "Cast" => {
            let to = crate::tensor::dtype_from_onnx(a.int("to", 0)? as i32)
                .map_err(|e| a.unsupported(format!("Cast target: {e}")))?;
            plain(Op::Cast { to })
        }
        "Identity" => plain(Op::Identity),
        "Dropout" => plain(Op::Dropout),
        "ArgMax" => plain(Op::ArgMax {
            axis: a.int("axis", 0)?,
            keepdims: a.bool("keepdims", true)?,
            select_last_index: a.bool("select_last_index", false)?,
        }),
        "TopK" => {
            let mut c = plain(Op::TopK {
                axis: a.int("axis", -1)?,
                largest: a.bool("largest", true)?,
                sorted: a.bool("sorted", true)?,
            })?;
            if opset < 10 {
                let k = a.int("k", -1)?;
                c.const_inputs.push((1, i64s(vec![k])));
            }
            Ok(c)
        }
        "ReduceMean" => {
            let mut c = plain(Op::ReduceMean {
                keepdims: a.bool("keepdims", true)?,
                noop_with_empty_axes: a.bool("noop_with_empty_axes", false)?,
            })?;
            if opset < 18 {
                if let Some(ax) = a.ints("axes")? {
                    c.const_inputs.push((1, i64s(ax)));
                }
            }
            Ok(c)
        }
        other => Err(Error::Unsupported {
            node: a.name.to_string(),
            op_type: other.to_string(),
            opset,
            msg: "this op is not implemented".into(),
        }),
    }
}

fn convert_resize(a: &NodeAttrs) -> Result<Converted> {
    let mode = match a.string("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" | "trilinear" => ResizeMode::Linear,
        "cubic" | "bicubic" => ResizeMode::Cubic,
        other => return Err(a.unsupported(format!("mode '{other}'"))),
    };
    // opset 10 Resize has no coordinate mode: it behaves as `asymmetric` with floor rounding.
    let (default_coord, default_nearest) = if a.opset < 11 {
        ("asymmetric", "floor")
    } else {
        ("half_pixel", "round_prefer_floor")
    };
    let coord = match a
        .string("coordinate_transformation_mode", default_coord)?
        .as_str()
    {
        "half_pixel" => CoordMode::HalfPixel,
        "half_pixel_symmetric" => CoordMode::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "align_corners" => CoordMode::AlignCorners,
        "asymmetric" => CoordMode::Asymmetric,
        "tf_crop_and_resize" => CoordMode::TfCropAndResize,
        other => return Err(a.unsupported(format!("coordinate_transformation_mode '{other}'"))),
    };
    let nearest_mode = match a.string("nearest_mode", default_nearest)?.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => return Err(a.unsupported(format!("nearest_mode '{other}'"))),
    };
    let policy = match a.string("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => AspectPolicy::Stretch,
        "not_larger" => AspectPolicy::NotLarger,
        "not_smaller" => AspectPolicy::NotSmaller,
        other => return Err(a.unsupported(format!("keep_aspect_ratio_policy '{other}'"))),
    };
    let attrs = ResizeAttrs {
        mode,
        coord,
        nearest_mode,
        cubic_coeff_a: a.float("cubic_coeff_a", -0.75)?,
        exclude_outside: a.bool("exclude_outside", false)?,
        extrapolation_value: a.float("extrapolation_value", 0.0)?,
        antialias: a.bool("antialias", false)?,
        axes: a.ints("axes")?,
        keep_aspect_ratio_policy: policy,
    };
    Ok(Converted {
        op: Op::Resize(attrs),
        const_inputs: vec![],
    })
}

/// Opset 10 Resize has inputs (X, scales): the loader moves `scales` to slot 2.
pub fn is_resize_v10(op_type: &str, opset: i64) -> bool {
    op_type == "Resize" && opset < 11
}
