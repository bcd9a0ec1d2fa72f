//! `kestrel compare`: runs a model in f32 and at a test precision (or on another backend) on the
//! same inputs and reports the error of every output, where the error grows layer by layer, and
//! for classifiers the top-1/top-5 agreement.

use crate::{inputs, EngineArgs, PrecisionArg};
use anyhow::{bail, Context, Result};
use kestrel::compare::{is_classifier, layer_errors, tensor_error, Agreement, TensorError};
use kestrel::video::{is_image_path, open, OpenOptions};
use kestrel::{Model, Precision, Preset, Session, Tensor};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CompareArgs {
    model: PathBuf,
    /// Images, image folders or video files (repeatable); every frame of each is compared.
    /// Without any, seeded random inputs are used.
    #[arg(long)]
    input: Vec<PathBuf>,
    /// At most this many frames per video or folder.
    #[arg(long)]
    max_frames: Option<usize>,
    /// Random inputs when no --input is given.
    #[arg(long, default_value_t = 4)]
    random: usize,
    /// Per-layer analysis: a layer whose output's max-rel error exceeds this is reported as the
    /// first one past the tolerance.
    #[arg(long, default_value_t = 1e-2)]
    layer_tolerance: f64,
    /// Inputs used for the per-layer analysis (it keeps every activation alive).
    #[arg(long, default_value_t = 2)]
    layer_inputs: usize,
    /// Print every layer's error (else the first past the tolerance and the largest).
    #[arg(long)]
    all_layers: bool,
    #[arg(long)]
    json: bool,
    /// Engine options of the run under test (`--precision f16`, `--backend gpu`, ...); the
    /// reference is the f32 CPU run with the same threads and convolution algorithm.
    #[command(flatten)]
    engine: EngineArgs,
}

/// The inputs to compare on, with a label each.
fn collect_inputs(a: &CompareArgs, model: &Model) -> Result<Vec<(String, Vec<Tensor>)>> {
    if a.input.is_empty() {
        let shapes = inputs::input_shapes(model, &a.engine.shapes)?;
        return (0..a.random as u64)
            .map(|s| {
                Ok((
                    format!("random #{s}"),
                    inputs::random_inputs(model, &shapes, s)?,
                ))
            })
            .collect();
    }
    if model.inputs().len() != 1 {
        bail!("--input needs a single-input model");
    }
    let preset = Preset::for_model(model);
    let mut out = Vec::new();
    for p in &a.input {
        if is_image_path(p) {
            out.push((p.display().to_string(), vec![preset.load_image(p)?]));
            continue;
        }
        if p.is_dir() {
            // a folder of photos: each image alone, whatever its size
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| is_image_path(f))
                .collect();
            files.sort();
            for f in files.iter().take(a.max_frames.unwrap_or(usize::MAX)) {
                out.push((f.display().to_string(), vec![preset.load_image(f)?]));
            }
            continue;
        }
        let mut src = open(&p.to_string_lossy(), &OpenOptions::default())
            .with_context(|| format!("opening {}", p.display()))?;
        let mut n = 0;
        while let Some(f) = src.next_frame()? {
            out.push((
                format!("{}#{}", p.display(), f.index),
                vec![preset.image_to_tensor(&f.image)?],
            ));
            n += 1;
            if a.max_frames.is_some_and(|m| n >= m) {
                break;
            }
        }
    }
    if out.is_empty() {
        bail!("no frames in the given inputs");
    }
    Ok(out)
}

