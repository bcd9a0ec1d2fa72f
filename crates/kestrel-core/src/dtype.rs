//! Element types a tensor can hold.

use half::f16;

/// The element type of a tensor. f32 is the compute type; the integer and bool types carry shapes,
/// indices and masks; f16 is a storage type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Lower-case name as used in messages (`f32`, `i64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U64 => "u64",
            DType::U32 => "u32",
            DType::U16 => "u16",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }

    /// True for the floating-point types.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that can be a tensor element. Implemented for exactly the types of [`DType`].
pub trait Element:
    Copy + Default + PartialEq + PartialOrd + Send + Sync + std::fmt::Debug + 'static
{
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Lossy conversion from f64 (used by Cast and by constant parameters).
    fn from_f64(v: f64) -> Self;
    /// Lossy conversion to f64.
    fn to_f64(self) -> f64;
    /// The elements when `data` holds this type.
    fn slice(data: &crate::TensorData) -> Option<&[Self]>;
    /// Mutable elements when `data` holds this type.
    fn slice_mut(data: &mut crate::TensorData) -> Option<&mut [Self]>;
    /// Wraps a vector of this type.
    fn wrap(v: Vec<Self>) -> crate::TensorData;
    /// Unwraps the vector when `data` holds this type.
    fn unwrap(data: crate::TensorData) -> Option<Vec<Self>>;
}

macro_rules! impl_storage {
    ($t:ty, $d:ident) => {
        fn slice(data: &crate::TensorData) -> Option<&[Self]> {
            match data {
                crate::TensorData::$d(v) => Some(v),
                _ => None,
            }
        }
        fn slice_mut(data: &mut crate::TensorData) -> Option<&mut [Self]> {
            match data {
                crate::TensorData::$d(v) => Some(v),
                _ => None,
            }
        }
        fn wrap(v: Vec<Self>) -> crate::TensorData {
            crate::TensorData::$d(v)
        }
        fn unwrap(data: crate::TensorData) -> Option<Vec<Self>> {
            match data {
                crate::TensorData::$d(v) => Some(v),
                _ => None,
            }
        }
    };
}

macro_rules! impl_element_num {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            impl_storage!($t, $d);
        }
    };
}
impl_element_num!(f32, F32);
impl_element_num!(f64, F64);
impl_element_num!(i64, I64);
impl_element_num!(i32, I32);
impl_element_num!(i16, I16);
impl_element_num!(i8, I8);
impl_element_num!(u64, U64);
impl_element_num!(u32, U32);
impl_element_num!(u16, U16);
impl_element_num!(u8, U8);

impl Element for half::bf16 {
    const DTYPE: DType = DType::BF16;
    fn from_f64(v: f64) -> Self {
        half::bf16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        half::bf16::to_f64(self)
    }
    impl_storage!(half::bf16, BF16);
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    impl_storage!(f16, F16);
}

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_f64(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
    impl_storage!(bool, Bool);
}

/// Runs `$body` with the type alias `$T` bound to the Rust type of the dtype `$dt`.
#[macro_export]
macro_rules! with_dtype {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F16 => {
                type $T = $crate::half::f16;
                $body
            }
            $crate::DType::BF16 => {
                type $T = $crate::half::bf16;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::I16 => {
                type $T = i16;
                $body
            }
            $crate::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::DType::U64 => {
                type $T = u64;
                $body
            }
            $crate::DType::U32 => {
                type $T = u32;
                $body
            }
            $crate::DType::U16 => {
                type $T = u16;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::Bool => {
                type $T = bool;
                $body
            }
        }
    };
}
