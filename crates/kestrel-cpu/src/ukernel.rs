//! GEMM microkernels: `C[MR×NR] (+)= A_panel[MR×kc] · B_panel[kc×NR]` from packed panels.
//!
//! Naming follows the XNNPACK habit: `f32_gemm_<MR>x<NR>__<isa>`. One kernel per SIMD path;
//! [`Ukernel::for_path`] picks the one matching [`crate::simd::active_path`]. Packed layouts:
//! A panel = for each k, MR values; B panel = for each k, NR values (both zero-padded).

use crate::simd::SimdPath;

/// A microkernel with its tile shape.
#[derive(Clone, Copy, Debug)]
pub struct Ukernel {
    pub mr: usize,
    pub nr: usize,
    pub name: &'static str,
    path: SimdPath,
}

impl Ukernel {
    /// The kernel for a SIMD path.
    pub fn for_path(path: SimdPath) -> Ukernel {
        match path {
            SimdPath::Avx512 => Ukernel {
                mr: 8,
                nr: 32,
                name: "f32_gemm_8x32__avx512f",
                path,
            },
            SimdPath::Avx2Fma => Ukernel {
                mr: 6,
                nr: 16,
                name: "f32_gemm_6x16__avx2_fma",
                path,
            },
            SimdPath::Portable => Ukernel {
                mr: 4,
                nr: 16,
                name: "f32_gemm_4x16__portable",
                path,
            },
        }
    }

    /// The kernel for the active path.
    pub fn active() -> Ukernel {
        Ukernel::for_path(crate::simd::active_path())
    }

    /// Computes one full tile into `c` (row stride `ldc`): overwrite when `!acc`, else add.
    ///
    /// # Safety
    /// `a` holds `mr * kc` floats, `b` holds `kc * nr` floats, and `c` is valid for writes of
    /// `mr` rows of `nr` floats at stride `ldc`; the CPU supports this kernel's path.
    pub unsafe fn run(
        &self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        match self.path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: forwarded contract; the path was detected at run time.
            SimdPath::Avx512 => unsafe { x86::gemm_8x32_avx512(kc, a, b, c, ldc, acc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: forwarded contract; the path was detected at run time.
            SimdPath::Avx2Fma => unsafe { x86::gemm_6x16_avx2(kc, a, b, c, ldc, acc) },
            // SAFETY: forwarded contract.
            _ => unsafe { gemm_4x16_portable(kc, a, b, c, ldc, acc) },
        }
    }
}

impl Ukernel {
    /// At least the first `cols` columns of [`Ukernel::run`]'s tile (overwritten, no
    /// epilogue; columns past `cols` may hold anything), at the cost of the columns it needs
    /// where the path has narrower kernels. AVX-512: up to 8 columns by one 256-bit vector of
    /// the 8 rows per column, 9-16 by the 8x16 half kernel, 17-24 by both, 25+ by the full 8x32
    /// (a Winograd GEMM over 7x7 = 49 tiles has a last tile of 17 columns: 1.25 vector-widths
    /// of work instead of 2). Other paths run the full tile.
    ///
    /// # Safety
    /// As [`Ukernel::run`] (the whole `mr × nr` tile of `c` writable); `cols <= nr`.
    pub unsafe fn run_edge(
        &self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        debug_assert!(cols <= self.nr);
        match self.path {
            #[cfg(target_arch = "x86_64")]
            SimdPath::Avx512 if narrow_edges() => {
                // SAFETY: forwarded contract; the path was detected at run time; columns
                // 16.. of the 32-float B rows and of the tile are inside the panel and `c`.
                unsafe {
                    match cols {
                        0..=8 => x86::gemm_8xn_avx512(kc, a, b, 0, cols, c, ldc),
                        9..=16 => x86::gemm_8x16_avx512(kc, a, b, c, ldc),
                        17..=24 => {
                            x86::gemm_8x16_avx512(kc, a, b, c, ldc);
                            x86::gemm_8xn_avx512(kc, a, b, 16, cols - 16, c, ldc);
                        }
                        _ => x86::gemm_8x32_avx512(kc, a, b, c, ldc, false),
                    }
                }
            }
            // SAFETY: forwarded contract.
            _ => unsafe { self.run(kc, a, b, c, ldc, false) },
        }
    }
}

/// Whether [`Ukernel::run_edge`] uses the narrow kernels: yes unless `KESTREL_NARROW_EDGES=0`
/// (for measuring them; read once).
#[cfg(target_arch = "x86_64")]
fn narrow_edges() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KESTREL_NARROW_EDGES").map_or(true, |v| v != "0"))
}

