// Direct 2-D convolution, NCHW, any stride / dilation / padding / groups, fused bias and
// activation. One invocation computes 4 consecutive output channels of one output pixel, so
// each input value loaded serves 4 multiply-adds when the 4 channels share a group.

struct Params {
    batch: u32, c_in: u32, h: u32, w: u32,
    c_out: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, dh: u32,
    dw: u32, ph: u32, pw: u32, cig: u32,
    cog: u32, act: u32, a0: f32, a1: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read> wt: array<S>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<S>;
// region runs (plan/region.rs): pixels x .. x + y of every plane (y == 0: the whole plane)
@group(0) @binding(5) var<uniform> region: vec4<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = p.oh * p.ow;
    let blocks = (p.c_out + 3u) / 4u;
    let pix_n = select(region.y, plane, region.y == 0u);
    let idx = flat_index(gid, nwg);
    if (idx >= p.batch * blocks * pix_n) { return; }
    let pix = region.x + idx % pix_n;
    let ob = (idx / pix_n) % blocks;
    let n = idx / (pix_n * blocks);
    let oy = pix / p.ow;
    let ox = pix % p.ow;
    let oc0 = ob * 4u;
    let kvol = p.kh * p.kw;
    let xbase = n * p.c_in * p.h * p.w;
    var acc = vec4<f32>(0.0);
    let iy0 = i32(oy * p.sh) - i32(p.ph);
    let ix0 = i32(ox * p.sw) - i32(p.pw);
    if (p.cog % 4u == 0u && oc0 + 3u < p.c_out) {
        // the 4 channels share a group: each input value feeds 4 accumulators
        let g = oc0 / p.cog;
        for (var icg = 0u; icg < p.cig; icg++) {
            let ic = g * p.cig + icg;
            for (var ky = 0u; ky < p.kh; ky++) {
                let iy = iy0 + i32(ky * p.dh);
                if (iy < 0 || iy >= i32(p.h)) { continue; }
                for (var kx = 0u; kx < p.kw; kx++) {
                    let ix = ix0 + i32(kx * p.dw);
                    if (ix < 0 || ix >= i32(p.w)) { continue; }
                    let xv = ld_x(xbase + (ic * p.h + u32(iy)) * p.w + u32(ix));
                    let wi = (oc0 * p.cig + icg) * kvol + ky * p.kw + kx;
                    let step = p.cig * kvol;
                    acc += xv * vec4<f32>(ld_wt(wi), ld_wt(wi + step), ld_wt(wi + 2u * step), ld_wt(wi + 3u * step));
                }
            }
        }
    } else {
        for (var j = 0u; j < 4u; j++) {
            let oc = oc0 + j;
            if (oc >= p.c_out) { break; }
            let g = oc / p.cog;
            var s = 0.0;
            for (var icg = 0u; icg < p.cig; icg++) {
                let ic = g * p.cig + icg;
                for (var ky = 0u; ky < p.kh; ky++) {
                    let iy = iy0 + i32(ky * p.dh);
                    if (iy < 0 || iy >= i32(p.h)) { continue; }
                    for (var kx = 0u; kx < p.kw; kx++) {
                        let ix = ix0 + i32(kx * p.dw);
                        if (ix < 0 || ix >= i32(p.w)) { continue; }
                        s += ld_x(xbase + (ic * p.h + u32(iy)) * p.w + u32(ix))
                            * ld_wt((oc * p.cig + icg) * kvol + ky * p.kw + kx);
                    }
                }
            }
            acc[j] = s;
        }
    }
    for (var j = 0u; j < 4u; j++) {
        let oc = oc0 + j;
        if (oc >= p.c_out) { break; }
        st_y((n * p.c_out + oc) * plane + pix, activate(acc[j] + bias[oc], p.act, p.a0, p.a1));
    }
}
