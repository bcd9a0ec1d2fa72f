//! Non-maximum suppression.

use super::Detection;

/// How overlap is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Intersection over union.
    Union,
    /// Intersection over the smaller box (MTCNN's last stage).
    Min,
}

/// Overlap of two boxes `[x0, y0, x1, y1]`.
pub fn overlap(a: &[f32; 4], b: &[f32; 4], kind: Overlap) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let denom = match kind {
        Overlap::Union => area(a) + area(b) - inter,
        Overlap::Min => area(a).min(area(b)),
    };
    if denom <= 0.0 {
        0.0
    } else {
        inter / denom
    }
}

/// Sorts by score, highest first (NaN scores last).
fn by_score(dets: &mut [Detection]) {
    let key = |d: &Detection| {
        if d.score.is_nan() {
            f32::NEG_INFINITY
        } else {
            d.score
        }
    };
    dets.sort_by(|a, b| key(b).total_cmp(&key(a)));
}

/// Classic NMS: keeps the best box and drops every box overlapping it by more than `threshold`
/// (per class when classes are set). Returns the kept boxes, best first.
pub fn hard(mut dets: Vec<Detection>, threshold: f32, kind: Overlap) -> Vec<Detection> {
    by_score(&mut dets);
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if kept
            .iter()
            .all(|k| k.class != d.class || overlap(&k.bbox, &d.bbox, kind) <= threshold)
        {
            kept.push(d);
        }
    }
    kept
}

/// Weighted NMS (BlazeFace / MediaPipe): each cluster of boxes overlapping the best one by more
/// than `threshold` is replaced by their score-weighted mean box and keypoints, with the best
/// score. Steadier across video frames than hard NMS.
pub fn weighted(mut dets: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    by_score(&mut dets);
    let mut out = Vec::new();
    while !dets.is_empty() {
        let best = dets[0].clone();
        let (cluster, rest): (Vec<Detection>, Vec<Detection>) = dets.into_iter().partition(|d| {
            d.class == best.class && overlap(&best.bbox, &d.bbox, Overlap::Union) > threshold
        });
        dets = rest;
        let total: f32 = cluster.iter().map(|d| d.score).sum();
        let mut merged = best.clone();
        if total > 0.0 && cluster.len() > 1 {
            merged.bbox = [0.0; 4];
            for kp in merged.keypoints.iter_mut() {
                *kp = [0.0; 2];
            }
            for d in &cluster {
                let w = d.score / total;
                for i in 0..4 {
                    merged.bbox[i] += w * d.bbox[i];
                }
                for (m, k) in merged.keypoints.iter_mut().zip(&d.keypoints) {
                    m[0] += w * k[0];
                    m[1] += w * k[1];
                }
            }
        }
        out.push(merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(b: [f32; 4], s: f32) -> Detection {
        Detection {
            bbox: b,
            score: s,
            class: None,
            label: None,
            keypoints: vec![[b[0], b[1]]],
        }
    }

    #[test]
    fn overlap_measures() {
        let a = [0.0, 0.0, 2.0, 2.0];
        let b = [1.0, 1.0, 3.0, 3.0];
        assert!((overlap(&a, &b, Overlap::Union) - 1.0 / 7.0).abs() < 1e-6);
        assert!((overlap(&a, &b, Overlap::Min) - 0.25).abs() < 1e-6);
        assert_eq!(overlap(&a, &[5.0, 5.0, 6.0, 6.0], Overlap::Union), 0.0);
        assert_eq!(
            overlap(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0], Overlap::Union),
            0.0
        );
    }

    #[test]
    fn hard_nms_keeps_best_of_each_cluster() {
        let d = vec![
            det([0.0, 0.0, 10.0, 10.0], 0.8),
            det([1.0, 1.0, 11.0, 11.0], 0.9),
            det([50.0, 50.0, 60.0, 60.0], 0.5),
            det([0.0, 0.0, 10.0, 10.0], f32::NAN),
        ];
        let k = hard(d, 0.5, Overlap::Union);
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].score, 0.9);
        assert_eq!(k[1].score, 0.5);
    }

    #[test]
    fn weighted_nms_averages_a_cluster() {
        let d = vec![
            det([0.0, 0.0, 10.0, 10.0], 0.75),
            det([2.0, 2.0, 12.0, 12.0], 0.25),
        ];
        let k = weighted(d, 0.3);
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].score, 0.75);
        assert!((k[0].bbox[0] - 0.5).abs() < 1e-6 && (k[0].bbox[2] - 10.5).abs() < 1e-6);
        assert!((k[0].keypoints[0][0] - 0.5).abs() < 1e-6);
    }
}
