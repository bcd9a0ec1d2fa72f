//! `kestrel run`: images (classes, detections or output statistics), streams (video files,
//! cameras, image folders, raw frames: see `stream.rs`) or raw tensors (npz in, npz out).

use crate::inputs::npz_inputs;
use crate::EngineArgs;
use anyhow::{bail, Context, Result};
use kestrel::detect::mtcnn::Mtcnn;
use kestrel::detect::ssd::SsdConfig;
use kestrel::pipeline::{Analysis, Engine, FrameOutput};
use kestrel::preprocess::{image_files, Fit, Layout};
use kestrel::{Model, Preset, Session, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct RunArgs {
    /// ONNX model (default: the built-in EfficientNet-Lite0).
    model: Option<PathBuf>,
    /// An image, a folder of images, a video file, a camera (/dev/videoN) or `-` for raw RGB24
    /// frames on stdin (default with the built-in model: the bundled clip assets/video/cup.mp4).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Treat a folder of images as the frames of one stream (else each image is run alone).
    #[arg(long)]
    pub stream: bool,
    /// Keep up with the source's frame rate: frames are released at their timestamps and a frame
    /// still waiting when the next arrives is dropped (counted).
    #[arg(long)]
    pub realtime: bool,
    /// Write one JSON object per frame to this file (`-` = stdout).
    #[arg(long)]
    pub jsonl: Option<String>,
    /// Write annotated frames (boxes, labels, latency) as PNG files into this folder.
    #[arg(long)]
    pub annotate: Option<PathBuf>,
    /// Annotate every N-th frame only.
    #[arg(long, default_value_t = 1)]
    pub annotate_every: u64,
    /// Per-frame latency chart of the stream (.svg or .png).
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Stop after this many frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Size WxH of raw RGB24 frames on stdin (`--input -`).
    #[arg(long)]
    pub raw_size: Option<String>,
    /// Frame rate of sources that state none (image folders, raw frames).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Detector post-processing: `auto` (built in by model name), `none`, or a JSON preset file
    /// of the generic SSD decoder (see docs/DETECTORS.md).
    #[arg(long, default_value = "auto")]
    pub detector: String,
    /// Convolutional caching on streams: recompute only the regions that changed since the
    /// previous frame (docs/CACHING.md).
    #[arg(long, value_enum, default_value = "off")]
    pub cache: OnOff,
    /// Caching threshold: a block whose pixels all changed by at most this many 8-bit levels
    /// (0-255) is reused. 0 = reuse only identical blocks (exact).
    #[arg(long, default_value_t = 6.0)]
    pub cache_threshold: f32,
    /// Caching block edge, in model-input pixels.
    #[arg(long, default_value_t = 8)]
    pub cache_block: usize,
    /// Caching: how a block's change is measured: max-abs (every value within the threshold:
    /// the bounded default), mean-abs, psnr, histogram (docs/CACHING.md).
    #[arg(long, default_value = "max-abs", value_parser = crate::cache_eval::parse_metric)]
    pub cache_metric: kestrel::stream::ChangeMetric,
    /// Caching: share of a convolution's outputs above which it is computed densely.
    #[arg(long)]
    pub cache_dense_fraction: Option<f64>,
    /// Caching threshold inside the network, in 8-bit levels of each conv/pool output's range:
    /// a recomputed position that moved by at most this is not passed on as changed
    /// (default: the same number as --cache-threshold).
    #[arg(long)]
    pub cache_layer_threshold: Option<f32>,
    /// Caching thresholds picked by `kestrel tune-cache --save FILE` (input and per-layer;
    /// replaces --cache-threshold and --cache-layer-threshold).
    #[arg(long)]
    pub cache_tuning: Option<std::path::PathBuf>,
    /// Caching: a frame whose predicted share of MACs to compute is above this runs on the
    /// ordinary dense executor (1 = never).
    #[arg(long)]
    pub cache_dense_above: Option<f64>,
    /// Caching: also re-threshold densely computed layers (an extra pass over their outputs).
    #[arg(long)]
    pub cache_prune_dense: bool,
    /// Raw input tensors, keyed by input name.
    #[arg(long)]
    input_npz: Option<PathBuf>,
    /// Write every model output, keyed by output name (single input only).
    #[arg(long)]
    output_npz: Option<PathBuf>,
    /// Write the preprocessed image tensor, keyed by the input name (single image only).
    #[arg(long)]
    save_input_npz: Option<PathBuf>,
    /// How many classes to print for classifiers.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Print results (photos) or the stream summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Built-in preprocessing preset (default: by model file name, else a guess).
    #[arg(long)]
    preset: Option<String>,
    /// Per-channel mean, e.g. `0.485,0.456,0.406` (after scaling).
    #[arg(long)]
    mean: Option<String>,
    /// Per-channel std.
    #[arg(long)]
    std: Option<String>,
    /// Pixel scale applied before mean/std (e.g. 0.00392157 for /255).
    #[arg(long)]
    scale: Option<f32>,
    /// Feed channels as BGR.
    #[arg(long)]
    bgr: bool,
    /// Tensor layout: nchw or nhwc.
    #[arg(long)]
    layout: Option<String>,
    /// Model input size WxH.
    #[arg(long)]
    size: Option<String>,
    /// `stretch`, or `crop:N` (shorter side to N, centre crop).
    #[arg(long)]
    fit: Option<String>,
    /// Label file (one per line); default ImageNet for 1000-class outputs.
    #[arg(long)]
    labels: Option<PathBuf>,
}

fn three(s: &str) -> Result<[f32; 3]> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("expected three numbers, got '{s}'"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("expected three numbers, got '{s}'"))
}

