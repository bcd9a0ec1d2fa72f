//! A prepared graph bound to GPU kernels: every layer's pipeline, parameters and bindings are
//! fixed at plan time, weights are uploaded once, activations live in device buffers reused by
//! liveness, and a run is one upload, one command buffer of dispatches and one read-back.

use crate::context::GpuContext;
use crate::kernels::{act_code, BigTile, Kernels, Shader, Storage};
use bytemuck::{Pod, Zeroable};
use kestrel_core::ops::conv::{conv_geometry, ConvGeometry};
use kestrel_core::ops::pool::pool_geometry;
use kestrel_core::ops::{BinaryOp, Unary};
use kestrel_core::{DType, Error, Graph, Op, Result, Tensor, ValueId};
use pointwise::PointwiseGemm;
use std::collections::HashMap;
use std::sync::Arc;
use wgpu::util::DeviceExt;

mod im2col;
mod pointwise;
pub mod region;
mod residual;

use region::{Band, RegionGraph, RegionKind, Restriction, StepRegion};

const WORKGROUP: u32 = 64;
/// Highest rank of broadcasting / transposing / padding kernels.
const MAX_RANK: usize = 8;

/// One dispatch of the plan.
pub(crate) struct GpuStep {
    pub node_name: String,
    pub op: String,
    pub shader: Shader,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: (u32, u32, u32),
    pub macs: u64,
    /// The values of the node this dispatch computes (for a fused Conv -> Add, the Add's
    /// output too): a region run skips the dispatch when all are clean.
    writes: Vec<ValueId>,
    /// How a region run restricts the dispatch to dirty rows; None: it runs whole.
    region: Option<StepRegion>,
}

/// A device buffer holding one or more values (views alias their source's buffer).
#[derive(Clone)]
struct Slot {
    buffer: wgpu::Buffer,
    /// Elements in the value.
    len: usize,
}

/// The GPU plan of a prepared graph.
pub struct GpuPlan {
    ctx: Arc<GpuContext>,
    storage: Storage,
    pub(crate) steps: Vec<GpuStep>,
    /// Per graph input: its slot, or None when the prepared graph made it a constant.
    inputs: Vec<Option<(ValueId, Slot, Vec<usize>)>>,
    outputs: Vec<(Slot, Vec<usize>, wgpu::Buffer)>,
    /// Device bytes of weights and activations.
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    /// Band propagation for region runs (persistent plans only).
    regions: Option<RegionGraph>,
    /// Persistent plans: the per-dispatch region slots on the device, and the words last
    /// written there (a run writes the buffer only when they change).
    region_words: Option<(wgpu::Buffer, std::sync::Mutex<Vec<u32>>)>,
}

/// Which convolution kernels a plan uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuConv {
    /// Per layer from its geometry (measured choices, docs/GPU.md).
    #[default]
    Auto,
    /// The im2col + GEMM baseline on every ungrouped layer (`--conv-algo im2col`).
    Im2col,
    /// The direct kernels only (tiled, 1x1 GEMM, plain direct): no Winograd.
    Direct,
    /// Winograd F(2x2,3x3) on every layer it applies to.
    Winograd,
}

impl GpuConv {
    /// The forced kernel: `KESTREL_GPU_CONV` (direct, tiled, tiled64, splitk, nosplit,
    /// winograd, nowinograd, im2col; for tests and measurements) when set, else this choice.
    fn force(self) -> Option<String> {
        if let Ok(v) = std::env::var("KESTREL_GPU_CONV") {
            return Some(v);
        }
        match self {
            GpuConv::Auto => None,
            GpuConv::Im2col => Some("im2col".into()),
            GpuConv::Direct => Some("nowinograd".into()),
            GpuConv::Winograd => Some("winograd".into()),
        }
    }
}

/// A node of the graph that the GPU backend cannot run, and why.
#[derive(Debug)]
pub struct Unsupported {
    /// Index of the node in the graph given to the plan.
    pub node: usize,
    pub error: Error,
}

fn unsupported(g: &Graph, node: usize, why: &str) -> Error {
    let n = &g.nodes[node];
    Error::invalid(format!(
        "the GPU backend cannot run node '{}' ({}): {why}",
        n.name, n.source_op
    ))
}

/// Workgroups for `n` invocations, split over x and y under the per-dimension limit.
fn grid(n: usize) -> (u32, u32, u32) {
    split((n as u64).div_ceil(WORKGROUP as u64))
}

/// `count` workgroups split over x and y under the per-dimension limit.
fn split(count: u64) -> (u32, u32, u32) {
    let wg = count.max(1);
    let x = wg.min(65535);
    (x as u32, wg.div_ceil(x) as u32, 1)
}

fn to_storage_bytes(v: &[f32], storage: Storage) -> Vec<u8> {
    let mut bytes: Vec<u8> = match storage {
        Storage::F32 => bytemuck::cast_slice(v).to_vec(),
        Storage::F16 | Storage::F16Packed | Storage::F16Arith => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
    };
    // buffers are bound in whole 4-byte words
    while !bytes.len().is_multiple_of(4) || bytes.is_empty() {
        bytes.push(0);
    }
    bytes
}

fn from_storage_bytes(b: &[u8], n: usize, storage: Storage) -> Vec<f32> {
    match storage {
        Storage::F32 => bytemuck::cast_slice::<u8, f32>(&b[..n * 4]).to_vec(),
        Storage::F16 | Storage::F16Packed | Storage::F16Arith => b[..n * 2]
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ConvParams {
    batch: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    ph: u32,
    pw: u32,
    cig: u32,
    cog: u32,
    act: u32,
    a0: f32,
    a1: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Conv1x1Params {
    batch: u32,
    c_in: u32,
    c_out: u32,
    plane: u32,
    tiles_p: u32,
    act: u32,
    a0: f32,
    a1: f32,
    ksplit: u32,
    k_per: u32,
    /// Values between the weight matrices of consecutive images (0: one shared matrix).
    w_batch: u32,
    /// 1: add the residual binding before the activation (fused Conv -> Add).
    has_res: u32,
}

/// Output tile edge of the tiled convolution (conv2d_tiled.wgsl: TILE).
const TILE: usize = 16;

/// Where a split-K convolution's reduction pass writes: the layer's output and bias, its size
/// (`total` values, planes of `plane`, `c_out` channels), the number of slices and the
/// activation code with its two parameters.
struct SplitKOutput<'a> {
    y: &'a wgpu::Buffer,
    bias: &'a wgpu::Buffer,
    total: usize,
    plane: usize,
    c_out: usize,
    ksplit: usize,
    act: (u32, f32, f32),
    /// A residual added before the activation (fused Conv -> Add), if any.
    residual: Option<&'a wgpu::Buffer>,
    /// How region runs restrict the partial sums' dispatch and the reduction (see
    /// [`region`]), and the output rows; None: both run whole.
    rows: Option<(RegionKind, RegionKind, usize)>,
}

/// Split-K aims for at least this many workgroups on a convolution (an H200 has 132 SMs; a
/// phone GPU far fewer, where the split simply does not trigger as often).
const SPLITK_TARGET_WORKGROUPS: usize = 256;

/// The split-K target in effect: [`SPLITK_TARGET_WORKGROUPS`], or `KESTREL_GPU_SPLITK_TARGET`
/// (read once; for tuning on a new GPU).
fn splitk_target() -> usize {
    static T: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        std::env::var("KESTREL_GPU_SPLITK_TARGET")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v: &usize| v > 0)
            .unwrap_or(SPLITK_TARGET_WORKGROUPS)
    })
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ConvTiledParams {
    batch: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    ph: u32,
    pw: u32,
    tiles_x: u32,
    patch_h: u32,
    patch_w: u32,
    act: u32,
    a0: f32,
    a1: f32,
    p0: u32,
    p1: u32,
    p2: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PoolParams {
    planes: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    ph: u32,
    pw: u32,
    kind: u32,
    count_pad: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    c_mode: u32,
    act: u32,
    a0: f32,
    a1: f32,
    alpha: f32,
    beta: f32,
    pad0: u32,
    pad1: u32,
}

/// Builds the plan step by step, tracking buffers by liveness.
struct Builder<'a> {
    ctx: &'a GpuContext,
    g: &'a Graph,
    kernels: Arc<Kernels>,
    storage: Storage,
    slots: HashMap<ValueId, Slot>,
    /// Free activation buffers by byte size.
    free: Vec<wgpu::Buffer>,
    /// How many live values use each buffer (keyed by the buffer's global id).
    users: HashMap<wgpu::Buffer, usize>,
    last_use: Vec<usize>,
    pinned: Vec<bool>,
    steps: Vec<GpuStep>,
    weight_bytes: u64,
    activation_bytes: u64,
    /// The first buffer that could not be made (over the adapter's limits or the memory
    /// budget); the plan is refused with it once building ends.
    fault: Option<String>,
    /// Device-memory budget in bytes (`KESTREL_GPU_MEMORY_LIMIT_MB`), if any.
    budget: Option<u64>,
    /// A convolution kernel forced for every layer it applies to (see [`GpuConv::force`]).
    force: Option<String>,
    /// Convolutions that also compute the residual Add after them (see [`residual`]).
    fused: HashMap<usize, residual::FusedAdd>,
    /// The Add and Relu nodes those convolutions compute.
    folded: std::collections::HashSet<usize>,
    /// A 4-byte buffer bound where a shader's optional input is unused.
    dummy: wgpu::Buffer,
    /// Persistent plan: no buffer is recycled, so each value outlives the run (region runs).
    keep_all: bool,
    /// Persistent plans: one [`REGION_SLOT_BYTES`] slot per dispatch, written once per region
    /// run; the restricted shaders read their slot as `vec4<u32>` (see [`Shader::reads_region`]).
    region_words: Option<wgpu::Buffer>,
    /// Dense plans: 16 zero bytes (whole maps) for every restricted shader.
    region_zero: wgpu::Buffer,
}

/// Bytes between the region slots of consecutive dispatches (the uniform-offset alignment).
const REGION_SLOT_BYTES: u64 = 256;

