//! The execution plan: one step per node, kernels chosen and weights packed at construction.

use crate::conv::{ConvAlgo, PreparedConv};
use crate::gemm::sgemm_nt;
use kestrel_core::graph::Fact;
use kestrel_core::ops::conv::conv_geometry;
use kestrel_core::ops::{BinaryOp, GemmAttrs, Unary};
use kestrel_core::{DType, Error, Graph, Op, Result, Tensor, ValueId};
use std::time::{Duration, Instant};

/// CPU backend options.
#[derive(Clone, Debug, Default)]
pub struct CpuOptions {
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// Convolution algorithm selection.
    pub conv_algo: ConvAlgo,
    /// How weights and activations are stored (arithmetic is `f32` either way).
    pub storage: StoragePrecision,
    /// Fuse a residual Add (and a Relu after it) into the convolution that feeds it (f32
    /// storage only; off for plans that convolutional caching runs, whose region logic works
    /// node by node).
    pub fuse_residual: bool,
    /// Every convolution gets a kernel that recomputes small regions well (`auto` picks no
    /// FFT, which cannot, and no Winograd, whose transforms do not pay on small crops): for
    /// plans that convolutional caching runs.
    pub region_kernels: bool,
}

/// Convolutions whose outputs each sum fewer products than this (depthwise layers: 9 or 25; a
/// first RGB layer: 27) keep their weights in `f32` under [`StoragePrecision::F16`]: the
/// rounding errors of a short sum do not average out (measured: rounding EfficientNet-Lite0's
/// depthwise weights alone cost ~1% top-1 agreement on video), and such layers hold a small
/// share of a model's weight bytes.
pub const MIN_REDUCTION_FOR_F16_WEIGHTS: usize = 64;

/// Storage precision of the CPU backend.
///
/// With [`StoragePrecision::F16`] every `f32` activation that stays alive while other steps run
/// (skip connections, branches, any value not read by the very next step) lives in an `f16`
/// buffer (a step widens such inputs into pooled `f32` working buffers, runs the `f32` kernel
/// and narrows its outputs, so only one step's operands exist in `f32` at a time); a value read
/// only by the next step is handed over in its `f32` working buffer, since that copy would
/// exist during the next step anyway (narrowing it would save no memory, cost two conversion
/// passes and add rounding error); GEMM-based
/// convolution weights and fully connected weights are stored in `f16` and widened as they
/// stream into the kernels. Winograd weights (transformed) keep `f32` storage but hold the
/// transform of `f16`-rounded weights; convolutions with short sums keep `f32` weights (see
/// [`MIN_REDUCTION_FOR_F16_WEIGHTS`]); biases stay `f32`. Graph inputs stay in the caller's `f32` tensor
/// (narrowing them would add error and save no memory: the caller holds the `f32` copy anyway;
/// measured, rounding the input image cost 0.1-0.35% top-1 agreement on video) and graph
/// outputs are computed and returned in `f32` (never rounded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoragePrecision {
    #[default]
    F32,
    F16,
    /// [`StoragePrecision::F16`] storage plus native fp16 arithmetic in the GEMM-based
    /// convolutions ([`crate::hgemm`]: products summed in f16 over at most
    /// [`crate::hgemm::F16_CHAIN`] terms, partial sums added in f32; a layer whose partial sum
    /// overflows is recomputed and stays in f32 arithmetic). Short-sum convolutions (see
    /// [`MIN_REDUCTION_FOR_F16_WEIGHTS`]), depthwise, Winograd and dense layers (bandwidth-bound:
    /// fp16 arithmetic would not make them faster) keep f32 arithmetic. Needs AVX512-FP16.
    F16Arith,
}

/// A kernel bound to one node.
pub(crate) enum Kernel {
    Conv(Box<PreparedConv>),
    /// A convolution with the residual Add that consumed it (and an activation after the Add)
    /// fused in: `post(conv(x) + residual)`; the residual is the step's last input.
    ConvAdd {
        conv: Box<PreparedConv>,
        post: Option<Unary>,
    },
    /// An inverted-residual block's convolutions run band by band ([`crate::fused_block`]);
    /// `nodes` are the convolutions' nodes, first to last (a fused residual is the step's last
    /// input).
    Fused {
        block: Box<crate::fused_block::FusedBlock>,
        nodes: Vec<usize>,
    },
    /// Convolutions whose outputs only a channel Concat reads (batch 1: each output is one
    /// contiguous part of the concatenation), each run straight into its part of the Concat's
    /// buffer: `convs` in the Concat's input order, `inputs` their data inputs, `nodes` their
    /// nodes (see [`crate::fusion::fuse_concat_producers`]).
    ConvConcat {
        convs: Vec<PreparedConv>,
        inputs: Vec<ValueId>,
        nodes: Vec<usize>,
    },
    /// A convolution and the max pooling that alone reads it, band by band
    /// ([`crate::conv_pool`]); `nodes` the convolution's and the pooling's nodes.
    ConvPool {
        block: Box<crate::conv_pool::ConvPool>,
        nodes: Vec<usize>,
    },
    /// f32 Concat into a pooled buffer: `(outer, per-input chunk sizes)`.
    Concat {
        outer: usize,
        chunks: Vec<usize>,
    },
    Pool(Box<crate::pool::PreparedPool>),
    /// GlobalAveragePool / GlobalMaxPool of f32 planes of `plane` elements.
    GlobalPool {
        kind: kestrel_core::ops::pool::PoolKind,
        plane: usize,
    },
    /// Gemm/MatMul with a constant right-hand side, as `[N, K]` (the model's own tensor when it is
    /// already in that layout, else a transposed copy).
    Dense {
        bt: DenseWeights,
        k: usize,
        n: usize,
        alpha: f32,
        bias: Option<Tensor>,
        beta: f32,
        activation: Option<Unary>,
    },
    Unary(Unary),
    Binary(BinaryOp),
    /// PRelu with one slope per channel (dim 1) of an f32 input of rank >= 2: `slope[c]` over
    /// planes of `plane` elements.
    ChannelPRelu {
        slope: Vec<f32>,
        plane: usize,
    },
    /// Softmax of an f32 tensor seen as `[outer, n, inner]` over its `n` axis
    /// ([`crate::softmax`]).
    Softmax {
        n: usize,
        inner: usize,
    },
    /// Reshape-like: output is the input's storage under the output fact's shape.
    View,
    /// Every output has zero elements: empty tensors, no kernel (whatever the other dims are,
    /// nothing is allocated from them).
    Empty,
    Reference(Op),
}

pub(crate) struct Step {
    pub(crate) node: usize,
    pub(crate) kernel: Kernel,
    pub(crate) inputs: Vec<Option<ValueId>>,
    pub(crate) outputs: Vec<ValueId>,
    /// Values whose last reader is this step (released afterwards).
    pub(crate) frees: Vec<ValueId>,
}

