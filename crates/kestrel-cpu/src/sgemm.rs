//! Packed, cache-blocked SGEMM driving the microkernels of [`crate::ukernel`].
//!
//! `C[M×N] = A[M×K] · B[K×N]`. A (the weights, constant) is packed once at preparation
//! ([`PackedA`]); B is packed per call, one `KC × NC` block at a time, by a [`BSource`]: a dense
//! matrix, or — for convolution — the input image itself, unfolded on the fly into the block
//! (so the k²-times larger im2col matrix never exists in memory). Work is split over (M, N)
//! chunks on the rayon pool; each task packs into a thread-local buffer that stays in L2.

use crate::ukernel::{Post, Ukernel};

/// Bias rows for epilogues without a bias (the widest MR).
static ZERO_BIAS: [f32; 16] = [0.0; 16];
use rayon::prelude::*;
use std::cell::RefCell;

/// Depth of one packed block (B block `KC × NC` ≈ 384 KiB fits L2; an A panel `MR × KC` fits L1).
pub const KC: usize = 256;
/// Columns of one packed B block (a multiple of every NR).
pub const NC: usize = 384;

/// A packed into MR-row panels, each `K × MR` (k-major), zero-padded to whole panels.
#[derive(Clone, Debug)]
pub struct PackedA {
    pub m: usize,
    pub k: usize,
    mr: usize,
    data: PackedData,
}

/// Storage of the packed panels: `f32`, or `f16` widened one `MR × KC` panel at a time just
/// before the microkernel reads it (arithmetic stays `f32`).
#[derive(Clone, Debug)]
enum PackedData {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl PackedA {
    /// Packs row-major `a` (`m × k`, row stride `lda`) for microkernel `uk`.
    pub fn new(a: &[f32], m: usize, k: usize, lda: usize, uk: &Ukernel) -> Self {
        let mr = uk.mr;
        let panels = m.div_ceil(mr);
        let mut data = vec![0f32; panels * k * mr];
        for p in 0..panels {
            for kk in 0..k {
                for i in 0..mr {
                    let row = p * mr + i;
                    if row < m {
                        data[(p * k + kk) * mr + i] = a[row * lda + kk];
                    }
                }
            }
        }
        PackedA {
            m,
            k,
            mr,
            data: PackedData::F32(data),
        }
    }

    /// The same panels stored in half precision (values rounded to nearest `f16`): half the
    /// memory and half the bytes streamed per use.
    pub fn into_f16(self) -> Self {
        let data = match self.data {
            PackedData::F32(v) => {
                let mut h = vec![half::f16::ZERO; v.len()];
                crate::fp16::f32_to_f16(&v, &mut h);
                PackedData::F16(h)
            }
            d => d,
        };
        PackedA { data, ..self }
    }

    /// The panels as raw `f16` bits, when stored in half precision.
    pub fn f16_bits(&self) -> Option<&[u16]> {
        use half::slice::HalfFloatSliceExt;
        match &self.data {
            PackedData::F16(h) => Some(h.reinterpret_cast()),
            PackedData::F32(_) => None,
        }
    }

    /// Rows per panel.
    pub fn mr(&self) -> usize {
        self.mr
    }

    /// Whether the panels are stored in half precision.
    pub fn is_f16(&self) -> bool {
        matches!(self.data, PackedData::F16(_))
    }

    /// Bytes held by the packed panels.
    pub fn bytes(&self) -> usize {
        match &self.data {
            PackedData::F32(v) => v.len() * 4,
            PackedData::F16(v) => v.len() * 2,
        }
    }

    /// Start of panel `p` at depth `k0` (f32 storage only).
    pub(crate) fn panel_ptr(&self, p: usize, k0: usize) -> *const f32 {
        match &self.data {
            PackedData::F32(v) => v[(p * self.k + k0) * self.mr..].as_ptr(),
            PackedData::F16(_) => unreachable!("f16 panels are widened first, see TileCtx::tiles"),
        }
    }

