//! The SparseTT model: weights, backbone, neck, head.
//!
//! `keys` (the official state-dict schema), `weights` (safetensors, torch zip checkpoints, golden
//! weights) and `pickle` (a safe pickle reader) load parameters; `swin`, `adjust`, `focus` and
//! `head` are the paper's parts; `sparsett` assembles them.

pub mod adjust;
pub mod config;
pub mod focus;
pub mod golden;
pub mod head;
pub mod keys;
pub mod load;
pub mod pickle;
pub mod sparsett;
pub mod swin;
pub mod taps;
pub mod weights;

pub use config::Config;
pub use load::WeightSource;
pub use sparsett::{SparseTT, TemplateFeatures, TrackOut, SCORE_SIDE, X_SIZE, Z_SIZE};
pub use taps::Taps;
