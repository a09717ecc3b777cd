//! Training (native only): targets, the learning-rate schedule and parameter groups, the model
//! on the tape, the configuration file, checkpoints and the trainer.

pub mod checkpoint;
pub mod config;
pub mod schedule;
pub mod target;
pub mod trainer;
