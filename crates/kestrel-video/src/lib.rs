//! Frame sources for Kestrel's continuous-vision pipeline.
//!
//! A [`FrameSource`] yields decoded RGB frames one at a time, in order, with their presentation
//! time when the source has one. Sources: video files of any container/codec the system's FFmpeg
//! reads (feature `ffmpeg`, on by default), V4L2 cameras (`/dev/videoN`, also through FFmpeg),
//! folders of images, and raw RGB24 frames on a reader such as stdin.
//!
//! Contract of every source:
//! - frames come out in presentation order, `index` counting from 0 without gaps;
//! - damaged data the decoder can step over is skipped and counted ([`FrameSource::skipped`]),
//!   damage it cannot step over ends the stream with an error naming the source; a source never
//!   panics and never blocks forever on a file (a camera blocks until its next frame);
//! - frame sizes read from a file are checked against [`MAX_FRAME_PIXELS`] before any buffer is
//!   allocated.

mod error;
#[cfg(feature = "ffmpeg")]
mod ffmpeg_source;
mod folder;
mod raw;

pub use error::{Result, VideoError};
#[cfg(feature = "ffmpeg")]
pub use ffmpeg_source::FfmpegSource;
pub use folder::FolderSource;
pub use raw::RawSource;

use std::path::Path;

/// Largest frame accepted from any source (64 Mpixel: above 8K UHD).
pub const MAX_FRAME_PIXELS: u64 = 1 << 26;

/// One decoded frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Position in the stream, from 0, counting only frames delivered.
    pub index: u64,
    /// Presentation time in seconds from the stream start, when the source knows it.
    pub pts: Option<f64>,
    pub image: image::RgbImage,
}

/// What a source is, as far as known before decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceInfo {
    /// `video`, `camera`, `images` or `raw`.
    pub kind: &'static str,
    /// The path or device the frames come from.
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate, when the source states one.
    pub fps: Option<f64>,
    /// Number of frames the container announces (may differ from what decodes).
    pub frames: Option<u64>,
    /// Codec or format name, when known.
    pub codec: Option<String>,
    /// True for live sources (cameras, pipes): no end is known and frames cannot be re-read.
    pub live: bool,
}

/// A stream of frames. `Send` so that a pipeline can decode on its own thread.
pub trait FrameSource: Send {
    fn info(&self) -> &SourceInfo;
    /// The next frame, `Ok(None)` at the end of the stream.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
    /// Damaged packets or files skipped so far.
    fn skipped(&self) -> u64 {
        0
    }
}

/// How to open a source whose kind cannot be told from its name alone.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Raw RGB24 frames of this size (width, height) on stdin when the spec is `-`.
    pub raw_size: Option<(u32, u32)>,
    /// Frame rate to assume where the source gives none (folders, raw frames).
    pub fps: Option<f64>,
}

/// True when `path` names a still image by its extension.
pub fn is_image_path(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("jpg" | "jpeg" | "png" | "bmp")
    )
}

/// Opens a frame source: `-` = raw RGB24 on stdin (needs `raw_size`), a folder = its images in
/// name order, `/dev/video*` = a V4L2 camera, anything else = a video file decoded by FFmpeg.
pub fn open(spec: &str, opts: &OpenOptions) -> Result<Box<dyn FrameSource>> {
    if spec == "-" {
        let (w, h) = opts.raw_size.ok_or_else(|| VideoError::Open {
            name: "stdin".into(),
            msg: "raw frames on stdin need their size (--raw-size WxH)".into(),
        })?;
        return Ok(Box::new(RawSource::new(
            "stdin",
            Box::new(std::io::stdin()),
            w,
            h,
            opts.fps,
        )?));
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(Box::new(FolderSource::new(path, opts.fps)?));
    }
    #[cfg(feature = "ffmpeg")]
    {
        if spec.starts_with("/dev/video") {
            return Ok(Box::new(FfmpegSource::open_camera(spec)?));
        }
        Ok(Box::new(FfmpegSource::open_file(path)?))
    }
    #[cfg(not(feature = "ffmpeg"))]
    Err(VideoError::Open {
        name: spec.into(),
        msg: "video files and cameras need Kestrel built with the `ffmpeg` feature".into(),
    })
}

/// Checks a frame size read from a file or device before allocating for it.
pub(crate) fn check_frame_size(name: &str, w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(VideoError::Open {
            name: name.into(),
            msg: format!("frame size {w}x{h} is empty"),
        });
    }
    if w as u64 * h as u64 > MAX_FRAME_PIXELS {
        return Err(VideoError::Open {
            name: name.into(),
            msg: format!("frame size {w}x{h} exceeds the limit of {MAX_FRAME_PIXELS} pixels"),
        });
    }
    Ok(())
}
