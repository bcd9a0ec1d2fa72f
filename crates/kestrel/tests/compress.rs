//! Low-rank compression: full ranks reproduce the model; chosen ranks stay within bounds; a
//! compressed model loads and runs; a MAC target is met.

use kestrel::compress::{compress, CompressOptions, Method, RankRule};
use kestrel::{Model, Preset, Session, SessionOptions, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(rel)
}

fn run(bytes_or_path: &Model, x: &Tensor) -> Vec<Tensor> {
    Session::new(bytes_or_path, SessionOptions::default())
        .unwrap()
        .run(vec![x.clone()])
        .unwrap()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    let s = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / s
}

#[test]
fn full_rank_decomposition_reproduces_the_model() {
    let path = asset("models/mtcnn_onet.onnx");
    let ranks: HashMap<String, Vec<usize>> = Model::load(&path)
        .unwrap()
        .graph()
        .nodes
        .iter()
        .map(|n| (n.name.clone(), vec![100_000, 100_000]))
        .collect();
    let opts = CompressOptions {
        method: Method::Auto,
        rule: RankRule::Ranks(ranks),
        min_gain: f64::INFINITY,
        calib: vec![],
    };
    let (bytes, report) = compress(&path, &opts).unwrap();
    let decomposed = report
        .layers
        .iter()
        .filter(|l| !l.action.starts_with("kept"))
        .count();
    assert!(decomposed >= 4, "{decomposed}");
    for l in &report.layers {
        let max = *l.weight_shape.iter().take(2).max().unwrap_or(&0);
        assert!(l.ranks.iter().all(|&r| r >= 1 && r <= max), "{l:?}");
    }
    let original = Model::load(&path).unwrap();
    let compressed = Model::from_bytes(&bytes, "onet_lr").unwrap();
    let x = Preset::for_model(&original)
        .load_image(asset("photos/grace_hopper.jpg"))
        .unwrap();
    for (a, b) in run(&compressed, &x).iter().zip(&run(&original, &x)) {
        let e = max_rel(a, b);
        assert!(
            e < 1e-4,
            "full-rank decomposition changed the output by {e}"
        );
    }
}

#[test]
fn speedup_target_is_met_and_the_model_runs() {
    let path = asset("models/mtcnn_onet.onnx");
    let opts = CompressOptions {
        rule: RankRule::Speedup(1.5),
        ..Default::default()
    };
    let (bytes, report) = compress(&path, &opts).unwrap();
    let ratio = report.macs_before as f64 / report.macs_after as f64;
    assert!(ratio >= 1.45, "MAC reduction {ratio}");
    assert!(report.params_after < report.params_before);
    let compressed = Model::from_bytes(&bytes, "onet_lr").unwrap();
    let original = Model::load(&path).unwrap();
    let x = Preset::for_model(&original)
        .load_image(asset("photos/astronaut.png"))
        .unwrap();
    let (a, b) = (run(&compressed, &x), run(&original, &x));
    assert_eq!(a.len(), b.len());
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(p.shape(), q.shape());
        assert!(p.as_f32().unwrap().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn thin_layers_are_left_alone() {
    // EfficientNet-Lite0 is depthwise-separable: depthwise layers are never decomposed and most
    // thin 1x1 layers would not get faster.
    let path = asset("models/efficientnet_lite0.onnx");
    let (_, report) = compress(&path, &CompressOptions::default()).unwrap();
    assert!(report
        .layers
        .iter()
        .any(|l| l.action == "kept (grouped or depthwise)"));
    for l in report
        .layers
        .iter()
        .filter(|l| !l.action.starts_with("kept"))
    {
        assert!((l.macs_after as f64) < 0.8 * l.macs_before as f64, "{l:?}");
    }
}
