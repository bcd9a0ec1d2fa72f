// Depthwise 2-D convolution (groups == channels, one filter per channel) tiled in workgroup
// memory: a workgroup computes a 16x16 tile of output pixels of one channel (workgroup y) of one
// image (z). It stages the tile's input patch ((16-1) * stride + (k-1) * dilation + 1 per side,
// at most MAX_PATCH values) and the channel's filter in workgroup memory; each invocation then
// computes 4 horizontally adjacent outputs from it, with bias and activation. Every input value
// is read from device memory once per tile instead of once per tap.

struct Params {
    batch: u32, c_in: u32, h: u32, w: u32,
    c_out: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, dh: u32,
    dw: u32, ph: u32, pw: u32, tiles_x: u32,
    patch_h: u32, patch_w: u32, act: u32, a0: f32,
    a1: f32, p0: u32, p1: u32, p2: u32,
}

const TILE: u32 = 16u;
const MAX_PATCH: u32 = 1600u; // 40 x 40: 7x7 stride 2, or 5x5 stride 2 dilation 1
const MAX_TAPS: u32 = 49u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read> wt: array<S>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<S>;
// region runs (plan/region.rs): a rectangle of tiles from tile x, y tiles per row (y == 0:
// the whole map)
@group(0) @binding(5) var<uniform> region: vec4<u32>;

var<workgroup> tile_in: array<f32, MAX_PATCH>;
var<workgroup> filt: array<f32, MAX_TAPS>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let across = select(region.y, p.tiles_x, region.y == 0u);
    let tile = region.x + (wg.x / across) * p.tiles_x + wg.x % across;
    let tx0 = (tile % p.tiles_x) * TILE;
    let ty0 = (tile / p.tiles_x) * TILE;
    let c = wg.y;
    let n = wg.z;
    let taps = p.kh * p.kw;
    let psize = p.patch_h * p.patch_w;
    let iy_base = i32(ty0 * p.sh) - i32(p.ph);
    let ix_base = i32(tx0 * p.sw) - i32(p.pw);
    let xbase = (n * p.c_in + c) * p.h * p.w;
    for (var i = li; i < psize; i += 64u) {
        let iy = iy_base + i32(i / p.patch_w);
        let ix = ix_base + i32(i % p.patch_w);
        var v = 0.0;
        if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
            v = ld_x(xbase + u32(iy) * p.w + u32(ix));
        }
        tile_in[i] = v;
    }
    if (li < taps) {
        filt[li] = ld_wt(c * taps + li);
    }
    workgroupBarrier();
    let ly = li / 4u;
    let lx0 = (li % 4u) * 4u;
    let oy = ty0 + ly;
    if (oy >= p.oh) { return; }
    let b = bias[c];
    for (var j = 0u; j < 4u; j++) {
        let ox = tx0 + lx0 + j;
        if (ox >= p.ow) { return; }
        var acc = b;
        for (var ky = 0u; ky < p.kh; ky++) {
            let row = (ly * p.sh + ky * p.dh) * p.patch_w + (lx0 + j) * p.sw;
            for (var kx = 0u; kx < p.kw; kx++) {
                acc += filt[ky * p.kw + kx] * tile_in[row + kx * p.dw];
            }
        }
        st_y(((n * p.c_out + c) * p.oh + oy) * p.ow + ox, activate(acc, p.act, p.a0, p.a1));
    }
}