fn build_preset(a: &RunArgs, model: &Model) -> Result<Preset> {
    let mut p = match &a.preset {
        Some(n) => Preset::builtin(n).with_context(|| {
            format!(
                "unknown preset '{n}'; built-in: {}",
                Preset::builtin_names().join(", ")
            )
        })?,
        None => Preset::for_model(model),
    };
    if let Some(m) = &a.mean {
        p.mean = three(m)?;
    }
    if let Some(s) = &a.std {
        p.std = three(s)?;
    }
    if let Some(s) = a.scale {
        p.scale = s;
    }
    if a.bgr {
        p.bgr = true;
    }
    if let Some(l) = &a.layout {
        p.layout = match l.to_ascii_lowercase().as_str() {
            "nchw" => Layout::Nchw,
            "nhwc" => Layout::Nhwc,
            o => bail!("layout '{o}' is not nchw or nhwc"),
        };
    }
    if let Some(s) = &a.size {
        let v = crate::inputs::parse_shape(s)?;
        if v.len() != 2 {
            bail!("--size takes WxH");
        }
        p.width = v[0] as u32;
        p.height = v[1] as u32;
    }
    if let Some(f) = &a.fit {
        p.fit = match f.split_once(':') {
            None if f == "stretch" => Fit::Stretch,
            Some(("crop", n)) => Fit::ResizeShorterThenCrop(n.parse().context("crop:N")?),
            _ => bail!("--fit takes 'stretch' or 'crop:N'"),
        };
    }
    Ok(p)
}

fn labels(a: &RunArgs) -> Result<Vec<String>> {
    match &a.labels {
        Some(p) => Ok(std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .lines()
            .map(|s| s.trim().to_string())
            .collect()),
        None => Ok(kestrel::classify::imagenet_labels().to_vec()),
    }
}

/// NaN/Inf counts of an output, reported when present.
fn non_finite(t: &Tensor) -> (usize, usize) {
    match t.as_f32() {
        Ok(v) => (
            v.iter().filter(|x| x.is_nan()).count(),
            v.iter().filter(|x| x.is_infinite()).count(),
        ),
        Err(_) => (0, 0),
    }
}

