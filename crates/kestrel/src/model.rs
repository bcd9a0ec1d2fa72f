//! A loaded model: the imported graph, immutable and shareable between sessions.

use kestrel_core::graph::Dim;
use kestrel_core::prepare::{prepare, PrepareOptions};
use kestrel_core::{DType, Graph, Result};
use kestrel_onnx::{load_model, LoadOptions, ModelInfo};
use std::path::Path;
use std::sync::Arc;

/// A loaded model. Cheap to clone (the graph is shared).
#[derive(Clone, Debug)]
pub struct Model {
    graph: Arc<Graph>,
    /// Per graph input: true when it feeds only parameter slots of ops.
    param_inputs: Arc<Vec<bool>>,
    info: ModelInfo,
    name: String,
}

/// Static facts about a model for given input shapes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub producer: String,
    pub opset: i64,
    pub inputs: Vec<(String, String, Vec<String>)>,
    pub outputs: Vec<(String, String, Vec<usize>)>,
    /// Input shapes used for the figures below.
    pub input_shapes: Vec<Vec<usize>>,
    /// Node counts per op type as imported.
    pub ops: Vec<(String, usize)>,
    /// Node counts per op after preparation (fusion etc.).
    pub prepared_ops: Vec<(String, usize)>,
    /// Elements of floating-point constants (weights and biases).
    pub parameters: u64,
    pub parameter_bytes: u64,
    pub macs: u64,
}

