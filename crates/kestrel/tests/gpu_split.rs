//! Explicit graph split: a model with ops the GPU backend has no kernel for in the middle and
//! at the end (ReduceMean, Resize, ArgMax; `scripts/make_split_model.py`) runs on the GPU with
//! those nodes cut out to the CPU. The outputs match the CPU backend; the split names every
//! CPU node and every host transfer. lavapipe in CI.

use kestrel::{Backend, Model, Precision, Session, SessionOptions, Tensor};
use std::path::Path;

fn model() -> Model {
    Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpu_split.onnx")).unwrap()
}

fn input() -> Tensor {
    let n = 3 * 22 * 30;
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 2.0)
        .collect();
    Tensor::from_vec(vec![1, 3, 22, 30], v).unwrap()
}

#[test]
fn split_graph_matches_the_cpu_and_reports_its_cuts() {
    let m = model();
    let mut cpu = Session::new(&m, SessionOptions::default()).unwrap();
    let want = cpu.run(vec![input()]).unwrap();
    for (precision, tol) in [(Precision::F32, 1e-4f32), (Precision::F16, 2e-2)] {
        let mut gpu = match Session::new(
            &m,
            SessionOptions {
                backend: Backend::Gpu,
                precision,
                ..Default::default()
            },
        ) {
            Ok(s) => s,
            Err(e) => {
                assert!(
                    std::env::var_os("KESTREL_REQUIRE_GPU").is_none(),
                    "KESTREL_REQUIRE_GPU is set but: {e}"
                );
                eprintln!("skipped: {e}");
                return;
            }
        };
        let got = match gpu.run(vec![input()]) {
            Ok(g) => g,
            Err(e) if precision == Precision::F16 && e.to_string().contains("SHADER_F16") => {
                continue
            }
            Err(e) => panic!("{e}"),
        };
        // the float output, whole tensor
        let (a, b) = (got[0].as_f32().unwrap(), want[0].as_f32().unwrap());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
        assert!(err < tol, "{precision:?}: max-rel {err}");
        // the ArgMax (computed on the CPU from the GPU's tensor) is that tensor's argmax
        assert_eq!(got[1].shape(), &[1, 22, 30]);
        let cls = got[1].to_i64_vec();
        for p in 0..22 * 30 {
            // first index of the maximum, as ONNX ArgMax picks (fp16 makes ties)
            let best = (1..5).fold(0, |b, i| {
                if a[i * 660 + p] > a[b * 660 + p] {
                    i
                } else {
                    b
                }
            });
            let col: Vec<f32> = (0..5).map(|i| a[i * 660 + p]).collect();
            assert_eq!(cls[p], best as i64, "pixel {p}: {col:?}");
        }
        // the split is explicit: named CPU nodes, named transfers, and the profile rows
        let plan = gpu.gpu_plan().expect("GPU plan");
        let cpu_ops: Vec<&str> = plan.cpu_nodes().iter().map(|n| n.1.as_str()).collect();
        assert_eq!(cpu_ops, ["ReduceMean", "Resize", "ArgMax"]);
        assert_eq!(plan.segment_count(), 6);
        let t = plan.transfers();
        assert!(t.iter().any(|t| t.upload && t.value == "u"), "{t:?}");
        assert!(t.iter().any(|t| !t.upload && t.value == "c2"), "{t:?}");
        assert_eq!(
            t.iter().find(|t| t.value == "c2").unwrap().bytes,
            13 * 11 * 15 * 4
        );
        let steps = gpu.gpu_steps();
        assert!(steps
            .iter()
            .any(|s| s.kernel.starts_with("cpu:") && s.op == "Resize"));
        assert_eq!(steps.iter().filter(|s| s.kernel == "transfer").count(), 3);
        assert!(gpu.notice().unwrap().contains("graph split: 3 node(s)"));
        // timed runs give one time per row
        let (_, times) = gpu.run_gpu_timed(vec![input()], true).unwrap();
        if let Some(times) = times {
            assert_eq!(times.len(), steps.len());
        }
    }
}

#[test]
fn a_model_the_gpu_runs_whole_is_one_segment() {
    let m = Model::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/mtcnn_pnet.onnx"),
    )
    .unwrap();
    let Ok(mut gpu) = Session::new(
        &m,
        SessionOptions {
            backend: Backend::Gpu,
            ..Default::default()
        },
    ) else {
        assert!(std::env::var_os("KESTREL_REQUIRE_GPU").is_none());
        return;
    };
    let x = Tensor::from_vec(vec![1, 3, 24, 24], vec![0.1f32; 3 * 24 * 24]).unwrap();
    gpu.run(vec![x]).unwrap();
    let plan = gpu.gpu_plan().unwrap();
    assert_eq!(plan.segment_count(), 1);
    assert!(plan.cpu_nodes().is_empty());
    assert!(plan.transfers().is_empty());
}