/// A bias-and-clamp epilogue applied to a finished tile while it is still in registers:
/// `c = min(max((c + bias[row]) + residual, lo), hi)` (NaN kept: IEEE max/min with the value
/// second). Covers no activation (`lo = -inf, hi = inf`), Relu (`0, inf`) and Clip/Relu6, and a
/// fused residual Add (the residual added after the bias, as the unfused graph does).
#[derive(Clone, Copy, Debug)]
pub struct Post<'a> {
    /// One value per tile row (at least MR).
    pub bias: &'a [f32],
    pub lo: f32,
    pub hi: f32,
    /// Null, or the residual tile: laid out like C (same `ldc`), valid for `mr` rows of `nr`
    /// reads; added after the bias and before the clamp.
    pub residual: *const f32,
    /// A per-row PRelu slope (at least MR values): `x < 0 ? slope[row]·x : x` after the bias
    /// and residual, before the clamp (a per-channel PRelu fused into a convolution).
    pub slope: Option<&'a [f32]>,
}

impl<'a> Post<'a> {
    /// A bias + clamp epilogue without a residual.
    pub fn new(bias: &'a [f32], lo: f32, hi: f32) -> Post<'a> {
        Post {
            bias,
            lo,
            hi,
            residual: std::ptr::null(),
            slope: None,
        }
    }

    /// This epilogue with a per-row PRelu slope (see [`Post::slope`]).
    pub fn with_slope(self, slope: Option<&'a [f32]>) -> Self {
        Post { slope, ..self }
    }
}

impl Ukernel {
    /// [`Ukernel::run`] followed by `post` on the tile: fused into the store on the AVX-512
    /// path, applied to the tile right after it on the others.
    ///
    /// # Safety
    /// As [`Ukernel::run`]; `post.bias` holds at least `mr` values.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_post(
        &self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        post: &Post,
    ) {
        assert!(post.bias.len() >= self.mr, "one bias value per tile row");
        match self.path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: forwarded contract; the path was detected at run time.
            SimdPath::Avx512 => unsafe { x86::gemm_8x32_avx512_post(kc, a, b, c, ldc, acc, post) },
            _ => {
                // SAFETY: forwarded contract.
                unsafe {
                    self.run(kc, a, b, c, ldc, acc);
                    post_tile(c, ldc, self.mr, self.nr, post);
                }
            }
        }
    }
}

/// Where a microkernel finds row `k` of its B panel (`nr` contiguous floats).
///
/// # Safety
/// Implementations return pointers valid for `nr` reads for every `k < kc` of the call.
pub(crate) unsafe trait BRows: Copy {
    /// Pointer to row `k` (called with `k = 0, 1, ..` in order).
    fn row(self, k: usize) -> *const f32;
}

/// A packed panel: row `k` at `p + k * NR`.
#[derive(Clone, Copy)]
pub(crate) struct PackedRows<const NR: usize>(pub *const f32);

// SAFETY: the panel holds `kc * NR` floats (the kernel's contract).
unsafe impl<const NR: usize> BRows for PackedRows<NR> {
    #[inline(always)]
    fn row(self, k: usize) -> *const f32 {
        self.0.wrapping_add(k * NR)
    }
}

/// Rows read straight from an image: row `k` at `base + offsets[k]` (the direct convolution,
/// see [`crate::direct`]).
#[derive(Clone, Copy)]
pub(crate) struct IndirectRows {
    pub base: *const f32,
    pub offsets: *const u32,
}

