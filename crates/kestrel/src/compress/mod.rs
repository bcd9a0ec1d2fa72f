//! Low-rank compression of ONNX models: big convolutions become Tucker-2 sequences
//! (1x1 → k x k core → 1x1, Kim et al. 2016, "Compression of Deep Convolutional Neural Networks
//! for Fast and Low Power Mobile Applications"), 1x1 convolutions and Gemm layers become two
//! thinner layers by truncated SVD. Ranks come from singular-value energy, from a global MAC
//! speed-up target, or from a file. With calibration inputs, the output-channel factor is chosen
//! from the layer's *responses* instead of its weights: the leading eigenvectors of the output
//! covariance minimise the layer's output reconstruction error on that data (Zhang et al. 2016,
//! "Accelerating Very Deep Convolutional Networks for Classification and Detection", TPAMI).
//!
//! The result is a plain ONNX model that Kestrel and onnxruntime both run; nothing else in the
//! graph changes (the decomposed layer's output keeps its name, so activations after it stay).

mod factors;
pub(crate) mod onnx_edit;

pub use factors::{rank_for_energy, tucker2};

use crate::{Model, Session, SessionOptions};
use factors::{gram_eigen, leading, left_subspace, svd_pair, unfold_input_mode};
use kestrel_core::prepare::{prepare, PrepareOptions};
use kestrel_core::{Error, Result, Tensor};
use kestrel_onnx::proto::ModelProto;
use nalgebra::DMatrix;
use onnx_edit::*;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Which factorisation to use for convolutions with kernels larger than 1x1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Tucker-2 for k x k convs, SVD for 1x1 convs and Gemm.
    Auto,
    Tucker2,
    /// SVD only (1x1 convs and Gemm; k x k convs are left alone).
    Svd,
}

/// How ranks are chosen.
#[derive(Clone, Debug)]
pub enum RankRule {
    /// Keep this share of the squared singular values per mode.
    Energy(f64),
    /// Reach this whole-model MAC reduction (MACs before / after) with one energy level shared
    /// by every layer (found by bisection).
    Speedup(f64),
    /// Ranks per node name: `[r]` for SVD, `[r_in, r_out]` for Tucker-2.
    Ranks(HashMap<String, Vec<usize>>),
}

/// Options of [`compress`].
#[derive(Clone, Debug)]
pub struct CompressOptions {
    pub method: Method,
    pub rule: RankRule,
    /// A layer is decomposed only when its MACs drop below this share of the original.
    pub min_gain: f64,
    /// Calibration inputs (one tensor per sample, the model's single input) for data-aware
    /// output factors; empty = weights only.
    pub calib: Vec<Tensor>,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            method: Method::Auto,
            rule: RankRule::Energy(0.9),
            min_gain: 0.8,
            calib: Vec::new(),
        }
    }
}

/// What happened to one layer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerReport {
    pub node: String,
    pub op: String,
    /// `tucker2`, `svd`, or `kept (reason)`.
    pub action: String,
    pub weight_shape: Vec<usize>,
    pub ranks: Vec<usize>,
    pub macs_before: u64,
    pub macs_after: u64,
    pub params_before: u64,
    pub params_after: u64,
    /// Share of the weight energy kept per factorised mode.
    pub energy_kept: Vec<f64>,
}

/// Whole-model figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompressReport {
    pub layers: Vec<LayerReport>,
    pub macs_before: u64,
    pub macs_after: u64,
    pub params_before: u64,
    pub params_after: u64,
    pub data_aware: bool,
}

/// A candidate layer with its spectra.
struct Candidate {
    node_index: usize,
    name: String,
    kind: Kind,
    weight: Vec<f32>,
    /// (o, i, kh, kw) for convs; (n, k, 1, 1) for Gemm (weight as [N, K]).
    dims: (usize, usize, usize, usize),
    /// Output spatial positions (convs) or rows M (Gemm); input positions for the first 1x1.
    out_positions: usize,
    in_positions: usize,
    values_out: Vec<f64>,
    vectors_out: DMatrix<f64>,
    values_in: Vec<f64>,
    vectors_in: DMatrix<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tucker,
    SvdConv,
    SvdGemm,
}

