//! The per-layer profiler: time per layer (median over runs, in one warm session), work and
//! memory traffic from the cost model, roofline placement, and a summary by op family.
//!
//! Timing does not distort what it measures: each measured run is paired with an unprofiled run
//! of the same session, the per-layer timer overhead is measured and reported, and the report
//! states how far the sum of layer times is from the unprofiled end-to-end latency.

use crate::energy::{EnergyModel, EnergyReport, Rapl};
use crate::hw::HwPeaks;
use crate::Session;
use kestrel_core::{Result, Tensor};
use serde::Serialize;
use std::time::{Duration, Instant};

/// One layer (a step of the prepared plan, i.e. after fusion).
#[derive(Clone, Debug, Serialize)]
pub struct LayerProfile {
    pub index: usize,
    pub name: String,
    pub op: String,
    pub family: String,
    /// Kernel / algorithm the backend chose.
    pub algorithm: String,
    pub output_shape: Vec<usize>,
    /// Median time over the runs, milliseconds.
    pub time_ms: f64,
    /// Share of the summed layer times.
    pub share: f64,
    pub macs: u64,
    pub flops: u64,
    pub weight_bytes: u64,
    pub activation_read_bytes: u64,
    pub activation_write_bytes: u64,
    pub scratch_bytes: u64,
    /// Flops per byte moved.
    pub intensity: f64,
    pub achieved_gflops: f64,
    pub achieved_gbps: f64,
    /// Roofline bound at this intensity.
    pub attainable_gflops: f64,
    /// `compute` when the intensity is above the machine's ridge point, else `memory`.
    pub bound: String,
    /// Convolutions: bytes moved by a direct algorithm (weights + input + output, no scratch).
    pub conv_direct_bytes: Option<u64>,
    /// Convolutions: bytes moved by im2col+GEMM (direct + the unfolded matrix written and read).
    pub conv_im2col_bytes: Option<u64>,
}

/// Totals of one op family.
#[derive(Clone, Debug, Serialize)]
pub struct FamilySummary {
    pub family: String,
    pub layers: usize,
    pub time_ms: f64,
    pub time_share: f64,
    pub macs: u64,
    pub mac_share: f64,
    pub bytes: u64,
}

/// A whole profile.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub model: String,
    pub backend: String,
    pub input_shapes: Vec<Vec<usize>>,
    pub threads: usize,
    pub simd: String,
    pub runs: usize,
    pub layers: Vec<LayerProfile>,
    pub families: Vec<FamilySummary>,
    /// Sum of the per-layer medians.
    pub sum_layers_ms: f64,
    /// Median end-to-end latency of unprofiled runs of the same session.
    pub end_to_end_ms: f64,
    /// Median end-to-end latency of the profiled runs.
    pub end_to_end_profiled_ms: f64,
    /// `sum_layers_ms / end_to_end_ms - 1`.
    pub sum_vs_end_to_end: f64,
    /// Measured cost of the per-layer timing, nanoseconds per layer.
    pub timer_overhead_ns_per_layer: f64,
    pub total_macs: u64,
    pub total_bytes: u64,
    pub peaks: HwPeaks,
    pub energy: EnergyReport,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Options of [`profile`].
#[derive(Clone, Debug)]
pub struct ProfileOptions {
    pub runs: usize,
    pub warmup: usize,
    pub energy: EnergyModel,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            runs: 10,
            warmup: 2,
            energy: EnergyModel::horowitz_45nm(),
        }
    }
}

