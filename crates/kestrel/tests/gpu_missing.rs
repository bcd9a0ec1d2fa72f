//! No usable GPU (simulated by asking for an adapter that does not exist): `--backend gpu` is a
//! clear error, `auto` keeps working on the CPU and says so. (Own test binary: the GPU context
//! is opened once per process.)

use kestrel::{Backend, Model, Session, SessionOptions, Tensor};
use std::path::Path;

#[test]
fn missing_gpu_is_a_clear_error_and_auto_falls_back() {
    std::env::set_var("KESTREL_GPU_ADAPTER", "no-such-gpu-anywhere");
    let model = Model::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/mtcnn_onet.onnx"),
    )
    .unwrap();
    let e = Session::new(
        &model,
        SessionOptions {
            backend: Backend::Gpu,
            ..Default::default()
        },
    )
    .err()
    .expect("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("--backend gpu")
            && (msg.contains("no-such-gpu-anywhere") || msg.contains("no GPU adapter")),
        "{msg}"
    );
    let mut s = Session::new(
        &model,
        SessionOptions {
            backend: Backend::Auto,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!s.on_gpu());
    assert!(
        s.notice().unwrap().starts_with("backend: CPU (auto)"),
        "{:?}",
        s.notice()
    );
    let out = s
        .run(vec![Tensor::from_vec(
            vec![1, 3, 48, 48],
            vec![0.1f32; 3 * 48 * 48],
        )
        .unwrap()])
        .unwrap();
    assert_eq!(out.len(), 3);
}
