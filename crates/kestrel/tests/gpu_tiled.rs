//! The workgroup-memory tiled convolution, forced on every layer it applies to (in production it
//! runs only where enough tiles fill the GPU), against the CPU backend.

use kestrel::{Backend, Model, Precision, Preset, Session, SessionOptions};
use std::path::{Path, PathBuf};

fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(rel)
}

#[test]
fn tiled_convolution_matches_the_cpu() {
    // this test binary is its own process: the override affects nothing else
    std::env::set_var("KESTREL_GPU_CONV", "tiled");
    for (size, precision, tol) in [
        ((97, 71), Precision::F32, 1e-4),
        ((33, 130), Precision::F16, 2e-2),
    ] {
        let model = Model::load(asset("models/mtcnn_pnet.onnx")).unwrap();
        let mut preset = Preset::for_model(&model);
        (preset.width, preset.height) = size;
        let x = preset.load_image(asset("photos/astronaut.png")).unwrap();
        let want = Session::new(&model, SessionOptions::default())
            .unwrap()
            .run(vec![x.clone()])
            .unwrap();
        let opts = SessionOptions {
            backend: Backend::Gpu,
            precision,
            ..Default::default()
        };
        let mut gpu = match Session::new(&model, opts) {
            Ok(s) => s,
            Err(e) if std::env::var_os("KESTREL_REQUIRE_GPU").is_none() => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let got = gpu.run(vec![x]).unwrap();
        assert!(
            gpu.gpu_steps().iter().any(|s| s.2 == "conv2d_tiled"),
            "tiled kernel used"
        );
        for (g, w) in got.iter().zip(&want) {
            let (g, w) = (g.as_f32().unwrap(), w.as_f32().unwrap());
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let e = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            eprintln!("{size:?} {precision:?}: max-rel {e:.2e}");
            assert!(e < tol, "{e}");
        }
    }
}
