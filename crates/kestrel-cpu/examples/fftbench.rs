//! FFT convolution against the direct kernel on layers with growing kernels, one thread (or
//! `T=threads`): ms per layer (best of 3 timed loops) and the max difference. Where FFT wins is
//! reported in docs/PERFORMANCE.md.
use kestrel_core::ops::conv::{conv_geometry, AutoPad, ConvAttrs};
use kestrel_cpu::conv::{ConvAlgo, PreparedConv};
use std::time::Instant;

fn main() {
    let threads: usize = std::env::var("T")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // (cin, cout, hw, k)
    let layers = [
        (3, 64, 224, 3),
        (3, 64, 224, 7),
        (3, 64, 224, 11),
        (16, 16, 56, 3),
        (16, 16, 56, 7),
        (16, 16, 56, 11),
        (32, 32, 28, 5),
        (32, 32, 28, 9),
        (64, 64, 28, 3),
        (64, 64, 28, 7),
        (8, 8, 112, 15),
    ];
    for &(ci, co, hw, k) in &layers {
        let p = k / 2;
        let a = ConvAttrs {
            kernel_shape: None,
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![p, p, p, p],
            auto_pad: AutoPad::NotSet,
            group: 1,
            activation: None,
        };
        let g = conv_geometry(&a, &[1, ci, hw, hw], &[co, ci, k, k]).unwrap();
        let w: Vec<f32> = (0..co * ci * k * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01)
            .collect();
        let x: Vec<f32> = (0..ci * hw * hw)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let macs = (co * hw * hw * ci * k * k) as f64;
        let direct = PreparedConv::new(g.clone(), &w, None, None, ConvAlgo::Direct);
        let fft = PreparedConv::new(g.clone(), &w, None, None, ConvAlgo::Fft);
        let (mut o1, mut o2) = (vec![0f32; co * hw * hw], vec![0f32; co * hw * hw]);
        let mut s = Vec::new();
        pool.install(|| {
            let reps = (1e9 / macs).clamp(2.0, 100.0) as usize;
            let time = |f: &mut dyn FnMut()| {
                f();
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let t = Instant::now();
                    for _ in 0..reps {
                        f();
                    }
                    best = best.min(t.elapsed().as_secs_f64() / reps as f64);
                }
                best
            };
            let td = time(&mut || direct.run(&x, &mut o1, &mut s));
            let tf = time(&mut || fft.run(&x, &mut o2, &mut s));
            let scale = o1.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let err = o1.iter().zip(&o2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
            println!(
                "{ci:3}->{co:3} {hw:3}x{hw:<3} k{k:<2}: direct {:8.3} ms  {} {:8.3} ms  fft/direct {:.2}  max-rel {err:.1e}",
                td * 1e3,
                fft.kind.name(),
                tf * 1e3,
                tf / td
            );
        });
    }
}
