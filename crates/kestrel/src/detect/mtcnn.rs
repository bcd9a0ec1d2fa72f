//! The MTCNN face cascade (Zhang et al. 2016), following facenet-pytorch's `detect_face`:
//! P-Net over an image pyramid proposes 12x12 windows, R-Net re-scores 24x24 crops of them,
//! O-Net re-scores 48x48 crops and places five landmarks. Each stage regresses its boxes, squares
//! them and suppresses overlaps.

use super::nms::{self, Overlap};
use super::Detection;
use crate::{Model, Session, SessionOptions};
use image::imageops::FilterType;
use image::RgbImage;
use kestrel_core::{Error, Result, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Cascade parameters (facenet-pytorch defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct MtcnnOptions {
    /// Smallest face searched for, in pixels.
    pub min_face: f32,
    /// Scale step of the image pyramid.
    pub factor: f32,
    /// Face probability thresholds of P-Net, R-Net and O-Net.
    pub thresholds: [f32; 3],
}

impl Default for MtcnnOptions {
    fn default() -> Self {
        MtcnnOptions {
            min_face: 20.0,
            factor: 0.709,
            thresholds: [0.6, 0.7, 0.7],
        }
    }
}

/// Candidates left after each stage of the last [`Mtcnn::detect`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageCounts {
    pub pnet: usize,
    pub rnet: usize,
    pub onet: usize,
}

/// A loaded cascade. P-Net gets one session per pyramid level so that each level's plan is
/// prepared once and reused across frames of the same size.
pub struct Mtcnn {
    pnet: Model,
    pnet_sessions: HashMap<(usize, usize), Session>,
    rnet: Session,
    onet: Session,
    session_opts: SessionOptions,
    pub opts: MtcnnOptions,
    pub last_counts: StageCounts,
}

/// A candidate: box, score and the regression of the stage that produced it.
#[derive(Clone, Debug)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

fn as_det(c: &Cand) -> Detection {
    Detection {
        bbox: c.b,
        score: c.score,
        class: None,
        label: None,
        keypoints: Vec::new(),
    }
}

/// Runs NMS over candidates and returns the kept ones (best first).
fn suppress(cands: Vec<Cand>, iou: f32, kind: Overlap) -> Vec<Cand> {
    // tag each candidate through its index in the keypoints slot to recover it after NMS
    let dets: Vec<Detection> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut d = as_det(c);
            d.keypoints = vec![[i as f32, 0.0]];
            d
        })
        .collect();
    nms::hard(dets, iou, kind)
        .into_iter()
        .map(|d| cands[d.keypoints[0][0] as usize].clone())
        .collect()
}

/// Applies the box regression: offsets are fractions of the box width/height.
fn regress(c: &mut Cand) {
    let w = c.b[2] - c.b[0];
    let h = c.b[3] - c.b[1];
    c.b = [
        c.b[0] + c.reg[0] * w,
        c.b[1] + c.reg[1] * h,
        c.b[2] + c.reg[2] * w,
        c.b[3] + c.reg[3] * h,
    ];
}

/// Makes the box square around its centre (side = the longer side).
fn square(c: &mut Cand) {
    let w = c.b[2] - c.b[0];
    let h = c.b[3] - c.b[1];
    let l = w.max(h);
    c.b[0] += w * 0.5 - l * 0.5;
    c.b[1] += h * 0.5 - l * 0.5;
    c.b[2] = c.b[0] + l;
    c.b[3] = c.b[1] + l;
}

/// `(x - 127.5) / 128`, NCHW, RGB.
fn to_tensor(img: &RgbImage) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut v = vec![0f32; 3 * w * h];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            v[(c * h + y as usize) * w + x as usize] = (p[c] as f32 - 127.5) * 0.0078125;
        }
    }
    Tensor::from_vec(vec![1, 3, h, w], v)
}

