//! The GPU device: adapter choice, features, and the persistent pipeline cache.

use std::path::PathBuf;

/// Why the GPU backend cannot run.
#[derive(Debug, Clone)]
pub struct GpuError(pub String);

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GpuError {}

/// An open device with what Kestrel needs to know about it.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The device has SHADER_F16 (fp16 storage and arithmetic in shaders).
    pub shader_f16: bool,
    /// The device can time passes (TIMESTAMP_QUERY).
    pub timestamps: bool,
    /// The device multiplies 16x16 f16 cooperative matrices into f32 ones (tensor cores) in
    /// 32-wide subgroups: the GEMMs of native-f16 plans whose tiles fit run on them
    /// (conv1x1_coop.wgsl; H100, f16: ResNet-50 3.77 -> 3.00 ms, VGG-16 3.65 -> 3.22, see
    /// docs/GPU.md, session 9). Off with `KESTREL_GPU_COOP=0`.
    pub coop_f16: bool,
    pub timestamp_period_ns: f32,
    pub(crate) cache: Option<wgpu::PipelineCache>,
    cache_path: Option<PathBuf>,
    /// Pipelines per storage type, compiled on first use and shared by every plan.
    kernels: std::sync::Mutex<
        std::collections::HashMap<crate::Storage, std::sync::Arc<crate::kernels::Kernels>>,
    >,
    /// Set by the device-lost callback: why the device was lost.
    lost: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// Whether the adapter offers what conv1x1_coop.wgsl needs: cooperative matrices with a 16x16x16
/// f16 x f16 -> f32 configuration, SHADER_F16, and subgroups of exactly 32 invocations (the
/// shader gives each half of its 64-invocation workgroup its own tiles). `KESTREL_GPU_COOP=0`
/// says no (the experimental wgpu feature is then never requested).
fn coop_f16_supported(adapter: &wgpu::Adapter, info: &wgpu::AdapterInfo) -> bool {
    if std::env::var("KESTREL_GPU_COOP").is_ok_and(|v| v == "0") {
        return false;
    }
    let features = adapter.features();
    let wanted = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
    features.contains(wanted)
        && info.subgroup_min_size == 32
        && info.subgroup_max_size == 32
        && adapter.cooperative_matrix_properties().iter().any(|c| {
            use wgpu::CooperativeScalarType as T;
            (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
                && c.ab_type == T::F16
                && c.cr_type == T::F32
        })
}

/// Where pipeline caches are kept (`$XDG_CACHE_HOME/kestrel` or `~/.cache/kestrel`).
fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("kestrel"))
}

