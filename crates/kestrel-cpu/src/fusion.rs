//! Plan-level fusions: steps of the plan merged into one so that the tensors between them are
//! never written out (f32 storage, plans that do not run convolutional caching, whose region
//! logic works node by node).

use crate::conv::PreparedConv;
use crate::plan::{Kernel, Step};
use kestrel_core::ops::{BinaryOp, Unary};
use kestrel_core::{DType, Graph, ValueId};

/// Fuses `Conv -> Add [-> Relu]` chains into one [`Kernel::ConvAdd`] step: the convolution
/// (no activation of its own) whose only reader is an Add of two same-shaped f32 tensors, the
/// other operand (the residual) computed before the convolution runs; a Relu that is the Add's
/// only reader is fused too. The Add (and Relu) steps disappear; their frees move to the fused
/// step (the intermediate values are never made).
pub(crate) fn fuse_residual_adds(graph: &Graph, steps: &mut Vec<Step>) {
    let readers = |steps: &[Step], v: ValueId| -> Vec<usize> {
        steps
            .iter()
            .enumerate()
            .filter(|(_, st)| st.inputs.iter().flatten().any(|&x| x == v))
            .map(|(i, _)| i)
            .collect()
    };
    let f32_shape = |v: ValueId| {
        graph.values[v]
            .fact
            .as_ref()
            .filter(|f| f.dtype == DType::F32)
            .map(|f| f.shape.clone())
    };
    let mut si = 0;
    while si < steps.len() {
        let Kernel::Conv(pc) = &steps[si].kernel else {
            si += 1;
            continue;
        };
        let c = steps[si].outputs[0];
        let add_at = readers(steps, c);
        let fusable_conv = pc.activation().is_none() && !graph.outputs.contains(&c);
        let (ai, r) = match (fusable_conv, add_at.as_slice()) {
            (true, &[ai]) if matches!(steps[ai].kernel, Kernel::Binary(BinaryOp::Add)) => {
                let ins: Vec<Option<ValueId>> = steps[ai].inputs.clone();
                match ins.as_slice() {
                    [Some(a), Some(b)] if *a == c && *b != c => (ai, *b),
                    [Some(a), Some(b)] if *b == c && *a != c => (ai, *a),
                    _ => {
                        si += 1;
                        continue;
                    }
                }
            }
            _ => {
                si += 1;
                continue;
            }
        };
        let add_out = steps[ai].outputs[0];
        // same shapes (no broadcast), f32, and the residual exists when the conv runs: made by
        // an earlier step, or a graph input
        let produced_before = steps[..si].iter().any(|st| st.outputs.contains(&r))
            || (graph.inputs.iter().any(|gi| gi.value == r) && graph.constant(r).is_none());
        let shapes_ok = f32_shape(c).is_some()
            && f32_shape(c) == f32_shape(r)
            && f32_shape(c) == f32_shape(add_out);
        if !produced_before || !shapes_ok {
            si += 1;
            continue;
        }
        // a Relu that is the Add's only reader joins
        let relu_at = readers(steps, add_out);
        let relu = match relu_at.as_slice() {
            &[ri]
                if !graph.outputs.contains(&add_out)
                    && matches!(steps[ri].kernel, Kernel::Unary(Unary::Relu)) =>
            {
                Some(ri)
            }
            _ => None,
        };
        let final_out = relu.map_or(add_out, |ri| steps[ri].outputs[0]);
        let mut frees: Vec<ValueId> = steps[si].frees.clone();
        for j in std::iter::once(ai).chain(relu) {
            for &v in &steps[j].frees {
                if v != c && v != add_out && !frees.contains(&v) {
                    frees.push(v);
                }
            }
        }
        frees.retain(|&v| v != c && v != add_out);
        let Kernel::Conv(pc) = std::mem::replace(&mut steps[si].kernel, Kernel::Empty) else {
            unreachable!("matched above")
        };
        steps[si].kernel = Kernel::ConvAdd {
            conv: pc,
            post: relu.map(|_| Unary::Relu),
        };
        steps[si].inputs.push(Some(r));
        steps[si].outputs = vec![final_out];
        steps[si].frees = frees;
        // remove the absorbed steps (highest index first)
        let mut gone: Vec<usize> = std::iter::once(ai).chain(relu).collect();
        gone.sort_unstable_by(|a, b| b.cmp(a));
        for j in gone {
            steps.remove(j);
        }
        si += 1;
    }
}

