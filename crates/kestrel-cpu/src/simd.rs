//! Runtime CPU-feature detection and the small vector loops shared by the kernels (`dot`, the
//! bias/activation epilogue, activations). Each is compiled several times with different target
//! features and the best one the running CPU supports is chosen once, at first use. The binary runs on
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
        // (every AVX-512 CPU has AVX2; checked anyway, kernels of the AVX-512 path use it)
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
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

#[inline(always)]
fn sum_body(x: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let c = x.chunks_exact(L);
    let r = c.remainder();
    for a in c {
        for l in 0..L {
            acc[l] += a[l];
        }
    }
    acc.iter().sum::<f32>() + r.iter().sum::<f32>()
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
multiversion!(dot, dot_body, (x: &[f32], y: &[f32]) -> f32);

/// [`dot4`] for AVX-512 with the four accumulators held in registers (the generic body
/// measured 2x slower than four single dot products: its accumulators went through memory).
///
/// # Safety
/// The CPU must support AVX-512F and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn dot4_avx512(x: &[f32], y: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = y.iter().fold(x.len(), |n, r| n.min(r.len()));
    let full = n / 16 * 16;
    let (mut a0, mut a1, mut a2, mut a3) = (
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
        _mm512_setzero_ps(),
    );
    let (xp, p0, p1, p2, p3) = (
        x.as_ptr(),
        y[0].as_ptr(),
        y[1].as_ptr(),
        y[2].as_ptr(),
        y[3].as_ptr(),
    );
    let mut i = 0;
    while i < full {
        // SAFETY: i + 16 <= n, within x and every row
        unsafe {
            let v = _mm512_loadu_ps(xp.add(i));
            a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p0.add(i)), a0);
            a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p1.add(i)), a1);
            a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p2.add(i)), a2);
            a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p3.add(i)), a3);
        }
        i += 16;
    }
    let accs = [a0, a1, a2, a3];
    std::array::from_fn(|j| {
        let mut lanes = [0f32; 16];
        // SAFETY: the array holds 16 floats
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), accs[j]) };
        // lanes summed in order, then the tail: dot_body's order
        let mut s: f32 = lanes.iter().sum();
        for (a, b) in x[full..n].iter().zip(&y[j][full..n]) {
            s = a.mul_add(*b, s);
        }
        s
    })
}

/// Four dot products of `x` with `y[0..4]` in one pass: `x` is read once for all four and
/// the four rows stream side by side (more loads in flight than one stream; a GEMV is bound by
/// them). Each result is summed in [`dot`]'s order on the AVX-512 path, so equals `dot(x, y[i])`
/// bit for bit; other paths run four single dot products on the active path.
pub fn dot4(x: &[f32], y: [&[f32]; 4]) -> [f32; 4] {
    match active_path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: active_path() returns Avx512 only when avx512f and fma were detected.
        SimdPath::Avx512 => unsafe { dot4_avx512(x, y) },
        _ => y.map(|r| dot(x, r)),
    }
}
multiversion!(sum, sum_body, (x: &[f32]) -> f32);

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_core::ops::Unary;

    /// Runs `f` on every path this CPU supports.
    fn each_path(mut f: impl FnMut(&str, &dyn Fn(&[f32], &[f32]) -> f32, &dyn Fn(&mut [f32]))) {
        let act = Some(Unary::Clip {
            min: -0.5,
            max: 2.0,
        });
        f("portable", &|a, b| dot::portable(a, b), &|x| {
            bias_activation::portable(x, 0.25, act)
        });
        #[cfg(target_arch = "x86_64")]
        {
            if detect() != SimdPath::Portable {
                // SAFETY: detect() found avx2+fma (or better).
                f("avx2", &|a, b| unsafe { dot::avx2(a, b) }, &|x| unsafe {
                    bias_activation::avx2(x, 0.25, act)
                });
            }
            if detect() == SimdPath::Avx512 {
                // SAFETY: detect() found avx512f+fma.
                f(
                    "avx512",
                    &|a, b| unsafe { dot::avx512(a, b) },
                    &|x| unsafe { bias_activation::avx512(x, 0.25, act) },
                );
            }
        }
    }

    #[test]
    fn every_path_agrees_with_plain_loops() {
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.1 - 1.8).collect();
        let y: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let want_dot: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        let want_act: Vec<f32> = x.iter().map(|v| (v + 0.25).clamp(-0.5, 2.0)).collect();
        each_path(|name, dot_f, act_f| {
            assert!((dot_f(&x, &y) - want_dot).abs() < 1e-4, "{name} dot");
            // four rows at once: each equal to its single dot product bit for bit
            let rows: Vec<Vec<f32>> = (0..4)
                .map(|r| y.iter().map(|v| v * (r as f32 + 0.5)).collect())
                .collect();
            let four = dot4(&x, [&rows[0], &rows[1], &rows[2], &rows[3]]);
            for (r, got) in rows.iter().zip(four) {
                assert_eq!(got.to_bits(), dot(&x, r).to_bits(), "{name} dot4");
            }
            let mut v = x.clone();
            act_f(&mut v);
            assert_eq!(v, want_act, "{name} bias+clip");
        });
    }
}
