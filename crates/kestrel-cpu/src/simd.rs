//! Runtime CPU-feature detection and the two inner loops everything else is built on:
//! `axpy` (y += a * x) and `dot`. Each is compiled several times with different target features
//! and the best one the running CPU supports is chosen once, at first use. The binary runs on
//! any x86-64 (and any other architecture through the portable version).

use std::sync::OnceLock;

/// The instruction-set path chosen at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdPath {
    Avx512,
    Avx2Fma,
    Portable,
}

impl SimdPath {
    pub fn name(self) -> &'static str {
        match self {
            SimdPath::Avx512 => "avx512f",
            SimdPath::Avx2Fma => "avx2+fma",
            // aarch64 always has NEON, which the compiler uses for the portable loops
            SimdPath::Portable if cfg!(target_arch = "aarch64") => "portable (neon)",
            SimdPath::Portable => "portable",
        }
    }
}

/// Detects the best path once (the environment variable `KESTREL_SIMD=portable|avx2|avx512` can
/// force a lower one, for testing every path on one machine).
pub fn active_path() -> SimdPath {
    static PATH: OnceLock<SimdPath> = OnceLock::new();
    *PATH.get_or_init(|| {
        let best = detect();
        match std::env::var("KESTREL_SIMD").as_deref() {
            Ok("portable") => SimdPath::Portable,
            Ok("avx2") if best != SimdPath::Portable => SimdPath::Avx2Fma,
            _ => best,
        }
    })
}

fn detect() -> SimdPath {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdPath::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdPath::Avx2Fma;
        }
    }
    SimdPath::Portable
}

#[inline(always)]
fn axpy_body(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = a.mul_add(x, *y);
    }
}

#[inline(always)]
fn axpy4_body(a: [f32; 4], x: &[f32], y: [&mut [f32]; 4]) {
    let [y0, y1, y2, y3] = y;
    let n = x
        .len()
        .min(y0.len())
        .min(y1.len())
        .min(y2.len())
        .min(y3.len());
    for j in 0..n {
        let v = x[j];
        y0[j] = a[0].mul_add(v, y0[j]);
        y1[j] = a[1].mul_add(v, y1[j]);
        y2[j] = a[2].mul_add(v, y2[j]);
        y3[j] = a[3].mul_add(v, y3[j]);
    }
}

#[inline(always)]
fn dot_body(x: &[f32], y: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let n = x.len().min(y.len());
    let (xc, yc) = (x[..n].chunks_exact(L), y[..n].chunks_exact(L));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..L {
            acc[l] = a[l].mul_add(b[l], acc[l]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (a, b) in xr.iter().zip(yr) {
        s = a.mul_add(*b, s);
    }
    s
}

macro_rules! multiversion {
    ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?) => {
        mod $name {
            use super::*;
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,fma")]
            pub unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
            pub fn portable($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
        }
        /// Dispatches to the version for [`active_path`].
        #[inline]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            match active_path() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: active_path() returns Avx512 only when avx512f and fma were detected.
                SimdPath::Avx512 => unsafe { $name::avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: active_path() returns Avx2Fma only when avx2 and fma were detected.
                SimdPath::Avx2Fma => unsafe { $name::avx2($($arg),*) },
                _ => $name::portable($($arg),*),
            }
        }
    };
}

#[inline(always)]
fn bias_activation_body(xs: &mut [f32], bias: f32, act: Option<kestrel_core::ops::Unary>) {
    use kestrel_core::ops::Unary;
    // one loop per common activation so each vectorises; comparisons keep NaN (IEEE)
    match act {
        None => xs.iter_mut().for_each(|v| *v += bias),
        Some(Unary::Relu) => xs.iter_mut().for_each(|v| {
            let x = *v + bias;
            *v = if x < 0.0 { 0.0 } else { x };
        }),
        Some(Unary::Clip { min, max }) => xs.iter_mut().for_each(|v| {
            let x = *v + bias;
            let x = if x < min { min } else { x };
            *v = if x > max { max } else { x };
        }),
        Some(Unary::LeakyRelu { alpha }) => xs.iter_mut().for_each(|v| {
            let x = *v + bias;
            *v = if x < 0.0 { alpha * x } else { x };
        }),
        Some(a) => xs.iter_mut().for_each(|v| *v = a.apply(*v + bias)),
    }
}

#[inline(always)]
fn activate_body(xs: &mut [f32], act: kestrel_core::ops::Unary) {
    use kestrel_core::ops::Unary;
    match act {
        Unary::Relu => xs.iter_mut().for_each(|v| {
            if *v < 0.0 {
                *v = 0.0
            }
        }),
        Unary::Clip { min, max } => xs.iter_mut().for_each(|v| {
            let x = if *v < min { min } else { *v };
            *v = if x > max { max } else { x };
        }),
        a => xs.iter_mut().for_each(|v| *v = a.apply(*v)),
    }
}

multiversion!(activate, activate_body, (xs: &mut [f32], act: kestrel_core::ops::Unary));
multiversion!(bias_activation, bias_activation_body, (xs: &mut [f32], bias: f32, act: Option<kestrel_core::ops::Unary>));
multiversion!(axpy, axpy_body, (a: f32, x: &[f32], y: &mut [f32]));
multiversion!(axpy4, axpy4_body, (a: [f32; 4], x: &[f32], y: [&mut [f32]; 4]));
multiversion!(dot, dot_body, (x: &[f32], y: &[f32]) -> f32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_agrees_with_plain_loops() {
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let y0: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let want_dot: f32 = x.iter().zip(&y0).map(|(a, b)| a * b).sum();
        let mut want_axpy = y0.clone();
        for (y, x) in want_axpy.iter_mut().zip(&x) {
            *y += 1.5 * x;
        }
        type PathRun<'a> = Box<dyn Fn() -> (f32, Vec<f32>) + 'a>;
        #[allow(unused_mut)] // only x86-64 adds more paths
        let mut paths: Vec<PathRun> = vec![Box::new(|| {
            let mut y = y0.clone();
            axpy::portable(1.5, &x, &mut y);
            (dot::portable(&x, &y0), y)
        })];
        #[cfg(target_arch = "x86_64")]
        {
            if detect() != SimdPath::Portable {
                paths.push(Box::new(|| {
                    let mut y = y0.clone();
                    // SAFETY: detect() found avx2+fma (or better).
                    unsafe { axpy::avx2(1.5, &x, &mut y) };
                    // SAFETY: as above.
                    (unsafe { dot::avx2(&x, &y0) }, y)
                }));
            }
            if detect() == SimdPath::Avx512 {
                paths.push(Box::new(|| {
                    let mut y = y0.clone();
                    // SAFETY: detect() found avx512f+fma.
                    unsafe { axpy::avx512(1.5, &x, &mut y) };
                    // SAFETY: as above.
                    (unsafe { dot::avx512(&x, &y0) }, y)
                }));
            }
        }
        for p in paths {
            let (d, y) = p();
            assert!((d - want_dot).abs() < 1e-3, "{d} vs {want_dot}");
            for (a, b) in y.iter().zip(&want_axpy) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }
}
