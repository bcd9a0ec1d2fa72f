// The im2col baseline: unfolds the input into the column matrix
//   col[n, (ic * kh + ky) * kw + kx, oy * ow + ox] = x[n, ic, oy*sh - ph + ky*dh, ox*sw - pw + kx*dw]
// (0 outside the image), which conv1x1.wgsl then multiplies by the [c_out, c_in*kh*kw] weight
// matrix. Every input pixel is copied up to kh*kw times: this kernel exists to measure that
// traffic against the direct kernels (`--conv-algo im2col`, `KESTREL_GPU_CONV=im2col`).

struct Params {
    c_in: u32, h: u32, w: u32, oh: u32,
    ow: u32, kh: u32, kw: u32, sh: u32,
    sw: u32, dh: u32, dw: u32, ph: u32,
    pw: u32, total: u32, p0: u32, p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> col: array<S>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.total) { return; }
    let plane = p.oh * p.ow;
    let kvol = p.kh * p.kw;
    let px = i % plane;
    let row = (i / plane) % (p.c_in * kvol);
    let n = i / (plane * p.c_in * kvol);
    let ic = row / kvol;
    let ky = (row % kvol) / p.kw;
    let kx = row % p.kw;
    let iy = i32((px / p.ow) * p.sh + ky * p.dh) - i32(p.ph);
    let ix = i32((px % p.ow) * p.sw + kx * p.dw) - i32(p.pw);
    var v = 0.0;
    if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
        v = ld_x(((n * p.c_in + ic) * p.h + u32(iy)) * p.w + u32(ix));
    }
    st_col(i, v);
}
