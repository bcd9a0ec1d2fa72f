//! A session: a model prepared for a backend, re-prepared when the input shape changes.

use crate::hybrid::{HybridPlan, HybridStep};
use crate::Model;
use kestrel_core::prepare::{prepare_with_values, PrepareOptions};
use kestrel_core::{Error, Result, Tensor};
use kestrel_cpu::{ConvAlgo, CpuOptions, CpuPlan, ExecState, StepInfo};
use kestrel_gpu::{GpuContext, GpuConv, GpuPlan, Storage};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Which backend runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Cpu,
    /// The wgpu backend; session creation fails when no adapter can be opened.
    Gpu,
    /// The GPU when an adapter with compute shaders exists, else the CPU
    /// ([`Session::notice`] says which and why).
    Auto,
}

/// Storage precision of activations and weights (arithmetic stays f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    /// fp16 storage: on the CPU see [`kestrel_cpu::StoragePrecision::F16`]; on the GPU it
    /// needs SHADER_F16.
    F16,
    /// fp16 storage and native fp16 arithmetic where it is safe: on the CPU with AVX512-FP16
    /// (see [`kestrel_cpu::StoragePrecision::F16Arith`]); on the GPU with SHADER_F16, in the
    /// GEMM kernel (see [`kestrel_gpu::Storage::F16Arith`]).
    F16Arith,
}

/// The process-wide GPU context (opened once, shared by every GPU session).
fn gpu_context() -> std::result::Result<Arc<GpuContext>, String> {
    static CTX: OnceLock<std::result::Result<Arc<GpuContext>, String>> = OnceLock::new();
    CTX.get_or_init(|| GpuContext::new().map(Arc::new).map_err(|e| e.to_string()))
        .clone()
}

/// The GPU's fp16 storage: native `f16` where the adapter has SHADER_F16, else two halves per
/// 32-bit word (`pack2x16float`). `KESTREL_GPU_F16=packed|native` forces one (measurements,
/// and the packed path's tests on adapters that have SHADER_F16).
fn gpu_f16_storage(ctx: &GpuContext) -> Result<Storage> {
    match std::env::var("KESTREL_GPU_F16").as_deref() {
        Ok("packed") => Ok(Storage::F16Packed),
        Ok("native") => Ok(Storage::F16),
        Ok(other) if !other.is_empty() => Err(Error::invalid(format!(
            "KESTREL_GPU_F16='{other}': expected packed or native"
        ))),
        _ if ctx.shader_f16 => Ok(Storage::F16),
        _ => Ok(Storage::F16Packed),
    }
}

/// Graph inputs that feed only parameter slots (see `Op::is_param_slot`: Reshape targets, Slice
/// bounds, Resize scales ...) and have at most this many elements are specialised: the session
/// prepares the graph with their values as constants and re-prepares when they change.
pub const MAX_SPECIALISED_INPUT_ELEMS: usize = 1024;

/// What a plan was prepared for: input shapes and the values of specialised inputs.
#[derive(Clone, Debug, PartialEq)]
struct PlanKey {
    shapes: Vec<Vec<usize>>,
    values: Vec<Option<Tensor>>,
}

/// Options of a [`Session`].
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub backend: Backend,
    pub precision: Precision,
    /// CPU worker threads (0 = all cores).
    pub threads: usize,
    pub conv_algo: ConvAlgo,
    /// Run the graph optimisation passes (BN folding, fusion). Off only for debugging.
    pub optimize: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            backend: Backend::Cpu,
            precision: Precision::F32,
            threads: 0,
            conv_algo: ConvAlgo::Auto,
            optimize: true,
        }
    }
}

/// A model bound to a backend with its working memory. One session runs one inference at a
/// time; create one session per thread to run concurrently (they share the [`Model`]).
pub struct Session {
    model: Model,
    opts: SessionOptions,
    plan: Option<(PlanKey, CpuPlan)>,
    state: ExecState,
    gpu: Option<Arc<GpuContext>>,
    gpu_plan: Option<(PlanKey, HybridPlan)>,
    /// Plans are built for convolutional caching (see [`Session::set_for_caching`]).
    for_caching: bool,
    notice: Option<String>,
}

