//! Replays the fuzzers' seed corpora and every saved reproducer (fuzz/corpus, fuzz/regressions)
//! through the same entry points as the fuzz targets: errors are fine, panics are not.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(sub: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for root in ["corpus", "regressions"] {
        if let Ok(rd) = std::fs::read_dir(fuzz_dir().join(root).join(sub)) {
            v.extend(
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file()),
            );
        }
    }
    v.sort();
    v
}

#[test]
fn onnx_inputs_never_panic() {
    let f = files("onnx_load");
    assert!(!f.is_empty(), "seed corpus present");
    for p in f {
        let data = std::fs::read(&p).unwrap();
        if let Ok(model) = kestrel::Model::from_bytes(&data, "fuzz") {
            let _ = model.summary(&model.default_input_shapes(8));
        }
    }
}

#[test]
fn image_inputs_never_panic() {
    let preset = kestrel::Preset::builtin("efficientnet_lite0").unwrap();
    for p in files("image_decode") {
        let data = std::fs::read(&p).unwrap();
        if let Ok(img) = image::load_from_memory(&data) {
            if (img.width() as u64) * (img.height() as u64) <= 1 << 22 {
                let _ = preset.image_to_tensor(&img.to_rgb8());
            }
        }
    }
}

#[test]
fn video_inputs_never_panic() {
    for p in files("video_decode") {
        if let Ok(mut src) = kestrel::video::open(p.to_str().unwrap(), &Default::default()) {
            for _ in 0..64 {
                match src.next_frame() {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }
    }
}
