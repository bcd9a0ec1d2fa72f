//! The im2col + GEMM convolution baseline on the GPU: `im2col.wgsl` unfolds the input into a
//! `[c_in*kh*kw, oh*ow]` column matrix per image (a scratch buffer of the step), then
//! `conv1x1.wgsl` multiplies it by the `[c_out, c_in*kh*kw]` weights (ONNX layout, as
//! uploaded) with bias and activation, split over K on small maps. Selectable for every layer
//! (`--conv-algo im2col`) to measure the k² input copies that the direct kernels avoid; chosen
//! automatically only for strided layers on small maps (see `im2col_pays`), where the plain
//! direct kernel cannot fill the GPU and the column matrix is small.

use super::{Builder, ConvParams, PointwiseGemm, Slot};
use crate::kernels::Shader;
use bytemuck::{Pod, Zeroable};
use kestrel_core::ops::conv::ConvGeometry;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Im2colParams {
    c_in: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    ph: u32,
    pw: u32,
    total: u32,
    p0: u32,
    p1: u32,
}

impl Builder<'_> {
    /// Records the two dispatches of an ungrouped 2-D convolution as im2col + GEMM (`p`: the
    /// layer's geometry and activation as the direct kernel gets them). The caller checked the
    /// GEMM's workgroup counts against the per-dimension limit.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn im2col_conv(
        &mut self,
        node: usize,
        geom: &ConvGeometry,
        p: &ConvParams,
        x: &Slot,
        [w, bias]: [&wgpu::Buffer; 2],
        y: &Slot,
        macs: u64,
    ) {
        let plane = geom.output[1] * geom.output[2];
        let k = geom.c_in * geom.kernel[1] * geom.kernel[2];
        let total = geom.batch * k * plane;
        let label = format!("{}.im2col", self.g.nodes[node].name);
        let col = self.scratch(&label, total);
        let ip = self.uniform(&Im2colParams {
            c_in: p.c_in,
            h: p.h,
            w: p.w,
            oh: p.oh,
            ow: p.ow,
            kh: p.kh,
            kw: p.kw,
            sh: p.sh,
            sw: p.sw,
            dh: p.dh,
            dw: p.dw,
            ph: p.ph,
            pw: p.pw,
            total: total as u32,
            p0: 0,
            p1: 0,
        });
        self.dispatch(node, Shader::Im2col, &[&ip, &x.buffer, &col], total, 0);
        let gemm = PointwiseGemm {
            batch: geom.batch,
            k,
            plane,
            c_out: geom.c_out,
            act: (p.act, p.a0, p.a1),
            macs,
            row_width: geom.output[2],
        };
        self.pointwise_gemm(node, &gemm, &col, [w, bias], &y.buffer, None);
    }
}
