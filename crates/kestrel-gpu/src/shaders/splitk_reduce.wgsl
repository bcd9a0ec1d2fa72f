// Second pass of a split-K convolution (conv2d_tiled64 with p0 = ksplit > 1): each output is the
// sum of the `ksplit` partial sums (one per slice of input channels), plus bias, then the
// activation. `part` holds the slices one after another, each laid out like the output, in the
// storage type (f16 storage rounds each partial sum once; they are added in f32). has_res == 1:
// a residual tensor laid out like the output is added before the activation.
struct Params { total: u32, plane: u32, c_out: u32, ksplit: u32, act: u32, a0: f32, a1: f32, has_res: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<S>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<S>;
@group(0) @binding(4) var<storage, read> res: array<S>;
// region runs (plan/region.rs): positions x .. x + y of every plane (y == 0: the whole plane)
@group(0) @binding(5) var<uniform> region: vec4<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let pix_n = select(region.y, p.plane, region.y == 0u);
    let j = flat_index(gid, nwg);
    if (j >= p.total / p.plane * pix_n) { return; }
    let i = (j / pix_n) * p.plane + region.x + j % pix_n;
    var s = 0.0;
    for (var k = 0u; k < p.ksplit; k++) {
        s += ld_part(k * p.total + i);
    }
    let oc = (i / p.plane) % p.c_out;
    if (p.has_res != 0u) { s += ld_res(i); }
    st_y(i, activate(s + bias[oc], p.act, p.a0, p.a1));
}