impl<'a> Builder<'a> {
    /// Whether a new buffer of `bytes` for `what` may be created: within the adapter's
    /// per-buffer limits and the memory budget. When not, the fault is recorded and the caller
    /// creates a 4-byte placeholder instead (the plan is refused at the end of building, before
    /// anything runs).
    fn admit(&mut self, what: &str, bytes: u64) -> bool {
        if self.fault.is_some() {
            return false;
        }
        let limits = self.ctx.device.limits();
        let max = limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size);
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        if bytes > max {
            self.fault = Some(format!(
                "'{what}' needs a {:.1} MB buffer; {} allows at most {:.1} MB per storage buffer",
                mb(bytes),
                self.ctx.info.name,
                mb(max)
            ));
            return false;
        }
        let total = self.weight_bytes + self.activation_bytes + bytes;
        if let Some(budget) = self.budget {
            if total > budget {
                self.fault = Some(format!(
                    "'{what}' would bring the plan to {:.2} MB of device memory, over the budget of {:.2} MB (KESTREL_GPU_MEMORY_LIMIT_MB)",
                    mb(total),
                    mb(budget)
                ));
                return false;
            }
        }
        true
    }

    /// A 4-byte stand-in for a buffer that was not admitted.
    fn placeholder(&self) -> wgpu::Buffer {
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("not admitted"),
            size: 4,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    fn upload(&mut self, label: &str, v: &[f32]) -> wgpu::Buffer {
        if !self.admit(label, (v.len() as u64 * self.storage.bytes()).max(4)) {
            return self.placeholder();
        }
        let bytes = to_storage_bytes(v, self.storage);
        self.weight_bytes += bytes.len() as u64;
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    /// A split-K convolution: `shader` (bindings params, x, weights, bias, output) sums each
    /// slice of input channels into a scratch buffer of `ksplit` outputs, then
    /// splitk_reduce.wgsl writes `y = act(sum of the slices + bias)`.
    fn dispatch_splitk(
        &mut self,
        node: usize,
        shader: Shader,
        [params, x, w]: [&wgpu::Buffer; 3],
        workgroups: (u32, u32, u32),
        macs: u64,
        out: SplitKOutput,
    ) {
        let label = format!("{}.splitk", self.g.nodes[node].name);
        let part = self.scratch(&label, out.total * out.ksplit);
        let dummy = self.dummy.clone();
        let mut first: Vec<&wgpu::Buffer> = vec![params, x, w, out.bias, &part];
        if matches!(
            shader,
            Shader::Conv1x1
                | Shader::Conv1x1Coop
                | Shader::Conv1x1CoopStaged
                | Shader::Conv1x1Big(_)
        ) {
            first.push(&dummy);
        }
        self.dispatch_wg(node, shader, &first, workgroups, macs);
        if let Some((partial, _, height)) = out.rows {
            self.restrictable(partial, height);
        }
        let (act, a0, a1) = out.act;
        let rp = self.uniform(&[
            out.total as u32,
            out.plane as u32,
            out.c_out as u32,
            out.ksplit as u32,
            act,
            a0.to_bits(),
            a1.to_bits(),
            out.residual.is_some() as u32,
        ]);
        self.dispatch(
            node,
            Shader::SplitKReduce,
            &[&rp, &part, out.bias, out.y, out.residual.unwrap_or(&dummy)],
            out.total,
            0,
        );
        if let Some((_, reduce, height)) = out.rows {
            self.restrictable(reduce, height);
        }
    }

    /// A scratch buffer of `len` values in the storage type, owned by one step (split-K partial
    /// sums).
    fn scratch(&mut self, label: &str, len: usize) -> wgpu::Buffer {
        let bytes = ((len as u64 * self.storage.bytes()).div_ceil(4) * 4).max(4);
        if !self.admit(label, bytes) {
            return self.placeholder();
        }
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    }

    fn upload_f32(&mut self, label: &str, v: &[f32]) -> wgpu::Buffer {
        let v = if v.is_empty() { &[0.0][..] } else { v };
        if !self.admit(label, (v.len() * 4) as u64) {
            return self.placeholder();
        }
        self.weight_bytes += (v.len() * 4) as u64;
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(v),
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    fn upload_u32(&self, v: &[u32]) -> wgpu::Buffer {
        let v = if v.is_empty() { &[0u32][..] } else { v };
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("dims"),
                contents: bytemuck::cast_slice(v),
                usage: wgpu::BufferUsages::STORAGE,
            })
    }

    fn uniform<T: Pod>(&self, p: &T) -> wgpu::Buffer {
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::bytes_of(p),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// Lets region runs restrict the last recorded dispatch (of a shader that reads the
    /// region binding, see [`Shader::reads_region`]) to the workgroups covering dirty output
    /// rows.
    fn restrictable(&mut self, kind: RegionKind, height: usize) {
        let step = self.steps.last_mut().expect("a dispatch was recorded");
        debug_assert!(step.shader.reads_region());
        step.region = Some(StepRegion { kind, height });
    }

    /// The buffer of a value: computed values have a slot; constants are uploaded on first use.
    fn input(&mut self, node: usize, v: Option<ValueId>) -> Result<Slot> {
        let v = v.ok_or_else(|| unsupported(self.g, node, "a required input is missing"))?;
        if let Some(s) = self.slots.get(&v) {
            return Ok(s.clone());
        }
        let c = self
            .g
            .constant(v)
            .ok_or_else(|| unsupported(self.g, node, "an input is not computed yet"))?;
        let data = c.cast(DType::F32);
        let s = Slot {
            buffer: self.upload(&self.g.values[v].name.clone(), data.as_f32()?),
            len: c.len(),
        };
        self.slots.insert(v, s.clone());
        Ok(s)
    }

    fn shape(&self, v: ValueId) -> Vec<usize> {
        self.g.values[v]
            .fact
            .as_ref()
            .map(|f| f.shape.clone())
            .unwrap_or_default()
    }

    /// A buffer for a new value: reused from the free list when one is large enough.
    fn output(&mut self, v: ValueId) -> Slot {
        let len: usize = self.shape(v).iter().product();
        let bytes = ((len as u64 * self.storage.bytes()).div_ceil(4) * 4).max(4);
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.size() >= bytes)
            .min_by_key(|(_, b)| b.size())
            .map(|(i, _)| i);
        let buffer = match best {
            Some(i) => self.free.swap_remove(i),
            None if !self.admit(&self.g.values[v].name.clone(), bytes) => self.placeholder(),
            None => {
                self.activation_bytes += bytes;
                self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&self.g.values[v].name),
                    size: bytes,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }
        };
        *self.users.entry(buffer.clone()).or_default() += 1;
        let s = Slot { buffer, len };
        self.slots.insert(v, s.clone());
        s
    }

    /// A view: the output shares the input's buffer.
    fn alias(&mut self, out: ValueId, src: &Slot) {
        *self.users.entry(src.buffer.clone()).or_default() += 1;
        self.slots.insert(
            out,
            Slot {
                buffer: src.buffer.clone(),
                len: src.len,
            },
        );
    }

    /// Releases the buffers of values whose last reader is step `at`.
    fn release_dead(&mut self, at: usize) {
        if self.keep_all {
            return;
        }
        let dead: Vec<ValueId> = self
            .slots
            .keys()
            .copied()
            .filter(|&v| self.g.constant(v).is_none() && !self.pinned[v] && self.last_use[v] <= at)
            .collect();
        for v in dead {
            let s = self.slots.remove(&v).expect("listed");
            let n = self.users.get_mut(&s.buffer).expect("tracked");
            *n -= 1;
            if *n == 0 {
                self.free.push(s.buffer);
            }
        }
    }

    fn dispatch(
        &mut self,
        node: usize,
        shader: Shader,
        entries: &[&wgpu::Buffer],
        n: usize,
        macs: u64,
    ) {
        self.dispatch_wg(node, shader, entries, grid(n), macs)
    }

    fn dispatch_wg(
        &mut self,
        node: usize,
        shader: Shader,
        entries: &[&wgpu::Buffer],
        workgroups: (u32, u32, u32),
        macs: u64,
    ) {
        let workgroups = if let Shader::Conv1x1Big(t) = shader {
            // conv1x1.wgsl's grid (64-pixel x 32-channel tiles) in the larger tiles
            (
                workgroups.0.div_ceil(t.pixels() as u32 / 64),
                workgroups.1.div_ceil(t.channels() as u32 / 32),
                workgroups.2,
            )
        } else {
            workgroups
        };
        let pipeline = match shader {
            Shader::Conv1x1Coop => self
                .kernels
                .conv1x1_coop()
                .expect("chosen only where built (Builder::gemm_shader)")
                .clone(),
            Shader::Conv1x1CoopStaged => self
                .kernels
                .conv1x1_coop_staged(self.ctx)
                .expect("chosen only where it exists (Builder::gemm_shader)")
                .clone(),
            Shader::Conv1x1Big(t) => self
                .kernels
                .conv1x1_big(self.ctx, t)
                .expect("chosen only where it exists (Builder::gemm_shader)")
                .clone(),
            _ => self.kernels.get(shader).clone(),
        };
        self.dispatch_pipeline(node, shader, pipeline, entries, workgroups, macs)
    }

    /// The GEMM shader for these parameters: conv1x1_coop.wgsl (cooperative matrices) where the
    /// kernels have it (a qualifying adapter, native f16 storage, not `KESTREL_GPU_COOP=0`) and its
    /// tiles fit and stay 16-byte aligned (16+ output channels and pixels, plane and input
    /// channels multiples of 8); its `STAGE_X` variant for other planes (input tiles copied
    /// through workgroup memory) only with `KESTREL_GPU_COOP_STAGED=1` (slower where measured).
    ///
    /// Otherwise, in dense plans with f32 arithmetic, conv1x1_big.wgsl (8x8 register tiles) on
    /// the largest grid whose tiles are at least 3/4 used and that still gives 256+ workgroups
    /// or, with a grid fixed by `KESTREL_GPU_BIG_TILE` ([`BigTile::fixed`]), on that grid where
    /// its tiles are at least half used and it gives 96+ workgroups (`KESTREL_GPU_BIG=0` turns
    /// it off). Region runs
    /// (persistent plans) restrict dispatches by conv1x1.wgsl's 64-pixel tiles, so they keep it.
    fn gemm_shader(&self, q: &Conv1x1Params) -> Shader {
        if self.kernels.conv1x1_coop().is_some() && q.c_out >= 16 && q.c_in.is_multiple_of(8) {
            if q.plane >= 16 && q.plane.is_multiple_of(8) {
                return Shader::Conv1x1Coop;
            }
            if coop_staged_enabled() && q.c_in as usize >= coop_staged_min_k() {
                return Shader::Conv1x1CoopStaged;
            }
        }
        if !big_gemm_enabled() || self.keep_all || self.storage == Storage::F16Arith {
            return Shader::Conv1x1;
        }
        let (plane, c_out) = (q.plane as usize, q.c_out as usize);
        let z = q.batch as usize * q.ksplit.max(1) as usize;
        // per GEMM (the default): the largest grid whose tiles are at least 3/4 used and that
        // still gives 256+ workgroups; one fixed grid: tiles at least half used, 96+ workgroups
        let fixed = BigTile::fixed();
        let candidates: &[BigTile] = match &fixed {
            Some(t) => std::slice::from_ref(t),
            None => &BigTile::VARIANTS,
        };
        let (need, min_wgs) = if fixed.is_some() { (2, 96) } else { (4, 256) };
        let min_wgs = big_min_workgroups().unwrap_or(min_wgs);
        let used = |n: usize, tile: usize| {
            (need * n) as f64 >= (need - 1) as f64 * (n.div_ceil(tile) * tile) as f64
        };
        candidates
            .iter()
            .find(|t| {
                let wgs = plane.div_ceil(t.pixels()) * c_out.div_ceil(t.channels()) * z;
                used(plane, t.pixels()) && used(c_out, t.channels()) && wgs >= min_wgs
            })
            .map_or(Shader::Conv1x1, |&t| Shader::Conv1x1Big(t))
    }

    /// The Winograd output tile of a layer: 4 (F(4x4,3x3)) in dense plans with f32 storage
    /// when the output is at least [`winograd4_min_side`] on both sides, else 2. fp16 storage keeps F(2x2): F(4x4)'s transforms
    /// grow values and rounding errors ~10x more.
    fn winograd_tile(&self, geom: &ConvGeometry) -> usize {
        let side = geom.output[1].min(geom.output[2]);
        let ok = !self.keep_all && self.storage == Storage::F32;
        if ok && side >= winograd4_min_side() {
            4
        } else {
            2
        }
    }

    /// [`Builder::dispatch_wg`] with a given pipeline of `shader` (a variant of it).
    fn dispatch_pipeline(
        &mut self,
        node: usize,
        shader: Shader,
        pipeline: wgpu::ComputePipeline,
        entries: &[&wgpu::Buffer],
        workgroups: (u32, u32, u32),
        macs: u64,
    ) {
        let layout = pipeline.get_bind_group_layout(0);
        let mut entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        if shader.reads_region() {
            // the step's slot of the region words (persistent plans), else a shared zero slot
            let (buffer, offset) = match &self.region_words {
                Some(b) => (b, REGION_SLOT_BYTES * self.steps.len() as u64),
                None => (&self.region_zero, 0),
            };
            entries.push(wgpu::BindGroupEntry {
                binding: entries.len() as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset,
                    size: std::num::NonZeroU64::new(16),
                }),
            });
        }
        let bind_group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&self.g.nodes[node].name),
                layout: &layout,
                entries: &entries,
            });
        let mut writes = self.g.nodes[node].outputs.clone();
        if let Some(f) = self.fused.get(&node) {
            writes.push(f.out);
        }
        self.steps.push(GpuStep {
            node_name: self.g.nodes[node].name.clone(),
            op: self.g.nodes[node].op.name().to_string(),
            shader,
            pipeline,
            bind_group,
            workgroups,
            macs,
            writes,
            region: None,
        });
    }

    fn unary(&mut self, node: usize, u: Option<Unary>) -> Result<()> {
        let n = &self.g.nodes[node];
        let x = self.input(node, n.inputs[0])?;
        let y = self.output(n.outputs[0]);
        let (act, a0, a1) = act_code(u);
        let p = self.uniform(&[x.len as u32, act, a0.to_bits(), a1.to_bits()]);
        self.dispatch(node, Shader::Unary, &[&p, &x.buffer, &y.buffer], x.len, 0);
        Ok(())
    }

    fn lower(&mut self, node: usize) -> Result<()> {
        let g = self.g;
        let n = &g.nodes[node];
        if self.folded.contains(&node) {
            return Ok(()); // an Add (or the Relu after it) computed by the convolution before
        }
        for &o in &n.outputs {
            let f = g.values[o]
                .fact
                .as_ref()
                .ok_or_else(|| unsupported(g, node, "no fact"))?;
            if f.dtype != DType::F32 {
                return Err(unsupported(
                    g,
                    node,
                    &format!("{} values stay on the CPU", f.dtype),
                ));
            }
        }
        let in_shape = |i: usize| n.inputs.get(i).copied().flatten().map(|v| self.shape(v));
        match &n.op {
            Op::Identity
            | Op::Dropout
            | Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze
            | Op::Unsqueeze => {
                let x = self.input(node, n.inputs[0])?;
                self.alias(n.outputs[0], &x);
            }
            Op::Conv(a) => {
                let xs = in_shape(0).unwrap_or_default();
                let w = n
                    .inputs
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|v| g.constant(v));
                let w = w.ok_or_else(|| unsupported(g, node, "weights must be constant"))?;
                let geom = conv_geometry(a, &xs, w.shape())?;
                if geom.input[0] != 1 || geom.kernel[0] != 1 {
                    return Err(unsupported(g, node, "only 1-D and 2-D convolutions"));
                }
                let bias = match n.inputs.get(2).copied().flatten() {
                    Some(b) => g
                        .constant(b)
                        .ok_or_else(|| unsupported(g, node, "bias must be constant"))?
                        .cast(DType::F32)
                        .as_f32()?
                        .to_vec(),
                    None => vec![0.0; geom.c_out],
                };
                let x = self.input(node, n.inputs[0])?;
                if winograd_applies(&geom, self.force.as_deref()) {
                    let w32 = w.cast(DType::F32);
                    let y = self.output(n.outputs[0]);
                    self.winograd(node, &geom, w32.as_f32()?, &bias, &x, &y, a.activation);
                    return Ok(());
                }
                let wb = self.upload(&format!("{}.w", n.name), w.cast(DType::F32).as_f32()?);
                let bb = self.upload_f32(&format!("{}.b", n.name), &bias);
                // a fused Conv -> Add [-> Relu] writes the Add's (or Relu's) output
                let fused = self.fused.get(&node).copied();
                let y = self.output(fused.map_or(n.outputs[0], |f| f.out));
                let (act, a0, a1) = act_code(fused.map_or(a.activation, |f| f.act));
                let residual = match fused {
                    Some(f) => Some(self.input(node, Some(f.residual))?),
                    None => None,
                };
                let p = ConvParams {
                    batch: geom.batch as u32,
                    c_in: geom.c_in as u32,
                    h: geom.input[1] as u32,
                    w: geom.input[2] as u32,
                    c_out: geom.c_out as u32,
                    oh: geom.output[1] as u32,
                    ow: geom.output[2] as u32,
                    kh: geom.kernel[1] as u32,
                    kw: geom.kernel[2] as u32,
                    sh: geom.stride[1] as u32,
                    sw: geom.stride[2] as u32,
                    dh: geom.dilation[1] as u32,
                    dw: geom.dilation[2] as u32,
                    ph: geom.pad_begin[1] as u32,
                    pw: geom.pad_begin[2] as u32,
                    cig: geom.c_in_per_group() as u32,
                    cog: geom.c_out_per_group() as u32,
                    act,
                    a0,
                    a1,
                };
                let plane = geom.output[1] * geom.output[2];
                let macs = (geom.batch
                    * geom.c_out
                    * plane
                    * geom.c_in_per_group()
                    * geom.kernel_volume()) as u64;
                let patch = |d: usize| {
                    (TILE - 1) * geom.stride[d] + (geom.kernel[d] - 1) * geom.dilation[d] + 1
                };
                let (patch_h, patch_w) = (patch(1), patch(2));
                // The tiled kernel wins on 3x3 stride-1 layers with enough tiles to fill the
                // GPU (measured on an H200: 3.9-6.7 TFLOP/s against 1.7-2.1 for the direct
                // kernel on VGG-16's 224-56 px layers); 1x1 layers stage too little work per
                // barrier and small maps give too few workgroups, so those stay direct.
                let tiles_x = geom.output[2].div_ceil(TILE);
                let tiles = tiles_x * geom.output[1].div_ceil(TILE);
                // a forced kernel (GpuConv, KESTREL_GPU_CONV) overrides the choice
                let force = self.force.clone();
                let stem = force.is_none() && stem_im2col() && geom.c_in <= 4;
                if (force.as_deref() == Some("im2col") || stem) && geom.group == 1 {
                    let fits = plane.div_ceil(64) <= 65535
                        && geom.c_out.div_ceil(32) <= 65535
                        && geom.batch <= 65535;
                    if fits {
                        self.im2col_conv(node, &geom, &p, &x, [&wb, &bb], &y, macs);
                        return Ok(());
                    }
                }
                // 1x1 stride-1 unpadded layers are a GEMM over pixels: the tiled GEMM kernel
                if conv1x1_applies(&geom, force.as_deref()) {
                    let gemm = PointwiseGemm {
                        batch: geom.batch,
                        k: geom.c_in,
                        plane,
                        c_out: geom.c_out,
                        act: (act, a0, a1),
                        macs,
                        row_width: geom.output[2],
                    };
                    let res = residual.as_ref().map(|r| &r.buffer);
                    self.pointwise_gemm(node, &gemm, &x.buffer, [&wb, &bb], &y.buffer, res);
                    return Ok(());
                }
                debug_assert!(
                    fused.is_none(),
                    "fusion is planned for 1x1 GEMM layers only"
                );
                let enough = tiles * geom.c_out.div_ceil(16) >= 64;
                // Split-K: maps too small to fill the GPU with output tiles (VGG-16's 28 and
                // 14 px layers) split their input channels over more workgroups (partial sums
                // in the storage type, added in f32 by a second pass)
                let wide_wgs = tiles * geom.c_out.div_ceil(64) * geom.batch;
                let ksplit = match force.as_deref() {
                    Some("splitk") => geom.c_in.div_ceil(4).clamp(1, 3),
                    Some("tiled" | "tiled64" | "direct" | "nosplit") => 1,
                    _ if geom.c_in >= 128 && geom.c_out >= 64 && wide_wgs < splitk_target() => {
                        (splitk_target() / wide_wgs.max(1)).clamp(1, geom.c_in / 64)
                    }
                    _ => 1,
                };
                // input channels per slice, a multiple of the kernel's chunk of 4
                let k_per = geom.c_in.div_ceil(ksplit).div_ceil(4) * 4;
                let ksplit = geom.c_in.div_ceil(k_per.max(1)).max(1);
                if geom.group == 1
                    && force.as_deref() != Some("direct")
                    && (enough
                        || ksplit > 1
                        || matches!(force.as_deref(), Some("tiled" | "tiled64")))
                    && geom.stride[1] == 1
                    && geom.stride[2] == 1
                    && geom.kernel[1] * geom.kernel[2] == 9
                    && patch_h <= 18
                    && patch_w <= 18
                    && geom.batch <= 65535
                {
                    let tp = ConvTiledParams {
                        tiles_x: tiles_x as u32,
                        patch_h: patch_h as u32,
                        patch_w: patch_w as u32,
                        p0: ksplit as u32,
                        p1: k_per as u32,
                        p2: 0,
                        ..conv_tiled_params(&p)
                    };
                    let pb = self.uniform(&tp);
                    // 64 output channels per workgroup where there are enough of them (a
                    // quarter of the input traffic) and still enough workgroups to fill the GPU
                    let wide = ksplit > 1
                        || force.as_deref() == Some("tiled64")
                        || (force.as_deref() != Some("tiled")
                            && geom.c_out >= 64
                            && tiles * geom.c_out.div_ceil(64) >= 64);
                    let (shader, ocb) = if wide {
                        (Shader::Conv2dTiled64, 64)
                    } else {
                        (Shader::Conv2dTiled, 16)
                    };
                    let wgs = (
                        tiles as u32,
                        geom.c_out.div_ceil(ocb) as u32,
                        (geom.batch * ksplit) as u32,
                    );
                    let fits = tiles <= 65535
                        && geom.c_out.div_ceil(ocb) <= 65535
                        && geom.batch * ksplit <= 65535;
                    if fits && ksplit > 1 {
                        let out = SplitKOutput {
                            y: &y.buffer,
                            bias: &bb,
                            total: geom.batch * geom.c_out * plane,
                            plane,
                            c_out: geom.c_out,
                            ksplit,
                            act: (act, a0, a1),
                            residual: None,
                            rows: Some((
                                RegionKind::Tiles {
                                    tiles_x: tiles_x as u32,
                                    tile: TILE as u32,
                                },
                                RegionKind::Flat {
                                    width: geom.output[2] as u32,
                                    groups: (geom.batch * geom.c_out) as u32,
                                    unit: 1,
                                },
                                geom.output[1],
                            )),
                        };
                        self.dispatch_splitk(node, shader, [&pb, &x.buffer, &wb], wgs, macs, out);
                        return Ok(());
                    }
                    if fits {
                        self.dispatch_wg(
                            node,
                            shader,
                            &[&pb, &x.buffer, &wb, &bb, &y.buffer],
                            wgs,
                            macs,
                        );
                        let kind = RegionKind::Tiles {
                            tiles_x: tiles_x as u32,
                            tile: TILE as u32,
                        };
                        self.restrictable(kind, geom.output[1]);
                        return Ok(());
                    }
                }
                if let Some(dp) = depthwise_tile(&geom, force.as_deref()) {
                    let tp = ConvTiledParams {
                        tiles_x: dp.tiles_x as u32,
                        patch_h: dp.patch_h as u32,
                        patch_w: dp.patch_w as u32,
                        p0: 0,
                        p1: 0,
                        p2: 0,
                        ..conv_tiled_params(&p)
                    };
                    let pb = self.uniform(&tp);
                    self.dispatch_wg(
                        node,
                        Shader::Depthwise,
                        &[&pb, &x.buffer, &wb, &bb, &y.buffer],
                        (dp.tiles as u32, geom.c_out as u32, geom.batch as u32),
                        macs,
                    );
                    let kind = RegionKind::Tiles {
                        tiles_x: dp.tiles_x as u32,
                        tile: 16,
                    };
                    self.restrictable(kind, geom.output[1]);
                    return Ok(());
                }
                if im2col_pays(&geom, force.as_deref()) {
                    self.im2col_conv(node, &geom, &p, &x, [&wb, &bb], &y, macs);
                    return Ok(());
                }
                let pb = self.uniform(&p);
                let invocations = geom.batch * geom.c_out.div_ceil(4) * plane;
                let macs = (geom.batch
                    * geom.c_out
                    * plane
                    * geom.c_in_per_group()
                    * geom.kernel_volume()) as u64;
                self.dispatch(
                    node,
                    Shader::Conv2d,
                    &[&pb, &x.buffer, &wb, &bb, &y.buffer],
                    invocations,
                    macs,
                );
                let kind = RegionKind::Flat {
                    width: geom.output[2] as u32,
                    groups: (geom.batch * geom.c_out.div_ceil(4)) as u32,
                    unit: 1,
                };
                self.restrictable(kind, geom.output[1]);
            }
            Op::MaxPool(_) | Op::AveragePool(_) | Op::GlobalAveragePool | Op::GlobalMaxPool => {
                let xs = in_shape(0).unwrap_or_default();
                if xs.len() != 4 && xs.len() != 3 {
                    return Err(unsupported(g, node, "only 1-D and 2-D pooling"));
                }
                let (h, w) = if xs.len() == 4 {
                    (xs[2], xs[3])
                } else {
                    (1, xs[2])
                };
                let planes = xs[0] * xs[1];
                let (p, out_plane) = match &n.op {
                    Op::MaxPool(a) | Op::AveragePool(a) => {
                        let pg = pool_geometry(a, &xs)?;
                        let kind = matches!(n.op, Op::AveragePool(_)) as u32;
                        (
                            PoolParams {
                                planes: planes as u32,
                                h: h as u32,
                                w: w as u32,
                                oh: pg.output[1] as u32,
                                ow: pg.output[2] as u32,
                                kh: pg.kernel[1] as u32,
                                kw: pg.kernel[2] as u32,
                                sh: pg.stride[1] as u32,
                                sw: pg.stride[2] as u32,
                                dh: pg.dilation[1] as u32,
                                dw: pg.dilation[2] as u32,
                                ph: pg.pad_begin[1] as u32,
                                pw: pg.pad_begin[2] as u32,
                                kind,
                                count_pad: a.count_include_pad as u32,
                                pad: 0,
                            },
                            pg.output[1] * pg.output[2],
                        )
                    }
                    _ => (
                        PoolParams {
                            planes: planes as u32,
                            h: h as u32,
                            w: w as u32,
                            oh: 1,
                            ow: 1,
                            kh: h as u32,
                            kw: w as u32,
                            sh: 1,
                            sw: 1,
                            dh: 1,
                            dw: 1,
                            ph: 0,
                            pw: 0,
                            kind: matches!(n.op, Op::GlobalAveragePool) as u32,
                            count_pad: 0,
                            pad: 0,
                        },
                        1,
                    ),
                };
                let x = self.input(node, n.inputs[0])?;
                let y = self.output(n.outputs[0]);
                let pb = self.uniform(&p);
                self.dispatch(
                    node,
                    Shader::Pool2d,
                    &[&pb, &x.buffer, &y.buffer],
                    planes * out_plane,
                    0,
                );
            }
            Op::Unary(u) => self.unary(node, Some(*u))?,
            Op::Clip => {
                let bound = |i: usize, d: f32| -> Result<f32> {
                    match n.inputs.get(i).copied().flatten() {
                        None => Ok(d),
                        Some(v) => Ok(g
                            .constant(v)
                            .ok_or_else(|| unsupported(g, node, "bounds must be constant"))?
                            .cast(DType::F32)
                            .as_f32()?[0]),
                    }
                };
                let (min, max) = (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?);
                self.unary(node, Some(Unary::Clip { min, max }))?
            }
            Op::Binary(op) if *op != BinaryOp::Equal => {
                let code = match op {
                    BinaryOp::Add => 0,
                    BinaryOp::Sub => 1,
                    BinaryOp::Mul => 2,
                    _ => 3,
                };
                self.binary(node, code)?
            }
            Op::PRelu => self.binary(node, 4)?,
            Op::Softmax { axis, legacy } => {
                let xs = in_shape(0).unwrap_or_default();
                let r = xs.len() as i64;
                let ax = if *axis < 0 { axis + r } else { *axis } as usize;
                let (outer, len, inner) = if *legacy {
                    (xs[..ax].iter().product(), xs[ax..].iter().product(), 1)
                } else {
                    (
                        xs[..ax].iter().product::<usize>(),
                        xs[ax],
                        xs[ax + 1..].iter().product::<usize>(),
                    )
                };
                let x = self.input(node, n.inputs[0])?;
                let y = self.output(n.outputs[0]);
                let pb = self.uniform(&[outer as u32, len as u32, inner as u32, 0u32]);
                self.dispatch(
                    node,
                    Shader::Softmax,
                    &[&pb, &x.buffer, &y.buffer],
                    outer * inner,
                    0,
                );
            }
            Op::Gemm(a) => {
                let xs = in_shape(0).unwrap_or_default();
                let b = n
                    .inputs
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|v| g.constant(v));
                let b = b.ok_or_else(|| unsupported(g, node, "B must be constant"))?;
                let (bs, bv) = (b.shape().to_vec(), b.cast(DType::F32));
                let bv = bv.as_f32()?;
                let (m, k) = if a.trans_a {
                    (xs[1], xs[0])
                } else {
                    (xs[0], xs[1])
                };
                let nn = if a.trans_b { bs[0] } else { bs[1] };
                // Bt[n][k]
                let bt: Vec<f32> = if a.trans_b {
                    bv.to_vec()
                } else {
                    (0..nn)
                        .flat_map(|j| (0..k).map(move |i| (i, j)))
                        .map(|(i, j)| bv[i * nn + j])
                        .collect()
                };
                let (c_mode, cv) = match n.inputs.get(2).copied().flatten() {
                    None => (0, vec![0.0]),
                    Some(c) => {
                        let ct = g
                            .constant(c)
                            .ok_or_else(|| unsupported(g, node, "C must be constant"))?
                            .cast(DType::F32);
                        let len = ct.len();
                        let v = ct.as_f32()?.to_vec();
                        let mode = if len == nn && ct.shape().last() == Some(&nn) {
                            1
                        } else if len == m * nn {
                            2
                        } else if len == m {
                            3
                        } else if len == 1 {
                            // scalar: broadcast as C[n]
                            return self.gemm(node, m, nn, k, a, bt, 1, vec![v[0]; nn]);
                        } else {
                            return Err(unsupported(g, node, "C does not broadcast to [M, N]"));
                        };
                        (mode, v)
                    }
                };
                self.gemm(node, m, nn, k, a, bt, c_mode, cv)?;
            }
            Op::Concat { axis } => {
                let out = n.outputs[0];
                let os = self.shape(out);
                let r = os.len() as i64;
                let ax = if *axis < 0 { axis + r } else { *axis } as usize;
                let outer: usize = os[..ax].iter().product();
                let total: usize = os[ax..].iter().product();
                let ins: Vec<(Slot, usize)> = n
                    .inputs
                    .iter()
                    .map(|&v| {
                        let s = self.input(node, v)?;
                        let chunk = s.len / outer.max(1);
                        Ok((s, chunk))
                    })
                    .collect::<Result<_>>()?;
                let y = self.output(out);
                let mut off = 0;
                for (s, chunk) in ins {
                    let pb = self.uniform(&[outer as u32, chunk as u32, total as u32, off as u32]);
                    self.dispatch(
                        node,
                        Shader::Concat,
                        &[&pb, &s.buffer, &y.buffer],
                        outer * chunk,
                        0,
                    );
                    off += chunk;
                }
            }
            Op::Transpose { perm } => {
                let xs = in_shape(0).unwrap_or_default();
                let r = xs.len();
                let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
                let strides = kestrel_core::strides_of(&xs);
                let os: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
                let mut dims: Vec<u32> = os.iter().map(|&d| d as u32).collect();
                dims.extend(perm.iter().map(|&p| strides[p] as u32));
                dims.extend(std::iter::repeat_n(0, r));
                dims.extend(os.iter().map(|&d| d as u32));
                self.gather(node, dims, r, 0.0)?;
            }
            Op::Pad { mode } => {
                if *mode != kestrel_core::ops::movement::PadMode::Constant {
                    return Err(unsupported(g, node, "only constant padding"));
                }
                let xs = in_shape(0).unwrap_or_default();
                let r = xs.len();
                let pads = n
                    .inputs
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|v| g.constant(v));
                let pads = pads.ok_or_else(|| unsupported(g, node, "pads must be constant"))?;
                let pads = pads.cast(DType::I64);
                let pads: Vec<i64> = pads.as_slice::<i64>()?.to_vec();
                if n.inputs.get(3).copied().flatten().is_some()
                    || pads.len() != 2 * r
                    || pads.iter().any(|&p| p < 0)
                {
                    return Err(unsupported(
                        g,
                        node,
                        "pads must cover every axis and be non-negative",
                    ));
                }
                let value = match n.inputs.get(2).copied().flatten() {
                    Some(v) => g
                        .constant(v)
                        .ok_or_else(|| unsupported(g, node, "the pad value must be constant"))?
                        .cast(DType::F32)
                        .as_f32()?
                        .first()
                        .copied()
                        .unwrap_or(0.0),
                    None => 0.0,
                };
                let os = self.shape(n.outputs[0]);
                let strides = kestrel_core::strides_of(&xs);
                let mut dims: Vec<u32> = os.iter().map(|&d| d as u32).collect();
                dims.extend(strides.iter().map(|&s| s as u32));
                dims.extend(pads[..r].iter().map(|&p| p as u32));
                dims.extend(xs.iter().map(|&d| d as u32));
                self.gather(node, dims, r, value)?;
            }
            _ => return Err(unsupported(g, node, "no GPU kernel for this op yet")),
        }
        Ok(())
    }

    /// Winograd F(2x2,3x3): input transform (winograd_in.wgsl) into `[16][C][tiles]`, 16
    /// GEMMs with the weights transformed here once (`U = G g G^T`, `[16][K][C]`, batched
    /// conv1x1.wgsl), output transform with bias and activation (winograd_out.wgsl). 2.25x
    /// fewer multiplications than the direct kernels, for two passes over 4x the input's size.
    /// F(4x4,3x3) where [`Builder::winograd_tile`] picks it: 36 GEMMs (winograd4_in.wgsl,
    /// winograd4_out.wgsl), 4x fewer multiplications, transforms over 2.25x the input's size.
    #[allow(clippy::too_many_arguments)]
    fn winograd(
        &mut self,
        node: usize,
        geom: &ConvGeometry,
        w: &[f32],
        bias: &[f32],
        x: &Slot,
        y: &Slot,
        activation: Option<Unary>,
    ) {
        let name = self.g.nodes[node].name.clone();
        let (c, k) = (geom.c_in, geom.c_out);
        let (oh, ow) = (geom.output[1], geom.output[2]);
        let tile = self.winograd_tile(geom);
        let nxi = (tile + 2) * (tile + 2);
        let (shader_in, shader_out) = if tile == 4 {
            (Shader::Winograd4In, Shader::Winograd4Out)
        } else {
            (Shader::WinogradIn, Shader::WinogradOut)
        };
        let (tiles_h, tiles_w) = (oh.div_ceil(tile), ow.div_ceil(tile));
        let t_all = geom.batch * tiles_h * tiles_w;
        let u = if tile == 4 {
            winograd4_weights(w, k, c)
        } else {
            winograd_weights(w, k, c)
        };
        let ub = self.upload(&format!("{name}.wino_u"), &u);
        let bb = self.upload_f32(&format!("{name}.b"), bias);
        let zero = self.upload_f32(&format!("{name}.zero"), &vec![0.0; k]);
        let v = self.scratch(&format!("{name}.wino_v"), nxi * c * t_all);
        let m = self.scratch(&format!("{name}.wino_m"), nxi * k * t_all);
        let ip = self.uniform(&[
            c as u32,
            geom.input[1] as u32,
            geom.input[2] as u32,
            tiles_w as u32,
            tiles_h as u32,
            t_all as u32,
            geom.pad_begin[1] as u32,
            geom.pad_begin[2] as u32,
        ]);
        self.dispatch(node, shader_in, &[&ip, &x.buffer, &v], c * t_all, 0);
        // region runs (one image): rows of 2x2 tiles, numbered ty * tiles_w + tx (F(4x4) runs
        // in dense plans only)
        let one_image = geom.batch == 1 && tile == 2;
        let tile_rows = |groups: usize| RegionKind::Flat {
            width: tiles_w as u32,
            groups: groups as u32,
            unit: 2,
        };
        let gemm_rows = RegionKind::Pixels {
            width: tiles_w as u32,
            per_wg: 64,
            unit: 2,
        };
        if one_image {
            self.restrictable(tile_rows(c), oh);
        }
        let q = Conv1x1Params {
            batch: nxi as u32,
            c_in: c as u32,
            c_out: k as u32,
            plane: t_all as u32,
            tiles_p: t_all.div_ceil(64) as u32,
            act: 255,
            a0: 0.0,
            a1: 0.0,
            ksplit: 1,
            k_per: c as u32,
            w_batch: (k * c) as u32,
            has_res: 0,
        };
        let macs = (geom.batch * k * oh * ow * c * 9) as u64;
        // split-K where the GEMMs alone give too few workgroups (14x14 maps: 49 tiles)
        let wgs1 = t_all.div_ceil(64) * k.div_ceil(32) * nxi;
        let target = winograd_splitk_target();
        let ksplit = if c >= 256 && wgs1 < target {
            (target / wgs1).clamp(1, c / 128)
        } else {
            1
        };
        let k_per = c.div_ceil(ksplit).div_ceil(16) * 16;
        let ksplit = c.div_ceil(k_per).max(1);
        let q = Conv1x1Params {
            ksplit: ksplit as u32,
            k_per: k_per as u32,
            ..q
        };
        let qb = self.uniform(&q);
        let wgs = (
            t_all.div_ceil(64) as u32,
            k.div_ceil(32) as u32,
            (nxi * ksplit) as u32,
        );
        if ksplit > 1 {
            let out = SplitKOutput {
                y: &m,
                bias: &zero,
                total: nxi * k * t_all,
                plane: t_all,
                c_out: k,
                ksplit,
                act: (255, 0.0, 0.0),
                residual: None,
                rows: one_image.then(|| (gemm_rows, tile_rows(16 * k), oh)),
            };
            let shader = self.gemm_shader(&q);
            self.dispatch_splitk(node, shader, [&qb, &v, &ub], wgs, macs, out);
        } else {
            let dummy = self.dummy.clone();
            let shader = self.gemm_shader(&q);
            self.dispatch_wg(node, shader, &[&qb, &v, &ub, &zero, &m, &dummy], wgs, macs);
            if one_image {
                self.restrictable(gemm_rows, oh);
            }
        }
        let (act, a0, a1) = act_code(activation);
        let op = self.uniform(&[
            k as u32,
            oh as u32,
            ow as u32,
            tiles_w as u32,
            tiles_h as u32,
            t_all as u32,
            act,
            a0.to_bits(),
            a1.to_bits(),
            0,
            0,
            0,
        ]);
        self.dispatch(node, shader_out, &[&op, &m, &bb, &y.buffer], k * t_all, 0);
        if one_image {
            self.restrictable(tile_rows(k), oh);
        }
    }

    fn gemm(
        &mut self,
        node: usize,
        m: usize,
        nn: usize,
        k: usize,
        a: &kestrel_core::ops::GemmAttrs,
        bt: Vec<f32>,
        c_mode: u32,
        cv: Vec<f32>,
    ) -> Result<()> {
        let n = &self.g.nodes[node];
        let x = self.input(node, n.inputs[0])?;
        let bb = self.upload(&format!("{}.b", n.name), &bt);
        let cb = self.upload_f32(&format!("{}.c", n.name), &cv);
        let y = self.output(n.outputs[0]);
        let (act, a0, a1) = act_code(a.activation);
        let p = GemmParams {
            m: m as u32,
            n: nn as u32,
            k: k as u32,
            trans_a: a.trans_a as u32,
            c_mode,
            act,
            a0,
            a1,
            alpha: a.alpha,
            beta: a.beta,
            pad0: 0,
            pad1: 0,
        };
        let pb = self.uniform(&p);
        // one workgroup per output element (gemm.wgsl)
        self.dispatch_wg(
            node,
            Shader::Gemm,
            &[&pb, &x.buffer, &bb, &cb, &y.buffer],
            split((m * nn) as u64),
            (m * nn * k) as u64,
        );
        Ok(())
    }

    fn gather(&mut self, node: usize, dims: Vec<u32>, rank: usize, value: f32) -> Result<()> {
        if rank > MAX_RANK || rank == 0 {
            return Err(unsupported(self.g, node, "rank above 8"));
        }
        let n = &self.g.nodes[node];
        let x = self.input(node, n.inputs[0])?;
        let y = self.output(n.outputs[0]);
        let db = self.upload_u32(&dims);
        let pb = self.uniform(&[y.len as u32, rank as u32, value.to_bits(), 0u32]);
        self.dispatch(
            node,
            Shader::Gather,
            &[&pb, &x.buffer, &db, &y.buffer],
            y.len,
            0,
        );
        Ok(())
    }

    fn binary(&mut self, node: usize, code: u32) -> Result<()> {
        let n = &self.g.nodes[node];
        let os = self.shape(n.outputs[0]);
        let r = os.len().max(1);
        if r > MAX_RANK {
            return Err(unsupported(self.g, node, "rank above 8"));
        }
        let bstrides = |v: Option<ValueId>| -> Vec<u32> {
            let s = v.map(|v| self.shape(v)).unwrap_or_default();
            kestrel_core::ops::binary::broadcast_strides(&s, &os)
                .into_iter()
                .map(|x| x as u32)
                .collect()
        };
        let (sa, sb) = (bstrides(n.inputs[0]), bstrides(n.inputs[1]));
        let a = self.input(node, n.inputs[0])?;
        let b = self.input(node, n.inputs[1])?;
        let y = self.output(n.outputs[0]);
        let mut dims: Vec<u32> = if os.is_empty() {
            vec![1]
        } else {
            os.iter().map(|&d| d as u32).collect()
        };
        let pad = |mut v: Vec<u32>| {
            v.resize(r, 0);
            v
        };
        dims.extend(pad(sa));
        dims.extend(pad(sb));
        let db = self.upload_u32(&dims);
        let pb = self.uniform(&[y.len as u32, code, r as u32, 0u32]);
        self.dispatch(
            node,
            Shader::Binary,
            &[&pb, &a.buffer, &b.buffer, &db, &y.buffer],
            y.len,
            0,
        );
        Ok(())
    }
}