    /// Widens panels `p0..p1` at depths `k0..k0+kc` into `dst` (`(p1-p0) × kc × MR` floats,
    /// panel after panel) when stored in half precision and says so; `false` (nothing done) for f32
    /// storage.
    pub(crate) fn widen_panels(
        &self,
        p0: usize,
        p1: usize,
        k0: usize,
        kc: usize,
        dst: &mut Vec<f32>,
    ) -> bool {
        let PackedData::F16(h) = &self.data else {
            return false;
        };
        let len = kc * self.mr;
        if dst.len() < (p1 - p0) * len {
            dst.resize((p1 - p0) * len, 0.0);
        }
        let path = crate::fp16::convert_path();
        for p in p0..p1 {
            let src = &h[(p * self.k + k0) * self.mr..][..len];
            crate::fp16::f16_to_f32_on(path, src, &mut dst[(p - p0) * len..][..len]);
        }
        true
    }
}

/// Provides B to the GEMM by packing blocks of it.
pub trait BSource: Sync {
    /// Packs `B[k0..k0+kc, n0..n0+nc]` as NR-wide panels: panel `j` (columns `n0 + j*NR ..`) is
    /// `kc × NR`, k-major, at `dst[j * kc * NR ..]`; columns past `nc` are zero.
    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, nr: usize, dst: &mut [f32]);
}

/// A dense row-major B (`k × n`, row stride `ld`).
pub struct DenseB<'a> {
    pub data: &'a [f32],
    pub ld: usize,
}

impl BSource for DenseB<'_> {
    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        let panels = nc.div_ceil(nr);
        for kk in 0..kc {
            let row = &self.data[(k0 + kk) * self.ld + n0..][..nc];
            for p in 0..panels {
                let d = &mut dst[(p * kc + kk) * nr..][..nr];
                let lo = p * nr;
                let hi = (lo + nr).min(nc);
                d[..hi - lo].copy_from_slice(&row[lo..hi]);
                d[hi - lo..].fill(0.0);
            }
        }
    }
}

/// Raw pointer to C shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);
impl CPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: tasks write disjoint (row range × column range) regions of C, see `gemm`.
unsafe impl Send for CPtr {}
// SAFETY: as above.
unsafe impl Sync for CPtr {}

thread_local! {
    /// Per-worker buffer for one packed B block.
    static PACK_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-worker buffer for A panels widened from half precision.
    static WIDE_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's buffer for a whole packed B (small-image path); taken out while in
    /// use, so a nested call would simply allocate its own.
    static SHARED_BUF: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `(lo, hi)` when an activation is a clamp kernels can fuse into their stores: none
/// (`-inf, inf`), Relu (`0, inf`), Clip (`min, max`).
pub(crate) fn clamp_of(act: Option<kestrel_core::ops::Unary>) -> Option<(f32, f32)> {
    use kestrel_core::ops::Unary;
    match act {
        None => Some((f32::NEG_INFINITY, f32::INFINITY)),
        Some(Unary::Relu) => Some((0.0, f32::INFINITY)),
        Some(Unary::Clip { min, max }) if min <= max => Some((min, max)),
        _ => None,
    }
}

/// What to apply to each finished tile of C while it is still in cache.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Added to every element of row `i` (one value per row of C).
    pub row_bias: Option<&'a [f32]>,
    pub activation: Option<kestrel_core::ops::Unary>,
    /// A PRelu with one slope per row of C (a per-channel PRelu after a convolution), applied
    /// after the bias; `activation` must then be `None`.
    pub row_slope: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// `(lo, hi)` when the activation is a clamp the microkernels can fuse (none, Relu, Clip).
    fn clamp(&self) -> Option<(f32, f32)> {
        clamp_of(self.activation)
    }

    fn is_noop(&self) -> bool {
        self.row_bias.is_none() && self.activation.is_none() && self.row_slope.is_none()
    }

    /// The activation of row `row`: the per-row PRelu as a leaky Relu of that row's slope, or
    /// the common activation.
    pub(crate) fn activation_of(&self, row: usize) -> Option<kestrel_core::ops::Unary> {
        match self.row_slope {
            Some(s) => Some(kestrel_core::ops::Unary::LeakyRelu { alpha: s[row] }),
            None => self.activation,
        }
    }

    /// The per-row slopes of rows `row0 .. row0 + n`.
    pub(crate) fn slopes(&self, row0: usize, n: usize) -> Option<&[f32]> {
        self.row_slope.map(|s| &s[row0..row0 + n])
    }

    /// Applies to `len` floats of row `row` at `p`.
    ///
    /// # Safety
    /// `p` is valid for `len` reads and writes.
    pub(crate) unsafe fn apply(&self, row: usize, p: *mut f32, len: usize) {
        // SAFETY: forwarded contract.
        let s = unsafe { std::slice::from_raw_parts_mut(p, len) };
        crate::simd::bias_activation(
            s,
            self.row_bias.map_or(0.0, |b| b[row]),
            self.activation_of(row),
        );
    }
}

