//! Explicit graph split between the GPU and the CPU.
//!
//! A GPU session runs the whole graph on the GPU when every node has a GPU kernel (one segment,
//! no extra cost). When some node has none (an op the GPU backend does not implement, a non-f32
//! value, a runtime-computed weight), the prepared graph is cut into maximal runs of consecutive
//! nodes on one device: GPU segments become [`GpuPlan`]s, the others [`CpuPlan`]s. Every value
//! that crosses a cut is a host transfer; [`HybridPlan::transfers`] lists them and `kestrel
//! profile` shows them. Nothing falls back silently: [`HybridPlan::cpu_nodes`] names each node
//! that runs on the CPU and why, and the session prints it.
//!
//! Invariant: segments cover the graph's nodes in order, each exactly once; a segment's inputs
//! are graph inputs or outputs of earlier segments (the node order is topological).

use kestrel_core::graph::{Dim, GraphInput, ValueId};
use kestrel_core::{DType, Error, Graph, Result, Tensor};
use kestrel_cpu::{CpuOptions, CpuPlan, ExecState};
use kestrel_gpu::{GpuContext, GpuConv, GpuPlan, Storage};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The engine of one segment.
enum Engine {
    Gpu(GpuPlan),
    Cpu(Box<CpuPlan>, ExecState),
}

/// A run of consecutive nodes on one device.
struct Segment {
    engine: Engine,
    nodes: Range<usize>,
    /// Values (of the whole graph) the segment reads from outside itself, in its input order.
    inputs: Vec<ValueId>,
    /// Values it produces for later segments or the graph's outputs, in its output order.
    outputs: Vec<ValueId>,
}

/// One value copied between host and GPU memory at a segment boundary.
#[derive(Clone, Debug)]
pub struct Transfer {
    pub value: String,
    /// True for host → GPU, false for GPU → host.
    pub upload: bool,
    pub bytes: u64,
}

/// One row of a hybrid plan's profile: a GPU dispatch, a CPU step, or a segment's transfers.
#[derive(Clone, Debug)]
pub struct HybridStep {
    pub node: String,
    pub op: String,
    /// GPU shader name, `cpu:<kernel>`, or `transfer` for a GPU segment's host copies.
    pub kernel: String,
    pub macs: u64,
}

/// A prepared graph bound to the GPU, split where the GPU cannot run a node.
pub struct HybridPlan {
    graph: Graph,
    segments: Vec<Segment>,
    /// (node name, op, why) of every node that runs on the CPU.
    cpu_nodes: Vec<(String, String, String)>,
}

/// Whether a value can live on the GPU (which stores f32 activations only).
fn gpu_value(g: &Graph, v: ValueId) -> bool {
    g.values[v].constant.is_some()
        || g.values[v]
            .fact
            .as_ref()
            .is_some_and(|f| f.dtype == DType::F32)
}

/// The segment sub-graph of `nodes`: its boundary inputs become graph inputs, the values read
/// after it (or graph outputs) its outputs. Constants stay shared (reference-counted).
fn extract(g: &Graph, nodes: Range<usize>) -> Result<(Graph, Vec<ValueId>, Vec<ValueId>)> {
    let producers = g.producers();
    let inside = |v: ValueId| producers[v].is_some_and(|p| nodes.contains(&p));
    let mut inputs = Vec::new();
    for n in &g.nodes[nodes.clone()] {
        for &v in n.inputs.iter().flatten() {
            if !inside(v) && g.values[v].constant.is_none() && !inputs.contains(&v) {
                inputs.push(v);
            }
        }
    }
    let mut outputs = Vec::new();
    let later = &g.nodes[nodes.end..];
    for n in &g.nodes[nodes.clone()] {
        for &v in &n.outputs {
            let read_later = later.iter().any(|m| m.inputs.contains(&Some(v)));
            if (read_later || g.outputs.contains(&v)) && !outputs.contains(&v) {
                outputs.push(v);
            }
        }
    }
    let mut sub = Graph {
        values: g.values.clone(),
        nodes: g.nodes[nodes].to_vec(),
        inputs: Vec::new(),
        outputs: outputs.clone(),
        opset: g.opset,
    };
    for &v in &inputs {
        let f = g.fact(v)?;
        sub.inputs.push(GraphInput {
            value: v,
            dtype: f.dtype,
            dims: f.shape.iter().map(|&d| Dim::Known(d)).collect(),
        });
    }
    Ok((sub, inputs, outputs))
}