impl GpuPlan {
    /// Binds a prepared graph (every value has a fact) to GPU kernels. Fails, naming the node,
    /// when an op has no GPU kernel (nothing falls back silently).
    ///
    /// Device errors while creating buffers and pipelines (out of memory, a buffer over the
    /// adapter's limits) and device loss are `Err(Error::Device)`.
    pub fn new(
        ctx: Arc<GpuContext>,
        graph: &Graph,
        storage: Storage,
        conv: GpuConv,
    ) -> Result<GpuPlan> {
        Self::new_or_unsupported(ctx, graph, storage, conv)?.map_err(|u| u.error)
    }

    /// Like [`GpuPlan::new`], but a node the GPU cannot run is reported apart from device
    /// faults (outer `Err`), so that a caller can split the graph at that node and run it on
    /// another backend.
    pub fn new_or_unsupported(
        ctx: Arc<GpuContext>,
        graph: &Graph,
        storage: Storage,
        conv: GpuConv,
    ) -> Result<std::result::Result<GpuPlan, Unsupported>> {
        Self::build_guarded(ctx, graph, storage, conv, false)
    }

    /// A persistent plan for region runs ([`GpuPlan::run_region`], convolutional caching):
    /// like [`GpuPlan::new_or_unsupported`], but every value keeps its own device buffer (no
    /// recycling by liveness: more device memory, see `activation_bytes`), so each buffer still
    /// holds its value after a run.
    pub fn new_persistent(
        ctx: Arc<GpuContext>,
        graph: &Graph,
        storage: Storage,
        conv: GpuConv,
    ) -> Result<std::result::Result<GpuPlan, Unsupported>> {
        Self::build_guarded(ctx, graph, storage, conv, true)
    }

