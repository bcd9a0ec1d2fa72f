// 1x1 convolution (stride 1, no padding, groups == 1) as a tiled GEMM:
// y[n, oc, p] = act(sum_ic W[oc, ic] * x[n, ic, p] + bias[oc]).
// A workgroup computes 64 pixels x 32 output channels. For each chunk of 16 input channels it
// stages the 16x64 input tile (as vec4 over pixels) and the 32x16 weight tile in workgroup
// memory; each invocation keeps 4 pixels x 8 channels in 8 vec4 registers.
// Split-K (ksplit > 1, k_per input channels per slice): for small maps, workgroup z =
// n * ksplit + slice sums one slice and writes raw partial sums (slice after slice, each laid
// out like the output) to `y`, then a scratch buffer that splitk_reduce.wgsl reduces.
// w_batch > 0: image n uses its own weight matrix at wt[n * w_batch ..] (the batched GEMM of
// Winograd convolution, one matrix per transformed position).
// has_res == 1: a residual tensor laid out like the output is added before the activation
// (Conv -> Add [-> Relu] fused; unsplit launches only).

const TP: u32 = 64u;
const TO: u32 = 32u;
const TK: u32 = 16u;

// Params and bindings 0-5: gemm_common.wgsl
// region runs (plan/region.rs): x = the first pixel tile (0: the whole plane; unsplit only).
// The RECT pipeline (persistent plans' unsplit 1x1 layers) instead walks a rectangle of the
// plane: logical pixel q < region.x maps to region.z + (q / region.y) * region.w + q % region.y
// (region.y == 0: the whole plane, q itself); dense pipelines compile this out.
@group(0) @binding(6) var<uniform> region: vec4<u32>;
override RECT: bool = false;

// The plane position of logical pixel q.
fn phys(q: u32) -> u32 {
    if (RECT && region.y != 0u) { return region.z + (q / region.y) * region.w + q % region.y; }
    return q;
}

// Logical pixels: the plane, or the rectangle's.
fn pixels() -> u32 {
    if (RECT && region.y != 0u) { return region.x; }
    return p.plane;
}

var<workgroup> xs: array<vec4<A>, 256>; // [TK][TP / 4]
var<workgroup> ws: array<A, 512>;       // [TO][TK]

fn xat(n: u32, ic: u32, px: u32) -> f32 {
    if (px < pixels()) { return ld_x((n * p.c_in + ic) * p.plane + phys(px)); }
    return 0.0;
}

// Element i of the chunk's input tile [TK][TP / 4] (input channels k0.., pixels p0..), 0 past
// the slice's channels or the plane.
fn load_x(n: u32, k0: u32, k_end: u32, p0: u32, i: u32) -> vec4<f32> {
    let ic = k0 + i / 16u;
    let px = p0 + (i % 16u) * 4u;
    if (ic >= k_end) { return vec4<f32>(0.0); }
    return vec4<f32>(xat(n, ic, px), xat(n, ic, px + 1u), xat(n, ic, px + 2u), xat(n, ic, px + 3u));
}

