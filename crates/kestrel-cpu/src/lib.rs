//! # kestrel-cpu
//!
//! The CPU backend. [`CpuPlan::new`] takes a prepared (typed) graph and, once per layer, chooses
//! the kernel and pre-packs its weights; [`CpuPlan::run`] then executes the graph with no
//! copies between layers (reshape-like ops move their input's storage when it dies there) and
//! with activation buffers recycled through a pool held in [`ExecState`], so a warm session
//! allocates no new activation memory.
//!
//! Kernels: im2col + GEMM, 1x1 GEMM, direct depthwise ([`conv`]); GEMM for Gemm/MatMul with
//! constant weights ([`gemm`]); everything else runs the reference implementation of
//! `kestrel-core`. SIMD paths are chosen at run time ([`simd`]).

pub mod cached;
pub mod conv;
pub mod conv_pool;
#[cfg(target_arch = "x86_64")]
pub mod conv_stem;
pub mod depthwise;
#[cfg(target_arch = "x86_64")]
pub mod depthwise_rows;
pub mod direct;
pub mod direct_small;
pub mod fft;
pub mod fp16;
pub mod fused_block;
mod fusion;
pub mod gemm;
pub mod hgemm;
pub mod hot;
pub mod hwbench;
#[cfg(target_arch = "x86_64")]
pub(crate) mod masked;
mod plan;
pub mod pointwise_narrow;
pub mod pool;
#[cfg(target_arch = "x86_64")]
pub mod pool_avx512;
pub mod sgemm;
pub mod shift;
pub mod simd;
pub mod softmax;
pub mod ukernel;
pub mod winograd;
#[cfg(target_arch = "x86_64")]
pub mod winograd_avx512;
#[cfg(target_arch = "x86_64")]
pub mod winograd_rows;

pub use conv::ConvAlgo;
pub use plan::{
    CpuOptions, CpuPlan, ExecState, StepInfo, StoragePrecision, MIN_REDUCTION_FOR_F16_WEIGHTS,
};
