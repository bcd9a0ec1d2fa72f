//! `kestrel compress`: low-rank decomposition with a measured report (MACs, parameters,
//! latency before/after on this machine, agreement of the outputs on evaluation inputs).

use crate::EngineArgs;
use anyhow::{bail, Context, Result};
use kestrel::compress::{compress, CompressOptions, Method, RankRule};
use kestrel::video::{open, OpenOptions};
use kestrel::{Model, Preset, Session, Tensor};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct CompressArgs {
    model: PathBuf,
    /// Where to write the compressed ONNX model.
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    method: MethodArg,
    /// Keep this share of each layer's squared singular values (e.g. 0.95).
    #[arg(long, conflicts_with_all = ["speedup", "ranks"])]
    energy: Option<f64>,
    /// Whole-model MAC reduction to reach (e.g. 2 for half the MACs).
    #[arg(long, conflicts_with = "ranks")]
    speedup: Option<f64>,
    /// JSON file: {"node name": [r] or [r_in, r_out]}.
    #[arg(long)]
    ranks: Option<PathBuf>,
    /// Calibration images (folder) or video for data-aware output factors.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Calibration samples to use.
    #[arg(long, default_value_t = 16)]
    calib_count: usize,
    /// Evaluation images (folder) or video: agreement of the compressed model with the original
    /// (default: the bundled photos).
    #[arg(long)]
    eval: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    eval_count: usize,
    /// Write the report as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Latency runs per model.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Auto,
    Tucker2,
    Svd,
}

/// Up to `n` preprocessed inputs from an image folder, an image, or a video (frames spread
/// over the clip).
fn samples(path: &std::path::Path, preset: &Preset, n: usize) -> Result<Vec<Tensor>> {
    if path.is_dir() || kestrel::video::is_image_path(path) {
        let files = kestrel::preprocess::image_files(path)?;
        return files
            .iter()
            .take(n)
            .map(|f| Ok(preset.load_image(f)?))
            .collect();
    }
    let mut src = open(&path.to_string_lossy(), &OpenOptions::default())?;
    let total = src.info().frames.unwrap_or(n as u64).max(1);
    let step = (total / n.max(1) as u64).max(1);
    let mut v = Vec::new();
    while let Some(f) = src.next_frame()? {
        if f.index % step == 0 && v.len() < n {
            v.push(preset.image_to_tensor(&f.image)?);
        }
    }
    Ok(v)
}

