//! Reading and writing NumPy `.npz` archives (a zip of `.npy` files), the exchange format for
//! raw tensors (`kestrel run --input-npz/--output-npz`). Little-endian arrays of f32, f16,
//! i64, i32, u8 and bool; sizes are checked against the data present before allocating.

use kestrel_core::{DType, Error, Result, Tensor};
use std::io::{Read, Write};
use std::path::Path;

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::Input {
        name: "npz".into(),
        msg: msg.to_string(),
    }
}

/// numpy type codes of the element types (bf16 has none: it is written widened to f32).
const DESCRS: &[(&str, DType)] = &[
    ("<f4", DType::F32),
    ("<f2", DType::F16),
    ("<f8", DType::F64),
    ("<i8", DType::I64),
    ("<i4", DType::I32),
    ("<i2", DType::I16),
    ("|i1", DType::I8),
    ("<u8", DType::U64),
    ("<u4", DType::U32),
    ("<u2", DType::U16),
    ("|u1", DType::U8),
    ("|b1", DType::Bool),
];

/// Parses one `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy array"));
    }
    let major = bytes[6];
    let (hlen, start) = if major == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        if bytes.len() < 12 {
            return Err(bad("truncated .npy header"));
        }
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or_else(|| bad("truncated .npy header"))?;
    let header = String::from_utf8_lossy(header);
    let field = |key: &str| -> Result<String> {
        let k = format!("'{key}':");
        let at = header
            .find(&k)
            .ok_or_else(|| bad(format!("npy header lacks {key}")))?;
        Ok(header[at + k.len()..].trim_start().to_string())
    };
    let d = field("descr")?;
    let d = d.trim_start_matches('\'');
    let d = &d[..d.find('\'').unwrap_or(d.len())];
    let dtype = match DESCRS.iter().find(|(code, _)| *code == d) {
        Some((_, dt)) => *dt,
        None => return Err(bad(format!("array type '{d}' is not supported"))),
    };
    if field("fortran_order")?.starts_with("True") {
        return Err(bad("Fortran-order arrays are not supported"));
    }
    let s = field("shape")?;
    let inner = &s[s.find('(').ok_or_else(|| bad("bad shape"))? + 1
        ..s.find(')').ok_or_else(|| bad("bad shape"))?];
    let shape: Vec<usize> = inner
        .split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<usize>()
                .map_err(|_| bad(format!("bad dimension '{t}'")))
        })
        .collect::<Result<_>>()?;
    Tensor::from_le_bytes(dtype, shape, &bytes[start + hlen..]).map_err(bad)
}

/// Serialises a tensor as `.npy` (format 1.0).
pub fn to_npy(t: &Tensor) -> Vec<u8> {
    if t.dtype() == DType::BF16 {
        return to_npy(&t.cast(DType::F32));
    }
    let code = DESCRS
        .iter()
        .find(|(_, dt)| *dt == t.dtype())
        .map_or("<f4", |(c, _)| *c);
    let shape = match t.shape().len() {
        0 => "()".to_string(),
        1 => format!("({},)", t.shape()[0]),
        _ => format!(
            "({})",
            t.shape()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        code
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.size_bytes());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out
}

/// Reads every array of an `.npz` file, keyed by name (without `.npy`), in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| bad(format!("{}: not a valid .npz: {e}", path.display())))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("npz entry {i}: {e}")))?;
        let name = entry.name().trim_end_matches(".npy").to_string();
        // refuse entries claiming more than a generous multiple of the archive size
        if entry.size() > size.saturating_mul(1024).max(1 << 20) {
            return Err(bad(format!(
                "npz entry '{name}' claims {} bytes",
                entry.size()
            )));
        }
        let mut buf = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut buf).map_err(io)?;
        out.push((
            name.clone(),
            parse_npy(&buf).map_err(|e| bad(format!("array '{name}': {e}")))?,
        ));
    }
    Ok(out)
}

/// Writes arrays to an `.npz` file (stored, uncompressed, as `numpy.savez` does).
pub fn write_npz(path: &Path, arrays: &[(String, Tensor)]) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let f = std::fs::File::create(path).map_err(io)?;
    let mut zip = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (name, t) in arrays {
        zip.start_file(format!("{name}.npy"), opts)
            .map_err(|e| bad(format!("writing {}: {e}", path.display())))?;
        zip.write_all(&to_npy(t)).map_err(io)?;
    }
    zip.finish()
        .map_err(|e| bad(format!("writing {}: {e}", path.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_every_dtype() {
        let ts = vec![
            Tensor::from_vec(
                vec![2, 3],
                vec![1.5f32, -2.0, 0.0, 3.25, f32::INFINITY, -0.0],
            )
            .unwrap(),
            Tensor::from_vec(vec![3], vec![1i64, -7, 1 << 40]).unwrap(),
            Tensor::from_vec(vec![], vec![5i32]).unwrap(),
            Tensor::from_vec(vec![2], vec![true, false]).unwrap(),
            Tensor::from_vec(vec![1], vec![200u8]).unwrap(),
            Tensor::from_vec(vec![1], vec![kestrel_core::half::f16::from_f32(0.5)]).unwrap(),
            Tensor::from_vec(vec![2], vec![-3i8, 7]).unwrap(),
            Tensor::from_vec(vec![2], vec![1.5f64, -1e300]).unwrap(),
            Tensor::from_vec(vec![1], vec![u64::MAX]).unwrap(),
        ];
        for t in ts {
            assert_eq!(parse_npy(&to_npy(&t)).unwrap(), t);
        }
    }

    #[test]
    fn truncated_npy_is_an_error() {
        let t = Tensor::from_vec(vec![4], vec![1f32; 4]).unwrap();
        let b = to_npy(&t);
        assert!(parse_npy(&b[..b.len() - 1]).is_err());
        assert!(parse_npy(&b[..5]).is_err());
    }
}
