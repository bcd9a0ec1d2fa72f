// Direct 2-D convolution tiled in workgroup memory, the wide variant of conv2d_tiled.wgsl for
// layers with many output channels (stride 1, groups == 1, kernels up to 3x3): a workgroup of
// 256 invocations computes a 16x16 tile of output pixels for 64 output channels, so each staged
// input patch feeds four times as many channels (a quarter of the input traffic per output).
// Per chunk of 4 input channels it stages the patch (at most 18x18 per channel) and the weight
// block (64 x 4 x kernel, as vec4 over output channels), 14.4 KB of workgroup memory (within
// the 16 KB every adapter offers). Invocations form 4 groups of 64; group g accumulates 4
// adjacent pixels x 16 channels (oc0 + 16g ..) in 16 vec4 registers, as in conv2d_tiled.
// Split-K (p0 = ksplit > 1, p1 = input channels per slice): for maps too small to fill the GPU,
// workgroup z = n * ksplit + slice sums one slice of the input channels and writes its raw
// partial sums (slice after slice, each laid out like the output) to `y`, which is then a
// scratch buffer; splitk_reduce.wgsl adds the slices, the bias and the activation.

struct Params {
    batch: u32, c_in: u32, h: u32, w: u32,
    c_out: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, dh: u32,
    dw: u32, ph: u32, pw: u32, tiles_x: u32,
    patch_h: u32, patch_w: u32, act: u32, a0: f32,
    a1: f32, p0: u32, p1: u32, p2: u32,
}

const TILE: u32 = 16u;
const OCB: u32 = 64u;
const CT: u32 = 4u;
const MAX_PATCH: u32 = 324u; // 18 x 18
const MAX_K: u32 = 9u;
const WQ: u32 = 36u;         // CT * MAX_K: stride between channel quads in tile_w

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read> wt: array<S>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<S>;
// region runs (plan/region.rs): a rectangle of tiles from tile x, y tiles per row (y == 0:
// the whole map)
@group(0) @binding(5) var<uniform> region: vec4<u32>;

