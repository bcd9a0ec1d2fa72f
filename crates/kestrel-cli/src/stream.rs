//! `kestrel run` on a stream (video file, camera, image folder with --stream, raw frames on
//! stdin): the threaded pipeline with progress, JSON lines, annotated frames, a summary chart and
//! a clean stop on Ctrl-C.

use crate::run::RunArgs;
use anyhow::{Context, Result};
use kestrel::pipeline::{self, Engine, FrameOutput, FrameResult, PipelineOptions, Summary};
use kestrel::stream_chart::{write_stream_chart, StreamPoint};
use kestrel::video::{open, OpenOptions};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn parse_size(s: &str) -> Result<(u32, u32)> {
    let v = crate::inputs::parse_shape(s)?;
    anyhow::ensure!(v.len() == 2, "expected WxH, got '{s}'");
    Ok((v[0] as u32, v[1] as u32))
}

/// Text lines drawn on an annotated frame.
fn frame_lines(r: &FrameResult) -> Vec<String> {
    let mut v = vec![format!(
        "frame {}  infer {:.1} ms  end-to-end {:.1} ms",
        r.index, r.times.infer_ms, r.times.end_to_end_ms
    )];
    if let FrameOutput::Classes { top } = &r.output {
        for (l, p) in top.iter().take(3) {
            v.push(format!("{p:.2} {l}"));
        }
    }
    v
}

fn frame_json(r: &FrameResult) -> serde_json::Value {
    // latency_ms: the inference (what caching changes); times_ms breaks the frame down
    let mut o = serde_json::json!({
        "frame": r.index,
        "pts": r.pts,
        "latency_ms": r.times.infer_ms,
        "times_ms": r.times,
    });
    match &r.output {
        FrameOutput::Classes { top } => {
            o["top"] = top
                .iter()
                .map(|(l, p)| serde_json::json!({"label": l, "prob": p}))
                .collect();
        }
        FrameOutput::Detections { detections } => o["detections"] = serde_json::json!(detections),
        FrameOutput::Outputs { outputs } => o["outputs"] = serde_json::json!(outputs),
    }
    if !r.non_finite.is_empty() {
        o["non_finite"] = serde_json::json!(r.non_finite);
    }
    if let Some(c) = &r.cache {
        o["computed_fraction"] = serde_json::json!(c.computed_fraction);
        o["cache"] = serde_json::json!(c);
    }
    o
}