// SAFETY: the caller of the indirect kernels guarantees `offsets` holds `kc` entries and every
// `base + offsets[k]` is valid for `nr` reads.
unsafe impl BRows for IndirectRows {
    #[inline(always)]
    fn row(self, k: usize) -> *const f32 {
        // SAFETY: see the impl's contract.
        unsafe { self.base.wrapping_add(*self.offsets.add(k) as usize) }
    }
}

impl Ukernel {
    /// [`Ukernel::run_post`] with B read straight from an image: row `k` of the `kc × nr` B
    /// panel is the `nr` floats at `base + offsets[k]`; `post` is applied when given.
    ///
    /// # Safety
    /// `a` holds `mr * kc` floats; `offsets` holds `kc` entries and `base + offsets[k]` is valid
    /// for `nr` reads for each; `c` as in [`Ukernel::run`]; `post.bias` holds `mr` values.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_indirect(
        &self,
        kc: usize,
        a: *const f32,
        base: *const f32,
        offsets: &[u32],
        c: *mut f32,
        ldc: usize,
        acc: bool,
        post: Option<&Post>,
    ) {
        assert!(offsets.len() >= kc, "one offset per k");
        let rows = IndirectRows {
            base,
            offsets: offsets.as_ptr(),
        };
        if let Some(p) = post {
            assert!(p.bias.len() >= self.mr, "one bias value per tile row");
        }
        match self.path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: forwarded contract; the path was detected at run time.
            SimdPath::Avx512 => unsafe {
                x86::gemm_8x32_avx512_rows(kc, a, rows, c, ldc, acc, post)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: forwarded contract; the path was detected at run time.
            SimdPath::Avx2Fma => unsafe {
                x86::gemm_6x16_avx2_rows(kc, a, rows, c, ldc, acc);
                if let Some(p) = post {
                    post_tile(c, ldc, 6, 16, p);
                }
            },
            // SAFETY: forwarded contract.
            _ => unsafe {
                gemm_4x16_portable_rows(kc, a, rows, c, ldc, acc);
                if let Some(p) = post {
                    post_tile(c, ldc, 4, 16, p);
                }
            },
        }
    }
}

/// `c = clamp((c + bias[row]) + residual, lo, hi)` on an `mr × nr` tile (see [`Post`]).
///
/// # Safety
/// `c` valid for `mr` rows of `nr` floats at stride `ldc`; `post.bias` holds `mr` floats;
/// `post.residual` null or valid like `c` for reads.
unsafe fn post_tile(c: *mut f32, ldc: usize, mr: usize, nr: usize, post: &Post) {
    let (lo, hi) = (post.lo, post.hi);
    for r in 0..mr {
        // SAFETY: the contract above.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), nr) };
        let res = (!post.residual.is_null())
            // SAFETY: the contract above: the residual tile is laid out like C.
            .then(|| unsafe { std::slice::from_raw_parts(post.residual.add(r * ldc), nr) });
        let b = post.bias[r];
        for (j, v) in row.iter_mut().enumerate() {
            let mut x = *v + b;
            if let Some(res) = res {
                x += res[j];
            }
            if let Some(s) = post.slope {
                if x < 0.0 {
                    x *= s[r];
                }
            }
            let x = if x < lo { lo } else { x };
            *v = if x > hi { hi } else { x };
        }
    }
}

/// Portable 4x16 kernel (plain loops; LLVM vectorises the inner loop).
///
/// # Safety
/// See [`Ukernel::run`].
unsafe fn gemm_4x16_portable(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) {
    // SAFETY: forwarded contract.
    unsafe { gemm_4x16_portable_rows(kc, a, PackedRows::<16>(b), c, ldc, acc) }
}

