// Winograd F(4x4,3x3), input transform: each invocation takes one 6x6 input patch (a 4x4
// output tile plus its halo, zero outside the image) of one channel and writes its 36
// transformed values V = B^T d B, laid out [xi][c][tile] for the batched GEMM (36 weight
// matrices). Tiles of every image of the batch are numbered together:
// tile = (n * tiles_h + ty) * tiles_w + tx. Same bindings and parameters as winograd_in.wgsl
// (F(2x2)); dense plans only (no region binding).

struct Params {
    c: u32, h: u32, w: u32, tiles_w: u32,
    tiles_h: u32, t_all: u32, ph: u32, pw: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> v: array<S>;

fn at(n: u32, c: u32, iy: i32, ix: i32) -> f32 {
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) { return 0.0; }
    return ld_x(((n * p.c + c) * p.h + u32(iy)) * p.w + u32(ix));
}

// B^T z for a column z of 6 (B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
// 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]).
fn bt(z: array<f32, 6>) -> array<f32, 6> {
    return array<f32, 6>(
        4.0 * z[0] - 5.0 * z[2] + z[4],
        -4.0 * (z[1] + z[2]) + z[3] + z[4],
        4.0 * (z[1] - z[2]) - z[3] + z[4],
        2.0 * (z[3] - z[1]) - z[2] + z[4],
        2.0 * (z[1] - z[3]) - z[2] + z[4],
        4.0 * z[1] - 5.0 * z[3] + z[5],
    );
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat_index(gid, nwg);
    if (idx >= p.c * p.t_all) { return; }
    let c = idx / p.t_all;
    let t = idx % p.t_all;
    let per_img = p.tiles_h * p.tiles_w;
    let n = t / per_img;
    let ty = (t % per_img) / p.tiles_w;
    let tx = t % p.tiles_w;
    let y0 = i32(ty * 4u) - i32(p.ph);
    let x0 = i32(tx * 4u) - i32(p.pw);
    // rows: r = B^T d, one input column at a time
    var r: array<array<f32, 6>, 6>; // [row of B^T d][column]
    for (var j = 0; j < 6; j++) {
        let col = bt(array<f32, 6>(
            at(n, c, y0, x0 + j), at(n, c, y0 + 1, x0 + j), at(n, c, y0 + 2, x0 + j),
            at(n, c, y0 + 3, x0 + j), at(n, c, y0 + 4, x0 + j), at(n, c, y0 + 5, x0 + j),
        ));
        for (var i = 0; i < 6; i++) { r[i][j] = col[i]; }
    }
    // columns: (B^T d) B = rows of r times B
    let stride = p.c * p.t_all;
    let base = c * p.t_all + t;
    for (var i = 0u; i < 6u; i++) {
        let q = bt(r[i]);
        for (var j = 0u; j < 6u; j++) {
            st_v((i * 6u + j) * stride + base, q[j]);
        }
    }
}
