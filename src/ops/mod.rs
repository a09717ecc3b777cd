//! Kernel families. Each module holds the shape checks and dispatch of its ops (shader in
//! `shaders/<family>.wgsl`) and, in its `cpu` submodule, plain-loop reference implementations
//! that the tests compare against.
pub mod elementwise;
pub mod matmul;
pub mod conv;
pub mod norm;
pub mod softmax;
pub mod layout;
pub mod window;
pub mod attention;
pub mod topk;
