// Softmax over an axis of length `len`, the tensor viewed as [outer, len, inner].
struct Params { outer: u32, len: u32, inner: u32, pad: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> y: array<S>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.outer * p.inner) { return; }
    let base = (i / p.inner) * p.len * p.inner + i % p.inner;
    var m = -3.4028235e38;
    for (var j = 0u; j < p.len; j++) { m = max(m, ld_x(base + j * p.inner)); }
    var s = 0.0;
    for (var j = 0u; j < p.len; j++) { s += exp(ld_x(base + j * p.inner) - m); }
    for (var j = 0u; j < p.len; j++) {
        st_y(base + j * p.inner, exp(ld_x(base + j * p.inner) - m) / s);
    }
}