/// What a step runs, for reports.
#[derive(Clone, Debug)]
pub struct StepInfo {
    pub node_name: String,
    pub op: String,
    pub family: kestrel_core::ops::OpFamily,
    pub kernel: String,
    pub output_shapes: Vec<Vec<usize>>,
    pub macs: u64,
    /// Work and memory traffic of the step with the kernel actually chosen (im2col scratch
    /// included).
    pub cost: kestrel_core::cost::Cost,
    /// For convolutions: the scratch traffic im2col+GEMM would add (whatever algorithm runs),
    /// so the memory-traffic argument can be shown for every layer.
    pub im2col_scratch_bytes: Option<u64>,
}

/// Largest single activation a plan accepts (the same 4 GiB as the largest tensor a model file
/// may declare).
pub const MAX_ACTIVATION_BYTES: u64 = 4 << 30;

/// Most free buffers a pool keeps (a plan's liveness needs far fewer at once).
const MAX_POOLED_BUFFERS: usize = 32;

/// Recycled buffers of one element type, each with the length of its initialised prefix.
/// Bounded: beyond [`MAX_POOLED_BUFFERS`] the smallest buffer is dropped, because buffers that
/// enter from outside (caller inputs, kernels that allocate their own output) would otherwise
/// make it grow by one buffer per run.
///
/// A buffer lent out by [`BufferPool::take`] comes back shorter or longer than it left, while
/// its memory stays initialised as far as it ever was: the pool remembers that extent for the
/// buffers it lent (`lent`), so that a buffer is zero-filled at most once in its life instead of
/// on every run in which it serves a longer tensor than the time before (SqueezeNet's pool
/// refilled 4.4 MB per run that way).
struct BufferPool<T> {
    free: Vec<(Vec<T>, usize)>,
    /// Buffers out on loan: (address, capacity, initialised elements). Forgotten at the end of
    /// each run ([`BufferPool::forget_lent`]) and when it grows past [`MAX_LENT_RECORDS`] (a
    /// forgotten buffer is merely refilled when it is next taken longer than its length).
    lent: Vec<(usize, usize, usize)>,
}

/// Most loan records a pool keeps (a run holds far fewer buffers at once).
const MAX_LENT_RECORDS: usize = 256;

impl<T> Default for BufferPool<T> {
    fn default() -> Self {
        BufferPool {
            free: Vec::new(),
            lent: Vec::new(),
        }
    }
}

impl<T: Copy + Default> BufferPool<T> {
    fn bytes(&self) -> usize {
        self.free.iter().map(|(b, _)| b.capacity()).sum::<usize>() * std::mem::size_of::<T>()
    }

    /// A buffer of `n` elements, best fit from the pool. Its contents are unspecified (left
    /// over from an earlier layer, or default when newly grown): callers overwrite all of it.
    fn take(&mut self, n: usize) -> Vec<T> {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, (b, _))| b.capacity() >= n)
            .min_by_key(|(_, (b, _))| b.capacity())
            .map(|(i, _)| i);
        let (mut buf, mut init) = match best {
            Some(i) => self.free.swap_remove(i),
            None => (Vec::with_capacity(n), 0),
        };
        if init < n {
            // grow the initialised prefix to the whole capacity, once: later loans of any
            // length up to the capacity need no fill
            // SAFETY: the first `init` elements were initialised when the buffer was last in use
            // (T is Copy, so has no drop; truncation leaves the bytes in place) and
            // init <= capacity; the rest is filled by resize.
            unsafe { buf.set_len(init) };
            buf.resize(buf.capacity(), T::default());
            init = buf.capacity();
        }
        // SAFETY: the first `init` elements are initialised (above) and n <= init.
        unsafe { buf.set_len(n) };
        if init > n {
            if self.lent.len() >= MAX_LENT_RECORDS {
                self.lent.clear();
            }
            self.lent
                .push((buf.as_ptr() as usize, buf.capacity(), init));
        }
        buf
    }

    fn put(&mut self, v: Vec<T>) {
        if v.capacity() == 0 {
            return;
        }
        let key = (v.as_ptr() as usize, v.capacity());
        let init = match self.lent.iter().position(|&(p, c, _)| (p, c) == key) {
            Some(i) => self.lent.swap_remove(i).2.max(v.len()),
            None => v.len(),
        };
        self.free.push((v, init));
        if self.free.len() > MAX_POOLED_BUFFERS {
            let smallest = self
                .free
                .iter()
                .enumerate()
                .min_by_key(|(_, (b, _))| b.capacity())
                .map(|(i, _)| i)
                .expect("non-empty");
            self.free.swap_remove(smallest);
        }
    }

    /// Drops the loan records of buffers that did not come back (outputs handed to the
    /// caller): their memory may be freed and reused by an unrelated buffer.
    fn forget_lent(&mut self) {
        self.lent.clear();
    }
}

/// Mutable per-session state: recycled activation buffers and scratch memory.
#[derive(Default)]
pub struct ExecState {
    free_f32: BufferPool<f32>,
    /// Activation storage of the `f16` storage mode.
    free_f16: BufferPool<half::f16>,
    pub(crate) scratch: Vec<f32>,
    pub(crate) values: Vec<Option<Tensor>>,
    /// Activations the f16 storage mode kept in f32 because they exceeded the f16 range.
    kept_f32_out_of_range: usize,
}

impl ExecState {
    /// Bytes held by the pools and scratch (the activation memory of a warm session).
    pub fn pooled_bytes(&self) -> usize {
        self.free_f32.bytes() + self.free_f16.bytes() + self.scratch.capacity() * 4
    }

    /// How many times an activation was kept in f32 because a value exceeded the f16 range
    /// (f16 storage modes; counted over the session's runs).
    pub fn f16_out_of_range(&self) -> usize {
        self.kept_f32_out_of_range
    }

    /// Forgets which buffers the pools lent out: called where a run starts and ends, so a
    /// buffer that left (an output) or was dropped cannot be mistaken for a pooled one later.
    pub(crate) fn forget_lent(&mut self) {
        self.free_f32.forget_lent();
        self.free_f16.forget_lent();
    }

    /// A buffer of `n` floats from the pool; contents unspecified, every kernel overwrites its
    /// whole output.
    fn take_buffer(&mut self, n: usize) -> Vec<f32> {
        self.free_f32.take(n)
    }

    /// Returns a tensor's storage (f32 or f16) to its pool; other element types are dropped.
    pub(crate) fn release(&mut self, t: Tensor) {
        match t.into_parts() {
            (_, kestrel_core::TensorData::F32(v)) => self.free_f32.put(v),
            (_, kestrel_core::TensorData::F16(v)) => self.free_f16.put(v),
            _ => {}
        }
    }

    /// Replaces the `f32` tensor of value `v` (if it is one) by an `f16` copy from the pool,
    /// returning the `f32` storage to its pool.
    fn narrow(&mut self, v: ValueId) -> Result<()> {
        let is_f32 = matches!(&self.values[v], Some(t) if t.dtype() == DType::F32);
        if !is_f32 {
            return Ok(());
        }
        // a value beyond the f16 range (±65504) would turn into infinities: it stays f32
        if !crate::fp16::fits_f16(self.values[v].as_ref().expect("checked").as_f32()?) {
            self.kept_f32_out_of_range += 1;
            return Ok(());
        }
        let wide = self.values[v].take().expect("checked");
        let mut h = self.free_f16.take(wide.len());
        crate::fp16::f32_to_f16(wide.as_f32()?, &mut h);
        self.values[v] = Some(Tensor::from_vec(wide.shape().to_vec(), h)?);
        self.release(wide);
        Ok(())
    }