fn latency(model: &Model, a: &CompressArgs, x: &Tensor) -> Result<f64> {
    let mut s = Session::new(model, a.engine.session_options())?;
    s.run(vec![x.clone()])?;
    let mut t: Vec<f64> = (0..a.runs.max(1))
        .map(|_| {
            let t0 = Instant::now();
            s.run(vec![x.clone()])
                .map(|_| t0.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<kestrel::Result<_>>()?;
    t.sort_by(|p, q| p.total_cmp(q));
    Ok(t[t.len() / 2])
}

/// Measured time of every original layer before and after (a decomposed layer's time is the
/// sum of its `/lr_*` parts), from the profiler (median per layer).
fn layer_times(
    original: &Model,
    compressed: &Model,
    a: &CompressArgs,
    x: &Tensor,
) -> Result<std::collections::BTreeMap<String, (f64, f64)>> {
    let opts = kestrel::profile::ProfileOptions {
        runs: a.runs.max(3),
        warmup: 1,
        ..Default::default()
    };
    let times = |m: &Model| -> Result<std::collections::BTreeMap<String, f64>> {
        let mut s = Session::new(m, a.engine.session_options())?;
        s.run(vec![x.clone()])?;
        let (peaks, _) = kestrel::hw::peaks(s.threads(), false)?;
        let p = kestrel::profile::profile(&mut s, std::slice::from_ref(x), &peaks, &opts)?;
        let mut out = std::collections::BTreeMap::new();
        for l in p.layers {
            let base = l.name.split("/lr_").next().unwrap_or(&l.name).to_string();
            *out.entry(base).or_insert(0.0) += l.time_ms;
        }
        Ok(out)
    };
    let (b, c) = (times(original)?, times(compressed)?);
    Ok(b.into_iter()
        .map(|(k, v)| {
            let after = c.get(&k).copied().unwrap_or(f64::NAN);
            (k, (v, after))
        })
        .collect())
}

fn top(v: &[f32], k: usize) -> Vec<usize> {
    let mut i: Vec<usize> = (0..v.len()).collect();
    i.sort_by(|&p, &q| v[q].total_cmp(&v[p]));
    i.truncate(k);
    i
}

pub fn run(a: CompressArgs) -> Result<()> {
    let original =
        Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let preset = Preset::for_model(&original);
    let rule = match (a.energy, a.speedup, &a.ranks) {
        (Some(e), _, _) => RankRule::Energy(e.clamp(0.0, 1.0)),
        (_, Some(s), _) => {
            if s < 1.0 {
                bail!("--speedup must be >= 1");
            }
            RankRule::Speedup(s)
        }
        (_, _, Some(f)) => RankRule::Ranks(
            serde_json::from_str(
                &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            )
            .with_context(|| format!("{}: expected {{\"node\": [ranks]}}", f.display()))?,
        ),
        _ => RankRule::Energy(0.9),
    };
    let calib = match &a.calib {
        Some(p) => samples(p, &preset, a.calib_count)?,
        None => vec![],
    };
    let opts = CompressOptions {
        method: match a.method {
            MethodArg::Auto => Method::Auto,
            MethodArg::Tucker2 => Method::Tucker2,
            MethodArg::Svd => Method::Svd,
        },
        rule,
        calib,
        ..Default::default()
    };
    let t0 = Instant::now();
    let (bytes, report) = compress(&a.model, &opts)?;
    let compress_s = t0.elapsed().as_secs_f64();
    std::fs::write(&a.output, &bytes).with_context(|| format!("writing {}", a.output.display()))?;
    let compressed = Model::load(&a.output)?;

    // measured: latency and agreement
    let eval_path = a.eval.clone().unwrap_or_else(kestrel::default_photos_path);
    let eval = samples(&eval_path, &preset, a.eval_count)?;
    if eval.is_empty() {
        bail!("no evaluation inputs in {}", eval_path.display());
    }
    let lat_before = latency(&original, &a, &eval[0])?;
    let lat_after = latency(&compressed, &a, &eval[0])?;
    let per_layer = layer_times(&original, &compressed, &a, &eval[0])?;
    let mut s0 = Session::new(&original, a.engine.session_options())?;
    let mut s1 = Session::new(&compressed, a.engine.session_options())?;
    let (mut top1, mut top5, mut n) = (0usize, 0usize, 0usize);
    let (mut rel, mut cos_min) = (0f64, 1f64);
    for x in &eval {
        let y0 = s0.run(vec![x.clone()])?;
        let y1 = s1.run(vec![x.clone()])?;
        let (p, q) = (y0[0].as_f32()?, y1[0].as_f32()?);
        let classifier = y0[0].shape().iter().filter(|&&d| d > 1).count() == 1;
        if classifier {
            let t0 = top(p, 5);
            let t1 = top(q, 1)[0];
            top1 += (t0[0] == t1) as usize;
            top5 += t0.contains(&t1) as usize;
        }
        let dot: f64 = p.iter().zip(q).map(|(x, y)| *x as f64 * *y as f64).sum();
        let np: f64 = p.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nq: f64 = q.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let diff: f64 = p
            .iter()
            .zip(q)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        rel = rel.max(diff / np.max(1e-12));
        cos_min = cos_min.min(dot / (np * nq).max(1e-12));
        n += 1;
    }
    let classifier = top1 + top5 > 0
        || original.output_names().len() == 1 && {
            let y = s0.run(vec![eval[0].clone()])?;
            y[0].shape().iter().filter(|&&d| d > 1).count() == 1
        };

    println!(
        "{:<44} {:<10} {:>12} {:>10} {:>10} {:>8}",
        "layer", "action", "ranks", "MMACs", "after", "energy"
    );
    for l in &report.layers {
        if l.macs_before == 0 {
            continue;
        }
        let (tb, ta) = per_layer
            .get(&l.node)
            .copied()
            .unwrap_or((f64::NAN, f64::NAN));
        println!(
            "{:<44} {:<10} {:>12} {:>10.1} {:>10.1} {:>8} {:>9.3} {:>9.3}",
            l.node.chars().take(44).collect::<String>(),
            l.action.chars().take(10).collect::<String>(),
            format!("{:?}", l.ranks),
            l.macs_before as f64 / 1e6,
            l.macs_after as f64 / 1e6,
            l.energy_kept
                .iter()
                .map(|e| format!("{e:.3}"))
                .collect::<Vec<_>>()
                .join("/"),
            tb,
            ta
        );
    }
    let skipped = report
        .layers
        .iter()
        .filter(|l| l.action.starts_with("kept"))
        .count();
    println!(
        "model MACs {:.2} G -> {:.2} G ({:.2}x), parameters {:.2} M -> {:.2} M; {} layers decomposed, {skipped} left alone{}",
        report.macs_before as f64 / 1e9,
        report.macs_after as f64 / 1e9,
        report.macs_before as f64 / report.macs_after.max(1) as f64,
        report.params_before as f64 / 1e6,
        report.params_after as f64 / 1e6,
        report.layers.len() - skipped,
        if report.data_aware { " (data-aware output factors)" } else { "" }
    );
    println!(
        "measured latency (median of {} runs, this machine): {lat_before:.2} ms -> {lat_after:.2} ms ({:.2}x)",
        a.runs,
        lat_before / lat_after.max(1e-9)
    );
    if classifier {
        println!(
            "agreement with the original over {n} inputs: top-1 {:.1}%, compressed top-1 within original top-5 {:.1}%",
            100.0 * top1 as f64 / n as f64,
            100.0 * top5 as f64 / n as f64
        );
    }
    println!(
        "output relative error (max over inputs) {rel:.4}, cosine similarity (min) {cos_min:.5}"
    );
    if let Some(p) = &a.report {
        let v = serde_json::json!({
            "model": original.name(), "output": a.output, "compress_seconds": compress_s,
            "report": report, "layer_ms_before_after": per_layer, "latency_ms_before": lat_before, "latency_ms_after": lat_after,
            "eval_inputs": n, "top1_agreement": classifier.then(|| top1 as f64 / n as f64),
            "top5_agreement": classifier.then(|| top5 as f64 / n as f64),
            "max_relative_error": rel, "min_cosine_similarity": cos_min,
        });
        std::fs::write(p, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}
