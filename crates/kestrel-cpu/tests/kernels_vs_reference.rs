//! Every CPU kernel against the plain reference of kestrel-core, on odd shapes: 1, 3, 13 and 127
//! channels, strides, dilations, groups (incl. depthwise), asymmetric padding, 1-D and 3-D.

use kestrel_core::graph::{Graph, GraphInput, Node};
use kestrel_core::ops::{AutoPad, BinaryOp, ConvAttrs, GemmAttrs, Unary};
use kestrel_core::prepare::{prepare, PrepareOptions};
use kestrel_core::{DType, Dim, Op, Tensor};
use kestrel_cpu::{ConvAlgo, CpuOptions, CpuPlan, ExecState, StoragePrecision};
use rand::{Rng, SeedableRng};

fn rand_tensor(rng: &mut impl Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(
        shape.to_vec(),
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect(),
    )
    .unwrap()
}

/// A one-node graph: input x, constants, one output.
fn one_node(op: Op, x_shape: &[usize], consts: Vec<Option<Tensor>>) -> Graph {
    let mut g = Graph {
        opset: 17,
        ..Default::default()
    };
    let x = g.add_value("x");
    g.inputs.push(GraphInput {
        value: x,
        dtype: DType::F32,
        dims: x_shape.iter().map(|&d| Dim::Known(d)).collect(),
    });
    let mut inputs = vec![Some(x)];
    for (i, c) in consts.into_iter().enumerate() {
        inputs.push(c.map(|t| g.add_constant(format!("c{i}"), t)));
    }
    let y = g.add_value("y");
    g.nodes.push(Node {
        name: "n".into(),
        op,
        inputs,
        outputs: vec![y],
        source_op: "test".into(),
        attrs: Default::default(),
    });
    g.outputs.push(y);
    g
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Runs `g` through the CPU plan with every conv algorithm and compares with the reference.
fn check(g: &Graph, x: &Tensor, label: &str) {
    let pg = prepare(g, &[x.shape().to_vec()], &PrepareOptions::default()).unwrap();
    let node = &g.nodes[0];
    let ins: Vec<Option<&Tensor>> = std::iter::once(Some(x))
        .chain(
            node.inputs[1..]
                .iter()
                .map(|v| v.and_then(|v| g.constant(v))),
        )
        .collect();
    let want = node.op.eval(&ins, 1).unwrap().remove(0);
    for algo in [
        ConvAlgo::Auto,
        ConvAlgo::Im2col,
        ConvAlgo::Direct,
        ConvAlgo::ImplicitGemm,
        ConvAlgo::Winograd,
        ConvAlgo::Winograd2,
        ConvAlgo::Winograd6,
        ConvAlgo::Fft,
    ] {
        // F(6x6)'s transform constants (up to 32, 21/4, 1/90) cost precision in f32
        let tol = if algo == ConvAlgo::Winograd6 {
            1e-4
        } else {
            1e-5
        };
        for threads in [1, 2] {
            let plan = CpuPlan::new(
                pg.clone(),
                &CpuOptions {
                    threads,
                    conv_algo: algo,
                    storage: StoragePrecision::F32,
                    fuse_residual: true,
                    region_kernels: false,
                },
            )
            .unwrap();
            assert_ne!(
                plan.steps()[0].kernel,
                "reference",
                "{label}: no native kernel was chosen"
            );
            // FFT convolution takes every ungrouped 2-D layer it is asked for
            if let (ConvAlgo::Fft, Op::Conv(a)) = (algo, &node.op) {
                if a.group == 1 && x.rank() == 4 {
                    assert_eq!(plan.steps()[0].kernel, "fft", "{label}");
                }
            }
            let mut st = ExecState::default();
            for _ in 0..2 {
                // twice: the second run reuses pooled buffers
                let got = plan.run(&mut st, vec![x.clone()]).unwrap().remove(0);
                let e = max_rel(&got, &want);
                assert!(
                    e < tol,
                    "{label} algo {algo:?} threads {threads}: max rel error {e} ({:?})",
                    plan.steps()[0].kernel
                );
            }
        }
    }
    check_f16(g, x, label);
}

/// An f32 tensor with every value rounded to the nearest f16 (other types unchanged).
fn rounded_f16(t: &Tensor) -> Tensor {
    match t.as_f32() {
        Ok(v) => Tensor::from_vec(
            t.shape().to_vec(),
            v.iter()
                .map(|&x| half::f16::from_f32(x).to_f32())
                .collect::<Vec<f32>>(),
        )
        .unwrap(),
        Err(_) => t.clone(),
    }
}

/// The same constant as the f16 storage mode stores it: conv weights with long sums and dense
/// weights rounded to f16, everything else (bias, short-sum conv weights, other operands) kept.
fn as_stored_f16(op: &Op, slot: usize, t: &Tensor) -> Tensor {
    let reduction: usize = t.shape().iter().skip(1).product();
    match (op, slot) {
        (Op::Conv(_), 1) if reduction >= kestrel_cpu::MIN_REDUCTION_FOR_F16_WEIGHTS => {
            rounded_f16(t)
        }
        (Op::Gemm(_) | Op::MatMul, 1) => rounded_f16(t),
        _ => t.clone(),
    }
}

/// The f16 storage mode of every kernel. The node runs between two others (an identity
/// LeakyRelu before it, a multiplication by 1 after it, with unrelated steps in between) so that
/// its input arrives as an f16 activation and its output is held in f16, as inside a model. Compared with the
/// reference evaluated on the f16-rounded input and the weights as stored, only the rounding of
/// the output (2^-11 relative) and the order of the f32 sums may differ.
fn check_f16(g: &Graph, x: &Tensor, label: &str) {
    let node = &g.nodes[0];
    let mut h = g.clone();
    let x1 = h.add_value("x_f16");
    let y0 = h.add_value("y_f16");
    let one = h.add_constant("one", Tensor::from_vec(vec![1], vec![1.0f32]).unwrap());
    let (xv, yv) = (node.inputs[0].unwrap(), node.outputs[0]);
    h.nodes[0].inputs[0] = Some(x1);
    h.nodes[0].outputs[0] = y0;
    let pre = Node {
        name: "pre".into(),
        op: Op::Unary(Unary::LeakyRelu { alpha: 1.0 }),
        inputs: vec![Some(xv)],
        outputs: vec![x1],
        source_op: "test".into(),
        attrs: Default::default(),
    };
    let post = Node {
        name: "post".into(),
        op: Op::Binary(BinaryOp::Mul),
        inputs: vec![Some(y0), Some(one)],
        outputs: vec![yv],
        source_op: "test".into(),
        attrs: Default::default(),
    };
    // unrelated steps between them, so the node's input and output stay alive across other
    // steps and are therefore held in f16 (a value read only by the very next step is not)
    let side = |h: &mut Graph, name: &str| {
        let d = h.add_value(name);
        h.outputs.push(d);
        Node {
            name: name.into(),
            op: Op::Unary(Unary::Relu),
            inputs: vec![Some(xv)],
            outputs: vec![d],
            source_op: "test".into(),
            attrs: Default::default(),
        }
    };
    let side1 = side(&mut h, "side1");
    let side2 = side(&mut h, "side2");
    h.nodes.insert(0, pre);
    h.nodes.insert(1, side1);
    h.nodes.push(side2);
    h.nodes.push(post);
    let pg = prepare(&h, &[x.shape().to_vec()], &PrepareOptions::default()).unwrap();

    let xr = rounded_f16(x);
    let consts: Vec<Option<Tensor>> = node.inputs[1..]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.and_then(|v| g.constant(v))
                .map(|t| as_stored_f16(&node.op, i + 1, t))
        })
        .collect();
    let ins: Vec<Option<&Tensor>> = std::iter::once(Some(&xr))
        .chain(consts.iter().map(|c| c.as_ref()))
        .collect();
    let want = node.op.eval(&ins, 1).unwrap().remove(0);
    // fp16 arithmetic where the CPU has it: f16 chains of F16_CHAIN products add a few 2^-11
    // of the partial sums (see kestrel_cpu::hgemm)
    let mut modes = vec![(StoragePrecision::F16, 1e-3f32)];
    if kestrel_cpu::hgemm::available() {
        modes.push((StoragePrecision::F16Arith, 5e-3));
    }
    for (storage, tol) in modes {
        for algo in [ConvAlgo::Auto, ConvAlgo::Im2col, ConvAlgo::Winograd] {
            for threads in [1, 2] {
                let plan = CpuPlan::new(
                    pg.clone(),
                    &CpuOptions {
                        threads,
                        conv_algo: algo,
                        storage,
                        fuse_residual: true,
                        region_kernels: false,
                    },
                )
                .unwrap();
                let kernel = plan.steps()[2].kernel.clone();
                assert_ne!(kernel, "reference", "{label}: no native kernel in f16 mode");
                let mut st = ExecState::default();
                for _ in 0..2 {
                    let got = plan.run(&mut st, vec![x.clone()]).unwrap().remove(0);
                    assert_eq!(
                        got.dtype(),
                        DType::F32,
                        "{label}: outputs are returned as f32"
                    );
                    let e = max_rel(&got, &want);
                    assert!(
                    e < tol,
                    "{label} {storage:?}, algo {algo:?} threads {threads}: max rel error {e} ({kernel})"
                );
                    // the output passed through f16 storage: every value is an f16 value
                    assert!(
                        got.as_f32().unwrap().iter().all(|&v| {
                            half::f16::from_f32(v).to_f32().to_bits() == v.to_bits() || v.is_nan()
                        }),
                        "{label}: the node's output was not stored in f16"
                    );
                }
            }
        }
    }
}

