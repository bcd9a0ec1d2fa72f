//! Machine peaks (FMA GFLOP/s, streaming GB/s) for the roofline, measured once by
//! `kestrel hwbench` and cached per CPU model, SIMD path and thread count.

use kestrel_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Measured peaks of this machine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HwPeaks {
    pub cpu: String,
    pub simd: String,
    pub threads: usize,
    /// f32 FMA throughput of one thread.
    pub fma_gflops_1t: f64,
    /// f32 FMA throughput with `threads` threads.
    pub fma_gflops: f64,
    /// Streaming triad bandwidth of one thread.
    pub triad_gbps_1t: f64,
    /// Streaming triad bandwidth with `threads` threads.
    pub triad_gbps: f64,
}

impl HwPeaks {
    /// Ridge point: the arithmetic intensity (flop/byte) above which a layer is compute-bound.
    pub fn ridge(&self) -> f64 {
        self.fma_gflops / self.triad_gbps.max(1e-9)
    }
    /// Attainable GFLOP/s at intensity `ai` (the roofline).
    pub fn attainable(&self, ai: f64) -> f64 {
        self.fma_gflops.min(ai * self.triad_gbps)
    }
}

/// The CPU's model name (from /proc/cpuinfo on Linux).
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn cache_path(threads: usize) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        base.join("kestrel")
            .join(format!("hwbench-{threads}t.json")),
    )
}

/// Measures the peaks now (takes a few seconds).
pub fn measure(threads: usize) -> HwPeaks {
    use kestrel_cpu::hwbench::{fma_gflops, triad_gbps};
    let threads = threads.max(1);
    HwPeaks {
        cpu: cpu_name(),
        simd: crate::simd_path_name().to_string(),
        threads,
        fma_gflops_1t: fma_gflops(1),
        fma_gflops: if threads == 1 {
            fma_gflops(1)
        } else {
            fma_gflops(threads)
        },
        triad_gbps_1t: triad_gbps(1),
        triad_gbps: if threads == 1 {
            triad_gbps(1)
        } else {
            triad_gbps(threads)
        },
    }
}

/// Cached peaks for this machine and thread count, measuring (and caching) them when absent,
/// stale (other CPU or SIMD path) or when `force`. Returns the peaks and whether they came from
/// the cache.
pub fn peaks(threads: usize, force: bool) -> Result<(HwPeaks, bool)> {
    let threads = threads.max(1);
    let path = cache_path(threads);
    if !force {
        if let Some(p) = &path {
            if let Ok(text) = std::fs::read_to_string(p) {
                if let Ok(h) = serde_json::from_str::<HwPeaks>(&text) {
                    if h.cpu == cpu_name()
                        && h.simd == crate::simd_path_name()
                        && h.threads == threads
                    {
                        return Ok((h, true));
                    }
                }
            }
        }
    }
    let h = measure(threads);
    if let Some(p) = &path {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let text = serde_json::to_string_pretty(&h).map_err(|e| Error::invalid(e.to_string()))?;
        let _ = std::fs::write(p, text);
    }
    Ok((h, false))
}
