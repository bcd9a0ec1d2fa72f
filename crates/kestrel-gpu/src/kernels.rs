//! WGSL sources and compute pipelines. Each shader is written once: it declares its tensors as
//! `array<S>` storage bindings and reads and writes them only through accessors, `ld_NAME(i) ->
//! f32` and `st_NAME(i, v: f32)`, which the launcher generates for the storage type (see
//! [`Shader::source`]); arithmetic is f32 whatever the storage. Shapes and parameters always
//! go in through uniforms and storage buffers, never through shader text, so one pipeline
//! serves every layer.

use crate::context::GpuContext;
use std::collections::HashMap;

/// How activations and weights are stored on the device, and the arithmetic type (f32 except
/// in [`Storage::F16Arith`]'s GEMM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    F32,
    /// IEEE half as a native shader type: half the bytes moved; needs SHADER_F16.
    F16,
    /// The same IEEE half bytes, two per 32-bit word, for adapters without SHADER_F16: loads
    /// use `unpack2x16float`, stores `pack2x16float` with an atomic read-modify-write of the
    /// word's half (neighbouring elements belong to other invocations).
    F16Packed,
    /// Native f16 storage plus fp16 arithmetic in the GEMM kernel (conv1x1.wgsl: 1x1 layers,
    /// Winograd's and im2col's GEMMs): its workgroup tiles and multiply-adds are f16, summed in
    /// f16 over chunks of 16 input channels and in f32 across chunks. Needs SHADER_F16.
    F16Arith,
}

impl Storage {
    pub const ALL: [Storage; 4] = [
        Storage::F32,
        Storage::F16,
        Storage::F16Packed,
        Storage::F16Arith,
    ];

    /// Bytes per stored element.
    pub fn bytes(self) -> u64 {
        match self {
            Storage::F32 => 4,
            Storage::F16 | Storage::F16Packed | Storage::F16Arith => 2,
        }
    }

    /// Short name for messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::F16 => "f16",
            Storage::F16Packed => "f16-packed",
            Storage::F16Arith => "f16-arith",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Storage::F32 | Storage::F16Packed => {
                "alias S = f32;\nalias A = f32;\nconst FLUSH_CHUNKS = false;\n"
            }
            Storage::F16 => {
                "enable f16;\nalias S = f16;\nalias A = f32;\nconst FLUSH_CHUNKS = false;\n"
            }
            Storage::F16Arith => {
                "enable f16;\nalias S = f16;\nalias A = f16;\nconst FLUSH_CHUNKS = true;\n"
            }
        }
    }

    /// The accessors of one storage binding (`writable`: a `read_write` output).
    fn accessors(self, name: &str, writable: bool) -> String {
        match (self, writable) {
            (Storage::F32 | Storage::F16 | Storage::F16Arith, false) => {
                format!("fn ld_{name}(k_i: u32) -> f32 {{ return f32({name}[k_i]); }}\n")
            }
            (Storage::F32 | Storage::F16 | Storage::F16Arith, true) => {
                format!("fn st_{name}(k_i: u32, k_v: f32) {{ {name}[k_i] = S(k_v); }}\n")
            }
            (Storage::F16Packed, false) => format!(
                "fn ld_{name}(k_i: u32) -> f32 {{ let h = unpack2x16float({name}[k_i >> 1u]); \
                 return select(h.x, h.y, (k_i & 1u) == 1u); }}\n"
            ),
            (Storage::F16Packed, true) => format!(
                "fn st_{name}(k_i: u32, k_v: f32) {{ let sh = (k_i & 1u) * 16u; \
                 let h = pack2x16float(vec2<f32>(k_v, 0.0)) & 0xffffu; \
                 atomicAnd(&{name}[k_i >> 1u], ~(0xffffu << sh)); \
                 atomicOr(&{name}[k_i >> 1u], h << sh); }}\n"
            ),
        }
    }
}

