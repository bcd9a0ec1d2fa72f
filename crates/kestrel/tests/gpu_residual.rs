//! Residual fusion on the GPU (`Conv -> Add [-> Relu]` as one 1x1 GEMM whose epilogue adds the
//! residual): `scripts/make_residual_model.py` builds blocks with an Add + Relu, the operands
//! the other way round on a split-K layer whose sum is a graph output, and an Add of two
//! convolutions whose Relu has a second reader; strided layers on a small map take im2col and a
//! split-K GEMM. The GPU matches the CPU in every storage and
//! the plan has the expected fused steps. lavapipe in CI.

use kestrel::{Model, Precision, Session, SessionOptions, Tensor};

mod common;
use std::path::Path;

#[test]
fn fused_residual_blocks_match_the_cpu() {
    let m = Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpu_residual.onnx"))
        .unwrap();
    let n = 256 * 7 * 9;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0)
        .collect();
    let x = Tensor::from_vec(vec![1, 256, 7, 9], x).unwrap();
    let want = Session::new(&m, SessionOptions::default())
        .unwrap()
        .run(vec![x.clone()])
        .unwrap();
    // only this test of the binary reads KESTREL_GPU_F16
    for (precision, f16_mode, tol) in [
        (Precision::F32, "", 1e-4f32),
        (Precision::F16, "native", 2e-2),
        (Precision::F16, "packed", 2e-2),
    ] {
        std::env::set_var("KESTREL_GPU_F16", f16_mode);
        let Some(mut gpu) = common::gpu_session(&m, precision) else {
            return;
        };
        let got = match gpu.run(vec![x.clone()]) {
            Ok(g) => g,
            Err(e) if f16_mode == "native" && e.to_string().contains("SHADER_F16") => continue,
            Err(e) => panic!("{e}"),
        };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let (g, w) = (g.as_f32().unwrap(), w.as_f32().unwrap());
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let e = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            eprintln!("{precision:?} {f16_mode} output {i}: max-rel {e:.2e}");
            assert!(e < tol, "{precision:?} {f16_mode} output {i}: max-rel {e}");
        }
        let steps = gpu.gpu_steps();
        let ops_of = |node: &str| -> Vec<String> {
            steps
                .iter()
                .filter(|s| s.node == node)
                .map(|s| s.op.clone())
                .collect()
        };
        assert_eq!(ops_of("b1_conv3"), ["Conv+Add+Relu"]);
        assert!(ops_of("b2_conv").iter().all(|o| o == "Conv+Add"));
        assert!(
            steps
                .iter()
                .any(|s| s.node == "b2_conv" && s.kernel == "splitk_reduce"),
            "the split-K layer carries the residual through its reduction"
        );
        assert!(ops_of("b3_conv_b").iter().all(|o| o == "Conv+Add"));
        assert!(ops_of("b3_conv_a").iter().all(|o| o == "Conv"));
        for folded in ["b1_add", "b1_relu3", "b2_add", "b3_add"] {
            assert!(ops_of(folded).is_empty(), "{folded} has its own dispatch");
        }
        assert_eq!(ops_of("b3_relu"), ["Relu"]);
        // strided layers on a small map: im2col, then the GEMM split over K
        for strided in ["ds_conv3x3", "ds_conv1x1"] {
            let kernels: Vec<&str> = steps
                .iter()
                .filter(|s| s.node == strided)
                .map(|s| s.kernel.as_str())
                .collect();
            assert_eq!(kernels, ["im2col", "conv1x1", "splitk_reduce"], "{strided}");
        }
        // depthwise layers take the tiled depthwise kernel
        for dw in ["dw_dilated", "dw_7x7_s2"] {
            assert!(
                steps
                    .iter()
                    .any(|s| s.node == dw && s.kernel == "depthwise"),
                "{dw}"
            );
        }
    }
}