impl GpuContext {
    /// Opens the best adapter: `KESTREL_GPU_ADAPTER` (a substring of the adapter name) when
    /// set, else a discrete GPU, else an integrated one, else a CPU (software) adapter.
    pub fn new() -> Result<GpuContext, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends =
            wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY | wgpu::Backends::GL);
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let wanted = std::env::var("KESTREL_GPU_ADAPTER").ok();
        let rank = |a: &wgpu::Adapter| {
            let i = a.get_info();
            let name_ok = wanted
                .as_ref()
                .is_none_or(|w| i.name.to_lowercase().contains(&w.to_lowercase()));
            let kind = match i.device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Cpu => 3,
                wgpu::DeviceType::Other => 4,
            };
            let backend = match i.backend {
                wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
                _ => 1,
            };
            (!name_ok, kind, backend)
        };
        let adapter = adapters
            .into_iter()
            .filter(|a| {
                a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
            })
            .min_by_key(rank)
            .ok_or_else(|| GpuError("no GPU adapter with compute shaders was found".into()))?;
        let info = adapter.get_info();
        if let Some(w) = &wanted {
            if !info.name.to_lowercase().contains(&w.to_lowercase()) {
                return Err(GpuError(format!(
                    "no adapter matches KESTREL_GPU_ADAPTER='{w}' (best: {})",
                    info.name
                )));
            }
        }
        let available = adapter.features();
        let coop = coop_f16_supported(&adapter, &info);
        let base_features = available
            & (wgpu::Features::SHADER_F16
                | wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::PIPELINE_CACHE);
        let limits = adapter.limits();
        let request = |coop: bool| {
            let features = if coop {
                base_features | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
            } else {
                base_features
            };
            pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("kestrel"),
                required_features: features,
                required_limits: wgpu::Limits {
                    max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                    max_buffer_size: limits.max_buffer_size,
                    max_storage_buffers_per_shader_stage:
                        limits.max_storage_buffers_per_shader_stage.min(8),
                    max_compute_workgroups_per_dimension:
                        limits.max_compute_workgroups_per_dimension,
                    ..wgpu::Limits::downlevel_defaults()
                },
                // SAFETY (of the token): the only experimental feature requested is cooperative
                // matrices, used by one shader (conv1x1_coop.wgsl) in the configuration the
                // adapter reported (16x16x16 f16 -> f32, 32-wide subgroups) and tested on it
                experimental_features: if coop {
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                ..Default::default()
            }))
            .map(|dq| (dq, features))
        };
        // a device refused with the experimental feature is asked for again without it
        let ((device, queue), features) = match request(coop) {
            Err(_) if coop => request(false),
            other => other,
        }
        .map_err(|e| GpuError(format!("cannot open {}: {e}", info.name)))?;
        device.on_uncaptured_error(std::sync::Arc::new(|e| {
            eprintln!("kestrel gpu: uncaptured device error: {e}");
        }));
        let lost: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
        {
            let lost = lost.clone();
            device.set_device_lost_callback(move |reason, msg| {
                *lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "device lost ({reason:?}){}",
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(": {msg}")
                    }
                ));
            });
        }
        let cache_path = cache_dir().map(|d| {
            d.join(format!(
                "wgpu-pipelines-{:x}-{:x}-{}.bin",
                info.vendor,
                info.device,
                info.driver_info
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            ))
        });
        let cache = if features.contains(wgpu::Features::PIPELINE_CACHE) {
            let data = cache_path.as_ref().and_then(|p| std::fs::read(p).ok());
            // SAFETY: the data was written by `PipelineCache::get_data` of an adapter with the
            // same vendor, device and driver (encoded in the file name); `fallback: true` makes
            // wgpu validate the header and start empty when it does not match.
            Some(unsafe {
                device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("kestrel"),
                    data: data.as_deref(),
                    fallback: true,
                })
            })
        } else {
            None
        };
        Ok(GpuContext {
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            coop_f16: features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
                && features.contains(wgpu::Features::SHADER_F16),
            timestamp_period_ns: queue.get_timestamp_period(),
            device,
            queue,
            info,
            cache,
            cache_path,
            kernels: Default::default(),
            lost,
        })
    }

    /// Why the device was lost, once it has been.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `Err(Error::Device)` once the device is lost.
    pub fn check_alive(&self) -> kestrel_core::Result<()> {
        match self.lost() {
            Some(why) => Err(kestrel_core::Error::Device(format!(
                "{}: {why}",
                self.info.name
            ))),
            None => Ok(()),
        }
    }

    /// Runs `f` (GPU work: buffer creation, submission, read-back) inside out-of-memory and
    /// validation error scopes: an error the device reports, or its loss, becomes
    /// `Err(Error::Device)` naming `what` was being done, instead of a message on stderr and a
    /// wrong result.
    pub(crate) fn guarded<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> kestrel_core::Result<T>,
    ) -> kestrel_core::Result<T> {
        self.check_alive()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = f();
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        self.check_alive()?;
        // a fault the work itself diagnosed (e.g. a buffer over the limits) says more than the
        // errors its placeholders caused
        if matches!(r, Err(kestrel_core::Error::Device(_))) {
            return r;
        }
        if let Some(e) = oom {
            return Err(kestrel_core::Error::Device(format!(
                "out of device memory while {what} on {}: {e}",
                self.info.name
            )));
        }
        if let Some(e) = invalid {
            return Err(kestrel_core::Error::Device(format!(
                "{} rejected the work while {what}: {e}",
                self.info.name
            )));
        }
        r
    }

    /// Destroys the device, as a driver reset or a removed GPU would: every later use fails
    /// with `Error::Device`. For testing fault handling.
    #[doc(hidden)]
    pub fn simulate_device_loss(&self) {
        self.device.destroy();
        let _ = self.device.poll(wgpu::PollType::Poll);
    }

    /// The compiled pipelines for a storage type (compiled once per context).
    pub(crate) fn kernels(
        &self,
        storage: crate::Storage,
    ) -> std::sync::Arc<crate::kernels::Kernels> {
        let mut k = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        k.entry(storage)
            .or_insert_with(|| std::sync::Arc::new(crate::kernels::Kernels::new(self, storage)))
            .clone()
    }

    /// One line naming the adapter, its backend and features.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}{}{})",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            if self.shader_f16 { ", shader-f16" } else { "" },
            if self.timestamps { ", timestamps" } else { "" }
        )
    }

    /// Writes the pipeline cache to disk (when the adapter supports one).
    pub fn save_pipeline_cache(&self) {
        if let (Some(c), Some(p)) = (&self.cache, &self.cache_path) {
            if let Some(data) = c.get_data() {
                if let Some(d) = p.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                let tmp = p.with_extension("tmp");
                if std::fs::write(&tmp, data).is_ok() {
                    let _ = std::fs::rename(tmp, p);
                }
            }
        }
    }
}
