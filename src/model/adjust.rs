//! Feature adjusters: conv 1×1 4C→d_model (384→256) with bias, then BatchNorm (eps 1e-3), no activation.
//! The BatchNorm is folded into the convolution at load time, leaving one matmul.

use crate::gpu::Tensor;
use crate::model::config::Config;
use crate::model::load::Loader;
use crate::ops::matmul::{linear, Epilogue};
use crate::{Encoder, Result};

pub struct Adjuster {
    w: Tensor,
    b: Tensor,
}

impl Adjuster {
    pub(crate) fn load(l: &Loader, name: &str, cfg: &Config) -> Result<Adjuster> {
        let (inp, out) = (cfg.backbone_out(), cfg.d_model);
        let (w, b) = l.conv_bn(
            &format!("{name}.conv.weight"),
            Some(&format!("{name}.conv.bias")),
            &format!("{name}.bn"),
            [out, inp, 1, 1],
            1e-3,
        )?;
        Ok(Adjuster {
            w: w.reshape(&[out, inp])?,
            b,
        })
    }

    /// Tokens `[B, L, 4C]` → `[B, L, d_model]` (a 1×1 convolution is a per-token linear map).
    pub fn forward(&self, enc: &mut Encoder, x: &Tensor) -> Result<Tensor> {
        linear(
            enc,
            x,
            &self.w,
            &Epilogue {
                bias: Some(&self.b),
                ..Default::default()
            },
        )
    }
}