pub fn run_stream(a: &RunArgs, spec: &str, mut engine: Engine, model_name: &str) -> Result<()> {
    let opts = OpenOptions {
        raw_size: a.raw_size.as_deref().map(parse_size).transpose()?,
        fps: a.fps,
    };
    let source = open(spec, &opts)?;
    let info = source.info().clone();
    let quiet = a.json || a.jsonl.as_deref() == Some("-");
    if !quiet {
        eprintln!(
            "source: {} ({} {}, {}x{}{}{}) -> {model_name}, {} mode, SIMD {}",
            info.name,
            info.kind,
            info.codec.as_deref().unwrap_or("-"),
            info.width,
            info.height,
            info.fps
                .map(|f| format!(", {f:.2} fps"))
                .unwrap_or_default(),
            info.frames
                .map(|n| format!(", {n} frames announced"))
                .unwrap_or_default(),
            if a.realtime { "real-time" } else { "offline" },
            kestrel::simd_path_name(),
        );
    }
    let mut jsonl: Option<Box<dyn Write>> = match a.jsonl.as_deref() {
        None => None,
        Some("-") => Some(Box::new(std::io::stdout().lock())),
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {p}"))?,
        ))),
    };
    if let Some(d) = &a.annotate {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second handler cannot be installed in one process (tests call run twice): ignore.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = match info.frames.filter(|_| a.max_frames.is_none()) {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} frames  {per_sec}  ETA {eta}  {msg}",
            )
            .expect("valid template"),
        );
        b
    };
    let mut points = Vec::new();
    let mut label_counts: HashMap<String, u64> = HashMap::new();
    let mut frames_with_detections = 0u64;
    let mut detections_total = 0u64;
    let every = a.annotate_every.max(1);
    let mut on_result = |r: &FrameResult| -> kestrel::Result<()> {
        points.push(StreamPoint {
            index: r.index,
            infer_ms: r.times.infer_ms,
            end_to_end_ms: r.times.end_to_end_ms,
            computed_fraction: r.cache.as_ref().map(|c| c.computed_fraction),
        });
        match &r.output {
            FrameOutput::Classes { top } => {
                if let Some((l, _)) = top.first() {
                    *label_counts.entry(l.clone()).or_default() += 1;
                    bar.set_message(l.clone());
                }
            }
            FrameOutput::Detections { detections } => {
                frames_with_detections += (!detections.is_empty()) as u64;
                detections_total += detections.len() as u64;
                bar.set_message(format!("{} detections", detections.len()));
            }
            FrameOutput::Outputs { .. } => {}
        }
        for (name, n) in &r.non_finite {
            bar.suspend(|| {
                eprintln!(
                    "warning: frame {}: output '{name}' has {n} NaN/Inf values",
                    r.index
                )
            });
        }
        if let Some(w) = jsonl.as_mut() {
            let line = serde_json::to_string(&frame_json(r))
                .map_err(|e| kestrel::Error::invalid(e.to_string()))?;
            writeln!(w, "{line}").map_err(|e| kestrel::Error::Io {
                path: "jsonl".into(),
                source: e,
            })?;
        }
        if let Some(dir) = &a.annotate {
            if r.index.is_multiple_of(every) {
                let mut img = (*r.image).clone();
                let dets = match &r.output {
                    FrameOutput::Detections { detections } => detections.as_slice(),
                    _ => &[],
                };
                kestrel::annotate::draw(&mut img, dets, &frame_lines(r))?;
                let p = dir.join(format!("frame_{:06}.png", r.index));
                img.save(&p).map_err(|e| {
                    kestrel::Error::invalid(format!("writing {}: {e}", p.display()))
                })?;
            }
        }
        bar.inc(1);
        Ok(())
    };
    let popts = PipelineOptions {
        realtime: a.realtime,
        max_frames: a.max_frames,
        stop: stop.clone(),
    };
    let summary = pipeline::run(source, &mut engine, &popts, &mut on_result)
        .with_context(|| format!("processing {spec}"))?;
    bar.finish_and_clear();
    if let Some(mut w) = jsonl {
        w.flush()?;
    }
    if let Some(p) = &a.chart {
        let title = format!(
            "{model_name} on {}: {} frames, inference p50 {:.1} ms, end-to-end p50 {:.1} ms",
            std::path::Path::new(&summary.source)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            summary.frames_processed,
            summary.infer_ms.p50,
            summary.end_to_end_ms.p50
        );
        write_stream_chart(&points, &title, p)?;
    }
    let mut top_labels: Vec<(String, u64)> = label_counts.into_iter().collect();
    top_labels.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    if a.json {
        let mut o = serde_json::to_value(&summary)?;
        o["model"] = model_name.into();
        if !top_labels.is_empty() {
            o["top1_counts"] = serde_json::json!(top_labels);
        }
        if frames_with_detections + detections_total > 0 {
            o["frames_with_detections"] = frames_with_detections.into();
            o["detections"] = detections_total.into();
        }
        println!("{}", serde_json::to_string_pretty(&o)?);
    } else if !quiet {
        print_summary(
            &summary,
            &top_labels,
            frames_with_detections,
            detections_total,
        );
    }
    Ok(())
}

fn print_summary(s: &Summary, top: &[(String, u64)], det_frames: u64, dets: u64) {
    println!(
        "frames: {} decoded, {} processed, {} dropped, {} damaged skipped{}",
        s.frames_decoded,
        s.frames_processed,
        s.frames_dropped,
        s.damaged_skipped,
        if s.stopped_early {
            " (stopped early)"
        } else {
            ""
        }
    );
    if let Some(n) = s.frames_announced {
        // containers often announce one frame too many; flag real shortfalls only
        if !s.stopped_early && s.frames_decoded + 1 + n / 100 < n {
            println!(
                "note: the container announced {n} frames but {} decoded (truncated or damaged file?)",
                s.frames_decoded
            );
        }
    }
    println!(
        "throughput: {:.1} fps over {:.2} s{}",
        s.throughput_fps,
        s.wall_s,
        s.source_fps
            .map(|f| format!(
                " (source {f:.2} fps: {:.2}x real time)",
                s.throughput_fps / f
            ))
            .unwrap_or_default()
    );
    println!(
        "inference ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        s.infer_ms.p50, s.infer_ms.p90, s.infer_ms.p99, s.infer_ms.max
    );
    println!(
        "end-to-end ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        s.end_to_end_ms.p50, s.end_to_end_ms.p90, s.end_to_end_ms.p99, s.end_to_end_ms.max
    );
    if s.realtime {
        println!(
            "real time: {:.1}% of frames dropped",
            100.0 * s.frames_dropped as f64 / s.frames_decoded.max(1) as f64
        );
    }
    if let Some(f) = s.mean_computed_fraction {
        println!(
            "caching: {:.1}% of the dense MACs computed per frame on average",
            100.0 * f
        );
    }
    if !top.is_empty() {
        let parts: Vec<String> = top
            .iter()
            .take(5)
            .map(|(l, n)| format!("{l} {n}"))
            .collect();
        println!("top-1 per frame: {}", parts.join(", "));
    }
    if dets > 0 || det_frames > 0 {
        println!("detections: {dets} in {det_frames} frames");
    }
    if s.frames_non_finite > 0 {
        println!(
            "warning: {} frames had NaN/Inf outputs",
            s.frames_non_finite
        );
    }
}
