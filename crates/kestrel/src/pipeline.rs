//! The continuous-vision pipeline: decode → preprocess → inference → post-processing, each on
//! its own thread with bounded queues between them, so that decoding frame n+1 overlaps the
//! inference of frame n.
//!
//! Two modes:
//! - **offline** ([`PipelineOptions::realtime`] false): every frame is processed; the decoder
//!   blocks when the queues are full.
//! - **real time**: frames are released at their presentation time (file sources are paced like
//!   a camera) into a one-frame slot; a frame still waiting when the next one arrives is dropped
//!   and counted, so inference always works on the newest frame and latency stays bounded.
//!
//! Per frame the pipeline reports the time of each stage and the end-to-end latency (from the
//! moment the frame was available to the end of its post-processing); the [`Summary`] has the
//! percentiles, throughput and drop counts.

use crate::detect::mtcnn::Mtcnn;
use crate::detect::ssd::SsdConfig;
use crate::detect::Detection;
use crate::{Preset, Session};
use kestrel_core::{Error, Result, Tensor};
use kestrel_video::{Frame, FrameSource, SourceInfo};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What is made of a model's outputs.
#[derive(Clone, Debug)]
pub enum Analysis {
    /// Top-k classes of a classifier.
    Classify {
        labels: Arc<Vec<String>>,
        top: usize,
    },
    /// Top-k classes when the model has a single vector output (a classifier), else output
    /// statistics.
    Auto {
        labels: Arc<Vec<String>>,
        top: usize,
    },
    /// Boxes from an SSD-style detector.
    Detect(SsdConfig),
    /// Output statistics only.
    Raw,
}

/// The inference stage.
#[allow(clippy::large_enum_variant)] // one per pipeline, never moved in a hot path
pub enum Engine {
    /// One model with its preprocessing and analysis.
    Single {
        session: Session,
        preset: Preset,
        analysis: Analysis,
    },
    /// One model on a stream with convolutional caching.
    Cached {
        stream: Box<crate::Stream>,
        preset: Preset,
        analysis: Analysis,
    },
    /// The MTCNN cascade (its own pyramid preprocessing).
    Mtcnn(Box<Mtcnn>),
}

/// The result of one frame.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(untagged)]
pub enum FrameOutput {
    Classes { top: Vec<(String, f32)> },
    Detections { detections: Vec<Detection> },
    Outputs { outputs: Vec<OutputStats> },
}

/// Summary statistics of one raw output tensor.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OutputStats {
    pub name: String,
    pub shape: Vec<usize>,
    pub min: f32,
    pub max: f32,
    pub mean: f32,
    pub non_finite: usize,
}

/// Stage times of one frame, in milliseconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct FrameTimes {
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub infer_ms: f64,
    pub post_ms: f64,
    /// From the frame being available (decoded; in real time: released at its timestamp) to
    /// the end of post-processing.
    pub end_to_end_ms: f64,
}

/// One processed frame, handed to the caller's callback.
pub struct FrameResult {
    pub index: u64,
    pub pts: Option<f64>,
    pub image: Arc<image::RgbImage>,
    pub output: FrameOutput,
    pub times: FrameTimes,
    /// Output tensors that hold NaN or infinite values (name, count).
    pub non_finite: Vec<(String, usize)>,
    /// What convolutional caching reused on this frame (cached engines only).
    pub cache: Option<crate::stream::FrameCacheStats>,
}

/// Options of [`run`].
#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    pub realtime: bool,
    /// Stop after this many frames from the source.
    pub max_frames: Option<u64>,
    /// Set to stop early (e.g. from a Ctrl-C handler); frames in flight are finished.
    pub stop: Arc<AtomicBool>,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(v: &[f64]) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
        Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: s[s.len() - 1],
        }
    }
}

/// What a pipeline run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub source: String,
    pub codec: Option<String>,
    pub width: u32,
    pub height: u32,
    pub source_fps: Option<f64>,
    pub frames_announced: Option<u64>,
    pub frames_decoded: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
    pub damaged_skipped: u64,
    pub realtime: bool,
    pub stopped_early: bool,
    pub wall_s: f64,
    pub throughput_fps: f64,
    pub infer_ms: Percentiles,
    pub end_to_end_ms: Percentiles,
    /// Frames with NaN/Inf in an output.
    pub frames_non_finite: u64,
    /// Mean share of dense MACs computed per frame (caching on; first frame excluded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_computed_fraction: Option<f64>,
}

