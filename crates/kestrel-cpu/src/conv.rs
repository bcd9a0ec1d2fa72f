//! Convolution kernels: im2col + GEMM (the baseline), 1x1 as a direct GEMM on the input,
//! and a direct depthwise kernel. All write bias and the fused activation in an epilogue.

use crate::sgemm::{gemm_with, BSource, DenseB, Epilogue, PackedA};
use crate::ukernel::Ukernel;
use kestrel_core::ops::conv::ConvGeometry;
use kestrel_core::ops::Unary;
use rayon::prelude::*;

/// User-selectable convolution algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConvAlgo {
    /// Pick per layer from its geometry.
    #[default]
    Auto,
    /// im2col + GEMM for every layer (the memory-hungry baseline).
    Im2col,
    /// Direct convolution ([`crate::direct`]: the microkernel reads the image through per-tap
    /// offsets, no im2col matrix) for every non-depthwise layer.
    Direct,
    /// The packed implicit GEMM: each cache block of the im2col matrix unfolded into a packed
    /// panel when the GEMM needs it (the kernel before the direct one; kept to measure it).
    ImplicitGemm,
    /// Winograd F(4x4,3x3) wherever it applies (3x3, stride 1, ungrouped), else direct.
    Winograd,
    /// Winograd F(2x2,3x3) wherever it applies, else direct.
    Winograd2,
    /// Winograd F(6x6,3x3) wherever it applies, else direct.
    Winograd6,
    /// FFT convolution wherever it applies (2-D, ungrouped, filter spectra within
    /// [`crate::fft::MAX_SPECTRA_BYTES`]), else direct ([`crate::fft`]).
    Fft,
    /// The plain reference loops from kestrel-core (for debugging; slow).
    Reference,
}

/// The algorithm a layer actually runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernelKind {
    Im2colGemm,
    /// Direct convolution: B rows read straight from a padded, stride-phased copy of the
    /// input ([`crate::direct`]).
    Direct,
    /// Input patches unfolded per cache block straight into the packed GEMM panel.
    ImplicitGemm,
    /// 1x1 stride-1 unpadded: a GEMM whose B rows are the input planes themselves.
    Pointwise,
    Depthwise,
    /// Few input channels (a first layer on an RGB image): [`crate::conv_stem`] (AVX-512).
    Stem,
    WinogradF2,
    WinogradF4,
    WinogradF6,
    Fft,
}

impl ConvKernelKind {
    pub fn name(self) -> &'static str {
        match self {
            ConvKernelKind::Im2colGemm => "im2col+gemm",
            ConvKernelKind::Direct => "direct",
            ConvKernelKind::ImplicitGemm => "implicit-gemm",
            ConvKernelKind::WinogradF2 => "winograd-f2x3",
            ConvKernelKind::WinogradF4 => "winograd-f4x3",
            ConvKernelKind::WinogradF6 => "winograd-f6x3",
            ConvKernelKind::Pointwise => "1x1-gemm",
            ConvKernelKind::Depthwise => "depthwise-direct",
            ConvKernelKind::Stem => "direct-stem",
            ConvKernelKind::Fft => "fft",
        }
    }
}

/// What [`crate::depthwise_rows`] needs of a depthwise layer: its plain `k × k` filters per
/// channel, bias, and clamp activation.
pub(crate) struct DepthwiseRows<'a> {
    pub(crate) weights: &'a [f32],
    pub(crate) bias: &'a [f32],
    pub(crate) clamp: (f32, f32),
}