/// The compute shaders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Conv2d,
    Conv2dTiled,
    Conv2dTiled64,
    SplitKReduce,
    Conv1x1,
    Unary,
    Binary,
    Pool2d,
    Gemm,
    Gather,
    Softmax,
    Concat,
    WinogradIn,
    WinogradOut,
    /// Winograd F(4x4,3x3)'s input and output transforms (dense plans).
    Winograd4In,
    Winograd4Out,
    Im2col,
    Depthwise,
    /// conv1x1.wgsl on cooperative matrices (native f16 storage, adapters with them only: not
    /// in [`Shader::ALL`]; see [`Kernels::conv1x1_coop`]).
    Conv1x1Coop,
    /// conv1x1_coop.wgsl with `STAGE_X` (input tiles staged in workgroup memory: planes that are
    /// not multiples of 8); built with [`Shader::Conv1x1Coop`].
    Conv1x1CoopStaged,
    /// conv1x1.wgsl's GEMM with 8x8 register tiles per invocation on a thread grid
    /// ([`BigTile`]): dense plans' large GEMMs (see `Builder::gemm_shader`). Not in
    /// [`Shader::ALL`]: [`Kernels`] builds every grid of [`BigTile::VARIANTS`].
    Conv1x1Big(BigTile),
}

/// Thread grid of conv1x1_big.wgsl: `tx` invocations along pixels, `ty` along output channels;
/// a workgroup computes `8 tx` pixels x `8 ty` output channels. Tiles are multiples of
/// conv1x1.wgsl's 64 x 32, so its dispatch grid converts by division (`Builder::dispatch_wg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BigTile {
    pub tx: u32,
    pub ty: u32,
}

impl BigTile {
    /// Every grid the shader is built and validated for.
    pub const VARIANTS: [BigTile; 4] = [
        BigTile { tx: 16, ty: 16 },
        BigTile { tx: 16, ty: 8 },
        BigTile { tx: 8, ty: 16 },
        BigTile { tx: 8, ty: 8 },
    ];

    /// Pixels per workgroup.
    pub fn pixels(self) -> usize {
        8 * self.tx as usize
    }

    /// Output channels per workgroup.
    pub fn channels(self) -> usize {
        8 * self.ty as usize
    }

    /// The grid every large GEMM takes, or `None` for a choice per GEMM (the default since
    /// session 11: with F(4x4) on 28+ px maps, geometric mean 0.986x of the session-10 fixed
    /// 16x16 grid over four models in f32 and f16 on an H100,
    /// docs/gpu/session11/ab_session11.json): `KESTREL_GPU_BIG_TILE` (`16x16`, `16x8`, `8x16`,
    /// `8x8` fix one grid; `auto`; read once).
    pub fn fixed() -> Option<BigTile> {
        static T: std::sync::OnceLock<Option<BigTile>> = std::sync::OnceLock::new();
        *T.get_or_init(|| match std::env::var("KESTREL_GPU_BIG_TILE") {
            Ok(v) if v != "auto" => Some(Self::parse(&v).unwrap_or(BigTile::VARIANTS[0])),
            _ => None,
        })
    }

    /// `TXxTY` if it names one of [`BigTile::VARIANTS`].
    fn parse(v: &str) -> Option<BigTile> {
        let (a, b) = v.split_once('x')?;
        let t = BigTile {
            tx: a.parse().ok()?,
            ty: b.parse().ok()?,
        };
        BigTile::VARIANTS.contains(&t).then_some(t)
    }

    fn name(self) -> &'static str {
        match (self.tx, self.ty) {
            (16, 16) => "conv1x1_big16x16",
            (16, 8) => "conv1x1_big16x8",
            (8, 16) => "conv1x1_big8x16",
            _ => "conv1x1_big8x8",
        }
    }
}

impl Shader {
    /// Whether the shader has a region binding after its others (`var<uniform> region:
    /// vec4<u32>`, all zero for a whole map): the dispatches a region run can restrict to the
    /// workgroups covering dirty rows (see `plan::region`).
    pub fn reads_region(self) -> bool {
        matches!(
            self,
            Shader::Conv2d
                | Shader::Conv2dTiled
                | Shader::Conv2dTiled64
                | Shader::Conv1x1
                | Shader::Conv1x1Coop
                | Shader::Conv1x1CoopStaged
                | Shader::Depthwise
                | Shader::SplitKReduce
                | Shader::WinogradIn
                | Shader::WinogradOut
        )
    }

