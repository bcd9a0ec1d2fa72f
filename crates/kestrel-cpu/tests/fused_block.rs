//! The fused expansion + depthwise step ([`kestrel_cpu::fused_block`]) against the same layers
//! run one by one (bit-identical) and against kestrel-core's plain reference, on odd channel
//! counts, 3x3 and 5x5 filters, strides 1 and 2, asymmetric padding, several bands and thread
//! ranges.

use kestrel_core::graph::{Graph, GraphInput, Node};
use kestrel_core::ops::{AutoPad, ConvAttrs, Unary};
use kestrel_core::prepare::{prepare, PrepareOptions};
use kestrel_core::{DType, Dim, Op, Tensor};
use kestrel_cpu::{CpuOptions, CpuPlan, ExecState};
use rand::{Rng, SeedableRng};

fn rand_tensor(rng: &mut impl Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(
        shape.to_vec(),
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect(),
    )
    .unwrap()
}

/// One fused-block case: input channels, expanded channels, input height and width, depthwise
/// filter size, stride and pads (top, left, bottom, right), and the depthwise activation.
struct Case {
    c_in: usize,
    c_exp: usize,
    hw: [usize; 2],
    k: usize,
    stride: usize,
    pads: [usize; 4],
    dw_act: Unary,
}

/// `x -> 1x1 conv (Clip 0..6) -> e -> depthwise conv -> y`.
fn block_graph(c: &Case, seed: u64) -> (Graph, Tensor) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut g = Graph {
        opset: 17,
        ..Default::default()
    };
    let xs = [1, c.c_in, c.hw[0], c.hw[1]];
    let x = g.add_value("x");
    g.inputs.push(GraphInput {
        value: x,
        dtype: DType::F32,
        dims: xs.iter().map(|&d| Dim::Known(d)).collect(),
    });
    let conv = |pads: Vec<usize>, stride: usize, group: usize, activation: Unary| {
        Op::Conv(ConvAttrs {
            kernel_shape: None,
            strides: vec![stride; 2],
            dilations: vec![1, 1],
            pads,
            auto_pad: AutoPad::NotSet,
            group,
            activation: Some(activation),
        })
    };
    let we = g.add_constant("we", rand_tensor(&mut rng, &[c.c_exp, c.c_in, 1, 1]));
    let be = g.add_constant("be", rand_tensor(&mut rng, &[c.c_exp]));
    let wd = g.add_constant("wd", rand_tensor(&mut rng, &[c.c_exp, 1, c.k, c.k]));
    let bd = g.add_constant("bd", rand_tensor(&mut rng, &[c.c_exp]));
    let (e, y) = (g.add_value("e"), g.add_value("y"));
    let clip6 = Unary::Clip { min: 0.0, max: 6.0 };
    let [t, l, b, r] = c.pads;
    for (name, op, inputs, out) in [
        (
            "expand",
            conv(vec![0; 4], 1, 1, clip6),
            vec![Some(x), Some(we), Some(be)],
            e,
        ),
        (
            "dw",
            conv(vec![t, l, b, r], c.stride, c.c_exp, c.dw_act),
            vec![Some(e), Some(wd), Some(bd)],
            y,
        ),
    ] {
        g.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            outputs: vec![out],
            source_op: "test".into(),
            attrs: Default::default(),
        });
    }
    g.outputs.push(y);
    (g, rand_tensor(&mut rng, &xs))
}

#[test]
fn fused_expansion_and_depthwise_equal_the_layers_one_by_one() {
    let relu = Unary::Relu;
    let clip6 = Unary::Clip { min: 0.0, max: 6.0 };
    // wide tensors of 1.1-1.5 MB (above the fusion threshold), so that the band buffer holds
    // a few rows and each thread range several bands
    let cases = [
        Case {
            c_in: 3,
            c_exp: 97,
            hw: [57, 57],
            k: 3,
            stride: 1,
            pads: [1; 4],
            dw_act: clip6,
        },
        Case {
            c_in: 13,
            c_exp: 127,
            hw: [45, 61],
            k: 3,
            stride: 2,
            pads: [1; 4],
            dw_act: relu,
        },
        Case {
            c_in: 16,
            c_exp: 96,
            hw: [64, 50],
            k: 5,
            stride: 1,
            pads: [2; 4],
            dw_act: clip6,
        },
        Case {
            c_in: 24,
            c_exp: 144,
            hw: [49, 41],
            k: 5,
            stride: 2,
            pads: [1, 2, 2, 1],
            dw_act: relu,
        },
        Case {
            c_in: 1,
            c_exp: 300,
            hw: [31, 29],
            k: 3,
            stride: 2,
            pads: [0, 0, 1, 1],
            dw_act: clip6,
        },
    ];
    let avx512 = kestrel_cpu::simd::active_path() == kestrel_cpu::simd::SimdPath::Avx512;
    for (i, c) in cases.iter().enumerate() {
        let (g, x) = block_graph(c, 90 + i as u64);
        let pg = prepare(&g, &[x.shape().to_vec()], &PrepareOptions::default()).unwrap();
        let mut outs: Vec<Tensor> = Vec::new();
        for fuse in [false, true] {
            for threads in [1, 2, 3] {
                let plan = CpuPlan::new(
                    pg.clone(),
                    &CpuOptions {
                        threads,
                        fuse_residual: fuse,
                        ..Default::default()
                    },
                )
                .unwrap();
                let names: Vec<String> = plan.steps().into_iter().map(|s| s.kernel).collect();
                let fused = names.iter().any(|k| k == "1x1+dw-fused");
                // the row kernel and so the fusion exist on the AVX-512 path only
                assert_eq!(fused, fuse && avx512, "case {i}: {names:?}");
                if fused {
                    assert_eq!(names.len(), 1, "case {i}: {names:?}");
                    let s = &plan.steps()[0];
                    let dense_macs = (c.c_exp * c.c_in * c.hw[0] * c.hw[1]) as u64;
                    assert!(s.macs > dense_macs, "case {i}: both layers' MACs counted");
                }
                let mut st = ExecState::default();
                for _ in 0..2 {
                    outs.push(plan.run(&mut st, vec![x.clone()]).unwrap().remove(0));
                }
            }
        }
        // same sums in the same order: bit-identical to the unfused layers
        for (k, got) in outs.iter().enumerate() {
            assert_eq!(
                got.as_f32().unwrap(),
                outs[0].as_f32().unwrap(),
                "case {i} run {k} differs from the unfused layers"
            );
        }
        // and the plain reference, node by node
        let mut vals: Vec<Option<Tensor>> = vec![None; g.values.len()];
        vals[g.inputs[0].value] = Some(x.clone());
        for n in &g.nodes {
            let ins: Vec<Option<&Tensor>> = n
                .inputs
                .iter()
                .map(|v| v.and_then(|v| g.constant(v).or(vals[v].as_ref())))
                .collect();
            vals[n.outputs[0]] = Some(n.op.eval(&ins, 1).unwrap().remove(0));
        }
        let want = vals[g.outputs[0]].as_ref().unwrap();
        let (a, b) = (outs[0].as_f32().unwrap(), want.as_f32().unwrap());
        assert_eq!(outs[0].shape(), want.shape());
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let err = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale;
        assert!(
            err < 1e-5,
            "case {i}: max rel error {err} against the reference"
        );
    }
}
