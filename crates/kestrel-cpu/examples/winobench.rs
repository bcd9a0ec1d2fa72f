//! Winograd layers of VGG-16 / ResNet shapes, one thread: ms and GFLOP/s in direct-convolution
//! FLOPs per tile size. `KESTREL_WINO_TRANSFORMS=rows|gather` compares the AVX-512 transforms;
//! `WINO="ci,co,side,tile;..."` (tile 2, 4 or 6) times other layers.
use kestrel_core::ops::conv::{conv_geometry, AutoPad, ConvAttrs};
use kestrel_cpu::winograd::{PreparedWinograd, WinogradTile};
use std::time::Instant;

fn main() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let layers = [
        (64, 64, 224, WinogradTile::F6x3),
        (64, 64, 224, WinogradTile::F4x3),
        (128, 128, 112, WinogradTile::F6x3),
        (64, 64, 56, WinogradTile::F4x3),
        (256, 256, 56, WinogradTile::F4x3),
        (512, 512, 28, WinogradTile::F4x3),
        (512, 512, 14, WinogradTile::F2x3),
    ];
    // `WINO="ci,co,side,tile;..."` (tile 2, 4 or 6) replaces the list.
    let custom: Option<Vec<(usize, usize, usize, WinogradTile)>> =
        std::env::var("WINO").ok().map(|s| {
            s.split(';')
                .map(|l| {
                    let v: Vec<usize> = l
                        .split(',')
                        .map(|x| x.trim().parse().expect("WINO: numbers"))
                        .collect();
                    let tile = match v[3] {
                        2 => WinogradTile::F2x3,
                        4 => WinogradTile::F4x3,
                        _ => WinogradTile::F6x3,
                    };
                    (v[0], v[1], v[2], tile)
                })
                .collect()
        });
    for (ci, co, hw, tile) in custom.unwrap_or(layers.to_vec()) {
        let a = ConvAttrs {
            kernel_shape: None,
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            auto_pad: AutoPad::NotSet,
            group: 1,
            activation: None,
        };
        let g = conv_geometry(&a, &[1, ci, hw, hw], &[co, ci, 3, 3]).unwrap();
        let w: Vec<f32> = (0..co * ci * 9)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01)
            .collect();
        let x: Vec<f32> = (0..ci * hw * hw)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let p = PreparedWinograd::new(g, &w, tile);
        let mut out = vec![0f32; co * hw * hw];
        let bias = vec![0f32; co];
        let mut scratch = Vec::new();
        pool.install(|| {
            for _ in 0..2 {
                p.run(&x, &mut out, &bias, None, &mut scratch);
            }
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                p.run(&x, &mut out, &bias, None, &mut scratch);
                best = best.min(t.elapsed().as_secs_f64());
            }
            let gf = (ci * co * hw * hw * 9) as f64 * 2.0 / best / 1e9;
            println!(
                "{ci:4}->{co:4} {hw:3}px {tile:?}: {:7.2} ms {gf:6.0} GF/s (direct-conv FLOPs)",
                best * 1e3
            );
        });
    }
}