struct ConvCase {
    n: usize,
    c: usize,
    m: usize,
    hw: Vec<usize>,
    k: Vec<usize>,
    stride: Vec<usize>,
    dil: Vec<usize>,
    pads: Vec<usize>,
    group: usize,
    bias: bool,
    act: Option<Unary>,
    auto_pad: AutoPad,
}

fn conv_case(c: ConvCase, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut xs = vec![c.n, c.c];
    xs.extend(&c.hw);
    let mut ws = vec![c.m, c.c / c.group];
    ws.extend(&c.k);
    let x = rand_tensor(&mut rng, &xs);
    let w = rand_tensor(&mut rng, &ws);
    let b = c.bias.then(|| rand_tensor(&mut rng, &[c.m]));
    let op = Op::Conv(ConvAttrs {
        kernel_shape: None,
        strides: c.stride.clone(),
        dilations: c.dil.clone(),
        pads: c.pads.clone(),
        auto_pad: c.auto_pad,
        group: c.group,
        activation: c.act,
    });
    let label = format!(
        "conv x{xs:?} w{ws:?} s{:?} d{:?} p{:?} g{}",
        c.stride, c.dil, c.pads, c.group
    );
    check(&one_node(op, &xs, vec![Some(w), b]), &x, &label);
}

fn c2(
    c: usize,
    m: usize,
    hw: [usize; 2],
    k: [usize; 2],
    s: usize,
    d: usize,
    pads: [usize; 4],
    group: usize,
) -> ConvCase {
    ConvCase {
        n: 1,
        c,
        m,
        hw: hw.to_vec(),
        k: k.to_vec(),
        stride: vec![s, s],
        dil: vec![d, d],
        pads: pads.to_vec(),
        group,
        bias: true,
        act: None,
        auto_pad: AutoPad::NotSet,
    }
}

