//! `kestrel profile` and `kestrel hwbench`.

use crate::inputs::{input_shapes, npz_inputs, random_inputs};
use crate::EngineArgs;
use anyhow::{Context, Result};
use kestrel::energy::EnergyModel;
use kestrel::profile::{profile, Profile, ProfileOptions};
use kestrel::{Preset, Session};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ProfileArgs {
    model: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    /// An image to run on (preprocessed with the model's preset); default random input.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Raw input tensors keyed by input name.
    #[arg(long)]
    input_npz: Option<PathBuf>,
    /// Measured runs (the per-layer time is the median).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Write the profile as JSON to this file (`-` for stdout, which then prints no table).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the chart (per-layer bars + roofline) to FILE.svg or FILE.png.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Energy per MAC in pJ (with --energy-dram-pj-per-byte; default: Horowitz 45 nm constants).
    #[arg(long, requires = "energy_dram_pj_per_byte")]
    energy_mac_pj: Option<f64>,
    #[arg(long, requires = "energy_mac_pj")]
    energy_dram_pj_per_byte: Option<f64>,
    /// Re-measure the machine peaks instead of using the cached ones.
    #[arg(long)]
    remeasure_peaks: bool,
}

#[derive(clap::Args)]
pub struct HwbenchArgs {
    /// Threads for the all-core figures (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Measure even when cached figures exist.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

fn threads_or_all(t: usize) -> usize {
    if t == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        t
    }
}

pub fn hwbench(a: HwbenchArgs) -> Result<()> {
    let (h, cached) = kestrel::hw::peaks(threads_or_all(a.threads), a.force)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&h)?);
    } else {
        println!("cpu        {}", h.cpu);
        println!("simd       {}", h.simd);
        println!(
            "FMA peak   {:.1} GFLOP/s (1 thread), {:.1} GFLOP/s ({} threads)",
            h.fma_gflops_1t, h.fma_gflops, h.threads
        );
        println!(
            "bandwidth  {:.1} GB/s (1 thread), {:.1} GB/s ({} threads), streaming triad",
            h.triad_gbps_1t, h.triad_gbps, h.threads
        );
        println!("ridge      {:.1} flop/byte", h.ridge());
        println!(
            "{}",
            if cached {
                "(cached; --force to re-measure)"
            } else {
                "(measured now and cached)"
            }
        );
    }
    Ok(())
}

pub fn run_profile(a: ProfileArgs) -> Result<()> {
    let model = a.engine.load_model(&a.model)?;
    let inputs = if let Some(p) = &a.input_npz {
        npz_inputs(&model, p)?
    } else if let Some(img) = &a.input {
        vec![Preset::for_model(&model).load_image(img)?]
    } else {
        random_inputs(&model, &input_shapes(&model, &a.engine.shapes)?, 1)?
    };
    let mut session = Session::new(&model, a.engine.session_options())?;
    crate::announce(&session);
    if session.on_gpu() {
        return gpu_profile(&mut session, &inputs, &a);
    }
    session.run(inputs.clone())?;
    let (peaks, _) = kestrel::hw::peaks(session.threads(), a.remeasure_peaks)?;
    let energy = match (a.energy_mac_pj, a.energy_dram_pj_per_byte) {
        (Some(m), Some(d)) => EnergyModel::custom(m, d),
        _ => EnergyModel::horowitz_45nm(),
    };
    let opts = ProfileOptions {
        runs: a.runs,
        warmup: a.warmup,
        energy,
    };
    let p = profile(&mut session, &inputs, &peaks, &opts)?;
    let to_stdout = a.json.as_deref().is_some_and(|j| j.as_os_str() == "-");
    if !to_stdout {
        print_table(&p);
    }
    if let Some(j) = &a.json {
        let text = serde_json::to_string_pretty(&p)?;
        if to_stdout {
            println!("{text}");
        } else {
            std::fs::write(j, text).with_context(|| format!("writing {}", j.display()))?;
            println!("profile written to {}", j.display());
        }
    }
    if let Some(c) = &a.chart {
        kestrel::chart::write_chart(&p, c)?;
        if !to_stdout {
            println!("chart written to {}", c.display());
        }
    }
    Ok(())
}

fn kb(b: u64) -> String {
    format!("{:.0}", b as f64 / 1024.0)
}

