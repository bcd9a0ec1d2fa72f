//! Microkernel and GEMM throughput on cache-resident data (GFLOP/s), for tuning.
use kestrel_cpu::sgemm::{gemm, DenseB, PackedA};
use kestrel_cpu::ukernel::Ukernel;
use std::time::Instant;

fn main() {
    let uk = Ukernel::active();
    let kc = 256;
    let a = vec![0.5f32; uk.mr * kc];
    let b = vec![0.25f32; uk.nr * kc];
    let mut c = vec![0f32; uk.mr * uk.nr];
    let iters = 200_000;
    let t = Instant::now();
    for _ in 0..iters {
        // SAFETY: panels sized for the kernel
        unsafe { uk.run(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), uk.nr, true) };
    }
    let s = t.elapsed().as_secs_f64();
    let fl = 2.0 * (uk.mr * uk.nr * kc) as f64 * iters as f64;
    println!("{} L1 {:.1} GFLOP/s", uk.name, fl / s / 1e9);
    for &(m, n, k) in &[
        (64, 3136, 576),
        (128, 784, 1152),
        (256, 196, 2304),
        (512, 49, 4608),
        (512, 512, 512),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32).collect();
        let pa = PackedA::new(&a, m, k, k, &uk);
        let mut c = vec![0f32; m * n];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| {
            for _ in 0..3 {
                gemm(&pa, &DenseB { data: &b, ld: n }, n, &mut c, n, &uk);
            }
            let reps = 20;
            let t = Instant::now();
            for _ in 0..reps {
                gemm(&pa, &DenseB { data: &b, ld: n }, n, &mut c, n, &uk);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "gemm {m}x{n}x{k}: {:.1} GFLOP/s",
                2.0 * (m * n * k) as f64 / s / 1e9
            );
        });
    }
}