/// `C (M × N, row stride ldc) = A · B`, overwriting C. `b` provides `K × N`.
pub fn gemm(a: &PackedA, b: &dyn BSource, n: usize, c: &mut [f32], ldc: usize, uk: &Ukernel) {
    gemm_with(a, b, n, c, ldc, uk, Epilogue::default())
}

/// [`gemm`] with an epilogue applied to each tile after its last K block.
pub fn gemm_with(
    a: &PackedA,
    b: &dyn BSource,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    uk: &Ukernel,
    epi: Epilogue,
) {
    let (m, k) = (a.m, a.k);
    if m == 0 || n == 0 {
        return; // nothing to compute (an empty C, e.g. a convolution with no output channels)
    }
    assert!(c.len() >= (m - 1) * ldc + n, "C too small");
    if k == 0 {
        for r in 0..m {
            c[r * ldc..r * ldc + n].fill(0.0);
            // SAFETY: row r holds n floats.
            unsafe { epi.apply(r, c[r * ldc..].as_mut_ptr(), n) };
        }
        return;
    }
    let (mr, nr) = (uk.mr, uk.nr);
    let n_chunks = n.div_ceil(NC);
    let threads = rayon::current_num_threads().max(1);
    let m_panels = m.div_ceil(mr);
    let cptr = CPtr(c.as_mut_ptr());
    let ctx = TileCtx {
        a,
        uk,
        epi,
        cptr,
        ldc,
        m,
        k,
    };
    if n_chunks >= 2 * threads || threads == 1 {
        // many column blocks: one task per block, each packing its own B into a thread-local
        // buffer that stays in L2 (one fork-join per GEMM)
        (0..n_chunks)
            .into_par_iter()
            .for_each(|ni| ctx.column_block(b, n, ni, m_panels));
    } else {
        // few columns (small images): packing B costs as much as a thin slice of the arithmetic,
        // so pack all of it once, in parallel, then split the rows of A over the threads
        // (two fork-joins per GEMM)
        // layout: k-block after k-block, each `kc × (all panels)`; every panel is written whole
        // (zero padding included), so the reused buffer needs no clearing
        let npan_all = n.div_ceil(nr);
        let kblocks = k.div_ceil(KC);
        let block = KC * npan_all * nr;
        let mut guard = SHARED_BUF.with(|b| b.take());
        if guard.len() < k * npan_all * nr {
            guard.resize(k * npan_all * nr, 0.0);
        }
        let full = k / KC; // k-blocks of depth KC; a last, shorter one follows when k % KC != 0
        guard[..full * block]
            .par_chunks_mut(KC * nr)
            .enumerate()
            .for_each(|(idx, panel)| {
                let (kb, j) = (idx / npan_all, idx % npan_all);
                let c0 = j * nr;
                b.pack(kb * KC, KC, c0, nr.min(n - c0), nr, panel);
            });
        let tail = k - full * KC;
        if tail > 0 {
            guard[full * block..full * block + tail * npan_all * nr]
                .par_chunks_mut(tail * nr)
                .enumerate()
                .for_each(|(j, panel)| {
                    let c0 = j * nr;
                    b.pack(full * KC, tail, c0, nr.min(n - c0), nr, panel);
                });
        }
        let packed = &guard[..];
        let m_chunks = (2 * threads).div_ceil(n_chunks).clamp(1, m_panels);
        let per = m_panels.div_ceil(m_chunks);
        let m_chunks = m_panels.div_ceil(per);
        (0..m_chunks * n_chunks).into_par_iter().for_each(|task| {
            let (mi, ni) = (task / n_chunks, task % n_chunks);
            let (p0, p1) = (mi * per, ((mi + 1) * per).min(m_panels));
            let n0 = ni * NC;
            let nc = NC.min(n - n0);
            for kb in 0..kblocks {
                let k0 = kb * KC;
                let kc = KC.min(k - k0);
                let start = kb * block + (n0 / nr) * kc * nr;
                ctx.tiles(
                    p0,
                    p1,
                    n0,
                    nc,
                    k0,
                    kc,
                    &packed[start..start + nc.div_ceil(nr) * kc * nr],
                );
            }
        });
        SHARED_BUF.with(|b| b.replace(guard));
    }
}