impl Session {
    /// Creates a session. Preparation happens at the first run (or [`Session::prepare`]) because
    /// it depends on the input shapes.
    pub fn new(model: &Model, opts: SessionOptions) -> Result<Session> {
        let (gpu, notice) = match opts.backend {
            Backend::Cpu => (None, None),
            Backend::Gpu => match gpu_context() {
                Ok(c) => {
                    let n = format!("backend: GPU, {}", c.describe());
                    (Some(c), Some(n))
                }
                Err(e) => return Err(Error::invalid(format!("--backend gpu: {e}"))),
            },
            Backend::Auto => match gpu_context() {
                Ok(c) if c.lost().is_some() => (
                    None,
                    Some(format!(
                        "backend: CPU (auto): the GPU is unusable ({})",
                        c.lost().unwrap_or_default()
                    )),
                ),
                Ok(c) if c.info.device_type == kestrel_gpu::wgpu::DeviceType::Cpu
                    && std::env::var_os("KESTREL_GPU_ALLOW_SOFTWARE").is_none() =>
                {
                    (
                    None,
                    Some(format!(
                        "backend: CPU (auto): the only GPU adapter is a software rasteriser ({}), slower than Kestrel's CPU kernels",
                        c.info.name
                    )),
                    )
                }
                Ok(c) => {
                    let n = format!("backend: GPU (auto), {}", c.describe());
                    (Some(c), Some(n))
                }
                Err(e) => (
                    None,
                    Some(format!("backend: CPU (auto): no usable GPU ({e})")),
                ),
            },
        };
        Ok(Session {
            model: model.clone(),
            opts,
            plan: None,
            state: ExecState::default(),
            gpu,
            gpu_plan: None,
            notice,
            for_caching: false,
        })
    }

    /// Marks the session as the dense half of a caching [`crate::Stream`]: its CPU plan keeps
    /// one step per node (no residual-Add fusion), as the caching executor requires.
    pub(crate) fn set_for_caching(&mut self) {
        self.for_caching = true;
        self.plan = None;
    }

    /// The backend this session was asked for.
    pub fn backend(&self) -> Backend {
        self.opts.backend
    }

    /// Which backend was picked and why (set for `Gpu` and `Auto`).
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// The GPU context of a GPU session (shared by every GPU session of the process).
    pub fn gpu_context(&self) -> Option<&Arc<GpuContext>> {
        self.gpu.as_ref()
    }

    /// True when this session runs on the GPU.
    pub fn on_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// CPU plan options of this session (also used for the CPU segments of a split GPU plan).
    fn cpu_options(&self) -> CpuOptions {
        CpuOptions {
            threads: self.opts.threads,
            conv_algo: self.opts.conv_algo,
            storage: match self.opts.precision {
                Precision::F32 => kestrel_cpu::StoragePrecision::F32,
                Precision::F16 => kestrel_cpu::StoragePrecision::F16,
                Precision::F16Arith => kestrel_cpu::StoragePrecision::F16Arith,
            },
            fuse_residual: !self.for_caching,
            region_kernels: self.for_caching,
        }
    }

    /// The GPU plan for these inputs, built when the key changed. Nodes the GPU cannot run
    /// are cut out to the CPU (see [`crate::hybrid`]); the split is reported on stderr and in
    /// [`Session::notice`].
    fn gpu_plan_for(&mut self, key: PlanKey) -> Result<&mut HybridPlan> {
        let stale = self.gpu_plan.as_ref().is_none_or(|(k, _)| *k != key);
        if stale {
            let popts = PrepareOptions {
                optimize: self.opts.optimize,
                ..Default::default()
            };
            let graph = prepare_with_values(self.model.graph(), &key.shapes, &key.values, &popts)?;
            let ctx = self.gpu.clone().expect("GPU session");
            let (storage, conv) = self.gpu_storage_and_conv(&ctx)?;
            let mut cpu = self.cpu_options();
            if cpu.storage == kestrel_cpu::StoragePrecision::F16Arith {
                cpu.storage = kestrel_cpu::StoragePrecision::F16;
            }
            let plan = HybridPlan::new(ctx.clone(), graph, storage, conv, &cpu)?;
            ctx.save_pipeline_cache();
            if plan.storage().is_none() {
                let msg =
                    "graph split: no node of this graph can run on the GPU; it runs on the CPU";
                eprintln!("kestrel: {msg}");
                self.add_notice(msg);
            } else if !plan.cpu_nodes().is_empty() {
                let t = plan.transfers();
                let mut msg = format!(
                    "graph split: {} node(s) run on the CPU, {} segments, {} host transfer(s) of {:.2} MB per run",
                    plan.cpu_nodes().len(),
                    plan.segment_count(),
                    t.len(),
                    t.iter().map(|t| t.bytes).sum::<u64>() as f64 / 1e6
                );
                for (node, op, why) in plan.cpu_nodes().iter().take(8) {
                    msg.push_str(&format!("\n  on CPU: '{node}' ({op}): {why}"));
                }
                if plan.cpu_nodes().len() > 8 {
                    msg.push_str(&format!("\n  ... and {} more", plan.cpu_nodes().len() - 8));
                }
                eprintln!("kestrel: {msg}");
                self.add_notice(&msg);
            }
            self.gpu_plan = Some((key, plan));
        }
        Ok(&mut self.gpu_plan.as_mut().expect("just set").1)
    }

