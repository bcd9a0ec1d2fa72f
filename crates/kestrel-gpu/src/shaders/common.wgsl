// Shared by every Kestrel compute shader. The launcher prepends the storage type alias
//   `alias S = f32;`   or   `enable f16; alias S = f16;`
// the arithmetic type of the GEMM kernel (`alias A = f32;` or, for fp16 arithmetic, `f16`) and
// FLUSH_CHUNKS (true when A is f16: its sums are flushed to f32 every chunk),
// and appends, for every `array<S>` binding NAME, the accessors `ld_NAME(i) -> f32` (read
// bindings) or `st_NAME(i, v)` (read_write bindings); in packed-f16 storage the bindings become
// u32 words holding two halves each. Other arithmetic is f32 whatever the storage.

// Flat invocation index over a 2-D dispatch of 64-wide workgroups (dispatches are split over
// x and y to stay under the 65535-workgroups-per-dimension limit).
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// Activation codes shared with the launcher (kernels.rs: act_code).
fn activate(v: f32, code: u32, a0: f32, a1: f32) -> f32 {
    switch code {
        case 0u: { return max(v, 0.0) * select(1.0, v, v != v); }
        case 1u: { return select(a0 * v, v, v >= 0.0); }
        case 2u: { return 1.0 / (1.0 + exp(-v)); }
        case 3u: { return clamp(a0 * v + a1, 0.0, 1.0); }
        case 4u: { return v * clamp(v / 6.0 + 0.5, 0.0, 1.0); }
        case 5u: { return tanh(v); }
        case 6u: { return exp(v); }
        case 7u: { return sqrt(v); }
        case 8u: { return min(max(v, a0), a1); }
        default: { return v; }
    }
}
