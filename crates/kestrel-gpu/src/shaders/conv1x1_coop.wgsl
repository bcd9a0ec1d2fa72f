// conv1x1.wgsl's GEMM on cooperative matrices (tensor cores): the same bindings, parameters,
// dispatch grid and results (split-K partial sums, Winograd's batched weights, the fused
// residual, region runs' first pixel tile), for native f16 storage on adapters with
// 16x16x16 f16 x f16 -> f32 cooperative matrices and 32-wide subgroups (kernels.rs checks).
// y[n, oc, p] = act(sum_ic W[oc, ic] * x[n, ic, p] + bias[oc] [+ res]).
// A workgroup (two subgroups of 32) computes 64 pixels x 32 output channels: per chunk of 32
// input channels it stages the input tile [TK][TP] and the weight tile [TO][TK] in workgroup
// memory as f16 (zero past the slice's channels, the plane and the output channels); subgroup
// s multiplies its 16 output channels by the four 16-pixel column blocks, accumulating in f32
// matrices (fp16 storage, fp32 accumulation). The sums go through workgroup memory to the
// same epilogue as conv1x1.wgsl.
// Opt-in (KESTREL_GPU_COOP=1): on an H100 it measured 1.3-1.6x slower than conv1x1.wgsl
// (1.5-3.2 TFLOP/s; scalar staging loads and two barriers per chunk leave the matrix units
// idle), same accuracy (docs/gpu/coop_ab_session9.json).

struct Params {
    batch: u32, c_in: u32, c_out: u32, plane: u32,
    tiles_p: u32, act: u32, a0: f32, a1: f32,
    ksplit: u32, k_per: u32, w_batch: u32, has_res: u32,
}

const TP: u32 = 64u;
const TO: u32 = 32u;
const TK: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read> wt: array<S>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<S>;
@group(0) @binding(5) var<storage, read> res: array<S>;
// region runs (plan/region.rs): x = the first pixel tile (0: the whole plane)
@group(0) @binding(6) var<uniform> region: vec4<u32>;

var<workgroup> xs: array<f16, 2048>; // [TK][TP]
var<workgroup> ws: array<f16, 1024>; // [TO][TK]
var<workgroup> cs: array<f32, 2048>; // [TO][TP]

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let p0 = (wg.x + region.x) * TP;
    let oc0 = wg.y * TO;
    let ksplit = max(p.ksplit, 1u);
    let n = wg.z / ksplit;
    let ks = wg.z % ksplit;
    let k_begin = select(0u, ks * p.k_per, ksplit > 1u);
    let k_end = select(p.c_in, min(p.c_in, k_begin + p.k_per), ksplit > 1u);
    let sg = li / 32u; // this subgroup's 16 output channels: oc0 + 16 sg ..
    var acc0 = coop_mat16x16<f32, C>();
    var acc1 = coop_mat16x16<f32, C>();
    var acc2 = coop_mat16x16<f32, C>();
    var acc3 = coop_mat16x16<f32, C>();
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        for (var i = li; i < TK * TP; i += 64u) {
            let ic = k0 + i / TP;
            let q = p0 + i % TP;
            var v = 0.0;
            if (ic < k_end && q < p.plane) { v = ld_x((n * p.c_in + ic) * p.plane + q); }
            xs[i] = f16(v);
        }
        for (var i = li; i < TO * TK; i += 64u) {
            let oc = oc0 + i / TK;
            let ic = k0 + i % TK;
            var v = 0.0;
            if (oc < p.c_out && ic < k_end) { v = ld_wt(n * p.w_batch + oc * p.c_in + ic); }
            ws[i] = f16(v);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk += 16u) {
            let a = coopLoadT<coop_mat16x16<f16, A>>(&ws[sg * 16u * TK + kk], TK);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&xs[kk * TP], TP);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&xs[kk * TP + 16u], TP);
            let b2 = coopLoadT<coop_mat16x16<f16, B>>(&xs[kk * TP + 32u], TP);
            let b3 = coopLoadT<coop_mat16x16<f16, B>>(&xs[kk * TP + 48u], TP);
            acc0 = coopMultiplyAdd(a, b0, acc0);
            acc1 = coopMultiplyAdd(a, b1, acc1);
            acc2 = coopMultiplyAdd(a, b2, acc2);
            acc3 = coopMultiplyAdd(a, b3, acc3);
        }
        workgroupBarrier();
    }
    coopStoreT(acc0, &cs[sg * 16u * TP], TP);
    coopStoreT(acc1, &cs[sg * 16u * TP + 16u], TP);
    coopStoreT(acc2, &cs[sg * 16u * TP + 32u], TP);
    coopStoreT(acc3, &cs[sg * 16u * TP + 48u], TP);
    workgroupBarrier();
    for (var i = li; i < TO * TP; i += 64u) {
        let oc = oc0 + i / TP;
        let q = p0 + i % TP;
        if (oc < p.c_out && q < p.plane) {
            if (ksplit > 1u) {
                st_y(((ks * p.batch + n) * p.c_out + oc) * p.plane + q, cs[i]);
            } else {
                let at = (n * p.c_out + oc) * p.plane + q;
                var r = 0.0;
                if (p.has_res != 0u) { r = ld_res(at); }
                st_y(at, activate(cs[i] + bias[oc] + r, p.act, p.a0, p.a1));
            }
        }
    }
}
