//! Specialising a graph to concrete input shapes: shape/dtype inference for every value,
//! constant folding, then the optimisation passes.
//!
//! Re-run whenever the input shape changes (fully convolutional models take any H and W);
//! the result is a new graph, the imported one is never modified.

use crate::graph::{Fact, Graph};
use crate::ops::{fact_of, InferInput, Op};
use crate::{passes, Error, Result, Tensor};
use std::sync::Arc;

/// Options of [`prepare`].
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// Largest tensor (elements) that constant folding may create when doing so would keep a
    /// second copy of a large constant alive; folding whose inputs die with it is always done.
    pub fold_budget_elems: usize,
    /// Run the optimisation passes (BN folding, activation fusion, dead-node removal).
    pub optimize: bool,
    /// Keep `Cast(to=f32)` of large `f16` constants (weights stored in half precision, see
    /// [`crate::weights`]) read only as the weight operand of Conv/Gemm/MatMul, instead of
    /// folding them into `f32` copies: for backends that pack such weights straight from f16.
    pub keep_f16_weights: bool,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            fold_budget_elems: 1 << 20,
            optimize: true,
            keep_f16_weights: false,
        }
    }
}

/// Specialises `graph` for the given input shapes (one per graph input, in order).
///
/// Postconditions: every value used by a node or as a graph output has a fact; every node has
/// at least one non-constant input; the graph is topologically sorted.
pub fn prepare(graph: &Graph, input_shapes: &[Vec<usize>], opts: &PrepareOptions) -> Result<Graph> {
    prepare_with_values(graph, input_shapes, &[], opts)
}

/// Like [`prepare`], but inputs given a value in `values` (indexed like the graph inputs; missing
/// or `None` entries stay runtime inputs) become constants: the graph is specialised on them.
/// Used for small integer inputs that act as shape parameters (Reshape targets, Slice bounds ...).
pub fn prepare_with_values(
    graph: &Graph,
    input_shapes: &[Vec<usize>],
    values: &[Option<Tensor>],
    opts: &PrepareOptions,
) -> Result<Graph> {
    let mut g = graph.clone();
    if input_shapes.len() != g.inputs.len() {
        return Err(Error::Input {
            name: "<inputs>".into(),
            msg: format!(
                "model has {} inputs, {} shapes were given",
                g.inputs.len(),
                input_shapes.len()
            ),
        });
    }
    for (inp, shape) in g.inputs.iter().zip(input_shapes) {
        check_input_shape(&g.values[inp.value].name, &inp.dims, shape)?;
        crate::checked_numel(shape)?;
        g.values[inp.value].fact = Some(Fact::new(inp.dtype, shape.clone()));
    }
    for (inp, v) in g.inputs.clone().iter().zip(values) {
        if let Some(t) = v {
            if t.shape()
                != g.values[inp.value]
                    .fact
                    .as_ref()
                    .map_or(&[][..], |f| &f.shape[..])
                || t.dtype() != inp.dtype
            {
                return Err(Error::Input {
                    name: g.values[inp.value].name.clone(),
                    msg: "specialisation value does not match the input shape/type".into(),
                });
            }
            set_constant(&mut g, inp.value, t.clone());
        }
    }
    infer_and_fold(&mut g, opts.fold_budget_elems, opts.keep_f16_weights)?;
    if opts.optimize {
        passes::optimize(&mut g)?;
    } else {
        passes::remove_dead_nodes(&mut g);
    }
    Ok(g)
}

fn check_input_shape(name: &str, dims: &[crate::Dim], shape: &[usize]) -> Result<()> {
    let err = |msg: String| {
        Err(Error::Input {
            name: name.into(),
            msg,
        })
    };
    if dims.len() != shape.len() {
        let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        return err(format!(
            "expected rank {} [{}], got shape {shape:?}",
            dims.len(),
            d.join(", ")
        ));
    }
    for (i, (d, &s)) in dims.iter().zip(shape).enumerate() {
        if let crate::Dim::Known(k) = d {
            if *k != s {
                return err(format!(
                    "dimension {i} must be {k}, got {s} (shape {shape:?})"
                ));
            }
        }
    }
    Ok(())
}

