//! Image decoding and preprocessing on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = image::load_from_memory(data) {
        if (img.width() as u64) * (img.height() as u64) <= 1 << 22 {
            let preset = kestrel::Preset::builtin("efficientnet_lite0").expect("built in");
            let _ = preset.image_to_tensor(&img.to_rgb8());
        }
    }
});