/// A convolution prepared once per layer: geometry resolved, algorithm chosen, weights and bias
/// copied into the layout the kernel reads.
#[derive(Clone, Debug)]
pub struct PreparedConv {
    pub geom: ConvGeometry,
    pub kind: ConvKernelKind,
    /// `[group][c_out/group][c_in/group * kernel volume]`, i.e. the ONNX layout (read by the
    /// depthwise kernel).
    weights: Vec<f32>,
    /// Per group, the weights packed for the GEMM microkernel (empty for depthwise, and empty
    /// while `small` holds the only copy: then made from it at first need, see
    /// [`PreparedConv::packed`]).
    packed: Vec<PackedA>,
    packed_lazy: std::sync::OnceLock<Vec<PackedA>>,
    winograd: Option<crate::winograd::PreparedWinograd>,
    fft: Option<crate::fft::PreparedFft>,
    /// Filters packed for the few-input-channel kernel (Stem kind; x86-64 only).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    stem: Vec<f32>,
    /// Depthwise filters packed for the channel-blocked kernel (made at first use).
    dw_blocks: std::sync::OnceLock<Vec<f32>>,
    /// Weights for the small-map direct kernel, per group, when it applies to the layer.
    small: Option<Vec<crate::direct_small::OcPanels>>,
    /// Tap offsets of the direct kernel for the layer's own geometry (Direct and Pointwise).
    direct: Option<crate::direct::DirectLayout>,
    ukernel: Ukernel,
    bias: Vec<f32>,
    activation: Option<Unary>,
    /// A per-channel PRelu after the convolution, fused into the epilogue (see
    /// [`PreparedConv::fuse_prelu`]); `activation` is then `None`.
    prelu: Option<Vec<f32>>,
    /// fp16 arithmetic ([`crate::hgemm`]) while `true`; set to `false` for good when a partial
    /// sum overflows (the layer is then recomputed, and stays, in f32 arithmetic).
    arith16: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl PreparedConv {
    /// Stores the GEMM-packed weights in half precision (see
    /// [`crate::StoragePrecision::F16`]); depthwise and Winograd weights keep `f32` storage.
    /// The caller rounds the weights to `f16` before [`PreparedConv::new`] so that every
    /// algorithm computes with the same values.
    pub fn with_f16_weights(mut self) -> Self {
        // the small-map kernel streams f32 weights; f16 storage keeps one half-size copy
        let packed = self.packed().to_vec();
        self.small = None;
        self.packed_lazy = Default::default();
        self.packed = packed.into_iter().map(|p| p.into_f16()).collect();
        self
    }

    /// Switches the GEMM-based kinds to fp16 arithmetic ([`crate::hgemm`]; weights must already
    /// be f16, see [`PreparedConv::with_f16_weights`]). Returns `self` unchanged when the kind
    /// is not GEMM-based or the CPU lacks AVX512-FP16.
    pub fn with_f16_arith(mut self) -> Self {
        let gemm_kind = matches!(
            self.kind,
            ConvKernelKind::Direct
                | ConvKernelKind::ImplicitGemm
                | ConvKernelKind::Pointwise
                | ConvKernelKind::Im2colGemm
        );
        if gemm_kind
            && crate::hgemm::available()
            && self.has_f16_weights()
            && self.packed().iter().all(|p| p.mr() == crate::hgemm::HMR)
        {
            self.arith16 = Some(Default::default());
            if let Some(a) = &self.arith16 {
                a.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self
    }

    /// Fuses a per-channel PRelu (`slope[c]` for output channel `c`) into the layer's
    /// epilogue: each finished output gets the bias, then `x < 0 ? slope·x : x`, in registers
    /// where the kernel fuses its epilogue. Returns `false`, the layer unchanged, where it has
    /// an activation of its own, fp16 arithmetic, or a kind that cannot take it (the direct,
    /// packed GEMM and stem kinds can; Winograd, FFT, depthwise and the narrow pointwise
    /// kernel cannot).
    pub fn fuse_prelu(&mut self, slope: &[f32]) -> bool {
        let kind_ok = matches!(
            self.kind,
            ConvKernelKind::Direct
                | ConvKernelKind::Pointwise
                | ConvKernelKind::ImplicitGemm
                | ConvKernelKind::Im2colGemm
                | ConvKernelKind::Stem
        );
        if !kind_ok
            || self.activation.is_some()
            || self.narrow()
            || self.arith16.is_some()
            || slope.len() != self.geom.c_out
        {
            return false;
        }
        // the small-map kernel fuses clamps only: the direct kernel runs the layer instead
        if self.small.is_some() {
            let packed = self.packed().to_vec();
            self.small = None;
            self.packed_lazy = Default::default();
            self.packed = packed;
        }
        self.prelu = Some(slope.to_vec());
        true
    }

    /// Whether a PRelu is fused in (see [`PreparedConv::fuse_prelu`]).
    pub fn has_prelu(&self) -> bool {
        self.prelu.is_some()
    }

    /// `Some(true)` while the layer computes in fp16 arithmetic, `Some(false)` after an overflow
    /// sent it back to f32 arithmetic, `None` when it never used fp16 arithmetic.
    pub fn f16_arith_state(&self) -> Option<bool> {
        self.arith16
            .as_ref()
            .map(|a| a.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The layer's GEMM: fp16 arithmetic while enabled (recomputed in f32 on overflow), else f32.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        pa: &PackedA,
        b: &dyn BSource,
        n: usize,
        c: &mut [f32],
        ldc: usize,
        uk: &Ukernel,
        epi: Epilogue,
    ) {
        use std::sync::atomic::Ordering;
        if let Some(on) = &self.arith16 {
            if on.load(Ordering::Relaxed) {
                if crate::hgemm::hgemm(pa, b, n, c, ldc, epi) {
                    return;
                }
                on.store(false, Ordering::Relaxed);
            }
        }
        gemm_with(pa, b, n, c, ldc, uk, epi)
    }

    /// The GEMM-packed weights per group (made from the small-map copy at first need when that
    /// is the only one kept).
    fn packed(&self) -> &[PackedA] {
        match &self.small {
            Some(small) if self.packed.is_empty() => self.packed_lazy.get_or_init(|| {
                small
                    .iter()
                    .map(|p| {
                        let (m, k) = (self.geom.c_out_per_group(), p.k());
                        PackedA::new(&p.to_row_major(), m, k, k, &self.ukernel)
                    })
                    .collect()
            }),
            _ => &self.packed,
        }
    }

    /// Whether the weights the kernel streams are stored in half precision.
    pub fn has_f16_weights(&self) -> bool {
        // (the small-map copy is f32; asking must not build the packed copy)
        self.small.is_none() && self.packed.first().is_some_and(|p| p.is_f16())
    }

    /// Prepares a layer. `algo` forces im2col when asked; `Auto` picks pointwise for 1x1 stride-1
    /// unpadded layers and the direct kernel for 2-D depthwise layers.
    pub fn new(
        geom: ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        activation: Option<Unary>,
        algo: ConvAlgo,
    ) -> Self {
        Self::new_for(geom, weights, bias, activation, algo, false)
    }

    /// [`PreparedConv::new`]; with `regions` (plans that convolutional caching runs), `Auto`
    /// never picks a kind that cannot recompute regions (FFT: see
    /// [`PreparedConv::supports_regions`]) or that recomputes small ones slowly (Winograd).
    pub fn new_for(
        geom: ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        activation: Option<Unary>,
        algo: ConvAlgo,
        regions: bool,
    ) -> Self {
        let pointwise = geom.kernel == [1, 1, 1]
            && geom.stride == [1, 1, 1]
            && geom.pad_begin == [0, 0, 0]
            && geom.pad_end == [0, 0, 0];
        let depthwise =
            geom.is_depthwise() && geom.kernel[0] == 1 && geom.input[0] == 1 && geom.output[0] == 1;
        let wino = crate::winograd::applicable(&geom);
        // Winograd with the AVX-512 transforms, in bands of tiles. F(4x4,3x3) on maps of
        // 24x24+ with 32+ input / 64+ output channels, where it measured 1.3-2.2x faster than
        // the direct kernel (one thread: VGG-16 block3 256ch 56x56 25.4 -> 11.6 ms, ResNet
        // 64ch 56x56 1.67 -> 1.25, 128ch 28x28 1.69 -> 1.02, SqueezeNet 32 -> 128 at 27x27
        // 0.41 -> 0.31), but slower on 14x14 maps (too few tiles per GEMM: 256ch 1.69 ->
        // 1.88); F(2x2,3x3) there with 128+ channels (256ch 1.75 -> 1.45, VGG-16 block5 512ch
        // 7.0 -> 5.5; SqueezeNet's 13x13 layers: 48 -> 192 equal at 2 threads, not chosen;
        // 64 -> 256 0.55 -> 0.43 ms at 1 thread, 0.30-0.41 -> 0.27-0.41 at 2, chosen). Both
        // lose on 7x7 maps (512ch 2.4 -> 3.6 in F(2x2)) and with 16 input channels
        // (SqueezeNet 16 -> 64 at 55x55: 0.43 -> 0.53 in F(4x4)).
        // Plans for convolutional caching recompute small rectangles, where Winograd's transforms
        // do not pay: the VGG-16 trunk's cached frames (16% of the MACs, 2 threads) took 40 ms
        // with Winograd crops against 30 ms with the direct kernel; it still recomputes regions
        // when forced (`--conv-algo winograd`).
        let wino_auto = if regions {
            None
        } else {
            crate::winograd::auto_tile(&geom)
        };
        // FFT convolution pays from 9x9 kernels with 8+ input channels on (fftbench, one
        // thread: 9x9 32ch at 28² 0.60x the direct kernel's time, 11x11 16ch at 56² 0.53x,
        // 15x15 8ch 0.40x; 7x7 0.9-2.5x, 3x3 and 5x5 1.5-9.7x, and 11x11 on a 3-channel image
        // 1.15x: each output channel's inverse transform is not amortised over enough inputs):
        // chosen automatically there, stride 1, no dilation
        let fft_auto = !regions
            && geom.kernel[1] >= 9
            && geom.kernel[2] >= 9
            && geom.c_in >= 8
            && geom.stride == [1, 1, 1]
            && geom.dilation == [1, 1, 1]
            && crate::fft::applicable(&geom);
        let stem = stem_applies(&geom);
        let kind = match algo {
            ConvAlgo::Auto if pointwise => ConvKernelKind::Pointwise,
            ConvAlgo::Auto | ConvAlgo::Direct if stem => ConvKernelKind::Stem,
            ConvAlgo::Auto if wino_auto == Some(crate::winograd::WinogradTile::F4x3) => {
                ConvKernelKind::WinogradF4
            }
            ConvAlgo::Auto if wino_auto == Some(crate::winograd::WinogradTile::F2x3) => {
                ConvKernelKind::WinogradF2
            }
            ConvAlgo::Auto if wino_auto == Some(crate::winograd::WinogradTile::F6x3) => {
                ConvKernelKind::WinogradF6
            }
            ConvAlgo::Auto if fft_auto => ConvKernelKind::Fft,
            ConvAlgo::Winograd if wino => ConvKernelKind::WinogradF4,
            ConvAlgo::Winograd2 if wino => ConvKernelKind::WinogradF2,
            ConvAlgo::Winograd6 if wino => ConvKernelKind::WinogradF6,
            ConvAlgo::Winograd | ConvAlgo::Winograd2 | ConvAlgo::Winograd6 if depthwise => {
                ConvKernelKind::Depthwise
            }
            ConvAlgo::Winograd | ConvAlgo::Winograd2 | ConvAlgo::Winograd6 => {
                ConvKernelKind::Direct
            }
            ConvAlgo::Fft if crate::fft::applicable(&geom) => ConvKernelKind::Fft,
            ConvAlgo::Fft if depthwise => ConvKernelKind::Depthwise,
            ConvAlgo::Fft => ConvKernelKind::Direct,
            ConvAlgo::Auto | ConvAlgo::Direct if depthwise => ConvKernelKind::Depthwise,
            ConvAlgo::Auto | ConvAlgo::Direct => ConvKernelKind::Direct,
            ConvAlgo::ImplicitGemm if depthwise => ConvKernelKind::Depthwise,
            ConvAlgo::ImplicitGemm => ConvKernelKind::ImplicitGemm,
            _ => ConvKernelKind::Im2colGemm,
        };
        let ukernel = Ukernel::active();
        let direct = match kind {
            ConvKernelKind::Direct | ConvKernelKind::Pointwise => {
                crate::direct::DirectLayout::new(&geom, ukernel.nr)
            }
            _ => None,
        };
        // a geometry the direct kernel cannot address (3-D) runs the packed implicit GEMM
        let kind = match (kind, &direct) {
            (ConvKernelKind::Direct, None) => ConvKernelKind::ImplicitGemm,
            (k, _) => k,
        };
        let (cog, k) = (
            geom.c_out_per_group(),
            geom.c_in_per_group() * geom.kernel_volume(),
        );
        let winograd = match kind {
            ConvKernelKind::WinogradF4 => Some(crate::winograd::PreparedWinograd::new(
                geom.clone(),
                weights,
                crate::winograd::WinogradTile::F4x3,
            )),
            ConvKernelKind::WinogradF2 => Some(crate::winograd::PreparedWinograd::new(
                geom.clone(),
                weights,
                crate::winograd::WinogradTile::F2x3,
            )),
            ConvKernelKind::WinogradF6 => Some(crate::winograd::PreparedWinograd::new(
                geom.clone(),
                weights,
                crate::winograd::WinogradTile::F6x3,
            )),
            _ => None,
        };
        // the small-map kernel's copy, when it runs the layer, is the only one kept
        let small: Option<Vec<_>> = direct
            .as_ref()
            .filter(|d| crate::direct_small::applies(d, crate::sgemm::clamp_of(activation)))
            .map(|_| {
                (0..geom.group)
                    .map(|g| crate::direct_small::OcPanels::new(&weights[g * cog * k..], cog, k))
                    .collect()
            });
        // 1x1 layers with at most 4 output channels on large maps (detector heads)
        let narrow = kind == ConvKernelKind::Pointwise
            && geom.group == 1
            && !regions
            && crate::pointwise_narrow::applies(
                geom.c_out,
                geom.output.iter().product(),
                crate::sgemm::clamp_of(activation),
            );
        let packed = if small.is_some()
            || matches!(
                kind,
                ConvKernelKind::Depthwise
                    | ConvKernelKind::Stem
                    | ConvKernelKind::WinogradF2
                    | ConvKernelKind::WinogradF4
                    | ConvKernelKind::WinogradF6
                    | ConvKernelKind::Fft
            ) {
            vec![]
        } else {
            (0..geom.group)
                .map(|g| PackedA::new(&weights[g * cog * k..], cog, k, k, &ukernel))
                .collect()
        };
        PreparedConv {
            kind,
            packed,
            winograd,
            fft: (kind == ConvKernelKind::Fft)
                .then(|| crate::fft::PreparedFft::new(geom.clone(), weights)),
            dw_blocks: Default::default(),
            stem: stem_pack(kind, &geom, weights),
            small,
            packed_lazy: Default::default(),
            direct,
            ukernel,
            // only the depthwise and narrow pointwise kernels read the plain layout; the others
            // use the packed copy
            weights: if kind == ConvKernelKind::Depthwise || narrow {
                weights.to_vec()
            } else {
                Vec::new()
            },
            bias: bias.map_or_else(|| vec![0.0; geom.c_out], |b| b.to_vec()),
            activation,
            geom,
            prelu: None,
            arith16: None,
        }
    }

    /// Bytes of scratch memory (the im2col matrix) one run needs.
    pub fn scratch_elems(&self) -> usize {
        match self.kind {
            ConvKernelKind::Im2colGemm => {
                let g = &self.geom;
                g.c_in_per_group() * g.kernel_volume() * g.output.iter().product::<usize>()
            }
            ConvKernelKind::WinogradF2
            | ConvKernelKind::WinogradF4
            | ConvKernelKind::WinogradF6 => self.winograd.as_ref().map_or(0, |w| w.scratch_elems()),
            ConvKernelKind::Direct | ConvKernelKind::Pointwise => {
                self.direct.as_ref().map_or(0, |d| d.scratch_elems())
            }
            _ => 0,
        }
    }

    /// Runs the layer: `x` is the NC(D)HW input, `out` the NC(D)HW output.
    pub fn run(&self, x: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
        match self.kind {
            ConvKernelKind::Depthwise => {
                self.run_depthwise(&self.geom, x, out);
            }
            ConvKernelKind::Stem => self.run_stem(&self.geom, x, out),
            ConvKernelKind::WinogradF2
            | ConvKernelKind::WinogradF4
            | ConvKernelKind::WinogradF6 => {
                let w = self.winograd.as_ref().expect("prepared with the kind");
                w.run(x, out, &self.bias, self.activation, scratch);
            }
            ConvKernelKind::Fft => {
                let f = self.fft.as_ref().expect("prepared with the kind");
                let g = &self.geom;
                let (isz, osz) = (
                    g.c_in * g.input[1] * g.input[2],
                    g.c_out * g.output[1] * g.output[2],
                );
                for (xn, on) in x.chunks(isz).zip(out.chunks_mut(osz)).take(g.batch) {
                    f.run(xn, on, &self.bias, self.activation);
                }
            }
            ConvKernelKind::Pointwise if self.narrow() => self.run_narrow(x, out),
            // the GEMM applies bias and activation per tile
            _ => self.run_gemm(&self.geom, x, out, scratch),
        }
    }

    /// Whether the layer runs [`crate::pointwise_narrow`] (chosen at preparation: the plain
    /// weights are kept only then), in f32 arithmetic.
    fn narrow(&self) -> bool {
        self.kind == ConvKernelKind::Pointwise
            && !self.weights.is_empty()
            && self.f16_arith_state().is_none()
    }

    /// [`crate::pointwise_narrow::run`] per image.
    fn run_narrow(&self, x: &[f32], out: &mut [f32]) {
        let g = &self.geom;
        let plane: usize = g.output.iter().product();
        let clamp = crate::sgemm::clamp_of(self.activation).expect("checked at preparation");
        for (xn, on) in x
            .chunks(g.c_in * plane)
            .zip(out.chunks_mut(g.c_out * plane))
            .take(g.batch)
        {
            crate::pointwise_narrow::run(
                &self.weights,
                &self.bias,
                g.c_out,
                g.c_in,
                plane,
                xn,
                on,
                clamp,
            );
        }
    }

    /// The kernel's name in profiles: [`ConvKernelKind::name`], or `1x1-narrow` for
    /// [`crate::pointwise_narrow`].
    pub fn kernel_name(&self) -> &'static str {
        if self.narrow() {
            "1x1-narrow"
        } else {
            self.kind.name()
        }
    }

    /// Runs the layer with a residual Add (and an activation after it) fused in:
    /// `out = post(conv(x) + residual)`; the layer's own activation must be `None` (the plan
    /// fuses only then). The direct kernels and Winograd add the residual in their epilogue
    /// (output transform); the other kinds run as usual and add it in one more pass.
    pub fn run_residual(
        &self,
        x: &[f32],
        residual: &[f32],
        post: Option<Unary>,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        debug_assert!(
            self.activation.is_none(),
            "fused only without an own activation"
        );
        debug_assert_eq!(residual.len(), out.len());
        if self.try_run_direct(&self.geom, x, Some(residual), post, out, scratch) {
            return;
        }
        if let Some(w) = self.winograd.as_ref().filter(|_| {
            matches!(
                self.kind,
                ConvKernelKind::WinogradF2
                    | ConvKernelKind::WinogradF4
                    | ConvKernelKind::WinogradF6
            )
        }) {
            w.run_residual(x, out, &self.bias, residual, post, scratch);
            return;
        }
        self.run(x, out, scratch);
        out.par_chunks_mut(4096)
            .zip(residual.par_chunks(4096))
            .for_each(|(o, r)| {
                o.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                if let Some(u) = post {
                    u.apply_slice(o);
                }
            });
    }

    /// The packed weights, bias, activation and microkernel of an ungrouped 1x1 layer that
    /// runs the f32 GEMM (not the narrow kernel, not fp16 arithmetic), for kernels that run
    /// it on parts of its input ([`crate::fused_block`]); `None` for every other layer.
    pub(crate) fn pointwise_gemm(&self) -> Option<(&PackedA, &[f32], Option<Unary>, &Ukernel)> {
        (self.kind == ConvKernelKind::Pointwise
            && self.geom.group == 1
            && !self.narrow()
            && self.f16_arith_state().is_none()
            && crate::sgemm::clamp_of(self.activation).is_some())
        .then(|| {
            (
                &self.packed()[0],
                &self.bias[..],
                self.activation,
                &self.ukernel,
            )
        })
    }

    /// The plain filters, bias and clamp of a depthwise layer that the AVX-512 row kernel
    /// ([`crate::depthwise_rows`]) runs; `None` for every other layer (and off x86-64).
    pub(crate) fn depthwise_rows(&self) -> Option<DepthwiseRows<'_>> {
        #[cfg(target_arch = "x86_64")]
        if self.kind == ConvKernelKind::Depthwise && depthwise_by_rows(&self.geom) {
            if let Some(clamp) = crate::sgemm::clamp_of(self.activation) {
                return Some(DepthwiseRows {
                    weights: &self.weights,
                    bias: &self.bias,
                    clamp,
                });
            }
        }
        None
    }

    /// The layer's own activation (a fused residual needs it to be `None`).
    pub fn activation(&self) -> Option<Unary> {
        self.activation
    }

    /// True when [`PreparedConv::run_region`] can run this layer (every kind but FFT, whose
    /// filter spectra are sized for the full layer). Winograd recomputes a region with tiles
    /// that start at the region: equal to the whole layer's values up to float rounding.
    pub fn supports_regions(&self) -> bool {
        !matches!(self.kind, ConvKernelKind::Fft)
    }

    /// Runs the layer on a region: `geom` must equal this layer's geometry except for the
    /// spatial input/output sizes and the paddings (a crop of the input with its own explicit
    /// zero padding). Used by convolutional caching to recompute only changed outputs.
    ///
    /// # Panics
    /// When the kind does not support regions (check [`PreparedConv::supports_regions`]).
    pub fn run_region(
        &self,
        geom: &ConvGeometry,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        debug_assert_eq!(
            (
                geom.c_in,
                geom.c_out,
                geom.group,
                geom.kernel,
                geom.stride,
                geom.dilation
            ),
            (
                self.geom.c_in,
                self.geom.c_out,
                self.geom.group,
                self.geom.kernel,
                self.geom.stride,
                self.geom.dilation
            )
        );
        match self.kind {
            ConvKernelKind::Depthwise => {
                self.run_depthwise(geom, x, out);
            }
            ConvKernelKind::Stem => self.run_stem(geom, x, out),
            ConvKernelKind::WinogradF2
            | ConvKernelKind::WinogradF4
            | ConvKernelKind::WinogradF6 => {
                let w = self.winograd.as_ref().expect("prepared with the kind");
                w.run_geom(geom, x, out, &self.bias, self.activation, scratch);
            }
            ConvKernelKind::Fft => panic!("run_region on an FFT layer"),
            _ => self.run_gemm(geom, x, out, scratch),
        }
    }

    fn run_gemm(&self, g: &ConvGeometry, x: &[f32], out: &mut [f32], scratch: &mut Vec<f32>) {
        let done = self.try_run_direct(g, x, None, self.activation, out, scratch);
        if !done {
            self.run_gemm_packed(g, x, out, scratch);
        }
    }

    /// Runs the direct kernel when it applies (Direct and Pointwise kinds, 2-D, f32
    /// arithmetic), with `residual` (laid out like `out`) added before `activation`; returns
    /// whether it ran.
    fn try_run_direct(
        &self,
        g: &ConvGeometry,
        x: &[f32],
        residual: Option<&[f32]>,
        activation: Option<Unary>,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> bool {
        let fp16_arith = self.f16_arith_state() == Some(true);
        if matches!(
            self.kind,
            ConvKernelKind::Direct | ConvKernelKind::Pointwise
        ) && !fp16_arith
        {
            // a region (convolutional caching) gets its own tap offsets
            let region_layout;
            let layout = if *g == self.geom {
                self.direct.as_ref()
            } else {
                region_layout = crate::direct::DirectLayout::new(g, self.ukernel.nr);
                region_layout.as_ref()
            };
            if let Some(layout) = layout {
                let (in_len, out_len) = (
                    g.c_in * g.input.iter().product::<usize>(),
                    g.c_out * g.output.iter().product::<usize>(),
                );
                let epi = Epilogue {
                    row_bias: Some(&self.bias),
                    activation,
                    row_slope: self.prelu.as_deref(),
                };
                // the small-map kernel needs no packed copy: do not build one for it
                let small = self.small.as_deref().filter(|_| {
                    *g == self.geom
                        && crate::direct_small::applies(layout, crate::sgemm::clamp_of(activation))
                });
                let packed = if small.is_some() {
                    &[][..]
                } else {
                    self.packed()
                };
                for n in 0..g.batch {
                    crate::direct::run_direct(
                        layout,
                        g,
                        packed,
                        small,
                        &self.ukernel,
                        epi,
                        residual.map(|r| &r[n * out_len..][..out_len]),
                        &x[n * in_len..][..in_len],
                        &mut out[n * out_len..][..out_len],
                        scratch,
                    );
                }
                return true;
            }
        }
        false
    }

    /// The packed GEMM kinds (implicit GEMM, im2col, and 1x1 / direct under fp16 arithmetic).
    fn run_gemm_packed(
        &self,
        g: &ConvGeometry,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let in_plane: usize = g.input.iter().product();
        let out_plane: usize = g.output.iter().product();
        let (cig, cog) = (g.c_in_per_group(), g.c_out_per_group());
        let k = cig * g.kernel_volume();
        for n in 0..g.batch {
            for grp in 0..g.group {
                let xg = &x[(n * g.c_in + grp * cig) * in_plane..][..cig * in_plane];
                let og = &mut out[(n * g.c_out + grp * cog) * out_plane..][..cog * out_plane];
                let pa = &self.packed()[grp];
                let epi = Epilogue {
                    row_bias: Some(&self.bias[grp * cog..(grp + 1) * cog]),
                    activation: self.activation,
                    row_slope: self
                        .prelu
                        .as_deref()
                        .map(|s| &s[grp * cog..(grp + 1) * cog]),
                };
                let uk = &self.ukernel;
                match self.kind {
                    ConvKernelKind::Pointwise => self.gemm(
                        pa,
                        &DenseB {
                            data: xg,
                            ld: in_plane,
                        },
                        out_plane,
                        og,
                        out_plane,
                        uk,
                        epi,
                    ),
                    ConvKernelKind::Im2colGemm => {
                        scratch.resize(k * out_plane, 0.0);
                        im2col(g, xg, scratch);
                        self.gemm(
                            pa,
                            &DenseB {
                                data: scratch,
                                ld: out_plane,
                            },
                            out_plane,
                            og,
                            out_plane,
                            uk,
                            epi,
                        )
                    }
                    _ => self.gemm(pa, &ConvB { x: xg, g }, out_plane, og, out_plane, uk, epi),
                }
            }
        }
    }

    /// Runs the few-input-channel kernel image by image (bias and a clamp fused, any other
    /// activation in one more pass).
    #[cfg(target_arch = "x86_64")]
    fn run_stem(&self, g: &ConvGeometry, x: &[f32], out: &mut [f32]) {
        let clamp = crate::sgemm::clamp_of(self.activation);
        let (in_len, out_len) = (
            g.c_in * g.input.iter().product::<usize>(),
            g.c_out * g.output.iter().product::<usize>(),
        );
        for (xn, on) in x.chunks(in_len).zip(out.chunks_mut(out_len)).take(g.batch) {
            // SAFETY: the Stem kind is chosen only on the AVX-512 path (avx512f + fma) for a
            // geometry `conv_stem::handles` accepts; a region geometry differs only in its
            // extents and pads, which the kernel takes as they come.
            unsafe {
                crate::conv_stem::run(
                    g,
                    &self.stem,
                    &self.bias,
                    clamp,
                    self.prelu.as_deref(),
                    xn,
                    on,
                )
            };
            if let (None, Some(a)) = (clamp, self.activation) {
                a.apply_slice(on);
            }
        }
    }

    /// The Stem kind is never chosen off x86-64 (see `stem_applies`).
    #[cfg(not(target_arch = "x86_64"))]
    fn run_stem(&self, g: &ConvGeometry, x: &[f32], out: &mut [f32]) {
        unreachable!(
            "the Stem kind is x86-64 only ({:?}, {} -> {} values)",
            g.kernel,
            x.len(),
            out.len()
        );
    }

    /// Runs the depthwise kernel, with bias and activation fused into each output row when the
    /// activation is a clamp (none, Relu, Clip), else followed by the epilogue pass.
    fn run_depthwise(&self, g: &ConvGeometry, x: &[f32], out: &mut [f32]) {
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let kk = g.kernel[1] * g.kernel[2];
        let c = g.c_in;
        let clamp = crate::sgemm::clamp_of(self.activation);
        #[cfg(target_arch = "x86_64")]
        if depthwise_by_rows(g) {
            let act = self.activation;
            out.par_chunks_mut(oh * ow).enumerate().for_each(|(nc, o)| {
                let ch = nc % c;
                // SAFETY: depthwise_by_rows checked the AVX-512 path (avx512f + fma) and
                // `handles`; `x` holds plane `nc` (ih * iw), `o` is one whole output plane
                // this task alone writes, the filter has kk taps.
                unsafe {
                    crate::depthwise_rows::plane(
                        g,
                        &x[nc * ih * iw..][..ih * iw],
                        &self.weights[ch * kk..][..kk],
                        self.bias[ch],
                        clamp,
                        o.as_mut_ptr(),
                        0..oh,
                    )
                };
                if let (None, Some(a)) = (clamp, act) {
                    // bias is in; the activation is not a clamp the kernel could fuse
                    a.apply_slice(o);
                }
            });
            return;
        }
        if depthwise_by_channel_block(g) {
            self.run_depthwise_blocks(g, x, out, clamp);
            return;
        }
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each_init(Vec::new, |buf, (nc, o)| {
                let ch = nc % c;
                let post = clamp.map(|(lo, hi)| crate::depthwise::RowPost {
                    bias: self.bias[ch],
                    lo,
                    hi,
                });
                crate::depthwise::depthwise_plane(
                    g,
                    &x[nc * ih * iw..][..ih * iw],
                    &self.weights[ch * kk..][..kk],
                    o,
                    buf,
                    post,
                );
            });
        if clamp.is_none() {
            self.epilogue(g, out);
        }
    }

    /// The depthwise layer [`crate::depthwise::BLOCK`] channels at a time, vectorised across
    /// channels (see [`depthwise_by_channel_block`]).
    fn run_depthwise_blocks(
        &self,
        g: &ConvGeometry,
        x: &[f32],
        out: &mut [f32],
        clamp: Option<(f32, f32)>,
    ) {
        use crate::depthwise::BLOCK;
        let in_plane = g.input[1] * g.input[2];
        let out_plane = g.output[1] * g.output[2];
        let c = g.c_in;
        let kk = g.kernel[1] * g.kernel[2];
        let blocks = c.div_ceil(BLOCK);
        let packed = self
            .dw_blocks
            .get_or_init(|| crate::depthwise::pack_block_weights(&self.weights, c, kk));
        let act = self.activation;
        // one task per (image, channel block); blocks of one image are contiguous in `out`
        let mut chunks: Vec<&mut [f32]> = Vec::with_capacity(g.batch * blocks);
        for img in out.chunks_mut(c * out_plane).take(g.batch) {
            let mut rest = img;
            for b in 0..blocks {
                let cb = BLOCK.min(c - b * BLOCK);
                let (head, tail) = rest.split_at_mut(cb * out_plane);
                chunks.push(head);
                rest = tail;
            }
        }
        chunks
            .into_par_iter()
            .enumerate()
            .for_each_init(Vec::new, |buf, (i, o)| {
                let (n, b) = (i / blocks, i % blocks);
                let c0 = b * BLOCK;
                let cb = BLOCK.min(c - c0);
                crate::depthwise::depthwise_block(
                    g,
                    &x[(n * c + c0) * in_plane..][..cb * in_plane],
                    cb,
                    &packed[b * kk * BLOCK..][..kk * BLOCK],
                    &self.bias[c0..c0 + cb],
                    o,
                    clamp,
                    buf,
                );
                if let (None, Some(a)) = (clamp, act) {
                    // bias is in; the activation is not a clamp the kernel could fuse
                    a.apply_slice(o);
                }
            });
    }

    fn epilogue(&self, g: &ConvGeometry, out: &mut [f32]) {
        let plane: usize = g.output.iter().product();
        let c = g.c_out;
        let act = self.activation;
        out.par_chunks_mut(plane.max(1))
            .enumerate()
            .for_each(|(nc, o)| {
                crate::simd::bias_activation(o, self.bias[nc % c], act);
            });
    }
}

/// Whether the few-input-channel kernel runs the layer ([`crate::conv_stem`]: AVX-512 only).
/// Measured against the direct GEMM kernel on the first layers of the benchmark models
/// (one thread): see `conv_stem`'s doc and docs/PERFORMANCE.md.
fn stem_applies(g: &ConvGeometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::active_path() == crate::simd::SimdPath::Avx512
            && crate::conv_stem::handles(g)
            && std::env::var("KESTREL_STEM").map_or(true, |v| v != "0")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// The Stem kind's packed filters (empty for other kinds).
fn stem_pack(kind: ConvKernelKind, g: &ConvGeometry, weights: &[f32]) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if kind == ConvKernelKind::Stem {
        return crate::conv_stem::pack(weights, g.c_out, g.c_in, g.kernel[2]);
    }
    let _ = (kind, g, weights);
    Vec::new()
}

/// Whether a depthwise layer runs plane by plane in the AVX-512 row kernel
/// ([`crate::depthwise_rows`]): every 3x3 / 5x5 stride-1/2 layer it handles, except stride-2
/// layers with rows shorter than 6 outputs. Measured (examples/dwbench.rs, one thread) against
/// the channel-blocked kernel: 1.3-2.9x faster on the MobileNetV2 / EfficientNet-Lite0 shapes
/// (e.g. 144ch 56x56 0.39 -> 0.20 ms, 384ch 14x14 0.056 -> 0.024). Stride 2 with short rows,
/// session 10 (three runs each): 576ch 14 -> 7 3x3 0.043 vs 0.068 ms, 672ch 14 -> 7 5x5 0.10
/// vs 0.11, 64ch 11 -> 6 0.004 vs 0.005 (rows kernel first), but 960ch 7 -> 4 0.047 vs 0.032
/// (session 5 had measured 14 -> 7 the other way round, 0.047 vs 0.042, before the
/// channel-blocked kernel's gather variant took that case).
#[cfg(target_arch = "x86_64")]
fn depthwise_by_rows(g: &ConvGeometry) -> bool {
    g.is_depthwise()
        && crate::simd::active_path() == crate::simd::SimdPath::Avx512
        && crate::depthwise_rows::handles(g)
        && (g.stride[2] == 1 || g.output[2] >= 6)
        && !force_dw_block()
}

/// `KESTREL_DW_BLOCK=1` keeps every depthwise layer on the channel-blocked kernel (A/B runs).
#[cfg(target_arch = "x86_64")]
fn force_dw_block() -> bool {
    static FORCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCE.get_or_init(|| std::env::var("KESTREL_DW_BLOCK").is_ok_and(|v| v == "1"))
}

/// Whether a depthwise layer runs channel-blocked ([`crate::depthwise::depthwise_block`])
/// rather than plane by plane. With AVX-512 (gathers and scatters do the interleave) it is
/// faster on every MobileNetV2 layer (2-4x at 28x28 and below, 1.6x on the 56x56 stride-2
/// layer, even at 112x112); with the scalar interleave of the other paths only for output
/// rows shorter than 20 values, where a row fills at most one vector and the per-plane set-up
/// dominates.
fn depthwise_by_channel_block(g: &ConvGeometry) -> bool {
    g.is_depthwise()
        && (crate::simd::active_path() == crate::simd::SimdPath::Avx512 || g.output[2] < 20)
}

/// Unfolds one group's input `x` (`cig` channels) into `col` of shape
/// `[cig * kd * kh * kw, od * oh * ow]`, zero where the window covers padding.
pub fn im2col(g: &ConvGeometry, x: &[f32], col: &mut [f32]) {
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let out_plane = od * oh * ow;
    let kvol = kd * kh * kw;
    col.par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(row, dst)| {
            let c = row / kvol;
            let t = row % kvol;
            let (tz, ty, tx) = (t / (kh * kw), (t / kw) % kh, t % kw);
            let xc = &x[c * id * ih * iw..][..id * ih * iw];
            let mut o = 0;
            for z in 0..od {
                let iz = (z * g.stride[0] + tz * g.dilation[0]) as isize - g.pad_begin[0] as isize;
                for y in 0..oh {
                    let iy =
                        (y * g.stride[1] + ty * g.dilation[1]) as isize - g.pad_begin[1] as isize;
                    let row_ok = iz >= 0 && iz < id as isize && iy >= 0 && iy < ih as isize;
                    for xo in 0..ow {
                        let ix = (xo * g.stride[2] + tx * g.dilation[2]) as isize
                            - g.pad_begin[2] as isize;
                        dst[o] = if row_ok && ix >= 0 && ix < iw as isize {
                            xc[(iz as usize * ih + iy as usize) * iw + ix as usize]
                        } else {
                            0.0
                        };
                        o += 1;
                    }
                }
            }
        });
}

/// The convolution's B matrix (`[cig * kvol, output pixels]`) read straight from the input: each
/// packed block is unfolded from the image when the GEMM asks for it, so only an L2-sized block
/// of the im2col matrix ever exists.
struct ConvB<'a> {
    x: &'a [f32],
    g: &'a ConvGeometry,
}

impl BSource for ConvB<'_> {
    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        let g = self.g;
        let [id, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let [kd, kh, kw] = g.kernel;
        let kvol = kd * kh * kw;
        let panels = nc.div_ceil(nr);
        for kk in 0..kc {
            let kidx = k0 + kk;
            let (c, t) = (kidx / kvol, kidx % kvol);
            let (tz, ty, tx) = (t / (kh * kw), (t / kw) % kh, t % kw);
            let xc = &self.x[c * id * ih * iw..][..id * ih * iw];
            let off_x = (tx * g.dilation[2]) as isize - g.pad_begin[2] as isize;
            // walk the output pixels n0..n0+nc as (z, y, x) with incremental counters
            let mut z = n0 / (oh * ow);
            let mut y = (n0 / ow) % oh;
            let mut xo = n0 % ow;
            let mut j = 0;
            while j < nc {
                let run = (ow - xo).min(nc - j);
                let iz = (z * g.stride[0] + tz * g.dilation[0]) as isize - g.pad_begin[0] as isize;
                let iy = (y * g.stride[1] + ty * g.dilation[1]) as isize - g.pad_begin[1] as isize;
                let row_ok = iz >= 0 && iz < id as isize && iy >= 0 && iy < ih as isize;
                let src = if row_ok {
                    &xc[(iz as usize * ih + iy as usize) * iw..][..iw]
                } else {
                    &[][..]
                };
                let sx = g.stride[2] as isize;
                // split the run at panel boundaries; each piece is contiguous in `dst`
                let mut r = 0;
                while r < run {
                    let jj = j + r;
                    let len = (nr - jj % nr).min(run - r);
                    let d = &mut dst[((jj / nr) * kc + kk) * nr + jj % nr..][..len];
                    let ix0 = (xo + r) as isize * sx + off_x;
                    if !row_ok {
                        d.fill(0.0);
                    } else if sx == 1 {
                        let lo = (-ix0).clamp(0, len as isize) as usize;
                        let hi = (iw as isize - ix0).clamp(lo as isize, len as isize) as usize;
                        d[..lo].fill(0.0);
                        if hi > lo {
                            let s0 = (ix0 + lo as isize) as usize;
                            d[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                        }
                        d[hi..].fill(0.0);
                    } else {
                        for (q, v) in d.iter_mut().enumerate() {
                            let ix = ix0 + q as isize * sx;
                            *v = if ix >= 0 && ix < iw as isize {
                                src[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                    r += len;
                }
                j += run;
                xo = 0;
                y += 1;
                if y == oh {
                    y = 0;
                    z += 1;
                }
            }
            // zero the padding columns of the last panel
            for jj in nc..panels * nr {
                dst[((jj / nr) * kc + kk) * nr + jj % nr] = 0.0;
            }
        }
    }
}
