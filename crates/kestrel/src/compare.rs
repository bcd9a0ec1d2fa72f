//! Comparing two ways of running one model (fp16 storage against f32, GPU against CPU): the error
//! of every output, the growth of the error layer by layer, and classifier agreement.
//!
//! Errors are measured on whole tensors, never on sums: `max_abs = max |a - b|` and
//! `max_rel = max |a - b| / max |b|` (relative to the largest reference magnitude, so near-zero
//! elements do not blow it up); NaN or infinity where the reference is finite (or the reverse)
//! is counted separately, since it would otherwise hide in a maximum.

use crate::{Model, Result, Session, SessionOptions, Tensor};
use kestrel_core::DType;

/// Error of one tensor against its reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct TensorError {
    pub max_abs: f64,
    pub max_rel: f64,
    /// Elements that are finite in one tensor and not in the other.
    pub non_finite_mismatch: usize,
}

impl TensorError {
    /// The worse of two errors, element by element.
    pub fn max(self, o: TensorError) -> TensorError {
        TensorError {
            max_abs: self.max_abs.max(o.max_abs),
            max_rel: self.max_rel.max(o.max_rel),
            non_finite_mismatch: self.non_finite_mismatch + o.non_finite_mismatch,
        }
    }
}

/// Error of `got` against `want` (f32 tensors of the same shape; other tensors compare equal or
/// as a total mismatch).
pub fn tensor_error(got: &Tensor, want: &Tensor) -> TensorError {
    let (Ok(a), Ok(b)) = (got.as_f32(), want.as_f32()) else {
        let same = got == want;
        return TensorError {
            max_abs: if same { 0.0 } else { f64::INFINITY },
            max_rel: if same { 0.0 } else { f64::INFINITY },
            non_finite_mismatch: 0,
        };
    };
    if a.len() != b.len() || got.shape() != want.shape() {
        return TensorError {
            max_abs: f64::INFINITY,
            max_rel: f64::INFINITY,
            non_finite_mismatch: 0,
        };
    }
    let (mut max_abs, mut scale, mut bad) = (0f64, 0f64, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        if x.is_finite() != y.is_finite() {
            bad += 1;
            continue;
        }
        if y.is_finite() {
            max_abs = max_abs.max((x as f64 - y as f64).abs());
            scale = scale.max((y as f64).abs());
        }
    }
    TensorError {
        max_abs,
        max_rel: if scale > 0.0 {
            max_abs / scale
        } else {
            max_abs
        },
        non_finite_mismatch: bad,
    }
}

/// Error of one intermediate value (a node's first output) of the graph.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerError {
    /// Position in execution order (import order, which is topological).
    pub index: usize,
    pub node: String,
    pub op: String,
    pub error: TensorError,
}

/// Runs `inputs` through `model` with the reference options and through `test_model` (the same
/// network, possibly with converted weights) with the test options, observing every node's first
/// `f32` output, and returns the error of each against the reference run, in execution order.
///
/// The observed values become extra graph outputs, which keeps them alive and may stop some
/// fusions; the values themselves are the same.
pub fn layer_errors(
    model: &Model,
    test_model: &Model,
    reference: &SessionOptions,
    test: &SessionOptions,
    inputs: &[Tensor],
) -> Result<Vec<LayerError>> {
    let g = model.graph();
    let outputs = g.outputs.len();
    let mut names = Vec::new();
    let mut nodes = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if let Some(&v) = n.outputs.first() {
            if g.outputs.contains(&v) || names.contains(&g.values[v].name) {
                continue;
            }
            names.push(g.values[v].name.clone());
            nodes.push(i);
        }
    }
    let observed = model.with_extra_outputs(&names)?;
    let observed_test = test_model.with_extra_outputs(&names)?;
    let want = Session::new(&observed, reference.clone())?.run(inputs.to_vec())?;
    let got = Session::new(&observed_test, test.clone())?.run(inputs.to_vec())?;
    let mut rows = Vec::new();
    for (k, &ni) in nodes.iter().enumerate() {
        let (w, t) = (&want[outputs + k], &got[outputs + k]);
        if w.dtype() != DType::F32 {
            continue;
        }
        let node = &g.nodes[ni];
        rows.push(LayerError {
            index: ni,
            node: node.name.clone(),
            op: node.op.name().to_string(),
            error: tensor_error(t, w),
        });
    }
    // the model's own outputs, at the end of the order
    for (o, (t, w)) in got.iter().zip(&want).take(outputs).enumerate() {
        if w.dtype() == DType::F32 {
            rows.push(LayerError {
                index: g.nodes.len() + o,
                node: format!("output '{}'", g.values[g.outputs[o]].name),
                op: "output".into(),
                error: tensor_error(t, w),
            });
        }
    }
    Ok(rows)
}

