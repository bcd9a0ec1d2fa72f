//! Writing an fp16 ONNX model for other engines: every `float` tensor of the graph becomes
//! `float16`, the graph's inputs and outputs stay `float` (a `Cast` is inserted behind each
//! input and in front of each output, as onnxconverter-common's `keep_io_types` does), so a
//! caller feeds the same tensors as before.
//!
//! Contracts: initializers and `Constant` values are rounded to nearest `f16`; values beyond
//! ±65504 are clamped to ±65504 (not turned into infinities) and counted, values that flush to
//! zero are counted; tensors that ONNX requires to be `float` whatever the data type (Resize's
//! `roi`/`scales`, Upsample's `scales`) are left as they are; `Cast(to=float)` becomes
//! `Cast(to=float16)`; stale `value_info` is dropped (types are inferred again by the reader).

use crate::{Error, Result};
use kestrel_core::half::f16;
use kestrel_onnx::proto::{tensor_proto::DataLocation, ModelProto, TensorProto};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::Path;

const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;

/// What the conversion did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct F16ExportReport {
    /// Tensors converted (initializers and Constant values).
    pub tensors_converted: usize,
    /// Float tensors left in f32 because the op requires it.
    pub tensors_kept_f32: usize,
    /// Values clamped to ±65504.
    pub clamped: usize,
    /// Non-zero values that became zero.
    pub flushed_to_zero: usize,
    pub bytes_before: usize,
    pub bytes_after: usize,
}

/// Inputs (op, position) that ONNX types as `float` regardless of the data type.
fn float_only_slot(op: &str, pos: usize) -> bool {
    matches!((op, pos), ("Resize", 1) | ("Resize", 2) | ("Upsample", 1))
}

/// Converts a float tensor proto to float16 in place (raw little-endian data).
fn convert_tensor(
    t: &mut TensorProto,
    base: Option<&Path>,
    rep: &mut F16ExportReport,
) -> Result<()> {
    let v = kestrel_onnx::tensor_from_proto(
        t,
        base,
        &kestrel_onnx::TensorLimits {
            max_tensor_bytes: 16 << 30,
        },
    )?;
    let data = v.as_f32()?;
    let mut raw = Vec::with_capacity(data.len() * 2);
    for &x in data {
        let c = if x.is_finite() && x.abs() > 65504.0 {
            rep.clamped += 1;
            65504f32.copysign(x)
        } else {
            x
        };
        let h = f16::from_f32(c);
        if c != 0.0 && h.to_f32() == 0.0 {
            rep.flushed_to_zero += 1;
        }
        raw.extend_from_slice(&h.to_bits().to_le_bytes());
    }
    t.data_type = Some(FLOAT16);
    t.float_data.clear();
    t.raw_data = Some(raw.into());
    t.external_data.clear();
    t.data_location = Some(DataLocation::Default as i32);
    rep.tensors_converted += 1;
    Ok(())
}

/// Reads the ONNX model at `path` and returns the bytes of a weights-only fp16 version: every
/// `float` initializer of at least [`kestrel_core::weights::MIN_F16_WEIGHT_ELEMS`] elements read
/// only as the weight of Conv/Gemm/MatMul is stored as `float16` and read through a
/// `Cast(to=float)`; the computation stays `float`. Any
/// engine runs it (onnxruntime folds the Casts at load); Kestrel's CPU backend keeps such
/// weights in f16 (half the file, half the weight memory).
pub fn export_f16_weights_only(path: &Path) -> Result<(Vec<u8>, F16ExportReport)> {
    let (mut proto, mut rep) = read_model(path)?;
    let base = path.parent();
    let g = proto
        .graph
        .as_mut()
        .ok_or_else(|| Error::invalid("the model has no graph"))?;
    // initializers read only as the weight operand of Conv/Gemm/MatMul (biases and other
    // float constants stay float)
    let mut weight_use: HashMap<String, bool> = HashMap::new();
    for n in &g.node {
        for (i, inp) in n.input.iter().enumerate() {
            let w = i == 1 && matches!(n.op_type(), "Conv" | "Gemm" | "MatMul");
            let e = weight_use.entry(inp.clone()).or_insert(true);
            *e &= w;
        }
    }
    let mut casts = Vec::new();
    for t in g.initializer.iter_mut() {
        let n: i64 = t.dims.iter().product();
        if t.data_type() != FLOAT
            || (n as usize) < kestrel_core::weights::MIN_F16_WEIGHT_ELEMS
            || !weight_use.get(t.name()).copied().unwrap_or(false)
        {
            continue;
        }
        let name = t.name().to_string();
        convert_tensor(t, base, &mut rep)?;
        let h = format!("{name}::f16");
        t.name = Some(h.clone());
        casts.push(cast_node(&h, &name, FLOAT));
    }
    // graph inputs that named an initializer (old opsets) keep their float type: drop them as
    // inputs, the Cast now produces the value
    let converted: HashSet<String> = casts.iter().map(|c| c.output[0].clone()).collect();
    g.input.retain(|vi| !converted.contains(vi.name()));
    let body = std::mem::take(&mut g.node);
    g.node = casts.into_iter().chain(body).collect();
    let out = proto.encode_to_vec();
    rep.bytes_after = out.len();
    Ok((out, rep))
}

