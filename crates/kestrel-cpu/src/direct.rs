//! Direct convolution: the GEMM microkernels read their B rows straight from the image, so no
//! im2col matrix and no packed copy of it ever exists.
//!
//! The input is copied once into a zero-padded, stride-phased buffer (skipped for unpadded 1x1
//! stride-1 layers, which read the input itself): for stride `s`, phase `(py, px)` holds the
//! padded pixels `(s*y + py, s*x + px)`. In that buffer every tap `(c, ky, kx)` of the kernel is a
//! *constant offset* from the output position, once output positions are numbered on a
//! "virtual" grid `oy * wq + ox` with the buffer's row width `wq >= ow` (the columns
//! `ox >= ow` are computed and thrown away). So row `k` of the B panel for the 32 virtual
//! positions `j0..j0+32` is simply the 32 floats at `buffer + offsets[k] + j0`: the microkernel
//! loads them with two unaligned vector loads (see [`crate::ukernel::Ukernel::run_indirect`]).
//!
//! Memory traffic: one copy of the input (vs. `k*k` copies for im2col and one packed copy per
//! column block for the packed implicit GEMM), plus, when the virtual grid is wider than the
//! output, one pass that compacts the result (fused with bias and activation).
//!
//! Invariants: `offsets[k] + j < buffer.len()` for every `k < K` and every virtual position `j`
//! of every tile the driver runs (the buffer carries zeroed slack past its last channel);
//! the weights are packed in `MR`-row panels exactly as for the packed GEMM.

use crate::sgemm::{Epilogue, PackedA, KC};
use crate::ukernel::{Post, Ukernel};
use kestrel_core::ops::conv::ConvGeometry;
use rayon::prelude::*;
use std::cell::RefCell;

/// How a 2-D convolution reads its input through the phased buffer.
#[derive(Clone, Debug)]
pub struct DirectLayout {
    /// Strides per axis (`sy, sx`): the phases are `(py, px)`, `py < sy`, `px < sx`.
    phases: [usize; 2],
    /// The phases some tap reads, in buffer order (a 1x1 stride-2 layer reads one of four).
    used: Vec<(usize, usize)>,
    /// Height and width of one phase plane.
    hq: usize,
    wq: usize,
    /// Channels per group.
    cig: usize,
    /// Floats of the buffer per group (`cig * phases * hq * wq`).
    group_len: usize,
    /// Length of the whole buffer, slack included.
    buffer_len: usize,
    /// Offset of tap `k = (c, ky, kx)` from the virtual output position, within a group.
    offsets: Vec<u32>,
    /// Virtual output positions (`oh * wq`).
    n_virtual: usize,
    /// `true` when the buffer is the input itself (unpadded 1x1 stride 1: `wq == ow`).
    in_place: bool,
}

