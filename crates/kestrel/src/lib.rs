//! # Kestrel
//!
//! On-device CNN inference for continuous vision. This crate is the public API; the CLI is a
//! thin layer over it.
//!
//! ```no_run
//! use kestrel::{Model, Session, SessionOptions, Preset};
//! let model = Model::load("assets/models/efficientnet_lite0.onnx")?;
//! let mut session = Session::new(&model, SessionOptions::default())?;
//! let preset = Preset::for_model(&model);
//! let input = preset.load_image("assets/photos/coffee.png")?;
//! let outputs = session.run(vec![input])?;
//! for (label, p) in kestrel::classify::top_k(&outputs[0], 5, kestrel::classify::imagenet_labels())? {
//!     println!("{p:.3} {label}");
//! }
//! # Ok::<(), kestrel::Error>(())
//! ```
//!
//! Layers: `kestrel-core` (tensors, IR, ops, passes) ← `kestrel-onnx` (import) and
//! `kestrel-cpu` (backend) ← this crate ← `kestrel-cli`.

pub mod annotate;
pub mod chart;
pub mod classify;
pub mod compare;
pub mod compress;
pub mod detect;
pub mod energy;
pub mod export_f16;
pub mod hw;
pub mod hybrid;
mod model;
pub mod npz;
pub mod pipeline;
pub mod preprocess;
pub mod profile;
mod session;
pub mod stream;
pub mod stream_chart;
pub mod stream_cost;
mod stream_gpu;

pub use kestrel_core::{DType, Error, Result, Tensor};
pub use kestrel_cpu::ConvAlgo;
/// Frame sources (video files, cameras, image folders, raw frames).
pub use kestrel_video as video;
pub use model::{Model, ModelSummary};
pub use preprocess::Preset;
pub use session::{Backend, Precision, Session, SessionOptions};
pub use stream::{Stream, StreamOptions};

/// Path of the built-in default model (EfficientNet-Lite0, Apache-2.0) in a source checkout.
pub fn default_model_path() -> std::path::PathBuf {
    repo_asset("models/efficientnet_lite0.onnx")
}

/// Path of the bundled video clip (cup.mp4, OpenCV sample data) in a source checkout.
pub fn default_video_path() -> std::path::PathBuf {
    repo_asset("video/cup.mp4")
}

/// Path of the bundled photos folder in a source checkout.
pub fn default_photos_path() -> std::path::PathBuf {
    repo_asset("photos")
}

fn repo_asset(rel: &str) -> std::path::PathBuf {
    let local = std::path::Path::new("assets").join(rel);
    if local.exists() {
        return local;
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(rel)
}

/// The SIMD path the CPU kernels use on this machine (`avx512f`, `avx2+fma` or `portable`).
pub fn simd_path_name() -> &'static str {
    kestrel_cpu::simd::active_path().name()
}

/// Hands memory the allocator holds but no longer uses back to the operating system (glibc's
/// `malloc_trim`; a no-op elsewhere). Loading and converting a model frees large tensors in the
/// middle of the heap, which glibc would otherwise keep: call this after loading/preparing so a
/// long-running process's resident memory reflects what it actually uses.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heap to the OS; it has
    // no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
