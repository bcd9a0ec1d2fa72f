//! `kestrel cache-eval`: measures convolutional caching on a clip against dense inference, frame
//! by frame. Every frame is run densely and through a caching [`Stream`] back to back in one
//! process (so both see the same machine load), and the outputs are compared: top-1 agreement
//! (classifiers), matched detections with their IoU (detectors with a built-in decoder), and the
//! max-abs / max-rel output error (all models). `--loop` plays the clip forwards and backwards
//! until `--max-frames` (long-run drift checks); `--chart` plots per-frame error and latency.

use crate::EngineArgs;
use anyhow::{bail, Result};
use kestrel::detect::ssd::SsdConfig;
use kestrel::detect::Detection;
use kestrel::stream::{ChangeMetric, Stream, StreamOptions};
use kestrel::video::{open, OpenOptions};
use kestrel::{Model, Preset, Session, Tensor};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct CacheEvalArgs {
    model: PathBuf,
    /// Clip (video file or image folder).
    #[arg(long)]
    video: PathBuf,
    /// Frames to run.
    #[arg(long, default_value_t = 150)]
    max_frames: usize,
    /// Play the clip forwards then backwards, repeatedly, until --max-frames.
    #[arg(long = "loop")]
    looped: bool,
    /// Input threshold in 8-bit levels (as `kestrel run --cache-threshold`).
    #[arg(long, default_value_t = 2.0)]
    threshold: f32,
    /// Per-layer threshold in levels of each layer's range (default: --threshold).
    #[arg(long)]
    layer_threshold: Option<f32>,
    /// Thresholds picked by `kestrel tune-cache --save FILE` (replaces --threshold and
    /// --layer-threshold).
    #[arg(long)]
    cache_tuning: Option<PathBuf>,
    /// Block edge in model-input pixels.
    #[arg(long, default_value_t = 8)]
    block: usize,
    /// Model input size WxH instead of the preset's (fully convolutional models, e.g. P-Net on
    /// whole frames).
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    /// Change metric of a block: max-abs (bounded per value), mean-abs, psnr, histogram.
    #[arg(long, default_value = "max-abs", value_parser = parse_metric)]
    metric: ChangeMetric,
    /// Predicted computed share above which a frame runs densely (1 = never).
    #[arg(long)]
    dense_above: Option<f64>,
    /// Share of a convolution's outputs above which it is computed densely.
    #[arg(long)]
    dense_fraction: Option<f64>,
    /// Output rows per band of the rectangles recomputed in a layer.
    #[arg(long)]
    band_rows: Option<usize>,
    /// Dirty column runs closer than this are merged into one rectangle.
    #[arg(long)]
    merge_gap: Option<usize>,
    /// Re-threshold densely computed layers too.
    #[arg(long)]
    prune_dense: bool,
    /// One JSON object per frame.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Per-frame error and latency chart (.svg or .png).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Detections of both runs matched greedily by IoU (>= 0.5, same class).
#[derive(Default)]
struct Matching {
    dense: usize,
    cached: usize,
    matched: usize,
    min_iou: f32,
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

fn match_detections(dense: &[Detection], cached: &[Detection]) -> Matching {
    let mut used = vec![false; cached.len()];
    let mut m = Matching {
        dense: dense.len(),
        cached: cached.len(),
        min_iou: 1.0,
        ..Default::default()
    };
    for d in dense {
        let best = cached
            .iter()
            .enumerate()
            .filter(|(i, c)| !used[*i] && c.class == d.class)
            .map(|(i, c)| (i, iou(&d.bbox, &c.bbox)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, v)) = best.filter(|b| b.1 >= 0.5) {
            used[i] = true;
            m.matched += 1;
            m.min_iou = m.min_iou.min(v);
        }
    }
    m
}

/// Parses a change metric name (`max-abs`, `mean-abs`, `psnr`, `histogram`).
pub fn parse_metric(s: &str) -> Result<ChangeMetric, String> {
    Ok(match s {
        "max-abs" => ChangeMetric::MaxAbs,
        "mean-abs" => ChangeMetric::MeanAbs,
        "psnr" => ChangeMetric::Psnr,
        "histogram" => ChangeMetric::Histogram,
        _ => {
            return Err(format!(
                "unknown change metric '{s}' (max-abs, mean-abs, psnr, histogram)"
            ))
        }
    })
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WxH, got '{s}'"))?;
    let p = |v: &str| v.parse::<u32>().map_err(|e| format!("'{s}': {e}"));
    Ok((p(w)?, p(h)?))
}

pub fn run(a: CacheEvalArgs) -> Result<()> {
    let model = Model::load(&a.model)?;
    let mut preset = Preset::for_model(&model);
    if let Some((w, h)) = a.size {
        preset.width = w;
        preset.height = h;
    }
    let mut src = open(&a.video.to_string_lossy(), &OpenOptions::default())?;
    let (mut clip, mut frame_size) = (Vec::new(), (0, 0));
    while let Some(f) = src.next_frame()? {
        frame_size = f.image.dimensions();
        clip.push(preset.image_to_tensor(&f.image)?);
        if clip.len() >= a.max_frames {
            break;
        }
    }
    if clip.len() < 2 {
        bail!("the clip needs at least 2 frames");
    }
    // frame order: the clip, or the clip played forwards and backwards (ping-pong)
    let order: Vec<usize> = if a.looped {
        let period = 2 * (clip.len() - 1);
        (0..a.max_frames)
            .map(|i| {
                let k = i % period;
                if k < clip.len() {
                    k
                } else {
                    period - k
                }
            })
            .collect()
    } else {
        (0..clip.len()).collect()
    };
    let ssd = SsdConfig::builtin(model.name());
    let names = model.output_names();
    let map = preset.frame_map(frame_size.0, frame_size.1);
    let detect = |outs: &[Tensor]| -> Result<Option<Vec<Detection>>> {
        Ok(match &ssd {
            Some(cfg) => Some(cfg.decode(&names, outs, &map)?),
            None => None,
        })
    };

    let mut opts = StreamOptions {
        block: a.block.max(1),
        ..Default::default()
    };
    opts.threshold_from_levels(a.threshold.max(0.0), &preset);
    opts.metric = a.metric;
    opts.cache.layer_levels = a.layer_threshold.unwrap_or(a.threshold).max(0.0);
    let tuning = match &a.cache_tuning {
        Some(path) => Some(crate::tune_cache::CacheTuning::load(path)?),
        None => None,
    };
    if let Some(t) = &tuning {
        t.apply(&mut opts, &preset);
    }
    opts.cache.prune_dense = a.prune_dense;
    if let Some(f) = a.dense_above {
        opts.dense_above = f;
    }
    if let Some(f) = a.dense_fraction {
        opts.cache.dense_fraction = f;
    }
    if let Some(b) = a.band_rows {
        opts.cache.band_rows = b.max(1);
    }
    if let Some(m) = a.merge_gap {
        opts.cache.merge_gap = m;
    }
    let mut dense = Session::new(&model, a.engine.session_options())?;
    let mut stream = Stream::new(&model, a.engine.session_options(), opts)?;
    // warm both (plan preparation and first-touch allocation are not per-frame costs)
    dense.run(vec![clip[0].clone()])?;

    let mut jsonl = a
        .jsonl
        .as_ref()
        .map(std::fs::File::create)
        .transpose()?
        .map(std::io::BufWriter::new);
    let (mut dense_ms, mut cached_ms, mut computed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut agree, mut classified) = (0usize, false);
    let (mut det_dense, mut det_cached, mut det_matched, mut min_iou) = (0, 0, 0, 1f32);
    let (mut worst_abs, mut worst_rel) = (0f64, 0f64);
    let mut modes = std::collections::BTreeMap::<&str, usize>::new();
    let mut points = Vec::new();
    for (i, &k) in order.iter().enumerate() {
        let x = &clip[k];
        let mut run_dense = || -> Result<(Vec<Tensor>, f64)> {
            let t0 = Instant::now();
            let o = dense.run(vec![x.clone()])?;
            Ok((o, t0.elapsed().as_secs_f64() * 1e3))
        };
        // alternate which run goes first, so neither gains from the other's cache warmth
        let (want, t_dense, got, st, t_cached) = if i % 2 == 0 {
            let (want, t_dense) = run_dense()?;
            let t0 = Instant::now();
            let (got, st) = stream.run_frame(x.clone())?;
            (want, t_dense, got, st, t0.elapsed().as_secs_f64() * 1e3)
        } else {
            let t0 = Instant::now();
            let (got, st) = stream.run_frame(x.clone())?;
            let t_cached = t0.elapsed().as_secs_f64() * 1e3;
            let (want, t_dense) = run_dense()?;
            (want, t_dense, got, st, t_cached)
        };
        let mut err = kestrel::compare::TensorError::default();
        for (g, w) in got.iter().zip(&want) {
            err = err.max(kestrel::compare::tensor_error(g, w));
        }
        worst_abs = worst_abs.max(err.max_abs);
        worst_rel = worst_rel.max(err.max_rel);
        let mut frame = serde_json::json!({
            "frame": i, "clip_frame": k, "dense_ms": t_dense, "cached_ms": t_cached,
            "max_abs_error": err.max_abs, "max_rel_error": err.max_rel, "cache": st,
        });
        if kestrel::compare::is_classifier(&want) {
            classified = true;
            let top = |t: &Tensor| kestrel::compare::top_k_indices(t, 1).first().copied();
            let same = top(&got[0]) == top(&want[0]);
            agree += same as usize;
            frame["top1_agrees"] = same.into();
        }
        if let (Some(dw), Some(dg)) = (detect(&want)?, detect(&got)?) {
            let m = match_detections(&dw, &dg);
            det_dense += m.dense;
            det_cached += m.cached;
            det_matched += m.matched;
            if m.matched > 0 {
                min_iou = min_iou.min(m.min_iou);
            }
            frame["detections"] = serde_json::json!({
                "dense": m.dense, "cached": m.cached, "matched": m.matched,
            });
        }
        // the first frame fills the cache: it is not a steady-state frame
        if i > 0 {
            dense_ms.push(t_dense);
            cached_ms.push(t_cached);
            computed.push(st.computed_fraction);
            *modes.entry(st.mode).or_default() += 1;
        }
        points.push(kestrel::stream_chart::ErrorPoint {
            index: i as u64,
            max_rel_error: err.max_rel,
            dense_ms: t_dense,
            cached_ms: t_cached,
        });
        if let Some(w) = jsonl.as_mut() {
            writeln!(w, "{frame}")?;
        }
    }
    let n = order.len();
    let summary = serde_json::json!({
        "model": model.name(), "clip": a.video, "frames": n,
        "threshold_levels": tuning.as_ref().map_or(a.threshold, |t| t.threshold_levels),
        "layer_threshold_levels": tuning
            .as_ref()
            .map_or(a.layer_threshold.unwrap_or(a.threshold), |t| t.layer_levels),
        "layer_threshold_levels_by_node": tuning.as_ref().map(|t| &t.layer_levels_by_node),
        "block": a.block, "metric": a.metric,
        "dense_ms": {"mean": mean(&dense_ms), "p50": percentile(&dense_ms, 0.5), "p90": percentile(&dense_ms, 0.9)},
        "cached_ms": {"mean": mean(&cached_ms), "p50": percentile(&cached_ms, 0.5), "p90": percentile(&cached_ms, 0.9)},
        "latency_ratio_mean": mean(&cached_ms) / mean(&dense_ms).max(1e-9),
        "mean_computed_fraction": mean(&computed),
        "frame_modes": modes,
        "top1_agreement": classified.then(|| agree as f64 / n as f64),
        "detections": (ssd.is_some()).then(|| serde_json::json!({
            "dense": det_dense, "cached": det_cached, "matched": det_matched,
            "recall": det_matched as f64 / det_dense.max(1) as f64,
            "min_iou": min_iou,
        })),
        "max_abs_error": worst_abs, "max_rel_error": worst_rel,
    });
    if let Some(path) = &a.chart {
        kestrel::stream_chart::write_error_chart(
            &points,
            &format!(
                "{} on {}: caching at {} levels vs dense",
                model.name(),
                a.video.file_name().unwrap_or_default().to_string_lossy(),
                a.threshold
            ),
            path,
        )?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let thresholds = match &a.cache_tuning {
        Some(p) => format!("thresholds from {}", p.display()),
        None => format!(
            "threshold {} levels (layers {})",
            a.threshold,
            a.layer_threshold.unwrap_or(a.threshold)
        ),
    };
    println!(
        "{} on {} ({n} frames), {thresholds}, {}-px blocks, {:?}",
        model.name(),
        a.video.display(),
        a.block,
        a.metric
    );
    println!(
        "  latency mean / p90: dense {:.2} / {:.2} ms, cached {:.2} / {:.2} ms (ratio of means {:.3})",
        mean(&dense_ms),
        percentile(&dense_ms, 0.9),
        mean(&cached_ms),
        percentile(&cached_ms, 0.9),
        summary["latency_ratio_mean"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  MACs computed {:.1}%, frames by mode {:?}",
        100.0 * mean(&computed),
        modes
    );
    if classified {
        println!(
            "  top-1 agreement with dense: {:.2}%",
            100.0 * agree as f64 / n as f64
        );
    }
    if ssd.is_some() {
        println!(
            "  detections: {det_matched} of {det_dense} dense matched (IoU >= 0.5, min {min_iou:.3}); cached found {det_cached}"
        );
    }
    println!("  worst output error: max-abs {worst_abs:.3e}, max-rel {worst_rel:.3e}");
    Ok(())
}
