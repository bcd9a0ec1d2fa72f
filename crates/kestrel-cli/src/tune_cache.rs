//! `kestrel tune-cache`: picks the caching thresholds on a calibration clip. For each candidate
//! it streams the clip with caching on and compares every frame with dense inference: top-1
//! agreement (classifiers) or output relative error (other models), and the share of MACs
//! computed.
//!
//! Stage 1 picks the input threshold: the largest that keeps the target agreement (layer
//! thresholds equal to it, as `kestrel run` sets them by default). Stage 2 picks per-layer
//! thresholds: the convolutions are split into up to four groups in graph order; from the
//! deepest group to the first, each group's threshold is raised through 2, 4, 8, 16, 32 levels
//! while the agreement holds and the computed share of MACs falls (greedy coordinate search:
//! one pass over the clip per candidate). `--save FILE` writes the result for
//! `kestrel run --cache-tuning FILE` and `kestrel cache-eval --cache-tuning FILE`.

use crate::EngineArgs;
use anyhow::{bail, Result};
use kestrel::stream::{Stream, StreamOptions};
use kestrel::video::{open, OpenOptions};
use kestrel::{Model, Preset, Session, Tensor};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct TuneCacheArgs {
    model: PathBuf,
    /// Calibration clip (video file or image folder).
    #[arg(long)]
    video: PathBuf,
    /// Required top-1 agreement with dense inference (classifiers), or 1 - max relative output
    /// error (other models).
    #[arg(long, default_value_t = 0.99)]
    target_agreement: f64,
    /// Frames of the clip to use.
    #[arg(long, default_value_t = 150)]
    max_frames: usize,
    /// Block edge in model-input pixels.
    #[arg(long, default_value_t = 8)]
    block: usize,
    /// Skip stage 2 (per-layer thresholds).
    #[arg(long)]
    no_per_layer: bool,
    /// Write the recommended thresholds (JSON) for `--cache-tuning`.
    #[arg(long)]
    save: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The thresholds `tune-cache --save` writes and `--cache-tuning` reads.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default)]
pub struct CacheTuning {
    /// Input threshold in 8-bit levels.
    pub threshold_levels: f32,
    /// Layer threshold for nodes not listed below (levels).
    pub layer_levels: f32,
    /// Per-node layer thresholds (levels), by node name.
    pub layer_levels_by_node: std::collections::HashMap<String, f32>,
}

impl CacheTuning {
    /// Reads a file written by `tune-cache --save`.
    pub fn load(path: &std::path::Path) -> Result<CacheTuning> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a tune-cache result: {e}", path.display()))
    }

    /// Applies the thresholds to stream options.
    pub fn apply(&self, opts: &mut StreamOptions, preset: &kestrel::Preset) {
        opts.threshold_from_levels(self.threshold_levels.max(0.0), preset);
        opts.cache.layer_levels = self.layer_levels.max(0.0);
        opts.cache.layer_levels_by_node = self.layer_levels_by_node.clone();
    }
}

/// One candidate's result on the clip.
struct Trial {
    agreement: f64,
    worst: f64,
    computed: f64,
    ms: f64,
}

