// y = a (op) b with numpy broadcasting. `dims` holds, for rank r <= 8:
// [out_shape[0..r], a_strides[0..r], b_strides[0..r]] (stride 0 on broadcast axes).
// Ops: 0 add, 1 sub, 2 mul, 3 div, 4 prelu (a = x, b = slope).
struct Params { len: u32, op: u32, rank: u32, pad: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<S>;
@group(0) @binding(2) var<storage, read> b: array<S>;
@group(0) @binding(3) var<storage, read> dims: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<S>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.len) { return; }
    var rem = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let dim = dims[u32(d)];
        let c = rem % dim;
        rem = rem / dim;
        ia += c * dims[p.rank + u32(d)];
        ib += c * dims[2u * p.rank + u32(d)];
    }
    let u = ld_a(ia);
    let v = ld_b(ib);
    var r: f32;
    switch p.op {
        case 0u: { r = u + v; }
        case 1u: { r = u - v; }
        case 2u: { r = u * v; }
        case 3u: { r = u / v; }
        default: { r = select(u * v, u, u >= 0.0); }
    }
    st_y(i, r);
}
