//! One error type for the whole crate: every failure a user can cause (bad shapes, limits, files)
//! becomes a value that names the op, the shapes and the limit involved, never a panic.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// No adapter could be found, or the one asked for is unusable.
    #[error("no usable GPU adapter: {0}")]
    NoAdapter(String),

    /// The adapter exists but one of its limits is below what sparsett needs.
    #[error(
        "adapter '{adapter}' is too limited: {limit} must be at least {needed}, it is {found}"
    )]
    Limit {
        adapter: String,
        limit: &'static str,
        needed: u64,
        found: u64,
    },

    /// Tensor shapes that an op cannot accept.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },

    /// A tensor or a dispatch larger than the device allows.
    #[error("{op}: {what} is {value}, over the device limit {limit_name} = {limit}")]
    TooLarge {
        op: &'static str,
        what: String,
        value: u64,
        limit_name: &'static str,
        limit: u64,
    },

    /// An error reported by wgpu (validation, out of memory, device lost).
    #[error("GPU error: {0}")]
    Gpu(String),

    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Anything else the user should read as one line.
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for shape errors, the most common kind.
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }
}
