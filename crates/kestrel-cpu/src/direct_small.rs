//! The direct convolution for small feature maps (7x7, 14x14), AVX-512: the roles of the
//! operands are swapped so that *output channels* fill the vectors and output pixels are
//! broadcast.
//!
//! [`crate::direct`] puts 32 output positions in a register tile's vectors; on a 7x7 map (49
//! positions, 63 on the virtual grid of a padded 3x3 layer) that wastes a quarter to a half of
//! every tile. Here a tile is 14 pixels × 32 output channels: per k, two weight vectors (the
//! weights packed `[channel block][k][32]` once at preparation) and 14 broadcasts of input
//! values read through the same per-tap offsets as [`crate::direct`], 28 accumulators. The
//! finished tile is written to the NCHW output with masked scatters (one per pixel and 16
//! channels, lanes `plane` apart), bias and clamp applied in registers; virtual positions that
//! are not outputs are simply not written, so no compaction pass is needed. The whole K is
//! summed in registers (no K blocking): a tile's weight panel (`K × 32` floats) stays in L2.

use crate::direct::DirectLayout;
use rayon::prelude::*;

/// Output channels per tile (two 16-lane vectors).
pub const OC: usize = 32;
/// Pixels per tile (broadcast rows).
pub const PIX: usize = 14;
/// The largest virtual grid this kernel is chosen for (7x7 and 14x14 maps, measured).
pub const MAX_POSITIONS: usize = 256;

/// One group's weights as `[channel block][k][OC]`, zero past the last channel.
#[derive(Clone, Debug)]
pub struct OcPanels {
    data: Vec<f32>,
    k: usize,
    m: usize,
}

impl OcPanels {
    /// Packs row-major weights `w` (`m × k`).
    pub fn new(w: &[f32], m: usize, k: usize) -> Self {
        let blocks = m.div_ceil(OC);
        let mut data = vec![0f32; blocks * k * OC];
        for oc in 0..m {
            for kk in 0..k {
                data[((oc / OC) * k + kk) * OC + oc % OC] = w[oc * k + kk];
            }
        }
        OcPanels { data, k, m }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// Columns (K) of the weights.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The weights back in row-major `m × k` order (the packing is a permutation).
    pub fn to_row_major(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.m * self.k];
        for oc in 0..self.m {
            for kk in 0..self.k {
                w[oc * self.k + kk] = self.data[((oc / OC) * self.k + kk) * OC + oc % OC];
            }
        }
        w
    }
}

/// Whether the small-map kernel runs a layer with this layout: AVX-512, a virtual grid of at
/// most [`MAX_POSITIONS`], and an activation the tile can apply as a clamp; except pointwise
/// layers with short sums (K <= [`SHORT_K`]) on 14x14-or-larger maps, where its scattered
/// stores cost more than the GEMM kernel's lost lanes (examples/convbench.rs, one thread:
/// 96->576 at 14x14 0.190 vs 0.158 ms, 64->384 0.095 vs 0.089; at 7x7, and with long sums,
/// the small-map kernel stays ahead: 960->160 0.099 vs 0.147, 384->64 0.060 vs 0.072).
pub fn applies(layout: &DirectLayout, clamp: Option<(f32, f32)>) -> bool {
    let short_pointwise =
        layout.is_in_place() && layout.offsets().len() <= SHORT_K && layout.n_virtual() >= 196;
    crate::simd::active_path() == crate::simd::SimdPath::Avx512
        && layout.n_virtual() <= MAX_POSITIONS
        && clamp.is_some()
        && !short_pointwise
}

/// Longest sum of a pointwise layer that the GEMM kernel runs instead (see [`applies`]).
const SHORT_K: usize = 128;

