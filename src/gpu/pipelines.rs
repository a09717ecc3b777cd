//! Compute pipelines compiled once per (shader, entry point, override constants) and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::Gpu;
use crate::{Error, Result};

/// Optional capabilities a shader file uses; the right `enable` directives are prepended per target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ShaderNeeds {
    pub f16: bool,
    pub subgroups: bool,
}

/// A WGSL source file from `shaders/`, embedded in the binary.
#[derive(Debug)]
pub struct Shader {
    /// File name, used as the cache key and in error messages (e.g. `matmul.wgsl`).
    pub name: &'static str,
    pub source: &'static str,
    pub needs: ShaderNeeds,
}

/// Declares a `Shader` for a file in `shaders/`: `shader!(MATMUL, "matmul.wgsl")`.
#[macro_export]
macro_rules! shader {
    ($ident:ident, $file:literal) => {
        $crate::shader!(
            $ident,
            $file,
            $crate::gpu::ShaderNeeds {
                f16: false,
                subgroups: false
            }
        );
    };
    ($ident:ident, $file:literal, $needs:expr) => {
        pub static $ident: $crate::gpu::Shader = $crate::gpu::Shader {
            name: $file,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file)),
            needs: $needs,
        };
    };
}

pub(crate) struct CachedPipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

type Key = (&'static str, String, Vec<(String, u64)>);
type Slot = OnceLock<Result<Arc<CachedPipeline>, String>>;

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    /// One slot per key, filled once: threads that miss together wait for a single compile
    /// instead of each compiling the same (possibly very large) kernel.
    pipelines: Mutex<HashMap<Key, Arc<Slot>>>,
}

impl PipelineCache {
    pub(crate) fn len(&self) -> usize {
        let map = self.pipelines.lock().unwrap();
        map.values()
            .filter(|s| matches!(s.get(), Some(Ok(_))))
            .count()
    }
}

fn preamble(needs: ShaderNeeds) -> String {
    let mut p = String::new();
    if needs.f16 {
        p.push_str("enable f16;\n");
    }
    // Chrome requires the directive; naga rejects it, and the builtins work without it there.
    if needs.subgroups && cfg!(target_arch = "wasm32") {
        p.push_str("enable subgroups;\n");
    }
    p
}

impl Gpu {
    /// The pipeline for `entry` of `shader` with the given override constants, compiled on first use.
    pub(crate) fn pipeline(
        &self,
        shader: &'static Shader,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<Arc<CachedPipeline>> {
        let key: Key = (
            shader.name,
            entry.to_string(),
            constants
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_bits()))
                .collect(),
        );
        let slot = self
            .pipelines
            .pipelines
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .clone();
        let compiled = slot.get_or_init(|| {
            self.compile(shader, entry, constants)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
        match compiled {
            Ok(p) => Ok(p.clone()),
            Err(msg) => Err(Error::Gpu(msg.clone())),
        }
    }

    fn compile(
        &self,
        shader: &'static Shader,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<CachedPipeline> {
        if shader.needs.f16 && !self.has_f16() {
            return Err(Error::Other(format!(
                "{}: needs the shader-f16 feature, which '{}' lacks",
                shader.name, self.info.name
            )));
        }
        if shader.needs.subgroups && !self.has_subgroups() {
            return Err(Error::Other(format!(
                "{}: needs subgroups, which '{}' lacks",
                shader.name, self.info.name
            )));
        }
        // The browser cannot wait for a scope's verdict, and a scope popped unread would swallow
        // the compiler's message: there the uncaptured-error sink reports it at the next read.
        #[cfg(not(target_arch = "wasm32"))]
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut modules = self.pipelines.modules.lock().unwrap();
            modules
                .entry(shader.name)
                .or_insert_with(|| {
                    let src = format!("{}{}", preamble(shader.needs), shader.source);
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(shader.name),
                            source: wgpu::ShaderSource::Wgsl(src.into()),
                        })
                })
                .clone()
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster_block(scope.pop()) {
            return Err(Error::Gpu(format!(
                "compiling {} entry '{entry}' failed: {e}",
                shader.name
            )));
        }
        let layout = pipeline.get_bind_group_layout(0);
        Ok(CachedPipeline { pipeline, layout })
    }

    /// Number of distinct pipelines compiled so far.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }

    /// Releases idle pooled buffers.
    pub fn trim_pool(&self) {
        self.pool.trim();
    }
}

// Error scopes resolve immediately on native.
#[cfg(not(target_arch = "wasm32"))]
fn pollster_block<F: std::future::Future<Output = Option<wgpu::Error>>>(
    f: F,
) -> Option<wgpu::Error> {
    pollster::block_on(f)
}
