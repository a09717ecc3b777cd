//! Training: targets, losses' host side, learning-rate schedule and parameter groups.
pub mod adjust;
pub mod focus;
pub mod head;
pub mod net;
pub mod params;
pub mod schedule;
pub mod swin;
pub mod target;
