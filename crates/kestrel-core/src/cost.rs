//! The cost model: work and memory traffic of one node, from its facts alone.
//!
//! Traffic counts every byte a straightforward kernel reads or writes in DRAM terms, assuming
//! nothing stays in cache between layers: constant inputs (weights) read once, other inputs read
//! once, outputs written once. Algorithm-specific scratch traffic (an im2col matrix) is added by
//! the backend that knows the algorithm ([`im2col_scratch_bytes`]).

use crate::ops::conv::ConvGeometry;
use crate::ops::{Op, OpFamily};
use crate::Fact;

/// Work and traffic of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Multiply-accumulates.
    pub macs: u64,
    /// Floating-point operations: 2 per MAC plus one per elementwise/pooling/normalisation step.
    pub flops: u64,
    /// Bytes of constant inputs (weights, biases) read.
    pub weight_bytes: u64,
    /// Bytes of non-constant inputs (activations) read.
    pub input_bytes: u64,
    /// Bytes of outputs written.
    pub output_bytes: u64,
    /// Bytes of scratch buffers written and read back (im2col matrix), 0 for direct algorithms.
    pub scratch_bytes: u64,
}

impl Cost {
    /// All bytes moved.
    pub fn bytes(&self) -> u64 {
        self.weight_bytes + self.input_bytes + self.output_bytes + self.scratch_bytes
    }

    /// Arithmetic intensity in flops per byte moved.
    pub fn intensity(&self) -> f64 {
        self.flops as f64 / self.bytes().max(1) as f64
    }

    /// Sum of two costs.
    pub fn add(&self, o: &Cost) -> Cost {
        Cost {
            macs: self.macs + o.macs,
            flops: self.flops + o.flops,
            weight_bytes: self.weight_bytes + o.weight_bytes,
            input_bytes: self.input_bytes + o.input_bytes,
            output_bytes: self.output_bytes + o.output_bytes,
            scratch_bytes: self.scratch_bytes + o.scratch_bytes,
        }
    }
}

/// Cost of one evaluation of `op`. `inputs` pairs each present input's fact with whether it is a
/// constant.
pub fn op_cost(op: &Op, inputs: &[Option<(&Fact, bool)>], outputs: &[Fact]) -> Cost {
    let in_facts: Vec<Option<&Fact>> = inputs.iter().map(|i| i.map(|(f, _)| f)).collect();
    let macs = op.macs(&in_facts, outputs);
    let out_elems: u64 = outputs.iter().map(|f| f.numel() as u64).sum();
    let mut c = Cost {
        macs,
        ..Default::default()
    };
    for (f, konst) in inputs.iter().flatten() {
        if *konst {
            c.weight_bytes += f.size_bytes() as u64;
        } else {
            c.input_bytes += f.size_bytes() as u64;
        }
    }
    c.output_bytes = outputs.iter().map(|f| f.size_bytes() as u64).sum();
    let extra = match op {
        Op::Conv(a) => a.activation.map_or(0, |_| out_elems) + out_elems, // bias + activation
        Op::Gemm(a) => a.activation.map_or(0, |_| out_elems) + out_elems,
        Op::MaxPool(p) | Op::AveragePool(p) => {
            out_elems * p.kernel_shape.iter().product::<usize>() as u64
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool => c.input_bytes / 4,
        Op::BatchNorm { .. } => 0, // counted as MACs
        _ if op.family() == OpFamily::Elementwise || op.family() == OpFamily::Normalization => {
            out_elems
        }
        _ => 0,
    };
    c.flops = 2 * macs + extra;
    c
}

/// Scratch traffic of im2col+GEMM for a convolution: the unfolded matrix
/// (`C/group * kernel volume` rows by `output pixels` columns per group and image) is written once
/// and read once by the GEMM, in f32.
pub fn im2col_scratch_bytes(g: &ConvGeometry) -> u64 {
    let rows = (g.c_in_per_group() * g.kernel_volume()) as u64;
    let cols: u64 = g.output.iter().map(|&d| d as u64).product();
    2 * 4 * rows * cols * (g.group * g.batch) as u64
}