/// A one-frame slot for real-time mode: `put` replaces a waiting frame (counted as dropped).
struct LatestSlot<T> {
    state: Mutex<(Option<T>, bool)>,
    ready: Condvar,
}

impl<T> LatestSlot<T> {
    fn new() -> Self {
        LatestSlot {
            state: Mutex::new((None, false)),
            ready: Condvar::new(),
        }
    }
    /// Stores `v`; returns true when it replaced an unconsumed value.
    fn put(&self, v: T) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let replaced = g.0.replace(v).is_some();
        self.ready.notify_one();
        replaced
    }
    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.ready.notify_all();
    }
    /// The next value, or None once closed and empty.
    fn take(&self) -> Option<T> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(v) = g.0.take() {
                return Some(v);
            }
            if g.1 {
                return None;
            }
            g = self.ready.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A frame moving through the stages.
struct InFlight {
    frame: Frame,
    available: Instant,
    times: FrameTimes,
    cache: Option<crate::stream::FrameCacheStats>,
}

enum Prepared {
    Tensor(Tensor),
    Image,
}

enum Inferred {
    Outputs(Vec<Tensor>),
    Detections(Vec<Detection>),
}

fn stats(name: &str, t: &Tensor) -> OutputStats {
    let v = t.as_f32().unwrap_or(&[]);
    let fin: Vec<f32> = v.iter().copied().filter(|x| x.is_finite()).collect();
    OutputStats {
        name: name.to_string(),
        shape: t.shape().to_vec(),
        min: fin.iter().copied().fold(f32::INFINITY, f32::min),
        max: fin.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        mean: (fin.iter().map(|&x| x as f64).sum::<f64>() / fin.len().max(1) as f64) as f32,
        non_finite: v.len() - fin.len(),
    }
}

/// Turns inference results into the frame's output; also lists outputs with NaN/Inf values.
fn analyse(
    inferred: Inferred,
    analysis: Option<&Analysis>,
    preset: Option<&Preset>,
    out_names: &[String],
    w: u32,
    h: u32,
) -> Result<(FrameOutput, Vec<(String, usize)>)> {
    let outs = match inferred {
        Inferred::Detections(d) => return Ok((FrameOutput::Detections { detections: d }, vec![])),
        Inferred::Outputs(o) => o,
    };
    let mut non_finite = Vec::new();
    for (n, t) in out_names.iter().zip(&outs) {
        let c = t
            .as_f32()
            .map(|v| v.iter().filter(|x| !x.is_finite()).count())
            .unwrap_or(0);
        if c > 0 {
            non_finite.push((n.clone(), c));
        }
    }
    let is_vector = |t: &Tensor| t.shape().iter().filter(|&&d| d > 1).count() == 1;
    let output = match analysis.ok_or_else(|| Error::invalid("pipeline: no analysis"))? {
        Analysis::Auto { labels, top } if outs.len() == 1 && is_vector(&outs[0]) => {
            FrameOutput::Classes {
                top: crate::classify::top_k(&outs[0], *top, labels)?,
            }
        }
        Analysis::Classify { labels, top } => FrameOutput::Classes {
            top: crate::classify::top_k(&outs[0], *top, labels)?,
        },
        Analysis::Detect(cfg) => {
            let preset = preset.ok_or_else(|| Error::invalid("pipeline: no preset"))?;
            FrameOutput::Detections {
                detections: cfg.decode(out_names, &outs, &preset.frame_map(w, h))?,
            }
        }
        Analysis::Raw | Analysis::Auto { .. } => FrameOutput::Outputs {
            outputs: out_names
                .iter()
                .zip(&outs)
                .map(|(n, t)| stats(n, t))
                .collect(),
        },
    };
    Ok((output, non_finite))
}