impl DirectLayout {
    /// The layout for a 2-D geometry (`kernel[0] == input[0] == 1`), or `None` when the direct
    /// kernel does not apply (3-D, or offsets beyond `u32`).
    pub fn new(g: &ConvGeometry, nr: usize) -> Option<Self> {
        if g.kernel[0] != 1 || g.input[0] != 1 || g.output[0] != 1 || g.stride[0] != 1 {
            return None;
        }
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let [_, kh, kw] = g.kernel;
        let (sy, sx) = (g.stride[1], g.stride[2]);
        let (dy, dx) = (g.dilation[1], g.dilation[2]);
        let hp = ih + g.pad_begin[1] + g.pad_end[1];
        let wp = iw + g.pad_begin[2] + g.pad_end[2];
        let in_place = kh == 1
            && kw == 1
            && sy == 1
            && sx == 1
            && g.pad_begin[1..] == [0, 0]
            && g.pad_end[1..] == [0, 0];
        let (hq, wq) = (hp.div_ceil(sy), wp.div_ceil(sx));
        // taps must stay inside the buffer for the valid outputs
        if hq < oh || wq < ow {
            return None;
        }
        let cig = g.c_in_per_group();
        let plane = hq * wq;
        let mut used = Vec::new();
        for ky in 0..kh {
            for kx in 0..kw {
                let ph = ((ky * dy) % sy, (kx * dx) % sx);
                if !used.contains(&ph) {
                    used.push(ph);
                }
            }
        }
        let nphase = used.len();
        let mut offsets = Vec::with_capacity(cig * kh * kw);
        for c in 0..cig {
            for ky in 0..kh {
                for kx in 0..kw {
                    let (ty, tx) = (ky * dy, kx * dx);
                    let ph = (ty % sy, tx % sx);
                    let phase = used.iter().position(|&u| u == ph).expect("collected above");
                    let off = ((c * nphase + phase) * hq + ty / sy) * wq + tx / sx;
                    offsets.push(u32::try_from(off).ok()?);
                }
            }
        }
        let n_virtual = oh * wq;
        let group_len = cig * nphase * plane;
        let tiles = n_virtual.div_ceil(nr);
        let max_off = offsets.iter().copied().max().unwrap_or(0) as usize;
        // the last group's reads end at max_off + tiles * nr; slack keeps them inside
        let buffer_len = (g.group - 1) * group_len + (max_off + tiles * nr).max(group_len);
        u32::try_from(buffer_len).ok()?;
        Some(DirectLayout {
            phases: [sy, sx],
            used,
            hq,
            wq,
            cig,
            group_len,
            buffer_len,
            offsets,
            n_virtual,
            in_place,
        })
    }

    /// Whether B rows are read from the input itself (1x1 stride-1 unpadded), not a copy.
    pub fn is_in_place(&self) -> bool {
        self.in_place
    }

    /// Virtual output positions (`oh * row_width`).
    pub fn n_virtual(&self) -> usize {
        self.n_virtual
    }

    /// Width of a row of the virtual grid (`>= ow`).
    pub fn row_width(&self) -> usize {
        self.wq
    }

    /// Offset of each tap `k = (c, ky, kx)` of a group from the virtual output position.
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Floats of scratch one run needs (the phased buffer; none in place).
    pub fn scratch_elems(&self) -> usize {
        if self.in_place {
            0
        } else {
            self.buffer_len
        }
    }

    /// Copies one image's `C × H × W` input into the zero-padded, phased buffer.
    fn fill(&self, g: &ConvGeometry, x: &[f32], buf: &mut [f32]) {
        let [_, ih, iw] = g.input;
        let (pt, pl) = (g.pad_begin[1], g.pad_begin[2]);
        let [sy, sx] = self.phases;
        let (hq, wq) = (self.hq, self.wq);
        let nphase = self.used.len();
        let c_all = g.c_in;
        let used = c_all / self.cig * self.group_len;
        buf[used..].fill(0.0);
        buf[..used]
            .par_chunks_mut(nphase * hq * wq)
            .enumerate()
            .for_each(|(c, dst)| {
                let src = &x[c * ih * iw..][..ih * iw];
                for (slot, &(py, px)) in self.used.iter().enumerate() {
                    {
                        let plane = &mut dst[slot * hq * wq..][..hq * wq];
                        for (y, row) in plane.chunks_exact_mut(wq).enumerate() {
                            let iy = (y * sy + py) as isize - pt as isize;
                            if iy < 0 || iy >= ih as isize {
                                row.fill(0.0);
                                continue;
                            }
                            let srow = &src[iy as usize * iw..][..iw];
                            if sx == 1 {
                                // columns pl..pl+iw hold the row, the rest is padding
                                let lo = pl.min(wq);
                                let hi = (pl + iw).min(wq);
                                row[..lo].fill(0.0);
                                row[lo..hi].copy_from_slice(&srow[..hi - lo]);
                                row[hi..].fill(0.0);
                            } else {
                                for (xq, v) in row.iter_mut().enumerate() {
                                    let ix = (xq * sx + px) as isize - pl as isize;
                                    *v = if ix >= 0 && ix < iw as isize {
                                        srow[ix as usize]
                                    } else {
                                        0.0
                                    };
                                }
                            }
                        }
                    }
                }
            });
    }
}

