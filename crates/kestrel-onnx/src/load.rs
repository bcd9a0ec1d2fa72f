//! Reading a model file into a [`Graph`].

use crate::attrs::{convert_attrs, NodeAttrs};
use crate::convert::convert_node;
use crate::proto::{type_proto, ModelProto};
use crate::tensor::{dtype_from_onnx, tensor_from_proto, TensorLimits};
use kestrel_core::graph::{Dim, GraphInput, Node};
use kestrel_core::{Error, Graph, Result, ValueId};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// Options for loading.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Largest single tensor, in bytes, a model may declare (default 4 GiB).
    pub max_tensor_bytes: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_tensor_bytes: 4 << 30,
        }
    }
}

/// Metadata of the model file.
#[derive(Clone, Debug, Default)]
pub struct ModelInfo {
    pub producer: String,
    pub ir_version: i64,
    pub opset: i64,
    pub graph_name: String,
}

/// Loads an ONNX model file. External-data tensors are read relative to the file's folder.
///
/// The file is memory-mapped rather than read: tensor bytes are decoded as slices of the mapping
/// and each initializer's pages are handed back to the kernel once it is converted, so the load
/// peak is about the decoded weights plus one tensor, not the file plus the weights (VGG-16:
/// 553 MB of weights). Falls back to reading the file where it cannot be mapped.
pub fn load_model(path: &Path, opts: &LoadOptions) -> Result<(Graph, ModelInfo)> {
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let dir = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > 0 {
        // SAFETY: a private, read-only mapping of a file this process only reads; the bytes
        // are copied into tensors while loading and the mapping is unmapped afterwards. (If
        // another process truncates the file during those milliseconds, reading the lost pages
        // faults — the same hazard every mmap-based loader accepts.)
        if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
            return load_model_buffer(prost::bytes::Bytes::from_owner(map), dir, opts, true);
        }
    }
    let bytes = std::fs::read(path).map_err(io)?;
    load_model_buffer(prost::bytes::Bytes::from(bytes), dir, opts, false)
}

/// Gives the pages wholly inside `b` (a slice of a private read-only file mapping) back to the
/// kernel: they leave the resident set and would be re-read from the file if touched again.
fn release_mapped(b: &[u8]) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let start = (b.as_ptr() as usize).div_ceil(PAGE) * PAGE;
        let end = (b.as_ptr() as usize + b.len()) / PAGE * PAGE;
        if end > start {
            // SAFETY: [start, end) lies inside the mapping `b` points into (whole pages within
            // `b`); MADV_DONTNEED on a private file mapping that was never written only drops
            // pages, whose contents the file still holds.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = b;
}

/// Loads an ONNX model from bytes. `base_dir` is where external data lives (`None` refuses it).
pub fn load_model_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: &LoadOptions,
) -> Result<(Graph, ModelInfo)> {
    load_model_buffer(
        prost::bytes::Bytes::copy_from_slice(bytes),
        base_dir,
        opts,
        false,
    )
}

