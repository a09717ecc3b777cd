//! Training: the configuration file, checkpoints and the trainer.

pub mod checkpoint;
pub mod config;
pub mod trainer;
