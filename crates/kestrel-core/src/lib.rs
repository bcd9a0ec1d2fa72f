//! # kestrel-core
//!
//! The backend-independent heart of Kestrel:
//! - [`Tensor`] and [`DType`]: dense row-major tensors;
//! - [`graph`]: the typed graph IR (values, nodes, facts);
//! - [`ops`]: the op set, each op with its attributes, shape inference, cost and a plain
//!   reference implementation ([`ops::Op::eval`]) that every optimised kernel is tested against;
//! - [`prepare`]: specialisation of a graph to concrete input shapes (shape inference plus constant
//!   folding), then the [`passes`] (BatchNorm folding, activation fusion, dead-node removal).
//!
//! Nothing here knows about ONNX files or about a particular backend: importers produce a
//! [`graph::Graph`], backends consume a [`graph::Graph`] whose every value has a concrete fact.

pub mod cost;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod ops;
pub mod passes;
pub mod prepare;
pub mod tensor;
pub mod weights;

pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use graph::{Dim, Fact, Graph, Node, NodeId, ValueId};
pub use half;
pub use ops::Op;
pub use tensor::{checked_numel, strides_of, Tensor, TensorData};