impl Candidate {
    fn macs_before(&self) -> u64 {
        let (o, i, kh, kw) = self.dims;
        (o * i * kh * kw * self.out_positions) as u64
    }
    fn params_before(&self) -> u64 {
        let (o, i, kh, kw) = self.dims;
        (o * i * kh * kw) as u64
    }
    /// MACs and parameters after decomposing with these ranks.
    fn after(&self, ranks: &[usize]) -> (u64, u64) {
        let (o, i, kh, kw) = self.dims;
        let (p_out, p_in) = (self.out_positions, self.in_positions);
        match self.kind {
            Kind::Tucker => {
                let (ri, ro) = (ranks[0], ranks[1]);
                (
                    (i * ri * p_in + ro * ri * kh * kw * p_out + ro * o * p_out) as u64,
                    (i * ri + ro * ri * kh * kw + ro * o) as u64,
                )
            }
            Kind::SvdConv | Kind::SvdGemm => {
                let r = ranks[0];
                (
                    (i * r * p_out + r * o * p_out) as u64,
                    (i * r + r * o) as u64,
                )
            }
        }
    }
    fn ranks_for_energy(&self, e: f64) -> Vec<usize> {
        match self.kind {
            Kind::Tucker => vec![
                rank_for_energy(&self.values_in, e),
                rank_for_energy(&self.values_out, e),
            ],
            _ => vec![rank_for_energy(&self.values_out, e)],
        }
    }
}

fn energy_share(values: &[f64], r: usize) -> f64 {
    let t: f64 = values.iter().sum();
    if t <= 0.0 {
        1.0
    } else {
        values[..r.min(values.len())].iter().sum::<f64>() / t
    }
}