/// Whether `v` is read by step `at` alone, as its first input, and is no graph output.
fn only_input_of(graph: &Graph, steps: &[Step], v: ValueId, at: usize) -> bool {
    at < steps.len()
        && !graph.outputs.contains(&v)
        && steps[at].inputs.first().copied().flatten() == Some(v)
        && steps.iter().enumerate().all(|(i, st)| {
            let reads = st.inputs.iter().flatten().filter(|&&x| x == v).count();
            reads == usize::from(i == at)
        })
}

/// Step `si` takes over the outputs and frees of `next`, the step it absorbed (already removed
/// from the plan); `c`, the value between them, is never made, so neither step frees it.
fn absorb(steps: &mut [Step], si: usize, next: Step, c: ValueId) {
    steps[si].outputs = next.outputs;
    for v in next.frees {
        if v != c && !steps[si].frees.contains(&v) {
            steps[si].frees.push(v);
        }
    }
    steps[si].frees.retain(|&v| v != c);
}

/// Fuses inverted-residual blocks into one [`Kernel::Fused`] step each: a 1x1 expansion, the
/// depthwise convolution that is its only reader (the very next step), and the 1x1
/// projection (with its fused residual Add, see [`fuse_residual_adds`]) that is the
/// depthwise output's only reader, where [`crate::fused_block`] applies; either 1x1 layer may
/// be missing, not both. Fused only when an intermediate tensor exceeds
/// [`crate::fused_block::min_fused_bytes`]: those tensors are never made.
pub(crate) fn fuse_blocks(graph: &Graph, steps: &mut Vec<Step>) {
    use crate::fused_block::{expansion_applies, output_bytes, projection_applies};
    let only_input_of = |steps: &[Step], v: ValueId, at: usize| only_input_of(graph, steps, v, at);
    fn conv(st: &Step) -> Option<&PreparedConv> {
        match &st.kernel {
            Kernel::Conv(pc) => Some(pc),
            _ => None,
        }
    }
    let mut si = 0;
    while si < steps.len() {
        // the depthwise layer: the step after an expansion, or this one
        let expand = match (conv(&steps[si]), steps.get(si + 1).and_then(conv)) {
            (Some(e), Some(d)) => {
                only_input_of(steps, steps[si].outputs[0], si + 1) && expansion_applies(e, d)
            }
            _ => false,
        };
        let di = si + usize::from(expand);
        let Some(dw) = conv(&steps[di]).filter(|d| d.depthwise_rows().is_some()) else {
            si += 1;
            continue;
        };
        let dv = steps[di].outputs[0];
        let project = match steps.get(di + 1).map(|st| &st.kernel) {
            Some(Kernel::Conv(p)) => projection_applies(dw, p, false),
            Some(Kernel::ConvAdd { conv, .. }) => {
                projection_applies(dw, conv, true)
                    && steps[di + 1].inputs.last().copied().flatten() != Some(dv)
            }
            _ => false,
        } && only_input_of(steps, dv, di + 1);
        let big = (expand
            && conv(&steps[si])
                .is_some_and(|e| output_bytes(e) > crate::fused_block::min_fused_bytes()))
            || (project && output_bytes(dw) > crate::fused_block::min_fused_bytes());
        if !(expand || project) || !big {
            si += 1;
            continue;
        }
        let last = di + usize::from(project);
        let mut parts: Vec<Step> = steps.drain(si..=last).collect();
        let mut nodes: Vec<usize> = parts.iter().map(|p| p.node).collect();
        let take = |st: &mut Step| std::mem::replace(&mut st.kernel, Kernel::Empty);
        let expand_conv = if expand {
            match take(&mut parts[0]) {
                Kernel::Conv(e) => Some(e),
                _ => unreachable!("matched above"),
            }
        } else {
            None
        };
        let Kernel::Conv(dw_conv) = take(&mut parts[di - si]) else {
            unreachable!("matched above")
        };
        let projection = if project {
            Some(match take(&mut parts[last - si]) {
                Kernel::Conv(conv) => crate::fused_block::Projection {
                    conv,
                    residual: None,
                },
                Kernel::ConvAdd { conv, post } => crate::fused_block::Projection {
                    conv,
                    residual: Some(post),
                },
                _ => unreachable!("matched above"),
            })
        } else {
            None
        };
        // inputs: the first layer's, then the residual; frees: every part's but the tensors
        // inside the block
        let inside: Vec<ValueId> = parts[..parts.len() - 1]
            .iter()
            .map(|p| p.outputs[0])
            .collect();
        let mut inputs = parts[0].inputs.clone();
        if let Some(r) = projection
            .as_ref()
            .filter(|p| p.residual.is_some())
            .and_then(|_| parts[last - si].inputs.last().copied())
        {
            inputs.push(r);
        }
        let mut frees: Vec<ValueId> = Vec::new();
        for v in parts.iter().flat_map(|p| p.frees.iter().copied()) {
            if !inside.contains(&v) && !frees.contains(&v) {
                frees.push(v);
            }
        }
        nodes.dedup();
        let step = Step {
            node: parts[0].node,
            kernel: Kernel::Fused {
                block: Box::new(crate::fused_block::FusedBlock {
                    expand: expand_conv,
                    dw: dw_conv,
                    project: projection,
                }),
                nodes,
            },
            inputs,
            outputs: parts.pop().expect("two parts or more").outputs,
            frees,
        };
        steps.insert(si, step);
        si += 1;
    }
}