    /// [`GpuPlan::build`] inside the context's device-error guard.
    fn build_guarded(
        ctx: Arc<GpuContext>,
        graph: &Graph,
        storage: Storage,
        conv: GpuConv,
        persistent: bool,
    ) -> Result<std::result::Result<GpuPlan, Unsupported>> {
        let c = ctx.clone();
        c.guarded("preparing the plan", move || {
            Self::build(ctx, graph, storage, conv, persistent)
        })
    }

    fn build(
        ctx: Arc<GpuContext>,
        graph: &Graph,
        storage: Storage,
        conv: GpuConv,
        persistent: bool,
    ) -> Result<std::result::Result<GpuPlan, Unsupported>> {
        if matches!(storage, Storage::F16 | Storage::F16Arith) && !ctx.shader_f16 {
            return Err(Error::invalid(format!(
                "native fp16 storage needs SHADER_F16, which {} does not offer (packed f16 storage works without it)",
                ctx.info.name
            )));
        }
        let g = graph;
        let mut last_use = vec![0usize; g.values.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for v in n.inputs.iter().flatten() {
                last_use[*v] = i;
            }
        }
        let mut pinned = vec![false; g.values.len()];
        for &o in &g.outputs {
            pinned[o] = true;
        }
        let mut b = Builder {
            ctx: &ctx,
            g,
            kernels: ctx.kernels(storage),
            storage,
            slots: HashMap::new(),
            free: Vec::new(),
            users: HashMap::new(),
            last_use,
            pinned,
            steps: Vec::new(),
            weight_bytes: 0,
            activation_bytes: 0,
            fault: None,
            force: conv.force(),
            fused: HashMap::new(),
            folded: Default::default(),
            dummy: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("unused input"),
                size: 4,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
            budget: std::env::var("KESTREL_GPU_MEMORY_LIMIT_MB")
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|mb| (mb * (1 << 20) as f64) as u64),
            keep_all: persistent,
            // at most 4 dispatches per node (Winograd: 3, split-K: 2)
            region_words: persistent.then(|| {
                ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("region words"),
                    size: REGION_SLOT_BYTES * 4 * g.nodes.len().max(1) as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }),
            region_zero: ctx
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("whole maps"),
                    contents: &[0u8; 16],
                    usage: wgpu::BufferUsages::UNIFORM,
                }),
        };
        (b.fused, b.folded) = residual::plan(g, b.force.as_deref());
        let mut inputs = Vec::new();
        for gi in &g.inputs {
            if g.constant(gi.value).is_some() {
                inputs.push(None);
                continue;
            }
            let f = g.values[gi.value]
                .fact
                .as_ref()
                .ok_or_else(|| Error::invalid("input without fact"))?;
            if f.dtype != DType::F32 {
                return Err(Error::invalid(format!(
                    "the GPU backend takes f32 inputs; '{}' is {}",
                    g.values[gi.value].name, f.dtype
                )));
            }
            let s = b.output(gi.value);
            // inputs are written by the host before each run: never recycled
            b.pinned[gi.value] = true;
            inputs.push(Some((gi.value, s, f.shape.clone())));
        }
        for i in 0..g.nodes.len() {
            let first_step = b.steps.len();
            match b.lower(i) {
                Ok(()) if b.fused.contains_key(&i) => {
                    let op = if b.fused[&i].act.is_some() {
                        "Conv+Add+Relu"
                    } else {
                        "Conv+Add"
                    };
                    for s in &mut b.steps[first_step..] {
                        s.op = op.to_string();
                    }
                }
                Ok(()) => {}
                Err(e @ Error::Device(_)) => return Err(e),
                Err(error) => return Ok(Err(Unsupported { node: i, error })),
            }
            b.release_dead(i);
            if let Some(f) = b.fault.take() {
                return Err(Error::Device(f));
            }
        }
        let mut outputs = Vec::new();
        for &o in &g.outputs {
            let slot = match b.slots.get(&o) {
                Some(s) => s.clone(),
                None => {
                    let c = g.constant(o).ok_or_else(|| {
                        Error::invalid(format!("output '{}' was not computed", g.values[o].name))
                    })?;
                    let data = c.cast(DType::F32);
                    let buffer = ctx
                        .device
                        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                            label: Some("constant output"),
                            contents: &to_storage_bytes(data.as_f32()?, storage),
                            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                        });
                    Slot {
                        buffer,
                        len: c.len(),
                    }
                }
            };
            let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read-back"),
                size: slot.buffer.size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            outputs.push((slot, b.shape(o), staging));
        }
        Ok(Ok(GpuPlan {
            storage,
            steps: b.steps,
            inputs,
            outputs,
            weight_bytes: b.weight_bytes,
            activation_bytes: b.activation_bytes,
            regions: persistent.then(|| RegionGraph::new(g)),
            region_words: b.region_words.map(|b| (b, Default::default())),
            ctx,
        }))
    }

    /// The storage type of this plan.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// (node name, op, shader, MACs) per dispatch.
    pub fn step_names(&self) -> Vec<(String, String, &'static str, u64)> {
        self.steps
            .iter()
            .map(|s| (s.node_name.clone(), s.op.clone(), s.shader.name(), s.macs))
            .collect()
    }

    /// Runs one inference: uploads the inputs, records every dispatch in one command buffer,
    /// reads the outputs back. With `timed`, each dispatch gets its own pass with GPU timestamps
    /// and the per-dispatch times (ns) are returned too.
    pub fn run_timed(
        &self,
        inputs: Vec<Tensor>,
        timed: bool,
    ) -> Result<(Vec<Tensor>, Option<Vec<f64>>)> {
        self.ctx.guarded("running the model", || {
            self.run_unguarded(&inputs, timed, None)
        })
    }

    /// A region run of a persistent plan (see [`region`]): `changed` gives, per graph input,
    /// the rows that changed since the previous run ([`Band::All`] on a plan's first run and
    /// whenever the previous run failed). Dispatches whose outputs stay clean are skipped, the
    /// tiled, depthwise and 1x1 convolutions run over the workgroups covering their dirty rows,
    /// the rest of the dirty nodes run whole. The outputs equal a dense run on these inputs.
    pub fn run_region(
        &self,
        inputs: &[Tensor],
        changed: &[Band],
        timed: bool,
    ) -> Result<(Vec<Tensor>, Option<Vec<f64>>, RegionStats)> {
        let rg = self.regions.as_ref().ok_or_else(|| {
            Error::invalid("region runs need a persistent plan (GpuPlan::new_persistent)")
        })?;
        if changed.len() != self.inputs.len() {
            return Err(Error::invalid(format!(
                "the plan takes {} inputs, {} bands given",
                self.inputs.len(),
                changed.len()
            )));
        }
        let changed: Vec<(ValueId, Band)> = self
            .inputs
            .iter()
            .zip(changed)
            .filter_map(|(i, &b)| i.as_ref().map(|(v, _, _)| (*v, b)))
            .collect();
        let band = rg.propagate(&changed);
        let mut stats = RegionStats::default();
        let runs: Vec<StepRun> = self
            .steps
            .iter()
            .map(|s| {
                stats.macs_dense += s.macs;
                let b = s.writes.iter().fold(Band::Clean, |a, &v| a.union(band[v]));
                let run = match (b, &s.region) {
                    (Band::Clean, _) => StepRun::Skip,
                    (Band::Rect { rows, cols }, Some(r)) => {
                        let q = r.kind.restrict(rows, cols, r.height, s.workgroups.0);
                        if q.share <= 0.0 {
                            StepRun::Skip
                        } else {
                            StepRun::Part(q)
                        }
                    }
                    _ => StepRun::Whole,
                };
                match run {
                    StepRun::Skip => stats.dispatches_skipped += 1,
                    StepRun::Whole => {
                        stats.dispatches_whole += 1;
                        stats.macs_computed += s.macs;
                    }
                    StepRun::Part(q) => {
                        stats.dispatches_partial += 1;
                        stats.macs_computed += (s.macs as f64 * q.share.min(1.0)) as u64;
                    }
                }
                run
            })
            .collect();
        // the region words of every dispatch: written in one go, and only when they changed
        if let Some((buffer, last)) = &self.region_words {
            const SLOT: usize = (REGION_SLOT_BYTES / 4) as usize;
            let mut words = vec![0u32; SLOT * self.steps.len()];
            for (i, run) in runs.iter().enumerate() {
                if let StepRun::Part(q) = run {
                    words[SLOT * i..SLOT * i + 4].copy_from_slice(&q.words);
                }
            }
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            let first = (0..words.len()).find(|&k| last.get(k) != Some(&words[k]));
            if let Some(first) = first {
                let (a, b) = (first / SLOT * SLOT, words.len());
                self.ctx.queue.write_buffer(
                    buffer,
                    4 * a as u64,
                    bytemuck::cast_slice(&words[a..b]),
                );
                *last = words;
            }
        }
        let outs = self.ctx.guarded("running the model", || {
            self.run_unguarded(inputs, timed, Some(&runs))
        });
        if outs.is_err() {
            // the device state is unknown: write every slot again next time
            if let Some((_, last)) = &self.region_words {
                last.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
        }
        let (outs, times) = outs?;
        Ok((outs, times, stats))
    }

    /// Encodes one dispatch of a run (`run`: what a region run does with it; None: whole);
    /// returns whether it dispatched anything (a skipped step does not). A restricted
    /// dispatch's words are in the region slots already.
    fn encode_step(&self, pass: &mut wgpu::ComputePass, s: &GpuStep, run: Option<StepRun>) -> bool {
        let dims = match (run, &s.region) {
            (Some(StepRun::Skip), _) => return false,
            (Some(StepRun::Part(q)), Some(r)) => match r.kind {
                RegionKind::Flat { .. } => grid(q.invocations as usize),
                _ => (q.x, s.workgroups.1, s.workgroups.2),
            },
            _ => s.workgroups,
        };
        pass.set_pipeline(&s.pipeline);
        pass.set_bind_group(0, &s.bind_group, &[]);
        pass.dispatch_workgroups(dims.0, dims.1, dims.2);
        true
    }

    fn run_unguarded(
        &self,
        inputs: &[Tensor],
        timed: bool,
        runs: Option<&[StepRun]>,
    ) -> Result<(Vec<Tensor>, Option<Vec<f64>>)> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::invalid(format!(
                "the plan takes {} inputs, {} given",
                self.inputs.len(),
                inputs.len()
            )));
        }
        for ((_, slot, shape), t) in self
            .inputs
            .iter()
            .zip(inputs)
            .filter_map(|(i, t)| i.as_ref().map(|i| (i, t)))
        {
            if t.shape() != shape.as_slice() {
                return Err(Error::Input {
                    name: "input".into(),
                    msg: format!("expected shape {shape:?}, got {:?}", t.shape()),
                });
            }
            let v = t.as_f32()?;
            self.ctx
                .queue
                .write_buffer(&slot.buffer, 0, &to_storage_bytes(v, self.storage));
        }
        let timed = timed && self.ctx.timestamps;
        let n = self.steps.len() as u32;
        let queries = timed.then(|| {
            let set = self.ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("per-step timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * n.max(1),
            });
            let size = 16 * n.max(1) as u64;
            let resolve = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let read = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps read"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            (set, resolve, read)
        });
        let trace = run_trace();
        let t_encode = std::time::Instant::now();
        let mut submits = 0usize;
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        if let Some((set, _, _)) = &queries {
            for (i, s) in self.steps.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&s.node_name),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                self.encode_step(&mut pass, s, runs.map(|r| r[i]));
            }
        } else {
            // submitted in growing chunks, so the GPU runs the first layers while the CPU
            // still encodes the rest (a queue runs its submissions in order)
            // (counting dispatches actually encoded: a region run that skips most steps
            // submits no more often than its work warrants)
            let mut next_submit = first_submit_chunk();
            let mut encoded = 0;
            let mut pass = enc
                .begin_compute_pass(&Default::default())
                .forget_lifetime();
            for (i, s) in self.steps.iter().enumerate() {
                encoded += usize::from(self.encode_step(&mut pass, s, runs.map(|r| r[i])));
                if encoded == next_submit && i + 1 < self.steps.len() {
                    drop(pass);
                    let done = std::mem::replace(
                        &mut enc,
                        self.ctx.device.create_command_encoder(&Default::default()),
                    );
                    self.ctx.queue.submit([done.finish()]);
                    submits += 1;
                    next_submit = 2 * next_submit + 1;
                    pass = enc
                        .begin_compute_pass(&Default::default())
                        .forget_lifetime();
                }
            }
        }
        for (slot, _, staging) in &self.outputs {
            enc.copy_buffer_to_buffer(&slot.buffer, 0, staging, 0, staging.size());
        }
        if let Some((set, resolve, read)) = &queries {
            enc.resolve_query_set(set, 0..2 * n, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, read, 0, read.size());
        }
        self.ctx.queue.submit([enc.finish()]);
        let encoded = t_encode.elapsed();
        let mut maps: Vec<&wgpu::Buffer> = self.outputs.iter().map(|o| &o.2).collect();
        if let Some((_, _, read)) = &queries {
            maps.push(read);
        }
        let map_failed: Arc<std::sync::Mutex<Option<String>>> = Default::default();
        for b in &maps {
            let failed = map_failed.clone();
            b.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                if let Err(e) = r {
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                }
            });
        }
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device(format!("waiting for {}: {e}", self.ctx.info.name)))?;
        if trace {
            eprintln!(
                "gpu run: {} dispatches, encode+submit {:.3} ms ({} early submits), then waited {:.3} ms",
                self.steps.len(),
                encoded.as_secs_f64() * 1e3,
                submits,
                (t_encode.elapsed() - encoded).as_secs_f64() * 1e3
            );
        }
        self.ctx.check_alive()?;
        if let Some(e) = map_failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(Error::Device(format!("reading the outputs back: {e}")));
        }
        let mut outs = Vec::new();
        for (slot, shape, staging) in &self.outputs {
            let data = {
                let view = staging
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| Error::Device(format!("GPU read-back: {e}")))?;
                from_storage_bytes(&view, slot.len, self.storage)
            };
            staging.unmap();
            outs.push(Tensor::from_vec(shape.clone(), data)?);
        }
        let times = match &queries {
            Some((_, _, read)) => {
                let ticks: Vec<u64> = {
                    let view = read
                        .slice(..)
                        .get_mapped_range()
                        .map_err(|e| Error::Device(format!("GPU timestamps: {e}")))?;
                    bytemuck::cast_slice::<u8, u64>(&view).to_vec()
                };
                read.unmap();
                let period = self.ctx.timestamp_period_ns as f64;
                Some(
                    ticks
                        .chunks_exact(2)
                        .map(|c| c[1].saturating_sub(c[0]) as f64 * period)
                        .collect(),
                )
            }
            None => None,
        };
        Ok((outs, times))
    }

    /// Runs one inference.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_timed(inputs, false).map(|(o, _)| o)
    }
}

