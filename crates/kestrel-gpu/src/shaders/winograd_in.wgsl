// Winograd F(2x2,3x3), input transform: each invocation takes one 4x4 input patch (a 2x2
// output tile plus its 3x3 halo, zero outside the image) of one channel and writes its 16
// transformed values V = B^T d B, laid out [xi][c][tile] for the batched GEMM (conv1x1.wgsl
// with one weight matrix per xi). Tiles of every image of the batch are numbered together:
// tile = (n * tiles_h + ty) * tiles_w + tx.

struct Params {
    c: u32, h: u32, w: u32, tiles_w: u32,
    tiles_h: u32, t_all: u32, ph: u32, pw: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> v: array<S>;
// region runs (plan/region.rs, one image): tiles x .. x + y (y == 0: all)
@group(0) @binding(3) var<uniform> region: vec4<u32>;

fn at(n: u32, c: u32, iy: i32, ix: i32) -> f32 {
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) { return 0.0; }
    return ld_x(((n * p.c + c) * p.h + u32(iy)) * p.w + u32(ix));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let tn = select(region.y, p.t_all, region.y == 0u);
    let idx = flat_index(gid, nwg);
    if (idx >= p.c * tn) { return; }
    let c = idx / tn;
    let t = region.x + idx % tn;
    let per_img = p.tiles_h * p.tiles_w;
    let n = t / per_img;
    let ty = (t % per_img) / p.tiles_w;
    let tx = t % p.tiles_w;
    let y0 = i32(ty * 2u) - i32(p.ph);
    let x0 = i32(tx * 2u) - i32(p.pw);
    var d: array<array<f32, 4>, 4>;
    for (var i = 0; i < 4; i++) {
        for (var j = 0; j < 4; j++) {
            d[i][j] = at(n, c, y0 + i, x0 + j);
        }
    }
    // rows: B^T d  (B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1])
    var r: array<array<f32, 4>, 4>;
    for (var j = 0; j < 4; j++) {
        r[0][j] = d[0][j] - d[2][j];
        r[1][j] = d[1][j] + d[2][j];
        r[2][j] = d[2][j] - d[1][j];
        r[3][j] = d[1][j] - d[3][j];
    }
    // columns: (B^T d) B
    let stride = p.c * p.t_all;
    let base = c * p.t_all + t;
    for (var i = 0u; i < 4u; i++) {
        let q0 = r[i][0] - r[i][2];
        let q1 = r[i][1] + r[i][2];
        let q2 = r[i][2] - r[i][1];
        let q3 = r[i][1] - r[i][3];
        st_v((i * 4u + 0u) * stride + base, q0);
        st_v((i * 4u + 1u) * stride + base, q1);
        st_v((i * 4u + 2u) * stride + base, q2);
        st_v((i * 4u + 3u) * stride + base, q3);
    }
}