fn print_table(p: &Profile) {
    println!(
        "{} {:?}  backend {}  threads {}  simd {}  runs {}",
        p.model, p.input_shapes, p.backend, p.threads, p.simd, p.runs
    );
    println!(
        "{:>3} {:28} {:14} {:16} {:18} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>6} {:>7}",
        "#", "layer", "op", "algorithm", "output", "ms", "share", "MMAC", "wKB", "inKB", "outKB", "scrKB", "AI", "GFLOP/s", "GB/s", "bound"
    );
    for l in &p.layers {
        let mut name = l.name.clone();
        if name.len() > 28 {
            name = format!("…{}", &name[name.len() - 27..]);
        }
        println!(
            "{:>3} {:28} {:14} {:16} {:18} {:>8.3} {:>5.1}% {:>8.1} {:>8} {:>8} {:>8} {:>8} {:>6.1} {:>7.1} {:>6.1} {:>7}",
            l.index,
            name,
            l.op,
            l.algorithm,
            format!("{:?}", l.output_shape),
            l.time_ms,
            l.share * 100.0,
            l.macs as f64 / 1e6,
            kb(l.weight_bytes),
            kb(l.activation_read_bytes),
            kb(l.activation_write_bytes),
            kb(l.scratch_bytes),
            l.intensity,
            l.achieved_gflops,
            l.achieved_gbps,
            l.bound
        );
    }
    let convs: Vec<_> = p
        .layers
        .iter()
        .filter(|l| l.conv_direct_bytes.is_some())
        .collect();
    if !convs.is_empty() {
        println!();
        println!("convolution memory traffic (cost model): direct vs im2col+GEMM");
        println!(
            "{:>3} {:28} {:>12} {:>12} {:>7} {:>16}",
            "#", "layer", "direct MB", "im2col MB", "ratio", "running"
        );
        let (mut td, mut ti) = (0u64, 0u64);
        for l in &convs {
            let (d, i) = (
                l.conv_direct_bytes.unwrap_or(0),
                l.conv_im2col_bytes.unwrap_or(0),
            );
            td += d;
            ti += i;
            println!(
                "{:>3} {:28} {:>12.2} {:>12.2} {:>6.2}x {:>16}",
                l.index,
                l.name.chars().take(28).collect::<String>(),
                d as f64 / 1e6,
                i as f64 / 1e6,
                i as f64 / d.max(1) as f64,
                l.algorithm
            );
        }
        println!(
            "    {:28} {:>12.2} {:>12.2} {:>6.2}x",
            "all convolutions",
            td as f64 / 1e6,
            ti as f64 / 1e6,
            ti as f64 / td.max(1) as f64
        );
    }
    println!();
    println!(
        "{:14} {:>6} {:>10} {:>7} {:>10} {:>7} {:>10}",
        "family", "layers", "ms", "time%", "GMAC", "MAC%", "MB moved"
    );
    for f in &p.families {
        println!(
            "{:14} {:>6} {:>10.3} {:>6.1}% {:>10.3} {:>6.1}% {:>10.1}",
            f.family,
            f.layers,
            f.time_ms,
            f.time_share * 100.0,
            f.macs as f64 / 1e9,
            f.mac_share * 100.0,
            f.bytes as f64 / 1e6
        );
    }
    println!();
    println!(
        "sum of layers {:.3} ms; end-to-end without profiling {:.3} ms ({:+.1}%); with profiling {:.3} ms; timer overhead {:.0} ns/layer",
        p.sum_layers_ms,
        p.end_to_end_ms,
        p.sum_vs_end_to_end * 100.0,
        p.end_to_end_profiled_ms,
        p.timer_overhead_ns_per_layer
    );
    println!(
        "total {:.3} GMAC, {:.1} MB moved (cost model); machine peaks {:.0} GFLOP/s, {:.1} GB/s, ridge {:.1} flop/byte",
        p.total_macs as f64 / 1e9,
        p.total_bytes as f64 / 1e6,
        p.peaks.fma_gflops,
        p.peaks.triad_gbps,
        p.peaks.ridge()
    );
    let e = &p.energy;
    println!(
        "energy per frame, ESTIMATED ({}: {} pJ/MAC, {} pJ/DRAM byte): {:.2} mJ compute + {:.2} mJ DRAM = {:.2} mJ",
        e.model.name, e.model.pj_per_mac, e.model.pj_per_dram_byte, e.estimated_compute_mj, e.estimated_dram_mj, e.estimated_total_mj
    );
    match e.measured_package_mj {
        Some(m) => println!(
            "energy per frame, MEASURED: {m:.2} mJ ({})",
            e.measured_note
        ),
        None => println!("energy per frame, MEASURED: {}", e.measured_note),
    }
}

