//! Direct (B rows read from the image) vs packed implicit GEMM on typical layers, with their
//! GFLOP/s and the max difference. `T=threads`, `L=layer index`, `EVICT=1` times each run
//! after writing 64 MB elsewhere (inputs, outputs and weights cold); `KESTREL_DIRECT_PACK=1`
//! makes the direct kernel pack each tile's B rows first; `CONV="ci,co,side,k,stride,pad;..."`
//! times other layers.
use kestrel_core::ops::conv::{conv_geometry, AutoPad, ConvAttrs};
use kestrel_cpu::conv::{ConvAlgo, PreparedConv};
use kestrel_cpu::direct::{run_direct, DirectLayout};
use kestrel_cpu::sgemm::{Epilogue, PackedA};
use kestrel_cpu::ukernel::Ukernel;
use std::time::Instant;

/// (input channels, output channels, side, kernel, stride, pad)
type Layer = (usize, usize, usize, usize, usize, usize);

fn main() {
    let threads: usize = std::env::var("T")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // (cin, cout, hw, k, stride, pad)
    let layers = [
        (3, 64, 224, 7, 2, 3),
        (64, 64, 56, 3, 1, 1),
        (64, 128, 56, 3, 2, 1),
        (128, 128, 28, 3, 1, 1),
        (256, 256, 14, 3, 1, 1),
        (512, 512, 7, 3, 1, 1),
        (256, 512, 14, 1, 2, 0),
        (64, 256, 56, 1, 1, 0),
        (256, 64, 56, 1, 1, 0),
        (1024, 256, 14, 1, 1, 0),
        (144, 24, 56, 1, 1, 0),
        (3, 64, 224, 3, 1, 1),
        (576, 96, 14, 1, 1, 0),
        (384, 64, 14, 1, 1, 0),
        (96, 576, 14, 1, 1, 0),
        (64, 384, 14, 1, 1, 0),
        (160, 960, 7, 1, 1, 0),
        (960, 160, 7, 1, 1, 0),
        (320, 1280, 7, 1, 1, 0),
        (192, 64, 14, 1, 1, 0),
        (32, 192, 28, 1, 1, 0),
        (192, 32, 28, 1, 1, 0),
        (256, 512, 56, 1, 2, 0),
        (1024, 2048, 14, 1, 2, 0),
        (32, 16, 112, 1, 1, 0),
        (16, 96, 112, 1, 1, 0),
    ];
    // `CONV="ci,co,side,k,stride,pad;..."` replaces the list
    let custom: Option<Vec<Layer>> = std::env::var("CONV").ok().map(|s| {
        s.split(';')
            .map(|l| {
                let v: Vec<usize> = l
                    .split(',')
                    .map(|x| x.trim().parse().expect("CONV: numbers"))
                    .collect();
                (v[0], v[1], v[2], v[3], v[4], v[5])
            })
            .collect()
    });
    let layers = custom.unwrap_or(layers.to_vec());
    let only: Option<usize> = std::env::var("L").ok().and_then(|s| s.parse().ok());
    for (li, &(ci, co, hw, k, s, p)) in layers.iter().enumerate() {
        if only.is_some_and(|o| o != li) {
            continue;
        }
        let a = ConvAttrs {
            kernel_shape: None,
            strides: vec![s, s],
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
        let x = &x[..];
        let oplane = g.output[1] * g.output[2];
        let macs = (co * oplane * ci * k * k) as f64;
        let old = PreparedConv::new(g.clone(), &w, None, None, ConvAlgo::Direct);
        let uk = Ukernel::active();
        let pa = vec![PackedA::new(&w, co, ci * k * k, ci * k * k, &uk)];
        let lay = DirectLayout::new(&g, uk.nr).unwrap();
        let mut o1 = vec![0f32; co * oplane];
        let o2 = &mut vec![0f32; co * oplane][..];
        let (mut s1, mut s2) = (Vec::new(), Vec::new());
        pool.install(|| {
            let reps = (2e9 / macs).clamp(3.0, 200.0) as usize;
            let evict = std::env::var("EVICT").is_ok();
            let mut junk = vec![0u8; if evict { 64 << 20 } else { 0 }];
            let mut time = |f: &mut dyn FnMut()| {
                if evict {
                    let mut best = f64::MAX;
                    for i in 0..20u8 {
                        junk.iter_mut().step_by(64).for_each(|b| *b = b.wrapping_add(i));
                        let t = Instant::now();
                        f();
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    return best;
                }
                for _ in 0..2 { f(); }
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let t = Instant::now();
                    for _ in 0..reps { f(); }
                    best = best.min(t.elapsed().as_secs_f64() / reps as f64);
                }
                best
            };
            let t1 = time(&mut || old.run(x, &mut o1, &mut s1));
            let t2 = time(&mut || run_direct(&lay, &g, &pa, None, &uk, Epilogue::default(), None, x, o2, &mut s2));
            let small = vec![kestrel_cpu::direct_small::OcPanels::new(&w, co, ci * k * k)];
            let bias = vec![0f32; co];
            let mut o3 = vec![0f32; co * oplane];
            let epi = Epilogue { row_bias: Some(&bias), ..Default::default() };
            let t3 = time(&mut || run_direct(&lay, &g, &pa, Some(&small), &uk, epi, None, x, &mut o3, &mut s2));
            let res = vec![0.5f32; co * oplane];
            let mut o4 = vec![0f32; co * oplane];
            let t4 = time(&mut || run_direct(&lay, &g, &pa, Some(&small), &uk, epi, Some(&res), x, &mut o4, &mut s2));
            println!("      small-map kernel + residual {:7.3} ms", t4 * 1e3);
            let err = o1.iter().zip(o2.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            println!(
                "{ci:4}->{co:4} {hw:3}x{hw:<3} k{k} s{s}: packed {:7.3} ms {:6.1} GF/s | direct {:7.3} ms {:6.1} GF/s  x{:.2}  err {err:.1e}",
                t1 * 1e3, 2.0 * macs / t1 / 1e9, t2 * 1e3, 2.0 * macs / t2 / 1e9, t1 / t2
            );
            println!("      small-map kernel {:7.3} ms {:6.1} GF/s (applies: {})", t3 * 1e3, 2.0 * macs / t3 / 1e9, kestrel_cpu::direct_small::applies(&lay, Some((f32::NEG_INFINITY, f32::INFINITY))));
        });
    }
}
