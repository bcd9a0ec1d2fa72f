//! First layers (few input channels) of the benchmark models, one thread (`T=threads`): the
//! kernel `auto` picks, ms per layer (best of 3 timed loops) and GFLOP/s. `KESTREL_STEM=0`
//! turns the stem kernel off for an A/B run.
use kestrel_core::ops::conv::{conv_geometry, AutoPad, ConvAttrs};
use kestrel_core::ops::Unary;
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
    // (name, cin, cout, hw, k, stride, pads [top, left, bottom, right])
    let layers = [
        ("MobileNetV2 / EffNet stem", 3, 32, 224, 3, 2, [0, 0, 1, 1]),
        ("SqueezeNet conv1", 3, 64, 224, 3, 2, [0, 0, 0, 0]),
        ("ResNet conv1", 3, 64, 224, 7, 2, [3, 3, 3, 3]),
        ("VGG-16 conv1_1", 3, 64, 224, 3, 1, [1, 1, 1, 1]),
    ];
    for (name, ci, co, hw, k, s, pads) in layers {
        let a = ConvAttrs {
            kernel_shape: None,
            strides: vec![s, s],
            dilations: vec![1, 1],
            pads: pads.to_vec(),
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
        let bias = vec![0.1f32; co];
        let oplane = g.output[1] * g.output[2];
        let macs = (co * oplane * ci * k * k) as f64;
        let conv = PreparedConv::new(
            g.clone(),
            &w,
            Some(&bias),
            Some(Unary::Relu),
            ConvAlgo::Auto,
        );
        let mut out = vec![0f32; co * oplane];
        let mut scratch = Vec::new();
        let best = pool.install(|| {
            for _ in 0..3 {
                conv.run(&x, &mut out, &mut scratch);
            }
            let reps = 30;
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..reps {
                        conv.run(&x, &mut out, &mut scratch);
                    }
                    t.elapsed().as_secs_f64() / reps as f64
                })
                .fold(f64::MAX, f64::min)
        });
        println!(
            "{name:26} {ci}->{co:3} {hw}² k{k} s{s}: {:14} {:.3} ms {:6.1} GFLOP/s",
            conv.kind.name(),
            best * 1e3,
            2.0 * macs / best / 1e9
        );
    }
}
