//! FFT convolution: `y = IFFT(Σ_c FFT(x_c) · conj(FFT(w_oc)))` per output channel, the
//! cross-correlation theorem on zero-padded planes (no wrap-around: the transform size covers
//! the whole padded input), then cropped to the output, subsampled by the stride, with bias
//! and activation.
//!
//! Transforms: a real-to-complex FFT along rows (`realfft`) and a complex FFT along the
//! columns of the half spectrum (`rustfft`); spectra are kept column-major (`[n_w/2+1][n_h]`)
//! so the column transforms run on contiguous slices. The filters' spectra are computed once
//! at preparation: `c_out · c_in · n_h · (n_w/2+1)` complex values, which is why FFT
//! convolution is only offered below [`MAX_SPECTRA_BYTES`] (small channel counts or small
//! maps). The per-output-channel work is `c_in` complex multiply-adds per frequency, against
//! `c_in · kh · kw` real ones per pixel for direct convolution: it pays for large kernels on
//! small channel counts (docs/PERFORMANCE.md has where it was measured to win).

use kestrel_core::ops::conv::ConvGeometry;
use kestrel_core::ops::Unary;
use rayon::prelude::*;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

/// Largest filter-spectra table a layer may precompute (bytes).
pub const MAX_SPECTRA_BYTES: usize = 128 << 20;

/// The smallest size >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes).
fn smooth_size(n: usize) -> usize {
    (n.max(1)..)
        .find(|&m| {
            let mut r = m;
            for p in [2, 3, 5] {
                while r % p == 0 {
                    r /= p;
                }
            }
            r == 1
        })
        .expect("a 5-smooth number exists above every n")
}

/// Transform sizes of a layer: rows and columns of the padded plane, rounded up to smooth sizes.
fn sizes(g: &ConvGeometry) -> (usize, usize) {
    let hp = g.input[1] + g.pad_begin[1] + g.pad_end[1];
    let wp = g.input[2] + g.pad_begin[2] + g.pad_end[2];
    (smooth_size(hp), smooth_size(wp))
}

/// Whether FFT convolution can run a layer: 2-D, ungrouped, filter spectra within
/// [`MAX_SPECTRA_BYTES`].
pub fn applicable(g: &ConvGeometry) -> bool {
    let (nh, nw) = sizes(g);
    let bytes = g.c_out as u128 * g.c_in as u128 * nh as u128 * (nw / 2 + 1) as u128 * 8;
    g.group == 1 && g.input[0] == 1 && g.kernel[0] == 1 && bytes <= MAX_SPECTRA_BYTES as u128
}

/// A layer prepared for FFT convolution.
#[derive(Clone)]
pub struct PreparedFft {
    geom: ConvGeometry,
    nh: usize,
    nw: usize,
    /// Half-spectrum width `nw / 2 + 1`.
    nwc: usize,
    /// `conj(FFT(w_oc))`, `[c_out][c_in][nwc][nh]`.
    spectra: Vec<Complex32>,
    r2c: Arc<dyn RealToComplex<f32>>,
    c2r: Arc<dyn ComplexToReal<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
}

impl std::fmt::Debug for PreparedFft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PreparedFft({}x{}, {} spectra)",
            self.nh,
            self.nw,
            self.spectra.len()
        )
    }
}

