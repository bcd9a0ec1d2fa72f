//! A generic anchor-based (SSD-style) detector decoder, configured by data.
//!
//! An [`SsdConfig`] says where the anchors are (a grid per feature-map stride), which model
//! outputs hold the scores and the box regressions (several outputs are concatenated in order),
//! how boxes are coded, and how to suppress overlaps. BlazeFace (front 128, back 256) and the
//! MediaPipe short-range face detector are built in ([`SsdConfig::builtin`]); any other SSD-style
//! detector is added by writing the same structure as JSON ([`SsdConfig::from_json_file`]).

use super::nms::{self, Overlap};
use super::Detection;
use crate::preprocess::FrameMap;
use kestrel_core::{Error, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One anchor grid: a feature map of `ceil(input / stride)` cells with `per_cell` anchors each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnchorLayer {
    pub stride: u32,
    pub per_cell: usize,
    /// Anchor sizes (w, h) relative to the input, one per anchor of a cell; all 1x1 when absent
    /// (MediaPipe's fixed anchor size).
    #[serde(default)]
    pub sizes: Option<Vec<[f32; 2]>>,
}

/// How box regressions are coded relative to their anchor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BoxCoding {
    /// MediaPipe: `[dx, dy, w, h, kx0, ky0, ...]` in input pixels; centre = anchor + d/size.
    Linear,
    /// Classic SSD: `[dx, dy, dw, dh]`, centre = anchor + d * variance[0] * anchor size,
    /// size = exp(d * variance[1]) * anchor size.
    Ssd { variance: [f32; 2] },
}

/// What turns a raw score into a probability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreActivation {
    Sigmoid,
    Softmax,
    None,
}

/// Overlap suppression of the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NmsKind {
    Weighted,
    Hard,
}

/// A complete SSD-style decoder description. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SsdConfig {
    pub name: String,
    /// Model input width and height in pixels (anchor grid and linear box scale).
    pub input_size: [u32; 2],
    pub layers: Vec<AnchorLayer>,
    /// Outputs holding scores `[1, anchors_i, classes]`, concatenated over anchors in order.
    pub score_outputs: Vec<String>,
    /// Outputs holding regressions `[1, anchors_i, 4 + 2 * keypoints (+ extra)]`.
    pub box_outputs: Vec<String>,
    pub box_coding: BoxCoding,
    #[serde(default)]
    pub keypoints: usize,
    pub score_activation: ScoreActivation,
    /// Raw scores are clipped to +-this before the activation (MediaPipe uses 100).
    #[serde(default)]
    pub score_clip: Option<f32>,
    /// Class index that means "nothing" (softmax detectors); never reported.
    #[serde(default)]
    pub background_class: Option<usize>,
    /// Minimum probability of a reported detection.
    pub threshold: f32,
    pub nms: NmsKind,
    pub iou: f32,
    pub max_detections: usize,
    /// Class names, when the detector has several classes.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