    /// Replaces the `f16` tensor of value `v` (if it is one) by an `f32` copy from the pool and
    /// returns the `f16` tensor, which the caller puts back after the step.
    fn widen(&mut self, v: ValueId) -> Result<Option<Tensor>> {
        let is_f16 = matches!(&self.values[v], Some(t) if t.dtype() == DType::F16);
        if !is_f16 {
            return Ok(None);
        }
        let h = self.values[v].take().expect("checked");
        let mut wide = self.take_buffer(h.len());
        crate::fp16::f16_to_f32(h.as_slice::<half::f16>()?, &mut wide);
        self.values[v] = Some(Tensor::from_vec(h.shape().to_vec(), wide)?);
        Ok(Some(h))
    }
}

/// Whether node `ni`'s kernel keeps its own copy of input `v` (a convolution's weights or
/// bias, a dense layer's weights), so the graph's constant is not read when it runs.
fn slot_is_packed(graph: &Graph, kernels: &[Kernel], ni: usize, v: ValueId) -> bool {
    let n = &graph.nodes[ni];
    match kernels.get(ni) {
        Some(Kernel::Conv(_)) => {
            n.inputs[1..].iter().flatten().any(|&x| x == v)
                && n.inputs.first().copied().flatten() != Some(v)
        }
        // a dense kernel holds its weights (a copy or its own handle on the constant)
        Some(Kernel::Dense { .. }) => {
            n.inputs.get(1).copied().flatten() == Some(v)
                && n.inputs.first().copied().flatten() != Some(v)
                && n.inputs.get(2).copied().flatten() != Some(v)
        }
        _ => false,
    }
}

/// A graph bound to CPU kernels.
pub struct CpuPlan {
    graph: Graph,
    pub(crate) steps: Vec<Step>,
    pub(crate) pool: rayon::ThreadPool,
    threads: usize,
    storage: StoragePrecision,
    /// Weights whose data the plan dropped after packing them (still weights, for reports).
    released: Vec<bool>,
    /// Values stored in f16 between steps in the f16 storage modes (see [`StoragePrecision`]).
    held: Vec<bool>,
    /// MACs of each step (computed once, on first use).
    step_macs: std::sync::OnceLock<Vec<u64>>,
}