    pub const ALL: [Shader; 18] = [
        Shader::Conv2d,
        Shader::Conv2dTiled,
        Shader::Conv2dTiled64,
        Shader::SplitKReduce,
        Shader::Conv1x1,
        Shader::Unary,
        Shader::Binary,
        Shader::Pool2d,
        Shader::Gemm,
        Shader::Gather,
        Shader::Softmax,
        Shader::Concat,
        Shader::WinogradIn,
        Shader::WinogradOut,
        Shader::Winograd4In,
        Shader::Winograd4Out,
        Shader::Im2col,
        Shader::Depthwise,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shader::Conv2d => "conv2d",
            Shader::Conv2dTiled => "conv2d_tiled",
            Shader::Conv2dTiled64 => "conv2d_tiled64",
            Shader::SplitKReduce => "splitk_reduce",
            Shader::Conv1x1 => "conv1x1",
            Shader::Unary => "unary",
            Shader::Binary => "binary",
            Shader::Pool2d => "pool2d",
            Shader::Gemm => "gemm",
            Shader::Gather => "gather",
            Shader::Softmax => "softmax",
            Shader::Concat => "concat",
            Shader::WinogradIn => "winograd_in",
            Shader::WinogradOut => "winograd_out",
            Shader::Winograd4In => "winograd4_in",
            Shader::Winograd4Out => "winograd4_out",
            Shader::Im2col => "im2col",
            Shader::Depthwise => "depthwise",
            Shader::Conv1x1Coop => "conv1x1_coop",
            Shader::Conv1x1CoopStaged => "conv1x1_coop_staged",
            Shader::Conv1x1Big(t) => t.name(),
        }
    }

    fn body(self) -> &'static str {
        match self {
            Shader::Conv2d => include_str!("shaders/conv2d.wgsl"),
            Shader::Conv2dTiled => include_str!("shaders/conv2d_tiled.wgsl"),
            Shader::Conv2dTiled64 => include_str!("shaders/conv2d_tiled64.wgsl"),
            Shader::SplitKReduce => include_str!("shaders/splitk_reduce.wgsl"),
            Shader::Conv1x1 => include_str!("shaders/conv1x1.wgsl"),
            Shader::Unary => include_str!("shaders/unary.wgsl"),
            Shader::Binary => include_str!("shaders/binary.wgsl"),
            Shader::Pool2d => include_str!("shaders/pool2d.wgsl"),
            Shader::Gemm => include_str!("shaders/gemm.wgsl"),
            Shader::Gather => include_str!("shaders/gather.wgsl"),
            Shader::Softmax => include_str!("shaders/softmax.wgsl"),
            Shader::Concat => include_str!("shaders/concat.wgsl"),
            Shader::WinogradIn => include_str!("shaders/winograd_in.wgsl"),
            Shader::WinogradOut => include_str!("shaders/winograd_out.wgsl"),
            Shader::Winograd4In => include_str!("shaders/winograd4_in.wgsl"),
            Shader::Winograd4Out => include_str!("shaders/winograd4_out.wgsl"),
            Shader::Im2col => include_str!("shaders/im2col.wgsl"),
            Shader::Depthwise => include_str!("shaders/depthwise.wgsl"),
            Shader::Conv1x1Coop | Shader::Conv1x1CoopStaged => {
                include_str!("shaders/conv1x1_coop.wgsl")
            }
            Shader::Conv1x1Big(_) => include_str!("shaders/conv1x1_big.wgsl"),
        }
    }

    /// The complete WGSL of this shader for a storage type: the storage alias, `common.wgsl`,
    /// the body (its `array<S>` bindings retyped for packed storage) and the generated
    /// `ld_*` / `st_*` accessors of every `array<S>` binding; conv1x1_big.wgsl with its thread
    /// grid.
    pub fn source(self, storage: Storage) -> String {
        let mut body = match self {
            Shader::Conv1x1
            | Shader::Conv1x1Coop
            | Shader::Conv1x1CoopStaged
            | Shader::Conv1x1Big(_) => {
                format!(
                    "{}\n{}",
                    include_str!("shaders/gemm_common.wgsl"),
                    self.body()
                )
            }
            _ => self.body().to_string(),
        };
        let mut accessors = String::new();
        for (writable, decl) in [
            (false, "var<storage, read> "),
            (true, "var<storage, read_write> "),
        ] {
            let mut from = 0;
            while let Some(at) = body[from..].find(decl) {
                let start = from + at + decl.len();
                let colon = body[start..].find(':').expect("binding has a type") + start;
                let name = body[start..colon].trim().to_string();
                let ty_start = colon + 1;
                let ty_end = body[ty_start..].find(';').expect("declaration ends") + ty_start;
                if body[ty_start..ty_end].trim() == "array<S>" {
                    accessors.push_str(&storage.accessors(&name, writable));
                    if storage == Storage::F16Packed {
                        let ty = if writable {
                            " array<atomic<u32>>"
                        } else {
                            " array<u32>"
                        };
                        body.replace_range(ty_start..ty_end, ty);
                    }
                }
                from = start;
            }
        }
        // native f16 only; no `A` alias (a cooperative matrix role of that name)
        let prefix = match self {
            Shader::Conv1x1Coop | Shader::Conv1x1CoopStaged => {
                "enable f16;\nenable wgpu_cooperative_matrix;\nalias S = f16;\n".to_string()
            }
            Shader::Conv1x1Big(tile) => format!(
                "{}const TX: u32 = {}u;\nconst TY: u32 = {}u;\n",
                storage.prefix(),
                tile.tx,
                tile.ty
            ),
            _ => storage.prefix().to_string(),
        };
        format!(
            "{}{}\n{}\n{}",
            prefix,
            include_str!("shaders/common.wgsl"),
            body,
            accessors
        )
    }
}

