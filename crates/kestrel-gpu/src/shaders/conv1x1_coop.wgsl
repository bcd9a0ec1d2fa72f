// conv1x1.wgsl's GEMM on cooperative matrices (tensor cores): the same bindings, parameters,
// dispatch grid and results (split-K partial sums, Winograd's batched weights, the fused
// residual, region runs' first pixel tile), for native f16 storage on adapters with
// 16x16x16 f16 x f16 -> f32 cooperative matrices and 32-wide subgroups (kernels.rs checks),
// and only for GEMMs with c_out >= 16, plane >= 16 and plane, c_in multiples of 8 (every
// 16x16 tile then starts 16-byte aligned; the launcher, `Builder::gemm_shader`, checks), or,
// with STAGE_X, c_out >= 16, c_in a multiple of 8 and any plane.
// y[n, oc, p] = act(sum_ic W[oc, ic] * x[n, ic, p] + bias[oc] [+ res]).
// A workgroup (two subgroups of 32) computes 64 pixels x 32 output channels; subgroup s owns
// output channels oc0 + 16 s .. + 16 and the four 16-pixel blocks, in f32 accumulators (fp16
// storage, fp32 accumulation). The operand tiles are loaded straight from the storage buffers
// (weights row-major with stride c_in, the input's channel rows with stride plane): no staging
// and no barrier in the loop. Every load stays inside its matrix: a block that would pass the
// last output channel or the plane's end is moved back to end there (it then recomputes some
// of its neighbour's outputs, which it does not store), and the matrices cover whole chunks of
// 16 input channels, the epilogue adding the last K % 16 products one by one. The sums go
// through workgroup memory to conv1x1.wgsl's epilogue.

const TP: u32 = 64u;
const TO: u32 = 32u;

// Params and bindings 0-5: gemm_common.wgsl
// region runs (plan/region.rs): x = the first pixel tile (0: the whole plane)
@group(0) @binding(6) var<uniform> region: vec4<u32>;

var<workgroup> cs: array<f32, 2048>; // [TO][TP], rows and columns as computed (see base_*)
// STAGE_X (planes that are not multiples of 8, whose input rows are not 16-byte aligned): each
// chunk's 16 x TP input tile is copied to workgroup memory (zeros past the plane) and the B
// operands load from there; blocks then keep their nominal columns.
override STAGE_X: bool = false;
var<workgroup> xs: array<f16, 1024>; // [16][TP]

// First output channel of subgroup s's rows: its nominal 16, moved back to end at c_out.
fn base_oc(oc0: u32, s: u32) -> u32 {
    return min(oc0 + 16u * s, p.c_out - 16u);
}

// First pixel of column block j: its nominal 16, moved back to end at the plane's end.
fn base_px(p0: u32, j: u32) -> u32 {
    if (STAGE_X) { return p0 + 16u * j; }
    return min(p0 + 16u * j, p.plane - 16u);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let p0 = (wg.x + region.x) * TP;
    let oc0 = wg.y * TO;
    let ksplit = max(p.ksplit, 1u);
    let n = wg.z / ksplit;
    let ks = wg.z % ksplit;
    let k_begin = select(0u, ks * p.k_per, ksplit > 1u);
    let k_end = select(p.c_in, min(p.c_in, k_begin + p.k_per), ksplit > 1u);
    let k_main = k_begin + (k_end - k_begin) / 16u * 16u;
    let sg = li / 32u;
    let w_row = n * p.w_batch + base_oc(oc0, sg) * p.c_in;
    let x_img = n * p.c_in * p.plane;
    let c0 = base_px(p0, 0u);
    let c1 = base_px(p0, 1u);
    let c2 = base_px(p0, 2u);
    let c3 = base_px(p0, 3u);
    var acc0 = coop_mat16x16<f32, C>();
    var acc1 = coop_mat16x16<f32, C>();
    var acc2 = coop_mat16x16<f32, C>();
    var acc3 = coop_mat16x16<f32, C>();
    for (var k = k_begin; k < k_main; k += 16u) {
        let a = coopLoadT<coop_mat16x16<f16, A>>(&wt[w_row + k], p.c_in);
        let xr = x_img + k * p.plane;
        var b0 = coop_mat16x16<f16, B>();
        var b1 = coop_mat16x16<f16, B>();
        var b2 = coop_mat16x16<f16, B>();
        var b3 = coop_mat16x16<f16, B>();
        if (STAGE_X) {
            workgroupBarrier(); // the previous chunk's tile is no longer read
            for (var i = li; i < 16u * TP; i += 64u) {
                let q = p0 + i % TP;
                xs[i] = select(f16(0.0), x[xr + (i / TP) * p.plane + min(q, p.plane - 1u)], q < p.plane);
            }
            workgroupBarrier();
            b0 = coopLoadT<coop_mat16x16<f16, B>>(&xs[0], TP);
            b1 = coopLoadT<coop_mat16x16<f16, B>>(&xs[16], TP);
            b2 = coopLoadT<coop_mat16x16<f16, B>>(&xs[32], TP);
            b3 = coopLoadT<coop_mat16x16<f16, B>>(&xs[48], TP);
        } else {
            b0 = coopLoadT<coop_mat16x16<f16, B>>(&x[xr + c0], p.plane);
            b1 = coopLoadT<coop_mat16x16<f16, B>>(&x[xr + c1], p.plane);
            b2 = coopLoadT<coop_mat16x16<f16, B>>(&x[xr + c2], p.plane);
            b3 = coopLoadT<coop_mat16x16<f16, B>>(&x[xr + c3], p.plane);
        }
        acc0 = coopMultiplyAdd(a, b0, acc0);
        acc1 = coopMultiplyAdd(a, b1, acc1);
        acc2 = coopMultiplyAdd(a, b2, acc2);
        acc3 = coopMultiplyAdd(a, b3, acc3);
    }
    coopStoreT(acc0, &cs[sg * 16u * TP], TP);
    coopStoreT(acc1, &cs[sg * 16u * TP + 16u], TP);
    coopStoreT(acc2, &cs[sg * 16u * TP + 32u], TP);
    coopStoreT(acc3, &cs[sg * 16u * TP + 48u], TP);
    workgroupBarrier();
    for (var i = li; i < TO * TP; i += 64u) {
        let r = i / TP;
        let c = i % TP;
        let s = r / 16u;
        let j = c / 16u;
        let oc = base_oc(oc0, s) + r % 16u;
        let q = base_px(p0, j) + c % 16u;
        // store what this block owns: from its nominal start on (a moved-back block's first
        // rows / columns belong to its neighbour), inside the output
        if (oc >= oc0 + 16u * s && oc < p.c_out && q >= p0 + 16u * j && q < p.plane) {
            var sum = cs[i];
            for (var k = k_main; k < k_end; k++) {
                sum += ld_wt(n * p.w_batch + oc * p.c_in + k) * ld_x(x_img + k * p.plane + q);
            }
            if (ksplit > 1u) {
                st_y(((ks * p.batch + n) * p.c_out + oc) * p.plane + q, sum);
            } else {
                let at = (n * p.c_out + oc) * p.plane + q;
                var rv = 0.0;
                if (p.has_res != 0u) { rv = ld_res(at); }
                st_y(at, activate(sum + bias[oc] + rv, p.act, p.a0, p.a1));
            }
        }
    }
}