    /// The GPU storage type and convolution choice for this session's options (with a
    /// notice when fp16 arithmetic or native fp16 storage falls back to packed storage).
    fn gpu_storage_and_conv(&mut self, ctx: &GpuContext) -> Result<(Storage, GpuConv)> {
        let storage = match self.opts.precision {
            Precision::F32 => Storage::F32,
            Precision::F16 => gpu_f16_storage(ctx)?,
            Precision::F16Arith if ctx.shader_f16 => Storage::F16Arith,
            Precision::F16Arith => {
                let msg = format!(
                    "fp16 arithmetic needs SHADER_F16, which {} lacks: f16 storage packed in 32-bit words, f32 arithmetic",
                    ctx.info.name
                );
                eprintln!("kestrel: {msg}");
                self.add_notice(&msg);
                Storage::F16Packed
            }
        };
        if storage == Storage::F16Packed {
            self.add_notice("fp16 storage packed two halves per 32-bit word (pack2x16float)");
        }
        let conv = match self.opts.conv_algo {
            ConvAlgo::Im2col => GpuConv::Im2col,
            ConvAlgo::Direct | ConvAlgo::ImplicitGemm => GpuConv::Direct,
            ConvAlgo::Winograd | ConvAlgo::Winograd2 | ConvAlgo::Winograd6 => GpuConv::Winograd,
            ConvAlgo::Auto | ConvAlgo::Reference | ConvAlgo::Fft => GpuConv::Auto,
        };
        Ok((storage, conv))
    }

    /// A persistent GPU plan (every value keeps its buffer) for a caching stream's region
    /// runs, for inputs of these shapes; `Ok(None)` when some node cannot run on the GPU
    /// (the stream then caches on the CPU and says so).
    pub(crate) fn gpu_region_plan(&mut self, shapes: &[Vec<usize>]) -> Result<Option<GpuPlan>> {
        let Some(ctx) = self.gpu.clone() else {
            return Ok(None);
        };
        let popts = PrepareOptions {
            optimize: self.opts.optimize,
            ..Default::default()
        };
        let values = shapes.iter().map(|_| None).collect::<Vec<_>>();
        let graph = prepare_with_values(self.model.graph(), shapes, &values, &popts)?;
        let (storage, conv) = self.gpu_storage_and_conv(&ctx)?;
        let plan = GpuPlan::new_persistent(ctx.clone(), &graph, storage, conv)?;
        ctx.save_pipeline_cache();
        Ok(plan.ok())
    }

    /// Appends `msg` to [`Session::notice`] (`; `-separated) unless it is already there (a plan
    /// rebuilt for new input shapes says the same things again).
    fn add_notice(&mut self, msg: &str) {
        self.notice = Some(match self.notice.take() {
            Some(n) if n.contains(msg) => n,
            Some(n) if !n.is_empty() => format!("{n}; {msg}"),
            _ => msg.to_string(),
        });
    }

    /// Runs on the GPU (cut around nodes the GPU cannot run), optionally timed: one time (ns)
    /// per row of [`Session::gpu_steps`].
    pub fn run_gpu_timed(
        &mut self,
        inputs: Vec<Tensor>,
        timed: bool,
    ) -> Result<(Vec<Tensor>, Option<Vec<f64>>)> {
        self.check_inputs(&inputs)?;
        let key = self.key_of(&inputs);
        let plan = self.gpu_plan_for(key)?;
        plan.run_timed(inputs, timed)
    }

    /// The rows of the current GPU plan: GPU dispatches, CPU steps of split-off nodes, and
    /// host-transfer rows.
    pub fn gpu_steps(&self) -> Vec<HybridStep> {
        self.gpu_plan
            .as_ref()
            .map(|(_, p)| p.steps())
            .unwrap_or_default()
    }

    /// The current GPU plan (after a GPU run).
    pub fn gpu_plan(&self) -> Option<&HybridPlan> {
        self.gpu_plan.as_ref().map(|(_, p)| p)
    }

