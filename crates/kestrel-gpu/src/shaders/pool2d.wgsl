// Max or average pooling over 2-D windows, NCHW (global pooling is a window of the whole
// plane). kind: 0 max, 1 average; avg divides by the in-range taps unless count_pad.
struct Params {
    planes: u32, h: u32, w: u32, oh: u32,
    ow: u32, kh: u32, kw: u32, sh: u32,
    sw: u32, dh: u32, dw: u32, ph: u32,
    pw: u32, kind: u32, count_pad: u32, pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> y: array<S>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane = p.oh * p.ow;
    let i = flat_index(gid, nwg);
    if (i >= p.planes * plane) { return; }
    let c = i / plane;
    let oy = (i % plane) / p.ow;
    let ox = i % p.ow;
    let base = c * p.h * p.w;
    var m = -3.4028235e38;
    var s = 0.0;
    var n = 0u;
    var nan = false;
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = i32(oy * p.sh + ky * p.dh) - i32(p.ph);
        if (iy < 0 || iy >= i32(p.h)) { continue; }
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = i32(ox * p.sw + kx * p.dw) - i32(p.pw);
            if (ix < 0 || ix >= i32(p.w)) { continue; }
            let v = ld_x(base + u32(iy) * p.w + u32(ix));
            nan = nan || (v != v);
            m = max(m, v);
            s += v;
            n += 1u;
        }
    }
    var r: f32;
    if (p.kind == 0u) {
        r = select(m, s, nan); // NaN propagates (s is NaN then)
    } else {
        let cnt = select(f32(n), f32(p.kh * p.kw), p.count_pad == 1u);
        r = s / max(cnt, 1.0);
    }
    st_y(i, r);
}
