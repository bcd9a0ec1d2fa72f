//! Dead-node removal and Identity elimination.

use crate::{Graph, Op};

/// Removes nodes none of whose outputs is needed by a graph output.
pub fn remove_dead_nodes(g: &mut Graph) {
    let mut needed = vec![false; g.values.len()];
    for &o in &g.outputs {
        needed[o] = true;
    }
    let mut keep = vec![false; g.nodes.len()];
    for i in (0..g.nodes.len()).rev() {
        if g.nodes[i].outputs.iter().any(|&o| needed[o]) {
            keep[i] = true;
            for v in g.nodes[i].inputs.iter().flatten() {
                needed[*v] = true;
            }
        }
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

/// Removes Identity and single-output Dropout nodes by making their readers read the input
/// directly. A node whose output is a graph output is kept (the output keeps its name).
pub fn remove_identities(g: &mut Graph) {
    let mut remove = vec![false; g.nodes.len()];
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        let is_id = matches!(n.op, Op::Identity) || (n.op == Op::Dropout && n.outputs.len() == 1);
        let Some(src) = n.inputs.first().copied().flatten() else {
            continue;
        };
        let out = n.outputs[0];
        if !is_id || g.outputs.contains(&out) {
            continue;
        }
        for m in g.nodes.iter_mut() {
            for v in m.inputs.iter_mut().flatten() {
                if *v == out {
                    *v = src;
                }
            }
        }
        remove[i] = true;
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !remove[i - 1]
    });
}
