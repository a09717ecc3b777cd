//! sparsett: the SparseTT visual object tracker with every layer a WGSL compute shader on wgpu.
//!
//! Floors, from the ground up: [`gpu`] (device, tensors, pool, pipelines, encoder) → [`ops`]
//! (one module per kernel family, each with its CPU reference) → [`model`] → [`tracker`];
//! around them, native only: [`video`] input/output, [`render`] (boxes on frames) and [`eval`]
//! (benchmark datasets, toolkit metrics, plots).

pub mod autograd;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod data;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
pub mod fsio;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod prng;
#[cfg(not(target_arch = "wasm32"))]
pub mod render;
#[cfg(not(target_arch = "wasm32"))]
pub mod synth;
pub mod tracker;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;
#[cfg(not(target_arch = "wasm32"))]
pub mod video;

pub use error::{Error, Result};
pub use gpu::{DType, Encoder, Gpu, GpuOptions, Tensor, Variant};
