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
    // never fall back to the dense executor: this checks the cached path
    let mut opts = StreamOptions {
        dense_above: 1.0,
        ..Default::default()
    };
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
            // the prediction (regions only, no pruning) bounds what was computed
            assert!(
                st.predicted_fraction + 1e-9 >= st.computed_fraction,
                "predicted {} < computed {}",
                st.predicted_fraction,
                st.computed_fraction
            );
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
        dense_above: 1.0,
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
        // the cached path on every frame (it compares with the reference)
        let mut opts = StreamOptions {
            metric,
            dense_above: 1.0,
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

/// A P-Net frame of `h` x `w` with a smooth pattern.
fn pattern(h: usize, w: usize) -> Vec<f32> {
    (0..3 * h * w)
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            ((x as f32 * 0.11 + y as f32 * 0.07 + c as f32).sin()) * 0.8
        })
        .collect()
}

#[test]
fn layer_thresholds_prune_and_do_not_drift() {
    // A region brightens by a tiny step every frame: each step alone is below the layer
    // thresholds. Were changes compared frame to frame, none would ever be passed on and the
    // error would grow without bound; compared with the stored values, they are passed on once
    // they add up, so the error stays bounded.
    let model = Model::load(asset("models/mtcnn_pnet.onnx")).unwrap();
    let (h, w) = (72, 96);
    let run = |layer_levels: f32| -> (Vec<f32>, f64) {
        let mut opts = StreamOptions {
            threshold: vec![0.0],
            dense_above: 1.0,
            ..Default::default()
        };
        opts.cache.layer_levels = layer_levels;
        let mut stream = Stream::new(&model, SessionOptions::default(), opts).unwrap();
        let mut dense = Session::new(&model, SessionOptions::default()).unwrap();
        let mut x = pattern(h, w);
        let (mut errs, mut computed) = (Vec::new(), 0.0);
        for frame in 0..40 {
            for c in 0..3 {
                for y in 20..44 {
                    for xx in 30..60 {
                        x[(c * h + y) * w + xx] += 0.004;
                    }
                }
            }
            let t = Tensor::from_vec(vec![1, 3, h, w], x.clone()).unwrap();
            let (outs, st) = stream.run_frame(t.clone()).unwrap();
            let want = dense.run(vec![t]).unwrap();
            errs.push(
                outs.iter()
                    .zip(&want)
                    .map(|(o, w)| max_rel(o, w))
                    .fold(0f32, f32::max),
            );
            if frame > 0 {
                computed += st.computed_fraction;
            }
        }
        (errs, computed / 39.0)
    };
    let (exact, computed_exact) = run(0.0);
    assert!(exact.iter().all(|&e| e < 2e-5), "{exact:?}");
    let (errs, computed) = run(6.0);
    eprintln!("layer levels 6: computed {computed:.3} (0: {computed_exact:.3}); errors {errs:?}");
    assert!(computed < computed_exact, "pruning computes less");
    let early = errs[5..15].iter().fold(0f32, |m, &e| m.max(e));
    let late = errs[30..].iter().fold(0f32, |m, &e| m.max(e));
    assert!(late <= early * 1.5 + 1e-3, "error grows: {early} -> {late}");
    assert!(late < 0.1, "bounded: {late}");
}

