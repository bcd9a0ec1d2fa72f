//! Plan fusions against the layers run one by one and kestrel-core's plain reference.
//!
//! Fused inverted-residual blocks ([`kestrel_cpu::fused_block`]) against the same layers run
//! one by one and against kestrel-core's plain reference, on odd channel counts, 3x3 and 5x5
//! filters, strides 1 and 2, asymmetric padding, several bands and thread ranges: expansion +
//! depthwise (bit-identical to the layers one by one), with the projection, with the residual
//! Add (and a Relu after it), and depthwise + projection without an expansion. Convolutions
//! writing straight into the Concat that reads them (SqueezeNet's fire modules). A convolution
//! and the max pooling that alone reads it run band by band (first layers of SqueezeNet,
//! ResNet, MTCNN P-Net).

use kestrel_core::graph::{Graph, GraphInput, Node};
use kestrel_core::ops::{AutoPad, BinaryOp, ConvAttrs, PoolAttrs, Unary};
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
    /// Whether the block starts with the 1x1 expansion (else the input has `c_exp` channels).
    expand: bool,
    /// The projection's output channels, and its residual: none, an Add, an Add and a Relu
    /// (the residual needs `c_out == c_in`, stride 1 and a same-size output).
    project: Option<(usize, Residual)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Residual {
    None,
    Add,
    AddRelu,
}

fn case(
    c_in: usize,
    c_exp: usize,
    hw: [usize; 2],
    k: usize,
    stride: usize,
    pads: [usize; 4],
    dw_act: Unary,
) -> Case {
    Case {
        c_in,
        c_exp,
        hw,
        k,
        stride,
        pads,
        dw_act,
        expand: true,
        project: None,
    }
}

/// `x -> [1x1 conv (Clip 0..6)] -> e -> depthwise conv -> d [-> 1x1 conv -> p [-> Add(p, x)
/// [-> Relu]]]`.
fn block_graph(c: &Case, seed: u64) -> (Graph, Tensor) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut g = Graph {
        opset: 17,
        ..Default::default()
    };
    let c_first = if c.expand { c.c_in } else { c.c_exp };
    let xs = [1, c_first, c.hw[0], c.hw[1]];
    let x = add_input(&mut g, &xs);
    let conv = |pads: Vec<usize>, stride: usize, group: usize, activation: Option<Unary>| {
        Op::Conv(ConvAttrs {
            kernel_shape: None,
            strides: vec![stride; 2],
            dilations: vec![1, 1],
            pads,
            auto_pad: AutoPad::NotSet,
            group,
            activation,
        })
    };
    let clip6 = Unary::Clip { min: 0.0, max: 6.0 };
    let [t, l, b, r] = c.pads;
    let mut nodes: Vec<(&str, Op, Vec<Option<usize>>, usize)> = Vec::new();
    let mut cur = x;
    if c.expand {
        let we = g.add_constant("we", rand_tensor(&mut rng, &[c.c_exp, c.c_in, 1, 1]));
        let be = g.add_constant("be", rand_tensor(&mut rng, &[c.c_exp]));
        let e = g.add_value("e");
        nodes.push((
            "expand",
            conv(vec![0; 4], 1, 1, Some(clip6)),
            vec![Some(cur), Some(we), Some(be)],
            e,
        ));
        cur = e;
    }
    let wd = g.add_constant("wd", rand_tensor(&mut rng, &[c.c_exp, 1, c.k, c.k]));
    let bd = g.add_constant("bd", rand_tensor(&mut rng, &[c.c_exp]));
    let d = g.add_value("d");
    nodes.push((
        "dw",
        conv(vec![t, l, b, r], c.stride, c.c_exp, Some(c.dw_act)),
        vec![Some(cur), Some(wd), Some(bd)],
        d,
    ));
    cur = d;
    if let Some((c_out, res)) = c.project {
        let wp = g.add_constant("wp", rand_tensor(&mut rng, &[c_out, c.c_exp, 1, 1]));
        let bp = g.add_constant("bp", rand_tensor(&mut rng, &[c_out]));
        let p = g.add_value("p");
        nodes.push((
            "project",
            conv(vec![0; 4], 1, 1, None),
            vec![Some(cur), Some(wp), Some(bp)],
            p,
        ));
        cur = p;
        if res != Residual::None {
            let a = g.add_value("a");
            nodes.push((
                "add",
                Op::Binary(BinaryOp::Add),
                vec![Some(cur), Some(x)],
                a,
            ));
            cur = a;
        }
        if res == Residual::AddRelu {
            let o = g.add_value("o");
            nodes.push(("relu", Op::Unary(Unary::Relu), vec![Some(cur)], o));
            cur = o;
        }
    }
    for (name, op, inputs, out) in nodes {
        g.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            outputs: vec![out],
            source_op: "test".into(),
            attrs: Default::default(),
        });
    }
    g.outputs.push(cur);
    (g, rand_tensor(&mut rng, &xs))
}

