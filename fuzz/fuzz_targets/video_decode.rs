//! Video demuxing and decoding (FFmpeg through kestrel-video) on arbitrary files: at most 64
//! frames per input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("kestrel-fuzz-{}.bin", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(mut src) = kestrel::video::open(path.to_str().unwrap_or(""), &Default::default()) {
        for _ in 0..64 {
            match src.next_frame() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
});
