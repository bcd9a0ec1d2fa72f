//! Weights stored in half precision inside an f32 graph.
//!
//! A weight may be a plain `f32` constant, or an `f16` constant read through `Cast(to=f32)`: the
//! form [`store_weights_f16`] produces and that weights-only fp16 ONNX files have. Kernels that
//! pack their weights at preparation (convolution, dense layers) look through the Cast with
//! [`weight`], so the `f32` copy exists only while packing; constant folding keeps such Casts
//! (see `PrepareOptions::keep_f16_weights`).

use crate::{DType, Graph, NodeId, Op, Result, Tensor, ValueId};
use std::borrow::Cow;

/// Smallest weight (elements) worth storing in `f16`; smaller tensors are folded as usual.
pub const MIN_F16_WEIGHT_ELEMS: usize = 1024;

/// Whether node `n` is `Cast(to=f32)` of an `f16` constant of at least
/// [`MIN_F16_WEIGHT_ELEMS`] elements.
pub fn is_f16_weight_cast(g: &Graph, n: &crate::Node) -> bool {
    matches!(n.op, Op::Cast { to: DType::F32 })
        && n.inputs.first().copied().flatten().is_some_and(|v| {
            g.constant(v)
                .is_some_and(|t| t.dtype() == DType::F16 && t.len() >= MIN_F16_WEIGHT_ELEMS)
        })
}

/// A weight operand as stored.
pub enum Weight<'a> {
    /// A plain constant (any type; kernels expect `f32`), with its shared handle.
    Plain(&'a std::sync::Arc<Tensor>),
    /// An `f16` constant behind a weight Cast (node id of the Cast).
    F16(&'a std::sync::Arc<Tensor>, NodeId),
}

impl Weight<'_> {
    /// The stored tensor (f16 for [`Weight::F16`]).
    pub fn stored(&self) -> &Tensor {
        match self {
            Weight::Plain(t) | Weight::F16(t, _) => t,
        }
    }

    /// The `f32` values (a widened copy for [`Weight::F16`]).
    pub fn to_f32(&self) -> Cow<'_, Tensor> {
        match self {
            Weight::Plain(t) => Cow::Borrowed(t),
            Weight::F16(t, _) => Cow::Owned(t.cast(DType::F32)),
        }
    }

    pub fn shape(&self) -> &[usize] {
        self.stored().shape()
    }
}

/// Weight `v`: the constant itself, or the `f16` constant behind a weight Cast. `None` when `v`
/// is computed at run time.
pub fn weight<'a>(g: &'a Graph, producers: &[Option<NodeId>], v: ValueId) -> Option<Weight<'a>> {
    if let Some(t) = g.values[v].constant.as_ref() {
        return Some(Weight::Plain(t));
    }
    let p = producers[v]?;
    let n = &g.nodes[p];
    if !is_f16_weight_cast(g, n) {
        return None;
    }
    let h = g.values[n.inputs[0]?].constant.as_ref()?;
    Some(Weight::F16(h, p))
}

/// Rewrites the large `f32` weights of convolutions whose outputs sum at least
/// `min_reduction` products, and of Gemm/MatMul right-hand sides, into `f16` constants read
/// through `Cast(to=f32)`. Values are rounded to nearest `f16`; a weight also read by other ops
/// is left alone. Returns the number of weights rewritten and the bytes saved.
pub fn store_weights_f16(g: &mut Graph, min_reduction: usize) -> Result<(usize, usize)> {
    let consumers = g.consumers();
    let mut rewritten = (0, 0);
    let mut new_nodes: Vec<(NodeId, crate::Node)> = Vec::new();
    for v in 0..g.values.len() {
        let Some(t) = g.values[v].constant.clone() else {
            continue;
        };
        // (the caller may hold the only other handle; it is dropped below as soon as the f16
        // copy exists, so a whole f32 model and its f16 copy never coexist)
        if t.dtype() != DType::F32 || t.len() < MIN_F16_WEIGHT_ELEMS || consumers[v].is_empty() {
            continue;
        }
        let ok = consumers[v].iter().all(|&ni| {
            let n = &g.nodes[ni];
            let slot1 = n.inputs.get(1).copied().flatten() == Some(v)
                && n.inputs.iter().flatten().filter(|&&x| x == v).count() == 1;
            slot1
                && match &n.op {
                    Op::Conv(_) => t.shape().iter().skip(1).product::<usize>() >= min_reduction,
                    Op::Gemm(_) | Op::MatMul => t.rank() == 2,
                    _ => false,
                }
        });
        if !ok || g.outputs.contains(&v) {
            continue;
        }
        let name = g.values[v].name.clone();
        let h = t.cast(DType::F16);
        let hv = g.add_constant(format!("{name}::f16"), h);
        // v becomes the output of the Cast
        g.values[v].constant = None;
        g.values[v].fact = None;
        let first = *consumers[v].iter().min().expect("non-empty");
        new_nodes.push((
            first,
            crate::Node {
                name: format!("{name}::widen"),
                op: Op::Cast { to: DType::F32 },
                inputs: vec![Some(hv)],
                outputs: vec![v],
                source_op: "Cast".into(),
                attrs: Default::default(),
            },
        ));
        rewritten.0 += 1;
        rewritten.1 += t.len() * 2;
    }
    // insert each Cast right before its first reader (keeps the topological order)
    new_nodes.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    for (at, n) in new_nodes {
        g.nodes.insert(at, n);
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Dim, GraphInput, Node};
    use crate::ops::GemmAttrs;

    #[test]
    fn gemm_weight_moves_behind_a_cast_and_reads_back_rounded() {
        let mut g = Graph {
            opset: 17,
            ..Default::default()
        };
        let x = g.add_value("x");
        g.inputs.push(GraphInput {
            value: x,
            dtype: DType::F32,
            dims: vec![Dim::Known(1), Dim::Known(64)],
        });
        let wv: Vec<f32> = (0..64 * 32)
            .map(|i| (i as f32 * 0.37).sin() / 3.0)
            .collect();
        let w = g.add_constant("w", Tensor::from_vec(vec![32, 64], wv.clone()).unwrap());
        let y = g.add_value("y");
        g.nodes.push(Node {
            name: "fc".into(),
            op: Op::Gemm(GemmAttrs {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: true,
                activation: None,
            }),
            inputs: vec![Some(x), Some(w)],
            outputs: vec![y],
            source_op: "Gemm".into(),
            attrs: Default::default(),
        });
        g.outputs.push(y);
        let (n, saved) = store_weights_f16(&mut g, 64).unwrap();
        assert_eq!((n, saved), (1, 64 * 32 * 2));
        assert_eq!(g.nodes.len(), 2);
        assert!(is_f16_weight_cast(&g, &g.nodes[0]));
        let wt = weight(&g, &g.producers(), w).unwrap();
        assert!(matches!(wt, Weight::F16(_, 0)));
        let t = wt.to_f32();
        let got = t.as_f32().unwrap();
        for (a, b) in got.iter().zip(&wv) {
            assert_eq!(*a, half::f16::from_f32(*b).to_f32());
        }
    }
}
