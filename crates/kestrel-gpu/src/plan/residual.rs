//! Residual fusion on the GPU: `Conv -> Add [-> Relu]` (the end of a ResNet bottleneck) runs as
//! one convolution whose epilogue adds the other operand of the Add before the activation, so
//! the Add and Relu dispatches and one round trip of the activation through memory disappear.
//!
//! `KESTREL_GPU_FUSE_RESIDUAL=0` turns it off. Planned before lowering, for convolutions that take the 1x1 GEMM kernel (conv1x1.wgsl and
//! its split-K reduction carry the residual input). Conditions: the convolution has no fused
//! activation of its own; its output feeds only the Add and is not a graph output; the Add has
//! two computed operands of the output's shape (no broadcasting); the other operand is
//! computed before the convolution (so it exists when the convolution runs). A Relu that is the
//! Add's only reader (and the Add's output not a graph output) becomes the activation.

use super::conv1x1_applies;
use kestrel_core::ops::conv::conv_geometry;
use kestrel_core::ops::{BinaryOp, Unary};
use kestrel_core::{DType, Graph, Op, ValueId};
use std::collections::{HashMap, HashSet};

/// What a fused convolution computes besides itself.
#[derive(Clone, Copy, Debug)]
pub(super) struct FusedAdd {
    /// The Add's other operand.
    pub residual: ValueId,
    /// The value the convolution writes: the Add's output, or the Relu's.
    pub out: ValueId,
    /// The activation after the Add (the fused Relu), if any.
    pub act: Option<Unary>,
}

/// The fused convolutions (by node index) and the Add / Relu nodes they absorb.
pub(super) fn plan(g: &Graph, force: Option<&str>) -> (HashMap<usize, FusedAdd>, HashSet<usize>) {
    let mut fused = HashMap::new();
    let mut folded = HashSet::new();
    // KESTREL_GPU_FUSE_RESIDUAL=0 turns the fusion off (A/B measurements)
    if std::env::var("KESTREL_GPU_FUSE_RESIDUAL").is_ok_and(|v| v == "0") {
        return (fused, folded);
    }
    let consumers = g.consumers();
    let producers = g.producers();
    let is_output = |v: ValueId| g.outputs.contains(&v);
    let shape = |v: ValueId| {
        g.values[v]
            .fact
            .as_ref()
            .map(|f| (f.dtype, f.shape.clone()))
    };
    for (ai, add) in g.nodes.iter().enumerate() {
        if !matches!(add.op, Op::Binary(BinaryOp::Add)) || add.inputs.len() != 2 {
            continue;
        }
        let (Some(a), Some(b)) = (add.inputs[0], add.inputs[1]) else {
            continue;
        };
        let out = add.outputs[0];
        let out_shape = shape(out);
        if out_shape.as_ref().is_none_or(|(d, _)| *d != DType::F32)
            || shape(a) != out_shape
            || shape(b) != out_shape
            || g.constant(a).is_some()
            || g.constant(b).is_some()
        {
            continue;
        }
        // the operand computed last by a fusable convolution
        let candidate = |c: ValueId, other: ValueId| -> Option<usize> {
            let ci = producers[c]?;
            let conv = &g.nodes[ci];
            let Op::Conv(attrs) = &conv.op else {
                return None;
            };
            if attrs.activation.is_some()
                || consumers[c].len() != 1
                || is_output(c)
                || fused.contains_key(&ci)
                || producers[other].is_some_and(|o| o >= ci)
            {
                return None;
            }
            let xs = g.values[conv.inputs.first().copied().flatten()?]
                .fact
                .as_ref()?;
            let w = g.constant(conv.inputs.get(1).copied().flatten()?)?;
            let geom = conv_geometry(attrs, &xs.shape, w.shape()).ok()?;
            (geom.input[0] == 1 && geom.kernel[0] == 1 && conv1x1_applies(&geom, force))
                .then_some(ci)
        };
        let pick = [(a, b), (b, a)]
            .into_iter()
            .filter_map(|(c, o)| candidate(c, o).map(|ci| (ci, o)))
            .max_by_key(|(ci, _)| *ci);
        let Some((ci, residual)) = pick else {
            continue;
        };
        let relu = (consumers[out].len() == 1 && !is_output(out))
            .then(|| consumers[out][0])
            .filter(|&ri| matches!(g.nodes[ri].op, Op::Unary(Unary::Relu)));
        let (out, act) = match relu {
            Some(ri) => {
                folded.insert(ri);
                (g.nodes[ri].outputs[0], Some(Unary::Relu))
            }
            None => (out, None),
        };
        folded.insert(ai);
        fused.insert(ci, FusedAdd { residual, out, act });
    }
    (fused, folded)
}
