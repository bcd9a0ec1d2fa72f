//! TensorProto → [`Tensor`], including external data, with every size checked before allocating.

use crate::proto::{tensor_proto::DataLocation, TensorProto};
use kestrel_core::{half::f16, DType, Error, Result, Tensor, TensorData};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// Limits applied while reading tensors.
#[derive(Clone, Debug)]
pub struct TensorLimits {
    /// Largest tensor, in bytes, that may be materialised.
    pub max_tensor_bytes: u64,
}

/// Maps an ONNX `TensorProto.DataType` code to a Kestrel dtype.
pub fn dtype_from_onnx(code: i32) -> Result<DType> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        16 => DType::BF16,
        other => {
            let name = crate::proto::tensor_proto::DataType::try_from(other)
                .map(|d| format!("{d:?}"))
                .unwrap_or_else(|_| format!("code {other}"));
            return Err(Error::invalid(format!(
                "element type {name} is not supported"
            )));
        }
    })
}

fn bad(name: &str, msg: impl std::fmt::Display) -> Error {
    Error::InvalidModel(format!("tensor '{name}': {msg}"))
}

/// Decodes a tensor. `base_dir` is the model's folder, needed for external data (refused when
/// `None`). Sizes are checked against the data actually present and against `limits`.
pub fn tensor_from_proto(
    t: &TensorProto,
    base_dir: Option<&Path>,
    limits: &TensorLimits,
) -> Result<Tensor> {
    let name = t.name();
    let dtype = dtype_from_onnx(t.data_type()).map_err(|e| bad(name, e))?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(bad(name, format!("negative dimension {d}")));
        }
        shape.push(d as usize);
    }
    let numel = kestrel_core::checked_numel(&shape).map_err(|e| bad(name, e))?;
    let bytes = (numel as u64).saturating_mul(dtype.size_bytes() as u64);
    if bytes > limits.max_tensor_bytes {
        return Err(Error::TooLarge(format!(
            "tensor '{name}' of shape {shape:?} needs {bytes} bytes, over the limit of {}",
            limits.max_tensor_bytes
        )));
    }
    if t.data_location() == DataLocation::External {
        let raw = read_external(t, base_dir, bytes)?;
        return from_raw(name, dtype, shape, &raw);
    }
    if let Some(raw) = &t.raw_data {
        return from_raw(name, dtype, shape, raw);
    }
    let check = |n: usize| -> Result<()> {
        if n != numel {
            Err(bad(
                name,
                format!("shape {shape:?} needs {numel} values, the file has {n}"),
            ))
        } else {
            Ok(())
        }
    };
    let data = match dtype {
        DType::F32 => {
            check(t.float_data.len())?;
            TensorData::F32(t.float_data.clone())
        }
        DType::F64 => {
            check(t.double_data.len())?;
            TensorData::F64(t.double_data.clone())
        }
        DType::I64 => {
            check(t.int64_data.len())?;
            TensorData::I64(t.int64_data.clone())
        }
        DType::U64 => {
            check(t.uint64_data.len())?;
            TensorData::U64(t.uint64_data.clone())
        }
        DType::U32 => {
            check(t.uint64_data.len())?;
            TensorData::U32(t.uint64_data.iter().map(|&v| v as u32).collect())
        }
        DType::F16 => {
            check(t.int32_data.len())?;
            TensorData::F16(
                t.int32_data
                    .iter()
                    .map(|&v| f16::from_bits(v as u16))
                    .collect(),
            )
        }
        DType::BF16 => {
            check(t.int32_data.len())?;
            TensorData::BF16(
                t.int32_data
                    .iter()
                    .map(|&v| kestrel_core::half::bf16::from_bits(v as u16))
                    .collect(),
            )
        }
        // int32_data carries int32, int16, int8, uint16, uint8 and bool
        DType::I32 => {
            check(t.int32_data.len())?;
            TensorData::I32(t.int32_data.clone())
        }
        DType::I16 => {
            check(t.int32_data.len())?;
            TensorData::I16(t.int32_data.iter().map(|&v| v as i16).collect())
        }
        DType::I8 => {
            check(t.int32_data.len())?;
            TensorData::I8(t.int32_data.iter().map(|&v| v as i8).collect())
        }
        DType::U16 => {
            check(t.int32_data.len())?;
            TensorData::U16(t.int32_data.iter().map(|&v| v as u16).collect())
        }
        DType::U8 => {
            check(t.int32_data.len())?;
            TensorData::U8(t.int32_data.iter().map(|&v| v as u8).collect())
        }
        DType::Bool => {
            check(t.int32_data.len())?;
            TensorData::Bool(t.int32_data.iter().map(|&v| v != 0).collect())
        }
    };
    Tensor::new(shape, data)
}

fn from_raw(name: &str, dtype: DType, shape: Vec<usize>, raw: &[u8]) -> Result<Tensor> {
    Tensor::from_le_bytes(dtype, shape, raw).map_err(|e| bad(name, e))
}

/// Reads external data, refusing locations that leave the model's folder (absolute paths, `..`,
/// or symbolic links that resolve outside it).
fn read_external(t: &TensorProto, base_dir: Option<&Path>, bytes: u64) -> Result<Vec<u8>> {
    let name = t.name();
    let base = base_dir.ok_or_else(|| bad(name, "external data needs the model's folder"))?;
    let (mut location, mut offset, mut length) = (None, 0u64, None);
    for kv in &t.external_data {
        match kv.key() {
            "location" => location = Some(kv.value().to_string()),
            "offset" => {
                offset = kv
                    .value()
                    .parse()
                    .map_err(|_| bad(name, "bad external offset"))?
            }
            "length" => {
                length = Some(
                    kv.value()
                        .parse::<u64>()
                        .map_err(|_| bad(name, "bad external length"))?,
                )
            }
            _ => {}
        }
    }
    let location = location.ok_or_else(|| bad(name, "external data without location"))?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad(
            name,
            format!("external data path '{location}' leaves the model's folder"),
        ));
    }
    let path = base.join(rel);
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let canon_base = base.canonicalize().map_err(|e| Error::Io {
        path: base.display().to_string(),
        source: e,
    })?;
    let canon = path.canonicalize().map_err(io)?;
    if !canon.starts_with(&canon_base) {
        return Err(bad(
            name,
            format!("external data path '{location}' resolves outside the model's folder"),
        ));
    }
    let length = length.unwrap_or(bytes);
    if length != bytes {
        return Err(bad(
            name,
            format!("external length {length} differs from the {bytes} bytes the shape needs"),
        ));
    }
    let mut f = std::fs::File::open(&canon).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(bad(
            name,
            format!("external data [{offset}, +{length}) exceeds file size {size}"),
        ));
    }
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; length as usize];
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}
