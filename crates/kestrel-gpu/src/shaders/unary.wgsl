// y = activation(x), elementwise.
struct Params { len: u32, act: u32, a0: f32, a1: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> y: array<S>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.len) { return; }
    st_y(i, activate(ld_x(i), p.act, p.a0, p.a1));
}
