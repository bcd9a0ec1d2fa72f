//! A folder of images as a frame sequence (name order).

use crate::{check_frame_size, is_image_path, Frame, FrameSource, Result, SourceInfo, VideoError};
use std::path::{Path, PathBuf};

/// The images of a folder, sorted by file name. A file that does not decode is skipped and
/// counted; so is one whose size differs from the first frame's (a stream has one frame size).
pub struct FolderSource {
    files: Vec<PathBuf>,
    next: usize,
    delivered: u64,
    skipped: u64,
    fps: Option<f64>,
    info: SourceInfo,
}

impl FolderSource {
    pub fn new(dir: &Path, fps: Option<f64>) -> Result<FolderSource> {
        let name = dir.display().to_string();
        let rd = std::fs::read_dir(dir).map_err(|e| VideoError::Io {
            name: name.clone(),
            source: e,
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image_path(p))
            .collect();
        files.sort();
        let first = files.first().ok_or_else(|| VideoError::Open {
            name: name.clone(),
            msg: "no .jpg/.jpeg/.png/.bmp images in the folder".into(),
        })?;
        let (w, h) = image::image_dimensions(first).map_err(|e| VideoError::Open {
            name: first.display().to_string(),
            msg: e.to_string(),
        })?;
        check_frame_size(&name, w, h)?;
        let n = files.len() as u64;
        Ok(FolderSource {
            files,
            next: 0,
            delivered: 0,
            skipped: 0,
            fps,
            info: SourceInfo {
                kind: "images",
                name,
                width: w,
                height: h,
                fps,
                frames: Some(n),
                codec: None,
                live: false,
            },
        })
    }
}

impl FrameSource for FolderSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        while self.next < self.files.len() {
            let path = &self.files[self.next];
            self.next += 1;
            let dims_ok = image::image_dimensions(path)
                .map(|d| d == (self.info.width, self.info.height))
                .unwrap_or(false);
            let img = if dims_ok {
                image::open(path).ok()
            } else {
                None
            };
            match img {
                Some(img) => {
                    let index = self.delivered;
                    self.delivered += 1;
                    return Ok(Some(Frame {
                        index,
                        pts: self.fps.map(|f| index as f64 / f),
                        image: img.to_rgb8(),
                    }));
                }
                None => self.skipped += 1,
            }
        }
        Ok(None)
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}
