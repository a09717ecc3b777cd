//! Training (native only): targets, the learning-rate schedule and parameter groups, the model
//! on the tape (`swin`, `adjust`, `focus`, `head`, assembled by `net`, parameters in `params`),
//! the configuration file, checkpoints and the trainer.

pub mod adjust;
pub mod checkpoint;
pub mod config;
pub mod focus;
pub mod head;
pub mod net;
pub mod params;
pub mod schedule;
pub mod swin;
pub mod target;
pub mod trainer;
