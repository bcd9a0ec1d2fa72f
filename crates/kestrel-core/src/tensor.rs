//! Dense, row-major tensors with owned storage.

use crate::{bail, ensure, with_dtype, DType, Element, Error, Result};
use half::f16;

/// Typed storage of a tensor's elements, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<half::bf16>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I16(Vec<i16>),
    I8(Vec<i8>),
    U64(Vec<u64>),
    U32(Vec<u32>),
    U16(Vec<u16>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

impl TensorData {
    /// Element type of the storage.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::I16(_) => DType::I16,
            TensorData::I8(_) => DType::I8,
            TensorData::U64(_) => DType::U64,
            TensorData::U32(_) => DType::U32,
            TensorData::U16(_) => DType::U16,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_dtype!(self.dtype(), T => T::slice(self).map_or(0, |s| s.len()))
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dense tensor: a shape and row-major storage whose length is the product of the shape.
///
/// Invariant: `data.len() == shape.iter().product()` (a scalar has shape `[]` and one element).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// Product of dimensions with overflow checking.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d)
            .ok_or_else(|| Error::TooLarge(format!("shape {shape:?} overflows")))
    })
}

/// Row-major strides (in elements) of a shape.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

impl Tensor {
    /// Builds a tensor, checking that the storage length matches the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self> {
        let n = checked_numel(&shape)?;
        ensure!(
            n == data.len(),
            "tensor of shape {shape:?} needs {n} elements, got {}",
            data.len()
        );
        Ok(Tensor { shape, data })
    }

    /// Builds a tensor from a typed vector.
    pub fn from_vec<T: Element>(shape: Vec<usize>, v: Vec<T>) -> Result<Self> {
        Tensor::new(shape, T::wrap(v))
    }

    /// A scalar (rank-0) tensor.
    pub fn scalar<T: Element>(v: T) -> Self {
        Tensor {
            shape: vec![],
            data: T::wrap(vec![v]),
        }
    }

    /// A tensor of zeros (false for bool).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Self> {
        let n = checked_numel(&shape)?;
        let data = with_dtype!(dtype, T => T::wrap(vec![T::default(); n]));
        Ok(Tensor { shape, data })
    }

    /// A tensor filled with one value.
    pub fn full<T: Element>(shape: Vec<usize>, v: T) -> Result<Self> {
        let n = checked_numel(&shape)?;
        Ok(Tensor {
            shape,
            data: T::wrap(vec![v; n]),
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut TensorData {
        &mut self.data
    }
    /// Splits into shape and storage.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }
    /// Size in bytes of the elements.
    pub fn size_bytes(&self) -> usize {
        self.len() * self.dtype().size_bytes()
    }

    /// Typed view of the elements; errors when the dtype differs.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        T::slice(&self.data).ok_or_else(|| {
            Error::invalid(format!(
                "expected {} tensor, got {}",
                T::DTYPE,
                self.dtype()
            ))
        })
    }

    /// Mutable typed view of the elements; errors when the dtype differs.
    pub fn as_slice_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        let dt = self.dtype();
        T::slice_mut(&mut self.data)
            .ok_or_else(|| Error::invalid(format!("expected {} tensor, got {dt}", T::DTYPE)))
    }

    /// f32 view; errors for other dtypes.
    pub fn as_f32(&self) -> Result<&[f32]> {
        self.as_slice::<f32>()
    }

    /// Mutable f32 view; errors for other dtypes.
    pub fn as_f32_mut(&mut self) -> Result<&mut [f32]> {
        self.as_slice_mut::<f32>()
    }

    /// Consumes the tensor and returns its typed vector.
    pub fn into_vec<T: Element>(self) -> Result<Vec<T>> {
        let dt = self.dtype();
        T::unwrap(self.data)
            .ok_or_else(|| Error::invalid(format!("expected {} tensor, got {dt}", T::DTYPE)))
    }

    /// Same storage with a new shape of equal element count.
    pub fn reshape(mut self, shape: Vec<usize>) -> Result<Self> {
        let n = checked_numel(&shape)?;
        ensure!(
            n == self.len(),
            "cannot reshape {:?} ({} elements) to {shape:?}",
            self.shape,
            self.len()
        );
        self.shape = shape;
        Ok(self)
    }

    /// Elements as i64 (integer, bool or float tensors; floats are truncated). Used for shape
    /// and index parameters.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            TensorData::I64(v) => v.clone(),
            TensorData::U64(v) => v.iter().map(|&x| x as i64).collect(),
            _ => self.to_f64_vec().iter().map(|&x| x as i64).collect(),
        }
    }

    /// Elements converted to f64 (lossless for every supported dtype).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_dtype!(self.dtype(), T => T::slice(&self.data).unwrap().iter().map(|x| x.to_f64()).collect())
    }

    /// Converts to another dtype with ONNX Cast semantics (float→int truncates toward zero,
    /// anything→bool is `!= 0`, NaN→int gives 0).
    pub fn cast(&self, to: DType) -> Tensor {
        if to == self.dtype() {
            return self.clone();
        }
        let data = match (&self.data, to) {
            (TensorData::F32(v), DType::F16) => {
                TensorData::F16(v.iter().map(|&x| f16::from_f32(x)).collect())
            }
            (TensorData::F16(v), DType::F32) => {
                TensorData::F32(v.iter().map(|&x| x.to_f32()).collect())
            }
            _ => {
                let src = self.to_f64_vec();
                with_dtype!(to, T => T::wrap(src.iter().map(|&x| {
                    if T::DTYPE == DType::Bool || T::DTYPE.is_float() || x.is_finite() {
                        T::from_f64(x)
                    } else {
                        T::from_f64(0.0)
                    }
                }).collect()))
            }
        };
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }

    /// Decodes little-endian element bytes (the ONNX `raw_data` and `.npy` layout). Errors when
    /// the byte count does not match the shape.
    pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, raw: &[u8]) -> Result<Tensor> {
        let numel = checked_numel(&shape)?;
        let need = numel
            .checked_mul(dtype.size_bytes())
            .ok_or_else(|| Error::TooLarge(format!("shape {shape:?} overflows")))?;
        ensure!(
            raw.len() == need,
            "shape {shape:?} of {dtype} needs {need} bytes, the data has {}",
            raw.len()
        );
        macro_rules! le {
            ($t:ty, $n:expr) => {
                raw.chunks_exact($n)
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                    .collect()
            };
        }
        let data = match dtype {
            DType::F32 => TensorData::F32(le!(f32, 4)),
            DType::F64 => TensorData::F64(le!(f64, 8)),
            DType::I64 => TensorData::I64(le!(i64, 8)),
            DType::I32 => TensorData::I32(le!(i32, 4)),
            DType::I16 => TensorData::I16(le!(i16, 2)),
            DType::I8 => TensorData::I8(raw.iter().map(|&b| b as i8).collect()),
            DType::U64 => TensorData::U64(le!(u64, 8)),
            DType::U32 => TensorData::U32(le!(u32, 4)),
            DType::U16 => TensorData::U16(le!(u16, 2)),
            DType::F16 => TensorData::F16(
                raw.chunks_exact(2)
                    .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            DType::BF16 => TensorData::BF16(
                raw.chunks_exact(2)
                    .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            DType::U8 => TensorData::U8(raw.to_vec()),
            DType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        };
        Tensor::new(shape, data)
    }

    /// The elements as little-endian bytes (inverse of [`Tensor::from_le_bytes`]).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_bytes());
        macro_rules! put {
            ($v:expr) => {
                $v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
            };
        }
        match &self.data {
            TensorData::F32(v) => put!(v),
            TensorData::F64(v) => put!(v),
            TensorData::I64(v) => put!(v),
            TensorData::I32(v) => put!(v),
            TensorData::I16(v) => put!(v),
            TensorData::I8(v) => put!(v),
            TensorData::U64(v) => put!(v),
            TensorData::U32(v) => put!(v),
            TensorData::U16(v) => put!(v),
            TensorData::F16(v) => put!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
            TensorData::BF16(v) => put!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
            TensorData::U8(v) => out.extend_from_slice(v),
            TensorData::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
        }
        out
    }

    /// Single element of a one-element tensor as f64.
    pub fn scalar_f64(&self) -> Result<f64> {
        if self.len() != 1 {
            bail!(
                "expected a single-element tensor, got shape {:?}",
                self.shape
            );
        }
        Ok(self.to_f64_vec()[0])
    }
}