/// Loads from an owned buffer; tensor bytes are decoded as slices of it (no intermediate copy).
/// `mapped`: the buffer is a file mapping whose pages can be released as tensors are converted
/// (see [`load_model`]); otherwise the peak memory of loading is the file plus the tensors.
fn load_model_buffer(
    bytes: prost::bytes::Bytes,
    base_dir: Option<&Path>,
    opts: &LoadOptions,
    mapped: bool,
) -> Result<(Graph, ModelInfo)> {
    if bytes.is_empty() {
        return Err(Error::InvalidModel("the file is empty".into()));
    }
    let model = ModelProto::decode(bytes).map_err(|e| {
        Error::InvalidModel(format!(
            "not a valid ONNX protobuf (truncated or corrupt?): {e}"
        ))
    })?;
    let limits = TensorLimits {
        max_tensor_bytes: opts.max_tensor_bytes,
    };
    let mut opset = None;
    for o in &model.opset_import {
        match o.domain() {
            "" | "ai.onnx" => opset = Some(o.version()),
            _ => {}
        }
    }
    let opset = match opset {
        Some(v) => v,
        None if model.opset_import.is_empty() => {
            return Err(Error::InvalidModel("model declares no opset".into()))
        }
        None => 1, // only custom domains: any default-domain node will be refused below
    };
    if opset < crate::MIN_OPSET {
        return Err(Error::InvalidModel(format!(
            "opset {opset} is older than {}, the oldest Kestrel imports",
            crate::MIN_OPSET
        )));
    }
    let gp = model.graph.as_ref().ok_or_else(|| {
        Error::InvalidModel("model has no graph (truncated or not an ONNX model?)".into())
    })?;
    let mut g = Graph {
        opset,
        ..Default::default()
    };
    let mut by_name: HashMap<String, ValueId> = HashMap::new();
    for init in &gp.initializer {
        let t = tensor_from_proto(init, base_dir, &limits)?;
        if let (true, Some(raw)) = (mapped, &init.raw_data) {
            release_mapped(raw);
        }
        let id = g.add_constant(init.name(), t);
        by_name.insert(init.name().to_string(), id);
    }
    if !gp.sparse_initializer.is_empty() {
        return Err(Error::InvalidModel(
            "sparse initializers are not supported".into(),
        ));
    }
    for vi in &gp.input {
        if by_name.contains_key(vi.name()) {
            continue; // an initializer listed as input (IR < 4 style): it stays a constant
        }
        let (dtype, dims) = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(tt)) => {
                let dtype = dtype_from_onnx(tt.elem_type()).map_err(|e| Error::Input {
                    name: vi.name().into(),
                    msg: e.to_string(),
                })?;
                let dims = match &tt.shape {
                    Some(s) => s
                        .dim
                        .iter()
                        .enumerate()
                        .map(|(i, d)| {
                            use crate::proto::tensor_shape_proto::dimension::Value;
                            match &d.value {
                                Some(Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
                                Some(Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                                _ => Dim::Sym(format!("d{i}")),
                            }
                        })
                        .collect(),
                    None => {
                        return Err(Error::InvalidModel(format!(
                            "input '{}' has no shape",
                            vi.name()
                        )))
                    }
                };
                (dtype, dims)
            }
            _ => {
                return Err(Error::InvalidModel(format!(
                    "input '{}' is not a tensor (sequences, maps and optionals are not supported)",
                    vi.name()
                )))
            }
        };
        let id = g.add_value(vi.name());
        by_name.insert(vi.name().to_string(), id);
        g.inputs.push(GraphInput {
            value: id,
            dtype,
            dims,
        });
    }
    for (idx, np) in gp.node.iter().enumerate() {
        let name = if np.name().is_empty() {
            format!("{}_{idx}", np.op_type())
        } else {
            np.name().to_string()
        };
        let domain = np.domain();
        if !(domain.is_empty() || domain == "ai.onnx") {
            return Err(Error::Unsupported {
                node: name,
                op_type: format!("{domain}::{}", np.op_type()),
                opset,
                msg: "ops outside the default ONNX domain are not supported".into(),
            });
        }
        let attrs = convert_attrs(np, &limits)?;
        let na = NodeAttrs {
            name: &name,
            op_type: np.op_type(),
            opset,
            attrs: &attrs,
        };
        // Constant nodes become constant values directly.
        if np.op_type() == "Constant" {
            let t = crate::convert::constant_value(&na)?;
            let out = np
                .output
                .first()
                .ok_or_else(|| na.invalid("Constant without output"))?;
            let id = g.add_constant(out.as_str(), t);
            by_name.insert(out.clone(), id);
            continue;
        }
        let conv = convert_node(&na)?;
        let mut inputs: Vec<Option<ValueId>> = Vec::new();
        for inp in &np.input {
            if inp.is_empty() {
                inputs.push(None);
            } else {
                let id = *by_name.entry(inp.clone()).or_insert_with(|| {
                    // forward reference (unsorted graph) or a missing value: sorted out below
                    g.values.push(kestrel_core::graph::Value {
                        name: inp.clone(),
                        fact: None,
                        constant: None,
                    });
                    g.values.len() - 1
                });
                inputs.push(Some(id));
            }
        }
        if crate::convert::is_resize_v10(np.op_type(), opset) && inputs.len() == 2 {
            // (X, scales) → (X, roi, scales)
            inputs.insert(1, None);
        }
        for (slot, t) in conv.const_inputs {
            if inputs.len() <= slot {
                inputs.resize(slot + 1, None);
            }
            inputs[slot] = Some(g.add_constant(format!("{name}.attr{slot}"), t));
        }
        let mut out_names: Vec<&String> = np.output.iter().collect();
        while out_names.last().is_some_and(|s| s.is_empty()) {
            out_names.pop();
        }
        let mut outputs = Vec::new();
        for (k, o) in out_names.iter().enumerate() {
            let nm = if o.is_empty() {
                format!("{name}.unused{k}")
            } else {
                (*o).clone()
            };
            let id = match by_name.get(&nm) {
                Some(&id)
                    if g.values[id].constant.is_none()
                        && !g.inputs.iter().any(|i| i.value == id) =>
                {
                    id
                }
                Some(_) => return Err(na.invalid(format!("output '{nm}' is produced twice"))),
                None => {
                    let id = g.add_value(nm.clone());
                    by_name.insert(nm, id);
                    id
                }
            };
            outputs.push(id);
        }
        g.nodes.push(Node {
            name,
            op: conv.op,
            inputs,
            outputs,
            source_op: np.op_type().to_string(),
            attrs: attrs.clone(),
        });
    }
    for o in &gp.output {
        let id = by_name.get(o.name()).copied().ok_or_else(|| {
            Error::InvalidModel(format!(
                "graph output '{}' is produced by nothing",
                o.name()
            ))
        })?;
        g.outputs.push(id);
    }
    g.sort_topologically()?;
    let info = ModelInfo {
        producer: format!("{} {}", model.producer_name(), model.producer_version())
            .trim()
            .to_string(),
        ir_version: model.ir_version(),
        opset,
        graph_name: gp.name().to_string(),
    };
    Ok((g, info))
}