/// Whether each run prints how long encoding and waiting took (`KESTREL_GPU_TRACE=1`).
fn run_trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KESTREL_GPU_TRACE").is_ok_and(|v| v == "1"))
}

/// Dispatches encoded before the first submission of a run; each later chunk is twice the
/// previous one plus one (1, 3, 7, 15, ...: the GPU starts on the first layer while the rest is
/// encoded). `KESTREL_GPU_SUBMIT_CHUNK` sets it (0: one submission per run). H100 A/B
/// (`docs/gpu/submit_ab_session9.json`), one submission vs this: ResNet-50 f32 3.91 -> 3.61 ms,
/// MobileNetV2 1.74 -> 1.66, EfficientNet-Lite0 1.88 -> 1.71, VGG-16 3.81 -> 3.75.
fn first_submit_chunk() -> usize {
    static CHUNK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CHUNK.get_or_init(|| {
        std::env::var("KESTREL_GPU_SUBMIT_CHUNK")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(1, |v: usize| if v == 0 { usize::MAX } else { v })
    })
}

/// What a region run does with one dispatch.
#[derive(Clone, Copy, Debug, PartialEq)]
enum StepRun {
    /// Its outputs are clean: their buffers keep the previous run's values.
    Skip,
    Whole,
    /// Over the dirty rows only.
    Part(Restriction),
}