/// One group: `out` (`m` planes of `oh × ow`) from the filled buffer `buf` (the group's part
/// of the layout's buffer, or the input in place). `bias` holds `m` values, `clamp` the fused
/// activation, `residual` (laid out like `out`) is added before it when given.
///
/// When the virtual grid is wider than the output (a padded layer: 7x7 outputs on 9-wide
/// rows, 63 positions for 49 outputs), the taps of the output positions are first gathered
/// into a compact `K × (oh·ow)` buffer ([`compact_taps`]), so that no tile computes the padding
/// columns: 7x7 in 4 tiles of up to 14 pixels instead of 5 (`KESTREL_SMALL_COMPACT=0` keeps
/// the virtual grid, for measuring).
#[allow(clippy::too_many_arguments)]
pub fn run_group(
    layout: &DirectLayout,
    panels: &OcPanels,
    bias: &[f32],
    clamp: (f32, f32),
    residual: Option<&[f32]>,
    buf: &[f32],
    out: &mut [f32],
    oh: usize,
    ow: usize,
) {
    let (n, wq) = (layout.n_virtual(), layout.row_width());
    if wq > ow && n.div_ceil(PIX) > (oh * ow).div_ceil(PIX) && compact_enabled() {
        // taken out while in use: a nested call (work stolen while the tiles run) would
        // simply allocate its own
        let (mut taps, mut offs) = COMPACT.with(|c| c.take());
        compact_taps(layout.offsets(), buf, wq, oh, ow, &mut taps, &mut offs);
        let grid = Grid {
            n: oh * ow,
            wq: ow,
            offsets: &offs,
        };
        run_tiles(&grid, panels, bias, clamp, residual, &taps, out, oh, ow);
        COMPACT.with(|c| c.replace((taps, offs)));
    } else {
        let grid = Grid {
            n,
            wq,
            offsets: layout.offsets(),
        };
        run_tiles(&grid, panels, bias, clamp, residual, buf, out, oh, ow);
    }
}

thread_local! {
    /// The calling thread's compact taps and their offsets (see [`compact_taps`]).
    static COMPACT: std::cell::Cell<(Vec<f32>, Vec<u32>)> = const {
        std::cell::Cell::new((Vec::new(), Vec::new()))
    };
}

/// Whether padded small maps are compacted: yes unless `KESTREL_SMALL_COMPACT=0` (read once).
fn compact_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KESTREL_SMALL_COMPACT").map_or(true, |v| v != "0"))
}

/// Row `kk` of `taps` (`oh·ow` floats) = the values tap `kk` reads at each output position,
/// `buf[offsets[kk] + oy·wq + ox]`; `offs[kk] = kk·oh·ow`, so the tiles read the compact rows
/// exactly as they read the virtual grid.
fn compact_taps(
    offsets: &[u32],
    buf: &[f32],
    wq: usize,
    oh: usize,
    ow: usize,
    taps: &mut Vec<f32>,
    offs: &mut Vec<u32>,
) {
    let ne = oh * ow;
    let k = offsets.len();
    assert!(
        u32::try_from(k * ne).is_ok(),
        "compact taps addressable by 32-bit offsets"
    );
    taps.resize(k * ne, 0.0);
    offs.clear();
    offs.extend((0..k).map(|kk| (kk * ne) as u32));
    taps.par_chunks_mut(ne)
        .zip(offsets.par_iter())
        .with_min_len(64)
        .for_each(|(row, &off)| {
            for oy in 0..oh {
                let src = off as usize + oy * wq;
                row[oy * ow..][..ow].copy_from_slice(&buf[src..src + ow]);
            }
        });
}

/// The positions a group's tiles cover: `n` of them on rows `wq` wide (positions past `ow` in
/// a row are not outputs), tap `kk` of position `j` at `buf[offsets[kk] + j]`.
struct Grid<'a> {
    n: usize,
    wq: usize,
    offsets: &'a [u32],
}

