//! Kestrel's GPU backend on wgpu: Vulkan, Metal, DX12, GLES and WebGPU from one code base.
//!
//! A [`GpuPlan`] binds a prepared graph to compute shaders once: weights uploaded, activation
//! buffers assigned by liveness (views alias their source), every dispatch's parameters and
//! bindings fixed. A run uploads the inputs, submits one command buffer and reads the outputs
//! back: no per-layer round trips to the host. Storage is f32 or f16 ([`Storage`]); arithmetic
//! is f32 in both. Ops without a GPU kernel are refused at plan time with the node named
//! ([`GpuPlan::new_or_unsupported`] reports the node so that the caller can split the graph).

pub mod context;
pub mod kernels;
pub(crate) mod plan;

pub use context::{GpuContext, GpuError};
pub use kernels::{BigTile, Shader, Storage};
pub use plan::region::Band;
pub use plan::{GpuConv, GpuPlan, RegionStats, Unsupported};
pub use wgpu;
