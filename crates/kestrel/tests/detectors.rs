//! Detector post-processing on real photos: BlazeFace / MediaPipe face (anchor decoder with
//! weighted NMS) and the MTCNN cascade.

use kestrel::detect::mtcnn::Mtcnn;
use kestrel::detect::ssd::SsdConfig;
use kestrel::detect::Detection;
use kestrel::{Model, Preset, Session, SessionOptions};
use std::path::{Path, PathBuf};

fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(rel)
}

fn ssd_faces(model: &str, photo: &str) -> Vec<Detection> {
    let m = Model::load(asset(&format!("models/{model}.onnx"))).unwrap();
    let preset = Preset::for_model(&m);
    let cfg = SsdConfig::builtin(model).unwrap();
    let img = image::open(asset(&format!("photos/{photo}")))
        .unwrap()
        .to_rgb8();
    let mut s = Session::new(&m, SessionOptions::default()).unwrap();
    let outs = s.run(vec![preset.image_to_tensor(&img).unwrap()]).unwrap();
    let map = preset.frame_map(img.width(), img.height());
    let d = cfg.decode(&m.output_names(), &outs, &map).unwrap();
    eprintln!(
        "{model} on {photo}: {:?}",
        d.iter().map(|d| (d.score, d.bbox)).collect::<Vec<_>>()
    );
    d
}

/// The face box must sit inside the image and be a plausible face size.
fn plausible(d: &Detection, w: f32, h: f32) {
    assert!(
        d.bbox[0] >= -0.05 * w && d.bbox[2] <= 1.05 * w,
        "{:?}",
        d.bbox
    );
    assert!(
        d.bbox[1] >= -0.05 * h && d.bbox[3] <= 1.05 * h,
        "{:?}",
        d.bbox
    );
    assert!(d.width() > 0.08 * w && d.width() < 0.9 * w, "{:?}", d.bbox);
    // keypoints inside the box (with a margin: ears of BlazeFace sit on its edge)
    for k in &d.keypoints {
        assert!(k[0] > d.bbox[0] - 0.3 * d.width() && k[0] < d.bbox[2] + 0.3 * d.width());
        assert!(k[1] > d.bbox[1] - 0.3 * d.height() && k[1] < d.bbox[3] + 0.3 * d.height());
    }
}

#[test]
fn blazeface_and_mediapipe_find_the_faces_and_none_in_the_orange() {
    for model in [
        "blazeface_front_128",
        "mediapipe_face_detection_short_range",
    ] {
        for (photo, w, h) in [
            ("grace_hopper.jpg", 512.0, 600.0),
            ("astronaut.png", 512.0, 512.0),
        ] {
            let d = ssd_faces(model, photo);
            assert_eq!(d.len(), 1, "{model} on {photo}: one face");
            plausible(&d[0], w, h);
        }
        assert!(
            ssd_faces(model, "orange.jpg").is_empty(),
            "{model}: no face in orange.jpg"
        );
    }
}

#[test]
fn grace_hopper_face_is_where_both_detectors_agree() {
    let a = ssd_faces("blazeface_front_128", "grace_hopper.jpg");
    let b = ssd_faces("mediapipe_face_detection_short_range", "grace_hopper.jpg");
    let iou =
        kestrel::detect::nms::overlap(&a[0].bbox, &b[0].bbox, kestrel::detect::nms::Overlap::Union);
    assert!(iou > 0.5, "IoU {iou}");
}

#[test]
fn mtcnn_finds_one_face_in_each_portrait() {
    let mut m = Mtcnn::load(&asset("models/mtcnn_pnet.onnx"), SessionOptions::default()).unwrap();
    for photo in ["grace_hopper.jpg", "astronaut.png", "messi5.jpg"] {
        let img = image::open(asset(&format!("photos/{photo}")))
            .unwrap()
            .to_rgb8();
        let d = m.detect(&img).unwrap();
        eprintln!(
            "mtcnn on {photo}: {:?} stages {:?}",
            d.iter().map(|d| (d.score, d.bbox)).collect::<Vec<_>>(),
            m.last_counts
        );
        assert_eq!(d.len(), 1, "{photo}: one face");
        assert_eq!(d[0].keypoints.len(), 5);
        assert!(d[0].score > 0.9);
        let (w, h) = (img.width() as f32, img.height() as f32);
        assert!(d[0].bbox[0] >= -1.0 && d[0].bbox[2] <= w + 1.0 && d[0].bbox[3] <= h + 1.0);
        // eyes above the mouth corners
        let k = &d[0].keypoints;
        assert!(k[0][1] < k[3][1] && k[1][1] < k[4][1], "{k:?}");
    }
}

#[test]
fn mtcnn_load_names_missing_stages() {
    let dir = std::env::temp_dir().join(format!("kestrel-mtcnn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(asset("models/mtcnn_pnet.onnx"), dir.join("mtcnn_pnet.onnx")).unwrap();
    let e = Mtcnn::load(&dir.join("mtcnn_pnet.onnx"), SessionOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("mtcnn_rnet.onnx not found"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}