/// `kestrel profile --backend gpu`: per-dispatch GPU timestamps (median over the runs), op-type
/// shares, and the end-to-end time of untimed runs (one pass, one submission) beside it.
fn gpu_profile(session: &mut Session, inputs: &[kestrel::Tensor], a: &ProfileArgs) -> Result<()> {
    session.run_gpu_timed(inputs.to_vec(), false)?;
    let runs = a.runs.max(1);
    let mut per_step: Vec<Vec<f64>> = Vec::new();
    let mut e2e = Vec::new();
    for _ in 0..runs {
        let (_, t) = session.run_gpu_timed(inputs.to_vec(), true)?;
        let Some(t) = t else {
            anyhow::bail!(
                "this GPU adapter has no timestamp queries: per-layer GPU times are unavailable"
            );
        };
        if per_step.is_empty() {
            per_step = vec![Vec::new(); t.len()];
        }
        for (v, x) in per_step.iter_mut().zip(t) {
            v.push(x);
        }
        let t0 = std::time::Instant::now();
        session.run_gpu_timed(inputs.to_vec(), false)?;
        e2e.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    let steps = session.gpu_steps();
    let times: Vec<f64> = per_step.iter_mut().map(|v| median(v) / 1e6).collect();
    let total: f64 = times.iter().sum();
    let mut by_op: std::collections::BTreeMap<String, f64> = Default::default();
    let mut rows = Vec::new();
    for (st, t) in steps.iter().zip(&times) {
        *by_op.entry(st.op.clone()).or_default() += t;
        rows.push(serde_json::json!({
            "node": st.node, "op": st.op, "shader": st.kernel, "macs": st.macs, "time_ms": t,
            "gflops": if *t > 0.0 { 2.0 * st.macs as f64 / (t * 1e6) } else { 0.0 },
        }));
    }
    let transfers: Vec<serde_json::Value> = session
        .gpu_plan()
        .map(|p| p.transfers())
        .unwrap_or_default()
        .iter()
        .map(|t| {
            serde_json::json!({
                "value": t.value,
                "direction": if t.upload { "host->gpu" } else { "gpu->host" },
                "bytes": t.bytes,
            })
        })
        .collect();
    let cpu_nodes: Vec<serde_json::Value> = session
        .gpu_plan()
        .map(|p| p.cpu_nodes().to_vec())
        .unwrap_or_default()
        .into_iter()
        .map(|(node, op, why)| serde_json::json!({"node": node, "op": op, "why": why}))
        .collect();
    let e2e_ms = median(&mut e2e);
    let to_stdout = a.json.as_deref().is_some_and(|j| j.as_os_str() == "-");
    if !to_stdout {
        println!(
            "{:<40} {:<12} {:<14} {:>10} {:>9} {:>8}",
            "node", "op", "shader", "MMACs", "ms", "GFLOP/s"
        );
        for r in &rows {
            println!(
                "{:<40} {:<12} {:<14} {:>10.2} {:>9.4} {:>8.1}",
                r["node"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(40)
                    .collect::<String>(),
                r["op"].as_str().unwrap_or(""),
                r["shader"].as_str().unwrap_or(""),
                r["macs"].as_u64().unwrap_or(0) as f64 / 1e6,
                r["time_ms"].as_f64().unwrap_or(0.0),
                r["gflops"].as_f64().unwrap_or(0.0)
            );
        }
        if transfers.is_empty() {
            println!("sum of GPU dispatch times {total:.3} ms; end-to-end (upload, one submission, read-back) {e2e_ms:.3} ms");
        } else {
            println!(
                "graph split: {} node(s) on the CPU; host transfers at the cuts:",
                cpu_nodes.len()
            );
            for t in &transfers {
                println!(
                    "  {:<9} {:<40} {:>10} bytes",
                    t["direction"].as_str().unwrap_or(""),
                    t["value"].as_str().unwrap_or(""),
                    t["bytes"].as_u64().unwrap_or(0)
                );
            }
            println!("sum of step times (GPU dispatches, CPU steps, host copies) {total:.3} ms; end-to-end {e2e_ms:.3} ms");
        }
        for (op, t) in &by_op {
            println!("  {op:<12} {:5.1}%", 100.0 * t / total.max(1e-12));
        }
    }
    if let Some(j) = &a.json {
        let v = serde_json::json!({
            "backend": "gpu", "device": session.notice(), "runs": runs,
            "layers": rows, "sum_layers_ms": total, "end_to_end_ms": e2e_ms,
            "transfers": transfers, "cpu_nodes": cpu_nodes,
            "by_op_ms": by_op,
        });
        let text = serde_json::to_string_pretty(&v)?;
        if to_stdout {
            println!("{text}");
        } else {
            std::fs::write(j, text).with_context(|| format!("writing {}", j.display()))?;
        }
    }
    Ok(())
}
