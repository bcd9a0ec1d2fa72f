//! Shared by the `graph_shapes` fuzz target and its CI replay
//! (`crates/kestrel-cpu/tests/fuzz_graph_regressions.rs`): a short chain of ops whose attributes
//! (kernel, stride, dilation, padding, group, axes, permutations, reshape targets, pads, slice
//! bounds) and input shapes come from the bytes, including zeros, dims near overflow and
//! inconsistent combinations the ONNX importer would never produce.
#![allow(dead_code)]
use kestrel_core::graph::{Dim, Graph, GraphInput, Node};
use kestrel_core::ops::{AutoPad, BinaryOp, ConvAttrs, GemmAttrs, PadMode, PoolAttrs, Unary};
use kestrel_core::prepare::{prepare, PrepareOptions};
use kestrel_core::{DType, Op, Tensor};
use kestrel_cpu::{ConvAlgo, CpuOptions, CpuPlan, ExecState, StoragePrecision};

/// Reads small numbers from the fuzz input (zeros once it runs out).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    /// A dimension-like value: mostly small, sometimes 0 or enormous.
    fn dim(&mut self) -> usize {
        match self.u8() {
            250 => 0,
            251 => 1 << 20,
            252 => 1 << 31,
            253 => usize::MAX / 2,
            254 => usize::MAX,
            b => (b % 9) as usize,
        }
    }
    fn int(&mut self) -> i64 {
        match self.u8() {
            250 => i64::MIN,
            251 => i64::MAX,
            252 => -(1 << 40),
            b => (b as i64 % 13) - 6,
        }
    }
    fn vec(&mut self, n: usize) -> Vec<usize> {
        (0..n).map(|_| self.dim()).collect()
    }
}

fn node(op: Op, inputs: Vec<Option<usize>>, out: usize) -> Node {
    Node {
        name: format!("n{out}"),
        op,
        inputs,
        outputs: vec![out],
        source_op: "fuzz".into(),
        attrs: Default::default(),
    }
}

fn small_tensor(shape: Vec<usize>, seed: u8) -> Option<Tensor> {
    let n = kestrel_core::checked_numel(&shape).ok()?;
    if n > 1 << 16 {
        return None;
    }
    Tensor::from_vec(
        shape,
        (0..n)
            .map(|i| ((i as f32 + seed as f32) * 0.37).sin())
            .collect(),
    )
    .ok()
}