impl SsdConfig {
    /// The built-in configuration for a model file stem, if any.
    pub fn builtin(model_name: &str) -> Option<SsdConfig> {
        let face =
            |name: &str, size: u32, s0: u32, scores: [&str; 2], boxes: [&str; 2]| SsdConfig {
                name: name.into(),
                input_size: [size, size],
                layers: vec![
                    AnchorLayer {
                        stride: s0,
                        per_cell: 2,
                        sizes: None,
                    },
                    AnchorLayer {
                        stride: s0 * 2,
                        per_cell: 6,
                        sizes: None,
                    },
                ],
                score_outputs: scores
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.to_string())
                    .collect(),
                box_outputs: boxes
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.to_string())
                    .collect(),
                box_coding: BoxCoding::Linear,
                keypoints: 6,
                score_activation: ScoreActivation::Sigmoid,
                score_clip: Some(100.0),
                background_class: None,
                threshold: 0.75,
                nms: NmsKind::Weighted,
                iou: 0.3,
                max_detections: 100,
                labels: None,
            };
        let keijiro = (
            ["Identity:0", "Identity_1:0"],
            ["Identity_2:0", "Identity_3:0"],
        );
        Some(match model_name {
            "blazeface_front_128" => face(model_name, 128, 8, keijiro.0, keijiro.1),
            "blazeface_back_256" => face(model_name, 256, 16, keijiro.0, keijiro.1),
            "mediapipe_face_detection_short_range" => face(
                model_name,
                128,
                8,
                ["classificators", ""],
                ["regressors", ""],
            ),
            _ => return None,
        })
    }

    /// Reads a configuration from a JSON file (the fields of [`SsdConfig`]).
    pub fn from_json_file(path: &Path) -> Result<SsdConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let c: SsdConfig = serde_json::from_str(&text).map_err(|e| Error::Input {
            name: path.display().to_string(),
            msg: format!("not a detector preset: {e}"),
        })?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(Error::invalid(format!(
                "detector preset '{}': {m}",
                self.name
            )))
        };
        if self.input_size.contains(&0) || self.layers.iter().any(|l| l.stride == 0) {
            return bad("input size and strides must be positive".into());
        }
        for l in &self.layers {
            if let Some(s) = &l.sizes {
                if s.len() != l.per_cell {
                    return bad(format!(
                        "a layer has {} anchor sizes for {} anchors per cell",
                        s.len(),
                        l.per_cell
                    ));
                }
            }
        }
        if self.score_outputs.is_empty() || self.box_outputs.is_empty() {
            return bad("score_outputs and box_outputs must name model outputs".into());
        }
        if !(0.0..=1.0).contains(&self.iou) {
            return bad("iou must be in 0..=1".into());
        }
        Ok(())
    }

    /// Anchors `[cx, cy, w, h]` relative to the input, in the models' order (per layer: rows,
    /// columns, anchors of a cell).
    pub fn anchors(&self) -> Vec<[f32; 4]> {
        let [iw, ih] = self.input_size;
        let mut v = Vec::new();
        for l in &self.layers {
            let gw = iw.div_ceil(l.stride);
            let gh = ih.div_ceil(l.stride);
            for y in 0..gh {
                for x in 0..gw {
                    for k in 0..l.per_cell {
                        let [w, h] = l.sizes.as_ref().map(|s| s[k]).unwrap_or([1.0, 1.0]);
                        v.push([
                            (x as f32 + 0.5) / gw as f32,
                            (y as f32 + 0.5) / gh as f32,
                            w,
                            h,
                        ]);
                    }
                }
            }
        }
        v
    }

    /// Decodes the model's outputs (`outputs` paired with `names`) into detections in frame
    /// pixels via `map` (from model-input coordinates in 0..1 to the frame).
    pub fn decode(
        &self,
        names: &[String],
        outputs: &[Tensor],
        map: &FrameMap,
    ) -> Result<Vec<Detection>> {
        let gather = |wanted: &[String]| -> Result<(Vec<f32>, usize)> {
            let mut data = Vec::new();
            let mut width = None;
            for w in wanted {
                let i = names.iter().position(|n| n == w).ok_or_else(|| {
                    Error::invalid(format!(
                        "detector '{}': the model has no output '{w}' (outputs: {})",
                        self.name,
                        names.join(", ")
                    ))
                })?;
                let t = &outputs[i];
                let last = *t.shape().last().unwrap_or(&1);
                if *width.get_or_insert(last) != last {
                    return Err(Error::invalid(format!(
                        "detector '{}': outputs {wanted:?} disagree on their last dimension",
                        self.name
                    )));
                }
                data.extend_from_slice(t.as_f32()?);
            }
            Ok((data, width.unwrap_or(1)))
        };
        let (scores, classes) = gather(&self.score_outputs)?;
        let (boxes, coords) = gather(&self.box_outputs)?;
        let anchors = self.anchors();
        let n = anchors.len();
        if scores.len() != n * classes || boxes.len() != n * coords {
            return Err(Error::invalid(format!(
                "detector '{}': {n} anchors but the outputs hold {} scores of {classes} and {} boxes of {coords}",
                self.name,
                scores.len() / classes.max(1),
                boxes.len() / coords.max(1)
            )));
        }
        if coords < 4 + 2 * self.keypoints {
            return Err(Error::invalid(format!(
                "detector '{}': boxes have {coords} values, need {}",
                self.name,
                4 + 2 * self.keypoints
            )));
        }
        let [iw, ih] = self.input_size.map(|v| v as f32);
        let mut dets = Vec::new();
        for (a, anchor) in anchors.iter().enumerate() {
            let (class, p) = self.best_class(&scores[a * classes..(a + 1) * classes]);
            // NaN scores fail this test too
            if p.is_nan() || p < self.threshold {
                continue;
            }
            let r = &boxes[a * coords..(a + 1) * coords];
            let [acx, acy, aw, ah] = *anchor;
            let (cx, cy, w, h) = match self.box_coding {
                BoxCoding::Linear => (
                    r[0] / iw * aw + acx,
                    r[1] / ih * ah + acy,
                    r[2] / iw * aw,
                    r[3] / ih * ah,
                ),
                BoxCoding::Ssd { variance } => (
                    r[0] * variance[0] * aw + acx,
                    r[1] * variance[0] * ah + acy,
                    (r[2] * variance[1]).exp() * aw,
                    (r[3] * variance[1]).exp() * ah,
                ),
            };
            if !(cx.is_finite() && cy.is_finite() && w.is_finite() && h.is_finite()) {
                continue;
            }
            let keypoints = (0..self.keypoints)
                .map(|k| {
                    let (kx, ky) = match self.box_coding {
                        BoxCoding::Linear => {
                            (r[4 + 2 * k] / iw * aw + acx, r[5 + 2 * k] / ih * ah + acy)
                        }
                        BoxCoding::Ssd { variance } => (
                            r[4 + 2 * k] * variance[0] * aw + acx,
                            r[5 + 2 * k] * variance[0] * ah + acy,
                        ),
                    };
                    map.point(kx, ky)
                })
                .collect();
            let [x0, y0] = map.point(cx - w / 2.0, cy - h / 2.0);
            let [x1, y1] = map.point(cx + w / 2.0, cy + h / 2.0);
            dets.push(Detection {
                bbox: [x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1)],
                score: p,
                class: (classes > 1).then_some(class),
                label: self.labels.as_ref().and_then(|l| l.get(class).cloned()),
                keypoints,
            });
        }
        let mut kept = match self.nms {
            NmsKind::Weighted => nms::weighted(dets, self.iou),
            NmsKind::Hard => nms::hard(dets, self.iou, Overlap::Union),
        };
        kept.truncate(self.max_detections);
        Ok(kept)
    }

    /// The most likely non-background class of one anchor and its probability.
    fn best_class(&self, raw: &[f32]) -> (usize, f32) {
        let clip = |x: f32| match self.score_clip {
            Some(c) => x.clamp(-c, c),
            None => x,
        };
        let probs: Vec<f32> = match self.score_activation {
            ScoreActivation::Sigmoid => raw
                .iter()
                .map(|&x| 1.0 / (1.0 + (-clip(x)).exp()))
                .collect(),
            ScoreActivation::Softmax => crate::classify::probabilities(raw),
            ScoreActivation::None => raw.to_vec(),
        };
        probs
            .iter()
            .enumerate()
            .filter(|(c, _)| Some(*c) != self.background_class)
            .fold((0, f32::NEG_INFINITY), |best, (c, &p)| {
                if p > best.1 {
                    (c, p)
                } else {
                    best
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blazeface_has_896_anchors_in_mediapipe_order() {
        let c = SsdConfig::builtin("blazeface_front_128").unwrap();
        let a = c.anchors();
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0, 1.0, 1.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2][0], 1.5 / 16.0);
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0, 1.0, 1.0]);
        assert_eq!(
            SsdConfig::builtin("blazeface_back_256")
                .unwrap()
                .anchors()
                .len(),
            896
        );
    }

    #[test]
    fn json_round_trip_and_validation() {
        let c = SsdConfig::builtin("mediapipe_face_detection_short_range").unwrap();
        let p = std::env::temp_dir().join(format!("kestrel-ssd-{}.json", std::process::id()));
        std::fs::write(&p, serde_json::to_string_pretty(&c).unwrap()).unwrap();
        assert_eq!(SsdConfig::from_json_file(&p).unwrap(), c);
        std::fs::write(&p, "{\"name\": 3}").unwrap();
        assert!(SsdConfig::from_json_file(&p).is_err());
        let mut bad = c.clone();
        bad.layers[0].stride = 0;
        std::fs::write(&p, serde_json::to_string(&bad).unwrap()).unwrap();
        assert!(SsdConfig::from_json_file(&p)
            .unwrap_err()
            .to_string()
            .contains("positive"));
        std::fs::remove_file(p).ok();
    }

    #[test]
    fn decodes_one_synthetic_anchor() {
        let mut c = SsdConfig::builtin("mediapipe_face_detection_short_range").unwrap();
        c.keypoints = 0;
        let n = c.anchors().len();
        let mut scores = vec![-10.0f32; n];
        let mut boxes = vec![0.0f32; n * 4];
        // anchor 0 (centre 4,4 px of 128): shift by +8 px, size 32 px
        scores[0] = 5.0;
        boxes[..4].copy_from_slice(&[8.0, 8.0, 32.0, 32.0]);
        let names = vec!["regressors".to_string(), "classificators".to_string()];
        let outs = vec![
            Tensor::from_vec(vec![1, n, 4], boxes).unwrap(),
            Tensor::from_vec(vec![1, n, 1], scores).unwrap(),
        ];
        let map = FrameMap {
            sx: 256.0,
            sy: 256.0,
            ox: 0.0,
            oy: 0.0,
        };
        let d = c.decode(&names, &outs, &map).unwrap();
        assert_eq!(d.len(), 1);
        // centre (4+8)/128*256 = 24 px, half size 32 px
        let b = d[0].bbox;
        assert!(
            (b[0] + 8.0).abs() < 1e-3 && (b[2] - 56.0).abs() < 1e-3,
            "{b:?}"
        );
        assert!((d[0].score - 1.0 / (1.0 + (-5.0f32).exp())).abs() < 1e-6);
    }
}
