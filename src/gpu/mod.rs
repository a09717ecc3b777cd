//! The GPU runtime: adapter and device ([`Gpu`]), tensors in pooled buffers ([`Tensor`]), the
//! pipeline cache, and the [`Encoder`] that records many dispatches into one submission.

mod context;
mod encoder;
mod pipelines;
mod pool;
mod tensor;

pub use context::{check_limits, Gpu, GpuOptions, GpuStats, Variant};
pub use encoder::{Encoder, ProfileEntry};
pub use pipelines::{Shader, ShaderNeeds};
pub use pool::PoolStats;
pub use tensor::{DType, Tensor};
