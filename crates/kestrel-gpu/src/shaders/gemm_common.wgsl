// Shared by the GEMM kernels (conv1x1.wgsl, conv1x1_coop.wgsl, conv1x1_big.wgsl), placed
// before their bodies by the launcher (kernels.rs): one parameter block (plan/mod.rs
// `Conv1x1Params`) and bindings 0-5, so every GEMM kernel takes the same dispatch entries.
// y[n, oc, p] = act(sum_ic W[oc, ic] * x[n, ic, p] + bias[oc] [+ res]); ksplit > 1: slice
// wg.z % ksplit of k_per input channels writes raw partial sums to y (a scratch buffer);
// w_batch > 0: image n uses the weight matrix at wt[n * w_batch ..]; has_res: add res.

struct Params {
    batch: u32, c_in: u32, c_out: u32, plane: u32,
    tiles_p: u32, act: u32, a0: f32, a1: f32,
    ksplit: u32, k_per: u32, w_batch: u32, has_res: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read> wt: array<S>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<S>;
@group(0) @binding(5) var<storage, read> res: array<S>;