// Element i of the chunk's weight tile [TO][TK] (output channels oc0.., input channels k0..).
fn load_w(n: u32, oc0: u32, k0: u32, k_end: u32, i: u32) -> f32 {
    let o = i / TK;
    let kk = i % TK;
    if (oc0 + o >= p.c_out || k0 + kk >= k_end) { return 0.0; }
    return ld_wt(n * p.w_batch + (oc0 + o) * p.c_in + k0 + kk);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let p0 = (wg.x + select(region.x, 0u, RECT)) * TP;
    let oc0 = wg.y * TO;
    let ksplit = max(p.ksplit, 1u);
    let n = wg.z / ksplit;
    let ks = wg.z % ksplit;
    let k_begin = select(0u, ks * p.k_per, ksplit > 1u);
    let k_end = select(p.c_in, min(p.c_in, k_begin + p.k_per), ksplit > 1u);
    let tq = li % 16u;      // pixel quad of this invocation
    let tg = li / 16u;      // channel group: 8 channels
    // c*: sums in the arithmetic type A; a*: f32 totals. With FLUSH_CHUNKS (fp16 arithmetic)
    // each chunk of TK input channels is summed in A and added to the f32 totals, so no fp16
    // sum is longer than TK products; otherwise c* hold the whole sum and a* stay 0 until the end.
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0); var a5 = vec4<f32>(0.0); var a6 = vec4<f32>(0.0); var a7 = vec4<f32>(0.0);
    var c0 = vec4<A>(0.0); var c1 = vec4<A>(0.0); var c2 = vec4<A>(0.0); var c3 = vec4<A>(0.0);
    var c4 = vec4<A>(0.0); var c5 = vec4<A>(0.0); var c6 = vec4<A>(0.0); var c7 = vec4<A>(0.0);
    // Software pipelining: the global loads of chunk k0 + TK are issued into registers before
    // chunk k0 is multiplied out of workgroup memory, so their latency hides behind the FMAs
    // (few warps per SM on a large GPU cannot hide it otherwise).
    var x0 = load_x(n, k_begin, k_end, p0, li);
    var x1 = load_x(n, k_begin, k_end, p0, li + 64u);
    var x2 = load_x(n, k_begin, k_end, p0, li + 128u);
    var x3 = load_x(n, k_begin, k_end, p0, li + 192u);
    var w0 = load_w(n, oc0, k_begin, k_end, li);
    var w1 = load_w(n, oc0, k_begin, k_end, li + 64u);
    var w2 = load_w(n, oc0, k_begin, k_end, li + 128u);
    var w3 = load_w(n, oc0, k_begin, k_end, li + 192u);
    var w4 = load_w(n, oc0, k_begin, k_end, li + 256u);
    var w5 = load_w(n, oc0, k_begin, k_end, li + 320u);
    var w6 = load_w(n, oc0, k_begin, k_end, li + 384u);
    var w7 = load_w(n, oc0, k_begin, k_end, li + 448u);
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        xs[li] = vec4<A>(x0); xs[li + 64u] = vec4<A>(x1);
        xs[li + 128u] = vec4<A>(x2); xs[li + 192u] = vec4<A>(x3);
        ws[li] = A(w0); ws[li + 64u] = A(w1); ws[li + 128u] = A(w2); ws[li + 192u] = A(w3);
        ws[li + 256u] = A(w4); ws[li + 320u] = A(w5); ws[li + 384u] = A(w6); ws[li + 448u] = A(w7);
        let k1 = k0 + TK;
        if (k1 < k_end) {
            x0 = load_x(n, k1, k_end, p0, li);
            x1 = load_x(n, k1, k_end, p0, li + 64u);
            x2 = load_x(n, k1, k_end, p0, li + 128u);
            x3 = load_x(n, k1, k_end, p0, li + 192u);
            w0 = load_w(n, oc0, k1, k_end, li);
            w1 = load_w(n, oc0, k1, k_end, li + 64u);
            w2 = load_w(n, oc0, k1, k_end, li + 128u);
            w3 = load_w(n, oc0, k1, k_end, li + 192u);
            w4 = load_w(n, oc0, k1, k_end, li + 256u);
            w5 = load_w(n, oc0, k1, k_end, li + 320u);
            w6 = load_w(n, oc0, k1, k_end, li + 384u);
            w7 = load_w(n, oc0, k1, k_end, li + 448u);
        }
        workgroupBarrier();
        let wb = tg * 8u * TK;
        for (var kk = 0u; kk < TK; kk++) {
            let xv = xs[kk * 16u + tq];
            c0 += xv * ws[wb + kk];
            c1 += xv * ws[wb + TK + kk];
            c2 += xv * ws[wb + 2u * TK + kk];
            c3 += xv * ws[wb + 3u * TK + kk];
            c4 += xv * ws[wb + 4u * TK + kk];
            c5 += xv * ws[wb + 5u * TK + kk];
            c6 += xv * ws[wb + 6u * TK + kk];
            c7 += xv * ws[wb + 7u * TK + kk];
        }
        if (FLUSH_CHUNKS) {
            a0 += vec4<f32>(c0); a1 += vec4<f32>(c1); a2 += vec4<f32>(c2); a3 += vec4<f32>(c3);
            a4 += vec4<f32>(c4); a5 += vec4<f32>(c5); a6 += vec4<f32>(c6); a7 += vec4<f32>(c7);
            c0 = vec4<A>(0.0); c1 = vec4<A>(0.0); c2 = vec4<A>(0.0); c3 = vec4<A>(0.0);
            c4 = vec4<A>(0.0); c5 = vec4<A>(0.0); c6 = vec4<A>(0.0); c7 = vec4<A>(0.0);
        }
        workgroupBarrier();
    }
    a0 += vec4<f32>(c0); a1 += vec4<f32>(c1); a2 += vec4<f32>(c2); a3 += vec4<f32>(c3);
    a4 += vec4<f32>(c4); a5 += vec4<f32>(c5); a6 += vec4<f32>(c6); a7 += vec4<f32>(c7);
    let accs = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    for (var j = 0u; j < 8u; j++) {
        let oc = oc0 + tg * 8u + j;
        if (oc >= p.c_out) { break; }
        for (var c = 0u; c < 4u; c++) {
            let q = p0 + tq * 4u + c;
            if (q < pixels()) {
                let px = phys(q);
                if (ksplit > 1u) {
                    st_y(((ks * p.batch + n) * p.c_out + oc) * p.plane + px, accs[j][c]);
                } else {
                    let at = (n * p.c_out + oc) * p.plane + px;
                    var r = 0.0;
                    if (p.has_res != 0u) { r = ld_res(at); }
                    st_y(at, activate(accs[j][c] + bias[oc] + r, p.act, p.a0, p.a1));
                }
            }
        }
    }
}
