pub mod swin;