/// Reads the ONNX model at `path` and returns the bytes of its fp16 version.
pub fn export_f16(path: &Path) -> Result<(Vec<u8>, F16ExportReport)> {
    let (mut proto, mut rep) = read_model(path)?;
    let base = path.parent();
    let g = proto
        .graph
        .as_mut()
        .ok_or_else(|| Error::invalid("the model has no graph"))?;

    // names that must stay float
    let mut keep: HashSet<String> = HashSet::new();
    for n in &g.node {
        for (i, inp) in n.input.iter().enumerate() {
            if float_only_slot(n.op_type(), i) && !inp.is_empty() {
                keep.insert(inp.clone());
            }
        }
    }
    let init_names: HashSet<String> = g.initializer.iter().map(|t| t.name().to_string()).collect();
    for t in g.initializer.iter_mut() {
        if t.data_type() != FLOAT {
            continue;
        }
        if keep.contains(t.name()) {
            rep.tensors_kept_f32 += 1;
        } else {
            convert_tensor(t, base, &mut rep)?;
        }
    }
    for n in g.node.iter_mut() {
        match n.op_type() {
            "Constant" | "ConstantOfShape" => {
                let node_name = n.name().to_string();
                let out_kept = n.output.iter().any(|o| keep.contains(o));
                for a in n.attribute.iter_mut() {
                    if a.name() == "value" {
                        if let Some(t) = a.t.as_mut() {
                            if t.data_type() == FLOAT {
                                if out_kept {
                                    rep.tensors_kept_f32 += 1;
                                } else {
                                    convert_tensor(t, base, &mut rep)?;
                                }
                            }
                        }
                    } else if a.name() == "value_float" || a.name() == "value_floats" {
                        return Err(Error::invalid(format!(
                            "node '{}': Constant with {} is not converted to fp16 (use a value tensor)",
                            node_name,
                            a.name()
                        )));
                    }
                }
            }
            "Cast" => {
                for a in n.attribute.iter_mut() {
                    if a.name() == "to" && a.i == Some(FLOAT as i64) {
                        let feeds_kept = n.output.iter().any(|o| keep.contains(o));
                        if !feeds_kept {
                            a.i = Some(FLOAT16 as i64);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // graph inputs: keep float, cast behind
    let elem = |vi: &kestrel_onnx::proto::ValueInfoProto| -> Option<i32> {
        match vi.r#type.as_ref()?.value.as_ref()? {
            kestrel_onnx::proto::type_proto::Value::TensorType(t) => t.elem_type,
            _ => None,
        }
    };
    let mut rename_inputs: HashMap<String, String> = HashMap::new();
    let mut head = Vec::new();
    for vi in &g.input {
        if elem(vi) == Some(FLOAT) && !init_names.contains(vi.name()) && !keep.contains(vi.name()) {
            let h = format!("{}__f16", vi.name());
            head.push(cast_node(vi.name(), &h, FLOAT16));
            rename_inputs.insert(vi.name().to_string(), h);
        }
    }
    for n in g.node.iter_mut() {
        for inp in n.input.iter_mut() {
            if let Some(h) = rename_inputs.get(inp.as_str()) {
                *inp = h.clone();
            }
        }
    }
    // graph outputs: producer writes an f16 value, a Cast writes the declared float output
    let mut tail = Vec::new();
    let mut rename_outputs: HashMap<String, String> = HashMap::new();
    for vi in &g.output {
        if elem(vi) == Some(FLOAT) {
            let h = format!("{}__f16", vi.name());
            let src = rename_inputs
                .get(vi.name())
                .cloned()
                .unwrap_or_else(|| vi.name().to_string());
            tail.push(cast_node(&h, vi.name(), FLOAT));
            rename_outputs.insert(vi.name().to_string(), h);
            if src != vi.name() {
                // an input passed straight through: the cast reads the input's f16 copy
                tail.last_mut().expect("pushed").input[0] = src;
                rename_outputs.remove(vi.name());
            }
        }
    }
    for n in g.node.iter_mut() {
        for o in n.output.iter_mut() {
            if let Some(h) = rename_outputs.get(o.as_str()) {
                *o = h.clone();
            }
        }
        for i in n.input.iter_mut() {
            if let Some(h) = rename_outputs.get(i.as_str()) {
                *i = h.clone();
            }
        }
    }
    let body = std::mem::take(&mut g.node);
    g.node = head.into_iter().chain(body).chain(tail).collect();
    g.value_info.clear();
    let out = proto.encode_to_vec();
    rep.bytes_after = out.len();
    Ok((out, rep))
}

/// The model's protobuf and a report with its size. A model Kestrel cannot load is refused here
/// too (same checks as `Model::load`).
fn read_model(path: &Path) -> Result<(ModelProto, F16ExportReport)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    crate::Model::load(path)?;
    let proto = ModelProto::decode(bytes.as_slice())
        .map_err(|e| Error::invalid(format!("{}: not an ONNX model: {e}", path.display())))?;
    let rep = F16ExportReport {
        bytes_before: bytes.len(),
        ..Default::default()
    };
    Ok((proto, rep))
}

fn cast_node(input: &str, output: &str, to: i32) -> kestrel_onnx::proto::NodeProto {
    crate::compress::onnx_edit::node(
        "Cast",
        &format!("{output}__cast"),
        &[input],
        output,
        vec![crate::compress::onnx_edit::attr_int("to", to as i64)],
    )
}