/// One sweep in topological order: nodes whose inputs are all constant are evaluated (within the
/// budget), the others get output facts from shape inference. Folded nodes are removed.
fn infer_and_fold(g: &mut Graph, budget: usize, keep_f16_weights: bool) -> Result<()> {
    let consumers = g.consumers();
    // values read only as the weight operand of ops whose kernels pack weights
    let weight_only: Vec<bool> = (0..g.values.len())
        .map(|v| {
            !consumers[v].is_empty()
                && consumers[v].iter().all(|&ni| {
                    let n = &g.nodes[ni];
                    matches!(n.op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul)
                        && n.inputs.get(1).copied().flatten() == Some(v)
                        && n.inputs.iter().flatten().filter(|&&x| x == v).count() == 1
                })
        })
        .collect();
    let mut keep = Vec::with_capacity(g.nodes.len());
    let nodes = std::mem::take(&mut g.nodes);
    for node in nodes {
        let ctx = |e: Error| e.at_node(&node.name, node.op.name());
        for v in node.inputs.iter().flatten() {
            if g.values[*v].fact.is_none() {
                return Err(ctx(Error::invalid(format!(
                    "input '{}' has no known shape",
                    g.values[*v].name
                ))));
            }
        }
        let all_const = node
            .inputs
            .iter()
            .flatten()
            .all(|&v| g.values[v].constant.is_some());
        // Shape only needs the fact, which is concrete here.
        if let Op::Shape { start, end } = node.op {
            let x = node.inputs[0].ok_or_else(|| ctx(Error::invalid("Shape needs an input")))?;
            let shape = &g.values[x].fact.as_ref().expect("checked above").shape;
            let (s, e) = crate::ops::movement::shape_range(shape.len(), start, end);
            let dims: Vec<i64> = shape[s..e].iter().map(|&d| d as i64).collect();
            set_constant(
                g,
                node.outputs[0],
                Tensor::from_vec(vec![dims.len()], dims)?,
            );
            continue;
        }
        let facts = infer_node(g, &node).map_err(ctx)?;
        let kept_weight = keep_f16_weights
            && crate::weights::is_f16_weight_cast(g, &node)
            && weight_only[node.outputs[0]];
        if all_const && !kept_weight {
            let ins: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|v| v.and_then(|v| g.values[v].constant.as_deref()))
                .collect();
            let out_elems: usize = facts.iter().map(|f| f.numel()).sum();
            let inputs_die = node
                .inputs
                .iter()
                .flatten()
                .all(|&v| consumers[v].len() <= 1 && !g.outputs.contains(&v));
            if out_elems <= budget || inputs_die {
                let outs = node.op.eval(&ins, node.outputs.len()).map_err(ctx)?;
                for (&o, t) in node.outputs.iter().zip(outs) {
                    set_constant(g, o, t);
                }
                continue;
            }
        }
        if facts.len() < node.outputs.len() {
            return Err(ctx(Error::invalid(format!(
                "node declares {} outputs, the op has {}",
                node.outputs.len(),
                facts.len()
            ))));
        }
        for (&o, f) in node.outputs.iter().zip(facts) {
            g.values[o].fact = Some(f);
        }
        keep.push(node);
    }
    g.nodes = keep;
    for &o in &g.outputs {
        if g.values[o].fact.is_none() {
            return Err(Error::InvalidModel(format!(
                "graph output '{}' is produced by no node",
                g.values[o].name
            )));
        }
    }
    Ok(())
}

fn set_constant(g: &mut Graph, v: usize, t: Tensor) {
    g.values[v].fact = Some(fact_of(&t));
    g.values[v].constant = Some(Arc::new(t));
}

/// Output facts of a node from the current facts and constants of its inputs.
pub fn infer_node(g: &Graph, node: &crate::Node) -> Result<Vec<Fact>> {
    let ins: Vec<Option<InferInput>> = node
        .inputs
        .iter()
        .map(|v| {
            v.map(|v| InferInput {
                fact: g.values[v].fact.as_ref().expect("checked by caller"),
                value: g.values[v].constant.as_deref(),
            })
        })
        .collect();
    node.op.infer(&ins, node.outputs.len())
}