/// What a region run computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionStats {
    /// Multiply-adds of a dense run.
    pub macs_dense: u64,
    /// Multiply-adds of the workgroups dispatched.
    pub macs_computed: u64,
    pub dispatches_skipped: usize,
    pub dispatches_partial: usize,
    pub dispatches_whole: usize,
}

/// Workgroups the Winograd GEMM aims for before it splits its input channels (split-K).
const WINOGRAD_TARGET_WORKGROUPS: usize = 1024;

/// The Winograd split-K target in effect: [`WINOGRAD_TARGET_WORKGROUPS`], or
/// `KESTREL_GPU_WINO_SPLITK_TARGET` (read once; counted in 64 x 32 tiles, as the GEMM's
/// workgroups before the per-GEMM grid is chosen).
fn winograd_splitk_target() -> usize {
    static N: Knob<usize> = Knob::new();
    env_knob(&N, "KESTREL_GPU_WINO_SPLITK_TARGET")
        .filter(|&v| v > 0)
        .unwrap_or(WINOGRAD_TARGET_WORKGROUPS)
}

/// Smallest output side on which F(4x4,3x3) replaces F(2x2,3x3) ([`Builder::winograd_tile`]):
/// 28 (a 14 px map has 16 F(4x4) tiles, a quarter of the GEMM's 64-pixel tile, against 49 in
/// F(2x2); with the per-GEMM grid, the best of four settings over VGG-16 / ResNet-50 /
/// MobileNetV2 / EfficientNet-Lite0 on an H100 in session 11, ResNet-50 f32 3.83 -> 3.58 ms),
/// or `KESTREL_GPU_WINO4_MIN_SIDE` (0: always; a huge value: never; read once).
fn winograd4_min_side() -> usize {
    static N: Knob<usize> = Knob::new();
    env_knob(&N, "KESTREL_GPU_WINO4_MIN_SIDE").unwrap_or(28)
}