#[test]
fn conv_odd_channels_strides_dilations_padding() {
    let cases = vec![
        c2(1, 1, [5, 7], [3, 3], 1, 1, [1, 1, 1, 1], 1),
        c2(3, 13, [9, 11], [3, 3], 2, 1, [1, 0, 2, 1], 1), // stride 2, asymmetric pads
        c2(13, 3, [10, 9], [3, 3], 1, 2, [2, 2, 2, 2], 1), // dilation 2
        c2(127, 13, [6, 5], [1, 1], 1, 1, [0, 0, 0, 0], 1), // pointwise
        c2(13, 127, [7, 7], [1, 1], 2, 1, [0, 0, 0, 0], 1), // 1x1 stride 2
        c2(12, 18, [8, 9], [3, 3], 1, 1, [1, 1, 1, 1], 3), // groups
        c2(13, 13, [9, 8], [3, 3], 1, 1, [1, 1, 1, 1], 13), // depthwise
        c2(13, 13, [11, 10], [3, 3], 2, 1, [0, 1, 1, 0], 13), // depthwise stride 2 asym
        c2(5, 5, [10, 9], [2, 2], 2, 1, [0, 0, 0, 0], 5),  // depthwise stride 2, even padded width
        c2(3, 3, [12, 12], [5, 5], 1, 2, [4, 3, 4, 3], 3), // depthwise 5x5 dilated
        c2(4, 8, [9, 9], [3, 3], 1, 1, [1, 1, 1, 1], 4),   // channel multiplier 2
        c2(3, 5, [4, 6], [2, 3], 3, 1, [0, 0, 0, 0], 1),   // non-square kernel, stride 3
        c2(13, 17, [11, 9], [3, 3], 1, 1, [1, 1, 1, 1], 1), // winograd: odd tile counts
        c2(127, 33, [7, 13], [3, 3], 1, 1, [0, 2, 1, 0], 1), // winograd: asymmetric pads
        c2(128, 128, [28, 28], [3, 3], 1, 1, [1, 1, 1, 1], 1), // winograd on a large layer
        // winograd in two bands of tiles (64 + 26), a ragged right and bottom edge
        c2(96, 96, [38, 35], [3, 3], 1, 1, [1, 0, 1, 1], 1),
        // winograd row-chunk transforms (AVX-512, rows of 8+ tiles): several 16-tile chunks
        // per row with a ragged last one (F(2x2): 35 tiles per row), asymmetric pads, and
        // F(6x6) on 12 tiles per row
        c2(13, 17, [9, 70], [3, 3], 1, 1, [1, 1, 1, 1], 1),
        c2(5, 7, [10, 53], [3, 3], 1, 1, [0, 2, 1, 0], 1),
        // direct kernel: in-place 1x1 with a partial last tile, 127 rows and K over two blocks
        c2(300, 127, [5, 7], [1, 1], 1, 1, [0, 0, 0, 0], 1),
        // direct kernel: stride 2 with dilation 2 (phases), stride 3, padded 7x7
        c2(13, 17, [15, 13], [3, 3], 2, 2, [2, 1, 2, 3], 1),
        c2(5, 9, [17, 16], [3, 3], 3, 1, [1, 1, 1, 1], 1),
        c2(3, 16, [23, 21], [7, 7], 2, 1, [3, 3, 3, 3], 1),
        // direct kernel: many tiles per task (several virtual groups), grouped 1x1 stride 2
        c2(64, 40, [36, 34], [3, 3], 1, 1, [1, 1, 1, 1], 1),
        c2(24, 36, [13, 11], [1, 1], 2, 1, [0, 0, 0, 0], 3),
        // strided 1x1 on an exact grid (the phase copy is as wide as the output: tiles store
        // straight into it): long and short sums, partial panels and a partial last tile;
        // a 3x1 kernel (unpadded width: also an exact grid)
        c2(70, 37, [29, 31], [1, 1], 2, 1, [0, 0, 0, 0], 1),
        c2(300, 70, [15, 28], [1, 1], 2, 1, [0, 0, 0, 0], 1),
        c2(17, 40, [21, 19], [3, 1], 1, 1, [1, 0, 1, 0], 1),
        // in-place 1x1 whose last tile is at most half full (AVX-512: the 8x16 half kernel):
        // 13x13 = 5 x 32 + 9 positions, long sums over several K blocks and a short one
        c2(520, 19, [13, 13], [1, 1], 1, 1, [0, 0, 0, 0], 1),
        c2(40, 37, [13, 13], [1, 1], 1, 1, [0, 0, 0, 0], 1),
        // in-place 1x1 with a short sum (panel-major order): partial panel and tile, groups
        c2(13, 130, [9, 7], [1, 1], 1, 1, [0, 0, 0, 0], 1),
        c2(24, 36, [9, 9], [1, 1], 1, 1, [0, 0, 0, 0], 3),
        // small maps on padded virtual grids (AVX-512: the small-map kernel on compacted
        // taps): 7x7, dilated 9x9, asymmetric pads with groups, 14x14 with a partial channel
        // block
        c2(64, 40, [7, 7], [3, 3], 1, 1, [1, 1, 1, 1], 1),
        c2(33, 50, [9, 9], [3, 3], 1, 2, [2, 2, 2, 2], 1),
        c2(20, 36, [11, 12], [3, 3], 1, 1, [0, 1, 2, 1], 2),
        c2(127, 13, [14, 14], [3, 3], 1, 1, [1, 1, 1, 1], 1),
        // 1x1 with 1-4 output channels on 4096+ positions (the narrow pointwise kernel): every
        // row count, sums of 3, 5 (a plane tail), 13 and 32 planes, a plane not a multiple of
        // 16 positions
        c2(13, 2, [64, 70], [1, 1], 1, 1, [0, 0, 0, 0], 1),
        c2(32, 4, [67, 65], [1, 1], 1, 1, [0, 0, 0, 0], 1),
        c2(3, 1, [65, 65], [1, 1], 1, 1, [0, 0, 0, 0], 1),
        c2(5, 3, [64, 66], [1, 1], 1, 1, [0, 0, 0, 0], 1),
        // short-sum 1x1 on a map of 196+ positions (the GEMM kernel, not the small-map one)
        c2(40, 70, [14, 15], [1, 1], 1, 1, [0, 0, 0, 0], 1),
        // depthwise rows of 12+ outputs (AVX-512: 16x16 transposes instead of gathers):
        // asymmetric pads over three channel blocks (the last of 1 channel), a dilated 5x5,
        // and an unpadded 16-wide input (one whole interior chunk, 14 outputs)
        c2(33, 33, [13, 29], [3, 3], 1, 1, [0, 2, 1, 1], 33),
        c2(20, 20, [9, 31], [5, 5], 1, 2, [4, 4, 4, 4], 20),
        c2(16, 16, [5, 16], [3, 3], 1, 1, [0, 0, 0, 0], 16),
        // depthwise row kernel (AVX-512, 3x3 / 5x5 at stride 1 / 2): stride 2 with 8+ outputs
        // per row and asymmetric pads, 5x5 stride 2, pads wider than the filter (rows and
        // columns wholly in the padding), 5x5 stride 1 with a row tail; output heights that
        // are not a multiple of the 4 rows computed together
        c2(7, 7, [19, 37], [3, 3], 2, 1, [1, 0, 1, 2], 7),
        // stride 2 with 6-7 outputs per row (rows kernel since session 10), 3x3 and 5x5
        c2(19, 19, [14, 14], [3, 3], 2, 1, [1, 1, 1, 1], 19),
        c2(17, 17, [14, 13], [5, 5], 2, 1, [2, 2, 2, 2], 17),
        c2(5, 5, [11, 11], [3, 3], 2, 1, [1, 1, 1, 1], 5),
        c2(5, 5, [21, 34], [5, 5], 2, 1, [2, 2, 1, 3], 5),
        c2(3, 3, [6, 18], [3, 3], 1, 1, [3, 3, 3, 3], 3),
        c2(9, 9, [17, 40], [5, 5], 1, 1, [2, 2, 2, 2], 9),
        // few input channels (AVX-512 stem kernel): 1-4 channels, partial and several
        // 16-channel output blocks, 3x3 / 5x5 at stride 1 and 2, asymmetric pads, pads wider
        // than the filter
        c2(3, 32, [20, 35], [3, 3], 2, 1, [1, 1, 0, 0], 1),
        c2(1, 13, [9, 17], [5, 5], 1, 1, [2, 2, 2, 2], 1),
        c2(4, 40, [12, 30], [3, 3], 1, 1, [1, 0, 1, 0], 1),
        c2(3, 17, [15, 33], [5, 5], 2, 1, [0, 2, 1, 3], 1),
        c2(2, 5, [6, 20], [3, 3], 1, 1, [4, 4, 4, 4], 1),
        // large kernels (where FFT convolution is meant to pay): 7x7 and 11x11, odd sizes
        c2(3, 8, [23, 19], [7, 7], 1, 1, [3, 3, 3, 3], 1),
        c2(5, 7, [30, 27], [11, 11], 1, 1, [5, 4, 5, 6], 1),
        // the stem kernel's last output-channel block at 16, 12 (10 channels), 8 and 4 lanes,
        // 3x3 / 5x5, strides 1 / 2 (last in the list: the cases above keep their seeds)
        c2(3, 10, [20, 19], [3, 3], 1, 1, [0, 0, 0, 0], 1),
        c2(3, 29, [17, 33], [5, 5], 2, 1, [2, 2, 2, 2], 1),
        c2(1, 5, [12, 40], [3, 3], 1, 1, [1, 1, 1, 1], 1),
        c2(2, 3, [9, 24], [3, 3], 2, 1, [1, 1, 1, 1], 1),
        c2(4, 21, [10, 18], [5, 5], 1, 1, [2, 1, 2, 0], 1),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        conv_case(c, i as u64);
    }
}