#[test]
fn fused_expansion_and_depthwise_equal_the_layers_one_by_one() {
    let relu = Unary::Relu;
    let clip6 = Unary::Clip { min: 0.0, max: 6.0 };
    // wide tensors of 1.1-1.5 MB (above the fusion threshold), so that the band buffer holds
    // a few rows and each thread range several bands
    let with = |mut c: Case, expand: bool, project: Option<(usize, Residual)>| {
        c.expand = expand;
        c.project = project;
        c
    };
    let cases = [
        case(3, 97, [57, 57], 3, 1, [1; 4], clip6),
        case(13, 127, [45, 61], 3, 2, [1; 4], relu),
        case(16, 96, [64, 50], 5, 1, [2; 4], clip6),
        case(24, 144, [49, 41], 5, 2, [1, 2, 2, 1], relu),
        case(1, 300, [31, 29], 3, 2, [0, 0, 1, 1], clip6),
        // with the projection: plain, with the residual Add, with Add + Relu
        with(
            case(13, 97, [57, 57], 3, 1, [1; 4], clip6),
            true,
            Some((13, Residual::Add)),
        ),
        with(
            case(24, 144, [49, 41], 3, 1, [1; 4], relu),
            true,
            Some((24, Residual::AddRelu)),
        ),
        with(
            case(16, 96, [64, 50], 3, 2, [1; 4], clip6),
            true,
            Some((7, Residual::None)),
        ),
        with(
            case(3, 300, [31, 29], 5, 1, [2; 4], clip6),
            true,
            Some((1, Residual::None)),
        ),
        // depthwise + projection, no expansion (MobileNetV2's first block)
        with(
            case(0, 33, [113, 111], 3, 1, [1; 4], clip6),
            false,
            Some((16, Residual::None)),
        ),
        with(
            case(0, 33, [113, 111], 3, 1, [1; 4], clip6),
            false,
            Some((33, Residual::Add)),
        ),
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
                let fused = names.iter().any(|k| k.ends_with("-fused"));
                // the row kernel and so the fusion exist on the AVX-512 path only
                assert_eq!(fused, fuse && avx512, "case {i}: {names:?}");
                if fused {
                    assert_eq!(names.len(), 1, "case {i}: {names:?}");
                    let s = &plan.steps()[0];
                    let want: u64 = plan_macs(&pg);
                    assert_eq!(s.macs, want, "case {i}: every layer's MACs counted");
                }
                let mut st = ExecState::default();
                for _ in 0..2 {
                    outs.push(plan.run(&mut st, vec![x.clone()]).unwrap().remove(0));
                }
            }
        }
        // expansion + depthwise: the same sums in the same order, bit-identical to the
        // unfused layers; with the projection, equal up to rounding
        for (k, got) in outs.iter().enumerate() {
            if c.project.is_none() {
                assert_eq!(
                    got.as_f32().unwrap(),
                    outs[0].as_f32().unwrap(),
                    "case {i} run {k} differs from the unfused layers"
                );
            } else {
                let e = max_rel(got, &outs[0]);
                assert!(e < 1e-5, "case {i} run {k}: {e} from the unfused layers");
            }
        }
        // and the plain reference, node by node
        let vals = reference_values(&g, &x);
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

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// MACs of every step of the unfused plan (the cost model's count).
fn plan_macs(pg: &Graph) -> u64 {
    let plan = CpuPlan::new(
        pg.clone(),
        &CpuOptions {
            threads: 1,
            fuse_residual: false,
            ..Default::default()
        },
    )
    .unwrap();
    plan.steps().iter().map(|s| s.macs).sum()
}

