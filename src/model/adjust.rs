//! Feature adjusters: conv 1×1 384→256 with bias, then BatchNorm (eps 1e-3), no activation.
//! The BatchNorm is folded into the convolution at load time, leaving one matmul.

use crate::gpu::Tensor;
use crate::model::load::Loader;
use crate::ops::matmul::{matmul, Epilogue};
use crate::{Encoder, Result};

pub const IN: usize = 384;
pub const OUT: usize = 256;

pub struct Adjuster {
    w: Tensor,
    b: Tensor,
}

impl Adjuster {
    pub(crate) fn load(l: &Loader, name: &str) -> Result<Adjuster> {
        let (w, b) = l.conv_bn(
            &format!("{name}.conv.weight"),
            Some(&format!("{name}.conv.bias")),
            &format!("{name}.bn"),
            [OUT, IN, 1, 1],
            1e-3,
        )?;
        Ok(Adjuster {
            w: w.reshape(&[OUT, IN])?,
            b,
        })
    }

    /// `x`: `[B, 384, h, w]` → `[B, 256, h, w]`.
    pub fn forward(&self, enc: &mut Encoder, x: &Tensor) -> Result<Tensor> {
        let (b, h, w) = (x.dim(0), x.dim(2), x.dim(3));
        let y = matmul(
            enc,
            &self.w,
            &x.reshape(&[b, IN, h * w])?,
            false,
            &Epilogue {
                row_bias: Some(&self.b),
                ..Default::default()
            },
        )?;
        y.reshape(&[b, OUT, h, w])
    }
}