impl CpuPlan {
    /// Builds the plan from a prepared graph (every value has a fact).
    pub fn new(graph: Graph, opts: &CpuOptions) -> Result<Self> {
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        if opts.storage == StoragePrecision::F16Arith && !crate::hgemm::available() {
            return Err(Error::invalid(
                "fp16 arithmetic on the CPU needs AVX512-FP16 (x86-64), which this CPU lacks \
                 (aarch64 FP16 kernels are not written yet); use f16 storage with f32 arithmetic",
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::invalid(format!("cannot start {threads} threads: {e}")))?;
        // every computed value must fit the tensor budget before anything is allocated for it
        for v in &graph.values {
            if let (Some(f), None) = (&v.fact, &v.constant) {
                let bytes = (f.numel() as u128) * f.dtype.size_bytes() as u128;
                if bytes > MAX_ACTIVATION_BYTES as u128 {
                    return Err(Error::TooLarge(format!(
                        "value '{}' of shape {:?} would need {bytes} bytes, over the {MAX_ACTIVATION_BYTES}-byte limit for one activation",
                        v.name, f.shape
                    )));
                }
            }
        }
        let mut last_use = vec![usize::MAX; graph.values.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            for v in n.inputs.iter().flatten() {
                last_use[*v] = i;
            }
        }
        let producers = graph.producers();
        let consumers = graph.consumers();
        // A constant whose every reader copied it into its kernel (packed, transformed) is
        // dropped as soon as its last reader is built, so the load peak holds one layer's
        // weights twice rather than the whole model's (VGG-16: ~550 MB).
        let mut graph = graph;
        let mut kernels: Vec<Kernel> = Vec::with_capacity(graph.nodes.len());
        let mut dropped_early = vec![false; graph.values.len()];
        for i in 0..graph.nodes.len() {
            let node = &graph.nodes[i];
            let k = choose_kernel(&graph, &producers, node, opts)
                .map_err(|e| e.at_node(&node.name, node.op.name()))?;
            kernels.push(k);
            let inputs: Vec<ValueId> = graph.nodes[i].inputs.iter().flatten().copied().collect();
            for v in inputs {
                if last_use[v] == i
                    && graph.values[v].constant.is_some()
                    && !graph.outputs.contains(&v)
                    && consumers[v]
                        .iter()
                        .all(|&ni| slot_is_packed(&graph, &kernels, ni, v))
                {
                    graph.values[v].constant = None;
                    dropped_early[v] = true;
                }
            }
        }
        let graph = graph;
        // Weights the kernels copied at preparation (packed, transformed or converted) are not
        // needed by the plan any more; an f16 weight's Cast whose every reader packed it is not
        // run at all (see kestrel_core::weights).
        let packs_slot = |ni: usize, v: ValueId| slot_is_packed(&graph, &kernels, ni, v);
        let all_packed = |v: ValueId| {
            !consumers[v].is_empty()
                && !graph.outputs.contains(&v)
                && consumers[v].iter().all(|&ni| packs_slot(ni, v))
        };
        let mut absorbed = vec![false; graph.nodes.len()];
        let mut released = vec![false; graph.values.len()];
        for (i, node) in graph.nodes.iter().enumerate() {
            if kestrel_core::weights::is_f16_weight_cast(&graph, node)
                && all_packed(node.outputs[0])
            {
                absorbed[i] = true;
                released[node.outputs[0]] = true;
                if let Some(h) = node.inputs[0] {
                    if consumers[h].len() == 1 {
                        released[h] = true;
                    }
                }
            }
        }
        for v in 0..graph.values.len() {
            if dropped_early[v] || (graph.values[v].constant.is_some() && all_packed(v)) {
                released[v] = true;
            }
        }
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for ((i, node), kernel) in graph.nodes.iter().enumerate().zip(kernels) {
            if absorbed[i] {
                continue;
            }
            let frees = node
                .inputs
                .iter()
                .flatten()
                .copied()
                .filter(|&v| {
                    last_use[v] == i
                        && graph.values[v].constant.is_none()
                        && !released[v]
                        && !graph.outputs.contains(&v)
                })
                .fold(Vec::new(), |mut acc, v| {
                    if !acc.contains(&v) {
                        acc.push(v);
                    }
                    acc
                });
            steps.push(Step {
                node: i,
                kernel,
                inputs: node.inputs.clone(),
                outputs: node.outputs.clone(),
                frees,
            });
        }
        if opts.fuse_residual && opts.storage == StoragePrecision::F32 {
            crate::fusion::fuse_residual_adds(&graph, &mut steps);
            crate::fusion::fuse_blocks(&graph, &mut steps);
            crate::fusion::fuse_concat_producers(&graph, &mut steps);
            crate::fusion::fuse_conv_prelu(&graph, &mut steps);
            crate::fusion::fuse_conv_pools(&graph, &mut steps);
        }
        // f16 storage holds the values that stay alive while other steps run; a value read only
        // by the very next step is handed over in f32 (its f32 working copy would exist during
        // that step anyway: narrowing it would save no memory and add two conversion passes)
        let mut held = vec![false; graph.values.len()];
        for (si, st) in steps.iter().enumerate() {
            for &o in &st.outputs {
                if graph.outputs.contains(&o) {
                    continue;
                }
                held[o] = steps
                    .iter()
                    .enumerate()
                    .any(|(ri, r)| ri != si + 1 && r.inputs.iter().flatten().any(|&v| v == o));
            }
        }
        let mut graph = graph;
        for (v, &r) in released.iter().enumerate() {
            if r {
                graph.values[v].constant = None;
            }
        }
        Ok(CpuPlan {
            graph,
            steps,
            pool,
            threads,
            storage: opts.storage,
            released,
            held,
            step_macs: Default::default(),
        })
    }

    /// MACs of each step, in execution order (the cost model's count, cached).
    pub fn step_macs(&self) -> &[u64] {
        self.step_macs
            .get_or_init(|| self.steps().iter().map(|s| s.cost.macs).collect())
    }

    /// How this plan stores weights and activations.
    pub fn storage(&self) -> StoragePrecision {
        self.storage
    }

    /// The prepared graph this plan runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// One entry per step, in execution order.
    pub fn steps(&self) -> Vec<StepInfo> {
        self.steps
            .iter()
            .map(|s| {
                let node = &self.graph.nodes[s.node];
                let (mut cost, mut macs) = self.io_cost(&node.op, &s.inputs, &s.outputs);
                let out_facts: Vec<Fact> = s
                    .outputs
                    .iter()
                    .filter_map(|&v| self.graph.values[v].fact.clone())
                    .collect();
                let mut im2col_scratch_bytes = None;
                if let Kernel::Conv(pc) = &s.kernel {
                    let scratch = kestrel_core::cost::im2col_scratch_bytes(&pc.geom);
                    im2col_scratch_bytes = Some(scratch);
                    use crate::conv::ConvKernelKind as K;
                    match pc.kind {
                        K::Im2colGemm => cost.scratch_bytes = scratch,
                        // transformed input and GEMM outputs, written once and read once
                        K::WinogradF2 | K::WinogradF4 => {
                            cost.scratch_bytes = 8 * pc.scratch_elems() as u64
                        }
                        _ => {}
                    }
                }
                if let Kernel::ConvConcat { nodes, .. } = &s.kernel {
                    // the convolutions' work, each output written once into the concatenation
                    let costs: Vec<_> = nodes.iter().map(|&n| self.node_cost(n)).collect();
                    cost = costs
                        .iter()
                        .fold(Default::default(), |a: kestrel_core::cost::Cost, c| {
                            a.add(&c.0)
                        });
                    macs = costs.iter().map(|c| c.1).sum();
                }
                if let Kernel::ConvPool { nodes, .. } = &s.kernel {
                    // both layers' work; the convolution's output stays in cache
                    (cost, macs) = self.chain_cost(nodes);
                }
                if let Kernel::Fused { nodes, block } = &s.kernel {
                    // every layer's work; the tensors between them stay in cache (neither
                    // written out nor read back); a fused residual is read
                    (cost, macs) = self.chain_cost(nodes);
                    cost.input_bytes += u64::from(block.has_residual()) * cost.output_bytes;
                }
                StepInfo {
                    node_name: node.name.clone(),
                    op: node.op.name().to_string(),
                    family: node.op.family(),
                    kernel: kernel_name(&s.kernel),
                    output_shapes: out_facts.iter().map(|f| f.shape.clone()).collect(),
                    macs,
                    cost,
                    im2col_scratch_bytes,
                }
            })
            .collect()
    }

    /// The summed work and MACs of a chain of nodes run as one step: it reads the first node's
    /// input and writes the last node's output; the tensors between stay in cache.
    fn chain_cost(&self, nodes: &[usize]) -> (kestrel_core::cost::Cost, u64) {
        let costs: Vec<_> = nodes.iter().map(|&n| self.node_cost(n)).collect();
        let mut cost = costs
            .iter()
            .fold(Default::default(), |a: kestrel_core::cost::Cost, c| {
                a.add(&c.0)
            });
        cost.input_bytes = costs.first().map_or(0, |c| c.0.input_bytes);
        cost.output_bytes = costs.last().map_or(0, |c| c.0.output_bytes);
        (cost, costs.iter().map(|c| c.1).sum())
    }

    /// The cost model's cost and MAC count of node `ni` on its own (its graph inputs and
    /// outputs).
    fn node_cost(&self, ni: usize) -> (kestrel_core::cost::Cost, u64) {
        let node = &self.graph.nodes[ni];
        self.io_cost(&node.op, &node.inputs, &node.outputs)
    }

    /// The cost model's cost and MAC count of `op` reading `inputs` and writing `outputs`
    /// (constants and released weights counted as weights).
    fn io_cost(
        &self,
        op: &Op,
        inputs: &[Option<ValueId>],
        outputs: &[ValueId],
    ) -> (kestrel_core::cost::Cost, u64) {
        let fact = |v: ValueId| self.graph.values[v].fact.as_ref();
        let in_facts: Vec<Option<&Fact>> = inputs.iter().map(|v| v.and_then(fact)).collect();
        let out_facts: Vec<Fact> = outputs.iter().filter_map(|&v| fact(v).cloned()).collect();
        let cost_in: Vec<Option<(&Fact, bool)>> = inputs
            .iter()
            .map(|v| {
                v.and_then(|v| {
                    let val = &self.graph.values[v];
                    val.fact
                        .as_ref()
                        .map(|f| (f, val.constant.is_some() || self.released[v]))
                })
            })
            .collect();
        (
            kestrel_core::cost::op_cost(op, &cost_in, &out_facts),
            op.macs(&in_facts, &out_facts),
        )
    }

    /// Runs the graph. `inputs` are in graph-input order and must match the prepared facts.
    /// Returns the graph outputs in order.
    pub fn run(&self, state: &mut ExecState, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_observed(state, inputs, &mut |_, _| {})
    }

    /// Like [`CpuPlan::run`], calling `observe(step, elapsed)` after every step.
    pub fn run_observed(
        &self,
        state: &mut ExecState,
        inputs: Vec<Tensor>,
        observe: &mut (dyn FnMut(usize, Duration) + Send),
    ) -> Result<Vec<Tensor>> {
        let g = &self.graph;
        if inputs.len() != g.inputs.len() {
            return Err(Error::Input {
                name: "<inputs>".into(),
                msg: format!(
                    "model has {} inputs, {} given",
                    g.inputs.len(),
                    inputs.len()
                ),
            });
        }
        state.forget_lent();
        state.values.clear();
        state.values.resize_with(g.values.len(), || None);
        for (gi, t) in g.inputs.iter().zip(inputs) {
            if g.constant(gi.value).is_some() {
                continue; // the plan was specialised on this input's value
            }
            check_input(g, gi.value, &t)?;
            state.values[gi.value] = Some(t);
        }
        let half = self.storage != StoragePrecision::F32;
        self.pool.install(|| {
            crate::hot::run_hot(|| -> Result<()> {
                for (si, step) in self.steps.iter().enumerate() {
                    let t0 = Instant::now();
                    let node = &g.nodes[step.node];
                    if half {
                        self.run_step_half(state, step)
                    } else {
                        self.run_step_with(state, step, true)
                    }
                    .map_err(|e| e.at_node(&node.name, node.op.name()))?;
                    for &v in &step.frees {
                        if let Some(t) = state.values[v].take() {
                            state.release(t);
                        }
                    }
                    observe(si, t0.elapsed());
                }
                Ok(())
            })
        })?;
        let mut outs = Vec::with_capacity(g.outputs.len());
        for &o in &g.outputs {
            let t = match g.constant(o) {
                Some(c) => c.clone(),
                None => match state.values[o].take() {
                    Some(t) => t,
                    None => {
                        // the same value listed twice as an output
                        outs.iter()
                            .zip(&g.outputs)
                            .find(|(_, &v)| v == o)
                            .map(|(t, _): (&Tensor, _)| t.clone())
                            .ok_or_else(|| {
                                Error::invalid(format!(
                                    "output '{}' was not computed",
                                    g.values[o].name
                                ))
                            })?
                    }
                },
            };
            outs.push(t);
        }
        if half {
            for t in outs.iter_mut() {
                if t.dtype() == DType::F16 {
                    let mut wide = vec![0f32; t.len()];
                    crate::fp16::f16_to_f32(t.as_slice::<half::f16>()?, &mut wide);
                    let h = std::mem::replace(t, Tensor::from_vec(t.shape().to_vec(), wide)?);
                    state.release(h);
                }
            }
        }
        let leftovers: Vec<Tensor> = state.values.iter_mut().filter_map(|t| t.take()).collect();
        for t in leftovers {
            state.release(t);
        }
        state.forget_lent();
        Ok(outs)
    }

    /// Runs one step in the `f16` storage mode: widens its `f16` inputs into `f32` working
    /// buffers, runs the `f32` kernel (consuming inputs that die here when it can), puts the
    /// `f16` inputs back and narrows the outputs to `f16`.
    fn run_step_half(&self, state: &mut ExecState, step: &Step) -> Result<()> {
        let mut parked: Vec<(ValueId, Tensor)> = Vec::new();
        for &v in step.inputs.iter().flatten() {
            if parked.iter().any(|(p, _)| *p == v) {
                continue;
            }
            if let Some(h) = state.widen(v)? {
                parked.push((v, h));
            }
        }
        let result = self.run_step_with(state, step, true);
        for (v, h) in parked {
            if let Some(wide) = state.values[v].take() {
                state.release(wide);
            }
            state.values[v] = Some(h);
        }
        result?;
        for &o in &step.outputs {
            // graph outputs are handed back in f32 (rounding them would only add error: two
            // logits closer than an f16 step would tie); see `held` for the rest
            if self.held[o] {
                state.narrow(o)?;
            }
        }
        Ok(())
    }

    /// Runs one step densely. With `inplace`, inputs whose last reader this is may be consumed;
    /// without (convolutional caching keeps every value), they are left intact.
    pub(crate) fn run_step_with(
        &self,
        state: &mut ExecState,
        step: &Step,
        inplace: bool,
    ) -> Result<()> {
        let g = &self.graph;
        let out_fact = |i: usize| g.values[step.outputs[i]].fact.as_ref().expect("prepared");
        let dies = |v: ValueId| inplace && step.frees.contains(&v);
        match &step.kernel {
            Kernel::Concat { outer, chunks } => {
                let f = out_fact(0);
                let mut buf = state.take_buffer(f.numel());
                let total: usize = chunks.iter().sum();
                let mut off = 0;
                for (v, &c) in step.inputs.iter().zip(chunks) {
                    let src = value(g, state, v.expect("checked at plan time"))?.as_f32()?;
                    for o in 0..*outer {
                        buf[o * total + off..o * total + off + c]
                            .copy_from_slice(&src[o * c..(o + 1) * c]);
                    }
                    off += c;
                }
                state.values[step.outputs[0]] = Some(Tensor::from_vec(f.shape.clone(), buf)?);
            }
            Kernel::GlobalPool { kind, plane } => {
                let x = step.inputs[0].expect("pool input");
                let f = out_fact(0);
                let mut buf = state.take_buffer(f.numel());
                crate::pool::global_pool(*kind, *plane, value(g, state, x)?.as_f32()?, &mut buf);
                state.values[step.outputs[0]] = Some(Tensor::from_vec(f.shape.clone(), buf)?);
            }
            Kernel::Pool(pp) => {
                let x = step.inputs[0].expect("pool input");
                let f = out_fact(0);
                let mut buf = state.take_buffer(f.numel());
                pp.run(value(g, state, x)?.as_f32()?, &mut buf);
                state.values[step.outputs[0]] = Some(Tensor::from_vec(f.shape.clone(), buf)?);
            }
            Kernel::Conv(pc) => {
                let x = step.inputs[0].expect("conv input");
                let f = out_fact(0);
                let mut buf = state.take_buffer(f.numel());
                let mut scratch = std::mem::take(&mut state.scratch);
                {
                    let xs = value(g, state, x)?.as_f32()?;
                    pc.run(xs, &mut buf, &mut scratch);
                }
                state.scratch = scratch;
                state.values[step.outputs[0]] = Some(Tensor::from_vec(f.shape.clone(), buf)?);
            }
            Kernel::ConvConcat { convs, inputs, .. } => {
                let f = out_fact(0);
                let mut buf = state.take_buffer(f.numel());
                let mut scratch = std::mem::take(&mut state.scratch);
                let mut off = 0;
                for (pc, &x) in convs.iter().zip(inputs) {
                    let len =
                        pc.geom.batch * pc.geom.c_out * pc.geom.output.iter().product::<usize>();
                    let xs = value(g, state, x)?.as_f32()?;
                    pc.run(xs, &mut buf[off..off + len], &mut scratch);
                    off += len;
                }
                debug_assert_eq!(off, buf.len());
                state.scratch = scratch;
                state.values[step.outputs[0]] = Some(Tensor::from_vec(f.shape.clone(), buf)?);
            }
            Kernel::ConvPool { block, .. } => {
                let x = step.inputs[0].expect("conv input");
                let f = out_fact(0);
                let mut buf = state.take_buffer(f.numel());
                block.run(value(g, state, x)?.as_f32()?, &mut buf);
                state.values[step.outputs[0]] = Some(Tensor::from_vec(f.shape.clone(), buf)?);
            }
            Kernel::Fused { block, .. } => {
                let x = step.inputs[0].expect("conv input");
                let f = out_fact(0);
                let mut buf = state.take_buffer(f.numel());
                let r = match block.has_residual() {
                    true => {
                        let r = step.inputs.last().copied().flatten();
                        Some(value(g, state, r.expect("residual input"))?.as_f32()?)
                    }
                    false => None,
                };
                block.run(value(g, state, x)?.as_f32()?, r, &mut buf);
                state.values[step.outputs[0]] = Some(Tensor::from_vec(f.shape.clone(), buf)?);
            }
            Kernel::ConvAdd { conv, post } => {
                let x = step.inputs[0].expect("conv input");
                let r = step
                    .inputs
                    .last()
                    .copied()
                    .flatten()
                    .expect("residual input");
                let f = out_fact(0);
                let mut buf = state.take_buffer(f.numel());
                let mut scratch = std::mem::take(&mut state.scratch);
                {
                    let (xs, rs) = (value(g, state, x)?.as_f32()?, value(g, state, r)?.as_f32()?);
                    conv.run_residual(xs, rs, *post, &mut buf, &mut scratch);
                }
                state.scratch = scratch;
                state.values[step.outputs[0]] = Some(Tensor::from_vec(f.shape.clone(), buf)?);
            }
            Kernel::Dense {
                bt,
                k,
                n,
                alpha,
                bias,
                beta,
                activation,
            } => {
                let a = step.inputs[0].expect("dense input");
                let f = out_fact(0);
                let m = f.numel() / n.max(&1);
                let mut buf = state.take_buffer(f.numel());
                bt.matmul(m, *n, *k, value(g, state, a)?.as_f32()?, &mut buf);
                if *alpha != 1.0 {
                    buf.iter_mut().for_each(|v| *v *= alpha);
                }
                if let Some(b) = bias {
                    use kestrel_core::ops::binary::{broadcast_strides, for_each_broadcast};
                    let bv = b.as_f32()?;
                    let shape = [m, *n];
                    let sb = broadcast_strides(b.shape(), &shape);
                    let mut i = 0;
                    for_each_broadcast(&shape, &[*n, 1], &sb, |_, j| {
                        buf[i] += beta * bv[j];
                        i += 1;
                    });
                }
                if let Some(act) = activation {
                    act.apply_slice(&mut buf);
                }
                state.values[step.outputs[0]] = Some(Tensor::from_vec(f.shape.clone(), buf)?);
            }
            Kernel::Unary(u) => {
                let x = step.inputs[0].expect("unary input");
                let t = if dies(x) && g.constant(x).is_none() {
                    let mut t = state.values[x].take().expect("live value");
                    par_activate(t.as_f32_mut()?, *u);
                    t
                } else {
                    let src = value(g, state, x)?;
                    let mut buf = state.take_buffer(src.len());
                    buf.copy_from_slice(value(g, state, x)?.as_f32()?);
                    par_activate(&mut buf, *u);
                    Tensor::from_vec(out_fact(0).shape.clone(), buf)?
                };
                state.values[step.outputs[0]] = Some(t);
            }
            Kernel::Binary(op) => {
                let (a, b) = (step.inputs[0].expect("a"), step.inputs[1].expect("b"));
                let f = out_fact(0);
                let same = value(g, state, a)?.shape() == f.shape.as_slice()
                    && value(g, state, b)?.shape() == f.shape.as_slice()
                    && f.dtype == DType::F32
                    && a != b;
                let t = if same && dies(a) && g.constant(a).is_none() {
                    let mut t = state.values[a].take().expect("live value");
                    let bv = value(g, state, b)?.as_f32()?;
                    use rayon::prelude::*;
                    t.as_f32_mut()?
                        .par_chunks_mut(PAR_CHUNK)
                        .zip(bv.par_chunks(PAR_CHUNK))
                        .for_each(|(xs, ys)| {
                            for (x, &y) in xs.iter_mut().zip(ys) {
                                *x = op.apply_f32(*x, y);
                            }
                        });
                    t
                } else {
                    kestrel_core::ops::binary::eval_binary(
                        *op,
                        value(g, state, a)?,
                        value(g, state, b)?,
                    )?
                };
                state.values[step.outputs[0]] = Some(t);
            }
            Kernel::View => {
                let x = step.inputs[0].expect("view input");
                let shape = out_fact(0).shape.clone();
                let t = if dies(x) && g.constant(x).is_none() {
                    state.values[x].take().expect("live value")
                } else {
                    value(g, state, x)?.clone()
                };
                state.values[step.outputs[0]] = Some(t.reshape(shape)?);
            }
            Kernel::Empty => {
                for &o in &step.outputs {
                    let f = g.values[o].fact.as_ref().expect("prepared");
                    state.values[o] = Some(Tensor::zeros(f.dtype, f.shape.clone())?);
                }
            }
            // in-place position-wise kernels: the input's storage when it dies here, else a copy
            kernel @ (Kernel::ChannelPRelu { .. } | Kernel::Softmax { .. }) => {
                let x = step.inputs[0].expect("one input");
                let mut t = if dies(x) && g.constant(x).is_none() {
                    state.values[x].take().expect("live value")
                } else {
                    let src = value(g, state, x)?;
                    let mut buf = state.take_buffer(src.len());
                    buf.copy_from_slice(value(g, state, x)?.as_f32()?);
                    Tensor::from_vec(out_fact(0).shape.clone(), buf)?
                };
                match kernel {
                    Kernel::ChannelPRelu { slope, plane } => {
                        channel_prelu(t.as_f32_mut()?, slope, *plane)
                    }
                    Kernel::Softmax { n, inner } => {
                        crate::softmax::softmax(t.as_f32_mut()?, *inner, *n)
                    }
                    _ => unreachable!("matched above"),
                }
                state.values[step.outputs[0]] = Some(t);
            }
            Kernel::Reference(op) => {
                let ins: Vec<Option<&Tensor>> = step
                    .inputs
                    .iter()
                    .map(|v| v.map(|v| value(g, state, v)).transpose())
                    .collect::<Result<_>>()?;
                let outs = op.eval(&ins, step.outputs.len())?;
                for (&o, t) in step.outputs.iter().zip(outs) {
                    state.values[o] = Some(t);
                }
            }
        }
        Ok(())
    }
}

/// Elements per parallel task in elementwise kernels.
const PAR_CHUNK: usize = 1 << 14;

/// PRelu in place with one slope per channel plane of `plane` elements (planes in parallel).
pub(crate) fn channel_prelu(xs: &mut [f32], slope: &[f32], plane: usize) {
    use rayon::prelude::*;
    xs.par_chunks_mut(plane.max(1))
        .zip(slope.par_iter())
        .for_each(|(p, &s)| prelu_slice(p, s));
}

/// `x = x > 0 ? x : s * x` over a slice (a blend the compiler vectorises).
#[inline]
pub(crate) fn prelu_slice(xs: &mut [f32], s: f32) {
    for v in xs {
        *v = if *v > 0.0 { *v } else { *v * s };
    }
}

/// Applies an activation in parallel chunks.
fn par_activate(xs: &mut [f32], u: Unary) {
    use rayon::prelude::*;
    xs.par_chunks_mut(PAR_CHUNK)
        .for_each(|c| crate::simd::activate(c, u));
}

/// Checks a caller's tensor against the prepared fact of graph input `v`.
pub(crate) fn check_input(g: &Graph, v: ValueId, t: &Tensor) -> Result<()> {
    let want = g.values[v].fact.as_ref().expect("prepared");
    if t.dtype() != want.dtype || t.shape() != want.shape.as_slice() {
        return Err(Error::Input {
            name: g.values[v].name.clone(),
            msg: format!(
                "expected {} {:?}, got {} {:?}",
                want.dtype,
                want.shape,
                t.dtype(),
                t.shape()
            ),
        });
    }
    Ok(())
}

/// The current tensor of value `v` (a constant or a computed value).
pub(crate) fn value<'a>(g: &'a Graph, state: &'a ExecState, v: ValueId) -> Result<&'a Tensor> {
    if let Some(c) = g.constant(v) {
        return Ok(c);
    }
    state.values[v]
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("value '{}' is not available", g.values[v].name)))
}