#[test]
fn conv_fused_activation_auto_pad_batch_1d_3d() {
    let mut c = c2(3, 13, [9, 8], [3, 3], 2, 1, [0, 0, 0, 0], 1);
    c.auto_pad = AutoPad::SameUpper;
    c.act = Some(Unary::Clip { min: 0.0, max: 0.5 });
    c.n = 2;
    conv_case(c, 40);
    let mut c = c2(13, 13, [7, 7], [3, 3], 1, 1, [0, 0, 0, 0], 13);
    c.auto_pad = AutoPad::SameLower;
    c.act = Some(Unary::Relu);
    c.bias = false;
    conv_case(c, 41);
    // depthwise over three channel blocks (the last partial), batch 2, an activation the
    // kernels cannot fuse as a clamp; and a wide one (plane-by-plane on non-AVX-512 paths)
    let mut c = c2(40, 40, [9, 11], [3, 3], 2, 1, [1, 1, 1, 1], 40);
    c.n = 2;
    c.act = Some(Unary::LeakyRelu { alpha: 0.1 });
    conv_case(c, 44);
    let mut c = c2(17, 17, [6, 45], [3, 3], 1, 1, [1, 1, 1, 1], 17);
    c.act = Some(Unary::Relu);
    conv_case(c, 45);
    // Winograd (both tiles, forced by the algo loop in `check`) with batch 2 and a
    // non-clamp activation applied after the output transform
    let mut c = c2(20, 24, [17, 19], [3, 3], 1, 1, [1, 1, 1, 1], 1);
    c.n = 2;
    c.act = Some(Unary::LeakyRelu { alpha: 0.1 });
    conv_case(c, 53);
    // the stem kernel with batch 2 and a non-clamp activation, and with a Clip
    let mut c = c2(3, 20, [10, 24], [3, 3], 2, 1, [1, 1, 1, 1], 1);
    c.n = 2;
    c.act = Some(Unary::LeakyRelu { alpha: 0.1 });
    conv_case(c, 48);
    let mut c = c2(3, 20, [10, 24], [5, 5], 2, 1, [2, 2, 2, 2], 1);
    c.act = Some(Unary::Clip { min: 0.0, max: 6.0 });
    conv_case(c, 49);
    // the depthwise row kernel with batch 2 and a non-clamp activation, and with a Clip
    let mut c = c2(6, 6, [11, 26], [3, 3], 2, 1, [1, 1, 1, 1], 6);
    c.n = 2;
    c.act = Some(Unary::LeakyRelu { alpha: 0.1 });
    conv_case(c, 46);
    let mut c = c2(6, 6, [11, 26], [5, 5], 1, 1, [2, 2, 2, 2], 6);
    c.act = Some(Unary::Clip {
        min: -0.2,
        max: 0.3,
    });
    conv_case(c, 47);
    // 1-D
    conv_case(
        ConvCase {
            n: 1,
            c: 3,
            m: 5,
            hw: vec![17],
            k: vec![3],
            stride: vec![2],
            dil: vec![1],
            pads: vec![1, 0],
            group: 1,
            bias: true,
            act: None,
            auto_pad: AutoPad::NotSet,
        },
        42,
    );
    // 3-D
    conv_case(
        ConvCase {
            n: 1,
            c: 2,
            m: 3,
            hw: vec![4, 5, 6],
            k: vec![2, 3, 3],
            stride: vec![1, 2, 1],
            dil: vec![1, 1, 2],
            pads: vec![0, 1, 2, 1, 0, 2],
            group: 1,
            bias: true,
            act: Some(Unary::LeakyRelu { alpha: 0.1 }),
            auto_pad: AutoPad::NotSet,
        },
        43,
    );
}