impl HybridPlan {
    /// Binds a prepared graph to the GPU, cutting it around the nodes the GPU cannot run.
    /// Device faults are errors; unsupported nodes are not.
    pub fn new(
        ctx: Arc<GpuContext>,
        graph: Graph,
        storage: Storage,
        conv: GpuConv,
        cpu: &CpuOptions,
    ) -> Result<HybridPlan> {
        let n = graph.nodes.len();
        // nodes that touch a non-f32 value cannot run on the GPU
        let mut why_cpu: Vec<Option<String>> = graph
            .nodes
            .iter()
            .map(|node| {
                let bad = node
                    .inputs
                    .iter()
                    .flatten()
                    .chain(&node.outputs)
                    .find(|&&v| !gpu_value(&graph, v))?;
                Some(format!(
                    "value '{}' is not f32 (the GPU stores f32 activations only)",
                    graph.values[*bad].name
                ))
            })
            .collect();
        let mut segments = Vec::new();
        let mut start = 0;
        while start < n {
            let on_cpu = why_cpu[start].is_some();
            let end = (start..n)
                .find(|&i| why_cpu[i].is_some() != on_cpu)
                .unwrap_or(n);
            let (sub, inputs, outputs) = extract(&graph, start..end)?;
            let engine = if on_cpu {
                Engine::Cpu(Box::new(CpuPlan::new(sub, cpu)?), ExecState::default())
            } else {
                match GpuPlan::new_or_unsupported(ctx.clone(), &sub, storage, conv)? {
                    Ok(p) => Engine::Gpu(p),
                    Err(u) => {
                        // run that node on the CPU and cut the segment again
                        why_cpu[start + u.node] = Some(u.error.to_string());
                        continue;
                    }
                }
            };
            segments.push(Segment {
                engine,
                nodes: start..end,
                inputs,
                outputs,
            });
            start = end;
        }
        let cpu_nodes = why_cpu
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let node = &graph.nodes[i];
                w.as_ref()
                    .map(|w| (node.name.clone(), node.op.name().to_string(), w.clone()))
            })
            .collect();
        Ok(HybridPlan {
            graph,
            segments,
            cpu_nodes,
        })
    }

    /// (node, op, why) for every node that runs on the CPU; empty when the GPU runs it all.
    pub fn cpu_nodes(&self) -> &[(String, String, String)] {
        &self.cpu_nodes
    }

    /// Number of segments (1 when one device runs the whole graph).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Every host ↔ GPU copy at a cut (none when one segment runs the whole graph; the model's
    /// own input upload and output read-back are not listed).
    pub fn transfers(&self) -> Vec<Transfer> {
        let mut t = Vec::new();
        if self.segments.len() < 2 {
            return t;
        }
        let bytes = |v: ValueId| {
            self.graph.values[v]
                .fact
                .as_ref()
                .map_or(0, |f| f.size_bytes() as u64)
        };
        let model_input = |v: ValueId| self.graph.inputs.iter().any(|gi| gi.value == v);
        for s in &self.segments {
            if !matches!(s.engine, Engine::Gpu(_)) {
                continue;
            }
            for &v in s.inputs.iter().filter(|&&v| !model_input(v)) {
                t.push(Transfer {
                    value: self.graph.values[v].name.clone(),
                    upload: true,
                    bytes: bytes(v),
                });
            }
            for &v in s.outputs.iter().filter(|v| !self.graph.outputs.contains(v)) {
                t.push(Transfer {
                    value: self.graph.values[v].name.clone(),
                    upload: false,
                    bytes: bytes(v),
                });
            }
        }
        t
    }

    /// The storage type of the GPU segments.
    pub fn storage(&self) -> Option<Storage> {
        self.segments.iter().find_map(|s| match &s.engine {
            Engine::Gpu(p) => Some(p.storage()),
            Engine::Cpu(..) => None,
        })
    }

    /// One row per GPU dispatch and CPU step in execution order, plus one `transfer` row after
    /// each GPU segment (its uploads, submission and read-back).
    pub fn steps(&self) -> Vec<HybridStep> {
        let mut rows = Vec::new();
        for s in &self.segments {
            match &s.engine {
                Engine::Gpu(p) => {
                    for (node, op, shader, macs) in p.step_names() {
                        rows.push(HybridStep {
                            node,
                            op,
                            kernel: shader.to_string(),
                            macs,
                        });
                    }
                    rows.push(HybridStep {
                        node: format!("<host copies, nodes {}..{}>", s.nodes.start, s.nodes.end),
                        op: "Transfer".into(),
                        kernel: "transfer".into(),
                        macs: 0,
                    });
                }
                Engine::Cpu(p, _) => {
                    for st in p.steps() {
                        rows.push(HybridStep {
                            node: st.node_name,
                            op: st.op,
                            kernel: format!("cpu:{}", st.kernel),
                            macs: st.macs,
                        });
                    }
                }
            }
        }
        rows
    }

    /// Runs the graph. With `timed`, returns a time (ns) per row of [`HybridPlan::steps`]:
    /// GPU timestamps for dispatches (when the adapter has them, else `None`), wall time for
    /// CPU steps, and for a GPU segment's `transfer` row its host wall time minus its dispatches.
    pub fn run_timed(
        &mut self,
        inputs: Vec<Tensor>,
        timed: bool,
    ) -> Result<(Vec<Tensor>, Option<Vec<f64>>)> {
        if inputs.len() != self.graph.inputs.len() {
            return Err(Error::invalid(format!(
                "the model has {} inputs, {} given",
                self.graph.inputs.len(),
                inputs.len()
            )));
        }
        let mut values: HashMap<ValueId, Tensor> = HashMap::new();
        for (gi, t) in self.graph.inputs.iter().zip(inputs) {
            values.insert(gi.value, t);
        }
        let mut times: Option<Vec<f64>> = timed.then(Vec::new);
        let n_segments = self.segments.len();
        for si in 0..n_segments {
            let s = &mut self.segments[si];
            let ins = s
                .inputs
                .iter()
                .map(|v| {
                    values.get(v).cloned().ok_or_else(|| {
                        Error::invalid(format!(
                            "value '{}' is needed before it is computed",
                            self.graph.values[*v].name
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let outs = match &mut s.engine {
                Engine::Gpu(p) => {
                    let t0 = Instant::now();
                    let (o, t) = p.run_timed(ins, timed)?;
                    let wall = t0.elapsed().as_nanos() as f64;
                    match (&mut times, t) {
                        (Some(all), Some(t)) => {
                            let gpu: f64 = t.iter().sum();
                            all.extend(t);
                            all.push((wall - gpu).max(0.0));
                        }
                        _ => times = None,
                    }
                    o
                }
                Engine::Cpu(p, state) => {
                    let mut cpu_times = Vec::new();
                    let o = p.run_observed(state, ins, &mut |_, d: Duration| {
                        cpu_times.push(d.as_nanos() as f64)
                    })?;
                    if let Some(all) = &mut times {
                        all.extend(cpu_times);
                    }
                    o
                }
            };
            for (&v, t) in s.outputs.iter().zip(outs) {
                values.insert(v, t);
            }
            // drop what no later segment reads
            let later: Vec<ValueId> = self.segments[si + 1..]
                .iter()
                .flat_map(|o| o.inputs.iter().copied())
                .collect();
            values.retain(|v, _| later.contains(v) || self.graph.outputs.contains(v));
        }
        let outs = self
            .graph
            .outputs
            .iter()
            .map(|v| match values.get(v) {
                Some(t) => Ok(t.clone()),
                None => self.graph.constant(*v).cloned().ok_or_else(|| {
                    Error::invalid(format!(
                        "output '{}' was not computed",
                        self.graph.values[*v].name
                    ))
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((outs, times))
    }
}