fn kernel_name(k: &Kernel) -> String {
    match k {
        Kernel::Conv(pc) if pc.f16_arith_state() == Some(true) => {
            format!("{}+f16arith", pc.kind.name())
        }
        Kernel::Conv(pc) if pc.f16_arith_state() == Some(false) => {
            format!("{}+f16w (f32 arith after overflow)", pc.kind.name())
        }
        Kernel::Conv(pc) if pc.has_f16_weights() => format!("{}+f16w", pc.kind.name()),
        Kernel::Conv(pc) if pc.has_prelu() => format!("{}+prelu", pc.kernel_name()),
        Kernel::Conv(pc) => pc.kernel_name().to_string(),
        Kernel::ConvAdd { conv, post } => format!(
            "{}+add{}",
            conv.kind.name(),
            if post.is_some() { "+relu" } else { "" }
        ),
        Kernel::Fused { block, .. } => block.name(),
        Kernel::ConvPool { block, .. } => block.name(),
        Kernel::ConvConcat { convs, .. } => {
            let kinds: Vec<&str> = convs.iter().map(|c| c.kernel_name()).collect();
            format!("{}->concat", kinds.join("|"))
        }
        Kernel::Pool(_) => "pool-direct".into(),
        Kernel::GlobalPool { .. } => "global-pool".into(),
        Kernel::Concat { .. } => "concat-copy".into(),
        Kernel::Dense { bt, .. } if bt.is_half() => "gemm-nt+f16w".into(),
        Kernel::Dense { .. } => "gemm-nt".into(),
        Kernel::Unary(_) => "unary".into(),
        Kernel::Binary(_) => "binary".into(),
        Kernel::ChannelPRelu { .. } => "prelu-channel".into(),
        Kernel::Softmax { inner, .. } if *inner >= 16 => "softmax-vector".into(),
        Kernel::Softmax { .. } => "softmax-rows".into(),
        Kernel::View => "view".into(),
        Kernel::Empty => "empty".into(),
        Kernel::Reference(_) => "reference".into(),
    }
}