#[test]
fn pooling_odd_shapes_ceil_pads_include_pad() {
    use kestrel_core::ops::PoolAttrs;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for (c, hw, k, s, pads, ceil, inc) in [
        (1, [7, 9], [2, 2], 2, [0, 0, 0, 0], false, false),
        (3, [7, 9], [3, 3], 2, [1, 1, 1, 1], true, false),
        (13, [8, 5], [3, 2], 1, [1, 0, 2, 1], false, true),
        (127, [5, 5], [2, 2], 2, [0, 0, 0, 0], true, true),
        (3, [6, 6], [3, 3], 3, [1, 1, 0, 0], true, true),
        (64, [111, 111], [3, 3], 2, [0, 0, 0, 0], true, false),
        (5, [9, 9], [3, 3], 2, [1, 1, 1, 1], false, false),
        // rows wider than one 16-lane vector, with tails: stride 1 and 2, 2x2 and 3x3
        (3, [20, 41], [3, 3], 1, [1, 1, 1, 1], false, false),
        (2, [9, 70], [2, 2], 2, [0, 0, 0, 0], false, false),
        (4, [13, 67], [3, 3], 2, [1, 2, 1, 2], true, false),
        (2, [6, 37], [4, 5], 2, [0, 3, 0, 1], false, true),
    ] {
        let x = rand_tensor(&mut rng, &[1, c, hw[0], hw[1]]);
        let attrs = PoolAttrs {
            kernel_shape: k.to_vec(),
            strides: vec![s, s],
            pads: pads.to_vec(),
            ceil_mode: ceil,
            count_include_pad: inc,
            ..Default::default()
        };
        check(
            &one_node(Op::MaxPool(attrs.clone()), x.shape(), vec![]),
            &x,
            "maxpool",
        );
        check(
            &one_node(Op::AveragePool(attrs), x.shape(), vec![]),
            &x,
            "avgpool",
        );
    }
}

/// Max pooling propagates a NaN into every window that covers it, on every SIMD path (the
/// AVX-512 kernel detects NaN planes and hands them to the NaN-propagating loops).
#[test]
fn maxpool_propagates_nan() {
    use kestrel_core::ops::PoolAttrs;
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    for (hw, k, s) in [([9, 40], 3, 2), ([9, 40], 3, 1), ([8, 34], 2, 2)] {
        let mut x = rand_tensor(&mut rng, &[1, 3, hw[0], hw[1]]);
        {
            let v = x.as_f32_mut().unwrap();
            v[hw[0] * hw[1] + 2 * hw[1] + 17] = f32::NAN; // plane 1, row 2, column 17
            v[2 * hw[0] * hw[1] + hw[1] - 1] = f32::NAN; // plane 2, row 0, last column
        }
        let attrs = PoolAttrs {
            kernel_shape: vec![k, k],
            strides: vec![s, s],
            pads: vec![1, 1, 1, 1],
            ..Default::default()
        };
        let g = one_node(Op::MaxPool(attrs), x.shape(), vec![]);
        let want = g.nodes[0].op.eval(&[Some(&x)], 1).unwrap().remove(0);
        let pg = prepare(&g, &[x.shape().to_vec()], &PrepareOptions::default()).unwrap();
        let plan = CpuPlan::new(pg, &CpuOptions::default()).unwrap();
        let got = plan
            .run(&mut ExecState::default(), vec![x.clone()])
            .unwrap()
            .remove(0);
        let (got, want) = (got.as_f32().unwrap(), want.as_f32().unwrap());
        assert!(want.iter().any(|v| v.is_nan()));
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                a.is_nan() == b.is_nan() && (a.is_nan() || a == b),
                "k{k} s{s} position {i}: got {a}, want {b}"
            );
        }
    }
}

#[test]
fn concat_along_each_axis() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for axis in [0i64, 1, 2, -1] {
        let x = rand_tensor(&mut rng, &[2, 3, 4, 5]);
        let mut other_shape = vec![2, 3, 4, 5];
        let a = if axis < 0 { 3 } else { axis as usize };
        other_shape[a] = 13;
        let c = rand_tensor(&mut rng, &other_shape);
        check(
            &one_node(Op::Concat { axis }, x.shape(), vec![Some(c)]),
            &x,
            "concat",
        );
    }
}

#[test]
fn dense_gemm_and_matmul() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for &(m, k, n, tb) in &[
        (1, 13, 127, true),
        (3, 127, 13, false),
        (1, 1, 1, false),
        (5, 33, 7, true),
    ] {
        let x = rand_tensor(&mut rng, &[m, k]);
        let w = if tb {
            rand_tensor(&mut rng, &[n, k])
        } else {
            rand_tensor(&mut rng, &[k, n])
        };
        let b = rand_tensor(&mut rng, &[n]);
        let op = Op::Gemm(GemmAttrs {
            alpha: 0.5,
            beta: 2.0,
            trans_a: false,
            trans_b: tb,
            activation: Some(Unary::Sigmoid),
        });
        check(
            &one_node(op, &[m, k], vec![Some(w.clone()), Some(b)]),
            &x,
            "gemm",
        );
        if !tb {
            check(&one_node(Op::MatMul, &[m, k], vec![Some(w)]), &x, "matmul");
        }
    }
    let x = rand_tensor(&mut rng, &[2, 3, 13]);
    let w = rand_tensor(&mut rng, &[13, 5]);
    check(
        &one_node(Op::MatMul, &[2, 3, 13], vec![Some(w)]),
        &x,
        "batched matmul",
    );
}