/// Builds the graph the bytes describe, prepares it and, when small, runs it on the CPU in f32
/// and f16 storage. Must never panic.
pub fn run_graph_bytes(data: &[u8]) {
    let mut b = Bytes(data);
    let mut g = Graph {
        opset: 17,
        ..Default::default()
    };
    let rank = 1 + (b.u8() % 5) as usize;
    let shape: Vec<usize> = (0..rank).map(|_| b.dim()).collect();
    let x = g.add_value("x");
    g.inputs.push(GraphInput {
        value: x,
        dtype: DType::F32,
        dims: shape.iter().map(|&d| Dim::Known(d)).collect(),
    });
    let mut cur = x;
    for _ in 0..1 + b.u8() % 3 {
        let out = g.add_value(format!("v{}", g.values.len()));
        let sp = rank.saturating_sub(2).max(1);
        let n = match b.u8() % 12 {
            0 | 1 => {
                let c_in = b.dim();
                let group = b.dim().max(1);
                let mut ws = vec![b.dim(), c_in / group.max(1)];
                ws.extend(b.vec(sp));
                let seed = b.u8();
                let Some(w) = small_tensor(ws, seed) else {
                    return;
                };
                let w = g.add_constant("w", w);
                let attrs = ConvAttrs {
                    kernel_shape: None,
                    strides: b.vec(sp),
                    dilations: b.vec(sp),
                    pads: b.vec(2 * sp),
                    auto_pad: [
                        AutoPad::NotSet,
                        AutoPad::SameUpper,
                        AutoPad::SameLower,
                        AutoPad::Valid,
                    ][(b.u8() % 4) as usize],
                    group,
                    activation: [None, Some(Unary::Relu)][(b.u8() % 2) as usize],
                };
                node(Op::Conv(attrs), vec![Some(cur), Some(w)], out)
            }
            2 | 3 => {
                let attrs = PoolAttrs {
                    kernel_shape: b.vec(sp),
                    strides: b.vec(sp),
                    dilations: b.vec(sp),
                    pads: b.vec(2 * sp),
                    auto_pad: AutoPad::NotSet,
                    ceil_mode: b.u8() % 2 == 0,
                    count_include_pad: b.u8() % 2 == 0,
                };
                let op = if b.u8() % 2 == 0 {
                    Op::MaxPool(attrs)
                } else {
                    Op::AveragePool(attrs)
                };
                node(op, vec![Some(cur)], out)
            }
            4 => {
                let target: Vec<i64> = (0..1 + b.u8() % 4).map(|_| b.int()).collect();
                let t = g.add_constant(
                    "shape",
                    Tensor::from_vec(vec![target.len()], target).unwrap(),
                );
                node(
                    Op::Reshape {
                        allowzero: b.u8() % 2 == 0,
                    },
                    vec![Some(cur), Some(t)],
                    out,
                )
            }
            5 => {
                let perm: Vec<usize> = (0..rank).map(|_| (b.u8() as usize) % (rank + 1)).collect();
                node(Op::Transpose { perm: Some(perm) }, vec![Some(cur)], out)
            }
            6 => node(
                Op::Concat { axis: b.int() },
                vec![Some(cur), Some(cur)],
                out,
            ),
            7 => {
                let pads: Vec<i64> = (0..2 * rank).map(|_| b.int()).collect();
                let p = g.add_constant("pads", Tensor::from_vec(vec![pads.len()], pads).unwrap());
                let mode = [
                    PadMode::Constant,
                    PadMode::Reflect,
                    PadMode::Edge,
                    PadMode::Wrap,
                ][(b.u8() % 4) as usize];
                node(Op::Pad { mode }, vec![Some(cur), Some(p)], out)
            }
            8 => {
                let k = (0..3).map(|_| b.int()).collect::<Vec<_>>();
                let s = g.add_constant("starts", Tensor::from_vec(vec![1], vec![k[0]]).unwrap());
                let e = g.add_constant("ends", Tensor::from_vec(vec![1], vec![k[1]]).unwrap());
                let a = g.add_constant("axes", Tensor::from_vec(vec![1], vec![k[2]]).unwrap());
                let st = g.add_constant("steps", Tensor::from_vec(vec![1], vec![b.int()]).unwrap());
                node(
                    Op::Slice,
                    vec![Some(cur), Some(s), Some(e), Some(a), Some(st)],
                    out,
                )
            }
            9 => {
                let ws = vec![b.dim(), b.dim()];
                let Some(w) = small_tensor(ws, b.u8()) else {
                    return;
                };
                let w = g.add_constant("w", w);
                let attrs = GemmAttrs {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: b.u8() % 2 == 0,
                    trans_b: b.u8() % 2 == 0,
                    activation: None,
                };
                node(Op::Gemm(attrs), vec![Some(cur), Some(w)], out)
            }
            10 => {
                let r = 1 + (b.u8() % 4) as usize;
                let cs = b.vec(r);
                let Some(c) = small_tensor(cs, b.u8()) else {
                    return;
                };
                let c = g.add_constant("c", c);
                node(
                    Op::Binary(
                        [BinaryOp::Add, BinaryOp::Mul, BinaryOp::Div][(b.u8() % 3) as usize],
                    ),
                    vec![Some(cur), Some(c)],
                    out,
                )
            }
            _ => node(Op::Flatten { axis: b.int() }, vec![Some(cur)], out),
        };
        g.nodes.push(n);
        cur = out;
    }
    g.outputs.push(cur);
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("input {shape:?}");
        for n in &g.nodes {
            let cs: Vec<_> = n
                .inputs
                .iter()
                .flatten()
                .filter_map(|&v| {
                    g.constant(v).map(|t| {
                        (
                            t.shape().to_vec(),
                            if t.len() < 8 {
                                format!("{:?}", t.data())
                            } else {
                                String::new()
                            },
                        )
                    })
                })
                .collect();
            eprintln!("{:?} consts {cs:?}", n.op);
        }
    }
    let Ok(pg) = prepare(&g, std::slice::from_ref(&shape), &PrepareOptions::default()) else {
        return;
    };
    // run only when every tensor is small
    let small = pg.values.iter().all(|v| {
        v.fact.as_ref().is_none_or(|f| {
            f.shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_some_and(|n| n <= 1 << 16)
        })
    });
    if !small {
        return;
    }
    let Some(xt) = small_tensor(shape, 1) else {
        return;
    };
    for storage in [StoragePrecision::F32, StoragePrecision::F16] {
        if let Ok(plan) = CpuPlan::new(
            pg.clone(),
            &CpuOptions {
                threads: 1,
                conv_algo: ConvAlgo::Auto,
                storage,
                fuse_residual: true,
                region_kernels: false,
            },
        ) {
            let _ = plan.run(&mut ExecState::default(), vec![xt.clone()]);
        }
    }
}
