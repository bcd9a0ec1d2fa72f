//! The graph IR: values (edges) and nodes, in topological order.
//!
//! A [`Graph`] as produced by an importer may have symbolic input dimensions and no facts on its
//! intermediate values. [`crate::prepare::prepare`] turns it into a *typed* graph for concrete input
//! shapes: every value then has a [`Fact`] (dtype + concrete shape) and every value that can be
//! computed from constants alone has been folded into a constant.

use crate::{DType, Op, Result, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Index of a value in [`Graph::values`].
pub type ValueId = usize;
/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// A dimension of a graph input: known, or a named free dimension (`"N"`, `"height"`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Known(usize),
    Sym(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Known(d) => write!(f, "{d}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// What is known about a value: its element type and concrete shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl Fact {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Self {
        Fact { dtype, shape }
    }
    /// Number of elements (saturating; facts are checked when they are created).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }
    /// Size in bytes of the elements.
    pub fn size_bytes(&self) -> usize {
        self.numel().saturating_mul(self.dtype.size_bytes())
    }
}

/// An attribute value exactly as the model file gave it. Nodes keep all of them (also those the
/// typed [`Op`] does not use) so that tools can show and write them back.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Int(i64),
    Float(f32),
    String(String),
    Tensor(Tensor),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strings(Vec<String>),
    /// Subgraphs and other kinds Kestrel does not interpret; the string names the kind.
    Other(String),
}

/// One edge of the graph.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    /// Type and shape, once known.
    pub fact: Option<Fact>,
    /// The value when it is a constant (initializer, Constant node, or folded).
    pub constant: Option<Arc<Tensor>>,
}

/// One operation. `inputs` holds `None` for an omitted optional input.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    /// The op type in the source format (e.g. `"Conv"`), for messages and reports.
    pub source_op: String,
    /// Every attribute of the source node, as given.
    pub attrs: BTreeMap<String, AttrValue>,
}

/// A graph input: the value it feeds and its declared type (possibly with free dimensions).
#[derive(Clone, Debug)]
pub struct GraphInput {
    pub value: ValueId,
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

/// A computation graph. Invariant: `nodes` is in topological order (every input of a node is a
/// graph input, a constant, or an output of an earlier node).
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<GraphInput>,
    pub outputs: Vec<ValueId>,
    /// The default-domain opset the graph was imported with.
    pub opset: i64,
}

impl Graph {
    /// Adds a value without fact or constant.
    pub fn add_value(&mut self, name: impl Into<String>) -> ValueId {
        self.values.push(Value {
            name: name.into(),
            fact: None,
            constant: None,
        });
        self.values.len() - 1
    }

    /// Adds a constant value.
    pub fn add_constant(&mut self, name: impl Into<String>, t: Tensor) -> ValueId {
        let fact = Fact::new(t.dtype(), t.shape().to_vec());
        self.values.push(Value {
            name: name.into(),
            fact: Some(fact),
            constant: Some(Arc::new(t)),
        });
        self.values.len() - 1
    }

    /// The constant held by a value, if any.
    pub fn constant(&self, v: ValueId) -> Option<&Tensor> {
        self.values[v].constant.as_deref()
    }

    /// The fact of a value; errors when inference has not reached it.
    pub fn fact(&self, v: ValueId) -> Result<&Fact> {
        self.values[v].fact.as_ref().ok_or_else(|| {
            crate::Error::invalid(format!(
                "value '{}' has no known shape",
                self.values[v].name
            ))
        })
    }

    /// Finds a value by name.
    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }

    /// For each value, the nodes that read it (in node order).
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut c = vec![Vec::new(); self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for v in n.inputs.iter().flatten() {
                if !c[*v].contains(&i) {
                    c[*v].push(i);
                }
            }
        }
        c
    }

    /// Which node produces each value (`None` for inputs and constants).
    pub fn producers(&self) -> Vec<Option<NodeId>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &o in &n.outputs {
                p[o] = Some(i);
            }
        }
        p
    }

    /// Reorders `nodes` topologically (ONNX requires sorted graphs, but not every exporter
    /// complies). Errors on a cycle or on an input that nothing produces.
    pub fn sort_topologically(&mut self) -> Result<()> {
        let mut ready: Vec<bool> = self.values.iter().map(|v| v.constant.is_some()).collect();
        for i in &self.inputs {
            ready[i.value] = true;
        }
        let mut remaining: Vec<Node> = std::mem::take(&mut self.nodes);
        let mut sorted = Vec::with_capacity(remaining.len());
        while !remaining.is_empty() {
            let before = remaining.len();
            let mut rest = Vec::new();
            for n in remaining {
                if n.inputs.iter().flatten().all(|&v| ready[v]) {
                    for &o in &n.outputs {
                        ready[o] = true;
                    }
                    sorted.push(n);
                } else {
                    rest.push(n);
                }
            }
            if rest.len() == before {
                let n = &rest[0];
                let missing: Vec<&str> = n
                    .inputs
                    .iter()
                    .flatten()
                    .filter(|&&v| !ready[v])
                    .map(|&v| self.values[v].name.as_str())
                    .collect();
                return Err(crate::Error::InvalidModel(format!(
                    "node '{}' ({}) reads {:?}, which no node, input or initializer provides (or the graph has a cycle)",
                    n.name, n.source_op, missing
                )));
            }
            remaining = rest;
        }
        self.nodes = sorted;
        Ok(())
    }

    /// Count of nodes per op type, sorted by type name.
    pub fn op_histogram(&self) -> Vec<(String, usize)> {
        let mut h: HashMap<&str, usize> = HashMap::new();
        for n in &self.nodes {
            *h.entry(n.op.name()).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = h.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        v.sort();
        v
    }
}