#[test]
fn elementwise_kernels_with_broadcast() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let x = rand_tensor(&mut rng, &[1, 13, 3, 5]);
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        for shape in [vec![1, 13, 3, 5], vec![13, 1, 1], vec![1], vec![5]] {
            let c = rand_tensor(&mut rng, &shape);
            check(
                &one_node(Op::Binary(op), &[1, 13, 3, 5], vec![Some(c)]),
                &x,
                "binary",
            );
        }
    }
    for u in [
        Unary::Relu,
        Unary::LeakyRelu { alpha: 0.2 },
        Unary::Sigmoid,
        Unary::HardSigmoid {
            alpha: 0.3,
            beta: 0.4,
        },
        Unary::HardSwish,
        Unary::Tanh,
        Unary::Exp,
        Unary::Clip {
            min: -0.2,
            max: 0.3,
        },
    ] {
        check(
            &one_node(Op::Unary(u), &[1, 13, 3, 5], vec![]),
            &x,
            u.name(),
        );
    }
}

#[test]
fn prelu_per_channel_and_other_broadcasts() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    for c in [1usize, 3, 13, 127] {
        let xs = [1, c, 7, 5];
        let x = rand_tensor(&mut rng, &xs);
        // per-channel and scalar slopes: the native kernel (`check` requires one); other
        // broadcasts stay on the reference kernel
        for shape in [vec![c, 1, 1], vec![1, c, 1, 1], vec![1]] {
            let slope = rand_tensor(&mut rng, &shape);
            check(
                &one_node(Op::PRelu, &xs, vec![Some(slope)]),
                &x,
                &format!("prelu c={c} slope {shape:?}"),
            );
        }
    }
}

#[test]
fn fp16_arithmetic_overflow_falls_back_to_f32_for_good() {
    if !kestrel_cpu::hgemm::available() {
        eprintln!("AVX512-FP16 not available: fp16-arithmetic fallback not tested on this CPU");
        return;
    }
    // 64 channels x 3x3 of 100 * 100: partial sums of 64 products reach 640,000 > 65,504
    let x = Tensor::full(vec![1, 64, 6, 6], 100.0f32).unwrap();
    let w = Tensor::full(vec![16, 64, 3, 3], 100.0f32).unwrap();
    let op = Op::Conv(ConvAttrs {
        kernel_shape: None,
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        auto_pad: AutoPad::NotSet,
        group: 1,
        activation: None,
    });
    let g = one_node(op.clone(), x.shape(), vec![Some(w.clone())]);
    let want = op.eval(&[Some(&x), Some(&w)], 1).unwrap().remove(0);
    let pg = prepare(&g, &[x.shape().to_vec()], &PrepareOptions::default()).unwrap();
    let plan = CpuPlan::new(
        pg,
        &CpuOptions {
            threads: 2,
            conv_algo: ConvAlgo::Auto,
            storage: StoragePrecision::F16Arith,
            fuse_residual: true,
            region_kernels: false,
        },
    )
    .unwrap();
    assert!(plan.steps()[0].kernel.ends_with("+f16arith"));
    let mut st = ExecState::default();
    for _ in 0..2 {
        let got = plan.run(&mut st, vec![x.clone()]).unwrap().remove(0);
        assert_eq!(max_rel(&got, &want), 0.0, "recomputed exactly in f32");
        assert!(got.as_f32().unwrap().iter().all(|v| v.is_finite()));
        assert!(
            plan.steps()[0].kernel.contains("f32 arith after overflow"),
            "{}",
            plan.steps()[0].kernel
        );
    }
}

#[test]
fn f16_storage_keeps_out_of_range_activations_in_f32() {
    // x -> Mul(x, 1000) = a (held across an unrelated step) -> Mul(a, 1) = y; a reaches 1e5,
    // beyond f16's 65504: storing it in f16 would give infinities
    let mut g = Graph {
        opset: 17,
        ..Default::default()
    };
    let x = g.add_value("x");
    g.inputs.push(GraphInput {
        value: x,
        dtype: DType::F32,
        dims: vec![Dim::Known(1), Dim::Known(64)],
    });
    let k = g.add_constant("k", Tensor::from_vec(vec![1], vec![1000.0f32]).unwrap());
    let one = g.add_constant("one", Tensor::from_vec(vec![1], vec![1.0f32]).unwrap());
    let (a, d, y) = (g.add_value("a"), g.add_value("d"), g.add_value("y"));
    let node = |name: &str, op: Op, inputs: Vec<usize>, out: usize| Node {
        name: name.into(),
        op,
        inputs: inputs.into_iter().map(Some).collect(),
        outputs: vec![out],
        source_op: "test".into(),
        attrs: Default::default(),
    };
    g.nodes
        .push(node("scale", Op::Binary(BinaryOp::Mul), vec![x, k], a));
    g.nodes
        .push(node("side", Op::Unary(Unary::Relu), vec![x], d));
    g.nodes
        .push(node("post", Op::Binary(BinaryOp::Mul), vec![a, one], y));
    g.outputs.push(y);
    g.outputs.push(d);
    let xs = Tensor::from_vec(vec![1, 64], (0..64).map(|i| 100.0 + i as f32).collect()).unwrap();
    let pg = prepare(&g, &[vec![1, 64]], &PrepareOptions::default()).unwrap();
    let plan = CpuPlan::new(
        pg,
        &CpuOptions {
            threads: 1,
            conv_algo: ConvAlgo::Auto,
            storage: StoragePrecision::F16,
            fuse_residual: true,
            region_kernels: false,
        },
    )
    .unwrap();
    let mut st = ExecState::default();
    let got = plan.run(&mut st, vec![xs.clone()]).unwrap().remove(0);
    let want: Vec<f32> = xs.as_f32().unwrap().iter().map(|v| v * 1000.0).collect();
    assert_eq!(got.as_f32().unwrap(), want.as_slice());
    assert_eq!(st.f16_out_of_range(), 1);
}