/// `x -> squeeze 1x1 -> s; s -> 1x1 -> a; s -> 3x3 -> b; Concat(b, a) over channels [; a also
/// a graph output]`: SqueezeNet's fire module, the Concat's inputs in the other order than
/// their steps.
fn fire_graph(c: usize, hw: [usize; 2], also_output: bool, seed: u64) -> (Graph, Tensor) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut g = Graph {
        opset: 17,
        ..Default::default()
    };
    let xs = [1, c, hw[0], hw[1]];
    let x = add_input(&mut g, &xs);
    let conv = |pad: usize| {
        Op::Conv(ConvAttrs {
            kernel_shape: None,
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![pad; 4],
            auto_pad: AutoPad::NotSet,
            group: 1,
            activation: Some(Unary::Relu),
        })
    };
    let (sq, e1, e3) = (c / 4 + 1, c / 2 + 3, c / 2 + 1);
    let ws = g.add_constant("ws", rand_tensor(&mut rng, &[sq, c, 1, 1]));
    let w1 = g.add_constant("w1", rand_tensor(&mut rng, &[e1, sq, 1, 1]));
    let w3 = g.add_constant("w3", rand_tensor(&mut rng, &[e3, sq, 3, 3]));
    let b1 = g.add_constant("b1", rand_tensor(&mut rng, &[e1]));
    let (s, a, b, y) = (
        g.add_value("s"),
        g.add_value("a"),
        g.add_value("b"),
        g.add_value("y"),
    );
    for (name, op, inputs, out) in [
        ("squeeze", conv(0), vec![Some(x), Some(ws)], s),
        ("e1", conv(0), vec![Some(s), Some(w1), Some(b1)], a),
        ("e3", conv(1), vec![Some(s), Some(w3)], b),
        ("cat", Op::Concat { axis: 1 }, vec![Some(b), Some(a)], y),
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
    if also_output {
        g.outputs.push(a);
    }
    (g, rand_tensor(&mut rng, &xs))
}

#[test]
fn convolutions_write_straight_into_their_concat() {
    for (i, &(c, hw, also_output)) in [
        (13, [11, 9], false),
        (64, [27, 27], false),
        (3, [5, 17], false),
        (16, [9, 9], true),
    ]
    .iter()
    .enumerate()
    {
        let (g, x) = fire_graph(c, hw, also_output, 120 + i as u64);
        let pg = prepare(&g, &[x.shape().to_vec()], &PrepareOptions::default()).unwrap();
        let mut outs: Vec<Vec<Tensor>> = Vec::new();
        for fuse in [false, true] {
            for threads in [1, 2] {
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
                let fused = names.iter().any(|k| k.ends_with("->concat"));
                // a convolution whose output is also read elsewhere keeps the copy
                assert_eq!(fused, fuse && !also_output, "case {i}: {names:?}");
                if fused {
                    assert_eq!(names.len(), 2, "case {i}: {names:?}");
                    assert_eq!(plan.steps()[1].macs, plan_macs(&pg) - plan.steps()[0].macs);
                }
                let mut st = ExecState::default();
                for _ in 0..2 {
                    outs.push(plan.run(&mut st, vec![x.clone()]).unwrap());
                }
            }
        }
        let vals = reference_values(&g, &x);
        for (k, got) in outs.iter().enumerate() {
            assert_eq!(got.len(), g.outputs.len());
            for (o, t) in g.outputs.iter().zip(got) {
                let err = max_rel(t, vals[*o].as_ref().unwrap());
                assert!(err < 1e-5, "case {i} run {k}: max rel error {err}");
            }
        }
    }
}