var<workgroup> tile_x: array<f32, 1296>;       // CT * MAX_PATCH
var<workgroup> tile_w: array<vec4<f32>, 576>;  // (OCB / 4) * CT * MAX_K

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let across = select(region.y, p.tiles_x, region.y == 0u);
    let tile = region.x + (wg.x / across) * p.tiles_x + wg.x % across;
    let tx0 = (tile % p.tiles_x) * TILE;
    let ty0 = (tile / p.tiles_x) * TILE;
    let oc0 = wg.y * OCB;
    let ksplit = max(p.p0, 1u);
    let n = wg.z / ksplit;
    let ks = wg.z % ksplit;
    let k_begin = select(0u, ks * p.p1, ksplit > 1u);
    let k_end = select(p.c_in, min(p.c_in, k_begin + p.p1), ksplit > 1u);
    let grp = li / 64u;
    let l = li % 64u;
    let ly = l / 4u;
    let lx0 = (l % 4u) * 4u;
    let q0 = grp * 4u;
    let kvol = p.kh * p.kw;
    let psize = p.patch_h * p.patch_w;
    let iy_base = i32(ty0) - i32(p.ph);
    let ix_base = i32(tx0) - i32(p.pw);
    let xbase = n * p.c_in * p.h * p.w;
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0); var b2 = vec4<f32>(0.0); var b3 = vec4<f32>(0.0);
    var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
    var d0 = vec4<f32>(0.0); var d1 = vec4<f32>(0.0); var d2 = vec4<f32>(0.0); var d3 = vec4<f32>(0.0);
    for (var ic0 = k_begin; ic0 < k_end; ic0 += CT) {
        for (var i = li; i < CT * psize; i += 256u) {
            let c = i / psize;
            let r = i % psize;
            let iy = iy_base + i32(r / p.patch_w);
            let ix = ix_base + i32(r % p.patch_w);
            var v = 0.0;
            if (ic0 + c < k_end && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                v = ld_x(xbase + ((ic0 + c) * p.h + u32(iy)) * p.w + u32(ix));
            }
            tile_x[c * MAX_PATCH + r] = v;
        }
        for (var i = li; i < OCB * CT * kvol; i += 256u) {
            let j = i / (CT * kvol);
            let c = (i / kvol) % CT;
            let k = i % kvol;
            var v = 0.0;
            if (oc0 + j < p.c_out && ic0 + c < k_end) {
                v = ld_wt(((oc0 + j) * p.c_in + ic0 + c) * kvol + k);
            }
            tile_w[(j / 4u) * WQ + c * MAX_K + k][j % 4u] = v;
        }
        workgroupBarrier();
        for (var c = 0u; c < CT; c++) {
            for (var ky = 0u; ky < p.kh; ky++) {
                for (var kx = 0u; kx < p.kw; kx++) {
                    let xb = c * MAX_PATCH + (ly + ky * p.dh) * p.patch_w + lx0 + kx * p.dw;
                    let x0 = tile_x[xb];
                    let x1 = tile_x[xb + 1u];
                    let x2 = tile_x[xb + 2u];
                    let x3 = tile_x[xb + 3u];
                    let wb = q0 * WQ + c * MAX_K + ky * p.kw + kx;
                    let w0 = tile_w[wb];
                    let w1 = tile_w[WQ + wb];
                    let w2 = tile_w[2u * WQ + wb];
                    let w3 = tile_w[3u * WQ + wb];
                    a0 += x0 * w0; a1 += x0 * w1; a2 += x0 * w2; a3 += x0 * w3;
                    b0 += x1 * w0; b1 += x1 * w1; b2 += x1 * w2; b3 += x1 * w3;
                    c0 += x2 * w0; c1 += x2 * w1; c2 += x2 * w2; c3 += x2 * w3;
                    d0 += x3 * w0; d1 += x3 * w1; d2 += x3 * w2; d3 += x3 * w3;
                }
            }
        }
        workgroupBarrier();
    }
    let oy = ty0 + ly;
    if (oy >= p.oh) { return; }
    let og = oc0 + grp * 16u;
    if (ksplit > 1u) {
        // partial sums of slice ks: images are numbered ks * batch + n
        let slot = ks * p.batch + n;
        store_partial(slot, oy, tx0 + lx0, og, a0, a1, a2, a3);
        store_partial(slot, oy, tx0 + lx0 + 1u, og, b0, b1, b2, b3);
        store_partial(slot, oy, tx0 + lx0 + 2u, og, c0, c1, c2, c3);
        store_partial(slot, oy, tx0 + lx0 + 3u, og, d0, d1, d2, d3);
        return;
    }
    store(n, oy, tx0 + lx0, og, a0, a1, a2, a3);
    store(n, oy, tx0 + lx0 + 1u, og, b0, b1, b2, b3);
    store(n, oy, tx0 + lx0 + 2u, og, c0, c1, c2, c3);
    store(n, oy, tx0 + lx0 + 3u, og, d0, d1, d2, d3);
}

// Writes one pixel's raw partial sums for 16 channels (no bias, no activation).
fn store_partial(slot: u32, oy: u32, ox: u32, oc0: u32, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>) {
    if (ox >= p.ow) { return; }
    let plane = p.oh * p.ow;
    let quads = array<vec4<f32>, 4>(q0, q1, q2, q3);
    for (var j = 0u; j < 16u; j++) {
        let oc = oc0 + j;
        if (oc < p.c_out) {
            st_y((slot * p.c_out + oc) * plane + oy * p.ow + ox, quads[j / 4u][j % 4u]);
        }
    }
}

// Writes one pixel's 16 channels (bias, activation), skipping those outside the output.
fn store(n: u32, oy: u32, ox: u32, oc0: u32, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>) {
    if (ox >= p.ow) { return; }
    let plane = p.oh * p.ow;
    let quads = array<vec4<f32>, 4>(q0, q1, q2, q3);
    for (var j = 0u; j < 16u; j++) {
        let oc = oc0 + j;
        if (oc < p.c_out) {
            st_y((n * p.c_out + oc) * plane + oy * p.ow + ox, activate(quads[j / 4u][j % 4u] + bias[oc], p.act, p.a0, p.a1));
        }
    }
}
