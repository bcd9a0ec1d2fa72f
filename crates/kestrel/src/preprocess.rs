//! Image input: decode (JPEG/PNG), resize, centre-crop, normalise, lay out as the model expects.
//! Driven by a small per-model [`Preset`]; built-in presets cover the bundled models and
//! [`Preset::for_model`] guesses a sensible one for any other model.

use crate::Model;
use image::imageops::FilterType;
use kestrel_core::graph::Dim;
use kestrel_core::{Error, Result, Tensor};
use std::path::Path;

/// Memory layout of the image tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// How the image is brought to the model's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Fit {
    /// Resize to exactly width x height (aspect ratio not kept).
    Stretch,
    /// Resize the shorter side to this many pixels, then centre-crop width x height.
    ResizeShorterThenCrop(u32),
}

/// Preprocessing of one model: `value = (pixel * scale - mean[c]) / std[c]` with `pixel` in
/// 0..=255 and `c` in the model's channel order (RGB, or BGR when `bgr`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Preset {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub bgr: bool,
    pub layout: Layout,
}

/// Largest intermediate image the resize-then-crop fit may build (16 Mpixel); beyond it the
/// crop is taken first.
const MAX_RESIZED_PIXELS: u64 = 1 << 24;

/// Largest image file accepted (64 Mpixel), checked from the header before decoding.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl Preset {
    /// The built-in preset of a known model file stem, if any.
    pub fn builtin(name: &str) -> Option<Preset> {
        let p = |w, h, fit, scale, mean, std, bgr, layout| Preset {
            name: name.to_string(),
            width: w,
            height: h,
            fit,
            scale,
            mean,
            std,
            bgr,
            layout,
        };
        let crop = Fit::ResizeShorterThenCrop(256);
        Some(match name {
            "efficientnet_lite0" => p(
                224,
                224,
                crop,
                1.0 / 127.5,
                [1.0; 3],
                [1.0; 3],
                false,
                Layout::Nchw,
            ),
            "mobilenet_v2_torchvision" | "imagenet_torchvision" => p(
                224,
                224,
                crop,
                1.0 / 255.0,
                IMAGENET_MEAN,
                IMAGENET_STD,
                false,
                Layout::Nchw,
            ),
            "vgg16_imagenet_conv_trunk" | "caffe_bgr" => p(
                224,
                224,
                crop,
                1.0,
                [103.939, 116.779, 123.68],
                [1.0; 3],
                true,
                Layout::Nchw,
            ),
            "blazeface_front_128" | "mediapipe_face_detection_short_range" => p(
                128,
                128,
                Fit::Stretch,
                1.0 / 127.5,
                [1.0; 3],
                [1.0; 3],
                false,
                Layout::Nhwc,
            ),
            "blazeface_back_256" => p(
                256,
                256,
                Fit::Stretch,
                1.0 / 127.5,
                [1.0; 3],
                [1.0; 3],
                false,
                Layout::Nhwc,
            ),
            "mtcnn_pnet" => p(
                224,
                224,
                Fit::Stretch,
                1.0,
                [127.5; 3],
                [128.0; 3],
                false,
                Layout::Nchw,
            ),
            "mtcnn_rnet" => p(
                24,
                24,
                Fit::Stretch,
                1.0,
                [127.5; 3],
                [128.0; 3],
                false,
                Layout::Nchw,
            ),
            "mtcnn_onet" => p(
                48,
                48,
                Fit::Stretch,
                1.0,
                [127.5; 3],
                [128.0; 3],
                false,
                Layout::Nchw,
            ),
            _ => return None,
        })
    }

    /// Names accepted by [`Preset::builtin`].
    pub fn builtin_names() -> &'static [&'static str] {
        &[
            "efficientnet_lite0",
            "mobilenet_v2_torchvision",
            "imagenet_torchvision",
            "vgg16_imagenet_conv_trunk",
            "caffe_bgr",
            "blazeface_front_128",
            "blazeface_back_256",
            "mediapipe_face_detection_short_range",
            "mtcnn_pnet",
            "mtcnn_rnet",
            "mtcnn_onet",
        ]
    }

    /// The built-in preset for this model's file name, or a guess from its first input: layout from
    /// where the 3-channel axis is, size from the fixed dims (224 where free), torchvision ImageNet
    /// normalisation. [`Preset::is_guess`] tells which.
    pub fn for_model(model: &Model) -> Preset {
        if let Some(p) = Preset::builtin(model.name()) {
            return p;
        }
        let dims = model
            .inputs()
            .first()
            .map(|i| i.2.clone())
            .unwrap_or_default();
        let known = |i: usize| match dims.get(i) {
            Some(Dim::Known(v)) => Some(*v as u32),
            _ => None,
        };
        let nhwc = dims.len() == 4 && known(3) == Some(3) && known(1) != Some(3);
        let (h, w) = if nhwc {
            (known(1), known(2))
        } else {
            (known(2), known(3))
        };
        Preset {
            name: "guess".into(),
            width: w.unwrap_or(224),
            height: h.unwrap_or(224),
            fit: Fit::ResizeShorterThenCrop(256.max(w.unwrap_or(224) * 8 / 7)),
            scale: 1.0 / 255.0,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            bgr: false,
            layout: if nhwc { Layout::Nhwc } else { Layout::Nchw },
        }
    }

    /// True when this preset was guessed rather than built in.
    pub fn is_guess(&self) -> bool {
        self.name == "guess"
    }

    /// Where the model's input lands in a frame of `frame_w` x `frame_h` pixels under this
    /// preset's fit, so that detector outputs can be mapped back to frame pixels.
    pub fn frame_map(&self, frame_w: u32, frame_h: u32) -> FrameMap {
        let (fw, fh) = (frame_w as f32, frame_h as f32);
        match self.fit {
            Fit::Stretch => FrameMap {
                sx: fw,
                sy: fh,
                ox: 0.0,
                oy: 0.0,
            },
            Fit::ResizeShorterThenCrop(short) => {
                // mirrors image_to_tensor: resize to (nw, nh), crop (w, h) at (x0, y0)
                let s = short as f64 / (frame_w as f64).min(frame_h as f64);
                let nw = ((frame_w as f64 * s) as u32).max(self.width);
                let nh = ((frame_h as f64 * s) as u32).max(self.height);
                let (x0, y0) = ((nw - self.width) / 2, (nh - self.height) / 2);
                let (kx, ky) = (fw / nw as f32, fh / nh as f32);
                FrameMap {
                    sx: self.width as f32 * kx,
                    sy: self.height as f32 * ky,
                    ox: x0 as f32 * kx,
                    oy: y0 as f32 * ky,
                }
            }
        }
    }

    /// Decodes and converts an image file.
    pub fn load_image(&self, path: impl AsRef<Path>) -> Result<Tensor> {
        let path = path.as_ref();
        let bad = |msg: String| Error::Input {
            name: path.display().to_string(),
            msg,
        };
        let (w, h) =
            image::image_dimensions(path).map_err(|e| bad(format!("cannot decode image: {e}")))?;
        if w as u64 * h as u64 > MAX_IMAGE_PIXELS {
            return Err(bad(format!(
                "image of {w}x{h} pixels exceeds the limit of {MAX_IMAGE_PIXELS} pixels"
            )));
        }
        let img = image::open(path).map_err(|e| bad(format!("cannot decode image: {e}")))?;
        self.image_to_tensor(&img.to_rgb8())
    }

    /// Converts a decoded RGB image.
    pub fn image_to_tensor(&self, img: &image::RgbImage) -> Result<Tensor> {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 || img.width() == 0 || img.height() == 0 {
            return Err(Error::invalid("empty image or target size"));
        }
        let resized = match self.fit {
            Fit::Stretch => image::imageops::resize(img, w, h, FilterType::Triangle),
            Fit::ResizeShorterThenCrop(short) => {
                let (iw, ih) = (img.width() as f64, img.height() as f64);
                let s = short as f64 / iw.min(ih);
                let (nw, nh) = (((iw * s) as u32).max(w), ((ih * s) as u32).max(h));
                if nw as u64 * nh as u64 > MAX_RESIZED_PIXELS {
                    // Extreme aspect ratios (found by fuzzing: a 65344x63 JPEG would be resized
                    // to 265,000x256 first): crop the source region that maps onto the output,
                    // then resize only that.
                    let sw = ((w as f64 / s).round() as u32).clamp(1, img.width());
                    let sh = ((h as f64 / s).round() as u32).clamp(1, img.height());
                    let (x0, y0) = ((img.width() - sw) / 2, (img.height() - sh) / 2);
                    let sub = image::imageops::crop_imm(img, x0, y0, sw, sh).to_image();
                    image::imageops::resize(&sub, w, h, FilterType::Triangle)
                } else {
                    let r = image::imageops::resize(img, nw, nh, FilterType::Triangle);
                    let (x0, y0) = ((nw - w) / 2, (nh - h) / 2);
                    image::imageops::crop_imm(&r, x0, y0, w, h).to_image()
                }
            }
        };
        let (wu, hu) = (w as usize, h as usize);
        let mut data = vec![0f32; 3 * wu * hu];
        for (x, y, px) in resized.enumerate_pixels() {
            for c in 0..3 {
                let src = if self.bgr { 2 - c } else { c };
                let v = (px[src] as f32 * self.scale - self.mean[c]) / self.std[c];
                let idx = match self.layout {
                    Layout::Nchw => (c * hu + y as usize) * wu + x as usize,
                    Layout::Nhwc => (y as usize * wu + x as usize) * 3 + c,
                };
                data[idx] = v;
            }
        }
        let shape = match self.layout {
            Layout::Nchw => vec![1, 3, hu, wu],
            Layout::Nhwc => vec![1, hu, wu, 3],
        };
        Tensor::from_vec(shape, data)
    }
}

/// An affine map from model-input coordinates (0..1 across the input) to frame pixels:
/// `x_frame = x * sx + ox`, `y_frame = y * sy + oy`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameMap {
    pub sx: f32,
    pub sy: f32,
    pub ox: f32,
    pub oy: f32,
}

impl FrameMap {
    /// Maps one point.
    pub fn point(&self, x: f32, y: f32) -> [f32; 2] {
        [x * self.sx + self.ox, y * self.sy + self.oy]
    }
}

/// Image files (jpg/jpeg/png) in a folder, sorted by name; or the file itself.
pub fn image_files(path: &Path) -> Result<Vec<std::path::PathBuf>> {
    let io = |e| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    if path.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension()
                        .and_then(|e| e.to_str())
                        .map(|e| e.to_ascii_lowercase())
                        .as_deref(),
                    Some("jpg" | "jpeg" | "png")
                )
            })
            .collect();
        v.sort();
        Ok(v)
    } else if path.exists() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err(Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        })
    }
}
