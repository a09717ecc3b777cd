//! The SparseTT model: weights, backbone, neck, head.

pub mod keys;
pub mod pickle;
pub mod weights;
