//! Adapter selection, device creation with the adapter's own limits and optional features, and the
//! shared state every op uses (pipeline cache, buffer pool, error sink, statistics).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::pipelines::PipelineCache;
use super::pool::{Pool, PoolStats};
use crate::{Error, Result};

/// Which implementation of a kernel family to run.
///
/// CPU-type adapters (lavapipe, SwiftShader) pay dearly for workgroup barriers, so they run
/// register-blocked, barrier-free kernels; GPUs run shared-memory tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Register-blocked, no workgroup barriers (CPU adapters).
    Register = 0,
    /// Workgroup-memory tiles with barriers (GPUs).
    Tiled = 1,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Register, Variant::Tiled];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Register => "register",
            Variant::Tiled => "tiled",
        }
    }

    pub fn parse(s: &str) -> Result<Variant> {
        match s.to_ascii_lowercase().as_str() {
            "register" | "cpu" => Ok(Variant::Register),
            "tiled" | "gpu" => Ok(Variant::Tiled),
            _ => Err(Error::Other(format!(
                "unknown kernel variant '{s}': expected 'register' or 'tiled'"
            ))),
        }
    }
}

/// How to choose the adapter. The defaults honour `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
/// `SPARSETT_VARIANT`.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Accept wgpu's OpenGL backend (off by default: it lacks f16 and subgroups and is picked
    /// silently when Vulkan is missing, which hides a broken setup).
    pub allow_gl: bool,
    /// Substring of the adapter name to pick (else `WGPU_ADAPTER_NAME`, else the default adapter).
    pub adapter_name: Option<String>,
    /// Kernel variant override (else `SPARSETT_VARIANT`, else chosen from the device type).
    pub variant: Option<Variant>,
    /// Record per-dispatch GPU timestamps when the adapter supports them.
    pub profile: bool,
}

/// Minimum limits sparsett's kernels rely on. The WebGPU defaults satisfy all of them.
const REQUIRED_LIMITS: [(&str, u64); 5] = [
    ("max_storage_buffer_binding_size", 128 << 20),
    ("max_storage_buffers_per_shader_stage", 8),
    ("max_compute_invocations_per_workgroup", 256),
    ("max_compute_workgroup_storage_size", 16 << 10),
    ("max_compute_workgroups_per_dimension", 65535),
];

fn limit_value(l: &wgpu::Limits, name: &str) -> u64 {
    match name {
        "max_storage_buffer_binding_size" => l.max_storage_buffer_binding_size,
        "max_storage_buffers_per_shader_stage" => l.max_storage_buffers_per_shader_stage as u64,
        "max_compute_invocations_per_workgroup" => l.max_compute_invocations_per_workgroup as u64,
        "max_compute_workgroup_storage_size" => l.max_compute_workgroup_storage_size as u64,
        "max_compute_workgroups_per_dimension" => l.max_compute_workgroups_per_dimension as u64,
        "max_buffer_size" => l.max_buffer_size,
        _ => 0,
    }
}

/// Fails with [`Error::Limit`] (naming the limit, the value needed and the value found) when
/// `limits` fall short of what the kernels rely on.
pub fn check_limits(adapter: &str, limits: &wgpu::Limits) -> Result<()> {
    for (name, needed) in REQUIRED_LIMITS {
        let found = limit_value(limits, name);
        if found < needed {
            return Err(Error::Limit {
                adapter: adapter.to_string(),
                limit: name,
                needed,
                found,
            });
        }
    }
    Ok(())
}

/// Counters a benchmark reads to prove steady-state behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    /// GPU→CPU waits (buffer maps) since the device was created.
    pub syncs: u64,
    /// Queue submissions since the device was created.
    pub submits: u64,
    /// Compute dispatches recorded since the device was created.
    pub dispatches: u64,
    pub pool: PoolStats,
}