/// Indices of the `k` largest values (descending; NaN sorts lowest).
pub fn top_k_indices(t: &Tensor, k: usize) -> Vec<usize> {
    let v = t.as_f32().unwrap_or(&[]);
    let mut idx: Vec<usize> = (0..v.len()).collect();
    let key = |i: usize| {
        if v[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            v[i]
        }
    };
    idx.sort_by(|&i, &j| key(j).total_cmp(&key(i)).then(i.cmp(&j)));
    idx.truncate(k);
    idx
}

/// True when a model looks like a classifier: one output with a single dimension above 1.
pub fn is_classifier(outputs: &[Tensor]) -> bool {
    outputs.len() == 1
        && outputs[0].dtype() == DType::F32
        && outputs[0].shape().iter().filter(|&&d| d > 1).count() == 1
}

/// Classifier agreement of a test run with a reference run over many inputs.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Agreement {
    pub inputs: usize,
    /// Same top-1 class.
    pub top1_same: usize,
    /// The reference's top-1 class is among the test's top 5.
    pub ref_top1_in_top5: usize,
    /// Same set of top-5 classes.
    pub top5_same_set: usize,
}

impl Agreement {
    /// Adds one input's pair of outputs.
    pub fn add(&mut self, got: &Tensor, want: &Tensor) {
        let (g, w) = (top_k_indices(got, 5), top_k_indices(want, 5));
        self.inputs += 1;
        self.top1_same += (g.first() == w.first()) as usize;
        self.ref_top1_in_top5 += w.first().is_some_and(|c| g.contains(c)) as usize;
        let (mut gs, mut ws) = (g.clone(), w.clone());
        gs.sort_unstable();
        ws.sort_unstable();
        self.top5_same_set += (gs == ws) as usize;
    }

    /// Share of inputs with the same top-1 class.
    pub fn top1_rate(&self) -> f64 {
        self.top1_same as f64 / self.inputs.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_relative_to_the_largest_reference_value() {
        let w = Tensor::from_vec(vec![4], vec![10.0f32, -20.0, 0.001, 0.0]).unwrap();
        let g = Tensor::from_vec(vec![4], vec![10.5f32, -20.0, 0.002, 0.0]).unwrap();
        let e = tensor_error(&g, &w);
        assert!((e.max_abs - 0.5).abs() < 1e-9);
        assert!((e.max_rel - 0.025).abs() < 1e-9);
        assert_eq!(e.non_finite_mismatch, 0);
        let n = Tensor::from_vec(vec![4], vec![f32::INFINITY, -20.0, f32::NAN, 0.0]).unwrap();
        assert_eq!(tensor_error(&n, &w).non_finite_mismatch, 2);
        let short = Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap();
        assert!(tensor_error(&short, &w).max_rel.is_infinite());
    }

    #[test]
    fn agreement_counts_top1_and_top5() {
        let w = Tensor::from_vec(vec![1, 7], vec![0.1f32, 0.9, 0.3, 0.5, 0.2, 0.0, 0.4]).unwrap();
        let same_top1 =
            Tensor::from_vec(vec![1, 7], vec![0.1f32, 0.9, 0.3, 0.5, 0.25, 0.0, 0.2]).unwrap();
        let swapped =
            Tensor::from_vec(vec![1, 7], vec![0.1f32, 0.5, 0.3, 0.9, 0.2, 0.0, 0.4]).unwrap();
        let mut a = Agreement::default();
        a.add(&same_top1, &w);
        a.add(&swapped, &w);
        assert_eq!(
            (a.inputs, a.top1_same, a.ref_top1_in_top5, a.top5_same_set),
            (2, 1, 2, 2)
        );
        assert_eq!(top_k_indices(&w, 3), vec![1, 3, 6]);
        assert!(is_classifier(&[w]));
    }
}
