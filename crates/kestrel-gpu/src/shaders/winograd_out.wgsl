// Winograd F(2x2,3x3), output transform: each invocation reads the 16 GEMM results M[xi] of
// one output channel and one tile ([xi][k][tile], from conv1x1.wgsl) and writes the 2x2
// outputs Y = A^T M A (A^T = [1 1 1 0; 0 1 -1 -1]) with bias and activation, skipping those
// past the image edge.

struct Params {
    k: u32, oh: u32, ow: u32, tiles_w: u32,
    tiles_h: u32, t_all: u32, act: u32, a0: f32,
    a1: f32, pad0: u32, pad1: u32, pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> m: array<S>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<S>;
// region runs (plan/region.rs, one image): tiles x .. x + y (y == 0: all)
@group(0) @binding(4) var<uniform> region: vec4<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let tn = select(region.y, p.t_all, region.y == 0u);
    let idx = flat_index(gid, nwg);
    if (idx >= p.k * tn) { return; }
    let oc = idx / tn;
    let t = region.x + idx % tn;
    let stride = p.k * p.t_all;
    let base = oc * p.t_all + t;
    var mm: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        mm[i] = ld_m(i * stride + base);
    }
    // rows: A^T M
    var r: array<array<f32, 4>, 2>;
    for (var j = 0u; j < 4u; j++) {
        r[0][j] = mm[j] + mm[4u + j] + mm[8u + j];
        r[1][j] = mm[4u + j] - mm[8u + j] - mm[12u + j];
    }
    let per_img = p.tiles_h * p.tiles_w;
    let n = t / per_img;
    let oy0 = ((t % per_img) / p.tiles_w) * 2u;
    let ox0 = (t % p.tiles_w) * 2u;
    let b = bias[oc];
    for (var i = 0u; i < 2u; i++) {
        let oy = oy0 + i;
        if (oy >= p.oh) { continue; }
        let o0 = r[i][0] + r[i][1] + r[i][2];
        let o1 = r[i][1] - r[i][2] - r[i][3];
        let row = ((n * p.k + oc) * p.oh + oy) * p.ow;
        st_y(row + ox0, activate(o0 + b, p.act, p.a0, p.a1));
        if (ox0 + 1u < p.ow) {
            st_y(row + ox0 + 1u, activate(o1 + b, p.act, p.a0, p.a1));
        }
    }
}