fn choose_kernel(
    g: &Graph,
    producers: &[Option<kestrel_core::NodeId>],
    node: &kestrel_core::Node,
    opts: &CpuOptions,
) -> Result<Kernel> {
    let (algo, storage) = (opts.conv_algo, opts.storage);
    let half = storage != StoragePrecision::F32;
    let arith16 = storage == StoragePrecision::F16Arith;
    // the weight operand: a constant, or an f16 constant behind a Cast (kestrel_core::weights)
    let weight1 = node
        .inputs
        .get(1)
        .copied()
        .flatten()
        .and_then(|v| kestrel_core::weights::weight(g, producers, v));
    let fact = |i: usize| {
        node.inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|v| g.values[v].fact.as_ref())
    };
    let konst = |i: usize| {
        node.inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|v| g.constant(v))
    };
    let is_f32 = fact(0).is_some_and(|f| f.dtype == DType::F32);
    let all_empty = node.outputs.iter().all(|&o| {
        g.values[o]
            .fact
            .as_ref()
            .is_some_and(|f| f.shape.contains(&0))
    });
    if all_empty {
        return Ok(Kernel::Empty);
    }
    Ok(match &node.op {
        Op::Conv(a) if is_f32 && algo != ConvAlgo::Reference => match (&weight1, fact(0)) {
            (Some(w), Some(x)) => {
                let w = w.to_f32();
                let geom = conv_geometry(a, &x.shape, w.shape())?;
                let bias = match node.inputs.get(2).copied().flatten() {
                    Some(_) => match konst(2) {
                        Some(b) => Some(b.as_f32()?),
                        None => return Ok(Kernel::Reference(node.op.clone())),
                    },
                    None => None,
                };
                let reduction = geom.c_in_per_group() * geom.kernel_volume();
                if half && reduction >= MIN_REDUCTION_FOR_F16_WEIGHTS {
                    let mut wr = w.as_f32()?.to_vec();
                    crate::fp16::round_to_f16(&mut wr);
                    let pc = PreparedConv::new_for(
                        geom,
                        &wr,
                        bias,
                        a.activation,
                        algo,
                        opts.region_kernels,
                    )
                    .with_f16_weights();
                    Kernel::Conv(Box::new(if arith16 { pc.with_f16_arith() } else { pc }))
                } else {
                    Kernel::Conv(Box::new(PreparedConv::new_for(
                        geom,
                        w.as_f32()?,
                        bias,
                        a.activation,
                        algo,
                        opts.region_kernels,
                    )))
                }
            }
            _ => Kernel::Reference(node.op.clone()),
        },
        Op::Gemm(GemmAttrs {
            alpha,
            beta,
            trans_a: false,
            trans_b,
            activation,
        }) if is_f32
            && weight1.is_some()
            && (node.inputs.get(2).copied().flatten().is_none() || konst(2).is_some()) =>
        {
            let w = weight1.as_ref().expect("checked");
            let (k, n, bt) = pack_bt(w, *trans_b, half)?;
            Kernel::Dense {
                bt,
                k,
                n,
                alpha: *alpha,
                bias: konst(2).cloned(),
                beta: *beta,
                activation: *activation,
            }
        }
        Op::MatMul if is_f32 => match (&weight1, fact(0)) {
            (Some(b), Some(a)) if b.shape().len() == 2 && a.shape.len() >= 2 => {
                let (k, n, bt) = pack_bt(b, false, half)?;
                Kernel::Dense {
                    bt,
                    k,
                    n,
                    alpha: 1.0,
                    bias: None,
                    beta: 0.0,
                    activation: None,
                }
            }
            _ => Kernel::Reference(node.op.clone()),
        },
        Op::MaxPool(a) | Op::AveragePool(a) if is_f32 && node.outputs.len() == 1 => {
            let kind = if matches!(node.op, Op::MaxPool(_)) {
                kestrel_core::ops::pool::PoolKind::Max
            } else {
                kestrel_core::ops::pool::PoolKind::Average
            };
            let x = fact(0).expect("is_f32 checked the fact");
            let geom = kestrel_core::ops::pool::pool_geometry(a, &x.shape)?;
            match crate::pool::PreparedPool::new(geom, kind, a.count_include_pad) {
                Some(p) => Kernel::Pool(Box::new(p)),
                None => Kernel::Reference(node.op.clone()),
            }
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool
            if is_f32 && fact(0).is_some_and(|x| x.shape.len() >= 3) =>
        {
            let x = fact(0).expect("checked");
            let kind = if node.op == Op::GlobalMaxPool {
                kestrel_core::ops::pool::PoolKind::Max
            } else {
                kestrel_core::ops::pool::PoolKind::Average
            };
            Kernel::GlobalPool {
                kind,
                plane: x.shape[2..].iter().product(),
            }
        }
        Op::Concat { axis } if is_f32 && node.inputs.iter().all(|v| v.is_some()) => {
            let out = g.values[node.outputs[0]].fact.as_ref().expect("prepared");
            let a = kestrel_core::ops::norm_axis(*axis, out.shape.len())?;
            let outer: usize = out.shape[..a].iter().product();
            let chunks = (0..node.inputs.len())
                .map(|i| fact(i).map_or(0, |f| f.shape[a..].iter().product()))
                .collect();
            Kernel::Concat { outer, chunks }
        }
        Op::Unary(u) if is_f32 => Kernel::Unary(*u),
        Op::Binary(b) if *b != BinaryOp::Equal && is_f32 => Kernel::Binary(*b),
        Op::PRelu if is_f32 => match (fact(0), konst(1).map(|t| t.as_f32()).transpose()?) {
            (Some(x), Some(slope)) => match channel_slopes(&x.shape, slope, fact(1)) {
                Some((slope, plane)) => Kernel::ChannelPRelu { slope, plane },
                None => Kernel::Reference(node.op.clone()),
            },
            _ => Kernel::Reference(node.op.clone()),
        },
        Op::Softmax { axis, legacy } if is_f32 && algo != ConvAlgo::Reference => {
            match fact(0).filter(|f| !f.shape.is_empty()) {
                Some(x) => {
                    let a = kestrel_core::ops::norm_axis(*axis, x.shape.len())?;
                    let (n, inner) = if *legacy {
                        (x.shape[a..].iter().product(), 1)
                    } else {
                        (x.shape[a], x.shape[a + 1..].iter().product())
                    };
                    Kernel::Softmax { n, inner }
                }
                None => Kernel::Reference(node.op.clone()),
            }
        }
        op if op.is_reshape_only() => Kernel::View,
        op => Kernel::Reference(op.clone()),
    })
}