/// Whether the staged cooperative-matrix GEMM runs planes that are not multiples of 8: only with
/// `KESTREL_GPU_COOP_STAGED=1` (read once). Measured on an H100 (session 10,
/// docs/gpu/session10/big_ab_f16_session10.json) it was slower than the scalar GEMM it replaces:
/// MobileNetV2 f16 1.76 -> 1.99 ms, EfficientNet-Lite0 1.89 -> 2.26, ResNet-50 3.12 -> 3.06.
fn coop_staged_enabled() -> bool {
    static ON: Knob<u8> = Knob::new();
    env_knob(&ON, "KESTREL_GPU_COOP_STAGED") == Some(1)
}

/// Shortest sum (input channels) the staged cooperative GEMM takes when enabled:
/// `KESTREL_GPU_COOP_STAGED_MIN_K` (read once), else 0 (every layer). Session 10 measured it
/// faster on ResNet-50 (long sums) and slower on MobileNetV2 / EfficientNet-Lite0 (mostly short).
fn coop_staged_min_k() -> usize {
    static N: Knob<usize> = Knob::new();
    env_knob(&N, "KESTREL_GPU_COOP_STAGED_MIN_K").unwrap_or(0)
}

/// Whether conv1x1_big.wgsl may replace conv1x1.wgsl (`KESTREL_GPU_BIG=0`: never; read once).
fn big_gemm_enabled() -> bool {
    static ON: Knob<u8> = Knob::new();
    env_knob(&ON, "KESTREL_GPU_BIG") != Some(0)
}