/// A device and everything shared by the ops that run on it. Cheap to share by reference; all
/// interior state is behind locks so tests can share one `Gpu` across threads.
pub struct Gpu {
    /// Kept for presenting (a window's surface must come from the same instance and adapter).
    pub instance: wgpu::Instance,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    variant: AtomicU8,
    profile: AtomicBool,
    pub(crate) pipelines: PipelineCache,
    pub(crate) pool: Arc<Pool>,
    errors: Arc<Mutex<Vec<String>>>,
    pub(crate) syncs: AtomicU64,
    pub(crate) submits: AtomicU64,
    pub(crate) dispatches: AtomicU64,
    pub(crate) profile_log: Mutex<Vec<super::ProfileEntry>>,
}

impl Gpu {
    /// Creates a device on the default adapter with default options (blocking; native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Gpu> {
        Self::with_options(GpuOptions::default())
    }

    /// Creates a device with the given options (blocking; native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options(opts: GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new_async(opts))
    }

    /// Creates a device. On the web this is the only constructor.
    pub async fn new_async(opts: GpuOptions) -> Result<Gpu> {
        let env_backends = wgpu::Backends::from_env();
        let gl_asked = env_backends.is_some_and(|b| b.contains(wgpu::Backends::GL));
        let mut backends = env_backends.unwrap_or(wgpu::Backends::all());
        if !(opts.allow_gl || gl_asked) {
            backends.remove(wgpu::Backends::GL);
        }
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);

        let wanted_name = opts
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|s| !s.is_empty());
        let adapter = pick_adapter(&instance, backends, wanted_name.as_deref()).await?;
        let info = adapter.get_info();
        if info.backend == wgpu::Backend::Gl && !(opts.allow_gl || gl_asked) {
            return Err(Error::NoAdapter(format!(
                "only the OpenGL adapter '{}' was found; install Vulkan drivers \
                 (on Debian: apt-get install mesa-vulkan-drivers libvulkan1) or allow GL explicitly",
                info.name
            )));
        }

        let limits = adapter.limits();
        check_limits(&info.name, &limits)?;

        let optional = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let features = adapter.features() & optional;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("sparsett"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::NoAdapter(format!("'{}' refused a device: {e}", info.name)))?;

        // wgpu's default handler panics; collect errors instead and report them as `Error::Gpu`
        // at the next submit or read.
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));

        let variant = opts
            .variant
            .or_else(|| {
                std::env::var("SPARSETT_VARIANT")
                    .ok()
                    .and_then(|s| Variant::parse(&s).ok())
            })
            .unwrap_or(if info.device_type == wgpu::DeviceType::Cpu {
                Variant::Register
            } else {
                Variant::Tiled
            });
        let profile = opts.profile && features.contains(wgpu::Features::TIMESTAMP_QUERY);

        Ok(Gpu {
            pool: Arc::new(Pool::new(device.clone())),
            pipelines: PipelineCache::default(),
            instance,
            adapter,
            device,
            queue,
            info,
            features,
            limits,
            variant: AtomicU8::new(variant as u8),
            profile: AtomicBool::new(profile),
            errors,
            syncs: AtomicU64::new(0),
            submits: AtomicU64::new(0),
            dispatches: AtomicU64::new(0),
            profile_log: Mutex::new(Vec::new()),
        })
    }

    /// The kernel variant ops use when not told otherwise.
    pub fn variant(&self) -> Variant {
        if self.variant.load(Ordering::Relaxed) == Variant::Tiled as u8 {
            Variant::Tiled
        } else {
            Variant::Register
        }
    }

    pub fn set_variant(&self, v: Variant) {
        self.variant.store(v as u8, Ordering::Relaxed);
    }

    /// Whether dispatches record GPU timestamps.
    pub fn profiling(&self) -> bool {
        self.profile.load(Ordering::Relaxed)
    }

    /// Turns timestamp profiling on or off; returns false if the adapter has no timestamps.
    pub fn set_profiling(&self, on: bool) -> bool {
        let ok = !on || self.features.contains(wgpu::Features::TIMESTAMP_QUERY);
        self.profile.store(on && ok, Ordering::Relaxed);
        ok
    }

    /// Takes the timestamps collected since the last call.
    pub fn take_profile(&self) -> Vec<super::ProfileEntry> {
        std::mem::take(&mut *self.profile_log.lock().unwrap())
    }

    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    pub fn stats(&self) -> GpuStats {
        GpuStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            submits: self.submits.load(Ordering::Relaxed),
            dispatches: self.dispatches.load(Ordering::Relaxed),
            pool: self.pool.stats(),
        }
    }

    /// Returns the first GPU error reported since the last check, if any.
    pub fn check_errors(&self) -> Result<()> {
        let mut errs = self.errors.lock().unwrap();
        if errs.is_empty() {
            return Ok(());
        }
        let first = errs.remove(0);
        let more = errs.len();
        errs.clear();
        Err(Error::Gpu(if more > 0 {
            format!("{first} (and {more} more)")
        } else {
            first
        }))
    }

    /// Splits a 1-D count of workgroups into a grid that respects the per-dimension limit.
    /// Shaders recover the linear id as `wg.x + wg.y * num_workgroups.x`.
    pub fn grid(&self, groups: u64) -> [u32; 3] {
        let max = self.limits.max_compute_workgroups_per_dimension as u64;
        if groups <= max {
            [groups.max(1) as u32, 1, 1]
        } else {
            let y = groups.div_ceil(max);
            [groups.div_ceil(y) as u32, y as u32, 1]
        }
    }

    /// A one-paragraph description for `sparsett info` and benchmark headers.
    pub fn describe(&self) -> String {
        let i = &self.info;
        let mut feats = Vec::new();
        if self.has_f16() {
            feats.push("shader-f16");
        }
        if self.has_subgroups() {
            feats.push("subgroups");
        }
        if self.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            feats.push("timestamp-query");
        }
        let l = &self.limits;
        format!(
            "adapter:      {} ({:?}, {:?})\n\
             driver:       {} {}\n\
             features:     {}\n\
             subgroups:    size {}..{}\n\
             limits:       storage binding {} MiB, buffer {} MiB, workgroup memory {} KiB,\n\
             \x20             {} invocations/workgroup, {} workgroups/dimension, {} storage buffers/stage\n\
             kernels:      {} variant",
            i.name,
            i.backend,
            i.device_type,
            i.driver,
            i.driver_info,
            if feats.is_empty() {
                "none".to_string()
            } else {
                feats.join(", ")
            },
            i.subgroup_min_size,
            i.subgroup_max_size,
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
            self.variant().name(),
        )
    }

    /// Short adapter line for benchmark output.
    pub fn adapter_line(&self) -> String {
        format!(
            "{} ({:?}, {:?}, {} kernels)",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.variant().name()
        )
    }
}

