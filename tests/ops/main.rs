//! Kernel tests: every GPU kernel against its CPU reference, on one shared device.
//! Run with `WGPU_BACKEND=vulkan cargo test --test ops` (lavapipe works).

mod common;

mod attention;
mod conv;
mod crop;
mod decode;
mod elementwise;
mod layout;
mod matmul;
mod norm;
mod optim;
mod random;
mod reduce;
mod runtime;
mod softmax;
mod topk;
mod window;
