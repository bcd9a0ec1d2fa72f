//! Long runs and concurrency: a cached stream over 10,000 frames keeps its memory flat and its
//! error bounded; one model shared by several threads gives the sequential results.

use kestrel::stream::{Stream, StreamOptions};
use kestrel::{Model, Preset, Session, SessionOptions, Tensor};
use std::path::{Path, PathBuf};

fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(rel)
}

/// Resident set size in bytes (Linux), or None elsewhere.
fn rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A static noisy background with a bright square moving across it (the square's position
/// advances one pixel per frame; every 2,500 frames the scene cuts to a new background).
fn frame(i: usize, h: usize, w: usize) -> Tensor {
    let scene = i / 2500;
    let (sy, sx) = ((i / 3) % (h - 8), i % (w - 8));
    let mut v = vec![0f32; 3 * h * w];
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let noise = (((x * 31 + y * 17 + c * 7 + scene * 13) * 2654435761usize) >> 7) % 64;
                let mut p = noise as f32 / 64.0 - 0.5;
                if (sy..sy + 8).contains(&y) && (sx..sx + 8).contains(&x) {
                    p = 0.9;
                }
                v[(c * h + y) * w + x] = p;
            }
        }
    }
    Tensor::from_vec(vec![1, 3, h, w], v).unwrap()
}

#[test]
fn soak_10000_cached_frames() {
    let model = Model::load(asset("models/mtcnn_pnet.onnx")).unwrap();
    // every frame through the cached path (the cost model would run some densely, skipping
    // change detection between its probes): this soak is about the cache
    let opts = StreamOptions {
        threshold: vec![0.02],
        dense_above: 1.0,
        ..Default::default()
    };
    let mut stream = Stream::new(
        &model,
        SessionOptions {
            threads: 1,
            ..Default::default()
        },
        opts,
    )
    .unwrap();
    let mut dense = Session::new(
        &model,
        SessionOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let (h, w) = (40, 56);
    let mut rss_warm = None;
    let mut cuts = 0;
    let mut computed = 0.0;
    for i in 0..10_000 {
        let x = frame(i, h, w);
        let (outs, st) = stream.run_frame(x.clone()).unwrap();
        cuts += st.scene_cut as usize;
        computed += st.computed_fraction;
        assert!(
            st.max_input_deviation <= 0.02 + 1e-6,
            "frame {i}: deviation {}",
            st.max_input_deviation
        );
        if i % 1000 == 999 {
            // no drift: still exactly dense inference on the stream's reference input
            let want = dense
                .run(vec![stream.reference().unwrap().clone()])
                .unwrap();
            for (o, r) in outs.iter().zip(&want) {
                let (o, r) = (o.as_f32().unwrap(), r.as_f32().unwrap());
                let e = o.iter().zip(r).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(e < 1e-4, "frame {i}: {e}");
            }
        }
        if i == 999 {
            rss_warm = rss();
        }
    }
    if let (Some(a), Some(b)) = (rss_warm, rss()) {
        let growth = b as f64 / a as f64 - 1.0;
        eprintln!(
            "RSS after warm-up {a} B, after 10,000 frames {b} B ({:+.2}%)",
            100.0 * growth
        );
        assert!(growth < 0.01, "memory grew {:.2}%", 100.0 * growth);
    }
    eprintln!(
        "scene cuts {cuts}, mean computed fraction {:.3}",
        computed / 10_000.0
    );
    assert_eq!(cuts, 3, "the three scene changes are detected as cuts");
}

#[test]
fn one_model_many_threads_equals_sequential() {
    let model = Model::load(asset("models/efficientnet_lite0.onnx")).unwrap();
    let preset = Preset::for_model(&model);
    let photos = ["coffee.png", "apple.jpg", "squirrel_cls.jpg", "chelsea.png"];
    let inputs: Vec<Tensor> = photos
        .iter()
        .map(|p| preset.load_image(asset(&format!("photos/{p}"))).unwrap())
        .collect();
    let opts = SessionOptions {
        threads: 1,
        ..Default::default()
    };
    let mut s = Session::new(&model, opts.clone()).unwrap();
    let sequential: Vec<Vec<f32>> = inputs
        .iter()
        .map(|x| {
            s.run(vec![x.clone()]).unwrap()[0]
                .as_f32()
                .unwrap()
                .to_vec()
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let (model, inputs, opts) = (&model, &inputs, opts.clone());
                scope.spawn(move || {
                    let mut s = Session::new(model, opts.clone()).unwrap();
                    let mut st = Stream::new(model, opts, StreamOptions::default()).unwrap();
                    (0..12)
                        .map(|k| {
                            let i = (t + k) % inputs.len();
                            let a = s.run(vec![inputs[i].clone()]).unwrap()[0]
                                .as_f32()
                                .unwrap()
                                .to_vec();
                            let b = st.run_frame(inputs[i].clone()).unwrap().0[0]
                                .as_f32()
                                .unwrap()
                                .to_vec();
                            (i, a, b)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, a, b) in h.join().unwrap() {
                assert_eq!(a, sequential[i], "session result on a thread differs");
                let e = b
                    .iter()
                    .zip(&sequential[i])
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(e < 1e-4, "stream result differs by {e}");
            }
        }
    });
}

#[test]
fn plain_session_memory_stays_flat() {
    let model = Model::load(asset("models/mtcnn_pnet.onnx")).unwrap();
    let mut s = Session::new(
        &model,
        SessionOptions {
            threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let mut warm = None;
    for i in 0..5000 {
        s.run(vec![frame(i, 40, 56)]).unwrap();
        if i == 499 {
            warm = Some(s.pooled_bytes());
        }
    }
    let end = s.pooled_bytes();
    eprintln!(
        "session pool after warm-up {} B, after 5,000 runs {end} B",
        warm.unwrap()
    );
    assert!(
        end <= warm.unwrap() * 101 / 100,
        "pool grew from {} to {end}",
        warm.unwrap()
    );
}
