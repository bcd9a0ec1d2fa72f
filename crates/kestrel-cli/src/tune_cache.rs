//! `kestrel tune-cache`: picks the caching threshold on a calibration clip. For each candidate
//! threshold it streams the clip with caching on and compares every frame with dense inference:
//! top-1 agreement (classifiers) or output relative error (other models), and the share of MACs
//! computed. The recommendation is the largest threshold that keeps the target agreement.

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
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
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
        let mut stream = Stream::new(&model, a.engine.session_options(), opts)?;
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
        let agreement = if classifier {
            agree as f64 / frames.len() as f64
        } else {
            1.0 - worst
        };
        rows.push(serde_json::json!({
            "threshold_levels": levels, "agreement": agreement, "max_rel_error": worst,
            "mean_computed_fraction": computed / (frames.len() - 1) as f64,
            "ms_per_frame": ms, "dense_ms_per_frame": dense_ms,
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
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": model.name(), "clip": a.video, "frames": frames.len(),
                "metric": if classifier { "top-1 agreement" } else { "1 - max relative error" },
                "target": a.target_agreement, "candidates": rows, "recommended": best,
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
    Ok(())
}