thread_local! {
    /// Per-worker buffer for A panels widened from half precision.
    static WIDE_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-worker buffer for the packed B panel of a partial last tile.
    static TAIL_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-worker block of the virtual output (a group of tiles × the task's rows).
    static VIRTUAL_C: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// In-place layers with at most this many input channels run row panel by row panel (see
/// `Tiles::group`).
const PANEL_MAJOR_MAX_K: usize = 64;

/// Largest input (B, `K x positions` f32 bytes) for which panel-major layers split their output
/// rows rather than their tiles over threads (see `Tiles::run`). Measured at 2 threads
/// (examples/convbench.rs): 64 -> 384 at 14x14 0.114 -> 0.052 ms, 32 -> 192 at 28x28 0.069 ->
/// 0.048 ms; SqueezeNet's 64 -> 16 at 55x55 (774 KB of B) 0.042 -> 0.136 ms in the model if
/// split by rows.
const PANEL_SPLIT_MAX_B_BYTES: usize = 128 << 10;

/// Floats of virtual output one task keeps per group of tiles (fits L2 with the A panels).
const VIRTUAL_BLOCK: usize = 64 * 1024;

/// Raw output pointer shared by tasks that write disjoint parts of the output (here: row panel
/// × output positions, see `Tiles::run`; in [`crate::direct_small`]: channel block × pixels;
/// in the stem and depthwise row kernels: bands of output rows; in
/// [`crate::pointwise_narrow`] and [`crate::softmax`]: chunks of positions).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
impl SharedMut {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: every user hands each task a disjoint part of the output (see the type's doc).
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

/// Runs a direct convolution of one image: `x` the `C × H × W` input, `out` the
/// `C_out × OH × OW` output; `packed[g]` the group's weights, `epi` bias and activation;
/// `small[g]`, when given, the group's weights for the small-map kernel
/// ([`crate::direct_small`], used when [`crate::direct_small::applies`]); `residual`, when
/// given, a tensor laid out like `out` that is added before the activation (a fused Add).
#[allow(clippy::too_many_arguments)]
pub fn run_direct(
    layout: &DirectLayout,
    g: &ConvGeometry,
    packed: &[PackedA],
    small: Option<&[crate::direct_small::OcPanels]>,
    uk: &Ukernel,
    epi: Epilogue,
    residual: Option<&[f32]>,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let buf: &[f32] = if layout.in_place {
        x
    } else {
        if scratch.len() < layout.buffer_len {
            scratch.resize(layout.buffer_len, 0.0);
        }
        layout.fill(g, x, &mut scratch[..layout.buffer_len]);
        &scratch[..layout.buffer_len]
    };
    let [_, oh, ow] = g.output;
    let out_plane = oh * ow;
    let cog = g.c_out_per_group();
    for grp in 0..g.group {
        let og = &mut out[grp * cog * out_plane..][..cog * out_plane];
        let gepi = Epilogue {
            row_bias: epi.row_bias.map(|b| &b[grp * cog..(grp + 1) * cog]),
            activation: epi.activation,
            row_slope: epi.row_slope.map(|s| &s[grp * cog..(grp + 1) * cog]),
        };
        let gbuf = &buf[grp * layout.group_len..];
        let gres = residual.map(|r| &r[grp * cog * out_plane..][..cog * out_plane]);
        let clamp = crate::sgemm::clamp_of(gepi.activation);
        if let (Some(small), Some(bias), Some(c)) = (small, gepi.row_bias, clamp) {
            if crate::direct_small::applies(layout, clamp) {
                let [_, oh, ow] = g.output;
                crate::direct_small::run_group(
                    layout,
                    &small[grp],
                    bias,
                    c,
                    gres,
                    gbuf,
                    og,
                    oh,
                    ow,
                );
                continue;
            }
        }
        Tiles {
            layout,
            pa: &packed[grp],
            uk,
            epi: gepi,
            buf: gbuf,
            out: SharedMut(og.as_mut_ptr()),
            m: cog,
            ow,
            out_plane,
            pack_b: pack_tiles(),
            // with a residual, the activation (after the Add) is fused with it in registers
            clamp: crate::sgemm::clamp_of(gepi.activation),
            residual: gres,
        }
        .run();
    }
}

/// Whether tiles pack their B rows once for all row panels ([`Tiles::pack_b`]): off unless
/// `KESTREL_DIRECT_PACK=1` (for measuring).
///
/// Reading B straight from the image costs a little on every row panel (its rows are spread
/// over `K` channel planes); packing costs one copy per tile. Measured on this x86
/// (examples/convbench.rs, one thread): reading directly was as fast or faster on every
/// ResNet/MobileNet layer shape but one (1024->256 1x1 at 14x14, ~8%), so it is the default.
fn pack_tiles() -> bool {
    static PACK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PACK.get_or_init(|| std::env::var("KESTREL_DIRECT_PACK").as_deref() == Ok("1"))
}

/// One group's GEMM `out[m × positions] = A · B(buf)` over the virtual grid.
struct Tiles<'a> {
    layout: &'a DirectLayout,
    pa: &'a PackedA,
    uk: &'a Ukernel,
    epi: Epilogue<'a>,
    buf: &'a [f32],
    out: SharedMut,
    m: usize,
    ow: usize,
    out_plane: usize,
    /// Copy each tile's B rows into a contiguous panel once, for all row panels to read (see
    /// [`pack_tiles`]); else the microkernel reads them from the buffer.
    pack_b: bool,
    /// The activation as a clamp the microkernel can fuse (see `sgemm::clamp_of`); with a
    /// residual, the activation that follows the Add (fused after the residual).
    clamp: Option<(f32, f32)>,
    /// A tensor laid out like the output, added before the activation (a fused residual Add).
    residual: Option<&'a [f32]>,
}

// SAFETY: the output pointer is only written in disjoint regions (see `run`); the rest is
// shared read-only data.
unsafe impl Sync for Tiles<'_> {}

impl Tiles<'_> {
    /// Splits (tiles × row panels) over tasks and runs them.
    fn run(&self) {
        let (mr, nr) = (self.uk.mr, self.uk.nr);
        let n = self.layout.n_virtual;
        let tiles = n.div_ceil(nr);
        let panels = self.m.div_ceil(mr);
        if self.m == 0 || n == 0 {
            return;
        }
        let threads = rayon::current_num_threads().max(1);
        // split tiles over tasks; split the panels too when tiles are few
        let want = 4 * threads;
        let t_chunks = if self.panel_major()
            && threads > 1
            && tiles < 4 * want
            && self.pa.k * n * 4 <= PANEL_SPLIT_MAX_B_BYTES
        {
            // short sums on small maps are bound by their stores: each task takes whole output
            // rows (a range of row panels over every tile), so tasks never write parts of one
            // row (sharing its cache lines) and each row is one sequential stream; every task
            // reads all of B, which is small enough to stay in cache (on large maps B would be
            // streamed once per task: there tiles are split)
            1
        } else {
            tiles.min(want)
        };
        let p_chunks = want.div_ceil(t_chunks).min(panels).max(1);
        let (t_per, p_per) = (tiles.div_ceil(t_chunks), panels.div_ceil(p_chunks));
        let (t_chunks, p_chunks) = (tiles.div_ceil(t_per), panels.div_ceil(p_per));
        (0..t_chunks * p_chunks).into_par_iter().for_each(|task| {
            let (ti, pi) = (task / p_chunks, task % p_chunks);
            let (t0, t1) = (ti * t_per, ((ti + 1) * t_per).min(tiles));
            let (p0, p1) = (pi * p_per, ((pi + 1) * p_per).min(panels));
            // tiles per group: the group's virtual block stays in L2 until compacted
            let per_group = (VIRTUAL_BLOCK / ((p1 - p0) * mr * nr)).max(1);
            for ga in (t0..t1).step_by(per_group) {
                self.group(ga, (ga + per_group).min(t1), p0, p1);
            }
        });
    }

    /// Whether [`Tiles::group`] runs panel by panel over all tiles (short sums on an exact grid).
    fn panel_major(&self) -> bool {
        self.exact() && self.pa.k <= KC && self.pa.k <= PANEL_MAJOR_MAX_K
    }

    /// Whether the virtual grid is the output grid (`wq == ow`: read in place, or a strided
    /// 1x1 layer's phase copy), so tiles store straight into the output.
    fn exact(&self) -> bool {
        self.layout.wq == self.ow
    }

    /// Computes tiles `ga..gb` × panels `p0..p1` over the whole K, then stores them.
    fn group(&self, ga: usize, gb: usize, p0: usize, p1: usize) {
        let (mr, nr) = (self.uk.mr, self.uk.nr);
        let k = self.pa.k;
        let n = self.layout.n_virtual;
        let in_place = self.layout.in_place;
        let exact = self.exact();
        let vrows = (p1 - p0) * mr;
        let ldv = (gb - ga) * nr;
        WIDE_A.with(|wide| {
            VIRTUAL_C.with(|vc| {
                let mut wide = wide.borrow_mut();
                let mut vc = vc.borrow_mut();
                if !exact && vc.len() < vrows * ldv {
                    vc.resize(vrows * ldv, 0.0);
                }
                for k0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - k0);
                    let last = k0 + kc == k;
                    let widened = self.pa.widen_panels(p0, p1, k0, kc, &mut wide);
                    // row panel p of this K block: widened from f16, or the packed f32 one
                    let a_panel = |wide: &Vec<f32>, p: usize| {
                        if widened {
                            wide[(p - p0) * kc * mr..].as_ptr()
                        } else {
                            self.pa.panel_ptr(p, k0)
                        }
                    };
                    let offs = &self.layout.offsets[k0..k0 + kc];
                    if exact && kc == k && k <= PANEL_MAJOR_MAX_K {
                        // short sums (1x1 expansions of 16-64 channels) are bound by their
                        // stores: one row panel at a time over all tiles writes 8 output rows
                        // as 8 sequential streams instead of every panel's rows at once
                        for p in p0..p1 {
                            let ap = a_panel(&wide, p);
                            let row0 = p * mr;
                            let rows = mr.min(self.m - row0);
                            for t in ga..gb {
                                let j0 = t * nr;
                                let cols = nr.min(n - j0);
                                let packed_b = cols < nr || self.pack_b;
                                if packed_b {
                                    self.pack_tail(offs, j0, cols);
                                }
                                self.exact_tile(
                                    kc, ap, offs, j0, rows, cols, row0, false, true, packed_b,
                                );
                            }
                        }
                        continue;
                    }
                    for t in ga..gb {
                        let j0 = t * nr;
                        let cols = nr.min(n - j0);
                        // in place, a partial last tile would read past the input: pack it
                        let packed_b = (in_place && cols < nr) || self.pack_b;
                        if packed_b {
                            self.pack_tail(offs, j0, cols);
                        }
                        for p in p0..p1 {
                            let ap = a_panel(&wide, p);
                            let row0 = p * mr;
                            let rows = mr.min(self.m - row0);
                            if exact {
                                self.exact_tile(
                                    kc,
                                    ap,
                                    offs,
                                    j0,
                                    rows,
                                    cols,
                                    row0,
                                    k0 > 0,
                                    last,
                                    packed_b,
                                );
                            } else {
                                let c = vc[(row0 - p0 * mr) * ldv + (t - ga) * nr..].as_mut_ptr();
                                self.kernel(packed_b, kc, ap, offs, j0, c, ldv, k0 > 0, None);
                            }
                        }
                    }
                }
                if !exact {
                    self.compact(
                        &vc,
                        ldv,
                        ga * nr,
                        (gb * nr).min(n),
                        p0 * mr,
                        (p1 * mr).min(self.m),
                    );
                }
            })
        });
    }

    /// Runs the microkernel on one tile: B from the tile's packed panel ([`Tiles::pack_tail`])
    /// when `packed_b`, else straight from the buffer at `j0`; C at `c` with stride `ldc`.
    #[allow(clippy::too_many_arguments)]
    fn kernel(
        &self,
        packed_b: bool,
        kc: usize,
        ap: *const f32,
        offs: &[u32],
        j0: usize,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        post: Option<&Post>,
    ) {
        if packed_b {
            TAIL_B.with(|tb| {
                let tb = tb.borrow();
                // SAFETY: the panel holds kc*nr floats (packed for this tile), A mr*kc; the
                // caller gives a C tile of mr rows of nr floats that belongs to this task.
                unsafe {
                    match post {
                        Some(post) => self.uk.run_post(kc, ap, tb.as_ptr(), c, ldc, acc, post),
                        None => self.uk.run(kc, ap, tb.as_ptr(), c, ldc, acc),
                    }
                }
            });
        } else {
            debug_assert!(offs
                .iter()
                .all(|&o| o as usize + j0 + self.uk.nr <= self.buf.len()));
            // SAFETY: unpacked tiles are full tiles, whose B rows the layout's invariant keeps
            // inside `buf` (asserted in debug builds); A and C as above.
            unsafe {
                self.uk
                    .run_indirect(kc, ap, self.buf.as_ptr().add(j0), offs, c, ldc, acc, post)
            };
        }
    }

    /// Packs the valid `cols` columns of a partial last tile's B rows (zero-filled to `nr`).
    fn pack_tail(&self, offs: &[u32], j0: usize, cols: usize) {
        let nr = self.uk.nr;
        TAIL_B.with(|tb| {
            let mut tb = tb.borrow_mut();
            if tb.len() < offs.len() * nr {
                tb.resize(offs.len() * nr, 0.0);
            }
            for (kk, &o) in offs.iter().enumerate() {
                let d = &mut tb[kk * nr..][..nr];
                let s = o as usize + j0;
                d[..cols].copy_from_slice(&self.buf[s..s + cols]);
                d[cols..].fill(0.0);
            }
        });
    }

    /// One tile written straight into the output (in-place layouts: the virtual grid is the
    /// output), through a local tile at the edges; bias + activation after the last K block.
    #[allow(clippy::too_many_arguments)]
    fn exact_tile(
        &self,
        kc: usize,
        ap: *const f32,
        offs: &[u32],
        j0: usize,
        rows: usize,
        cols: usize,
        row0: usize,
        acc: bool,
        last: bool,
        packed_b: bool,
    ) {
        let (mr, nr) = (self.uk.mr, self.uk.nr);
        let ldc = self.out_plane;
        let cbase = self.out.get();
        let full = rows == mr && cols == nr;
        if full {
            let zero = [0f32; 16];
            let post = match (last, self.clamp) {
                (true, Some((lo, hi))) => Some(Post {
                    bias: self
                        .epi
                        .row_bias
                        .map_or(&zero[..mr], |b| &b[row0..row0 + mr]),
                    lo,
                    hi,
                    // the residual is laid out like the output (same row stride)
                    residual: self
                        .residual
                        .map_or(std::ptr::null(), |r| r[row0 * ldc + j0..].as_ptr()),
                    slope: self.epi.slopes(row0, mr),
                }),
                _ => None,
            };
            let c = cbase.wrapping_add(row0 * ldc + j0);
            self.kernel(packed_b, kc, ap, offs, j0, c, ldc, acc, post.as_ref());
            if last && post.is_none() {
                for r in 0..rows {
                    // SAFETY: the tile row lies inside this task's region of the output.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(cbase.add((row0 + r) * ldc + j0), cols)
                    };
                    self.finish(row0 + r, (row0 + r) * ldc + j0, dst);
                }
            }
            return;
        }
        let mut tile = [0f32; 16 * 32];
        // a partial last tile (e.g. 169 = 5 x 32 + 9 positions, 49 = 32 + 17): the narrower
        // kernels the path has for its valid columns (`Ukernel::run_edge`), on the packed panel
        if packed_b {
            TAIL_B.with(|tb| {
                // SAFETY: the packed panel holds kc rows of nr floats, A an mr x kc panel; the
                // local tile holds mr rows of nr floats; cols <= nr.
                unsafe {
                    self.uk
                        .run_edge(kc, ap, tb.borrow().as_ptr(), tile.as_mut_ptr(), nr, cols)
                }
            });
        } else {
            self.kernel(
                packed_b,
                kc,
                ap,
                offs,
                j0,
                tile.as_mut_ptr(),
                nr,
                false,
                None,
            );
        }
        for r in 0..rows {
            // SAFETY: (row0 + r, j0..j0+cols) is inside the output and this task's region.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(cbase.add((row0 + r) * ldc + j0), cols) };
            let src = &tile[r * nr..][..cols];
            if acc {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
            } else {
                dst.copy_from_slice(src);
            }
            if last {
                self.finish(row0 + r, (row0 + r) * ldc + j0, dst);
            }
        }
    }

    /// The epilogue of finished outputs of row (channel) `row` starting at output index `at`
    /// (within the group): bias, then the residual, then the activation (the order of the
    /// fused epilogue, [`Post`], and of the unfused graph).
    fn finish(&self, row: usize, at: usize, dst: &mut [f32]) {
        let bias = self.epi.row_bias.map_or(0.0, |b| b[row]);
        match self.residual {
            Some(r) => {
                let len = dst.len();
                dst.iter_mut()
                    .zip(&r[at..at + len])
                    .for_each(|(d, v)| *d = (*d + bias) + v);
                crate::simd::bias_activation(dst, 0.0, self.epi.activation_of(row));
            }
            None => crate::simd::bias_activation(dst, bias, self.epi.activation_of(row)),
        }
    }

    /// Copies the valid positions `ja..jb` of rows `r0..r1` from the virtual block (row `r0`
    /// first, stride `ldv`, position `ja` first) into the output, with bias and activation.
    /// The valid positions of a range are contiguous in the output, so each row gets one
    /// epilogue call.
    fn compact(&self, vc: &[f32], ldv: usize, ja: usize, jb: usize, r0: usize, r1: usize) {
        let wq = self.layout.wq;
        let ow = self.ow;
        let base = self.out.get();
        // output index of the first valid position at or after `ja`
        let first = |j: usize| (j / wq) * ow + (j % wq).min(ow);
        let (d0, d1) = (first(ja), first(jb));
        if d1 == d0 {
            return;
        }
        for r in r0..r1 {
            let src = &vc[(r - r0) * ldv..];
            // SAFETY: output positions d0..d1 of row r lie inside the output and, for rows
            // r0..r1, belong to this task only (tasks own disjoint position and row ranges).
            let dst = unsafe {
                std::slice::from_raw_parts_mut(base.add(r * self.out_plane + d0), d1 - d0)
            };
            if wq == ow {
                dst.copy_from_slice(&src[..d1 - d0]);
            } else {
                let mut oy = ja / wq;
                while oy * wq < jb {
                    let lo = (oy * wq).max(ja);
                    let hi = (oy * wq + ow).min(jb);
                    if hi > lo {
                        let at = oy * ow + (lo - oy * wq) - d0;
                        dst[at..at + hi - lo].copy_from_slice(&src[lo - ja..hi - ja]);
                    }
                    oy += 1;
                }
            }
            self.finish(r, r * self.out_plane + d0, dst);
        }
    }
}