/// Compresses the ONNX model at `path`; returns the new model's bytes and the report.
pub fn compress(path: &Path, opts: &CompressOptions) -> Result<(Vec<u8>, CompressReport)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let mut proto = ModelProto::decode(bytes.as_slice())
        .map_err(|e| Error::invalid(format!("{}: not an ONNX model: {e}", path.display())))?;
    let model = Model::load(path)?;
    // shapes of every value for the MAC counts
    let shapes = model.default_input_shapes(224);
    let prepared = prepare(
        model.graph(),
        &shapes,
        &PrepareOptions {
            optimize: false,
            ..Default::default()
        },
    )?;
    let shape_of: HashMap<String, Vec<usize>> = prepared
        .values
        .iter()
        .filter_map(|v| v.fact.as_ref().map(|f| (v.name.clone(), f.shape.clone())))
        .collect();
    let summary = model.summary(&shapes)?;
    let total_macs: u64 = summary.macs;
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| Error::invalid("the model has no graph"))?;
    let init_index: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name().to_string(), i))
        .collect();
    let weight = |name: &str| -> Option<Tensor> {
        let t = &graph.initializer[*init_index.get(name)?];
        kestrel_onnx::tensor_from_proto(
            t,
            path.parent(),
            &kestrel_onnx::TensorLimits {
                max_tensor_bytes: 4 << 30,
            },
        )
        .ok()
        .map(|t| t.cast(kestrel_core::DType::F32))
    };

    // 1. candidates and their spectra
    let mut cands = Vec::new();
    let mut kept = Vec::new();
    for (ni, n) in graph.node.iter().enumerate() {
        let name = if n.name().is_empty() {
            n.output.first().cloned().unwrap_or_default()
        } else {
            n.name().to_string()
        };
        let keep = |why: &str, shape: Vec<usize>| LayerReport {
            node: name.clone(),
            op: n.op_type().to_string(),
            action: format!("kept ({why})"),
            weight_shape: shape,
            ranks: vec![],
            macs_before: 0,
            macs_after: 0,
            params_before: 0,
            params_after: 0,
            energy_kept: vec![],
        };
        match n.op_type() {
            "Conv" => {
                let Some(w) = n.input.get(1).and_then(|w| weight(w)) else {
                    continue;
                };
                let ws = w.shape().to_vec();
                if ws.len() != 4 {
                    kept.push(keep("not 2-D", ws));
                    continue;
                }
                if get_int(n, "group").unwrap_or(1) != 1 {
                    kept.push(keep("grouped or depthwise", ws));
                    continue;
                }
                let (o, i, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
                if i < 16 {
                    // the first layer sees raw pixels: dropping an input direction loses a
                    // colour axis (Kim et al. 2016 also keep it)
                    kept.push(keep("fewer than 16 input channels", ws));
                    continue;
                }
                let out_sp = shape_of
                    .get(&n.output[0])
                    .map(|s| s[2..].iter().product())
                    .unwrap_or(0);
                let in_sp = shape_of
                    .get(&n.input[0])
                    .map(|s| s[2..].iter().product())
                    .unwrap_or(0);
                let w = w.as_f32()?.to_vec();
                let kind = if kh * kw == 1 {
                    Kind::SvdConv
                } else {
                    Kind::Tucker
                };
                if kind == Kind::Tucker && opts.method == Method::Svd {
                    kept.push(keep("k x k conv with --method svd", ws));
                    continue;
                }
                if kind == Kind::SvdConv && opts.method == Method::Tucker2 {
                    kept.push(keep("1x1 conv with --method tucker2", ws));
                    continue;
                }
                let k = kh * kw;
                let (vo, uo) = left_subspace(&w, o, i * k);
                let (vi, ui) = if kind == Kind::Tucker {
                    left_subspace(&unfold_input_mode(&w, o, i, k), i, o * k)
                } else {
                    (vec![], DMatrix::zeros(0, 0))
                };
                cands.push(Candidate {
                    node_index: ni,
                    name,
                    kind,
                    weight: w,
                    dims: (o, i, kh, kw),
                    out_positions: out_sp,
                    in_positions: in_sp,
                    values_out: vo,
                    vectors_out: uo,
                    values_in: vi,
                    vectors_in: ui,
                });
            }
            "Gemm" if opts.method != Method::Tucker2 => {
                let Some(b) = n.input.get(1).and_then(|w| weight(w)) else {
                    continue;
                };
                if get_int(n, "transA").unwrap_or(0) != 0
                    || get_float(n, "alpha").unwrap_or(1.0) != 1.0
                {
                    kept.push(keep("transA or alpha", b.shape().to_vec()));
                    continue;
                }
                let bs = b.shape().to_vec();
                let trans_b = get_int(n, "transB").unwrap_or(0) != 0;
                let (nn, kk) = if trans_b {
                    (bs[0], bs[1])
                } else {
                    (bs[1], bs[0])
                };
                let bv = b.as_f32()?;
                // weight as [N, K]
                let w: Vec<f32> = if trans_b {
                    bv.to_vec()
                } else {
                    (0..nn)
                        .flat_map(|j| (0..kk).map(move |i| bv[i * nn + j]))
                        .collect()
                };
                let m = shape_of.get(&n.output[0]).map(|s| s[0]).unwrap_or(1);
                let (vo, uo) = left_subspace(&w, nn, kk);
                cands.push(Candidate {
                    node_index: ni,
                    name,
                    kind: Kind::SvdGemm,
                    weight: w,
                    dims: (nn, kk, 1, 1),
                    out_positions: m,
                    in_positions: m,
                    values_out: vo,
                    vectors_out: uo,
                    values_in: vec![],
                    vectors_in: DMatrix::zeros(0, 0),
                });
            }
            _ => {}
        }
    }

    // 2. data-aware output factors: leading eigenvectors of the responses' second moment
    let data_aware = !opts.calib.is_empty();
    if data_aware {
        responses(&model, &cands, graph, &opts.calib)?
            .into_iter()
            .zip(cands.iter_mut())
            .for_each(|(g, c)| {
                // directions from the responses; ranks still follow the weight spectrum (the
                // responses' uncentred spectrum is dominated by its mean and would starve ranks)
                if let Some(g) = g {
                    let (_, u) = gram_eigen(&g);
                    c.vectors_out = u;
                }
            });
    }

    // 3. ranks
    let worth =
        |c: &Candidate, r: &[usize]| (c.after(r).0 as f64) < opts.min_gain * c.macs_before() as f64;
    let choose = |e: f64| -> Vec<Option<Vec<usize>>> {
        cands
            .iter()
            .map(|c| {
                let r = c.ranks_for_energy(e);
                worth(c, &r).then_some(r)
            })
            .collect()
    };
    let chosen: Vec<Option<Vec<usize>>> = match &opts.rule {
        RankRule::Energy(e) => choose(*e),
        RankRule::Ranks(map) => cands
            .iter()
            .map(|c| {
                map.get(&c.name).map(|r| {
                    let bound = |x: usize, max: usize| x.clamp(1, max.max(1));
                    let (o, i, _, _) = c.dims;
                    match c.kind {
                        Kind::Tucker => vec![bound(r[0], i), bound(*r.get(1).unwrap_or(&r[0]), o)],
                        _ => vec![bound(r[0], o.min(i))],
                    }
                })
            })
            .collect(),
        RankRule::Speedup(s) => {
            // Greedy allocation: every layer has a ladder of rank options (by energy, most
            // faithful first); repeatedly take the step that saves the most MACs per unit of
            // weight energy lost, until the model's MACs reach the target. Thin layers whose
            // options would not get faster never enter.
            const LADDER: [f64; 12] = [
                0.999, 0.995, 0.99, 0.98, 0.97, 0.95, 0.92, 0.9, 0.85, 0.8, 0.7, 0.6,
            ];
            let target = total_macs as f64 / s.max(1.0);
            let options: Vec<Vec<(Vec<usize>, f64, f64)>> = cands
                .iter()
                .map(|c| {
                    let mut v: Vec<(Vec<usize>, f64, f64)> = Vec::new();
                    for e in LADDER {
                        let r = c.ranks_for_energy(e);
                        if !worth(c, &r) || v.last().is_some_and(|l| l.0 == r) {
                            continue;
                        }
                        let kept = match c.kind {
                            Kind::Tucker => energy_share(&c.values_in, r[0])
                                .min(energy_share(&c.values_out, r[1])),
                            _ => energy_share(&c.values_out, r[0]),
                        };
                        v.push((r.clone(), c.after(&r).0 as f64, 1.0 - kept));
                    }
                    v
                })
                .collect();
            let mut at: Vec<Option<usize>> = vec![None; cands.len()];
            let mut macs = total_macs as f64;
            while macs > target {
                let mut best: Option<(usize, f64, f64)> = None; // (layer, ratio, saved)
                for (li, c) in cands.iter().enumerate() {
                    let next = at[li].map_or(0, |k| k + 1);
                    let Some(opt) = options[li].get(next) else {
                        continue;
                    };
                    let (cur_macs, cur_loss) = match at[li] {
                        Some(k) => (options[li][k].1, options[li][k].2),
                        None => (c.macs_before() as f64, 0.0),
                    };
                    let saved = cur_macs - opt.1;
                    if saved <= 0.0 {
                        continue;
                    }
                    let ratio = saved / (opt.2 - cur_loss).max(1e-9);
                    if best.is_none_or(|b| ratio > b.1) {
                        best = Some((li, ratio, saved));
                    }
                }
                let Some((li, _, saved)) = best else { break };
                at[li] = Some(at[li].map_or(0, |k| k + 1));
                macs -= saved;
            }
            at.iter()
                .zip(&options)
                .map(|(k, o)| k.map(|k| o[k].0.clone()))
                .collect()
        }
    };

    // 4. rewrite
    let mut layers = kept;
    let mut replacements: BTreeMap<usize, Vec<kestrel_onnx::proto::NodeProto>> = BTreeMap::new();
    let mut new_inits = Vec::new();
    let mut dead_weights = Vec::new();
    for (c, r) in cands.iter().zip(&chosen) {
        let n = &graph.node[c.node_index];
        let (o, i, kh, kw) = c.dims;
        let mut rep = LayerReport {
            node: c.name.clone(),
            op: n.op_type().to_string(),
            action: String::new(),
            weight_shape: if c.kind == Kind::SvdGemm {
                vec![o, i]
            } else {
                vec![o, i, kh, kw]
            },
            ranks: vec![],
            macs_before: c.macs_before(),
            macs_after: c.macs_before(),
            params_before: c.params_before(),
            params_after: c.params_before(),
            energy_kept: vec![],
        };
        let Some(r) = r else {
            rep.action = "kept (would not get faster)".into();
            layers.push(rep);
            continue;
        };
        let (macs, params) = c.after(r);
        rep.ranks = r.clone();
        rep.macs_after = macs;
        rep.params_after = params;
        let base = c.name.replace(['/', ':', '.'], "_");
        let out = n.output[0].clone();
        let x = n.input[0].clone();
        let bias = n.input.get(2).cloned().filter(|b| !b.is_empty());
        let mut conv_attrs: Vec<_> = n
            .attribute
            .iter()
            .filter(|a| matches!(a.name(), "strides" | "pads" | "dilations" | "auto_pad"))
            .cloned()
            .collect();
        conv_attrs.push(attr_ints("kernel_shape", &[kh as i64, kw as i64]));
        let one = || vec![attr_ints("kernel_shape", &[1, 1])];
        let nodes = match c.kind {
            Kind::Tucker => {
                let (ri, ro) = (r[0], r[1]);
                rep.action = "tucker2".into();
                rep.energy_kept = vec![
                    energy_share(&c.values_in, ri),
                    energy_share(&c.values_out, ro),
                ];
                let (first, core, last) = tucker2(
                    &c.weight,
                    (o, i, kh * kw),
                    &leading(&c.vectors_out, ro),
                    &leading(&c.vectors_in, ri),
                );
                let (w1, w2, w3) = (
                    format!("{base}_lr_w1"),
                    format!("{base}_lr_w2"),
                    format!("{base}_lr_w3"),
                );
                new_inits.push(tensor_f32(&w1, &[ri, i, 1, 1], &first));
                new_inits.push(tensor_f32(&w2, &[ro, ri, kh, kw], &core));
                new_inits.push(tensor_f32(&w3, &[o, ro, 1, 1], &last));
                let (y1, y2) = (format!("{base}_lr_y1"), format!("{base}_lr_y2"));
                let mut last_in = vec![y2.as_str(), w3.as_str()];
                if let Some(b) = &bias {
                    last_in.push(b);
                }
                vec![
                    node("Conv", &format!("{}/lr_in", c.name), &[&x, &w1], &y1, one()),
                    node(
                        "Conv",
                        &format!("{}/lr_core", c.name),
                        &[&y1, &w2],
                        &y2,
                        conv_attrs,
                    ),
                    node("Conv", &format!("{}/lr_out", c.name), &last_in, &out, one()),
                ]
            }
            Kind::SvdConv => {
                let rr = r[0];
                rep.action = "svd".into();
                rep.energy_kept = vec![energy_share(&c.values_out, rr)];
                let (first, second) = svd_pair(&c.weight, o, i, &leading(&c.vectors_out, rr));
                let (w1, w2) = (format!("{base}_lr_w1"), format!("{base}_lr_w2"));
                new_inits.push(tensor_f32(&w1, &[rr, i, 1, 1], &first));
                new_inits.push(tensor_f32(&w2, &[o, rr, 1, 1], &second));
                let y1 = format!("{base}_lr_y1");
                let mut second_in = vec![y1.as_str(), w2.as_str()];
                if let Some(b) = &bias {
                    second_in.push(b);
                }
                vec![
                    node(
                        "Conv",
                        &format!("{}/lr_in", c.name),
                        &[&x, &w1],
                        &y1,
                        conv_attrs,
                    ),
                    node(
                        "Conv",
                        &format!("{}/lr_out", c.name),
                        &second_in,
                        &out,
                        one(),
                    ),
                ]
            }
            Kind::SvdGemm => {
                let rr = r[0];
                rep.action = "svd".into();
                rep.energy_kept = vec![energy_share(&c.values_out, rr)];
                let (first, second) = svd_pair(&c.weight, o, i, &leading(&c.vectors_out, rr));
                let (w1, w2) = (format!("{base}_lr_b1"), format!("{base}_lr_b2"));
                new_inits.push(tensor_f32(&w1, &[rr, i], &first));
                new_inits.push(tensor_f32(&w2, &[o, rr], &second));
                let y1 = format!("{base}_lr_y1");
                let mut second_in = vec![y1.as_str(), w2.as_str()];
                if let Some(b) = &bias {
                    second_in.push(b);
                }
                let mut attrs2 = vec![attr_int("transB", 1)];
                if let Some(beta) = get_float(n, "beta") {
                    attrs2.push(AttributeProtoExt::float("beta", beta));
                }
                vec![
                    node(
                        "Gemm",
                        &format!("{}/lr_in", c.name),
                        &[&x, &w1],
                        &y1,
                        vec![attr_int("transB", 1)],
                    ),
                    node(
                        "Gemm",
                        &format!("{}/lr_out", c.name),
                        &second_in,
                        &out,
                        attrs2,
                    ),
                ]
            }
        };
        dead_weights.push(n.input[1].clone());
        replacements.insert(c.node_index, nodes);
        layers.push(rep);
    }
    let old_nodes = std::mem::take(&mut graph.node);
    for (i, n) in old_nodes.into_iter().enumerate() {
        match replacements.remove(&i) {
            Some(ns) => graph.node.extend(ns),
            None => graph.node.push(n),
        }
    }
    let used: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(|s| s.as_str()))
        .collect();
    let dead: Vec<String> = dead_weights
        .into_iter()
        .filter(|w| !used.contains(w.as_str()))
        .collect();
    graph
        .initializer
        .retain(|t| !dead.iter().any(|d| d == t.name()));
    graph.initializer.extend(new_inits);
    let macs_saved: i64 = layers
        .iter()
        .map(|l| l.macs_before as i64 - l.macs_after as i64)
        .sum();
    let params_before = summary.parameters;
    let params_saved: i64 = layers
        .iter()
        .map(|l| l.params_before as i64 - l.params_after as i64)
        .sum();
    let report = CompressReport {
        layers,
        macs_before: total_macs,
        macs_after: (total_macs as i64 - macs_saved) as u64,
        params_before,
        params_after: (params_before as i64 - params_saved) as u64,
        data_aware,
    };
    Ok((proto.encode_to_vec(), report))
}

