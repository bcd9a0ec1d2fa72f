//! Graph passes keep results exact; shape inference re-runs when the input shape changes.

mod common;
use common::*;
use kestrel::{Model, Session, SessionOptions, Tensor};
use kestrel_core::prepare::{prepare, PrepareOptions};

fn run(m: &Model, optimize: bool, x: Tensor) -> Vec<Tensor> {
    let mut s = Session::new(
        m,
        SessionOptions {
            optimize,
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    s.run(vec![x]).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.as_f32()
        .unwrap()
        .iter()
        .zip(b.as_f32().unwrap())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Conv -> BatchNormalization -> Clip(0, 6) -> Conv -> Relu, plus a dead branch.
fn conv_bn_model() -> Vec<u8> {
    model(
        vec![
            node(
                "Conv",
                "conv1",
                &["x", "W1", "B1"],
                &["c1"],
                vec![ints("pads", &[1, 1, 1, 1])],
            ),
            node(
                "BatchNormalization",
                "bn1",
                &["c1", "s", "b", "mean", "var"],
                &["bn"],
                vec![float("epsilon", 1e-3)],
            ),
            node("Clip", "relu6", &["bn", "lo", "hi"], &["r"], vec![]),
            node("Conv", "conv2", &["r", "W2"], &["c2"], vec![]),
            node("Relu", "relu2", &["c2"], &["y"], vec![]),
            node("Sigmoid", "dead", &["c2"], &["unused"], vec![]),
        ],
        vec![value_info("x", 1, &[1, 3, -1, -2])],
        vec![value_info("y", 1, &[])],
        vec![
            f32_tensor("W1", &[13, 3, 3, 3], values(351, 1)),
            f32_tensor("B1", &[13], values(13, 2)),
            f32_tensor("s", &[13], values(13, 3).iter().map(|v| v + 1.5).collect()),
            f32_tensor("b", &[13], values(13, 4)),
            f32_tensor("mean", &[13], values(13, 5)),
            f32_tensor(
                "var",
                &[13],
                values(13, 6).iter().map(|v| v.abs() + 0.1).collect(),
            ),
            f32_tensor("lo", &[], vec![0.0]),
            f32_tensor("hi", &[], vec![6.0]),
            f32_tensor("W2", &[5, 13, 1, 1], values(65, 7)),
        ],
        13,
    )
}

#[test]
fn bn_folding_fusion_and_dead_node_removal_are_exact() {
    let m = Model::from_bytes(&conv_bn_model(), "t").unwrap();
    let x = Tensor::from_vec(vec![1, 3, 7, 9], values(189, 9)).unwrap();
    let a = run(&m, true, x.clone());
    let b = run(&m, false, x);
    assert!(
        max_abs(&a[0], &b[0]) < 1e-5,
        "optimised and plain graphs differ"
    );
    let g = prepare(m.graph(), &[vec![1, 3, 7, 9]], &PrepareOptions::default()).unwrap();
    let ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
    assert_eq!(
        ops,
        ["Conv+Act", "Conv+Act"],
        "BN folded, Clip and Relu fused, dead Sigmoid removed"
    );
}

#[test]
fn shape_subgraphs_fold_to_constants() {
    // y = Reshape(x, Concat(Gather(Shape(x), 0), [-1]))  -> flatten per batch, computed from x's shape
    let m = model(
        vec![
            node("Shape", "shape", &["x"], &["s"], vec![]),
            node("Gather", "g", &["s", "zero"], &["n"], vec![int("axis", 0)]),
            node("Unsqueeze", "u", &["n", "axes0"], &["n1"], vec![]),
            node(
                "Concat",
                "cat",
                &["n1", "minus1"],
                &["target"],
                vec![int("axis", 0)],
            ),
            node("Reshape", "reshape", &["x", "target"], &["y"], vec![]),
        ],
        vec![value_info("x", 1, &[-1, 3, 4])],
        vec![value_info("y", 1, &[])],
        vec![
            i64_tensor("zero", &[], vec![0]),
            i64_tensor("axes0", &[1], vec![0]),
            i64_tensor("minus1", &[1], vec![-1]),
        ],
        13,
    );
    let m = Model::from_bytes(&m, "t").unwrap();
    for batch in [1, 2, 5] {
        let x = Tensor::from_vec(vec![batch, 3, 4], values(batch * 12, 1)).unwrap();
        let g = prepare(m.graph(), &[vec![batch, 3, 4]], &PrepareOptions::default()).unwrap();
        assert_eq!(g.nodes.len(), 1, "only the Reshape is left");
        let y = run(&m, true, x.clone());
        assert_eq!(y[0].shape(), &[batch, 12]);
        assert_eq!(y[0].as_f32().unwrap(), x.as_f32().unwrap());
    }
}

#[test]
fn free_dimensions_reprepare_per_input_shape() {
    let pnet = Model::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../assets/models/mtcnn_pnet.onnx"
    ))
    .unwrap();
    let mut s = Session::new(&pnet, SessionOptions::default()).unwrap();
    let mut shapes = Vec::new();
    for (h, w) in [(12, 12), (60, 80), (33, 47), (60, 80)] {
        let x = Tensor::from_vec(vec![1, 3, h, w], values(3 * h * w, h as u32)).unwrap();
        let outs = s.run(vec![x.clone()]).unwrap();
        // a fresh session on the same shape gives the same result
        let fresh = Session::new(&pnet, SessionOptions::default())
            .unwrap()
            .run(vec![x])
            .unwrap();
        for (a, b) in outs.iter().zip(&fresh) {
            assert_eq!(a, b);
        }
        shapes.push(outs[0].shape().to_vec());
    }
    // P-Net: 12x12 input gives a 1x1 map; (H-2)/2 - 4 in general
    assert_eq!(shapes[0][2..], [1, 1]);
    assert_eq!(shapes[1][2..], [25, 35]);
    assert_eq!(shapes[2][2..], [12, 19]);
}

#[test]
fn sessions_on_one_model_in_parallel_threads_agree() {
    let m = Model::load(kestrel::default_model_path()).unwrap();
    let x = Tensor::from_vec(vec![1, 3, 224, 224], values(3 * 224 * 224, 5)).unwrap();
    let want = Session::new(
        &m,
        SessionOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap()
    .run(vec![x.clone()])
    .unwrap();
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                let mut s = Session::new(
                    &m,
                    SessionOptions {
                        threads: 1,
                        ..Default::default()
                    },
                )
                .unwrap();
                for _ in 0..2 {
                    assert_eq!(s.run(vec![x.clone()]).unwrap(), want);
                }
            });
        }
    });
}
