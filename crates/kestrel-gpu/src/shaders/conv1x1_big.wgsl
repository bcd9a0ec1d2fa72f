// conv1x1.wgsl's GEMM with large register tiles, for dense GEMMs big enough to fill the GPU
// with fewer, larger workgroups (f32 arithmetic, any storage): the same bindings, parameters
// and results (split-K partial sums, Winograd's batched weights, the fused residual), not
// region runs (the launcher, `Builder::gemm_shader`, uses it only in dense plans).
// y[n, oc, p] = act(sum_ic W[oc, ic] * x[n, ic, p] + bias[oc] [+ res]).
// The launcher prepends the thread grid, `const TX` (along pixels) and `const TY` (along output
// channels). A workgroup of TX * TY invocations computes TP = 8 TX pixels x TO = 8 TY output
// channels; each invocation keeps 8 pixels (two quads, TP / 2 apart) x 8 output channels (two
// quads, TO / 2 apart) in 16 vec4 registers: per input channel it reads 4 vec4 from workgroup
// memory for 64 multiply-adds (conv1x1.wgsl: 9 reads for 32). For each chunk of TK input
// channels the input tile [TK][TP] and the transposed weight tile [TK][TO] are staged in
// workgroup memory; the next chunk's global loads are issued into registers before the current
// chunk is multiplied out (software pipelining).

const TK: u32 = 16u;
const TP: u32 = TX * 8u;
const TO: u32 = TY * 8u;
const TP4: u32 = TP / 4u;
const TO4: u32 = TO / 4u;
const NT: u32 = TX * TY;
// vec4 loads per invocation and chunk: input quads, weight quads
const NX: u32 = TK * TP4 / NT;
const NW: u32 = TK * TO4 / NT;

// Params and bindings 0-5: gemm_common.wgsl

var<workgroup> xs: array<vec4<f32>, TK * TP4>; // [TK][TP / 4]
var<workgroup> ws: array<vec4<f32>, TK * TO4>; // [TK][TO / 4]: output channels as quads

fn xat(n: u32, ic: u32, px: u32) -> f32 {
    if (px < p.plane) { return ld_x((n * p.c_in + ic) * p.plane + px); }
    return 0.0;
}

// Element e of the chunk's input tile [TK][TP / 4] (input channels k0.., pixels p0..), 0 past
// the slice's channels or the plane.
fn load_x(n: u32, k0: u32, k_end: u32, p0: u32, e: u32) -> vec4<f32> {
    let ic = k0 + e / TP4;
    let px = p0 + (e % TP4) * 4u;
    if (ic >= k_end) { return vec4<f32>(0.0); }
    return vec4<f32>(xat(n, ic, px), xat(n, ic, px + 1u), xat(n, ic, px + 2u), xat(n, ic, px + 3u));
}

fn wat(n: u32, oc: u32, k: u32) -> f32 {
    if (oc < p.c_out) { return ld_wt(n * p.w_batch + oc * p.c_in + k); }
    return 0.0;
}

// Element e of the chunk's weight tile [TK][TO / 4]: input channel k0 + e % TK (consecutive
// invocations read consecutive input channels of a weight row), output quad e / TK.
fn load_w(n: u32, oc0: u32, k0: u32, k_end: u32, e: u32) -> vec4<f32> {
    let k = k0 + e % TK;
    let oc = oc0 + (e / TK) * 4u;
    if (k >= k_end) { return vec4<f32>(0.0); }
    return vec4<f32>(wat(n, oc, k), wat(n, oc + 1u, k), wat(n, oc + 2u, k), wat(n, oc + 3u, k));
}

@compute @workgroup_size(NT)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let p0 = wg.x * TP;
    let oc0 = wg.y * TO;
    let ksplit = max(p.ksplit, 1u);
    let n = wg.z / ksplit;
    let ks = wg.z % ksplit;
    let k_begin = select(0u, ks * p.k_per, ksplit > 1u);
    let k_end = select(p.c_in, min(p.c_in, k_begin + p.k_per), ksplit > 1u);
    let tx = li % TX;
    let ty = li / TX;
    // a*: pixel quad tx, b*: pixel quad tx + TX; * = output channel 0..3 of quad ty, 4..7 of
    // quad ty + TY
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0); var b2 = vec4<f32>(0.0); var b3 = vec4<f32>(0.0);
    var b4 = vec4<f32>(0.0); var b5 = vec4<f32>(0.0); var b6 = vec4<f32>(0.0); var b7 = vec4<f32>(0.0);
    var xr: array<vec4<f32>, NX>;
    var wr: array<vec4<f32>, NW>;
    for (var i = 0u; i < NX; i++) { xr[i] = load_x(n, k_begin, k_end, p0, li + i * NT); }
    for (var i = 0u; i < NW; i++) { wr[i] = load_w(n, oc0, k_begin, k_end, li + i * NT); }
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        for (var i = 0u; i < NX; i++) { xs[li + i * NT] = xr[i]; }
        for (var i = 0u; i < NW; i++) {
            let e = li + i * NT;
            ws[(e % TK) * TO4 + e / TK] = wr[i];
        }
        let k1 = k0 + TK;
        if (k1 < k_end) {
            for (var i = 0u; i < NX; i++) { xr[i] = load_x(n, k1, k_end, p0, li + i * NT); }
            for (var i = 0u; i < NW; i++) { wr[i] = load_w(n, oc0, k1, k_end, li + i * NT); }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let xa = xs[kk * TP4 + tx];
            let xb = xs[kk * TP4 + tx + TX];
            let wa = ws[kk * TO4 + ty];
            let wb = ws[kk * TO4 + ty + TY];
            a0 += xa * wa.x; a1 += xa * wa.y; a2 += xa * wa.z; a3 += xa * wa.w;
            a4 += xa * wb.x; a5 += xa * wb.y; a6 += xa * wb.z; a7 += xa * wb.w;
            b0 += xb * wa.x; b1 += xb * wa.y; b2 += xb * wa.z; b3 += xb * wa.w;
            b4 += xb * wb.x; b5 += xb * wb.y; b6 += xb * wb.z; b7 += xb * wb.w;
        }
        workgroupBarrier();
    }
    let accs = array<vec4<f32>, 16>(a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7);
    for (var j = 0u; j < 8u; j++) {
        let oc = oc0 + select(ty * 4u + j, TO / 2u + ty * 4u + j - 4u, j >= 4u);
        if (oc >= p.c_out) { continue; }
        for (var h = 0u; h < 2u; h++) {
            let acc = accs[h * 8u + j];
            for (var c = 0u; c < 4u; c++) {
                let px = p0 + h * (TP / 2u) + tx * 4u + c;
                if (px < p.plane) {
                    if (ksplit > 1u) {
                        st_y(((ks * p.batch + n) * p.c_out + oc) * p.plane + px, acc[c]);
                    } else {
                        let at = (n * p.c_out + oc) * p.plane + px;
                        var r = 0.0;
                        if (p.has_res != 0u) { r = ld_res(at); }
                        st_y(at, activate(acc[c] + bias[oc] + r, p.act, p.a0, p.a1));
                    }
                }
            }
        }
    }
}
