//! Conv/Gemm + activation fusion, and Clip with constant bounds turned into a unary op.

use super::single_use;
use crate::ops::Unary;
use crate::{Graph, Op};

/// `Clip(x, min, max)` with constant (or absent) bounds on f32 becomes `Unary::Clip`.
pub fn clip_to_unary(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        if g.nodes[i].op != Op::Clip {
            continue;
        }
        let x = g.nodes[i].inputs[0];
        if x.and_then(|v| g.values[v].fact.as_ref()).map(|f| f.dtype) != Some(crate::DType::F32) {
            continue;
        }
        let bound = |k: usize, default: f32| -> Option<f32> {
            match g.nodes[i].inputs.get(k).copied().flatten() {
                None => Some(default),
                Some(v) => g
                    .constant(v)
                    .and_then(|t| t.scalar_f64().ok())
                    .map(|v| v as f32),
            }
        };
        if let (Some(min), Some(max)) = (bound(1, f32::NEG_INFINITY), bound(2, f32::INFINITY)) {
            g.nodes[i].op = Op::Unary(Unary::Clip { min, max });
            g.nodes[i].inputs.truncate(1);
        }
    }
}

/// Fuses a unary activation into the Conv or Gemm that feeds it when the intermediate value
/// has no other reader.
pub fn fuse_activations(g: &mut Graph) {
    let consumers = g.consumers();
    let producers = g.producers();
    let mut remove = vec![false; g.nodes.len()];
    for ai in 0..g.nodes.len() {
        let Op::Unary(act) = g.nodes[ai].op else {
            continue;
        };
        let Some(x) = g.nodes[ai].inputs[0] else {
            continue;
        };
        let Some(pi) = producers[x] else { continue };
        if remove[pi] || !single_use(g, &consumers, x, ai) {
            continue;
        }
        let slot = match &mut g.nodes[pi].op {
            Op::Conv(c) if c.activation.is_none() => &mut c.activation,
            Op::Gemm(c) if c.activation.is_none() => &mut c.activation,
            _ => continue,
        };
        *slot = Some(act);
        g.nodes[pi].outputs = g.nodes[ai].outputs.clone();
        remove[ai] = true;
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !remove[i - 1]
    });
}