/// `x -> Conv (k x k, stride s, no activation) -> PRelu(slope [c_out, 1, 1]) -> y`.
fn conv_prelu_graph(
    c_in: usize,
    c_out: usize,
    hw: [usize; 2],
    k: usize,
    stride: usize,
    seed: u64,
) -> (Graph, Tensor) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut g = Graph {
        opset: 17,
        ..Default::default()
    };
    let xs = [1, c_in, hw[0], hw[1]];
    let x = add_input(&mut g, &xs);
    let w = g.add_constant("w", rand_tensor(&mut rng, &[c_out, c_in, k, k]));
    let b = g.add_constant("b", rand_tensor(&mut rng, &[c_out]));
    // slopes of both signs, and 0
    let mut slope = rand_tensor(&mut rng, &[c_out, 1, 1]);
    if let Ok(s) = slope.as_f32_mut() {
        s[0] = 0.0;
    }
    let sl = g.add_constant("slope", slope);
    let (c, y) = (g.add_value("c"), g.add_value("y"));
    let conv = Op::Conv(ConvAttrs {
        kernel_shape: None,
        strides: vec![stride; 2],
        dilations: vec![1, 1],
        pads: vec![k / 2; 4],
        auto_pad: AutoPad::NotSet,
        group: 1,
        activation: None,
    });
    for (name, op, inputs, out) in [
        ("conv", conv, vec![Some(x), Some(w), Some(b)], c),
        ("prelu", Op::PRelu, vec![Some(c), Some(sl)], y),
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
fn prelu_fused_into_the_convolution_epilogue() {
    // the stem kernel (3 input channels, 10 outputs: a 12-lane block), the direct kernel
    // (full tiles in registers, edge tiles row by row), 1x1 in place, the small-map kernel's
    // layer (which then runs the direct kernel), a strided layer
    let cases = [
        (3, 10, [40, 37], 3, 1),
        (10, 16, [29, 33], 3, 1),
        (16, 32, [23, 21], 3, 1),
        (13, 37, [17, 19], 1, 1),
        (64, 40, [7, 7], 3, 1),
        (8, 24, [21, 20], 3, 2),
    ];
    for (i, &(c_in, c_out, hw, k, stride)) in cases.iter().enumerate() {
        let (g, x) = conv_prelu_graph(c_in, c_out, hw, k, stride, 140 + i as u64);
        let pg = prepare(&g, &[x.shape().to_vec()], &PrepareOptions::default()).unwrap();
        let mut outs: Vec<Tensor> = Vec::new();
        for fuse in [false, true] {
            for threads in [1, 2] {
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
                let fused = names.iter().any(|k| k.ends_with("+prelu"));
                assert_eq!(fused, fuse, "case {i}: {names:?}");
                assert_eq!(names.len(), if fuse { 1 } else { 2 }, "case {i}: {names:?}");
                let mut st = ExecState::default();
                for _ in 0..2 {
                    outs.push(plan.run(&mut st, vec![x.clone()]).unwrap().remove(0));
                }
            }
        }
        let vals = reference_values(&g, &x);
        let want = vals[g.outputs[0]].as_ref().unwrap();
        for (r, got) in outs.iter().enumerate() {
            let err = max_rel(got, want);
            assert!(err < 1e-5, "case {i} run {r}: max rel error {err}");
        }
    }
}

/// One conv -> max pool case: input channels, output channels, input height and width, filter
/// size, stride, pads, the convolution's activation (or a PRelu after it), the pooling's window,
/// stride, pads and ceil mode, and whether the convolution's output is a graph output too.
struct PoolCase {
    c_in: usize,
    c_out: usize,
    hw: [usize; 2],
    k: usize,
    stride: usize,
    pad: usize,
    act: Option<Unary>,
    prelu: bool,
    pool: (usize, usize, usize, bool),
    conv_is_output: bool,
}

/// `x -> conv [-> PRelu] -> c -> MaxPool -> y` (and `c` an output when asked).
fn conv_pool_graph(pc: &PoolCase, seed: u64) -> (Graph, Tensor) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut g = Graph {
        opset: 17,
        ..Default::default()
    };
    let xs = [1, pc.c_in, pc.hw[0], pc.hw[1]];
    let x = add_input(&mut g, &xs);
    let w = g.add_constant("w", rand_tensor(&mut rng, &[pc.c_out, pc.c_in, pc.k, pc.k]));
    let b = g.add_constant("b", rand_tensor(&mut rng, &[pc.c_out]));
    let conv = Op::Conv(ConvAttrs {
        kernel_shape: None,
        strides: vec![pc.stride; 2],
        dilations: vec![1, 1],
        pads: vec![pc.pad; 4],
        auto_pad: AutoPad::NotSet,
        group: 1,
        activation: pc.act,
    });
    let (pk, ps, pp, ceil) = pc.pool;
    let pool = Op::MaxPool(PoolAttrs {
        kernel_shape: vec![pk, pk],
        strides: vec![ps, ps],
        dilations: vec![1, 1],
        pads: vec![pp; 4],
        auto_pad: AutoPad::NotSet,
        ceil_mode: ceil,
        count_include_pad: false,
    });
    let mut nodes = vec![("conv", conv, vec![Some(x), Some(w), Some(b)])];
    if pc.prelu {
        let sl = g.add_constant("slope", rand_tensor(&mut rng, &[pc.c_out, 1, 1]));
        nodes.push(("prelu", Op::PRelu, vec![None, Some(sl)]));
    }
    nodes.push(("pool", pool, vec![None]));
    let mut prev = x;
    for (name, op, mut inputs) in nodes {
        if inputs[0].is_none() {
            inputs[0] = Some(prev);
        }
        let out = g.add_value(name);
        g.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            outputs: vec![out],
            source_op: "test".into(),
            attrs: Default::default(),
        });
        if pc.conv_is_output && name == "conv" {
            g.outputs.push(out);
        }
        prev = out;
    }
    g.outputs.push(prev);
    (g, rand_tensor(&mut rng, &xs))
}

