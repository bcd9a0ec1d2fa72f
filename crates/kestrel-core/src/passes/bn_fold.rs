//! Folds an inference BatchNormalization into the Conv that feeds it.

use super::single_use;
use crate::ops::norm::batch_norm_affine;
use crate::{Graph, Op, Result, Tensor};

/// `BN(Conv(x, W, B))` becomes `Conv(x, W', B')` with `W' = W * a`, `B' = B * a + b` per output
/// channel (`a`, `b` from [`batch_norm_affine`]). Requires constant W, B and BN parameters, and the
/// Conv output read only by the BN.
pub fn fold_batch_norm(g: &mut Graph) -> Result<()> {
    let consumers = g.consumers();
    let producers = g.producers();
    let mut remove = vec![false; g.nodes.len()];
    for bi in 0..g.nodes.len() {
        let Op::BatchNorm { epsilon } = g.nodes[bi].op else {
            continue;
        };
        let Some(x) = g.nodes[bi].inputs[0] else {
            continue;
        };
        let Some(ci) = producers[x] else { continue };
        if !matches!(&g.nodes[ci].op, Op::Conv(a) if a.activation.is_none())
            || !single_use(g, &consumers, x, bi)
            || remove[ci]
        {
            continue;
        }
        let params: Option<Vec<&Tensor>> = g.nodes[bi].inputs[1..5]
            .iter()
            .map(|v| v.and_then(|v| g.constant(v)))
            .collect();
        let Some(params) = params else { continue };
        // the weight may be stored in f16 behind a Cast (crate::weights); the folded weight is f32
        let Some(w) = g.nodes[ci].inputs[1].and_then(|v| crate::weights::weight(g, &producers, v))
        else {
            continue;
        };
        let w = w.to_f32();
        let bias = match g.nodes[ci].inputs.get(2).copied().flatten() {
            Some(v) => match g.constant(v) {
                Some(t) => Some(t.as_f32()?.to_vec()),
                None => continue,
            },
            None => None,
        };
        let m = w.shape()[0];
        if params.iter().any(|p| p.len() != m) {
            continue;
        }
        let (a, b) = batch_norm_affine(
            epsilon,
            params[0].as_f32()?,
            params[1].as_f32()?,
            params[2].as_f32()?,
            params[3].as_f32()?,
        );
        let per = w.len() / m.max(1);
        let mut wv = w.as_f32()?.to_vec();
        for (o, chunk) in wv.chunks_mut(per.max(1)).enumerate() {
            for v in chunk {
                *v *= a[o];
            }
        }
        let bv: Vec<f32> = (0..m)
            .map(|o| bias.as_ref().map_or(0.0, |b| b[o]) * a[o] + b[o])
            .collect();
        let wshape = w.shape().to_vec();
        let conv_name = g.nodes[ci].name.clone();
        let wid = g.add_constant(
            format!("{conv_name}.W_bnfold"),
            Tensor::from_vec(wshape, wv)?,
        );
        let bid = g.add_constant(
            format!("{conv_name}.B_bnfold"),
            Tensor::from_vec(vec![m], bv)?,
        );
        let bn_outputs = g.nodes[bi].outputs.clone();
        let conv = &mut g.nodes[ci];
        conv.inputs.resize(3, None);
        conv.inputs[1] = Some(wid);
        conv.inputs[2] = Some(bid);
        conv.outputs = bn_outputs;
        remove[bi] = true;
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !remove[i - 1]
    });
    Ok(())
}
