//! The built-in model on the bundled photos gives the labels onnxruntime gives
//! (../shared/assets/README.md: squirrel -> fox squirrel, coffee -> espresso, apple -> Granny Smith).

use kestrel::{classify, Model, Preset, Session, SessionOptions};

#[test]
fn efficientnet_lite0_top1_on_bundled_photos() {
    let m = Model::load(kestrel::default_model_path()).unwrap();
    let preset = Preset::for_model(&m);
    assert!(!preset.is_guess());
    let mut s = Session::new(&m, SessionOptions::default()).unwrap();
    for (photo, want) in [
        ("squirrel_cls.jpg", "fox squirrel"),
        ("coffee.png", "espresso"),
        ("apple.jpg", "Granny Smith"),
    ] {
        let x = preset
            .load_image(kestrel::default_photos_path().join(photo))
            .unwrap();
        let out = s.run(vec![x]).unwrap();
        let top = classify::top_k(&out[0], 5, classify::imagenet_labels()).unwrap();
        assert_eq!(top[0].0, want, "{photo}: {top:?}");
        assert!(top[0].1 > 0.5, "{photo}: {top:?}");
    }
}

#[test]
fn corrupt_image_is_a_clear_error() {
    let m = Model::load(kestrel::default_model_path()).unwrap();
    let p = std::env::temp_dir().join(format!("kestrel-bad-{}.jpg", std::process::id()));
    let good = std::fs::read(kestrel::default_photos_path().join("apple.jpg")).unwrap();
    std::fs::write(&p, &good[..good.len() / 3]).unwrap();
    let r = Preset::for_model(&m).load_image(&p);
    let _ = std::fs::remove_file(&p);
    // a truncated JPEG either decodes partially (the decoder fills the rest) or errors; never panics
    if let Err(e) = r {
        assert!(e.to_string().contains("kestrel-bad"), "{e}");
    }
    let e = Preset::for_model(&m)
        .load_image("/no/such/image.png")
        .unwrap_err();
    assert!(e.to_string().contains("image.png"), "{e}");
}
