//! Depthwise kernels on MobileNetV2 / EfficientNet-Lite0 layer shapes, one thread: plane by
//! plane (`depthwise_plane`) vs channel-blocked (`depthwise_block`), ms per layer (median of
//! 30) and the max difference between them; with AVX-512 also the unpadded row kernel
//! (`depthwise_rows`). `L=index` runs one layer.
use kestrel_core::ops::conv::{conv_geometry, AutoPad, ConvAttrs};
use kestrel_cpu::depthwise::{
    depthwise_block, depthwise_plane, pack_block_weights, RowPost, BLOCK,
};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // (channels, input hw, kernel, stride)
    let layers = [
        (32, 112, 3, 1),
        (96, 112, 3, 2),
        (144, 56, 3, 1),
        (144, 56, 3, 2),
        (192, 28, 3, 1),
        (192, 28, 3, 2),
        (384, 14, 3, 1),
        (576, 14, 3, 2),
        (960, 7, 3, 1),
        (144, 56, 5, 2),
        (240, 28, 5, 1),
        (480, 14, 5, 1),
        (1152, 7, 5, 1),
        (672, 14, 5, 2),
        (960, 7, 3, 2),
        (64, 11, 3, 2),
    ];
    let only: Option<usize> = std::env::var("L").ok().and_then(|s| s.parse().ok());
    for (li, &(c, hw, k, s)) in layers.iter().enumerate() {
        if only.is_some_and(|o| o != li) {
            continue;
        }
        let p = k / 2;
        let a = ConvAttrs {
            kernel_shape: None,
            strides: vec![s, s],
            dilations: vec![1, 1],
            pads: vec![p, p, p, p],
            auto_pad: AutoPad::NotSet,
            group: c,
            activation: None,
        };
        let g = conv_geometry(&a, &[1, c, hw, hw], &[c, 1, k, k]).unwrap();
        let kk = k * k;
        let w: Vec<f32> = (0..c * kk)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.05)
            .collect();
        let bias: Vec<f32> = (0..c).map(|i| (i % 5) as f32 * 0.1).collect();
        let x: Vec<f32> = (0..c * hw * hw)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let (ip, op) = (hw * hw, g.output[1] * g.output[2]);
        let mut out_p = vec![0f32; c * op];
        let mut out_b = vec![0f32; c * op];
        let mut buf = Vec::new();
        let packed = pack_block_weights(&w, c, kk);
        let mut tp = Vec::new();
        let mut tb = Vec::new();
        // the row kernel's output and times (x86-64 with AVX-512 only)
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut out_r = vec![0f32; c * op];
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut tr = vec![f64::NAN];
        for _ in 0..30 {
            let t0 = Instant::now();
            for ch in 0..c {
                let post = Some(RowPost {
                    bias: bias[ch],
                    lo: 0.0,
                    hi: 6.0,
                });
                depthwise_plane(
                    &g,
                    &x[ch * ip..][..ip],
                    &w[ch * kk..][..kk],
                    &mut out_p[ch * op..][..op],
                    &mut buf,
                    post,
                );
            }
            tp.push(t0.elapsed().as_secs_f64() * 1e3);
            let t0 = Instant::now();
            for b in 0..c.div_ceil(BLOCK) {
                let c0 = b * BLOCK;
                let cb = BLOCK.min(c - c0);
                depthwise_block(
                    &g,
                    &x[c0 * ip..][..cb * ip],
                    cb,
                    &packed[b * kk * BLOCK..][..kk * BLOCK],
                    &bias[c0..c0 + cb],
                    &mut out_b[c0 * op..][..cb * op],
                    Some((0.0, 6.0)),
                    &mut buf,
                );
            }
            tb.push(t0.elapsed().as_secs_f64() * 1e3);
            #[cfg(target_arch = "x86_64")]
            if kestrel_cpu::simd::active_path() == kestrel_cpu::simd::SimdPath::Avx512
                && kestrel_cpu::depthwise_rows::handles(&g)
            {
                let t0 = Instant::now();
                for ch in 0..c {
                    // SAFETY: the AVX-512 path was detected; `handles` holds; one plane each.
                    unsafe {
                        kestrel_cpu::depthwise_rows::plane(
                            &g,
                            &x[ch * ip..][..ip],
                            &w[ch * kk..][..kk],
                            bias[ch],
                            Some((0.0, 6.0)),
                            out_r[ch * op..][..op].as_mut_ptr(),
                            0..g.output[1],
                        )
                    };
                }
                tr.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        let diff = out_p
            .iter()
            .zip(&out_b)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let diff_r = out_r
            .iter()
            .zip(&out_b)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "L{li} c{c} {hw}x{hw} k{k} s{s}: plane {:.3} ms, block {:.3} ms, rows {:.3} ms, max diff {diff:.1e} / {diff_r:.1e}",
            median(tp),
            median(tb),
            median(tr)
        );
    }
}
