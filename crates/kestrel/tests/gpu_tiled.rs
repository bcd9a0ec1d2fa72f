//! The workgroup-memory tiled convolutions (16 and 64 output channels per workgroup, split-K)
//! Winograd F(2x2,3x3) and the im2col + GEMM baseline,
//! forced on every layer they apply to (in production each runs only where it pays), against
//! the CPU backend.

use kestrel::{Backend, Model, Precision, Preset, Session, SessionOptions};
use std::path::{Path, PathBuf};

fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(rel)
}

#[test]
fn tiled_convolution_matches_the_cpu() {
    // this test binary is its own process: the override affects nothing else; both widths of
    // the tiled kernel (16 and 64 output channels per workgroup), on P-Net (10-32 channels:
    // partial channel blocks) and, when ../shared is present, the VGG-16 trunk (64-512)
    let vgg = asset("../../shared/assets/models/classifiers/vgg16_imagenet_conv_trunk.onnx");
    let mut cases = vec![
        (
            "tiled",
            "conv2d_tiled",
            "models/mtcnn_pnet.onnx",
            (97, 71),
            Precision::F32,
            1e-4,
        ),
        (
            "tiled",
            "conv2d_tiled",
            "models/mtcnn_pnet.onnx",
            (33, 130),
            Precision::F16,
            2e-2,
        ),
        (
            "tiled64",
            "conv2d_tiled64",
            "models/mtcnn_pnet.onnx",
            (97, 71),
            Precision::F32,
            1e-4,
        ),
        (
            "tiled64",
            "conv2d_tiled64",
            "models/mtcnn_pnet.onnx",
            (33, 130),
            Precision::F16,
            2e-2,
        ),
    ];
    // split-K (input channels over several workgroups, then a reduction pass), forced
    cases.push((
        "splitk",
        "splitk_reduce",
        "models/mtcnn_pnet.onnx",
        (97, 71),
        Precision::F32,
        1e-4,
    ));
    // Winograd forced on every 3x3 stride-1 layer (odd output sizes: partial tiles): F(4x4)
    // in f32 on maps of 28+ px (P-Net's first layers), F(2x2) in fp16 storage
    for precision in [Precision::F32, Precision::F16] {
        cases.push((
            "winograd",
            if precision == Precision::F32 {
                "winograd4_out"
            } else {
                "winograd_out"
            },
            "models/mtcnn_pnet.onnx",
            (97, 71),
            precision,
            if precision == Precision::F32 {
                1e-4
            } else {
                2e-2
            },
        ));
    }
    // the im2col + GEMM baseline on every layer (P-Net: strided and odd-sized layers)
    for (size, precision, tol) in [
        ((97, 71), Precision::F32, 1e-4),
        ((33, 130), Precision::F16, 2e-2),
    ] {
        cases.push((
            "im2col",
            "im2col",
            "models/mtcnn_pnet.onnx",
            size,
            precision,
            tol,
        ));
    }
    if vgg.exists() {
        cases.push(("im2col", "im2col", "", (45, 37), Precision::F32, 1e-4));
        cases.push((
            "winograd",
            "winograd4_out",
            "",
            (45, 37),
            Precision::F32,
            1e-4,
        ));
        cases.push((
            "tiled64",
            "conv2d_tiled64",
            "",
            (45, 37),
            Precision::F32,
            1e-4,
        ));
        cases.push((
            "splitk",
            "splitk_reduce",
            "",
            (45, 37),
            Precision::F32,
            1e-4,
        ));
        cases.push((
            "splitk",
            "splitk_reduce",
            "",
            (45, 37),
            Precision::F16,
            2e-2,
        ));
    }
    // fp16 arithmetic in the GEMM kernel: Winograd's batched GEMMs, im2col's GEMM, and the
    // split-K GEMM of 1x1 layers
    for mode in ["winograd", "im2col", "splitk"] {
        let shader = match mode {
            "winograd" => "winograd_out",
            "splitk" => "splitk_reduce",
            m => m,
        };
        cases.push((
            mode,
            shader,
            "models/mtcnn_pnet.onnx",
            (97, 71),
            Precision::F16Arith,
            3e-2,
        ));
    }
    // every fp16 case also in packed-f16 storage (u32 words, for adapters without SHADER_F16)
    let packed: Vec<_> = cases
        .iter()
        .filter(|c| c.4 == Precision::F16)
        .map(|c| (c.0, c.1, c.2, c.3, c.4, c.5, "packed"))
        .collect();
    let mut cases: Vec<_> = cases
        .into_iter()
        .map(|c| (c.0, c.1, c.2, c.3, c.4, c.5, "native"))
        .collect();
    cases.extend(packed);
    for (mode, shader, model_path, size, precision, tol, f16_mode) in cases {
        std::env::set_var("KESTREL_GPU_CONV", mode);
        std::env::set_var("KESTREL_GPU_F16", f16_mode);
        let model = if model_path.is_empty() {
            Model::load(&vgg).unwrap()
        } else {
            Model::load(asset(model_path)).unwrap()
        };
        let mut preset = Preset::for_model(&model);
        (preset.width, preset.height) = size;
        preset.fit = kestrel::preprocess::Fit::Stretch;
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
            gpu.gpu_steps().iter().any(|s| s.kernel == shader),
            "{shader} used"
        );
        for (g, w) in got.iter().zip(&want) {
            let (g, w) = (g.as_f32().unwrap(), w.as_f32().unwrap());
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let e = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            eprintln!("{shader} {size:?} {precision:?} {f16_mode}: max-rel {e:.2e}");
            assert!(e < tol, "{e}");
        }
    }
}
