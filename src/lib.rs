//! sparsett: the SparseTT visual object tracker with every layer a WGSL compute shader on wgpu.
//!
//! Floors, from the ground up: [`gpu`] (device, tensors, pool, pipelines, encoder) → [`ops`]
//! (one module per kernel family, each with its CPU reference) → model → tracker.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod error;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod prng;

pub use error::{Error, Result};
pub use gpu::{DType, Encoder, Gpu, GpuOptions, Tensor, Variant};
