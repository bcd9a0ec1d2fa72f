// Y[m, n] = act(alpha * sum_k A[m, k] * Bt[n, k] + beta * C), Bt = B laid out [N, K] at plan
// time. A is [M, K], or [K, M] when trans_a. c_mode: 0 none, 1 C[n], 2 C[m, n], 3 C[m].
// One workgroup per output element: its 64 invocations split K and reduce in workgroup memory,
// so the long dot products of FC layers (K up to 25088) run at memory bandwidth.
struct Params {
    m: u32, n: u32, k: u32, trans_a: u32,
    c_mode: u32, act: u32, a0: f32, a1: f32,
    alpha: f32, beta: f32, pad0: u32, pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<S>;
@group(0) @binding(2) var<storage, read> bt: array<S>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<S>;

var<workgroup> part: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = wg.x + wg.y * nwg.x;
    let valid = i < p.m * p.n;
    let row = i / max(p.n, 1u);
    let col = i % max(p.n, 1u);
    var s = 0.0;
    if (valid) {
        for (var kk = li; kk < p.k; kk += 64u) {
            let ai = select(row * p.k + kk, kk * p.m + row, p.trans_a == 1u);
            s += ld_a(ai) * ld_bt(col * p.k + kk);
        }
    }
    part[li] = s;
    workgroupBarrier();
    for (var step = 32u; step > 0u; step = step / 2u) {
        if (li < step) { part[li] += part[li + step]; }
        workgroupBarrier();
    }
    if (li == 0u && valid) {
        var r = p.alpha * part[0];
        switch p.c_mode {
            case 1u: { r += p.beta * c[col]; }
            case 2u: { r += p.beta * c[i]; }
            case 3u: { r += p.beta * c[row]; }
            default: {}
        }
        st_y(i, activate(r, p.act, p.a0, p.a1));
    }
}