/// [`gemm_with`] on the calling thread alone, into C at a raw pointer: for kernels that
/// already split their work over the pool (each task running its own small GEMMs on its own
/// rows of a shared output, e.g. [`crate::fused_block`]).
///
/// # Safety
/// `c` must be valid for reads and writes of `n` floats at each of `a.m` rows `ldc` apart,
/// and nothing else may access those floats during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_serial(
    a: &PackedA,
    b: &dyn BSource,
    n: usize,
    c: *mut f32,
    ldc: usize,
    uk: &Ukernel,
    epi: Epilogue,
) {
    let (m, k) = (a.m, a.k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for r in 0..m {
            // SAFETY: row r holds n floats (the caller's contract).
            unsafe {
                std::ptr::write_bytes(c.add(r * ldc), 0, n);
                epi.apply(r, c.add(r * ldc), n);
            }
        }
        return;
    }
    let ctx = TileCtx {
        a,
        uk,
        epi,
        cptr: CPtr(c),
        ldc,
        m,
        k,
    };
    for ni in 0..n.div_ceil(NC) {
        ctx.column_block(b, n, ni, m.div_ceil(uk.mr));
    }
}

/// Everything a task needs to compute tiles of C.
struct TileCtx<'a> {
    a: &'a PackedA,
    uk: &'a Ukernel,
    epi: Epilogue<'a>,
    cptr: CPtr,
    ldc: usize,
    m: usize,
    k: usize,
}

// SAFETY: the raw C pointer is only used for disjoint tiles (see `tiles`); the rest is shared
// read-only data.
unsafe impl Sync for TileCtx<'_> {}