/// `x -> conv A -> a; a -> conv B -> b; add(b, a) (or add(a, b)) -> s; [relu(s) -> out]`: the
/// residual Add (and Relu) fused into conv B, against the node-by-node reference.
fn residual_graph(
    c: usize,
    hw: [usize; 2],
    kb: usize,
    group_b: usize,
    swap: bool,
    relu: bool,
    seed: u64,
) -> (Graph, Tensor) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut g = Graph {
        opset: 17,
        ..Default::default()
    };
    let xs = [1, c, hw[0], hw[1]];
    let x = g.add_value("x");
    g.inputs.push(GraphInput {
        value: x,
        dtype: DType::F32,
        dims: xs.iter().map(|&d| Dim::Known(d)).collect(),
    });
    let conv = |pad: usize, group: usize| {
        Op::Conv(ConvAttrs {
            kernel_shape: None,
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![pad; 4],
            auto_pad: AutoPad::NotSet,
            group,
            activation: None,
        })
    };
    let wa = g.add_constant("wa", rand_tensor(&mut rng, &[c, c, 3, 3]));
    let ba = g.add_constant("ba", rand_tensor(&mut rng, &[c]));
    let wb = g.add_constant("wb", rand_tensor(&mut rng, &[c, c / group_b, kb, kb]));
    let bb = g.add_constant("bb", rand_tensor(&mut rng, &[c]));
    let (a, b, s) = (g.add_value("a"), g.add_value("b"), g.add_value("s"));
    let o = g.add_value("o");
    let mut node = |name: &str, op: Op, inputs: Vec<Option<usize>>, out: usize| {
        g.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            outputs: vec![out],
            source_op: "test".into(),
            attrs: Default::default(),
        })
    };
    node("A", conv(1, 1), vec![Some(x), Some(wa), Some(ba)], a);
    node(
        "B",
        conv(kb / 2, group_b),
        vec![Some(a), Some(wb), Some(bb)],
        b,
    );
    let add_in = if swap {
        vec![Some(a), Some(b)]
    } else {
        vec![Some(b), Some(a)]
    };
    node("add", Op::Binary(BinaryOp::Add), add_in, s);
    let out = if relu {
        node("relu", Op::Unary(Unary::Relu), vec![Some(s)], o);
        o
    } else {
        s
    };
    g.outputs.push(out);
    (g, rand_tensor(&mut rng, &xs))
}

#[test]
fn residual_add_and_relu_fused_into_the_convolution() {
    // 3x3 at 13x11 (direct kernel), 7x7 (small-map kernel on AVX-512), 1x1 (in place, short
    // and long sums: full tiles fuse the residual in registers, edge tiles after), depthwise
    // (the extra-pass fallback), Winograd, both operand orders, with and without the Relu
    let cases = [
        (13, [13, 11], 3, 1, false, true),
        (40, [7, 7], 3, 1, true, true),
        (24, [9, 13], 1, 1, false, false),
        (96, [6, 5], 1, 1, true, true),
        (16, [10, 9], 3, 16, false, true),
        // Winograd F(4x4) and F(2x2) on AVX-512 (residual added in the output transform)
        (64, [26, 25], 3, 1, false, true),
        (128, [15, 17], 3, 1, true, false),
        (64, [26, 37], 3, 1, true, true),
    ];
    let avx512 = kestrel_cpu::simd::active_path() == kestrel_cpu::simd::SimdPath::Avx512;
    for (i, &(c, hw, kb, grp, swap, relu)) in cases.iter().enumerate() {
        let (g, x) = residual_graph(c, hw, kb, grp, swap, relu, 70 + i as u64);
        let pg = prepare(&g, &[x.shape().to_vec()], &PrepareOptions::default()).unwrap();
        let mut outs = Vec::new();
        for fuse in [false, true] {
            for threads in [1, 2] {
                let plan = CpuPlan::new(
                    pg.clone(),
                    &CpuOptions {
                        threads,
                        fuse_residual: fuse,
                        region_kernels: false,
                        ..Default::default()
                    },
                )
                .unwrap();
                let names: Vec<String> = plan.steps().into_iter().map(|s| s.kernel).collect();
                let fused = names.iter().any(|k| k.contains("+add"));
                assert_eq!(fused, fuse, "case {i}: kernels {names:?}");
                if fuse {
                    assert_eq!(
                        names.len(),
                        2,
                        "case {i}: Add (and Relu) absorbed: {names:?}"
                    );
                    assert_eq!(names[1].ends_with("+relu"), relu, "case {i}: {names:?}");
                    if c >= 64 && kb == 3 && grp == 1 && avx512 {
                        assert!(names[1].starts_with("winograd"), "case {i}: {names:?}");
                    }
                }
                let mut st = ExecState::default();
                for _ in 0..2 {
                    outs.push(plan.run(&mut st, vec![x.clone()]).unwrap().remove(0));
                }
            }
        }
        // the reference: node by node with kestrel-core's plain loops
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
        let want = vals[g.outputs[0]].clone().unwrap();
        for (k, got) in outs.iter().enumerate() {
            let e = max_rel(got, &want);
            assert!(e < 1e-5, "case {i} run {k}: max rel error {e}");
        }
    }
}

/// The kernel a plan with `opts` picks for a 3x3 convolution (`stride`, `pads`, activation
/// `act`) from `x` (NCHW) to `c_out` channels.
fn planned_conv_kernel(
    x: [usize; 4],
    c_out: usize,
    stride: usize,
    pads: [usize; 4],
    act: Unary,
    opts: &CpuOptions,
) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(50);
    let w = rand_tensor(&mut rng, &[c_out, x[1], 3, 3]);
    let op = Op::Conv(ConvAttrs {
        kernel_shape: None,
        strides: vec![stride, stride],
        dilations: vec![1, 1],
        pads: pads.to_vec(),
        auto_pad: AutoPad::NotSet,
        group: 1,
        activation: Some(act),
    });
    let g = one_node(op, &x, vec![Some(w), None]);
    let pg = prepare(&g, &[x.to_vec()], &PrepareOptions::default()).unwrap();
    let plan = CpuPlan::new(pg, opts).unwrap();
    plan.steps()[0].kernel.clone()
}

/// On the AVX-512 path an RGB first layer runs the few-input-channel kernel (the odd-shape
/// cases above check its results; this checks that `auto` picks it).
#[test]
fn rgb_first_layer_runs_the_stem_kernel_on_avx512() {
    if kestrel_cpu::simd::active_path() != kestrel_cpu::simd::SimdPath::Avx512 {
        return;
    }
    let relu6 = Unary::Clip { min: 0.0, max: 6.0 };
    let k = planned_conv_kernel(
        [1, 3, 64, 64],
        32,
        2,
        [0, 0, 1, 1],
        relu6,
        &Default::default(),
    );
    assert_eq!(k, "direct-stem");
}

