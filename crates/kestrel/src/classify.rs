//! Classifier post-processing: probabilities and top-K with labels.

use kestrel_core::{Error, Result, Tensor};
use std::sync::OnceLock;

/// The 1000 ImageNet class names, index order (bundled).
pub fn imagenet_labels() -> &'static [String] {
    static L: OnceLock<Vec<String>> = OnceLock::new();
    L.get_or_init(|| {
        include_str!("../../../assets/labels/imagenet_classes.txt")
            .lines()
            .map(|s| s.trim().to_string())
            .collect()
    })
}

/// Class probabilities from a classifier output: softmax of the scores, unless they already
/// look like probabilities (non-negative, summing to 1 within 1e-3).
pub fn probabilities(scores: &[f32]) -> Vec<f32> {
    let sum: f32 = scores.iter().sum();
    if scores.iter().all(|&s| s >= 0.0) && (sum - 1.0).abs() < 1e-3 {
        return scores.to_vec();
    }
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = scores.iter().map(|&s| (s - m).exp()).collect();
    let t: f32 = e.iter().sum();
    e.iter().map(|v| v / t).collect()
}

/// Top-`k` `(label, probability)` of a `[1, classes]` (or `[classes]`) output. Labels are used
/// when their count equals the class count, else the class index is shown.
pub fn top_k(output: &Tensor, k: usize, labels: &[String]) -> Result<Vec<(String, f32)>> {
    let v = output.as_f32()?;
    if output.shape().iter().filter(|&&d| d > 1).count() > 1 {
        return Err(Error::invalid(format!(
            "output of shape {:?} is not a single classification vector",
            output.shape()
        )));
    }
    let p = probabilities(v);
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].partial_cmp(&p[a]).unwrap_or(std::cmp::Ordering::Equal));
    Ok(idx
        .into_iter()
        .take(k)
        .map(|i| {
            let name = if labels.len() == p.len() {
                labels[i].clone()
            } else {
                format!("class {i}")
            };
            (name, p[i])
        })
        .collect())
}
