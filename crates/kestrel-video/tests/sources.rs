//! Frame sources on real clips, damaged clips, folders and raw streams.

use kestrel_video::{open, FrameSource, OpenOptions, RawSource, VideoError};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn count(src: &mut dyn FrameSource) -> Result<u64, VideoError> {
    let mut n = 0;
    while let Some(f) = src.next_frame()? {
        assert_eq!(f.index, n, "frames numbered without gaps");
        assert_eq!(
            (f.image.width(), f.image.height()),
            (src.info().width, src.info().height)
        );
        n += 1;
    }
    Ok(n)
}

#[test]
fn bundled_clip_decodes_fully_with_timestamps() {
    let p = repo().join("assets/video/cup.mp4");
    let mut s = open(p.to_str().unwrap(), &OpenOptions::default()).unwrap();
    let info = s.info().clone();
    assert_eq!((info.width, info.height), (640, 480));
    assert_eq!(info.codec.as_deref(), Some("h264"));
    let fps = info.fps.unwrap();
    assert!((fps - 26.8).abs() < 0.5, "fps {fps}");
    let mut last = -1.0;
    let mut n = 0;
    while let Some(f) = s.next_frame().unwrap() {
        let t = f.pts.unwrap();
        assert!(t > last, "timestamps increase");
        last = t;
        n += 1;
    }
    assert_eq!(n, 217);
    assert_eq!(s.skipped(), 0);
}

/// Every clip of ../shared/assets/video decodes fully (skipped when that folder is absent).
#[test]
fn shared_clips_decode_fully() {
    let dir = repo().join("../shared/assets/video");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: {} not present", dir.display());
        return;
    };
    let expected = [
        ("box.mp4", 455),
        ("cup.mp4", 217),
        ("carphone_pristine.mp4", 120),
        ("tree.avi", 68),
    ];
    let names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    for (name, frames) in expected {
        if !names.iter().any(|n| n == name) {
            continue;
        }
        let p = dir.join(name);
        let mut s = open(p.to_str().unwrap(), &OpenOptions::default()).unwrap();
        let n = count(s.as_mut()).unwrap();
        eprintln!(
            "{name}: {n} frames, {:?}, {}x{}",
            s.info().codec,
            s.info().width,
            s.info().height
        );
        assert_eq!(n, frames, "{name}");
    }
}

fn damaged_copy(name: &str, f: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(repo().join("assets/video/cup.mp4")).unwrap();
    f(&mut bytes);
    let p = std::env::temp_dir().join(format!("kestrel-video-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn truncated_clip_ends_cleanly_or_errors() {
    for keep in [0.9, 0.5, 0.1, 0.01] {
        let p = damaged_copy(&format!("trunc{keep}.mp4"), |b| {
            let n = (b.len() as f64 * keep) as usize;
            b.truncate(n)
        });
        match open(p.to_str().unwrap(), &OpenOptions::default()) {
            Err(e) => eprintln!("truncated to {keep}: open error: {e}"),
            Ok(mut s) => match count(s.as_mut()) {
                Ok(n) => {
                    eprintln!("truncated to {keep}: {n} frames, {} skipped", s.skipped());
                    assert!(n < 217);
                }
                Err(e) => eprintln!("truncated to {keep}: decode error: {e}"),
            },
        }
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn corrupted_clip_never_panics() {
    // Overwrite stretches of the media data with noise (deterministic).
    let p = damaged_copy("noise.mp4", |b| {
        let mut x: u32 = 12345;
        let len = b.len();
        for start in (len / 10..len).step_by(len / 7) {
            for i in start..(start + 4000).min(len) {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                b[i] = (x >> 24) as u8;
            }
        }
    });
    match open(p.to_str().unwrap(), &OpenOptions::default()) {
        Err(e) => eprintln!("noise: open error: {e}"),
        Ok(mut s) => match count(s.as_mut()) {
            Ok(n) => eprintln!("noise: {n} frames, {} skipped", s.skipped()),
            Err(e) => eprintln!("noise: decode error: {e}"),
        },
    }
    std::fs::remove_file(p).ok();
}

#[test]
fn not_a_video_is_a_clear_error() {
    let p = std::env::temp_dir().join(format!("kestrel-video-{}-text.mp4", std::process::id()));
    std::fs::write(&p, b"this is not a video file at all").unwrap();
    let e = open(p.to_str().unwrap(), &OpenOptions::default())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("cannot open"), "{e}");
    std::fs::remove_file(p).ok();
    let e = open("/nonexistent/clip.mp4", &OpenOptions::default())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("no such file"), "{e}");
    let e = open("/dev/video97", &OpenOptions::default())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("/dev/video97"), "{e}");
}

#[test]
fn folder_of_images_is_a_stream_and_skips_odd_files() {
    let dir = std::env::temp_dir().join(format!("kestrel-video-{}-folder", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..3u8 {
        let img = image::RgbImage::from_pixel(8, 6, image::Rgb([i * 50, 0, 0]));
        img.save(dir.join(format!("f{i}.png"))).unwrap();
    }
    std::fs::write(dir.join("f1b.png"), b"broken").unwrap();
    image::RgbImage::new(4, 4).save(dir.join("f9.png")).unwrap();
    let mut s = open(
        dir.to_str().unwrap(),
        &OpenOptions {
            fps: Some(10.0),
            ..Default::default()
        },
    )
    .unwrap();
    let mut got = Vec::new();
    while let Some(f) = s.next_frame().unwrap() {
        got.push((f.image.get_pixel(0, 0)[0], f.pts.unwrap()));
    }
    assert_eq!(got, vec![(0, 0.0), (50, 0.1), (100, 0.2)]);
    assert_eq!(s.skipped(), 2, "broken file and odd-size file skipped");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn raw_frames_and_a_partial_last_frame() {
    let mut bytes = vec![7u8; 2 * 3 * 4 * 3];
    bytes.extend_from_slice(&[1, 2, 3]);
    let mut s = RawSource::new("mem", Box::new(std::io::Cursor::new(bytes)), 3, 4, None).unwrap();
    assert!(s.next_frame().unwrap().is_some());
    assert!(s.next_frame().unwrap().is_some());
    let e = s.next_frame().unwrap_err();
    assert!(e.to_string().contains("ended inside a frame"), "{e}");
    let e = RawSource::new("mem", Box::new(std::io::empty()), 100_000, 100_000, None)
        .err()
        .expect("huge frame refused");
    assert!(e.to_string().contains("exceeds"), "{e}");
    assert!(
        open("-", &OpenOptions::default()).is_err(),
        "raw needs a size"
    );
}