/// Fuses a channel Concat of batch-1 tensors (`outer == 1`: each input one contiguous part of
/// the output) with the convolutions that make its inputs into one [`Kernel::ConvConcat`]
/// step, where those convolutions are the steps right before the Concat (in any order; e.g.
/// SqueezeNet's fire modules: the 1x1 and 3x3 expansions of one squeeze) and the Concat is
/// their outputs' only reader: each convolution writes straight into its part of the Concat's
/// buffer, and the copy disappears.
/// `KESTREL_CONCAT_IN_PLACE=0` keeps the copy (A/B runs).
pub(crate) fn fuse_concat_producers(graph: &Graph, steps: &mut Vec<Step>) {
    if std::env::var("KESTREL_CONCAT_IN_PLACE").is_ok_and(|v| v == "0") {
        return;
    }
    let mut ci = 0;
    while ci < steps.len() {
        let Kernel::Concat { outer: 1, chunks } = &steps[ci].kernel else {
            ci += 1;
            continue;
        };
        let k = chunks.len();
        let ins: Vec<ValueId> = steps[ci].inputs.iter().flatten().copied().collect();
        let fusable = k >= 2
            && ci >= k
            && ins.len() == k
            && (0..k).all(|i| !ins[..i].contains(&ins[i]) && !graph.outputs.contains(&ins[i]))
            // each input made by one of the k steps right before, a convolution whose output
            // nothing else reads
            && ins.iter().all(|&v| {
                steps[ci - k..ci].iter().any(|st| {
                    matches!(st.kernel, Kernel::Conv(_))
                        && st.outputs.len() == 1
                        && st.outputs[0] == v
                        && st.inputs.first().copied().flatten().is_some()
                })
            })
            && steps.iter().enumerate().all(|(i, st)| {
                i == ci || !st.inputs.iter().flatten().any(|x| ins.contains(x))
            });
        if !fusable {
            ci += 1;
            continue;
        }
        let concat = steps.remove(ci);
        let mut parts: Vec<Step> = steps.drain(ci - k..ci).collect();
        // in the Concat's input order
        parts.sort_by_key(|st| ins.iter().position(|&v| v == st.outputs[0]));
        let mut inputs = Vec::new();
        let mut frees: Vec<ValueId> = Vec::new();
        let (mut convs, mut data, mut nodes) = (Vec::new(), Vec::new(), Vec::new());
        for st in parts {
            for v in st.inputs.iter().copied() {
                if !inputs.contains(&v) {
                    inputs.push(v);
                }
            }
            for &v in &st.frees {
                if !frees.contains(&v) {
                    frees.push(v);
                }
            }
            data.push(st.inputs[0].expect("checked above"));
            nodes.push(st.node);
            match st.kernel {
                Kernel::Conv(pc) => convs.push(*pc),
                _ => unreachable!("checked above"),
            }
        }
        for &v in &concat.frees {
            if !ins.contains(&v) && !frees.contains(&v) {
                frees.push(v);
            }
        }
        frees.retain(|v| !ins.contains(v));
        steps.insert(
            ci - k,
            Step {
                node: nodes[0],
                kernel: Kernel::ConvConcat {
                    convs,
                    inputs: data,
                    nodes,
                },
                inputs,
                outputs: concat.outputs,
                frees,
            },
        );
        ci = ci - k + 1;
    }
}

