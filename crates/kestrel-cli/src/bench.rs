//! `kestrel bench`: latency of a warm session.

use crate::inputs::{input_shapes, npz_inputs, random_inputs};
use crate::EngineArgs;
use anyhow::Result;
use kestrel::Session;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    model: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Inputs from an npz file instead of random data.
    #[arg(long)]
    input_npz: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let model = a.engine.load_model(&a.model)?;
    let inputs = match &a.input_npz {
        Some(p) => npz_inputs(&model, p)?,
        None => random_inputs(&model, &input_shapes(&model, &a.engine.shapes)?, 1)?,
    };
    let mut session = Session::new(&model, a.engine.session_options())?;
    crate::announce(&session);
    let t0 = Instant::now();
    session.run(inputs.clone())?;
    let first_ms = t0.elapsed().as_secs_f64() * 1e3;
    kestrel::release_free_memory();
    for _ in 0..a.warmup {
        session.run(inputs.clone())?;
    }
    let mut times = Vec::with_capacity(a.runs);
    for _ in 0..a.runs.max(1) {
        let inp = inputs.clone();
        let t = Instant::now();
        session.run(inp)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let times_in_order = times.clone();
    times.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let pct = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let (median, p90, min) = (pct(0.5), pct(0.9), times[0]);
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    let rss = process_rss_mb();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "model": model.name(),
                "input_shapes": shapes,
                "threads": session.threads(),
                "backend": if session.on_gpu() { "gpu" } else { "cpu" },
                "precision": format!("{:?}", a.engine.precision).to_lowercase(),
                "device": session.notice(),
                "conv_algo": format!("{:?}", a.engine.conv_algo).to_lowercase(),
                "simd": kestrel_simd_name(),
                "runs": times.len(),
                "warmup": a.warmup,
                "first_run_ms": first_ms,
                "median_ms": median,
                "p90_ms": p90,
                "min_ms": min,
                "activation_pool_bytes": session.pooled_bytes(),
                "rss_mb": rss.map(|r| r.0),
                "peak_rss_mb": rss.map(|r| r.1),
                "times_ms": times_in_order,
            })
        );
    } else {
        println!(
            "{}  {:?}  threads {}  simd {}  runs {}\nmedian {:.3} ms   p90 {:.3} ms   min {:.3} ms   (first run {:.1} ms){}",
            model.name(),
            shapes,
            session.threads(),
            kestrel_simd_name(),
            times.len(),
            median,
            p90,
            min,
            first_ms,
            rss.map_or(String::new(), |(now, peak)| format!(
                "\nmemory: {now:.0} MB resident after the runs, {peak:.0} MB peak (load included)"
            ))
        );
    }
    Ok(())
}

/// Resident set size now and at its peak, in MB (Linux `/proc/self/status`; None elsewhere).
fn process_rss_mb() -> Option<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn kestrel_simd_name() -> &'static str {
    kestrel::simd_path_name()
}