impl Model {
    /// Loads an ONNX file with default limits.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Loads an ONNX file with explicit limits.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        let path = path.as_ref();
        let (graph, info) = load_model(path, opts)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Model::new(graph, info, name))
    }

    /// Loads from bytes (external data is refused).
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Model> {
        let (graph, info) = kestrel_onnx::load_model_bytes(bytes, None, &LoadOptions::default())?;
        Ok(Model::new(graph, info, name.to_string()))
    }

    fn new(graph: Graph, info: ModelInfo, name: String) -> Model {
        let param_inputs = graph
            .inputs
            .iter()
            .map(|i| {
                let mut uses = graph.nodes.iter().flat_map(|n| {
                    n.inputs
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| **v == Some(i.value))
                        .map(move |(slot, _)| n.op.is_param_slot(slot))
                });
                let first = uses.next();
                first == Some(true) && uses.all(|p| p) && !graph.outputs.contains(&i.value)
            })
            .collect();
        Model {
            graph: Arc::new(graph),
            param_inputs: Arc::new(param_inputs),
            info,
            name,
        }
    }

    /// A copy of this model whose graph also outputs the named values (after its own outputs,
    /// in the order given), e.g. to observe intermediate activations.
    pub fn with_extra_outputs(&self, names: &[String]) -> Result<Model> {
        let mut g = (*self.graph).clone();
        for n in names {
            let v = g
                .values
                .iter()
                .position(|v| &v.name == n)
                .ok_or_else(|| kestrel_core::Error::invalid(format!("no value named '{n}'")))?;
            g.outputs.push(v);
        }
        Ok(Model::new(g, self.info.clone(), self.name.clone()))
    }

    /// This model with its large convolution and dense weights are stored in half
    /// precision (an `f16` conversion at load time, no separate file needed): BatchNorm is first
    /// folded into its convolution (so the folded weight is what gets rounded), then every
    /// convolution weight whose outputs sum at least
    /// [`kestrel_cpu::MIN_REDUCTION_FOR_F16_WEIGHTS`] products and every Gemm/MatMul weight
    /// becomes an `f16` constant read through `Cast(to=f32)` (see [`kestrel_core::weights`]).
    /// The CPU backend packs those straight from `f16`, so once the `f32` model is dropped the
    /// weights occupy half the memory; other backends fold the Casts. Returns the model and the
    /// bytes of weights now stored in `f16`.
    pub fn into_f16_weights(self) -> Result<(Model, usize)> {
        // converted in place when this is the only handle, so the f32 and f16 copies of the
        // weights never coexist (one tensor at a time)
        let mut g = Arc::try_unwrap(self.graph).unwrap_or_else(|shared| (*shared).clone());
        kestrel_core::passes::fold_batch_norm(&mut g)?;
        kestrel_core::passes::remove_dead_nodes(&mut g);
        drop_unread_constants(&mut g);
        let (_, bytes) = kestrel_core::weights::store_weights_f16(
            &mut g,
            kestrel_cpu::MIN_REDUCTION_FOR_F16_WEIGHTS,
        )?;
        Ok((Model::new(g, self.info, self.name), bytes))
    }

    /// Per graph input: true when it only parameterises ops (the session specialises on it).
    pub fn param_inputs(&self) -> &[bool] {
        &self.param_inputs
    }

    /// The imported graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The file stem the model was loaded from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Declared inputs: name, dtype and dims (symbolic where free).
    pub fn inputs(&self) -> Vec<(String, DType, Vec<Dim>)> {
        self.graph
            .inputs
            .iter()
            .map(|i| {
                (
                    self.graph.values[i.value].name.clone(),
                    i.dtype,
                    i.dims.clone(),
                )
            })
            .collect()
    }

    /// Output names.
    pub fn output_names(&self) -> Vec<String> {
        self.graph
            .outputs
            .iter()
            .map(|&o| self.graph.values[o].name.clone())
            .collect()
    }

    /// Concrete input shapes: declared dims, free dims replaced by `default_free`
    /// (batch-like leading free dims become 1).
    pub fn default_input_shapes(&self, default_free: usize) -> Vec<Vec<usize>> {
        self.graph
            .inputs
            .iter()
            .map(|i| {
                i.dims
                    .iter()
                    .enumerate()
                    .map(|(k, d)| match d {
                        Dim::Known(v) => *v,
                        Dim::Sym(_) if k == 0 => 1,
                        Dim::Sym(_) if i.dims.len() == 4 && k == 1 => 3,
                        Dim::Sym(_) => default_free,
                    })
                    .collect()
            })
            .collect()
    }

    /// Parameters, MACs and op counts for the given input shapes.
    pub fn summary(&self, input_shapes: &[Vec<usize>]) -> Result<ModelSummary> {
        let prepared = prepare(&self.graph, input_shapes, &PrepareOptions::default())?;
        let mut params = 0u64;
        let mut param_bytes = 0u64;
        for v in &self.graph.values {
            // parameters: floating-point constants (weights, biases); integer constants are
            // shapes and indices
            if let Some(c) = v.constant.as_ref().filter(|c| c.dtype().is_float()) {
                params += c.len() as u64;
                param_bytes += c.size_bytes() as u64;
            }
        }
        let mut macs = 0u64;
        for n in &prepared.nodes {
            let ins: Vec<Option<&kestrel_core::Fact>> = n
                .inputs
                .iter()
                .map(|v| v.and_then(|v| prepared.values[v].fact.as_ref()))
                .collect();
            let outs: Vec<kestrel_core::Fact> = n
                .outputs
                .iter()
                .filter_map(|&v| prepared.values[v].fact.clone())
                .collect();
            macs += n.op.macs(&ins, &outs);
        }
        let mut ops: std::collections::BTreeMap<String, usize> = Default::default();
        for n in &self.graph.nodes {
            *ops.entry(n.source_op.clone()).or_default() += 1;
        }
        Ok(ModelSummary {
            name: self.name.clone(),
            producer: self.info.producer.clone(),
            opset: self.info.opset,
            inputs: self
                .inputs()
                .into_iter()
                .map(|(n, d, dims)| {
                    (
                        n,
                        d.to_string(),
                        dims.iter().map(|d| d.to_string()).collect(),
                    )
                })
                .collect(),
            outputs: prepared
                .outputs
                .iter()
                .map(|&o| {
                    let f = prepared.values[o].fact.clone().expect("prepared");
                    (
                        prepared.values[o].name.clone(),
                        f.dtype.to_string(),
                        f.shape,
                    )
                })
                .collect(),
            input_shapes: input_shapes.to_vec(),
            ops: ops.into_iter().collect(),
            prepared_ops: prepared.op_histogram(),
            parameters: params,
            parameter_bytes: param_bytes,
            macs,
        })
    }
}

/// Drops the data of constants no node or output reads (BatchNorm parameters and weights
/// replaced by folding).
fn drop_unread_constants(g: &mut Graph) {
    let mut read = vec![false; g.values.len()];
    for n in &g.nodes {
        for &v in n.inputs.iter().flatten() {
            read[v] = true;
        }
    }
    for &o in &g.outputs {
        read[o] = true;
    }
    for (v, r) in read.iter().enumerate() {
        if !r {
            g.values[v].constant = None;
        }
    }
}