/// Profiles `session` on `inputs`. `peaks` places layers on the roofline (use the peaks measured
/// with the session's thread count).
pub fn profile(
    session: &mut Session,
    inputs: &[Tensor],
    peaks: &HwPeaks,
    opts: &ProfileOptions,
) -> Result<Profile> {
    for _ in 0..opts.warmup.max(1) {
        session.run(inputs.to_vec())?;
    }
    let steps = session.steps();
    let n = steps.len();
    let mut per_layer: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.runs); n];
    let mut e2e = Vec::with_capacity(opts.runs);
    let mut e2e_prof = Vec::with_capacity(opts.runs);
    let rapl = Rapl::open();
    let mut rapl_joules = 0.0;
    let mut rapl_frames = 0usize;
    for _ in 0..opts.runs.max(1) {
        // unprofiled run (also where package energy is measured)
        let inp = inputs.to_vec();
        let r0 = rapl.as_ref().ok().map(|r| r.read());
        let t0 = Instant::now();
        session.run(inp)?;
        e2e.push(t0.elapsed().as_secs_f64() * 1e3);
        if let (Ok(r), Some(a)) = (&rapl, r0) {
            rapl_joules += r.joules_between(&a, &r.read());
            rapl_frames += 1;
        }
        // profiled run
        let inp = inputs.to_vec();
        let mut times = vec![0f64; n];
        let t0 = Instant::now();
        session.run_observed(inp, &mut |i, d: Duration| {
            if i < times.len() {
                times[i] = d.as_secs_f64() * 1e3;
            }
        })?;
        e2e_prof.push(t0.elapsed().as_secs_f64() * 1e3);
        for (v, t) in per_layer.iter_mut().zip(times) {
            v.push(t);
        }
    }
    let timer_overhead = measure_timer_overhead_ns();
    let medians: Vec<f64> = per_layer.iter_mut().map(|v| median(v)).collect();
    let sum: f64 = medians.iter().sum();
    let mut layers = Vec::with_capacity(n);
    for (i, (s, &t)) in steps.iter().zip(&medians).enumerate() {
        let c = &s.cost;
        let secs = (t * 1e-3).max(1e-12);
        let ai = c.intensity();
        layers.push(LayerProfile {
            index: i,
            name: s.node_name.clone(),
            op: s.op.clone(),
            family: s.family.name().to_string(),
            algorithm: s.kernel.clone(),
            output_shape: s.output_shapes.first().cloned().unwrap_or_default(),
            time_ms: t,
            share: if sum > 0.0 { t / sum } else { 0.0 },
            macs: c.macs,
            flops: c.flops,
            weight_bytes: c.weight_bytes,
            activation_read_bytes: c.input_bytes,
            activation_write_bytes: c.output_bytes,
            scratch_bytes: c.scratch_bytes,
            intensity: ai,
            achieved_gflops: c.flops as f64 / secs / 1e9,
            achieved_gbps: c.bytes() as f64 / secs / 1e9,
            attainable_gflops: peaks.attainable(ai),
            bound: if ai >= peaks.ridge() {
                "compute".into()
            } else {
                "memory".into()
            },
            conv_direct_bytes: s
                .im2col_scratch_bytes
                .map(|_| c.weight_bytes + c.input_bytes + c.output_bytes),
            conv_im2col_bytes: s
                .im2col_scratch_bytes
                .map(|x| c.weight_bytes + c.input_bytes + c.output_bytes + x),
        });
    }
    let total_macs: u64 = layers.iter().map(|l| l.macs).sum();
    let total_bytes: u64 = steps.iter().map(|s| s.cost.bytes()).sum();
    let mut fams: Vec<FamilySummary> = Vec::new();
    for l in &layers {
        let bytes =
            l.weight_bytes + l.activation_read_bytes + l.activation_write_bytes + l.scratch_bytes;
        match fams.iter_mut().find(|f| f.family == l.family) {
            Some(f) => {
                f.layers += 1;
                f.time_ms += l.time_ms;
                f.macs += l.macs;
                f.bytes += bytes;
            }
            None => fams.push(FamilySummary {
                family: l.family.clone(),
                layers: 1,
                time_ms: l.time_ms,
                time_share: 0.0,
                macs: l.macs,
                mac_share: 0.0,
                bytes,
            }),
        }
    }
    for f in &mut fams {
        f.time_share = if sum > 0.0 { f.time_ms / sum } else { 0.0 };
        f.mac_share = f.macs as f64 / total_macs.max(1) as f64;
    }
    fams.sort_by(|a, b| {
        b.time_ms
            .partial_cmp(&a.time_ms)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let e2e_ms = median(&mut e2e);
    let mut energy = EnergyReport::estimate(opts.energy.clone(), total_macs, total_bytes);
    match &rapl {
        Ok(_) if rapl_frames > 0 => {
            energy.measured_package_mj = Some(rapl_joules / rapl_frames as f64 * 1e3);
            energy.measured_note = format!("RAPL package counters over {rapl_frames} unprofiled runs (whole package: includes idle and other processes)");
        }
        Ok(_) => energy.measured_note = "no runs".into(),
        Err(why) => energy.measured_note = format!("not measured: {why}"),
    }
    Ok(Profile {
        model: session.model().name().to_string(),
        backend: "cpu".into(),
        input_shapes: inputs.iter().map(|t| t.shape().to_vec()).collect(),
        threads: session.threads(),
        simd: crate::simd_path_name().to_string(),
        runs: opts.runs.max(1),
        layers,
        families: fams,
        sum_layers_ms: sum,
        end_to_end_ms: e2e_ms,
        end_to_end_profiled_ms: median(&mut e2e_prof),
        sum_vs_end_to_end: if e2e_ms > 0.0 {
            sum / e2e_ms - 1.0
        } else {
            0.0
        },
        timer_overhead_ns_per_layer: timer_overhead,
        total_macs,
        total_bytes,
        peaks: peaks.clone(),
        energy,
    })
}

/// Cost of what the executor does per step when observed: two clock reads and a callback.
fn measure_timer_overhead_ns() -> f64 {
    let n = 100_000;
    let mut sink = 0f64;
    let mut cb = |_: usize, d: Duration| sink += d.as_secs_f64();
    let cb: &mut dyn FnMut(usize, Duration) = &mut cb;
    let t0 = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        cb(i, t.elapsed());
    }
    let ns = t0.elapsed().as_secs_f64() * 1e9 / n as f64;
    std::hint::black_box(sink);
    ns
}