/// The integer box (truncated like facenet-pytorch) cut from the image with zero padding
/// outside it, resized to `size` x `size`.
fn crop(img: &RgbImage, b: &[f32; 4], size: u32) -> Option<RgbImage> {
    let (x0, y0, x1, y1) = (b[0] as i64, b[1] as i64, b[2] as i64, b[3] as i64);
    let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
    if bw < 2 || bh < 2 || bw > 8 * img.width() as i64 || bh > 8 * img.height() as i64 {
        return None;
    }
    let mut patch = RgbImage::new(bw as u32, bh as u32);
    for y in y0.max(0)..(y1 + 1).min(img.height() as i64) {
        for x in x0.max(0)..(x1 + 1).min(img.width() as i64) {
            patch.put_pixel(
                (x - x0) as u32,
                (y - y0) as u32,
                *img.get_pixel(x as u32, y as u32),
            );
        }
    }
    Some(image::imageops::resize(
        &patch,
        size,
        size,
        FilterType::Triangle,
    ))
}

/// Finds an output by its element count (`n`) among a stage's outputs.
fn output_with(outs: &[Tensor], n: usize, stage: &str) -> Result<Vec<f32>> {
    outs.iter()
        .find(|t| t.len() == n)
        .ok_or_else(|| Error::invalid(format!("MTCNN {stage}: no output with {n} values")))
        .and_then(|t| t.as_f32().map(|v| v.to_vec()))
}