#[test]
fn frames_with_little_to_reuse_run_densely_then_the_cache_is_rebuilt() {
    let model = Model::load(asset("models/mtcnn_pnet.onnx")).unwrap();
    let (h, w) = (72, 96);
    let opts = StreamOptions {
        threshold: vec![0.0],
        dense_above: 0.5,
        probe_every: 2,
        ..Default::default()
    };
    let mut stream = Stream::new(&model, SessionOptions::default(), opts).unwrap();
    let mut dense = Session::new(&model, SessionOptions::default()).unwrap();
    let mut x = pattern(h, w);
    let mut modes = Vec::new();
    for frame in 0..6 {
        // frame 1 changes 70% of the rows (little to reuse); frames 4, 5 a small corner
        let rows = match frame {
            1 => 0..50,
            4 | 5 => 0..4,
            _ => 0..0,
        };
        for c in 0..3 {
            for y in rows.clone() {
                for xx in 0..if frame == 1 { w } else { 8 } {
                    x[(c * h + y) * w + xx] += 0.3;
                }
            }
        }
        let t = Tensor::from_vec(vec![1, 3, h, w], x.clone()).unwrap();
        let (outs, st) = stream.run_frame(t.clone()).unwrap();
        let want = dense.run(vec![t]).unwrap();
        for (o, w) in outs.iter().zip(&want) {
            assert!(max_rel(o, w) < 2e-5, "frame {frame} ({})", st.mode);
        }
        eprintln!(
            "frame {frame}: {} predicted {} computed {} changed {}",
            st.mode, st.predicted_fraction, st.computed_fraction, st.changed_blocks
        );
        modes.push(st.mode);
    }
    // 0: first frame (builds the cache), 1: too much changed (dense, cache dropped; the dense
    // cost is now timed), 2: not a probe frame (probes every 2nd frame: dense), 3: a probe,
    // nothing changed but the cache is cold (rebuild), 4, 5: cached
    assert_eq!(
        modes,
        ["rebuild", "dense", "dense", "rebuild", "cached", "cached"]
    );
}

#[test]
fn a_camera_pan_moves_the_cache_and_stays_exact() {
    // frames are windows of a larger scene moving 8 px per frame (a pan): the cached values
    // move with the scene, only the uncovered band and what the border touches is recomputed,
    // and the outputs equal dense inference on every frame
    for (model, h, w) in [
        ("models/mtcnn_pnet.onnx", 96usize, 128usize),
        ("models/efficientnet_lite0.onnx", 224, 224),
    ] {
        let model = Model::load(asset(model)).unwrap();
        let (bh, bw) = (h + 64, w + 96);
        let scene: Vec<f32> = (0..3 * bh * bw)
            .map(|i| {
                let (c, y, x) = (i / (bh * bw), (i / bw) % bh, i % bw);
                ((x as f32 * 0.21).sin() * (y as f32 * 0.13 + c as f32).cos()) * 0.9
            })
            .collect();
        let window = |ox: usize, oy: usize| {
            let mut v = vec![0f32; 3 * h * w];
            for c in 0..3 {
                for y in 0..h {
                    let src = &scene[(c * bh + oy + y) * bw + ox..][..w];
                    v[(c * h + y) * w..][..w].copy_from_slice(src);
                }
            }
            Tensor::from_vec(vec![1, 3, h, w], v).unwrap()
        };
        let opts = StreamOptions {
            threshold: vec![0.0],
            dense_above: 1.0,
            ..Default::default()
        };
        let mut stream = Stream::new(&model, SessionOptions::default(), opts).unwrap();
        let mut dense = Session::new(&model, SessionOptions::default()).unwrap();
        let mut computed = Vec::new();
        for k in 0..5 {
            // pan right then down: the content moves left, then up
            let m = 8usize;
            let (ox, oy) = if k < 3 {
                (m * k, 0)
            } else {
                (2 * m, m * (k - 2))
            };
            let t = window(ox, oy);
            let (outs, st) = stream.run_frame(t.clone()).unwrap();
            let want = dense.run(vec![t]).unwrap();
            for (o, wnt) in outs.iter().zip(&want) {
                let e = max_rel(o, wnt);
                assert!(e < 2e-5, "{} frame {k}: {e}", model.name());
            }
            if k > 0 {
                let expect = if k < 3 {
                    [-(m as isize), 0]
                } else {
                    [0, -(m as isize)]
                };
                assert_eq!(st.motion, expect, "{} frame {k}", model.name());
                computed.push(st.computed_fraction);
            }
        }
        eprintln!("{}: computed per panned frame {computed:?}", model.name());
        assert!(
            computed.iter().all(|&c| c < 0.9),
            "{}: a pan reuses most of the work: {computed:?}",
            model.name()
        );
    }
}