/// Per-channel slopes of a PRelu on an input of shape `x` (rank >= 2, channels on dim 1) when
/// the slope broadcasts as one value per channel (`[C,1,..]`, `[1,C,1,..]`, a scalar, or `[1]`):
/// `(slope per channel, elements per channel plane)`; None for other broadcasts.
fn channel_slopes(
    x: &[usize],
    slope: &[f32],
    slope_fact: Option<&kestrel_core::Fact>,
) -> Option<(Vec<f32>, usize)> {
    let s = &slope_fact?.shape;
    if x.len() < 2 || x[0] != 1 {
        return None;
    }
    let c = x[1];
    let plane: usize = x[2..].iter().product();
    if slope.len() == 1 {
        return Some((vec![slope[0]; c], plane));
    }
    // right-aligned broadcast: the slope's dims must be 1 except the one aligned with dim 1
    let offset = x.len().checked_sub(s.len())?;
    let ok = s
        .iter()
        .enumerate()
        .all(|(i, &d)| if offset + i == 1 { d == c } else { d == 1 })
        && (offset..x.len()).contains(&1);
    (ok && slope.len() == c).then(|| (slope.to_vec(), plane))
}

/// Weights of a dense layer in `[N, K]` layout.
pub(crate) enum DenseWeights {
    /// The model's constant itself (no copy: FC layers are the largest tensors of a CNN).
    Shared(std::sync::Arc<Tensor>),
    Owned(Vec<f32>),
    /// Half-precision storage (the `f16` storage mode): half the bytes streamed per inference.
    Half(Vec<half::f16>),
    /// The model's own `f16` constant (weights converted at load time), used without a copy.
    SharedHalf(std::sync::Arc<Tensor>),
}