impl Mtcnn {
    /// Loads the cascade from P-Net's path; R-Net and O-Net are the files next to it whose names
    /// have `rnet` / `onet` in place of `pnet`.
    pub fn load(pnet_path: &Path, session_opts: SessionOptions) -> Result<Mtcnn> {
        let sibling = |stage: &str| -> Result<PathBuf> {
            let name = pnet_path
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| n.contains("pnet"))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "MTCNN: '{}' is not a P-Net file (name must contain 'pnet')",
                        pnet_path.display()
                    ))
                })?;
            let p = pnet_path.with_file_name(name.replace("pnet", stage));
            if !p.exists() {
                return Err(Error::invalid(format!(
                    "MTCNN: {} not found next to {}",
                    p.display(),
                    pnet_path.display()
                )));
            }
            Ok(p)
        };
        let r = Model::load(sibling("rnet")?)?;
        let o = Model::load(sibling("onet")?)?;
        let p = Model::load(pnet_path)?;
        Self::from_models(&p, &r, &o, session_opts)
    }

    pub fn from_models(
        pnet: &Model,
        rnet: &Model,
        onet: &Model,
        session_opts: SessionOptions,
    ) -> Result<Mtcnn> {
        Ok(Mtcnn {
            pnet: pnet.clone(),
            pnet_sessions: HashMap::new(),
            rnet: Session::new(rnet, session_opts.clone())?,
            onet: Session::new(onet, session_opts.clone())?,
            session_opts,
            opts: MtcnnOptions::default(),
            last_counts: StageCounts::default(),
        })
    }

    /// Pyramid scales for an image whose shorter side is `min_side` pixels.
    pub fn scales(&self, min_side: f32) -> Vec<f32> {
        let m = 12.0 / self.opts.min_face;
        let mut minl = min_side * m;
        let mut scale = m;
        let mut v = Vec::new();
        while minl >= 12.0 && v.len() < 64 {
            v.push(scale);
            scale *= self.opts.factor;
            minl *= self.opts.factor;
        }
        v
    }

    /// Faces in `img`, best first, with five landmarks each (eyes, nose, mouth corners).
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<Detection>> {
        let (w, h) = (img.width() as f32, img.height() as f32);
        // Stage 1: P-Net on every pyramid level.
        let mut cands = Vec::new();
        for s in self.scales(w.min(h)) {
            let (ws, hs) = ((w * s).ceil() as u32, (h * s).ceil() as u32);
            if ws < 12 || hs < 12 {
                continue;
            }
            let scaled = image::imageops::resize(img, ws, hs, FilterType::Triangle);
            let session = match self.pnet_sessions.entry((hs as usize, ws as usize)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Session::new(&self.pnet, self.session_opts.clone())?)
                }
            };
            let outs = session.run(vec![to_tensor(&scaled)?])?;
            let (mut reg, mut prob) = (None, None);
            for t in &outs {
                match t.shape() {
                    [1, 4, _, _] => reg = Some(t),
                    [1, 2, _, _] => prob = Some(t),
                    _ => {}
                }
            }
            let (Some(reg), Some(prob)) = (reg, prob) else {
                return Err(Error::invalid(
                    "MTCNN P-Net: expected outputs [1,4,H,W] and [1,2,H,W]",
                ));
            };
            let (oh, ow) = (prob.shape()[2], prob.shape()[3]);
            let (p, r) = (prob.as_f32()?, reg.as_f32()?);
            let plane = oh * ow;
            let mut level = Vec::new();
            for y in 0..oh {
                for x in 0..ow {
                    let score = p[plane + y * ow + x];
                    if score >= self.opts.thresholds[0] {
                        let (fx, fy) = (x as f32, y as f32);
                        level.push(Cand {
                            b: [
                                ((2.0 * fx + 1.0) / s).floor(),
                                ((2.0 * fy + 1.0) / s).floor(),
                                ((2.0 * fx + 12.0) / s).floor(),
                                ((2.0 * fy + 12.0) / s).floor(),
                            ],
                            score,
                            reg: std::array::from_fn(|k| r[k * plane + y * ow + x]),
                        });
                    }
                }
            }
            cands.extend(suppress(level, 0.5, Overlap::Union));
        }
        let mut cands = suppress(cands, 0.7, Overlap::Union);
        for c in cands.iter_mut() {
            regress(c);
            square(c);
        }
        self.last_counts.pnet = cands.len();

        // Stage 2: R-Net on 24x24 crops.
        let mut next = Vec::new();
        for c in &cands {
            let Some(patch) = crop(img, &c.b, 24) else {
                continue;
            };
            let outs = self.rnet.run(vec![to_tensor(&patch)?])?;
            let prob = output_with(&outs, 2, "R-Net")?;
            let reg = output_with(&outs, 4, "R-Net")?;
            if prob[1] > self.opts.thresholds[1] {
                next.push(Cand {
                    b: c.b.map(|v| v.trunc()),
                    score: prob[1],
                    reg: [reg[0], reg[1], reg[2], reg[3]],
                });
            }
        }
        let mut cands = suppress(next, 0.7, Overlap::Union);
        for c in cands.iter_mut() {
            regress(c);
            square(c);
        }
        self.last_counts.rnet = cands.len();

        // Stage 3: O-Net on 48x48 crops, with landmarks.
        let mut faces = Vec::new();
        for c in &cands {
            let Some(patch) = crop(img, &c.b, 48) else {
                continue;
            };
            let outs = self.onet.run(vec![to_tensor(&patch)?])?;
            let prob = output_with(&outs, 2, "O-Net")?;
            let reg = output_with(&outs, 4, "O-Net")?;
            let pts = output_with(&outs, 10, "O-Net")?;
            if prob[1] > self.opts.thresholds[2] {
                let b = c.b.map(|v| v.trunc());
                let (bw, bh) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
                let keypoints = (0..5)
                    .map(|k| [bw * pts[k] + b[0] - 1.0, bh * pts[5 + k] + b[1] - 1.0])
                    .collect();
                let mut cand = Cand {
                    b,
                    score: prob[1],
                    reg: [reg[0], reg[1], reg[2], reg[3]],
                };
                regress(&mut cand);
                let mut d = as_det(&cand);
                d.keypoints = keypoints;
                faces.push(d);
            }
        }
        let faces = nms::hard(faces, 0.7, Overlap::Min);
        self.last_counts.onet = faces.len();
        Ok(faces)
    }
}