#[test]
fn max_pooling_fused_with_the_convolution_it_reads() {
    let relu = Some(Unary::Relu);
    let base = PoolCase {
        c_in: 3,
        c_out: 16,
        hw: [261, 259],
        k: 3,
        stride: 2,
        pad: 1,
        act: relu,
        prelu: false,
        pool: (3, 2, 0, true),
        conv_is_output: false,
    };
    let cases = [
        // SqueezeNet's first layer (the stem kernel on AVX-512): 3x3 stride-2 windows that
        // overlap by a row, ceil mode
        PoolCase { ..base },
        // ResNet's: 7x7 stride 2, a padded 3x3 stride-2 pooling
        PoolCase {
            c_out: 20,
            hw: [250, 250],
            k: 7,
            pad: 3,
            pool: (3, 2, 1, false),
            ..base
        },
        // MTCNN P-Net's: a PRelu between, 2x2 stride-2 windows (no overlap), ceil mode
        PoolCase {
            c_out: 10,
            hw: [200, 190],
            stride: 1,
            pad: 0,
            act: None,
            prelu: true,
            pool: (2, 2, 0, true),
            ..base
        },
        // 13 input channels (the direct kernel), an odd width the floor mode drops
        PoolCase {
            c_in: 13,
            hw: [130, 131],
            stride: 1,
            pool: (2, 2, 0, false),
            ..base
        },
        // the convolution's output is read elsewhere too: not fused
        PoolCase {
            conv_is_output: true,
            ..base
        },
    ];
    for (i, pc) in cases.iter().enumerate() {
        let (g, x) = conv_pool_graph(pc, 170 + i as u64);
        let pg = prepare(&g, &[x.shape().to_vec()], &PrepareOptions::default()).unwrap();
        let mut outs: Vec<Vec<Tensor>> = Vec::new();
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
                let fused = names.iter().any(|k| k.ends_with("->maxpool"));
                assert_eq!(fused, fuse && !pc.conv_is_output, "case {i}: {names:?}");
                let mut st = ExecState::default();
                for _ in 0..2 {
                    outs.push(plan.run(&mut st, vec![x.clone()]).unwrap());
                }
            }
        }
        let vals = reference_values(&g, &x);
        for (oi, &o) in g.outputs.iter().enumerate() {
            let want = vals[o].as_ref().unwrap();
            for (r, got) in outs.iter().enumerate() {
                let err = max_rel(&got[oi], want);
                assert!(
                    err < 1e-5,
                    "case {i} output {oi} run {r}: max rel error {err}"
                );
                // the fused runs (second half) equal the layers one by one
                let err = max_rel(&got[oi], &outs[r % 6][oi]);
                assert!(err < 1e-6, "case {i} output {oi} run {r} vs unfused: {err}");
            }
        }
    }
}

/// Every value of `g` run node by node with kestrel-core's plain reference on input `x`.
fn reference_values(g: &Graph, x: &Tensor) -> Vec<Option<Tensor>> {
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
    vals
}

/// Adds the f32 graph input `x` of shape `shape`.
fn add_input(g: &mut Graph, shape: &[usize]) -> usize {
    let x = g.add_value("x");
    g.inputs.push(GraphInput {
        value: x,
        dtype: DType::F32,
        dims: shape.iter().map(|&d| Dim::Known(d)).collect(),
    });
    x
}
