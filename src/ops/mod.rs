//! Kernel families. Each module holds the shape checks and dispatch of its ops (shader in
//! `shaders/<family>.wgsl`) and, in its `cpu` submodule, plain-loop reference implementations
//! that the tests compare against.
pub mod attention;
pub mod conv;
pub mod crop;
pub mod decode;
pub mod elementwise;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod random;
pub mod reduce;
pub mod softmax;
pub mod topk;
pub mod window;

use crate::gpu::Tensor;
use crate::{Error, Result};

/// One of q, k or v inside a (possibly packed) activation. Element (b, i, h, d) of the logical
/// `[batch, len, heads·head_dim]` view lives at `b·len·stride + i·stride + offset + h·head_dim + d`,
/// so a packed qkv projection `[batch, len, 3·C]` yields q, k and v without copies
/// (offsets 0, C, 2C; stride 3C).
#[derive(Clone, Copy, Debug)]
pub struct HeadsView<'a> {
    pub t: &'a Tensor,
    pub batch: usize,
    pub len: usize,
    pub stride: usize,
    pub offset: usize,
}

impl<'a> HeadsView<'a> {
    /// A plain contiguous `[batch, len, width]` tensor.
    pub fn dense(t: &'a Tensor) -> Result<Self> {
        let s = t.shape();
        if s.len() != 3 {
            return Err(Error::shape(
                "attention",
                format!("expected a [batch, len, width] tensor, got {s:?}"),
            ));
        }
        Ok(HeadsView {
            t,
            batch: s[0],
            len: s[1],
            stride: s[2],
            offset: 0,
        })
    }

    /// Column block `index` of `parts` equal blocks of a packed `[batch, len, parts·C]` tensor.
    pub fn packed(t: &'a Tensor, parts: usize, index: usize) -> Result<Self> {
        let v = Self::dense(t)?;
        if parts == 0 || index >= parts || v.stride % parts != 0 {
            return Err(Error::shape(
                "attention",
                format!("cannot take block {index} of {parts} from {:?}", t.shape()),
            ));
        }
        Ok(HeadsView {
            offset: index * (v.stride / parts),
            ..v
        })
    }

    /// Checks that `width` columns from `offset` fit the rows and that the view fits the buffer.
    pub fn check(&self, op: &'static str, width: usize) -> Result<()> {
        let need = self.batch * self.len * self.stride;
        if self.offset + width > self.stride || need > self.t.numel() {
            return Err(Error::shape(
                op,
                format!(
                    "view (batch {}, len {}, stride {}, offset {}) with width {width} does not fit {:?}",
                    self.batch,
                    self.len,
                    self.stride,
                    self.offset,
                    self.t.shape()
                ),
            ));
        }
        Ok(())
    }
}