/// Global average and max pooling on odd shapes: 1, 3, 13, 127 channels, single-position and
/// odd planes, batch 2, a 3-D input; max pooling propagates NaN.
#[test]
fn global_pooling_odd_shapes_and_nan() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(51);
    for shape in [
        vec![1, 1, 1, 1],
        vec![1, 3, 7, 7],
        vec![2, 13, 13, 11],
        vec![1, 127, 5, 3],
        vec![1, 5, 3, 4, 5],
        vec![1, 70, 2, 9],
    ] {
        let x = rand_tensor(&mut rng, &shape);
        for op in [Op::GlobalAveragePool, Op::GlobalMaxPool] {
            check(
                &one_node(op.clone(), &shape, vec![]),
                &x,
                &format!("{op:?} {shape:?}"),
            );
        }
    }
    let mut x = rand_tensor(&mut rng, &[1, 4, 5, 5]);
    x.as_f32_mut().unwrap()[2 * 25 + 7] = f32::NAN;
    let g = one_node(Op::GlobalMaxPool, &[1, 4, 5, 5], vec![]);
    let pg = prepare(&g, &[vec![1, 4, 5, 5]], &PrepareOptions::default()).unwrap();
    let plan = CpuPlan::new(pg, &CpuOptions::default()).unwrap();
    assert_eq!(plan.steps()[0].kernel, "global-pool");
    let got = plan
        .run(&mut ExecState::default(), vec![x])
        .unwrap()
        .remove(0);
    let got = got.as_f32().unwrap();
    assert!(got[2].is_nan() && got.iter().enumerate().all(|(i, v)| i == 2 || !v.is_nan()));
}

/// On the AVX-512 path `auto` runs 3x3 stride-1 layers with 64+ channels on 28x28 maps in
/// Winograd F(4x4,3x3) and with 128+ channels on 14x14 maps in F(2x2,3x3); a plan for
/// convolutional caching (region kernels) does not (small crops run faster direct).
#[test]
fn auto_picks_winograd_on_large_maps_except_for_region_plans() {
    if kestrel_cpu::simd::active_path() != kestrel_cpu::simd::SimdPath::Avx512 {
        return;
    }
    let same = [1, 1, 1, 1];
    for (regions, want) in [(false, "winograd-f4x3"), (true, "direct")] {
        let opts = CpuOptions {
            region_kernels: regions,
            ..Default::default()
        };
        let k = planned_conv_kernel([1, 64, 28, 28], 64, 1, same, Unary::Relu, &opts);
        assert_eq!(k, want);
    }
    // 14x14 maps with 128+ channels: F(2x2,3x3)
    let k = planned_conv_kernel(
        [1, 128, 14, 14],
        128,
        1,
        same,
        Unary::Relu,
        &Default::default(),
    );
    assert_eq!(k, "winograd-f2x3");
}

/// Winograd recomputes a region of a layer (convolutional caching): tiles start at the region,
/// so its outputs equal the whole layer's up to float rounding; F(4x4) and F(2x2), crops at
/// the borders (their own zero padding) and inside, odd sizes, a fused Relu.
#[test]
fn winograd_recomputes_regions_of_a_layer() {
    use kestrel_core::ops::conv::conv_geometry;
    use kestrel_cpu::cached::crop_geometry;
    use kestrel_cpu::conv::PreparedConv;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for (algo, c, hw, name) in [
        (ConvAlgo::Winograd, 32, 30, "winograd-f4x3"),
        (ConvAlgo::Winograd2, 13, 17, "winograd-f2x3"),
        (ConvAlgo::Winograd6, 24, 29, "winograd-f6x3"),
    ] {
        let tol = if algo == ConvAlgo::Winograd6 {
            1e-4
        } else {
            1e-5
        };
        let a = ConvAttrs {
            kernel_shape: None,
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            auto_pad: AutoPad::NotSet,
            group: 1,
            activation: Some(Unary::Relu),
        };
        let co = 40;
        let g = conv_geometry(&a, &[1, c, hw, hw], &[co, c, 3, 3]).unwrap();
        let w = rand_tensor(&mut rng, &[co, c, 3, 3]);
        let b = rand_tensor(&mut rng, &[co]);
        let x = rand_tensor(&mut rng, &[1, c, hw, hw]);
        let x = x.as_f32().unwrap();
        let pc = PreparedConv::new(
            g.clone(),
            w.as_f32().unwrap(),
            Some(b.as_f32().unwrap()),
            Some(Unary::Relu),
            algo,
        );
        assert_eq!(pc.kind.name(), name);
        assert!(pc.supports_regions());
        let mut full = vec![0f32; co * hw * hw];
        let mut s = Vec::new();
        pc.run(x, &mut full, &mut s);
        let scale = full.iter().fold(0f32, |m, v| m.max(v.abs()));
        for [oy0, oy1, ox0, ox1] in [
            [0, 7, 0, 5],
            [3, 11, 9, hw],
            [hw - 5, hw, hw - 8, hw],
            [0, hw, 0, hw],
        ] {
            // the input crop the outputs read, with its own zero padding (as caching builds it)
            let (sub, [cy0, _, cx0, _]) =
                crop_geometry(&g, [oy0, oy1, ox0, ox1]).expect("a crop inside the map");
            let (ch, cw) = (sub.input[1], sub.input[2]);
            let (rh, rw) = (oy1 - oy0, ox1 - ox0);
            let mut xin = vec![0f32; c * ch * cw];
            for ci in 0..c {
                for y in 0..ch {
                    xin[(ci * ch + y) * cw..][..cw]
                        .copy_from_slice(&x[(ci * hw + cy0 + y) * hw + cx0..][..cw]);
                }
            }
            let mut y = vec![0f32; co * rh * rw];
            pc.run_region(&sub, &xin, &mut y, &mut s);
            let mut err = 0f32;
            for o in 0..co {
                for yy in 0..rh {
                    for xx in 0..rw {
                        let want = full[(o * hw + oy0 + yy) * hw + ox0 + xx];
                        err = err.max((y[(o * rh + yy) * rw + xx] - want).abs());
                    }
                }
            }
            assert!(
                err / scale < tol,
                "{name} region {oy0}..{oy1} x {ox0}..{ox1}: max-rel {}",
                err / scale
            );
        }
    }
}