/// [`run_group`] on a grid of positions (the layout's virtual grid or the compact one).
#[allow(clippy::too_many_arguments)]
fn run_tiles(
    grid: &Grid,
    panels: &OcPanels,
    bias: &[f32],
    clamp: (f32, f32),
    residual: Option<&[f32]>,
    buf: &[f32],
    out: &mut [f32],
    oh: usize,
    ow: usize,
) {
    let (n, wq) = (grid.n, grid.wq);
    let plane = oh * ow;
    let (m, k) = (panels.m, panels.k);
    assert!(
        out.len() >= m * plane && bias.len() >= m,
        "output and bias cover the channels"
    );
    assert!(
        residual.is_none_or(|r| r.len() >= m * plane),
        "residual shaped like the output"
    );
    let res_base = residual.map_or(0, |r| r.as_ptr() as usize);
    assert_eq!(grid.offsets.len(), k, "one offset per k");
    // every broadcast reads buf[offsets[k] + j] for a position j < n
    let max_off = grid.offsets.iter().copied().max().unwrap_or(0) as usize;
    assert!(max_off + n <= buf.len(), "taps stay inside the buffer");
    let tiles = n.div_ceil(PIX);
    let blocks = m.div_ceil(OC);
    let mut bias_pad = vec![0f32; blocks * OC];
    bias_pad[..m].copy_from_slice(&bias[..m]);
    // tasks write disjoint (channel block × pixel) sets of the output
    let optr = crate::direct::SharedMut(out.as_mut_ptr());
    // channel-block-major: consecutive tasks share a weight panel
    (0..blocks * tiles).into_par_iter().for_each(|task| {
        let (ob, t) = (task / tiles, task % tiles);
        let j0 = t * PIX;
        let pix = PIX.min(n - j0);
        // output index of each virtual position (-1: not an output)
        let mut dest = [-1isize; PIX];
        for (i, d) in dest.iter_mut().enumerate().take(pix) {
            let (oy, ox) = ((j0 + i) / wq, (j0 + i) % wq);
            if ox < ow {
                *d = (oy * ow + ox) as isize;
            }
        }
        // while this channel block's tiles compute, tile t pulls its share of the next block's
        // weight panel into the cache (a panel is read from memory once, by the block's first
        // tile otherwise: in a whole network the weights of a 7x7 layer, megabytes, are cold)
        let panel_lines = k * OC * 4 / 64;
        let share = panel_lines.div_ceil(tiles);
        let (pf, pf_lines) = if ob + 1 < blocks {
            let start = ((ob + 1) * k * OC + t * share * 16).min(panels.data.len());
            let lines = share.min(panels.data.len().saturating_sub(start) / 16);
            (panels.data[start..].as_ptr(), lines)
        } else {
            (panels.data.as_ptr(), 0)
        };
        let tile = Tile {
            residual: if res_base == 0 {
                std::ptr::null()
            } else {
                (res_base as *const f32).wrapping_add(ob * OC * plane)
            },
            prefetch: pf,
            prefetch_lines: pf_lines,
            k,
            a: buf[j0..].as_ptr(),
            offs: grid.offsets.as_ptr(),
            b: panels.data[ob * k * OC..].as_ptr(),
            bias: bias_pad[ob * OC..].as_ptr(),
            clamp,
            out: optr.get().wrapping_add(ob * OC * plane),
            plane,
            valid: (m - ob * OC).min(OC),
            dest: &dest,
        };
        // SAFETY: the avx512 path was detected (`applies`); the pointers cover what the tile
        // reads (asserted above: taps inside `buf`, K × OC weights, OC biases) and the scatters
        // write only this task's channel block at this tile's output pixels.
        unsafe { tile.run(pix) };
    });
}

/// Everything one tile needs (read by the x86-64 kernel only; `applies` is false elsewhere).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Tile<'a> {
    k: usize,
    /// The buffer at the tile's first virtual position.
    a: *const f32,
    offs: *const u32,
    /// `K × OC` weights of the channel block.
    b: *const f32,
    /// `OC` biases of the channel block.
    bias: *const f32,
    clamp: (f32, f32),
    /// The output at the block's first channel plane.
    out: *mut f32,
    plane: usize,
    /// Channels of the block that exist (`<= OC`).
    valid: usize,
    dest: &'a [isize; PIX],
    /// The residual at the block's first channel plane (laid out like `out`), or null.
    residual: *const f32,
    /// Cache lines (64 bytes) of upcoming weights to prefetch, one per k step.
    prefetch: *const f32,
    prefetch_lines: usize,
}

