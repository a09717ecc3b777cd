//! Training: targets, losses' host side, learning-rate schedule and parameter groups.
pub mod schedule;
pub mod swin;
pub mod target;