/// The portable kernel over any B row source.
///
/// # Safety
/// `a` holds `4 * kc` floats, `rows` gives `kc` valid rows of 16, `c` as in [`Ukernel::run`].
unsafe fn gemm_4x16_portable_rows<R: BRows>(
    kc: usize,
    a: *const f32,
    rows: R,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) {
    let mut t = [[0f32; 16]; 4];
    // SAFETY: the caller guarantees the panel size.
    let a = unsafe { std::slice::from_raw_parts(a, 4 * kc) };
    for k in 0..kc {
        // SAFETY: the row source's contract.
        let bk = unsafe { std::slice::from_raw_parts(rows.row(k), 16) };
        for (i, row) in t.iter_mut().enumerate() {
            let av = a[k * 4 + i];
            for j in 0..16 {
                row[j] = av.mul_add(bk[j], row[j]);
            }
        }
    }
    for (i, row) in t.iter().enumerate() {
        // SAFETY: the caller guarantees 4 rows of 16 writable floats at stride ldc.
        let cr = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), 16) };
        for j in 0..16 {
            cr[j] = if acc { cr[j] + row[j] } else { row[j] };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BRows, PackedRows, Post};
    use std::arch::x86_64::*;

    /// The 8x32 tile's 16 accumulators over `kc` steps (inlined into every AVX-512 kernel).
    ///
    /// # Safety
    /// `a` holds `8 * kc` floats and `rows` gives `kc` rows of 32; called only from avx512f
    /// functions.
    #[inline(always)]
    unsafe fn accumulate_8x32<R: BRows>(
        kc: usize,
        a: *const f32,
        rows: R,
    ) -> ([__m512; 8], [__m512; 8]) {
        // SAFETY: only called (and inlined) from avx512f functions (see the contract).
        let (mut c0, mut c1) = unsafe { ([_mm512_setzero_ps(); 8], [_mm512_setzero_ps(); 8]) };
        let mut ap = a;
        for k in 0..kc {
            // SAFETY: row k holds 32 floats; ap points into a kc x 8 panel.
            unsafe {
                let bp = rows.row(k);
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                for i in 0..8 {
                    let av = _mm512_set1_ps(*ap.add(i));
                    c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                    c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
                }
                ap = ap.add(8);
            }
        }
        (c0, c1)
    }

    /// Stores (or adds) the 8x32 tile, with `post` (bias, residual, clamp) first when given.
    ///
    /// # Safety
    /// `c` valid for 8 rows of 32 floats at stride `ldc`; `post` as in [`super::Post`] for an
    /// 8x32 tile; called only from avx512f functions.
    #[inline(always)]
    unsafe fn store_8x32(
        c0: [__m512; 8],
        c1: [__m512; 8],
        c: *mut f32,
        ldc: usize,
        acc: bool,
        post: Option<&Post>,
    ) {
        let (lo, hi, res) = post.map_or((0.0, 0.0, std::ptr::null()), |p| (p.lo, p.hi, p.residual));
        // SAFETY: inside avx512f functions (see the contract).
        let (vlo, vhi) = unsafe { (_mm512_set1_ps(lo), _mm512_set1_ps(hi)) };
        for i in 0..8 {
            // SAFETY: row i of the tile holds 32 writable floats; bias holds 8 floats; the
            // residual, when given, is laid out like the tile.
            unsafe {
                let cr = c.add(i * ldc);
                let (mut x0, mut x1) = (c0[i], c1[i]);
                if acc {
                    x0 = _mm512_add_ps(_mm512_loadu_ps(cr), x0);
                    x1 = _mm512_add_ps(_mm512_loadu_ps(cr.add(16)), x1);
                }
                if let Some(p) = post {
                    let bv = _mm512_set1_ps(*p.bias.get_unchecked(i));
                    x0 = _mm512_add_ps(x0, bv);
                    x1 = _mm512_add_ps(x1, bv);
                    if !res.is_null() {
                        let rr = res.add(i * ldc);
                        x0 = _mm512_add_ps(x0, _mm512_loadu_ps(rr));
                        x1 = _mm512_add_ps(x1, _mm512_loadu_ps(rr.add(16)));
                    }
                    if let Some(s) = p.slope {
                        // x < 0 (ordered: NaN is kept) -> slope x
                        let sv = _mm512_set1_ps(*s.get_unchecked(i));
                        let zero = _mm512_setzero_ps();
                        let n0 = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x0, zero);
                        let n1 = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x1, zero);
                        x0 = _mm512_mask_mul_ps(x0, n0, x0, sv);
                        x1 = _mm512_mask_mul_ps(x1, n1, x1, sv);
                    }
                    // max/min return their second operand when either is NaN: NaN is kept
                    x0 = _mm512_min_ps(vhi, _mm512_max_ps(vlo, x0));
                    x1 = _mm512_min_ps(vhi, _mm512_max_ps(vlo, x1));
                }
                _mm512_storeu_ps(cr, x0);
                _mm512_storeu_ps(cr.add(16), x1);
            }
        }
    }

    /// AVX-512 8x32: 16 zmm accumulators, two B vectors and one broadcast per k.
    ///
    /// # Safety
    /// See `Ukernel::run`; needs avx512f.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn gemm_8x32_avx512(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        // SAFETY: forwarded contract (panel sizes), inside an avx512f function.
        unsafe {
            let (c0, c1) = accumulate_8x32(kc, a, PackedRows::<32>(b));
            store_8x32(c0, c1, c, ldc, acc, None);
        }
    }

    /// The left half of [`gemm_8x32_avx512`]'s tile: 8 zmm accumulators over the first 16
    /// floats of each B row (row stride 32), stored without epilogue.
    ///
    /// # Safety
    /// `a` holds `8 * kc` floats, `b` holds `kc` rows of 32 floats, `c` is valid for 8 rows of
    /// 16 floats at stride `ldc`; needs avx512f.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn gemm_8x16_avx512(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [_mm512_setzero_ps(); 8];
        for k in 0..kc {
            // SAFETY: row k of B holds 32 floats, A a kc x 8 panel (see the contract).
            unsafe {
                let bv = _mm512_loadu_ps(b.add(k * 32));
                let ap = a.add(k * 8);
                for (i, r) in acc.iter_mut().enumerate() {
                    *r = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(i)), bv, *r);
                }
            }
        }
        for (i, r) in acc.iter().enumerate() {
            // SAFETY: row i of C holds 16 writable floats (see the contract).
            unsafe { _mm512_storeu_ps(c.add(i * ldc), *r) };
        }
    }

    /// Columns `col0 .. col0 + n` (n <= 8) of the 8x32 tile: per k, the A panel's 8 values
    /// as one 256-bit vector times each column's B value, one accumulator per column (the
    /// column's 8 rows); stored into those columns of `c` without epilogue.
    ///
    /// # Safety
    /// `a` holds `8 * kc` floats, `b` holds `kc` rows of 32 floats, `col0 + n <= 32`, `c` is
    /// valid for 8 rows of `col0 + n` floats at stride `ldc`; needs avx512f.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn gemm_8xn_avx512(
        kc: usize,
        a: *const f32,
        b: *const f32,
        col0: usize,
        n: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        debug_assert!(n <= 8 && col0 + n <= 32);
        // SAFETY: forwarded contract, inside an avx512f function.
        unsafe {
            match n {
                0 => {}
                1 => gemm_8xn_cols::<1>(kc, a, b.add(col0), c.add(col0), ldc),
                2 => gemm_8xn_cols::<2>(kc, a, b.add(col0), c.add(col0), ldc),
                3 => gemm_8xn_cols::<3>(kc, a, b.add(col0), c.add(col0), ldc),
                4 => gemm_8xn_cols::<4>(kc, a, b.add(col0), c.add(col0), ldc),
                5 => gemm_8xn_cols::<5>(kc, a, b.add(col0), c.add(col0), ldc),
                6 => gemm_8xn_cols::<6>(kc, a, b.add(col0), c.add(col0), ldc),
                7 => gemm_8xn_cols::<7>(kc, a, b.add(col0), c.add(col0), ldc),
                _ => gemm_8xn_cols::<8>(kc, a, b.add(col0), c.add(col0), ldc),
            }
        }
    }

    /// [`gemm_8xn_avx512`] for `N` columns starting at `b` / `c`.
    ///
    /// # Safety
    /// `a` holds `8 * kc` floats; `b.add(k * 32 + j)` is readable and `c.add(i * ldc + j)`
    /// writable for `k < kc`, `i < 8`, `j < N`; needs avx512f.
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn gemm_8xn_cols<const N: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [_mm256_setzero_ps(); N];
        for k in 0..kc {
            // SAFETY: A row k holds 8 floats, B row k 32 (see the contract).
            unsafe {
                let av = _mm256_loadu_ps(a.add(k * 8));
                let br = b.add(k * 32);
                for (j, r) in acc.iter_mut().enumerate() {
                    *r = _mm256_fmadd_ps(av, _mm256_set1_ps(*br.add(j)), *r);
                }
            }
        }
        let mut col = [0f32; 8];
        for (j, r) in acc.iter().enumerate() {
            // SAFETY: `col` holds 8 floats; c's rows 0..8 at column j are writable.
            unsafe {
                _mm256_storeu_ps(col.as_mut_ptr(), *r);
                for (i, v) in col.iter().enumerate() {
                    *c.add(i * ldc + j) = *v;
                }
            }
        }
    }

    /// [`gemm_8x32_avx512`] with `post` applied in registers before the store.
    ///
    /// # Safety
    /// See `Ukernel::run`; needs avx512f; `post` as in [`super::Post`] for an 8x32 tile.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn gemm_8x32_avx512_post(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        post: &Post,
    ) {
        // SAFETY: forwarded contract (panel sizes), inside an avx512f function.
        unsafe {
            let (c0, c1) = accumulate_8x32(kc, a, PackedRows::<32>(b));
            store_8x32(c0, c1, c, ldc, acc, Some(post));
        }
    }

    /// The 8x32 kernel over any B row source, `post` fused when given.
    ///
    /// # Safety
    /// `a` holds `8 * kc` floats, `rows` gives `kc` rows of 32, `c` as in `Ukernel::run`,
    /// `post` as in [`super::Post`] for an 8x32 tile; needs avx512f.
    #[target_feature(enable = "avx512f,fma")]
    pub(crate) unsafe fn gemm_8x32_avx512_rows<R: BRows>(
        kc: usize,
        a: *const f32,
        rows: R,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        post: Option<&Post>,
    ) {
        // SAFETY: forwarded contract, inside an avx512f function.
        unsafe {
            let (c0, c1) = accumulate_8x32(kc, a, rows);
            store_8x32(c0, c1, c, ldc, acc, post);
        }
    }

    /// AVX2 6x16: 12 ymm accumulators.
    ///
    /// # Safety
    /// See `Ukernel::run`; needs avx2 and fma.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm_6x16_avx2(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        // SAFETY: forwarded contract, inside an avx2 function.
        unsafe { gemm_6x16_avx2_rows(kc, a, PackedRows::<16>(b), c, ldc, acc) }
    }

    /// The AVX2 6x16 kernel over any B row source.
    ///
    /// # Safety
    /// `a` holds `6 * kc` floats, `rows` gives `kc` rows of 16, `c` as in `Ukernel::run`;
    /// needs avx2 and fma.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn gemm_6x16_avx2_rows<R: BRows>(
        kc: usize,
        a: *const f32,
        rows: R,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        let mut c0 = [_mm256_setzero_ps(); 6];
        let mut c1 = [_mm256_setzero_ps(); 6];
        let mut ap = a;
        for k in 0..kc {
            // SAFETY: row k holds 16 floats; ap points into a kc x 6 panel.
            unsafe {
                let bp = rows.row(k);
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for i in 0..6 {
                    let av = _mm256_broadcast_ss(&*ap.add(i));
                    c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
                    c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
                }
                ap = ap.add(6);
            }
        }
        for i in 0..6 {
            // SAFETY: row i of the tile holds 16 writable floats.
            unsafe {
                let cr = c.add(i * ldc);
                if acc {
                    _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), c0[i]));
                    _mm256_storeu_ps(cr.add(8), _mm256_add_ps(_mm256_loadu_ps(cr.add(8)), c1[i]));
                } else {
                    _mm256_storeu_ps(cr, c0[i]);
                    _mm256_storeu_ps(cr.add(8), c1[i]);
                }
            }
        }
    }
}