impl Tile<'_> {
    /// Runs the tile for `pix` pixels (1..=PIX).
    ///
    /// # Safety
    /// As stated at the call in [`run_group`].
    unsafe fn run(&self, pix: usize) {
        macro_rules! dispatch {
            ($($n:literal)*) => {
                match pix {
                    // SAFETY: forwarded contract.
                    $($n => unsafe { x86::tile::<$n>(self) },)*
                    _ => unreachable!("1..=PIX pixels"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    /// Never called: [`super::applies`] is false off x86-64.
    pub(super) unsafe fn tile<const P: usize>(_: &super::Tile) {
        unreachable!("the small-map kernel needs AVX-512")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, OC};
    use std::arch::x86_64::*;

    /// `P` pixels × 32 channels over the whole K, then bias, clamp and masked scatters.
    ///
    /// # Safety
    /// avx512f and fma present; the tile's pointers valid as [`super::run_group`] states.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn tile<const P: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); 2]; P];
        for kk in 0..t.k {
            if kk < t.prefetch_lines {
                // SAFETY: prefetching has no side effects; the address lies inside the panels
                // (`prefetch_lines` is clamped to them).
                unsafe { _mm_prefetch::<_MM_HINT_T1>(t.prefetch.add(kk * 16) as *const i8) };
            }
            // SAFETY: offs holds K entries; a + offs[kk] + i (i < P) lies inside the buffer;
            // b holds K × OC floats.
            unsafe {
                let p = t.a.add(*t.offs.add(kk) as usize);
                let b0 = _mm512_loadu_ps(t.b.add(kk * OC));
                let b1 = _mm512_loadu_ps(t.b.add(kk * OC + 16));
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*p.add(i));
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
            }
        }
        // SAFETY: bias holds OC floats.
        let (bv0, bv1) = unsafe { (_mm512_loadu_ps(t.bias), _mm512_loadu_ps(t.bias.add(16))) };
        let (lo, hi) = (_mm512_set1_ps(t.clamp.0), _mm512_set1_ps(t.clamp.1));
        let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(t.plane as i32));
        let mask = |first: usize| -> __mmask16 {
            let n = t.valid.saturating_sub(first).min(16);
            if n == 16 {
                0xffff
            } else {
                (1u16 << n) - 1
            }
        };
        let (m0, m1) = (mask(0), mask(16));
        for (i, row) in acc.iter().enumerate() {
            let d = t.dest[i];
            if d < 0 {
                continue;
            }
            let (mut s0, mut s1) = (_mm512_add_ps(row[0], bv0), _mm512_add_ps(row[1], bv1));
            if !t.residual.is_null() {
                // SAFETY: as for the scatters below, read from the residual (same layout).
                unsafe {
                    let r = t.residual.add(d as usize);
                    let zero = _mm512_setzero_ps();
                    s0 = _mm512_add_ps(
                        s0,
                        _mm512_mask_i32gather_ps::<4>(zero, m0, idx, r as *const _),
                    );
                    if m1 != 0 {
                        let r1 = r.add(16 * t.plane);
                        s1 = _mm512_add_ps(
                            s1,
                            _mm512_mask_i32gather_ps::<4>(zero, m1, idx, r1 as *const _),
                        );
                    }
                }
            }
            // max/min return their second operand when either is NaN: NaN is kept
            let v0 = _mm512_min_ps(hi, _mm512_max_ps(lo, s0));
            let v1 = _mm512_min_ps(hi, _mm512_max_ps(lo, s1));
            // SAFETY: lane l (< valid) writes out[l * plane + d] (block channel l, pixel d)
            // and out[(16 + l) * plane + d]: inside the group's output, this task's part.
            unsafe {
                let o = t.out.add(d as usize);
                _mm512_mask_i32scatter_ps::<4>(o as *mut _, m0, idx, v0);
                if m1 != 0 {
                    _mm512_mask_i32scatter_ps::<4>(o.add(16 * t.plane) as *mut _, m1, idx, v1);
                }
            }
        }
    }
}
