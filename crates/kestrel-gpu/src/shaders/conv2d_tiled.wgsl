// Direct 2-D convolution tiled in workgroup memory, for stride-1 layers with groups == 1 and
// kernels up to 3x3 (dilation allowed while the patch fits): a workgroup computes a 16x16 tile
// of output pixels for 16 output channels. For each chunk of 8 input channels it stages the
// input patch (at most 18x18 per channel) and the weight block (16 x 8 x kernel, as vec4 over
// output channels) in workgroup memory; each invocation then accumulates 4 adjacent pixels x 16
// channels in 16 vec4 registers: per tap, 4 patch values and 4 weight vectors feed 64
// multiply-adds.

struct Params {
    batch: u32, c_in: u32, h: u32, w: u32,
    c_out: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, dh: u32,
    dw: u32, ph: u32, pw: u32, tiles_x: u32,
    patch_h: u32, patch_w: u32, act: u32, a0: f32,
    a1: f32, p0: u32, p1: u32, p2: u32,
}

const TILE: u32 = 16u;
const OCB: u32 = 16u;
const CT: u32 = 8u;
const MAX_PATCH: u32 = 324u; // 18 x 18
const MAX_K: u32 = 9u;
const WQ: u32 = 72u;         // CT * MAX_K: stride between channel quads in tile_w

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read> wt: array<S>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<S>;
// region runs (plan/region.rs): a rectangle of tiles from tile x, y tiles per row (y == 0:
// the whole map)
@group(0) @binding(5) var<uniform> region: vec4<u32>;

var<workgroup> tile_x: array<f32, 2592>;       // CT * MAX_PATCH
var<workgroup> tile_w: array<vec4<f32>, 288>;  // (OCB / 4) * CT * MAX_K

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let across = select(region.y, p.tiles_x, region.y == 0u);
    let tile = region.x + (wg.x / across) * p.tiles_x + wg.x % across;
    let tx0 = (tile % p.tiles_x) * TILE;
    let ty0 = (tile / p.tiles_x) * TILE;
    let oc0 = wg.y * OCB;
    let n = wg.z;
    let ly = li / 4u;
    let lx0 = (li % 4u) * 4u;
    let kvol = p.kh * p.kw;
    let psize = p.patch_h * p.patch_w;
    let iy_base = i32(ty0) - i32(p.ph);
    let ix_base = i32(tx0) - i32(p.pw);
    let xbase = n * p.c_in * p.h * p.w;
    var a0 = vec4<f32>(0.0); var a1 = vec4<f32>(0.0); var a2 = vec4<f32>(0.0); var a3 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0); var b1 = vec4<f32>(0.0); var b2 = vec4<f32>(0.0); var b3 = vec4<f32>(0.0);
    var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
    var d0 = vec4<f32>(0.0); var d1 = vec4<f32>(0.0); var d2 = vec4<f32>(0.0); var d3 = vec4<f32>(0.0);
    for (var ic0 = 0u; ic0 < p.c_in; ic0 += CT) {
        for (var i = li; i < CT * psize; i += 64u) {
            let c = i / psize;
            let r = i % psize;
            let iy = iy_base + i32(r / p.patch_w);
            let ix = ix_base + i32(r % p.patch_w);
            var v = 0.0;
            if (ic0 + c < p.c_in && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                v = ld_x(xbase + ((ic0 + c) * p.h + u32(iy)) * p.w + u32(ix));
            }
            tile_x[c * MAX_PATCH + r] = v;
        }
        for (var i = li; i < OCB * CT * kvol; i += 64u) {
            let j = i / (CT * kvol);
            let c = (i / kvol) % CT;
            let k = i % kvol;
            var v = 0.0;
            if (oc0 + j < p.c_out && ic0 + c < p.c_in) {
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
                    let wb = c * MAX_K + ky * p.kw + kx;
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
    store(n, oy, tx0 + lx0, oc0, a0, a1, a2, a3);
    store(n, oy, tx0 + lx0 + 1u, oc0, b0, b1, b2, b3);
    store(n, oy, tx0 + lx0 + 2u, oc0, c0, c1, c2, c3);
    store(n, oy, tx0 + lx0 + 3u, oc0, d0, d1, d2, d3);
}

// Writes one pixel's 16 channels (bias, activation), skipping those outside the output.
fn store(n: u32, oy: u32, ox: u32, oc0: u32, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>) {
    if (ox >= p.ow) { return; }
    let plane = p.oh * p.ow;
    let quads = array<vec4<f32>, 4>(q0, q1, q2, q3);
    for (var j = 0u; j < OCB; j++) {
        let oc = oc0 + j;
        if (oc < p.c_out) {
            st_y((n * p.c_out + oc) * plane + oy * p.ow + ox, activate(quads[j / 4u][j % 4u] + bias[oc], p.act, p.a0, p.a1));
        }
    }
}