pub fn run(a: CompareArgs) -> Result<()> {
    let model = Model::load(&a.model)?;
    // the run under test loads the model as its options ask (f16 weights on the CPU)
    let test_model = a.engine.load_model(&a.model)?;
    let test_opts = a.engine.session_options();
    let mut ref_opts = test_opts.clone();
    ref_opts.precision = Precision::F32;
    ref_opts.backend = kestrel::Backend::Cpu;
    if a.engine.precision == PrecisionArg::F32 && a.engine.backend == crate::BackendArg::Cpu {
        eprintln!("note: the test run equals the reference (f32 CPU); pass --precision f16 or --backend gpu");
    }
    let ins = collect_inputs(&a, &model)?;
    let mut reference = Session::new(&model, ref_opts.clone())?;
    let mut test = Session::new(&test_model, test_opts.clone())?;
    crate::announce(&test);

    let mut per_output: Vec<TensorError> = Vec::new();
    let mut agreement = Agreement::default();
    let mut disagreements = Vec::new();
    let mut classifier = false;
    for (label, x) in &ins {
        let want = reference.run(x.clone())?;
        let got = test.run(x.clone())?;
        if per_output.is_empty() {
            per_output = vec![TensorError::default(); want.len()];
            classifier = is_classifier(&want);
        }
        for (e, (g, w)) in per_output.iter_mut().zip(got.iter().zip(&want)) {
            *e = e.max(tensor_error(g, w));
        }
        if classifier {
            let before = agreement.top1_same;
            agreement.add(&got[0], &want[0]);
            if agreement.top1_same == before {
                // how close the reference's top two were: flips happen at near-ties
                let v = want[0].as_f32()?;
                let t2 = kestrel::compare::top_k_indices(&want[0], 2);
                let margin = match t2.as_slice() {
                    [a, b] => (v[*a] - v[*b]) as f64,
                    _ => 0.0,
                };
                disagreements.push((label.clone(), margin));
            }
        }
    }

    // per-layer growth, worst over the first few inputs
    let mut layers: Vec<kestrel::compare::LayerError> = Vec::new();
    for (_, x) in ins.iter().take(a.layer_inputs.max(1)) {
        let rows = layer_errors(&model, &test_model, &ref_opts, &test_opts, x)?;
        if layers.is_empty() {
            layers = rows;
        } else {
            for (l, r) in layers.iter_mut().zip(rows) {
                l.error = l.error.max(r.error);
            }
        }
    }
    let first_past = layers
        .iter()
        .find(|l| l.error.max_rel > a.layer_tolerance || l.error.non_finite_mismatch > 0);
    let largest = layers
        .iter()
        .max_by(|x, y| x.error.max_rel.total_cmp(&y.error.max_rel));
    let names = model.output_names();

    if a.json {
        let outs: Vec<_> = names
            .iter()
            .zip(&per_output)
            .map(|(n, e)| serde_json::json!({"output": n, "error": e}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": model.name(),
                "reference": "f32 cpu",
                "test": {"precision": format!("{:?}", a.engine.precision).to_lowercase(),
                         "backend": format!("{:?}", a.engine.backend).to_lowercase()},
                "inputs": ins.len(),
                "outputs": outs,
                "classifier": classifier.then(|| serde_json::json!({
                    "agreement": agreement,
                    "top1_agreement": agreement.top1_rate(),
                    "top1_disagreements": disagreements.iter().map(|(l, m)| serde_json::json!({"input": l, "reference_top2_margin": m})).collect::<Vec<_>>(),
                })),
                "layer_tolerance": a.layer_tolerance,
                "first_layer_past_tolerance": first_past,
                "largest_layer_error": largest,
                "layers": if a.all_layers { serde_json::to_value(&layers)? } else { serde_json::Value::Null },
            }))?
        );
        return Ok(());
    }
    println!(
        "{}: {:?}/{:?} against f32 on the CPU, {} inputs",
        model.name(),
        a.engine.precision,
        a.engine.backend,
        ins.len()
    );
    println!(
        "{:<28} {:>12} {:>12} {:>10}",
        "output", "max abs", "max rel", "non-finite"
    );
    for (n, e) in names.iter().zip(&per_output) {
        println!(
            "{:<28} {:>12.3e} {:>12.3e} {:>10}",
            n, e.max_abs, e.max_rel, e.non_finite_mismatch
        );
    }
    if classifier {
        let n = agreement.inputs.max(1) as f64;
        println!(
            "top-1 agreement {}/{} ({:.2}%), f32 top-1 within top-5 {:.2}%, same top-5 set {:.2}%",
            agreement.top1_same,
            agreement.inputs,
            100.0 * agreement.top1_rate(),
            100.0 * agreement.ref_top1_in_top5 as f64 / n,
            100.0 * agreement.top5_same_set as f64 / n
        );
        for (d, m) in disagreements.iter().take(10) {
            println!("  top-1 differs: {d} (f32 margin between its top two outputs: {m:.4})");
        }
    }
    println!(
        "per-layer error ({} layers, worst of {} inputs), tolerance {:.1e}:",
        layers.len(),
        a.layer_inputs.max(1).min(ins.len()),
        a.layer_tolerance
    );
    let show = |l: &kestrel::compare::LayerError| {
        println!(
            "  #{:<4} {:<40} {:<18} max rel {:.3e}  max abs {:.3e}{}",
            l.index,
            l.node,
            l.op,
            l.error.max_rel,
            l.error.max_abs,
            if l.error.non_finite_mismatch > 0 {
                format!("  {} non-finite", l.error.non_finite_mismatch)
            } else {
                String::new()
            }
        )
    };
    if a.all_layers {
        layers.iter().for_each(show);
    }
    match first_past {
        Some(l) => {
            print!("first layer past the tolerance:");
            println!();
            show(l);
        }
        None => println!("no layer exceeds the tolerance"),
    }
    if let Some(l) = largest {
        println!("largest layer error:");
        show(l);
    }
    Ok(())
}
