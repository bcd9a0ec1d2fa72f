// Winograd F(4x4,3x3), output transform: each invocation reads the 36 GEMM results M[xi] of
// one output channel and one tile ([xi][k][tile]) and writes the 4x4 outputs Y = A^T M A
// (A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]) with bias and
// activation, skipping those past the image edge. Same bindings and parameters as
// winograd_out.wgsl (F(2x2)); dense plans only (no region binding).

struct Params {
    k: u32, oh: u32, ow: u32, tiles_w: u32,
    tiles_h: u32, t_all: u32, act: u32, a0: f32,
    a1: f32, pad0: u32, pad1: u32, pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> m: array<S>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<S>;

// A^T z for a column z of 6.
fn at4(z: array<f32, 6>) -> array<f32, 4> {
    let s12 = z[1] + z[2];
    let d12 = z[1] - z[2];
    let s34 = z[3] + z[4];
    let d34 = z[3] - z[4];
    return array<f32, 4>(z[0] + s12 + s34, d12 + 2.0 * d34, s12 + 4.0 * s34, d12 + 8.0 * d34 + z[5]);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat_index(gid, nwg);
    if (idx >= p.k * p.t_all) { return; }
    let oc = idx / p.t_all;
    let t = idx % p.t_all;
    let stride = p.k * p.t_all;
    let base = oc * p.t_all + t;
    // rows: r = A^T M, one column of M at a time
    var r: array<array<f32, 6>, 4>; // [row of A^T M][column]
    for (var j = 0u; j < 6u; j++) {
        let col = at4(array<f32, 6>(
            ld_m(j * stride + base), ld_m((6u + j) * stride + base), ld_m((12u + j) * stride + base),
            ld_m((18u + j) * stride + base), ld_m((24u + j) * stride + base), ld_m((30u + j) * stride + base),
        ));
        for (var i = 0u; i < 4u; i++) { r[i][j] = col[i]; }
    }
    let per_img = p.tiles_h * p.tiles_w;
    let n = t / per_img;
    let oy0 = ((t % per_img) / p.tiles_w) * 4u;
    let ox0 = (t % p.tiles_w) * 4u;
    let b = bias[oc];
    for (var i = 0u; i < 4u; i++) {
        let oy = oy0 + i;
        if (oy >= p.oh) { continue; }
        let o = at4(r[i]);
        let row = ((n * p.k + oc) * p.oh + oy) * p.ow;
        for (var j = 0u; j < 4u; j++) {
            if (ox0 + j < p.ow) {
                st_y(row + ox0 + j, activate(o[j] + b, p.act, p.a0, p.a1));
            }
        }
    }
}