/// A float attribute (kept apart from the int helpers).
struct AttributeProtoExt;
impl AttributeProtoExt {
    fn float(name: &str, v: f32) -> kestrel_onnx::proto::AttributeProto {
        kestrel_onnx::proto::AttributeProto {
            name: Some(name.into()),
            r#type: Some(kestrel_onnx::proto::attribute_proto::AttributeType::Float as i32),
            f: Some(v),
            ..Default::default()
        }
    }
}

/// Per candidate, the second moment `Y Yᵀ` of its output responses over the calibration
/// inputs (None when the output was not observed), from the original model with the candidate
/// outputs exposed as extra graph outputs.
fn responses(
    model: &Model,
    cands: &[Candidate],
    graph: &kestrel_onnx::proto::GraphProto,
    calib: &[Tensor],
) -> Result<Vec<Option<DMatrix<f64>>>> {
    let names: Vec<String> = cands
        .iter()
        .map(|c| graph.node[c.node_index].output[0].clone())
        .collect();
    let probe = model.with_extra_outputs(&names)?;
    let mut session = Session::new(&probe, SessionOptions::default())?;
    let base = model.output_names().len();
    let mut grams: Vec<Option<DMatrix<f64>>> = vec![None; cands.len()];
    for x in calib {
        let outs = session.run(vec![x.clone()])?;
        for (ci, c) in cands.iter().enumerate() {
            let y = &outs[base + ci];
            let o = c.dims.0;
            let v = y.as_f32()?;
            let per = v.len() / o.max(1);
            // conv: [1, o, h, w] → rows are channels; gemm: [m, o] → rows are columns
            let ym = if c.kind == Kind::SvdGemm {
                DMatrix::from_fn(o, per, |r, j| v[j * o + r] as f64)
            } else {
                DMatrix::from_fn(o, per, |r, j| v[r * per + j] as f64)
            };
            let g = &ym * ym.transpose();
            grams[ci] = Some(match grams[ci].take() {
                Some(acc) => acc + g,
                None => g,
            });
        }
    }
    Ok(grams)
}