/// Fuses a per-channel PRelu into the convolution whose output it alone reads (the very next
/// step; MTCNN's and other detectors' Conv -> PRelu pairs): the slope is applied in the
/// convolution's epilogue ([`PreparedConv::fuse_prelu`], in registers where the kernel fuses
/// its epilogue) and the PRelu's pass over memory disappears. Kinds that cannot take it keep
/// the step. `KESTREL_FUSE_PRELU=0` keeps every PRelu step (A/B runs).
pub(crate) fn fuse_conv_prelu(graph: &Graph, steps: &mut Vec<Step>) {
    if std::env::var("KESTREL_FUSE_PRELU").is_ok_and(|v| v == "0") {
        return;
    }
    let mut si = 0;
    while si + 1 < steps.len() {
        let c = steps[si].outputs[0];
        let fits = match (&steps[si].kernel, &steps[si + 1].kernel) {
            (Kernel::Conv(pc), Kernel::ChannelPRelu { slope, plane }) => {
                steps[si].outputs.len() == 1
                    && only_input_of(graph, steps, c, si + 1)
                    && pc.activation().is_none()
                    && slope.len() == pc.geom.c_out
                    && *plane == pc.geom.output.iter().product::<usize>()
            }
            _ => false,
        };
        if !fits {
            si += 1;
            continue;
        }
        let Kernel::ChannelPRelu { slope, .. } = &steps[si + 1].kernel else {
            unreachable!("matched above")
        };
        let slope = slope.clone();
        let Kernel::Conv(pc) = &mut steps[si].kernel else {
            unreachable!("matched above")
        };
        if pc.fuse_prelu(&slope) {
            let prelu = steps.remove(si + 1);
            absorb(steps, si, prelu, c);
        }
        si += 1;
    }
}

/// Fuses a convolution and the max pooling that is its output's only reader (the very next
/// step; SqueezeNet's and ResNet's first layers, MTCNN P-Net's) into one
/// [`Kernel::ConvPool`] step where [`crate::conv_pool::applies`]: the convolution's output is
/// never made. Runs after [`fuse_conv_prelu`], so a PRelu between them is already inside the
/// convolution. `KESTREL_CONV_POOL=0` keeps the steps apart (A/B runs).
pub(crate) fn fuse_conv_pools(graph: &Graph, steps: &mut Vec<Step>) {
    if crate::conv_pool::disabled() {
        return;
    }
    let mut si = 0;
    while si + 1 < steps.len() {
        let c = steps[si].outputs[0];
        let fits = match (&steps[si].kernel, &steps[si + 1].kernel) {
            (Kernel::Conv(pc), Kernel::Pool(pp)) => {
                steps[si].outputs.len() == 1
                    && steps[si + 1].outputs.len() == 1
                    && only_input_of(graph, steps, c, si + 1)
                    && crate::conv_pool::applies(pc, pp)
            }
            _ => false,
        };
        if !fits {
            si += 1;
            continue;
        }
        let mut pool = steps.remove(si + 1);
        let Kernel::Pool(pp) = std::mem::replace(&mut pool.kernel, Kernel::Empty) else {
            unreachable!("matched above")
        };
        let conv = std::mem::replace(&mut steps[si].kernel, Kernel::Empty);
        let Kernel::Conv(pc) = conv else {
            unreachable!("matched above")
        };
        steps[si].kernel = Kernel::ConvPool {
            block: Box::new(crate::conv_pool::ConvPool {
                conv: *pc,
                pool: *pp,
            }),
            nodes: vec![steps[si].node, pool.node],
        };
        absorb(steps, si, pool, c);
        si += 1;
    }
}