    fn key_of(&self, inputs: &[Tensor]) -> PlanKey {
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let params = self.model.param_inputs();
        let values = inputs
            .iter()
            .zip(params)
            .map(|(t, &p)| (p && t.len() <= MAX_SPECIALISED_INPUT_ELEMS).then(|| t.clone()))
            .collect();
        PlanKey { shapes, values }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Prepares (shape inference, folding, passes, kernel choice, weight packing) for these input
    /// shapes unless already prepared for them.
    pub fn prepare(&mut self, shapes: &[Vec<usize>]) -> Result<&CpuPlan> {
        // same key as a run with these shapes and no specialised values (see `key_of`)
        self.prepare_key(PlanKey {
            shapes: shapes.to_vec(),
            values: shapes.iter().map(|_| None).collect(),
        })
    }

    fn prepare_key(&mut self, key: PlanKey) -> Result<&CpuPlan> {
        let stale = match &self.plan {
            Some((k, _)) => *k != key,
            None => true,
        };
        if stale {
            let popts = PrepareOptions {
                optimize: self.opts.optimize,
                // the CPU plan packs f16 weights straight from their f16 constants
                keep_f16_weights: true,
                ..Default::default()
            };
            let graph = prepare_with_values(self.model.graph(), &key.shapes, &key.values, &popts)?;
            let plan = CpuPlan::new(graph, &self.cpu_options())?;
            self.plan = Some((key, plan));
            self.state = ExecState::default();
        }
        Ok(&self.plan.as_ref().expect("just set").1)
    }

    fn check_inputs(&self, inputs: &[Tensor]) -> Result<()> {
        let g = self.model.graph();
        if inputs.len() != g.inputs.len() {
            return Err(Error::Input {
                name: "<inputs>".into(),
                msg: format!(
                    "the model has {} inputs, {} were given",
                    g.inputs.len(),
                    inputs.len()
                ),
            });
        }
        for (gi, t) in g.inputs.iter().zip(inputs) {
            if t.dtype() != gi.dtype {
                return Err(Error::Input {
                    name: g.values[gi.value].name.clone(),
                    msg: format!("expected {} elements, got {}", gi.dtype, t.dtype()),
                });
            }
        }
        Ok(())
    }

    /// Runs one inference; inputs in the model's input order.
    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_observed(inputs, &mut |_, _| {})
    }

    /// Runs one inference, calling `observe(step, elapsed)` after each step of the plan.
    pub fn run_observed(
        &mut self,
        inputs: Vec<Tensor>,
        observe: &mut (dyn FnMut(usize, Duration) + Send),
    ) -> Result<Vec<Tensor>> {
        self.check_inputs(&inputs)?;
        if self.gpu.is_some() {
            let keep = (self.opts.backend == Backend::Auto).then(|| inputs.clone());
            match self.run_gpu_timed(inputs, false) {
                Ok((o, _)) => return Ok(o),
                Err(Error::Device(why)) if keep.is_some() => {
                    self.fall_back_to_cpu(&why);
                    return self.run_observed(keep.expect("kept"), observe);
                }
                Err(e) => return Err(e),
            }
        }
        let key = self.key_of(&inputs);
        self.prepare_key(key)?;
        let (_, plan) = self.plan.as_ref().expect("prepared");
        plan.run_observed(&mut self.state, inputs, observe)
    }

    /// After a GPU fault in an `Auto` session: drops the GPU plan and continues on the CPU
    /// (says so once on stderr, and in [`Session::notice`]).
    fn fall_back_to_cpu(&mut self, why: &str) {
        let n = format!("backend: CPU (auto): the GPU failed ({why}); continuing on the CPU");
        eprintln!("kestrel: {n}");
        self.notice = Some(n);
        self.gpu = None;
        self.gpu_plan = None;
        if self.opts.precision == Precision::F16Arith && !kestrel_cpu::hgemm::available() {
            self.opts.precision = Precision::F16;
        }
    }

    /// Runs with inputs given by name.
    pub fn run_named(&mut self, mut named: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
        let mut ordered = Vec::new();
        for (name, _, _) in self.model.inputs() {
            let pos = named
                .iter()
                .position(|(n, _)| *n == name)
                .ok_or_else(|| Error::Input {
                    name: name.clone(),
                    msg: "missing".into(),
                })?;
            ordered.push(named.swap_remove(pos).1);
        }
        if let Some((extra, _)) = named.first() {
            return Err(Error::Input {
                name: extra.clone(),
                msg: "the model has no input of this name".into(),
            });
        }
        let outs = self.run(ordered)?;
        Ok(self.model.output_names().into_iter().zip(outs).collect())
    }

    /// Steps of the current plan (after a run or [`Session::prepare`]).
    pub fn steps(&self) -> Vec<StepInfo> {
        self.plan
            .as_ref()
            .map(|(_, p)| p.steps())
            .unwrap_or_default()
    }

    /// Activation memory held by the session's buffer pool, in bytes.
    pub fn pooled_bytes(&self) -> usize {
        self.state.pooled_bytes()
    }

    /// Worker threads of the current plan.
    pub fn threads(&self) -> usize {
        self.plan.as_ref().map_or(0, |(_, p)| p.threads())
    }
}