impl DenseWeights {
    /// `C (m×n) = A (m×k) · Wᵀ`.
    fn matmul(&self, m: usize, n: usize, k: usize, a: &[f32], c: &mut [f32]) {
        match self {
            DenseWeights::Shared(t) => {
                sgemm_nt(m, n, k, a, t.as_f32().expect("checked f32 at plan time"), c)
            }
            DenseWeights::Owned(v) => sgemm_nt(m, n, k, a, v, c),
            DenseWeights::Half(h) => crate::gemm::gemm_nt_f16w(m, n, k, a, h, c),
            DenseWeights::SharedHalf(t) => crate::gemm::gemm_nt_f16w(
                m,
                n,
                k,
                a,
                t.as_slice::<half::f16>().expect("checked f16 at plan time"),
                c,
            ),
        }
    }

    fn is_half(&self) -> bool {
        matches!(self, DenseWeights::Half(_) | DenseWeights::SharedHalf(_))
    }
}

/// A constant 2-D B (`[K, N]`, or `[N, K]` when `trans_b`) as `[N, K]`, stored in `f16` when
/// `half` or when it already is. The model's own tensor is used without a copy when it is in the
/// right layout and precision.
fn pack_bt(
    b: &kestrel_core::weights::Weight,
    trans_b: bool,
    half: bool,
) -> Result<(usize, usize, DenseWeights)> {
    use kestrel_core::weights::Weight;
    let s = b.shape();
    if s.len() != 2 {
        return Err(Error::invalid("dense weights must be 2-D"));
    }
    let (k, n) = if trans_b { (s[1], s[0]) } else { (s[0], s[1]) };
    match (b, trans_b) {
        (Weight::Plain(t), true) if !half && t.dtype() == DType::F32 => {
            return Ok((k, n, DenseWeights::Shared((*t).clone())));
        }
        (Weight::F16(t, _), true) => return Ok((k, n, DenseWeights::SharedHalf((*t).clone()))),
        (Weight::F16(t, _), false) => {
            let hv = t.as_slice::<half::f16>()?;
            let mut bt = vec![half::f16::ZERO; n * k];
            for p in 0..k {
                for j in 0..n {
                    bt[j * k + p] = hv[p * n + j];
                }
            }
            return Ok((k, n, DenseWeights::Half(bt)));
        }
        _ => {}
    }
    let bv = b.stored().as_f32()?;
    if half {
        let mut h = vec![half::f16::ZERO; n * k];
        if trans_b {
            crate::fp16::f32_to_f16(bv, &mut h);
        } else {
            for p in 0..k {
                for j in 0..n {
                    h[j * k + p] = half::f16::from_f32(bv[p * n + j]);
                }
            }
        }
        return Ok((k, n, DenseWeights::Half(h)));
    }
    let mut bt = vec![0f32; n * k];
    if trans_b {
        bt.copy_from_slice(bv);
    } else {
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = bv[p * n + j];
            }
        }
    }
    Ok((k, n, DenseWeights::Owned(bt)))
}
