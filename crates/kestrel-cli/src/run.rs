//! `kestrel run`: classify images (top-K) or run raw tensors, write outputs as npz.

use crate::inputs::npz_inputs;
use crate::EngineArgs;
use anyhow::{bail, Context, Result};
use kestrel::preprocess::{image_files, Fit, Layout};
use kestrel::{Model, Preset, Session, Tensor};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct RunArgs {
    /// ONNX model (default: the built-in EfficientNet-Lite0).
    model: Option<PathBuf>,
    /// An image or a folder of images (default with the built-in model: the bundled photos).
    #[arg(long)]
    input: Option<PathBuf>,
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
    top: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
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

pub fn run(a: RunArgs) -> Result<()> {
    let default_model = a.model.is_none();
    let model_path = a.model.clone().unwrap_or_else(kestrel::default_model_path);
    let model =
        Model::load(&model_path).with_context(|| format!("loading {}", model_path.display()))?;
    let mut session = Session::new(&model, a.engine.session_options())?;
    let out_names = model.output_names();
    let in_names: Vec<String> = model.inputs().into_iter().map(|i| i.0).collect();
    let labels = labels(&a)?;

    // (item name, inputs)
    let mut items: Vec<(String, Vec<Tensor>)> = Vec::new();
    if let Some(p) = &a.input_npz {
        items.push((p.display().to_string(), npz_inputs(&model, p)?));
    } else {
        let input = match (&a.input, default_model) {
            (Some(p), _) => p.clone(),
            (None, true) => kestrel::default_photos_path(),
            (None, false) => bail!("give --input IMAGE|DIR or --input-npz FILE"),
        };
        if in_names.len() != 1 {
            bail!(
                "image input needs a single-input model; this one has {} inputs (use --input-npz)",
                in_names.len()
            );
        }
        let preset = build_preset(&a, &model)?;
        if preset.is_guess() && !a.json {
            eprintln!(
                "note: no built-in preset for '{}': guessed {}x{} {:?}, ImageNet mean/std (set --preset/--mean/--std/--scale)",
                model.name(),
                preset.width,
                preset.height,
                preset.layout
            );
        }
        let files = image_files(&input)?;
        if files.is_empty() {
            bail!("no .jpg/.jpeg/.png images in {}", input.display());
        }
        for f in files {
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