/// Pipelines of one storage type, created once per plan build (the driver's pipeline cache
/// makes later creations cheap).
pub struct Kernels {
    storage: Storage,
    pipelines: HashMap<Shader, wgpu::ComputePipeline>,
    /// conv1x1.wgsl with `RECT = true`: region runs over a rectangle of the plane (persistent
    /// plans only, so built on first use: dense sessions never compile it).
    conv1x1_rect: std::sync::OnceLock<wgpu::ComputePipeline>,
    /// conv1x1_coop.wgsl, where the adapter has cooperative matrices and the storage is native
    /// f16 (see [`GpuContext::coop_f16`]).
    conv1x1_coop: Option<wgpu::ComputePipeline>,
    /// conv1x1_coop.wgsl with `STAGE_X`, where `conv1x1_coop` exists; built on first use (it
    /// is opt-in).
    conv1x1_coop_staged: std::sync::OnceLock<wgpu::ComputePipeline>,
    /// conv1x1_big.wgsl on each grid of [`BigTile::VARIANTS`] (same order; f32 arithmetic
    /// only), built on first use: a plan compiles only the grids it dispatches.
    conv1x1_big: [std::sync::OnceLock<wgpu::ComputePipeline>; 4],
}

/// Whether shaders are compiled with wgpu's runtime checks: bounds clamps on every array
/// index, a counter in every loop (which keeps drivers from unrolling it) and guarded integer
/// division. Off by default: Kestrel's shaders do their own range checks (see `pipeline`);
/// `KESTREL_GPU_SHADER_CHECKS=1` turns them on (for debugging a kernel).
pub fn shader_checks() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KESTREL_GPU_SHADER_CHECKS").as_deref() == Ok("1"))
}

/// The compute pipeline of `s` for `storage` with the given override constants.
fn pipeline(
    ctx: &GpuContext,
    s: Shader,
    storage: Storage,
    constants: &[(&str, f64)],
) -> wgpu::ComputePipeline {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(s.name()),
        source: wgpu::ShaderSource::Wgsl(s.source(storage).into()),
    };
    let module = if shader_checks() {
        ctx.device.create_shader_module(desc)
    } else {
        // SAFETY: these are Kestrel's own shaders, not user input, and they meet the
        // contract of `ShaderRuntimeChecks::unchecked` (see `shader_checks`): every buffer,
        // workgroup and local array index is range-checked in the shader or in range by the
        // launcher's sizes (each kernel is tested against the CPU with the checks on and off),
        // every loop runs a count bounded by its parameters, no ray queries or mesh shaders,
        // and every integer divisor is a nonzero extent (kernels of empty tensors are never
        // dispatched).
        unsafe {
            ctx.device
                .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
        }
    };
    ctx.device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(s.name()),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                ..Default::default()
            },
            cache: ctx.cache.as_ref(),
        })
}

