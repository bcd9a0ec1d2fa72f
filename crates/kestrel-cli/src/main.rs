//! `kestrel`: the command-line tool. A thin layer over the `kestrel` library.

mod bench;
mod cache_eval;
mod compare;
mod compress;
mod convert;
mod info;
mod inputs;
mod profile;
mod run;
mod stream;
mod tune_cache;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kestrel",
    version,
    about = "On-device CNN inference for continuous vision"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Convolution algorithm choice on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConvAlgoArg {
    Auto,
    Im2col,
    Direct,
    /// The packed implicit GEMM (im2col blocks unfolded into packed panels on the fly).
    ImplicitGemm,
    Winograd,
    Winograd2,
    Winograd6,
    /// FFT convolution where its filter spectra fit (2-D, ungrouped), else direct
    Fft,
    Reference,
}

impl From<ConvAlgoArg> for kestrel::ConvAlgo {
    fn from(a: ConvAlgoArg) -> Self {
        match a {
            ConvAlgoArg::Auto => kestrel::ConvAlgo::Auto,
            ConvAlgoArg::Im2col => kestrel::ConvAlgo::Im2col,
            ConvAlgoArg::Direct => kestrel::ConvAlgo::Direct,
            ConvAlgoArg::ImplicitGemm => kestrel::ConvAlgo::ImplicitGemm,
            ConvAlgoArg::Winograd => kestrel::ConvAlgo::Winograd,
            ConvAlgoArg::Winograd2 => kestrel::ConvAlgo::Winograd2,
            ConvAlgoArg::Winograd6 => kestrel::ConvAlgo::Winograd6,
            ConvAlgoArg::Fft => kestrel::ConvAlgo::Fft,
            ConvAlgoArg::Reference => kestrel::ConvAlgo::Reference,
        }
    }
}

/// Options shared by the commands that run a model.
#[derive(clap::Args, Clone, Debug)]
pub struct EngineArgs {
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Convolution algorithm.
    #[arg(long, value_enum, default_value = "auto")]
    pub conv_algo: ConvAlgoArg,
    /// Input shape for models with free dimensions, e.g. `1x3x480x640` (repeat per input).
    #[arg(long = "shape")]
    pub shapes: Vec<String>,
    /// Backend: cpu, gpu (wgpu: Vulkan/Metal/DX12/GLES), or auto (GPU when an adapter with
    /// compute shaders exists, else CPU; a notice says which).
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendArg,
    /// Precision: f32; f16 (weights and activations stored in half precision: half the bytes
    /// moved and held; arithmetic stays f32; CPU and GPU); or f16-arith (f16 storage plus native
    /// fp16 arithmetic in the large convolutions: CPU with AVX512-FP16; GPU with SHADER_F16, in
    /// the GEMM kernel, fp16 sums of at most 16 products added in f32).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Cpu,
    Gpu,
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    F32,
    F16,
    /// f16 storage and native fp16 arithmetic in the large convolutions (CPU with AVX512-FP16,
    /// GPU with SHADER_F16)
    #[value(name = "f16-arith")]
    F16Arith,
}

/// Prints the session's backend notice (GPU adapter, or why auto fell back to the CPU).
pub fn announce(session: &kestrel::Session) {
    if let Some(n) = session.notice() {
        eprintln!("{n}");
    }
}

impl EngineArgs {
    /// Loads a model for these options. With `--precision f16` on the CPU, the weights are
    /// converted to f16 at load time and the f32 copy is dropped (half the weight memory).
    pub fn load_model(&self, path: &std::path::Path) -> anyhow::Result<kestrel::Model> {
        use anyhow::Context;
        let model =
            kestrel::Model::load(path).with_context(|| format!("loading {}", path.display()))?;
        if self.precision != PrecisionArg::F32 && self.backend == BackendArg::Cpu {
            let (m, _) = model.into_f16_weights()?;
            return Ok(m);
        }
        Ok(model)
    }

    pub fn session_options(&self) -> kestrel::SessionOptions {
        kestrel::SessionOptions {
            threads: self.threads,
            conv_algo: self.conv_algo.into(),
            backend: match self.backend {
                BackendArg::Cpu => kestrel::Backend::Cpu,
                BackendArg::Gpu => kestrel::Backend::Gpu,
                BackendArg::Auto => kestrel::Backend::Auto,
            },
            precision: match self.precision {
                PrecisionArg::F32 => kestrel::Precision::F32,
                PrecisionArg::F16 => kestrel::Precision::F16,
                PrecisionArg::F16Arith => kestrel::Precision::F16Arith,
            },
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Inputs, outputs, op counts, parameters and MACs of a model.
    Info {
        model: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long = "shape")]
        shapes: Vec<String>,
    },
    /// Run a model on images, a video/camera/frame stream or raw tensors (the built-in model on the
    /// bundled clip when none are given).
    Run(Box<run::RunArgs>),
    /// Latency of a warm session (median, p90, min).
    Bench(bench::BenchArgs),
    /// Per-layer profile: time, MACs, bytes, roofline, op-family shares, energy; table/JSON/chart.
    Profile(Box<profile::ProfileArgs>),
    /// Compare a run at another precision or on another backend with the f32 CPU run: output
    /// errors, per-layer error growth, classifier agreement.
    Compare(Box<compare::CompareArgs>),
    /// Write an fp16 ONNX model (inputs/outputs stay float) for other engines.
    Convert(convert::ConvertArgs),
    /// Pick the convolutional-caching threshold on a calibration clip.
    TuneCache(Box<tune_cache::TuneCacheArgs>),
    /// Measure caching on a clip against dense inference, frame by frame (latency, computed
    /// MACs, agreement, detections, output error; long runs with --loop).
    CacheEval(Box<cache_eval::CacheEvalArgs>),
    /// Low-rank compression (Tucker-2 / SVD) with a measured report.
    Compress(Box<compress::CompressArgs>),
    /// Measure (and cache) this machine's FMA peak and memory bandwidth for the roofline.
    Hwbench(profile::HwbenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Info {
            model,
            json,
            shapes,
        } => info::info(&model, json, &shapes),
        Cmd::Run(a) => run::run(*a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Compress(a) => compress::run(*a),
        Cmd::Compare(a) => compare::run(*a),
        Cmd::Convert(a) => convert::run(a),
        Cmd::TuneCache(a) => tune_cache::run(*a),
        Cmd::CacheEval(a) => cache_eval::run(*a),
        Cmd::Profile(a) => profile::run_profile(*a),
        Cmd::Hwbench(a) => profile::hwbench(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