impl Engine {
    /// Processes one image synchronously (no pipeline): preprocess, infer, analyse. Returns the
    /// output and the outputs holding NaN/Inf values with their counts.
    pub fn process_image(
        &mut self,
        img: &image::RgbImage,
    ) -> Result<(FrameOutput, Vec<(String, usize)>)> {
        let (w, h) = img.dimensions();
        match self {
            Engine::Single {
                session,
                preset,
                analysis,
            } => {
                let outs = session.run(vec![preset.image_to_tensor(img)?])?;
                let names = session.model().output_names();
                analyse(
                    Inferred::Outputs(outs),
                    Some(analysis),
                    Some(preset),
                    &names,
                    w,
                    h,
                )
            }
            Engine::Cached {
                stream,
                preset,
                analysis,
            } => {
                let (outs, _) = stream.run_frame(preset.image_to_tensor(img)?)?;
                let names = stream.model().output_names();
                analyse(
                    Inferred::Outputs(outs),
                    Some(analysis),
                    Some(preset),
                    &names,
                    w,
                    h,
                )
            }
            Engine::Mtcnn(m) => {
                analyse(Inferred::Detections(m.detect(img)?), None, None, &[], w, h)
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `engine` on every frame of `source`, calling `on_result` on the caller's thread for each
/// processed frame in order. Returns when the source ends, `max_frames` is reached, `stop` is
/// set, or a stage fails (the error names the frame).
pub fn run(
    mut source: Box<dyn FrameSource>,
    engine: &mut Engine,
    opts: &PipelineOptions,
    on_result: &mut dyn FnMut(&FrameResult) -> Result<()>,
) -> Result<Summary> {
    let info: SourceInfo = source.info().clone();
    let (preset, analysis, out_names) = match engine {
        Engine::Single {
            session,
            preset,
            analysis,
        } => (
            Some(preset.clone()),
            Some(analysis.clone()),
            session.model().output_names(),
        ),
        Engine::Cached {
            stream,
            preset,
            analysis,
        } => (
            Some(preset.clone()),
            Some(analysis.clone()),
            stream.model().output_names(),
        ),
        Engine::Mtcnn(_) => (None, None, Vec::new()),
    };
    let dropped = AtomicU64::new(0);
    let decoded = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let slot: LatestSlot<InFlight> = LatestSlot::new();
    let started = Instant::now();
    let mut infer_ms = Vec::new();
    let mut e2e_ms = Vec::new();
    let mut processed = 0u64;
    let mut non_finite_frames = 0u64;
    let mut fractions = Vec::new();
    let mut first_error: Option<Error> = None;
    let halt = AtomicBool::new(false);

    std::thread::scope(|scope| -> Result<()> {
        let (to_pre, pre_rx): (SyncSender<InFlight>, Receiver<InFlight>) = sync_channel(2);
        let (to_infer, infer_rx) = sync_channel::<Result<(InFlight, Prepared)>>(1);
        let (to_post, post_rx) = sync_channel::<Result<(InFlight, Inferred, f64)>>(2);
        let user_stop = &opts.stop;
        let stop = &halt;
        let slot = &slot;
        let (dropped, decoded, skipped) = (&dropped, &decoded, &skipped);

        // Decode: pace in real time, count drops.
        let decoder = scope.spawn(move || -> Result<()> {
            let pace_origin = Instant::now();
            let mut first_pts = None;
            let result = loop {
                if stop.load(Ordering::Relaxed)
                    || user_stop.load(Ordering::Relaxed)
                    || opts
                        .max_frames
                        .is_some_and(|m| decoded.load(Ordering::Relaxed) >= m)
                {
                    break Ok(());
                }
                let t0 = Instant::now();
                let frame = match source.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(Error::invalid(e.to_string())),
                };
                let decode_ms = ms(t0.elapsed());
                decoded.fetch_add(1, Ordering::Relaxed);
                skipped.store(source.skipped(), Ordering::Relaxed);
                if opts.realtime && !info.live {
                    let t = frame
                        .pts
                        .or(info.fps.map(|f| frame.index as f64 / f))
                        .unwrap_or(0.0);
                    let origin = *first_pts.get_or_insert(t);
                    let due = pace_origin + Duration::from_secs_f64((t - origin).max(0.0));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                let item = InFlight {
                    frame,
                    available: Instant::now(),
                    times: FrameTimes {
                        decode_ms,
                        ..Default::default()
                    },
                    cache: None,
                };
                if opts.realtime {
                    if slot.put(item) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                } else if to_pre.send(item).is_err() {
                    break Ok(());
                }
            };
            slot.close();
            drop(to_pre);
            result
        });

        // Preprocess.
        let pre_preset = preset.clone();
        let realtime = opts.realtime;
        scope.spawn(move || loop {
            let item = if realtime {
                slot.take()
            } else {
                pre_rx.recv().ok()
            };
            let Some(mut item) = item else { break };
            let t0 = Instant::now();
            let prepared = match &pre_preset {
                Some(p) => p.image_to_tensor(&item.frame.image).map(Prepared::Tensor),
                None => Ok(Prepared::Image),
            };
            item.times.preprocess_ms = ms(t0.elapsed());
            let failed = prepared.is_err();
            if to_infer.send(prepared.map(|p| (item, p))).is_err() || failed {
                break;
            }
        });

        // Inference.
        scope.spawn(move || {
            for msg in infer_rx {
                let r = msg.and_then(|(mut item, prepared)| {
                    let t0 = Instant::now();
                    let out = match (&mut *engine, prepared) {
                        (Engine::Single { session, .. }, Prepared::Tensor(t)) => {
                            session.run(vec![t]).map(Inferred::Outputs)
                        }
                        (Engine::Cached { stream, .. }, Prepared::Tensor(t)) => {
                            stream.run_frame(t).map(|(o, st)| {
                                item.cache = Some(st);
                                Inferred::Outputs(o)
                            })
                        }
                        (Engine::Mtcnn(m), _) => {
                            m.detect(&item.frame.image).map(Inferred::Detections)
                        }
                        _ => Err(Error::invalid("pipeline: stage mismatch")),
                    };
                    let t = ms(t0.elapsed());
                    let index = item.frame.index;
                    out.map(|o| (item, o, t))
                        .map_err(|e| Error::invalid(format!("frame {index}: {e}")))
                });
                let failed = r.is_err();
                if to_post.send(r).is_err() || failed {
                    break;
                }
            }
        });

        // Post-processing and the caller's callback, on this thread.
        for msg in post_rx {
            let (mut item, inferred, infer_t) = match msg {
                Ok(v) => v,
                Err(e) => {
                    first_error.get_or_insert(e);
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            };
            let t0 = Instant::now();
            item.times.infer_ms = infer_t;
            let (w, h) = item.frame.image.dimensions();
            let analysed = analyse(
                inferred,
                analysis.as_ref(),
                preset.as_ref(),
                &out_names,
                w,
                h,
            );
            let (output, non_finite) = match analysed {
                Ok(o) => o,
                Err(e) => {
                    first_error
                        .get_or_insert(Error::invalid(format!("frame {}: {e}", item.frame.index)));
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            };
            item.times.post_ms = ms(t0.elapsed());
            item.times.end_to_end_ms = ms(item.available.elapsed());
            if !non_finite.is_empty() {
                non_finite_frames += 1;
            }
            if let Some(c) = &item.cache {
                if processed > 0 {
                    fractions.push(c.computed_fraction);
                }
            }
            infer_ms.push(item.times.infer_ms);
            e2e_ms.push(item.times.end_to_end_ms);
            processed += 1;
            let result = FrameResult {
                index: item.frame.index,
                pts: item.frame.pts,
                image: Arc::new(item.frame.image),
                output,
                times: item.times,
                non_finite,
                cache: item.cache,
            };
            if let Err(e) = on_result(&result) {
                first_error.get_or_insert(e);
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        // Unblock upstream stages if we left early, then collect the decoder's verdict.
        stop.store(true, Ordering::Relaxed);
        slot.close();
        match decoder.join() {
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Ok(Ok(())) => {}
            Err(_) => {
                first_error.get_or_insert(Error::invalid("the decoder thread panicked"));
            }
        }
        Ok(())
    })?;
    let stopped_early = opts.stop.load(Ordering::Relaxed);
    let _ = &halt;
    if let Some(e) = first_error {
        return Err(e);
    }
    let wall = started.elapsed().as_secs_f64();
    Ok(Summary {
        source: info.name,
        codec: info.codec,
        width: info.width,
        height: info.height,
        source_fps: info.fps,
        frames_announced: info.frames,
        frames_decoded: decoded.load(Ordering::Relaxed),
        frames_processed: processed,
        frames_dropped: dropped.load(Ordering::Relaxed),
        damaged_skipped: skipped.load(Ordering::Relaxed),
        realtime: opts.realtime,
        stopped_early,
        wall_s: wall,
        throughput_fps: processed as f64 / wall.max(1e-9),
        infer_ms: Percentiles::of(&infer_ms),
        end_to_end_ms: Percentiles::of(&e2e_ms),
        frames_non_finite: non_finite_frames,
        mean_computed_fraction: (!fractions.is_empty())
            .then(|| fractions.iter().sum::<f64>() / fractions.len() as f64),
    })
}
