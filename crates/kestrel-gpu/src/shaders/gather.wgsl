// Index-mapping copy for Transpose and constant Pad. `dims`, rank r <= 8:
// [out_shape[0..r], in_strides_for_out_axes[0..r], pad_begin[0..r], in_shape_for_out_axes[0..r]]
// y[o] = x[sum (o_d - pad_d) * stride_d] when every (o_d - pad_d) is inside the input, else value.
struct Params { len: u32, rank: u32, value: f32, pad: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read> dims: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<S>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.len) { return; }
    var rem = i;
    var src = 0u;
    var inside = true;
    let r = p.rank;
    for (var d = i32(r) - 1; d >= 0; d--) {
        let ud = u32(d);
        let c = rem % dims[ud];
        rem = rem / dims[ud];
        let pb = dims[2u * r + ud];
        if (c < pb || c - pb >= dims[3u * r + ud]) {
            inside = false;
        } else {
            src += (c - pb) * dims[r + ud];
        }
    }
    st_y(i, select(p.value, ld_x(src), inside));
}
