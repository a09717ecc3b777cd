//! The command implementations behind `src/main.rs` (argument parsing stays there).

pub mod bench;
pub mod eval;
pub mod forward;
pub mod show;
pub mod synth;
pub mod track;
pub mod train;
pub mod weights;