fn describe(name: &str, t: &Tensor) -> serde_json::Value {
    let mut o =
        serde_json::json!({"name": name, "dtype": t.dtype().to_string(), "shape": t.shape()});
    if let Ok(v) = t.as_f32() {
        let (nan, inf) = non_finite(t);
        let fin: Vec<f32> = v.iter().copied().filter(|x| x.is_finite()).collect();
        let min = fin.iter().copied().fold(f32::INFINITY, f32::min);
        let max = fin.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mean = fin.iter().map(|&x| x as f64).sum::<f64>() / fin.len().max(1) as f64;
        o["min"] = min.into();
        o["max"] = max.into();
        o["mean"] = mean.into();
        if nan + inf > 0 {
            o["nan"] = nan.into();
            o["inf"] = inf.into();
        }
    }
    o
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// True when `input` names a stream rather than still images.
fn is_stream_input(a: &RunArgs, input: &std::path::Path) -> bool {
    let s = input.to_string_lossy();
    s == "-"
        || s.starts_with("/dev/video")
        || (input.is_dir() && a.stream)
        || (!input.is_dir() && !kestrel::video::is_image_path(input))
}

/// The inference engine for a model: the MTCNN cascade for a P-Net file, an SSD-style detector
/// when one is configured or built in for the model, else classification/output statistics.
fn build_engine(a: &RunArgs, model_path: &std::path::Path, model: &Model) -> Result<Engine> {
    let stem = model.name().to_ascii_lowercase();
    if stem.contains("mtcnn") && stem.contains("pnet") && a.detector != "none" {
        let m = Mtcnn::load(model_path, a.engine.session_options())?;
        return Ok(Engine::Mtcnn(Box::new(m)));
    }
    let session = Session::new(model, a.engine.session_options())?;
    if !a.json {
        crate::announce(&session);
    }
    let preset = build_preset(a, model)?;
    let detector = match a.detector.as_str() {
        "none" => None,
        "auto" => SsdConfig::builtin(model.name()),
        path => Some(SsdConfig::from_json_file(std::path::Path::new(path))?),
    };
    let analysis = match detector {
        Some(cfg) => Analysis::Detect(cfg),
        None => Analysis::Auto {
            labels: Arc::new(labels(a)?),
            top: a.top,
        },
    };
    if preset.is_guess() && !a.json {
        eprintln!(
            "note: no built-in preset for '{}': guessed {}x{} {:?}, ImageNet mean/std (set --preset/--mean/--std/--scale)",
            model.name(),
            preset.width,
            preset.height,
            preset.layout
        );
    }
    if a.cache == OnOff::On {
        let mut opts = kestrel::StreamOptions {
            block: a.cache_block.max(1),
            ..Default::default()
        };
        opts.threshold_from_levels(a.cache_threshold.max(0.0), &preset);
        opts.metric = a.cache_metric;
        if let Some(f) = a.cache_dense_fraction {
            opts.cache.dense_fraction = f;
        }
        if let Some(f) = a.cache_dense_above {
            opts.dense_above = f;
        }
        opts.cache.prune_dense = a.cache_prune_dense;
        opts.cache.layer_levels = a
            .cache_layer_threshold
            .unwrap_or(a.cache_threshold)
            .max(0.0);
        if let Some(path) = &a.cache_tuning {
            crate::tune_cache::CacheTuning::load(path)?.apply(&mut opts, &preset);
        }
        let stream = kestrel::Stream::new(model, a.engine.session_options(), opts)?;
        return Ok(Engine::Cached {
            stream: Box::new(stream),
            preset,
            analysis,
        });
    }
    Ok(Engine::Single {
        session,
        preset,
        analysis,
    })
}

fn print_output(name: &str, out: &FrameOutput, json: bool, items: &mut Vec<serde_json::Value>) {
    if json {
        let mut o = serde_json::to_value(out).unwrap_or_default();
        if let FrameOutput::Classes { top } = out {
            o = serde_json::json!({"top": top.iter().map(|(l, p)| serde_json::json!({"label": l, "prob": p})).collect::<Vec<_>>()});
        }
        o["input"] = name.into();
        items.push(o);
        return;
    }
    println!("{name}");
    match out {
        FrameOutput::Classes { top } => {
            for (l, p) in top {
                println!("  {p:.4}  {l}");
            }
        }
        FrameOutput::Detections { detections } => {
            if detections.is_empty() {
                println!("  no detections");
            }
            for d in detections {
                let b = d.bbox;
                println!(
                    "  {:.3}  {}box [{:.0}, {:.0}, {:.0}, {:.0}]  ({} keypoints)",
                    d.score,
                    d.label
                        .as_ref()
                        .map(|l| format!("{l} "))
                        .unwrap_or_default(),
                    b[0],
                    b[1],
                    b[2],
                    b[3],
                    d.keypoints.len()
                );
            }
        }
        FrameOutput::Outputs { outputs } => {
            for o in outputs {
                println!("  {}", serde_json::to_string(o).unwrap_or_default());
            }
        }
    }
}

pub fn run(a: RunArgs) -> Result<()> {
    let default_model = a.model.is_none();
    let model_path = a.model.clone().unwrap_or_else(kestrel::default_model_path);
    // caching runs in f32, so f16 weights are only loaded without it
    let model = if matches!(a.cache, OnOff::On) {
        Model::load(&model_path).with_context(|| format!("loading {}", model_path.display()))?
    } else {
        a.engine.load_model(&model_path)?
    };
    if a.input_npz.is_none() {
        let input = match (&a.input, default_model) {
            (Some(p), _) => p.clone(),
            (None, true) => kestrel::default_video_path(),
            (None, false) => {
                bail!("give --input IMAGE|DIR|VIDEO|/dev/videoN|- or --input-npz FILE")
            }
        };
        let n_inputs = model.inputs().len();
        let mtcnn = model.name().contains("pnet");
        if n_inputs != 1 && !mtcnn {
            bail!(
                "image input needs a single-input model; this one has {n_inputs} inputs (use --input-npz)"
            );
        }
        let mut engine = build_engine(&a, &model_path, &model)?;
        if is_stream_input(&a, &input) {
            return crate::stream::run_stream(&a, &input.to_string_lossy(), engine, model.name());
        }
        if a.output_npz.is_none() && a.save_input_npz.is_none() {
            let files = image_files(&input)?;
            if files.is_empty() {
                bail!("no .jpg/.jpeg/.png images in {}", input.display());
            }
            let mut json_items = Vec::new();
            for f in files {
                let img = image::open(&f)
                    .with_context(|| format!("decoding {}", f.display()))?
                    .to_rgb8();
                let (out, non_finite) = engine
                    .process_image(&img)
                    .with_context(|| format!("running on {}", f.display()))?;
                for (on, n) in non_finite {
                    eprintln!(
                        "warning: {}: output '{on}' has {n} NaN/Inf values",
                        f.display()
                    );
                }
                print_output(&f.display().to_string(), &out, a.json, &mut json_items);
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&json_items)?);
            }
            return Ok(());
        }
    }
    let mut session = Session::new(&model, a.engine.session_options())?;
    let out_names = model.output_names();
    let in_names: Vec<String> = model.inputs().into_iter().map(|i| i.0).collect();
    let labels = labels(&a)?;

    // (item name, inputs): npz tensors, or images when their tensors or outputs are saved
    let mut items: Vec<(String, Vec<Tensor>)> = Vec::new();
    if let Some(p) = &a.input_npz {
        items.push((p.display().to_string(), npz_inputs(&model, p)?));
    } else {
        let input = a.input.clone().unwrap_or_else(kestrel::default_photos_path);
        let preset = build_preset(&a, &model)?;
        for f in image_files(&input)? {
            let t = preset.load_image(&f)?;
            items.push((f.display().to_string(), vec![t]));
        }
    }
    if (a.output_npz.is_some() || a.save_input_npz.is_some()) && items.len() != 1 {
        bail!(
            "--output-npz and --save-input-npz need exactly one input (got {})",
            items.len()
        );
    }
    let mut json_items = Vec::new();
    for (name, inputs) in items {
        if let Some(p) = &a.save_input_npz {
            let arrays: Vec<(String, Tensor)> = in_names
                .iter()
                .cloned()
                .zip(inputs.iter().cloned())
                .collect();
            kestrel::npz::write_npz(p, &arrays)?;
        }
        let outs = session
            .run(inputs)
            .with_context(|| format!("running on {name}"))?;
        if let Some(p) = &a.output_npz {
            let arrays: Vec<(String, Tensor)> = out_names
                .iter()
                .cloned()
                .zip(outs.iter().cloned())
                .collect();
            kestrel::npz::write_npz(p, &arrays)?;
        }
        for (on, t) in out_names.iter().zip(&outs) {
            let (nan, inf) = non_finite(t);
            if nan + inf > 0 {
                eprintln!("warning: {name}: output '{on}' has {nan} NaN and {inf} infinite values");
            }
        }
        let is_classifier = outs.len() == 1
            && outs[0].dtype() == kestrel::DType::F32
            && outs[0].shape().iter().filter(|&&d| d > 1).count() == 1;
        if is_classifier {
            let top = kestrel::classify::top_k(&outs[0], a.top, &labels)?;
            if a.json {
                json_items.push(serde_json::json!({
                    "input": name,
                    "top": top.iter().map(|(l, p)| serde_json::json!({"label": l, "prob": p})).collect::<Vec<_>>(),
                }));
            } else {
                println!("{name}");
                for (l, p) in top {
                    println!("  {p:.4}  {l}");
                }
            }
        } else {
            let outs_desc: Vec<serde_json::Value> = out_names
                .iter()
                .zip(&outs)
                .map(|(n, t)| describe(n, t))
                .collect();
            if a.json {
                json_items.push(serde_json::json!({"input": name, "outputs": outs_desc}));
            } else {
                println!("{name}");
                for d in outs_desc {
                    println!("  {d}");
                }
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json_items)?);
    }
    Ok(())
}
