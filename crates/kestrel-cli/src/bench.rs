//! `kestrel bench`: latency of a warm session.

use crate::inputs::{input_shapes, npz_inputs, random_inputs};
use crate::EngineArgs;
use anyhow::Result;
use kestrel::{Model, Session};
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
    let model = Model::load(&a.model)?;
    let inputs = match &a.input_npz {
        Some(p) => npz_inputs(&model, p)?,
        None => random_inputs(&model, &input_shapes(&model, &a.engine.shapes)?, 1)?,
    };
    let mut session = Session::new(&model, a.engine.session_options())?;
    crate::announce(&session);
    let t0 = Instant::now();
    session.run(inputs.clone())?;
    let first_ms = t0.elapsed().as_secs_f64() * 1e3;
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
                "times_ms": times_in_order,
            })
        );
    } else {
        println!(
            "{}  {:?}  threads {}  simd {}  runs {}\nmedian {:.3} ms   p90 {:.3} ms   min {:.3} ms   (first run {:.1} ms)",
            model.name(),
            shapes,
            session.threads(),
            kestrel_simd_name(),
            times.len(),
            median,
            p90,
            min,
            first_ms
        );
    }
    Ok(())
}

fn kestrel_simd_name() -> &'static str {
    kestrel::simd_path_name()
}
