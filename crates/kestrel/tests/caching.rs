//! Convolutional caching: the cached outputs equal a dense run on the stream's reference input,
//! frame after frame, on real networks (depthwise, strided, residual, pooled, PRelu) with real
//! video and with synthetic changes; unchanged frames skip everything; the reference never
//! drifts more than the threshold from the true frames.

use kestrel::stream::{ChangeMetric, Stream, StreamOptions};
use kestrel::video::{open, OpenOptions};
use kestrel::{Model, Preset, Session, SessionOptions, Tensor};
use std::path::{Path, PathBuf};

fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(rel)
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Frames of the bundled clip through a preset.
fn frames(preset: &Preset, n: usize) -> Vec<Tensor> {
    let mut src = open(
        asset("video/cup.mp4").to_str().unwrap(),
        &OpenOptions::default(),
    )
    .unwrap();
    let mut v = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        // every 4th frame: more change per step than consecutive frames
        if f.index % 4 == 0 {
            v.push(preset.image_to_tensor(&f.image).unwrap());
        }
        if v.len() == n {
            break;
        }
    }
    v
}

fn check_model(path: &Path, preset: Preset, levels: f32, n: usize) -> (f64, f64) {
    let model = Model::load(path).unwrap();
    let mut opts = StreamOptions::default();
    opts.threshold_from_levels(levels, &preset);
    let mut stream = Stream::new(&model, SessionOptions::default(), opts.clone()).unwrap();
    let mut dense = Session::new(&model, SessionOptions::default()).unwrap();
    let mut computed = 0.0;
    let mut changed = 0.0;
    let thr = opts.threshold.iter().fold(0f32, |m, &t| m.max(t));
    for (i, x) in frames(&preset, n).into_iter().enumerate() {
        let (outs, st) = stream.run_frame(x.clone()).unwrap();
        let want = dense
            .run(vec![stream.reference().unwrap().clone()])
            .unwrap();
        for (o, w) in outs.iter().zip(&want) {
            let e = max_rel(o, w);
            assert!(
                e < 2e-5,
                "{}: frame {i}: cached vs dense on the reference: {e}",
                model.name()
            );
        }
        assert!(
            st.max_input_deviation <= thr + 1e-6,
            "deviation {} > {thr}",
            st.max_input_deviation
        );
        if i > 0 {
            computed += st.computed_fraction;
            changed += st.changed_blocks;
        }
        eprintln!(
            "{} frame {i}: changed {:.3} computed {:.3} skipped/partial/dense {}/{}/{}",
            model.name(),
            st.changed_blocks,
            st.computed_fraction,
            st.steps_skipped,
            st.steps_partial,
            st.steps_dense
        );
    }
    (changed / (n - 1) as f64, computed / (n - 1) as f64)
}

#[test]
fn efficientnet_cached_equals_dense_on_reference() {
    let p = asset("models/efficientnet_lite0.onnx");
    let preset = Preset::builtin("efficientnet_lite0").unwrap();
    let (changed, computed) = check_model(&p, preset, 6.0, 8);
    assert!(
        changed < 1.0 && computed < 1.0,
        "some reuse: {changed} {computed}"
    );
}

#[test]
fn pnet_and_vgg_cached_equal_dense_on_reference() {
    let mut preset = Preset::builtin("mtcnn_pnet").unwrap();
    preset.width = 160;
    preset.height = 120;
    check_model(&asset("models/mtcnn_pnet.onnx"), preset, 4.0, 6);
    let vgg = asset("../../shared/assets/models/classifiers/vgg16_imagenet_conv_trunk.onnx");
    if vgg.exists() {
        let mut preset = Preset::builtin("vgg16_imagenet_conv_trunk").unwrap();
        preset.width = 128;
        preset.height = 96;
        preset.fit = kestrel::preprocess::Fit::Stretch;
        check_model(&vgg, preset, 6.0, 5);
    }
}

#[test]
fn exact_with_zero_threshold_under_random_rectangles() {
    let model = Model::load(asset("models/efficientnet_lite0.onnx")).unwrap();
    let opts = StreamOptions {
        threshold: vec![0.0],
        block: 4,
        ..Default::default()
    };
    let mut stream = Stream::new(&model, SessionOptions::default(), opts).unwrap();
    let mut dense = Session::new(&model, SessionOptions::default()).unwrap();
    let mut x: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect();
    let mut seed = 17u64;
    let mut rnd = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    for frame in 0..6 {
        if frame > 0 {
            // change 1-3 random rectangles, one of them touching the border
            for k in 0..1 + rnd(3) {
                let (h, w) = (1 + rnd(40), 1 + rnd(60));
                let (y0, x0) = if k == 0 {
                    (224 - h, 0)
                } else {
                    (rnd(224 - h), rnd(224 - w))
                };
                for c in 0..3 {
                    for y in y0..y0 + h {
                        for xx in x0..x0 + w {
                            x[(c * 224 + y) * 224 + xx] += 0.25;
                        }
                    }
                }
            }
        }
        let t = Tensor::from_vec(vec![1, 3, 224, 224], x.clone()).unwrap();
        let (outs, st) = stream.run_frame(t.clone()).unwrap();
        let want = dense.run(vec![t]).unwrap();
        let e = max_rel(&outs[0], &want[0]);
        eprintln!(
            "frame {frame}: changed {:.3} computed {:.3} err {e}",
            st.changed_blocks, st.computed_fraction
        );
        assert!(e < 2e-5, "frame {frame}: {e}");
        assert_eq!(st.max_input_deviation, 0.0);
    }
}

#[test]
fn an_unchanged_frame_skips_every_step_and_a_cut_resets() {
    let model = Model::load(asset("models/efficientnet_lite0.onnx")).unwrap();
    let mut stream =
        Stream::new(&model, SessionOptions::default(), StreamOptions::default()).unwrap();
    let x = Tensor::from_vec(vec![1, 3, 224, 224], vec![0.1f32; 3 * 224 * 224]).unwrap();
    let (a, _) = stream.run_frame(x.clone()).unwrap();
    let (b, st) = stream.run_frame(x).unwrap();
    assert_eq!(st.computed_fraction, 0.0);
    assert_eq!(st.steps_partial + st.steps_dense, 0);
    assert_eq!(a[0].as_f32().unwrap(), b[0].as_f32().unwrap());
    let y = Tensor::from_vec(vec![1, 3, 224, 224], vec![-0.5f32; 3 * 224 * 224]).unwrap();
    let (_, st) = stream.run_frame(y).unwrap();
    assert!(st.scene_cut && st.computed_fraction == 1.0);
}

#[test]
fn other_metrics_run_and_stay_consistent() {
    let model = Model::load(asset("models/mtcnn_pnet.onnx")).unwrap();
    let mut preset = Preset::builtin("mtcnn_pnet").unwrap();
    preset.width = 96;
    preset.height = 72;
    for metric in [
        ChangeMetric::MeanAbs,
        ChangeMetric::Psnr,
        ChangeMetric::Histogram,
    ] {
        let mut opts = StreamOptions {
            metric,
            ..Default::default()
        };
        opts.threshold_from_levels(3.0, &preset);
        let mut stream = Stream::new(&model, SessionOptions::default(), opts).unwrap();
        let mut dense = Session::new(&model, SessionOptions::default()).unwrap();
        for x in frames(&preset, 4) {
            let (outs, _) = stream.run_frame(x).unwrap();
            let want = dense
                .run(vec![stream.reference().unwrap().clone()])
                .unwrap();
            assert!(max_rel(&outs[0], &want[0]) < 2e-5, "{metric:?}");
        }
    }
}
