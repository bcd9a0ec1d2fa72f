//! Detector post-processing: turn raw detector outputs into boxes in frame pixels.
//!
//! - [`ssd`]: a generic anchor-based (SSD-style) decoder driven by an [`ssd::SsdConfig`] that can
//!   be read from a JSON preset file; BlazeFace and the MediaPipe face detector are built-in
//!   configurations of it, so further detectors need no code.
//! - [`mtcnn`]: the three-stage MTCNN face cascade (P-Net over an image pyramid, R-Net, O-Net).
//! - [`nms`]: hard and weighted non-maximum suppression.

pub mod mtcnn;
pub mod nms;
pub mod ssd;

/// One detection. Coordinates are in pixels of the frame the detector was run on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Detection {
    /// `[x0, y0, x1, y1]`, x0 <= x1, y0 <= y1.
    pub bbox: [f32; 4],
    /// Confidence in 0..=1.
    pub score: f32,
    /// Class index for multi-class detectors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<usize>,
    /// Class name when a label list is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Landmarks (eyes, nose, mouth, ears ...) as `[x, y]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keypoints: Vec<[f32; 2]>,
}

impl Detection {
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }
    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }
}
