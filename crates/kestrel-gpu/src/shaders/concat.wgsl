// One input of a Concat: x viewed as [outer, chunk] goes to y viewed as [outer, total] at
// column `offset`.
struct Params { outer: u32, chunk: u32, total: u32, offset: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> y: array<S>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.outer * p.chunk) { return; }
    st_y((i / p.chunk) * p.total + p.offset + i % p.chunk, ld_x(i));
}