impl PreparedFft {
    /// Precomputes the filters' spectra. `weights` in ONNX layout `[c_out][c_in][kh][kw]`; the
    /// caller checked [`applicable`].
    pub fn new(geom: ConvGeometry, weights: &[f32]) -> Self {
        let (nh, nw) = sizes(&geom);
        let nwc = nw / 2 + 1;
        let mut rp = RealFftPlanner::<f32>::new();
        let mut cp = FftPlanner::<f32>::new();
        let mut f = PreparedFft {
            nh,
            nw,
            nwc,
            spectra: Vec::new(),
            r2c: rp.plan_fft_forward(nw),
            c2r: rp.plan_fft_inverse(nw),
            col_fwd: cp.plan_fft_forward(nh),
            col_inv: cp.plan_fft_inverse(nh),
            geom,
        };
        let g = &f.geom;
        let (kh, kw) = (g.kernel[1], g.kernel[2]);
        let (dh, dw) = (g.dilation[1], g.dilation[2]);
        let (ci, co) = (g.c_in, g.c_out);
        let per = nwc * nh;
        let mut spectra = vec![Complex32::default(); co * ci * per];
        spectra
            .par_chunks_mut(per)
            .enumerate()
            .for_each(|(oc, spec)| {
                let mut plane = vec![0f32; nh * nw];
                let w = &weights[oc * kh * kw..][..kh * kw];
                for ky in 0..kh {
                    for kx in 0..kw {
                        plane[ky * dh * nw + kx * dw] = w[ky * kw + kx];
                    }
                }
                f.forward(&mut plane, spec);
                spec.iter_mut().for_each(|v| *v = v.conj());
            });
        f.spectra = spectra;
        f
    }

    /// 2-D forward transform of a real `nh × nw` plane (clobbered) into `spec` (`[nwc][nh]`).
    fn forward(&self, plane: &mut [f32], spec: &mut [Complex32]) {
        let mut row_out = vec![Complex32::default(); self.nwc];
        for r in 0..self.nh {
            let row = &mut plane[r * self.nw..][..self.nw];
            self.r2c
                .process(row, &mut row_out)
                .expect("sizes match the plan");
            for (k, v) in row_out.iter().enumerate() {
                spec[k * self.nh + r] = *v;
            }
        }
        // every column (contiguous, nh long) in one call
        self.col_fwd.process(spec);
    }

    /// Runs the layer: `x` NCHW input (batch 1), `out` NCHW output, bias and activation fused.
    pub fn run(&self, x: &[f32], out: &mut [f32], bias: &[f32], act: Option<Unary>) {
        let g = &self.geom;
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let (pt, pl) = (g.pad_begin[1], g.pad_begin[2]);
        let (sh, sw) = (g.stride[1], g.stride[2]);
        let (ci, co) = (g.c_in, g.c_out);
        let (nh, nw, nwc) = (self.nh, self.nw, self.nwc);
        let per = nwc * nh;
        // input spectra, one per channel
        let mut xs = vec![Complex32::default(); ci * per];
        xs.par_chunks_mut(per).enumerate().for_each(|(c, spec)| {
            let mut plane = vec![0f32; nh * nw];
            let xc = &x[c * ih * iw..][..ih * iw];
            for r in 0..ih {
                plane[(r + pt) * nw + pl..][..iw].copy_from_slice(&xc[r * iw..][..iw]);
            }
            self.forward(&mut plane, spec);
        });
        let scale = 1.0 / (nh * nw) as f32;
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .take(co)
            .for_each(|(o, yo)| {
                let mut acc = vec![Complex32::default(); per];
                let so = &self.spectra[o * ci * per..][..ci * per];
                for c in 0..ci {
                    let (xc, sc) = (&xs[c * per..][..per], &so[c * per..][..per]);
                    for ((a, &u), &v) in acc.iter_mut().zip(xc).zip(sc) {
                        *a += u * v;
                    }
                }
                self.col_inv.process(&mut acc);
                let mut row = vec![Complex32::default(); nwc];
                let mut real = vec![0f32; nw];
                for i in 0..oh {
                    let r = i * sh;
                    for (k, v) in row.iter_mut().enumerate() {
                        *v = acc[k * nh + r];
                    }
                    // a real signal's DC and Nyquist bins are real: drop rounding residue
                    row[0].im = 0.0;
                    if nw % 2 == 0 {
                        row[nwc - 1].im = 0.0;
                    }
                    self.c2r
                        .process(&mut row, &mut real)
                        .expect("sizes match the plan");
                    let dst = &mut yo[i * ow..][..ow];
                    for (j, d) in dst.iter_mut().enumerate() {
                        let v = real[j * sw] * scale + bias[o];
                        *d = act.map_or(v, |f| f.apply(v));
                    }
                }
            });
    }
}
