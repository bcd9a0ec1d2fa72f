//! Graph passes run on a prepared (typed, folded) graph. Each pass keeps the graph's
//! invariants: topological order, facts on every used value, outputs unchanged in meaning.

mod bn_fold;
mod dead;
mod fuse;

pub use bn_fold::fold_batch_norm;
pub use dead::{remove_dead_nodes, remove_identities};
pub use fuse::{clip_to_unary, fuse_activations};

use crate::{Graph, Result};

/// Runs every pass in a sensible order.
pub fn optimize(g: &mut Graph) -> Result<()> {
    // dead readers would block fusion (a fused value must have a single reader)
    remove_dead_nodes(g);
    remove_identities(g);
    clip_to_unary(g);
    fold_batch_norm(g)?;
    fuse_activations(g);
    remove_dead_nodes(g);
    Ok(())
}

/// True when value `v` is read only by node `by` and is not a graph output.
pub(crate) fn single_use(g: &Graph, consumers: &[Vec<usize>], v: usize, by: usize) -> bool {
    consumers[v] == [by] && !g.outputs.contains(&v)
}