impl TileCtx<'_> {
    /// Computes column block `ni` (columns `ni * NC ..`, at most `NC`) of all `m_panels` A
    /// panels, packing B into this thread's buffer one K block at a time.
    fn column_block(&self, b: &dyn BSource, n: usize, ni: usize, m_panels: usize) {
        let nr = self.uk.nr;
        let n0 = ni * NC;
        let nc = NC.min(n - n0);
        let npan = nc.div_ceil(nr);
        PACK_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < KC * npan * nr {
                buf.resize(KC * npan * nr, 0.0);
            }
            for k0 in (0..self.k).step_by(KC) {
                let kc = KC.min(self.k - k0);
                b.pack(k0, kc, n0, nc, nr, &mut buf[..kc * npan * nr]);
                self.tiles(0, m_panels, n0, nc, k0, kc, &buf[..kc * npan * nr]);
            }
        });
    }

    /// Computes the tiles of A panels `p0..p1` × columns `n0..n0+nc` for K block `k0..k0+kc`
    /// from the packed B block `bblock`. Callers give each task disjoint (panel, column) ranges.
    #[allow(clippy::too_many_arguments)]
    fn tiles(
        &self,
        p0: usize,
        p1: usize,
        n0: usize,
        nc: usize,
        k0: usize,
        kc: usize,
        bblock: &[f32],
    ) {
        let (mr, nr, ldc, m) = (self.uk.mr, self.uk.nr, self.ldc, self.m);
        let npan = nc.div_ceil(nr);
        let last = k0 + kc == self.k && !self.epi.is_noop();
        let fused_clamp = self.epi.clamp();
        let mut tile = [0f32; 16 * 32];
        let cbase = self.cptr.get();
        WIDE_A.with(|wide| {
            let mut wide = wide.borrow_mut();
            let widened = self.a.widen_panels(p0, p1, k0, kc, &mut wide);
            let a_panel = |p: usize| {
                if widened {
                    wide[(p - p0) * kc * mr..].as_ptr()
                } else {
                    self.a.panel_ptr(p, k0)
                }
            };
            // B micro-panel (kc x nr) stays in L1 while every A panel of the range streams past it
            for j in 0..npan {
                let bp = bblock[j * kc * nr..].as_ptr();
                let cols = nr.min(nc - j * nr);
                let col0 = n0 + j * nr;
                for p in p0..p1 {
                    let ap = a_panel(p);
                    let rows = mr.min(m - p * mr);
                    let row0 = p * mr;
                    let full = rows == mr && cols == nr;
                    // a bias + clamp epilogue of a full tile is fused into its last K block (in
                    // registers on AVX-512: for short sums the separate pass cost more than the
                    // arithmetic)
                    let fused = match (full && last, fused_clamp) {
                        (true, Some((lo, hi))) => {
                            let bias = match self.epi.row_bias {
                                Some(b) => &b[row0..row0 + mr],
                                None => &ZERO_BIAS[..mr],
                            };
                            // SAFETY: as for `run` below; `bias` holds mr values.
                            unsafe {
                                self.uk.run_post(
                                    kc,
                                    ap,
                                    bp,
                                    cbase.add(row0 * ldc + col0),
                                    ldc,
                                    k0 > 0,
                                    &Post::new(bias, lo, hi).with_slope(self.epi.slopes(row0, mr)),
                                )
                            };
                            true
                        }
                        _ => false,
                    };
                    if fused {
                        // done: computed, biased and clamped in one pass
                    } else if full {
                        // SAFETY: panels hold mr*kc and kc*nr floats; the tile rows row0..row0+mr,
                        // columns col0..col0+nr lie inside C and belong to this task only.
                        unsafe {
                            self.uk
                                .run(kc, ap, bp, cbase.add(row0 * ldc + col0), ldc, k0 > 0)
                        };
                    } else {
                        // edge tile: compute (its valid columns, narrower kernels where the
                        // path has them) into a local buffer, copy the valid part
                        // SAFETY: `tile` holds mr*nr <= 16*32 floats at stride nr.
                        unsafe { self.uk.run_edge(kc, ap, bp, tile.as_mut_ptr(), nr, cols) };
                        for r in 0..rows {
                            for q in 0..cols {
                                // SAFETY: (row0 + r, col0 + q) is inside C and this task's region.
                                unsafe {
                                    let dst = cbase.add((row0 + r) * ldc + col0 + q);
                                    let v = tile[r * nr + q];
                                    *dst = if k0 > 0 { *dst + v } else { v };
                                }
                            }
                        }
                    }
                    if last && !fused {
                        for r in 0..rows {
                            // SAFETY: the tile row lies inside this task's region of C.
                            unsafe {
                                self.epi
                                    .apply(row0 + r, cbase.add((row0 + r) * ldc + col0), cols)
                            };
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::SimdPath;

    use crate::gemm::tests::naive;

    #[test]
    fn packed_gemm_every_path_odd_shapes() {
        let mut paths = vec![SimdPath::Portable];
        let best = crate::simd::active_path();
        if best != SimdPath::Portable {
            paths.push(SimdPath::Avx2Fma);
        }
        if best == SimdPath::Avx512 {
            paths.push(SimdPath::Avx512);
        }
        for path in paths {
            let uk = Ukernel::for_path(path);
            for &(m, n, k) in &[
                (1, 1, 1),
                (3, 13, 7),
                (13, 127, 3),
                (9, 600, 300),
                (127, 33, 13),
                (64, 385, 257),
                // last tiles of every edge width class (AVX-512 `run_edge`: 1-8, 9-16, 17-24,
                // 25+ columns), over several K blocks
                (17, 49, 300),
                (8, 40, 9),
                (11, 45, 257),
                (24, 56, 5),
                (8, 60, 7),
                (9, 4, 270),
                (5, 20, 3),
            ] {
                let a: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1)
                    .collect();
                let b: Vec<f32> = (0..k * n)
                    .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.1)
                    .collect();
                let want = naive(m, n, k, &a, &b);
                let pa = PackedA::new(&a, m, k, k, &uk);
                let mut c = vec![f32::NAN; m * n];
                gemm(&pa, &DenseB { data: &b, ld: n }, n, &mut c, n, &uk);
                for i in 0..m * n {
                    assert!(
                        (c[i] - want[i]).abs() < 1e-3,
                        "{} {m}x{n}x{k} at {i}: {} vs {}",
                        uk.name,
                        c[i],
                        want[i]
                    );
                }
            }
        }
    }

    #[test]
    fn f16_panels_equal_f32_panels_of_rounded_weights() {
        let uk = Ukernel::active();
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 127, 3),
            (9, 600, 300),
            (127, 33, 13),
            (64, 385, 257),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.0137)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let mut ar = a.clone();
            crate::fp16::round_to_f16(&mut ar);
            let want_pa = PackedA::new(&ar, m, k, k, &uk);
            let half_pa = PackedA::new(&a, m, k, k, &uk).into_f16();
            assert!(half_pa.is_f16() && half_pa.bytes() * 2 == want_pa.bytes());
            let (mut c1, mut c2) = (vec![0f32; m * n], vec![0f32; m * n]);
            gemm(&want_pa, &DenseB { data: &b, ld: n }, n, &mut c1, n, &uk);
            gemm(&half_pa, &DenseB { data: &b, ld: n }, n, &mut c2, n, &uk);
            assert_eq!(c1, c2, "{m}x{n}x{k}");
        }
    }
}
