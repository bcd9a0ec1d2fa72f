//! The GEMM of conv1x1.wgsl as a building block: `y[n, o, p] = act(sum_k W[o, k] x[n, k, p] +
//! bias[o] [+ residual])`, split over K (input channels) into a scratch buffer and a reduction
//! pass when the output alone gives too few workgroups to fill the GPU. Used by 1x1 layers and
//! by the im2col path (K = c_in * kh * kw over the column matrix).

use super::{splitk_target, Builder, Conv1x1Params, RegionKind, SplitKOutput};
use crate::kernels::Shader;

/// Sizes of one pointwise GEMM.
pub(super) struct PointwiseGemm {
    pub batch: usize,
    /// Reduction length (rows of the input matrix).
    pub k: usize,
    /// Pixels (columns).
    pub plane: usize,
    pub c_out: usize,
    pub act: (u32, f32, f32),
    /// Multiply-adds the step reports.
    pub macs: u64,
    /// Output width when the pixels are an output map's (region runs may restrict the
    /// unsplit GEMM to dirty rows), 0 otherwise.
    pub row_width: usize,
}

/// Fewest input channels per split-K slice: 128, or `KESTREL_GPU_SPLITK_MIN_K` (read once).
fn min_slice() -> usize {
    static K: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *K.get_or_init(|| {
        std::env::var("KESTREL_GPU_SPLITK_MIN_K")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v: &usize| v >= 16)
            .unwrap_or(128)
    })
}

impl Builder<'_> {
    /// Records the GEMM (and its split-K reduction when it splits). The caller checked the
    /// workgroup counts `plane / 64`, `c_out / 32` and `batch` against the per-dimension limit.
    pub(super) fn pointwise_gemm(
        &mut self,
        node: usize,
        g: &PointwiseGemm,
        x: &wgpu::Buffer,
        [w, bias]: [&wgpu::Buffer; 2],
        y: &wgpu::Buffer,
        residual: Option<&wgpu::Buffer>,
    ) {
        let force = self.force.clone();
        // split-K for small maps (ResNet-50's 14 and 7 px layers): slices of min_slice()+
        // input channels (multiples of the kernel's chunk of 16)
        let wgs1 = g.plane.div_ceil(64) * g.c_out.div_ceil(32) * g.batch;
        let ksplit = match force.as_deref() {
            Some("splitk") => g.k.div_ceil(16).clamp(1, 3),
            Some("tiled" | "tiled64" | "nosplit") => 1,
            _ if g.k >= 2 * min_slice() && wgs1 < splitk_target() => {
                (splitk_target() / wgs1.max(1)).clamp(1, g.k / min_slice())
            }
            _ => 1,
        };
        let k_per = g.k.div_ceil(ksplit).div_ceil(16) * 16;
        let ksplit = g.k.div_ceil(k_per.max(1)).max(1);
        let (act, a0, a1) = g.act;
        let q = Conv1x1Params {
            batch: g.batch as u32,
            c_in: g.k as u32,
            c_out: g.c_out as u32,
            plane: g.plane as u32,
            tiles_p: g.plane.div_ceil(64) as u32,
            act,
            a0,
            a1,
            ksplit: ksplit as u32,
            k_per: k_per as u32,
            w_batch: 0,
            has_res: residual.is_some() as u32,
        };
        let pb = self.uniform(&q);
        let wgs = (
            g.plane.div_ceil(64) as u32,
            g.c_out.div_ceil(32) as u32,
            (g.batch * ksplit) as u32,
        );
        if ksplit > 1 && g.batch * ksplit <= 65535 {
            let out = SplitKOutput {
                y,
                bias,
                total: g.batch * g.c_out * g.plane,
                plane: g.plane,
                c_out: g.c_out,
                ksplit,
                act: g.act,
                residual,
                rows: (g.row_width > 0).then(|| {
                    (
                        RegionKind::Pixels {
                            width: g.row_width as u32,
                            per_wg: 64,
                            unit: 1,
                        },
                        RegionKind::Flat {
                            width: g.row_width as u32,
                            groups: (g.batch * g.c_out) as u32,
                            unit: 1,
                        },
                        g.plane / g.row_width,
                    )
                }),
            };
            let shader = self.gemm_shader(&q);
            self.dispatch_splitk(node, shader, [&pb, x, w], wgs, g.macs, out);
            return;
        }
        let dummy = self.dummy.clone();
        let wgs = (wgs.0, wgs.1, g.batch as u32);
        let entries = [&pb, x, w, bias, y, residual.unwrap_or(&dummy)];
        if g.row_width > 0 && self.keep_all {
            // persistent plans: the RECT pipeline, restricted to the dirty rectangle
            let pipeline = self.kernels.conv1x1_rect(self.ctx).clone();
            self.dispatch_pipeline(node, Shader::Conv1x1, pipeline, &entries, wgs, g.macs);
            let kind = RegionKind::PixelRect {
                width: g.row_width as u32,
                per_wg: 64,
            };
            self.restrictable(kind, g.plane / g.row_width);
            return;
        }
        let shader = self.gemm_shader(&q);
        self.dispatch_wg(node, shader, &entries, wgs, g.macs);
        if g.row_width > 0 {
            let kind = RegionKind::Pixels {
                width: g.row_width as u32,
                per_wg: 64,
                unit: 1,
            };
            self.restrictable(kind, g.plane / g.row_width);
        }
    }
}
