//! Kernel tests: every GPU kernel against its CPU reference, on one shared device.
//! Run with `WGPU_BACKEND=vulkan cargo test --test ops` (lavapipe works).

mod common;

mod elementwise;
mod matmul;
mod conv;
mod norm;
mod softmax;
mod layout;
mod window;
mod attention;
mod topk;
mod decode;