impl Kernels {
    pub fn new(ctx: &GpuContext, storage: Storage) -> Kernels {
        let pipelines = Shader::ALL
            .iter()
            .map(|&s| (s, pipeline(ctx, s, storage, &[])))
            .collect();
        let native_f16 = matches!(storage, Storage::F16 | Storage::F16Arith);
        let coop = native_f16 && ctx.coop_f16;
        let conv1x1_coop = coop.then(|| pipeline(ctx, Shader::Conv1x1Coop, storage, &[]));
        Kernels {
            storage,
            pipelines,
            conv1x1_rect: std::sync::OnceLock::new(),
            conv1x1_coop,
            conv1x1_coop_staged: std::sync::OnceLock::new(),
            conv1x1_big: Default::default(),
        }
    }

    /// conv1x1_big.wgsl on thread grid `t` (built on first use), or `None` for fp16
    /// arithmetic (the kernel computes in f32).
    pub fn conv1x1_big(&self, ctx: &GpuContext, t: BigTile) -> Option<&wgpu::ComputePipeline> {
        let i = BigTile::VARIANTS.iter().position(|&v| v == t)?;
        (self.storage != Storage::F16Arith).then(|| {
            self.conv1x1_big[i]
                .get_or_init(|| pipeline(ctx, Shader::Conv1x1Big(t), self.storage, &[]))
        })
    }

    /// The cooperative-matrix GEMM that stages its input tiles (any plane; built on first use),
    /// where [`Kernels::conv1x1_coop`] exists.
    pub fn conv1x1_coop_staged(&self, ctx: &GpuContext) -> Option<&wgpu::ComputePipeline> {
        self.conv1x1_coop.as_ref()?;
        Some(self.conv1x1_coop_staged.get_or_init(|| {
            pipeline(
                ctx,
                Shader::Conv1x1CoopStaged,
                self.storage,
                &[("STAGE_X", 1.0)],
            )
        }))
    }

    /// The cooperative-matrix GEMM (tensor cores) that replaces conv1x1.wgsl in dense
    /// dispatches, when the adapter and storage allow it.
    pub fn conv1x1_coop(&self) -> Option<&wgpu::ComputePipeline> {
        self.conv1x1_coop.as_ref()
    }

    pub fn get(&self, s: Shader) -> &wgpu::ComputePipeline {
        &self.pipelines[&s]
    }

    /// The rectangle variant of conv1x1.wgsl (`RECT = true`), built on first use.
    pub fn conv1x1_rect(&self, ctx: &GpuContext) -> &wgpu::ComputePipeline {
        self.conv1x1_rect
            .get_or_init(|| pipeline(ctx, Shader::Conv1x1, self.storage, &[("RECT", 1.0)]))
    }
}

/// Activation code of `common.wgsl::activate` and its two parameters.
pub fn act_code(a: Option<kestrel_core::ops::Unary>) -> (u32, f32, f32) {
    use kestrel_core::ops::Unary as U;
    match a {
        None => (255, 0.0, 0.0),
        Some(U::Relu) => (0, 0.0, 0.0),
        Some(U::LeakyRelu { alpha }) => (1, alpha, 0.0),
        Some(U::Sigmoid) => (2, 0.0, 0.0),
        Some(U::HardSigmoid { alpha, beta }) => (3, alpha, beta),
        Some(U::HardSwish) => (4, 0.0, 0.0),
        Some(U::Tanh) => (5, 0.0, 0.0),
        Some(U::Exp) => (6, 0.0, 0.0),
        Some(U::Sqrt) => (7, 0.0, 0.0),
        Some(U::Clip { min, max }) => (8, min, max),
    }
}
