//! Max pooling on the benchmark models' layer shapes, one thread: the prepared kernel vs the
//! reference, ms per layer (median of 50) and whether they agree bit for bit.
use kestrel_core::ops::conv::AutoPad;
use kestrel_core::ops::pool::{pool_geometry, PoolAttrs, PoolKind};
use kestrel_core::Tensor;
use kestrel_cpu::pool::PreparedPool;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // (name, channels, input hw, kernel, stride, pad, ceil)
    let layers = [
        ("squeezenet pool1", 64, 111, 3, 2, 0, true),
        ("squeezenet pool2", 128, 55, 3, 2, 0, true),
        ("squeezenet pool3", 256, 27, 3, 2, 0, true),
        ("resnet pool", 64, 112, 3, 2, 1, false),
        ("vgg pool1", 64, 224, 2, 2, 0, false),
        ("vgg pool3", 256, 56, 2, 2, 0, false),
        ("vgg pool5", 512, 14, 2, 2, 0, false),
        ("3x3 stride 1", 64, 56, 3, 1, 1, false),
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for &(name, c, hw, k, s, p, ceil) in &layers {
        let a = PoolAttrs {
            kernel_shape: vec![k, k],
            strides: vec![s, s],
            dilations: vec![1, 1],
            pads: vec![p, p, p, p],
            auto_pad: AutoPad::NotSet,
            ceil_mode: ceil,
            count_include_pad: false,
        };
        let geom = pool_geometry(&a, &[1, c, hw, hw]).unwrap();
        let n_in = c * hw * hw;
        let x: Vec<f32> = (0..n_in)
            .map(|i| ((i * 7919 % 1000) as f32) * 0.01 - 5.0)
            .collect();
        let out_len: usize = geom.output_shape().iter().product();
        let prepared = PreparedPool::new(geom.clone(), PoolKind::Max, false).unwrap();
        let mut out = vec![0f32; out_len];
        let times: Vec<f64> = pool.install(|| {
            (0..50)
                .map(|_| {
                    let t = Instant::now();
                    prepared.run(&x, &mut out);
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect()
        });
        let xt = Tensor::from_vec(vec![1, c, hw, hw], x.clone()).unwrap();
        let reference = kestrel_core::ops::pool::eval_pool(&a, &xt, PoolKind::Max).unwrap();
        let same = reference.as_f32().unwrap() == out.as_slice();
        let ms = median(times);
        println!(
            "{name:18} {c:4}x{hw:3}x{hw:3} k{k} s{s}: {ms:.4} ms, {:.1} GB/s read, matches reference: {same}",
            (n_in * 4) as f64 / (ms * 1e-3) / 1e9
        );
    }
}
