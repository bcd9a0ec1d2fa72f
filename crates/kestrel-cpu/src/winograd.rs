//! Winograd convolution F(m×m, 3×3) for 3×3, stride-1, dilation-1, ungrouped layers
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` per α×α input tile (α = m + 2). The element-wise products
//! over all channels and tiles become α² independent GEMMs `M[ξ] = U[ξ] · V[ξ]`
//! (`C_out × C_in` by `C_in × tiles`), run by the packed SGEMM. Filter transforms `U` are computed
//! and packed once at preparation. Transforms are vectorised across the tiles of one tile row.
//!
//! F(2,3) needs 2.25× fewer multiplies than direct convolution, F(4,3) 4×, F(6,3) 5.06×; the
//! larger tiles' transform constants cost some precision (errors ~1e-5 relative in f32 for
//! F(4,3), ~1e-4 for F(6,3), tested).

use crate::sgemm::{gemm, DenseB, PackedA};
use crate::ukernel::Ukernel;
use kestrel_core::ops::conv::ConvGeometry;
use kestrel_core::ops::Unary;
use rayon::prelude::*;

/// Output tile size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinogradTile {
    F2x3,
    F4x3,
    /// Interpolation points 0, ±1, ±2, ±1/2 (α = 8; AVX-512 transforms only).
    F6x3,
}

struct Matrices {
    m: usize,
    alpha: usize,
    /// Bᵀ, α×α row-major.
    bt: Vec<f32>,
    /// G, α×3.
    g: Vec<f32>,
    /// Aᵀ, m×α.
    at: Vec<f32>,
}

fn matrices(t: WinogradTile) -> Matrices {
    match t {
        WinogradTile::F2x3 => Matrices {
            m: 2,
            alpha: 4,
            bt: vec![
                1., 0., -1., 0., 0., 1., 1., 0., 0., -1., 1., 0., 0., 1., 0., -1.,
            ],
            g: vec![1., 0., 0., 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0., 0., 1.],
            at: vec![1., 1., 1., 0., 0., 1., -1., -1.],
        },
        WinogradTile::F4x3 => Matrices {
            m: 4,
            alpha: 6,
            bt: vec![
                4., 0., -5., 0., 1., 0., //
                0., -4., -4., 1., 1., 0., //
                0., 4., -4., -1., 1., 0., //
                0., -2., -1., 2., 1., 0., //
                0., 2., -1., -2., 1., 0., //
                0., 4., 0., -5., 0., 1.,
            ],
            g: vec![
                1. / 4.,
                0.,
                0., //
                -1. / 6.,
                -1. / 6.,
                -1. / 6., //
                -1. / 6.,
                1. / 6.,
                -1. / 6., //
                1. / 24.,
                1. / 12.,
                1. / 6., //
                1. / 24.,
                -1. / 12.,
                1. / 6., //
                0.,
                0.,
                1.,
            ],
            at: vec![
                1., 1., 1., 1., 1., 0., //
                0., 1., -1., 2., -2., 0., //
                0., 1., 1., 4., 4., 0., //
                0., 1., -1., 8., -8., 1.,
            ],
        },
        WinogradTile::F6x3 => Matrices {
            m: 6,
            alpha: 8,
            // the same as winograd_avx512::BT8 / AT6 (that module is x86-64 only)
            bt: vec![
                1.,
                0.,
                -21. / 4.,
                0.,
                21. / 4.,
                0.,
                -1.,
                0., //
                0.,
                1.,
                1.,
                -17. / 4.,
                -17. / 4.,
                1.,
                1.,
                0., //
                0.,
                -1.,
                1.,
                17. / 4.,
                -17. / 4.,
                -1.,
                1.,
                0., //
                0.,
                0.5,
                0.25,
                -2.5,
                -1.25,
                2.,
                1.,
                0., //
                0.,
                -0.5,
                0.25,
                2.5,
                -1.25,
                -2.,
                1.,
                0., //
                0.,
                2.,
                4.,
                -2.5,
                -5.,
                0.5,
                1.,
                0., //
                0.,
                -2.,
                4.,
                2.5,
                -5.,
                -0.5,
                1.,
                0., //
                0.,
                -1.,
                0.,
                21. / 4.,
                0.,
                -21. / 4.,
                0.,
                1.,
            ],
            g: vec![
                1.,
                0.,
                0., //
                -2. / 9.,
                -2. / 9.,
                -2. / 9., //
                -2. / 9.,
                2. / 9.,
                -2. / 9., //
                1. / 90.,
                1. / 45.,
                2. / 45., //
                1. / 90.,
                -1. / 45.,
                2. / 45., //
                32. / 45.,
                16. / 45.,
                8. / 45., //
                32. / 45.,
                -16. / 45.,
                8. / 45., //
                0.,
                0.,
                1.,
            ],
            at: vec![
                1., 1., 1., 1., 1., 1., 1., 0., //
                0., 1., -1., 2., -2., 0.5, -0.5, 0., //
                0., 1., 1., 4., 4., 0.25, 0.25, 0., //
                0., 1., -1., 8., -8., 0.125, -0.125, 0., //
                0., 1., 1., 16., 16., 0.0625, 0.0625, 0., //
                0., 1., -1., 32., -32., 0.03125, -0.03125, 1.,
            ],
        },
    }
}

/// True when Winograd applies to this geometry.
pub fn applicable(g: &ConvGeometry) -> bool {
    g.kernel == [1, 3, 3]
        && g.stride == [1, 1, 1]
        && g.dilation == [1, 1, 1]
        && g.group == 1
        && g.input[0] == 1
}

/// The tile `auto` picks for this geometry, if any (AVX-512 transforms only): F(6x6,3x3) on
/// maps of 112x112 or more with 64+ channels (VGG-16, one thread: 224 px 64ch 28.5 -> 27.5 ms,
/// 112 px 128ch 18.3 -> 16.4; slower on 56 px and smaller maps, 256ch 15.0 -> 16.5: its
/// 64-vector transforms spill registers), F(4x4,3x3) for
/// 3x3 stride-1 layers on maps of 24x24 or more with 32+ input and 64+ output channels,
/// F(2x2,3x3) on 14x14 to 23x23 maps with 128+ channels, and on 13x13+ maps with 64+ input
/// and 256+ output channels (measured: see `conv::PreparedConv::new_for`).
pub fn auto_tile(g: &ConvGeometry) -> Option<WinogradTile> {
    if !applicable(g)
        || !cfg!(target_arch = "x86_64")
        || crate::simd::active_path() != crate::simd::SimdPath::Avx512
    {
        return None;
    }
    let side = g.output[1].min(g.output[2]);
    let channels = g.c_in.min(g.c_out);
    if side >= 112 && g.c_in >= 64 && g.c_out >= 64 {
        Some(WinogradTile::F6x3)
    } else if side >= 24 && g.c_in >= 32 && g.c_out >= 64 {
        Some(WinogradTile::F4x3)
    } else if (side >= 14 && channels >= 128) || (side >= 13 && g.c_in >= 64 && g.c_out >= 256) {
        Some(WinogradTile::F2x3)
    } else {
        None
    }
}

/// A Winograd layer prepared once: transformed, packed filters.
#[derive(Clone, Debug)]
pub struct PreparedWinograd {
    pub tile: WinogradTile,
    geom: ConvGeometry,
    /// One packed `C_out × C_in` matrix per ξ in 0..α².
    u: Vec<PackedA>,
    ukernel: Ukernel,
}

impl PreparedWinograd {
    /// Transforms the `[C_out, C_in, 3, 3]` weights. Precondition: [`applicable`].
    pub fn new(geom: ConvGeometry, weights: &[f32], tile: WinogradTile) -> Self {
        let mx = matrices(tile);
        let a = mx.alpha;
        let (m_out, c_in) = (geom.c_out, geom.c_in);
        // U[ξ][o][c] = (G g Gᵀ)[ξ]
        let mut u = vec![vec![0f32; m_out * c_in]; a * a];
        for o in 0..m_out {
            for c in 0..c_in {
                let w = &weights[(o * c_in + c) * 9..][..9];
                // tmp = G w (α×3)
                let mut tmp = vec![0f32; a * 3];
                for i in 0..a {
                    for j in 0..3 {
                        tmp[i * 3 + j] = (0..3).map(|k| mx.g[i * 3 + k] * w[k * 3 + j]).sum();
                    }
                }
                for i in 0..a {
                    for j in 0..a {
                        let v: f32 = (0..3).map(|k| tmp[i * 3 + k] * mx.g[j * 3 + k]).sum();
                        u[i * a + j][o * c_in + c] = v;
                    }
                }
            }
        }
        let ukernel = Ukernel::active();
        let u = u
            .iter()
            .map(|mat| PackedA::new(mat, m_out, c_in, c_in, &ukernel))
            .collect();
        PreparedWinograd {
            tile,
            geom,
            u,
            ukernel,
        }
    }

    /// Scratch floats one run needs (transformed input and GEMM outputs, of one band of tiles
    /// on the AVX-512 F(4x4,3x3) path).
    pub fn scratch_elems(&self) -> usize {
        let mx = matrices(self.tile);
        let t = if self.banded() {
            band_tiles(
                mx.alpha * mx.alpha,
                self.geom.c_in,
                self.geom.c_out,
                self.tiles(),
            )
        } else {
            self.tiles()
        };
        mx.alpha * mx.alpha * t * (self.geom.c_in + self.geom.c_out)
    }

    /// Whether the layer runs the AVX-512 transforms in bands of tiles
    /// ([`crate::winograd_avx512`]).
    fn banded(&self) -> bool {
        cfg!(target_arch = "x86_64") && crate::simd::active_path() == crate::simd::SimdPath::Avx512
    }

    /// The AVX-512 F(m x m, 3x3) path (α = `AL` = m + 2): per band of tiles, the input
    /// transform (parallel over channels), the α² GEMMs `M[ξ] = U[ξ] · V[ξ]` (parallel over ξ)
    /// and the output transform with bias and clamp (parallel over output channels); other
    /// activations in one more pass.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn run_banded_m<const AL: usize, const M: usize>(
        &self,
        g: &ConvGeometry,
        x: &[f32],
        out: &mut [f32],
        bias: &[f32],
        residual: Option<&[f32]>,
        act: Option<Unary>,
        scratch: &mut Vec<f32>,
    ) {
        use crate::winograd_avx512::{input_plane, output_plane, Band};
        use crate::winograd_rows::{input_plane_rows, output_plane_rows, rows_pay};
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let tw = ow.div_ceil(M);
        let t = oh.div_ceil(M) * tw;
        let (ci, co) = (g.c_in, g.c_out);
        let aa = AL * AL;
        let tb = band_tiles(aa, ci, co, t);
        let rows = rows_pay(tw);
        scratch.resize(aa * tb * (ci + co), 0.0);
        let (v, mm) = scratch.split_at_mut(aa * ci * tb);
        let clamp = crate::sgemm::clamp_of(act);
        let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (py, px) = (g.pad_begin[1] as isize, g.pad_begin[2] as isize);
        assert!(x.len() >= g.batch * ci * ih * iw && out.len() >= g.batch * co * oh * ow);
        assert!(residual.is_none_or(|r| r.len() >= g.batch * co * oh * ow));
        for n in 0..g.batch {
            let xn = &x[n * ci * ih * iw..][..ci * ih * iw];
            let outn = &mut out[n * co * oh * ow..][..co * oh * ow];
            let resn = residual.map(|r| &r[n * co * oh * ow..][..co * oh * ow]);
            for t0 in (0..t).step_by(tb) {
                let t1 = (t0 + tb).min(t);
                let band = Band {
                    t0,
                    t1,
                    tw,
                    ih,
                    iw,
                    oh,
                    ow,
                    py,
                    px,
                };
                // V[ξ][c][j] at (ξ ci + c) tb + j
                let vp = SendPtr(v.as_mut_ptr());
                (0..ci).into_par_iter().for_each(|c| {
                    // SAFETY: the AVX-512 path (avx512f + fma) was detected (`banded`); channel
                    // c writes only its rows (ξ ci + c) of V, inside `v` (α² ci tb floats).
                    unsafe {
                        let (xc, vc) = (&xn[c * ih * iw..][..ih * iw], vp.get().add(c * tb));
                        if rows {
                            input_plane_rows::<AL, M>(&band, xc, vc, ci * tb)
                        } else {
                            input_plane::<AL, M>(&band, xc, vc, ci * tb)
                        }
                    }
                });
                // M[ξ][o][j] at (ξ co + o) tb + j
                let mp = SendPtr(mm.as_mut_ptr());
                let v = &*v;
                (0..aa).into_par_iter().for_each(|xi| {
                    let b = DenseB {
                        data: &v[xi * ci * tb..][..ci * tb],
                        ld: tb,
                    };
                    // SAFETY: GEMM ξ writes only M[ξ] (co tb floats at ξ co tb, inside `mm`)
                    let c = unsafe {
                        std::slice::from_raw_parts_mut(mp.get().add(xi * co * tb), co * tb)
                    };
                    gemm(&self.u[xi], &b, t1 - t0, c, tb, &self.ukernel);
                });
                let op = SendPtr(outn.as_mut_ptr());
                let m = &*mm;
                (0..co).into_par_iter().for_each(|o| {
                    // SAFETY: AVX-512 detected; M's rows of channel o are inside `mm`; task o
                    // writes only output plane o (inside `outn`); the residual's plane o is
                    // inside `resn` (laid out like `outn`).
                    unsafe {
                        let (mo, res) = (
                            m.as_ptr().add(o * tb),
                            resn.map_or(std::ptr::null(), |r| r[o * oh * ow..].as_ptr()),
                        );
                        let oo = op.get().add(o * oh * ow);
                        if rows {
                            output_plane_rows::<AL, M>(
                                &band,
                                mo,
                                co * tb,
                                bias[o],
                                res,
                                (lo, hi),
                                oo,
                            )
                        } else {
                            output_plane::<AL, M>(&band, mo, co * tb, bias[o], res, (lo, hi), oo)
                        }
                    }
                });
            }
            if let (None, Some(a)) = (clamp, act) {
                // bias and residual are in; the activation is not a clamp the transform fused
                a.apply_slice(outn);
            }
        }
    }

    fn tiles(&self) -> usize {
        let m = matrices(self.tile).m;
        self.geom.output[1].div_ceil(m) * self.geom.output[2].div_ceil(m)
    }

    /// Runs the layer with bias and activation. `x`: NCHW input, `out`: NCHW output.
    pub fn run(
        &self,
        x: &[f32],
        out: &mut [f32],
        bias: &[f32],
        act: Option<Unary>,
        scratch: &mut Vec<f32>,
    ) {
        self.run_geom(&self.geom, x, out, bias, act, scratch)
    }

    /// [`PreparedWinograd::run`] with a residual Add fused: `out = act((conv(x) + bias) +
    /// residual)`, `residual` laid out like `out` (the output transform adds it before the
    /// activation, so the sum is never stored and read back).
    pub fn run_residual(
        &self,
        x: &[f32],
        out: &mut [f32],
        bias: &[f32],
        residual: &[f32],
        act: Option<Unary>,
        scratch: &mut Vec<f32>,
    ) {
        self.run_geom_with(&self.geom, x, out, bias, Some(residual), act, scratch)
    }

    /// Runs the layer's filters over another geometry: `g` may differ from the layer's only in
    /// its spatial sizes, paddings and batch (a crop with its own zero padding, for
    /// convolutional caching). The transformed filters do not depend on the tiling, so any
    /// crop works; the tiles start at the crop's first output, so results equal the whole
    /// layer's up to float rounding (the tiles' transforms group the sums differently).
    pub fn run_geom(
        &self,
        g: &ConvGeometry,
        x: &[f32],
        out: &mut [f32],
        bias: &[f32],
        act: Option<Unary>,
        scratch: &mut Vec<f32>,
    ) {
        self.run_geom_with(g, x, out, bias, None, act, scratch)
    }

    /// [`PreparedWinograd::run_geom`] with an optional residual (see
    /// [`PreparedWinograd::run_residual`]).
    #[allow(clippy::too_many_arguments)]
    fn run_geom_with(
        &self,
        g: &ConvGeometry,
        x: &[f32],
        out: &mut [f32],
        bias: &[f32],
        residual: Option<&[f32]>,
        act: Option<Unary>,
        scratch: &mut Vec<f32>,
    ) {
        debug_assert_eq!(
            (g.c_in, g.c_out, g.kernel, g.stride, g.dilation, g.group),
            (
                self.geom.c_in,
                self.geom.c_out,
                self.geom.kernel,
                self.geom.stride,
                self.geom.dilation,
                self.geom.group
            )
        );
        #[cfg(target_arch = "x86_64")]
        if self.banded() {
            match self.tile {
                WinogradTile::F4x3 => {
                    self.run_banded_m::<6, 4>(g, x, out, bias, residual, act, scratch)
                }
                WinogradTile::F2x3 => {
                    self.run_banded_m::<4, 2>(g, x, out, bias, residual, act, scratch)
                }
                WinogradTile::F6x3 => {
                    self.run_banded_m::<8, 6>(g, x, out, bias, residual, act, scratch)
                }
            }
            return;
        }
        let mx = matrices(self.tile);
        let (m, a) = (mx.m, mx.alpha);
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let (th, tw) = (oh.div_ceil(m), ow.div_ceil(m));
        let t = th * tw;
        let (ci, co) = (g.c_in, g.c_out);
        let aa = a * a;
        scratch.resize(aa * t * (ci + co), 0.0);
        let (v, mm) = scratch.split_at_mut(aa * ci * t);
        let (py, px) = (g.pad_begin[1] as isize, g.pad_begin[2] as isize);
        for n in 0..g.batch {
            let xn = &x[n * ci * ih * iw..][..ci * ih * iw];
            // input transform: V[ξ][c][t], parallel over channels (each writes its own rows)
            let vptr = SendPtr(v.as_mut_ptr());
            (0..ci).into_par_iter().for_each(|c| {
                let xc = &xn[c * ih * iw..][..ih * iw];
                let mut d = vec![0f32; aa * tw];
                let mut tmp = vec![0f32; aa * tw];
                for ty in 0..th {
                    // gather the α×α patches of this tile row: d[i][j][tx]
                    for i in 0..a {
                        let iy = (ty * m + i) as isize - py;
                        for j in 0..a {
                            let row = &mut d[(i * a + j) * tw..][..tw];
                            for (tx, r) in row.iter_mut().enumerate() {
                                let ix = (tx * m + j) as isize - px;
                                *r = if iy >= 0 && iy < ih as isize && ix >= 0 && ix < iw as isize {
                                    xc[iy as usize * iw + ix as usize]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                    // tmp = Bᵀ d ; then V = tmp B  (vectorised over tx)
                    transform(&mx.bt, a, a, &d, &mut tmp, tw, a);
                    transform_right(&mx.bt, a, a, &tmp, &mut d, tw, a);
                    for xi in 0..aa {
                        // SAFETY: channel c writes only V[ξ][c][ty*tw .. ty*tw+tw]; channels are
                        // distinct across tasks and the slice lies inside `v`.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                vptr.get().add((xi * ci + c) * t + ty * tw),
                                tw,
                            )
                        };
                        dst.copy_from_slice(&d[xi * tw..][..tw]);
                    }
                }
            });
            // α² GEMMs: M[ξ] = U[ξ] · V[ξ]
            for xi in 0..aa {
                let b = DenseB {
                    data: &v[xi * ci * t..][..ci * t],
                    ld: t,
                };
                gemm(
                    &self.u[xi],
                    &b,
                    t,
                    &mut mm[xi * co * t..][..co * t],
                    t,
                    &self.ukernel,
                );
            }
            // output transform: Y = Aᵀ M A, + bias, activation; parallel over output channels
            let outn = &mut out[n * co * oh * ow..][..co * oh * ow];
            let resn = residual.map(|r| &r[n * co * oh * ow..][..co * oh * ow]);
            let mm = &*mm;
            outn.par_chunks_mut(oh * ow)
                .enumerate()
                .for_each(|(o, yo)| {
                    let res_o = resn.map(|r| &r[o * oh * ow..][..oh * ow]);
                    let mut d = vec![0f32; aa * tw];
                    let mut tmp = vec![0f32; a * m * tw];
                    let mut y = vec![0f32; m * m * tw];
                    for ty in 0..th {
                        for xi in 0..aa {
                            d[xi * tw..][..tw]
                                .copy_from_slice(&mm[(xi * co + o) * t + ty * tw..][..tw]);
                        }
                        // tmp (m×α) = Aᵀ d ; y (m×m) = tmp A
                        transform(&mx.at, m, a, &d, &mut tmp, tw, a);
                        transform_right(&mx.at, m, a, &tmp, &mut y, tw, m);
                        for i in 0..m {
                            let oy = ty * m + i;
                            if oy >= oh {
                                break;
                            }
                            for j in 0..m {
                                let src = &y[(i * m + j) * tw..][..tw];
                                for (tx, &val) in src.iter().enumerate() {
                                    let ox = tx * m + j;
                                    if ox < ow {
                                        let v = val + bias[o];
                                        let v = res_o.map_or(v, |r| v + r[oy * ow + ox]);
                                        yo[oy * ow + ox] = match act {
                                            Some(f) => f.apply(v),
                                            None => v,
                                        };
                                    }
                                }
                            }
                        }
                    }
                });
        }
    }
}

/// Tiles per band of the AVX-512 path: a band's transformed input and GEMM outputs
/// (`α² (c_in + c_out)` floats per tile) in about 768 KB (1.5 MB until session 11: more than
/// a Zen 4 core's 1 MB L2; VGG-16's 224 px layer in F(6x6) 18.9 -> 17.5 ms), so they stay in
/// L2 between the
/// transforms and the GEMMs; at least 64 tiles (a GEMM needs columns), a multiple of 16 (the
/// transforms' vectors), at most all `tiles`.
fn band_tiles(alpha2: usize, c_in: usize, c_out: usize, tiles: usize) -> usize {
    let per_tile = alpha2 * (c_in + c_out) * 4;
    ((768 * 1024) / per_tile)
        .max(64)
        .next_multiple_of(16)
        .min(tiles)
        .max(1)
}

/// `out[r][j][·] = Σ_k mat[r][k] · inp[k][j][·]` for r < rows, with `inp` shaped
/// `[kdim][cols][w]` and `out` `[rows][cols][w]` (the left multiplication, vectorised over w).
fn transform(
    mat: &[f32],
    rows: usize,
    kdim: usize,
    inp: &[f32],
    out: &mut [f32],
    w: usize,
    cols: usize,
) {
    for r in 0..rows {
        for j in 0..cols {
            let o = &mut out[(r * cols + j) * w..][..w];
            o.fill(0.0);
            for k in 0..kdim {
                let coef = mat[r * kdim + k];
                if coef != 0.0 {
                    let src = &inp[(k * cols + j) * w..][..w];
                    for (a, &b) in o.iter_mut().zip(src) {
                        *a += coef * b;
                    }
                }
            }
        }
    }
}

/// `out[i][c][·] = Σ_k inp[i][k][·] · mat[c][k]` (right multiplication by matᵀ), with `inp`
/// shaped `[rows_in][kdim][w]` and `out` `[rows_in][out_cols][w]`, `mat` `[out_cols][kdim]`.
fn transform_right(
    mat: &[f32],
    out_cols: usize,
    kdim: usize,
    inp: &[f32],
    out: &mut [f32],
    w: usize,
    rows_in: usize,
) {
    for i in 0..rows_in {
        for c in 0..out_cols {
            let o = &mut out[(i * out_cols + c) * w..][..w];
            o.fill(0.0);
            for k in 0..kdim {
                let coef = mat[c * kdim + k];
                if coef != 0.0 {
                    let src = &inp[(i * kdim + k) * w..][..w];
                    for (a, &b) in o.iter_mut().zip(src) {
                        *a += coef * b;
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: used only for disjoint per-channel writes in the input transform.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