/// Fewest workgroups a GEMM must give in conv1x1_big.wgsl's tiles to take it, when
/// `KESTREL_GPU_BIG_MIN_WG` sets it (read once); else 96 for a fixed grid, 256 (two per
/// multiprocessor on a 132-SM H100; a small GPU is full with far fewer) per GEMM.
fn big_min_workgroups() -> Option<usize> {
    static N: Knob<usize> = Knob::new();
    env_knob(&N, "KESTREL_GPU_BIG_MIN_WG")
}

/// A numeric setting read from the environment once.
type Knob<T> = std::sync::OnceLock<Option<T>>;

/// The value of environment variable `name` parsed as a number (`None` when unset or not a
/// number), read once into `cell`.
fn env_knob<T: std::str::FromStr + Copy>(cell: &Knob<T>, name: &str) -> Option<T> {
    *cell.get_or_init(|| std::env::var(name).ok().and_then(|v| v.parse().ok()))
}

/// Whether a convolution runs as the tiled GEMM of conv1x1.wgsl: 1x1, stride 1, unpadded,
/// ungrouped, within the workgroup-count limits, unless `force` picks the direct or im2col
/// kernel.
fn conv1x1_applies(geom: &ConvGeometry, force: Option<&str>) -> bool {
    let plane = geom.output[1] * geom.output[2];
    geom.group == 1
        && !matches!(force, Some("direct" | "im2col"))
        && geom.kernel == [1, 1, 1]
        && geom.stride == [1, 1, 1]
        && geom.pad_begin == [0, 0, 0]
        && geom.pad_end == [0, 0, 0]
        && plane.div_ceil(64) <= 65535
        && geom.c_out.div_ceil(32) <= 65535
        && geom.batch <= 65535
}

/// The tiled kernels' parameters with the geometry and activation of `p` (tile fields 0).
fn conv_tiled_params(p: &ConvParams) -> ConvTiledParams {
    ConvTiledParams {
        batch: p.batch,
        c_in: p.c_in,
        h: p.h,
        w: p.w,
        c_out: p.c_out,
        oh: p.oh,
        ow: p.ow,
        kh: p.kh,
        kw: p.kw,
        sh: p.sh,
        sw: p.sw,
        dh: p.dh,
        dw: p.dw,
        ph: p.ph,
        pw: p.pw,
        tiles_x: 0,
        patch_h: 0,
        patch_w: 0,
        act: p.act,
        a0: p.a0,
        a1: p.a1,
        p0: 0,
        p1: 0,
        p2: 0,
    }
}

/// Output tiles and input patch of the depthwise kernel (depthwise.wgsl).
struct DepthwiseTile {
    tiles: usize,
    tiles_x: usize,
    patch_h: usize,
    patch_w: usize,
}

/// Whether a convolution runs in the depthwise kernel (one filter per channel, 2-D, its 16x16
/// tile's input patch within 1600 values and its filter within 49 taps, workgroup counts
/// within limits), unless `force` picks another kernel.
fn depthwise_tile(geom: &ConvGeometry, force: Option<&str>) -> Option<DepthwiseTile> {
    const TILE: usize = 16;
    let patch =
        |d: usize| (TILE - 1) * geom.stride[d] + (geom.kernel[d] - 1) * geom.dilation[d] + 1;
    let (patch_h, patch_w) = (patch(1), patch(2));
    let tiles_x = geom.output[2].div_ceil(TILE);
    let tiles = tiles_x * geom.output[1].div_ceil(TILE);
    let ok = matches!(force, None | Some("nowinograd" | "winograd"))
        && geom.is_depthwise()
        && geom.c_in == geom.c_out
        && geom.input[0] == 1
        && patch_h * patch_w <= 1600
        && geom.kernel[1] * geom.kernel[2] <= 49
        && tiles <= 65535
        && geom.c_out <= 65535
        && geom.batch <= 65535;
    ok.then_some(DepthwiseTile {
        tiles,
        tiles_x,
        patch_h,
        patch_w,
    })
}

/// Column-matrix elements above which the automatic choice never takes im2col (64 MB in f32).
const MAX_AUTO_IM2COL_ELEMS: usize = 16 << 20;

/// Whether an ungrouped strided convolution (which the tiled kernels do not take) runs as
/// im2col + GEMM instead of the plain direct kernel: measured on an H200, ResNet-50's 3x3
/// stride-2 layer on a 7x7 map took 1.0 ms in the direct kernel (one invocation per 4
/// channels of a pixel: 49 pixels x 128 quads cannot fill the GPU, and every invocation
/// re-reads the whole 4608-value patch), while its column matrix is only 4608 x 49 values and
/// the GEMM splits over K. `KESTREL_GPU_IM2COL=0` turns the automatic choice off.
/// Whether first layers (at most 4 input channels, any stride) run as im2col + GEMM: a sum of
/// `c_in k²` terms (27 for VGG-16's) is too short for the tiled direct kernel's staging.
/// `KESTREL_GPU_STEM_IM2COL=1` (read once; off by default until measured on a GPU; strided
/// stems take im2col anyway, see [`im2col_pays`]).
fn stem_im2col() -> bool {
    static ON: Knob<u8> = Knob::new();
    env_knob(&ON, "KESTREL_GPU_STEM_IM2COL") == Some(1)
}

fn im2col_pays(geom: &ConvGeometry, force: Option<&str>) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("KESTREL_GPU_IM2COL").is_ok_and(|v| v == "0"));
    let plane = geom.output[1] * geom.output[2];
    let k = geom.c_in * geom.kernel[1] * geom.kernel[2];
    !off && matches!(force, None | Some("nowinograd"))
        && geom.group == 1
        && (geom.stride[1] > 1 || geom.stride[2] > 1)
        && geom.batch * k * plane <= MAX_AUTO_IM2COL_ELEMS
        && plane.div_ceil(64) <= 65535
        && geom.c_out.div_ceil(32) <= 65535
        && geom.batch <= 65535
}

/// Whether a convolution runs as Winograd F(2x2,3x3) on the GPU: 3x3, stride 1, no
/// dilation, one group, 2-D; `force` = `winograd` forces it wherever it applies,
/// `nowinograd` keeps the automatic choice of the other kernels without it, and any other
/// forced kernel turns it off. Chosen automatically for layers with at least 64 input
/// and output channels (measured on an H200, docs/GPU.md).
fn winograd_applies(g: &ConvGeometry, force: Option<&str>) -> bool {
    let shape_ok = g.group == 1
        && g.kernel == [1, 3, 3]
        && g.stride == [1, 1, 1]
        && g.dilation == [1, 1, 1]
        && g.input[0] == 1;
    if !shape_ok {
        return false;
    }
    let t_all = g.batch * g.output[1].div_ceil(2) * g.output[2].div_ceil(2);
    let fits = t_all.div_ceil(64) <= 65535
        && g.c_out.div_ceil(32) <= 65535
        && (16 * g.c_in.max(g.c_out) * t_all) < u32::MAX as usize;
    match force {
        Some("winograd") => fits,
        Some(_) => false,
        None => {
            let side = winograd_max_side();
            fits && g.c_in >= 64 && g.c_out >= 64 && g.output[1] * g.output[2] <= side * side
        }
    }
}

/// Largest output side (square-equivalent) the automatic choice runs in Winograd: 224, or
/// `KESTREL_GPU_WINO_MAX_SIDE` (read once). Up to session 9 it was 56 (F(2x2) lost to the
/// tiled direct kernels on larger maps); with F(4x4) VGG-16 f32 went 3.52 -> 3.30 ms on an H100
/// when its 112 and 224 px layers joined (docs/gpu/session10/big_ab_f32_session10.json).
fn winograd_max_side() -> usize {
    static N: Knob<usize> = Knob::new();
    env_knob(&N, "KESTREL_GPU_WINO_MAX_SIDE").unwrap_or(224)
}

/// Winograd F(4x4,3x3) weights `U = G g G^T` (G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
/// 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]) for `k × c` filters `w` (ONNX layout), laid out
/// `[36][k][c]`.
fn winograd4_weights(w: &[f32], k: usize, c: usize) -> Vec<f32> {
    const G: [[f64; 3]; 6] = [
        [0.25, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    let mut u = vec![0f32; 36 * k * c];
    for oc in 0..k {
        for ic in 0..c {
            let g = &w[(oc * c + ic) * 9..][..9];
            // G g: 6x3
            let mut t = [[0f64; 3]; 6];
            for (i, row) in G.iter().enumerate() {
                for j in 0..3 {
                    t[i][j] = (0..3).map(|r| row[r] * g[r * 3 + j] as f64).sum();
                }
            }
            // (G g) G^T: 6x6
            for (i, trow) in t.iter().enumerate() {
                for (j, grow) in G.iter().enumerate() {
                    let v: f64 = (0..3).map(|r| trow[r] * grow[r]).sum();
                    u[((i * 6 + j) * k + oc) * c + ic] = v as f32;
                }
            }
        }
    }
    u
}

/// Winograd F(2x2,3x3) weights `U = G g G^T` (G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]) for
/// `k × c` filters `w` (ONNX layout), laid out `[16][k][c]`.
fn winograd_weights(w: &[f32], k: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * k * c];
    for oc in 0..k {
        for ic in 0..c {
            let g = &w[(oc * c + ic) * 9..][..9];
            // G g: 4x3
            let mut t = [[0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, cc) = (g[j], g[3 + j], g[6 + j]);
                t[0][j] = a;
                t[1][j] = 0.5 * (a + b + cc);
                t[2][j] = 0.5 * (a - b + cc);
                t[3][j] = cc;
            }
            // (G g) G^T: 4x4
            for (i, row) in t.iter().enumerate() {
                let (a, b, cc) = (row[0], row[1], row[2]);
                let vals = [a, 0.5 * (a + b + cc), 0.5 * (a - b + cc), cc];
                for (j, v) in vals.iter().enumerate() {
                    u[((i * 4 + j) * k + oc) * c + ic] = *v;
                }
            }
        }
    }
    u
}