/// Streams the clip with `opts` and scores it against the dense reference.
fn trial(
    model: &Model,
    a: &TuneCacheArgs,
    opts: StreamOptions,
    frames: &[Tensor],
    reference: &[Vec<Tensor>],
    classifier: bool,
) -> Result<Trial> {
    let mut stream = Stream::new(model, a.engine.session_options(), opts)?;
    let (mut agree, mut worst, mut computed) = (0usize, 0f64, 0f64);
    let t0 = Instant::now();
    for (i, x) in frames.iter().enumerate() {
        let (outs, st) = stream.run_frame(x.clone())?;
        if i > 0 {
            computed += st.computed_fraction;
        }
        agree += (argmax(&outs[0]) == argmax(&reference[i][0])) as usize;
        for (o, r) in outs.iter().zip(&reference[i]) {
            worst = worst.max(rel_err(o, r));
        }
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3 / frames.len() as f64;
    Ok(Trial {
        agreement: if classifier {
            agree as f64 / frames.len() as f64
        } else {
            1.0 - worst
        },
        worst,
        computed: computed / (frames.len() - 1) as f64,
        ms,
    })
}

fn argmax(t: &Tensor) -> usize {
    kestrel::compare::top_k_indices(t, 1)
        .first()
        .copied()
        .unwrap_or(0)
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    kestrel::compare::tensor_error(a, b).max_rel
}

pub fn run(a: TuneCacheArgs) -> Result<()> {
    let model = Model::load(&a.model)?;
    let preset = Preset::for_model(&model);
    let mut src = open(&a.video.to_string_lossy(), &OpenOptions::default())?;
    let mut frames = Vec::new();
    while let Some(f) = src.next_frame()? {
        frames.push(preset.image_to_tensor(&f.image)?);
        if frames.len() >= a.max_frames {
            break;
        }
    }
    if frames.len() < 2 {
        bail!("the calibration clip needs at least 2 frames");
    }
    let mut dense = Session::new(&model, a.engine.session_options())?;
    let t0 = Instant::now();
    let reference: Vec<Vec<Tensor>> = frames
        .iter()
        .map(|x| dense.run(vec![x.clone()]))
        .collect::<kestrel::Result<_>>()?;
    let dense_ms = t0.elapsed().as_secs_f64() * 1e3 / frames.len() as f64;
    let classifier = kestrel::compare::is_classifier(&reference[0]);
    let mut rows = Vec::new();
    for levels in [0.0f32, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0] {
        let mut opts = StreamOptions {
            block: a.block.max(1),
            ..Default::default()
        };
        opts.threshold_from_levels(levels, &preset);
        opts.cache.layer_levels = levels;
        let t = trial(&model, &a, opts, &frames, &reference, classifier)?;
        rows.push(serde_json::json!({
            "threshold_levels": levels, "agreement": t.agreement, "max_rel_error": t.worst,
            "mean_computed_fraction": t.computed,
            "ms_per_frame": t.ms, "dense_ms_per_frame": dense_ms,
        }));
    }
    let best = rows
        .iter()
        .filter(|r| r["agreement"].as_f64().unwrap_or(0.0) >= a.target_agreement)
        .max_by(|x, y| {
            x["threshold_levels"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&y["threshold_levels"].as_f64().unwrap_or(0.0))
        })
        .cloned();
    // stage 2: per-layer thresholds, from the chosen input threshold
    let mut tuned = best.as_ref().map(|b| {
        let levels = b["threshold_levels"].as_f64().unwrap_or(0.0) as f32;
        CacheTuning {
            threshold_levels: levels,
            layer_levels: levels,
            layer_levels_by_node: Default::default(),
        }
    });
    let mut stage2 = Vec::new();
    if let (Some(t), false) = (tuned.as_mut(), a.no_per_layer) {
        let convs: Vec<String> = model
            .graph()
            .nodes
            .iter()
            .filter(|n| n.op.name() == "Conv")
            .map(|n| n.name.clone())
            .collect();
        let groups = convs.len().clamp(1, 4);
        let per = convs.len().div_ceil(groups).max(1);
        let base_computed = best
            .as_ref()
            .and_then(|b| b["mean_computed_fraction"].as_f64())
            .unwrap_or(1.0);
        let mut current = base_computed;
        let chunks: Vec<&[String]> = convs.chunks(per).collect();
        for (gi, group) in chunks.iter().enumerate().rev() {
            for cand in [2.0f32, 4.0, 8.0, 16.0, 32.0] {
                if cand <= t.layer_levels {
                    continue;
                }
                let mut try_t = t.clone();
                for name in group.iter() {
                    try_t.layer_levels_by_node.insert(name.clone(), cand);
                }
                let mut opts = StreamOptions {
                    block: a.block.max(1),
                    ..Default::default()
                };
                try_t.apply(&mut opts, &preset);
                let r = trial(&model, &a, opts, &frames, &reference, classifier)?;
                let keep = r.agreement >= a.target_agreement && r.computed < current - 0.002;
                stage2.push(serde_json::json!({
                    "group": gi, "first_node": group.first(), "nodes": group.len(),
                    "levels": cand, "agreement": r.agreement, "max_rel_error": r.worst,
                    "mean_computed_fraction": r.computed, "ms_per_frame": r.ms, "kept": keep,
                }));
                if !keep {
                    break;
                }
                current = r.computed;
                *t = try_t;
            }
        }
    }
    if let (Some(path), Some(t)) = (&a.save, &tuned) {
        std::fs::write(path, serde_json::to_string_pretty(t)?)?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": model.name(), "clip": a.video, "frames": frames.len(),
                "metric": if classifier { "top-1 agreement" } else { "1 - max relative error" },
                "target": a.target_agreement, "candidates": rows, "recommended": best,
                "per_layer_trials": stage2, "tuned": tuned,
            }))?
        );
        return Ok(());
    }
    println!(
        "{} on {} ({} frames), dense {dense_ms:.1} ms/frame; metric: {}",
        model.name(),
        a.video.display(),
        frames.len(),
        if classifier {
            "top-1 agreement with dense"
        } else {
            "1 - max relative error"
        }
    );
    println!(
        "{:>10} {:>10} {:>12} {:>12} {:>10}",
        "levels", "agreement", "max rel err", "MACs comp.", "ms/frame"
    );
    for r in &rows {
        println!(
            "{:>10} {:>9.1}% {:>12.2e} {:>11.1}% {:>10.1}",
            r["threshold_levels"].as_f64().unwrap_or(0.0),
            100.0 * r["agreement"].as_f64().unwrap_or(0.0),
            r["max_rel_error"].as_f64().unwrap_or(0.0),
            100.0 * r["mean_computed_fraction"].as_f64().unwrap_or(0.0),
            r["ms_per_frame"].as_f64().unwrap_or(0.0)
        );
    }
    match best {
        Some(b) => println!(
            "recommended: --cache on --cache-threshold {} (agreement {:.1}%, {:.1}% of MACs computed)",
            b["threshold_levels"],
            100.0 * b["agreement"].as_f64().unwrap_or(0.0),
            100.0 * b["mean_computed_fraction"].as_f64().unwrap_or(0.0)
        ),
        None => println!("no threshold reaches the target agreement {:.3}", a.target_agreement),
    }
    if !stage2.is_empty() {
        println!("per-layer thresholds (convolution groups, deepest first):");
        for r in &stage2 {
            println!(
                "  group {} ({} convs from {}): {:>4} levels  agreement {:>5.1}%  MACs {:>5.1}%  {}",
                r["group"],
                r["nodes"],
                r["first_node"].as_str().unwrap_or("?"),
                r["levels"],
                100.0 * r["agreement"].as_f64().unwrap_or(0.0),
                100.0 * r["mean_computed_fraction"].as_f64().unwrap_or(0.0),
                if r["kept"].as_bool().unwrap_or(false) { "kept" } else { "rejected" }
            );
        }
    }
    if let Some(t) = &tuned {
        let raised = t.layer_levels_by_node.len();
        println!(
            "tuned: input {} levels, {raised} convolutions with raised layer thresholds{}",
            t.threshold_levels,
            a.save
                .as_ref()
                .map(|p| format!(" (saved to {}; use --cache-tuning)", p.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}