async fn pick_adapter(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
    name: Option<&str>,
) -> Result<wgpu::Adapter> {
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(want) = name {
        let adapters = instance.enumerate_adapters(backends).await;
        let want_l = want.to_lowercase();
        let names: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&want_l))
            .ok_or_else(|| {
                Error::NoAdapter(format!(
                    "no adapter name contains '{want}' (WGPU_ADAPTER_NAME); found: {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            });
    }
    #[cfg(target_arch = "wasm32")]
    let _ = (backends, name);
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            Error::NoAdapter(format!(
                "{e} (backends tried: {backends:?}; on Debian install mesa-vulkan-drivers and \
                 libvulkan1 and set WGPU_BACKEND=vulkan)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webgpu_default_limits_suffice() {
        check_limits("webgpu defaults", &wgpu::Limits::default()).unwrap();
    }

    #[test]
    fn a_small_limit_is_named_with_the_values() {
        let l = wgpu::Limits {
            max_storage_buffer_binding_size: 64 << 20,
            ..Default::default()
        };
        let e = check_limits("tiny adapter", &l).unwrap_err();
        let msg = e.to_string();
        for part in [
            "tiny adapter",
            "max_storage_buffer_binding_size",
            "134217728",
            "67108864",
        ] {
            assert!(msg.contains(part), "'{part}' missing from: {msg}");
        }
        // WebGL2-class limits have no storage buffers at all: the first limit checked fails.
        let e = check_limits("gl", &wgpu::Limits::downlevel_webgl2_defaults()).unwrap_err();
        assert!(
            e.to_string()
                .contains("max_storage_buffer_binding_size must be at least 134217728, it is 0"),
            "{e}"
        );
    }
}
