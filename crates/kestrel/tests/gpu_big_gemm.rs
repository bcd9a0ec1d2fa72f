//! The large-tile GEMM (conv1x1_big.wgsl: 8x8 outputs per invocation) against the CPU backend:
//! `scripts/make_big_gemm_model.py` builds a 45x37 map with odd channel counts (partial pixel
//! and channel tiles), a Winograd layer (batched GEMM), a fused residual and layers that split
//! over K when forced. This binary is its own process: it lowers the workgroup threshold so
//! that every GEMM of the model takes the kernel (in production only large ones do), and
//! checks that the plan used it. By default a grid is chosen per GEMM; `KESTREL_GPU_BIG_TILE=8x8`
//! etc. fixes one (scripts/test.sh runs them all).

use kestrel::{Model, Precision, Session, SessionOptions, Tensor};

mod common;
use std::path::Path;

#[test]
fn big_tile_gemm_matches_the_cpu() {
    std::env::set_var("KESTREL_GPU_BIG_MIN_WG", "1");
    let m = Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpu_big_gemm.onnx"))
        .unwrap();
    let n = 13 * 45 * 37;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0)
        .collect();
    let x = Tensor::from_vec(vec![1, 13, 45, 37], x).unwrap();
    let want = Session::new(&m, SessionOptions::default())
        .unwrap()
        .run(vec![x.clone()])
        .unwrap();
    for force in ["", "splitk"] {
        for (precision, f16_mode, tol) in [
            (Precision::F32, "", 1e-4f32),
            (Precision::F16, "native", 2e-2),
            (Precision::F16, "packed", 2e-2),
        ] {
            if force.is_empty() {
                std::env::remove_var("KESTREL_GPU_CONV");
            } else {
                std::env::set_var("KESTREL_GPU_CONV", force);
            }
            std::env::set_var("KESTREL_GPU_F16", f16_mode);
            let Some(mut gpu) = common::gpu_session(&m, precision) else {
                return;
            };
            let got = match gpu.run(vec![x.clone()]) {
                Ok(g) => g,
                Err(e) if f16_mode == "native" && e.to_string().contains("SHADER_F16") => continue,
                Err(e) => panic!("{e}"),
            };
            let steps = gpu.gpu_steps();
            let kernels: Vec<&str> = steps.iter().map(|s| s.kernel.as_str()).collect();
            // an adapter with tensor cores takes conv1x1_coop.wgsl in native f16 instead
            let coop = kernels.contains(&"conv1x1_coop");
            // a fixed grid takes every GEMM (4-5 of them); the choice per GEMM only those
            // whose tiles it fills to 3/4 (the 130-channel layers keep conv1x1.wgsl)
            let per_gemm = std::env::var("KESTREL_GPU_BIG_TILE").map_or(true, |v| v == "auto");
            let min_big = if per_gemm { 1 } else { 4 };
            assert!(
                coop || kernels
                    .iter()
                    .filter(|k| k.starts_with("conv1x1_big"))
                    .count()
                    >= min_big,
                "{force} {precision:?} {f16_mode}: {kernels:?}"
            );
            if force.is_empty() {
                // F(4x4) in f32 (45x37 output), F(2x2) in fp16 storage
                let wino = if precision == Precision::F32 {
                    "winograd4_out"
                } else {
                    "winograd_out"
                };
                assert!(kernels.contains(&wino), "{kernels:?}");
            } else {
                assert!(kernels.contains(&"splitk_reduce"), "{kernels:?}");
            }
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let (g, w) = (g.as_f32().unwrap(), w.as_f32().unwrap());
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                let e = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
                eprintln!("{force:?} {precision:?} {f16_mode} output {i}: max-rel {e:.2e}");
                assert!(
                    e < tol,
                    "{force} {precision:?} {f16_mode} output {i}: max-rel {e}"
                );
            }
        }
    }
}
