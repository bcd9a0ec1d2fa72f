//! Raw RGB24 frames (width*height*3 bytes each, row-major, no header) from a reader.

use crate::{check_frame_size, Frame, FrameSource, Result, SourceInfo, VideoError};
use std::io::Read;

/// Frames of a fixed size read back to back, e.g. from `ffmpeg -f rawvideo -pix_fmt rgb24 -`.
/// A partial frame at the end is an error (the producer stopped mid-frame).
pub struct RawSource {
    reader: Box<dyn Read + Send>,
    frame_bytes: usize,
    delivered: u64,
    info: SourceInfo,
}

impl RawSource {
    pub fn new(
        name: &str,
        reader: Box<dyn Read + Send>,
        width: u32,
        height: u32,
        fps: Option<f64>,
    ) -> Result<RawSource> {
        check_frame_size(name, width, height)?;
        Ok(RawSource {
            reader,
            frame_bytes: width as usize * height as usize * 3,
            delivered: 0,
            info: SourceInfo {
                kind: "raw",
                name: name.into(),
                width,
                height,
                fps,
                frames: None,
                codec: Some("rgb24".into()),
                live: true,
            },
        })
    }
}

impl FrameSource for RawSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let mut buf = vec![0u8; self.frame_bytes];
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(VideoError::Io {
                        name: self.info.name.clone(),
                        source: e,
                    })
                }
            }
        }
        if filled == 0 {
            return Ok(None);
        }
        if filled < buf.len() {
            return Err(VideoError::Decode {
                name: self.info.name.clone(),
                frame: self.delivered,
                msg: format!(
                    "stream ended inside a frame ({filled} of {} bytes)",
                    buf.len()
                ),
            });
        }
        let image = image::RgbImage::from_raw(self.info.width, self.info.height, buf)
            .expect("buffer length equals width*height*3 by construction");
        let index = self.delivered;
        self.delivered += 1;
        Ok(Some(Frame {
            index,
            pts: self.info.fps.map(|f| index as f64 / f),
            image,
        }))
    }
}
