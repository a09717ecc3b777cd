//! The double-head predictor: an fc-head (two 1×1 convs with ReLU) and a conv-head (a residual
//! block 2d→W then bottlenecks; officially 512→1024 then 7 bottlenecks of width 256), each ending in cls (1) and reg (4) 1×1 convs
//! with BatchNorm. All BatchNorms are folded into their convolutions at load time, and each
//! branch's cls and reg convs are stacked into one 1024→5 convolution.

use crate::gpu::Tensor;
use crate::model::config::Config;
use crate::model::load::Loader;
use crate::model::taps::Taps;
use crate::ops::conv::{conv2d, Conv2dOpts};
use crate::ops::decode::{decode, DecodeParams, Decoded};
use crate::ops::matmul::{matmul, Activation, Epilogue};
use crate::{Encoder, Result};

const EPS: f32 = 1e-5;
pub const STRIDE: f32 = 16.0;

struct Conv {
    w: Tensor,
    b: Tensor,
    pad: usize,
}

impl Conv {
    fn run(
        &self,
        enc: &mut Encoder,
        x: &Tensor,
        relu: bool,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let [co, ci, kh, kw] = [self.w.dim(0), self.w.dim(1), self.w.dim(2), self.w.dim(3)];
        if kh == 1 && kw == 1 && self.pad == 0 && residual.is_none() {
            // A 1×1 convolution is W·X per image: the matmul skips the convolution's im2col copy.
            let (b, h, w) = (x.dim(0), x.dim(2), x.dim(3));
            let y = matmul(
                enc,
                &self.w.reshape(&[co, ci])?,
                &x.reshape(&[b, ci, h * w])?,
                false,
                &Epilogue {
                    row_bias: Some(&self.b),
                    act: if relu {
                        Activation::Relu
                    } else {
                        Activation::None
                    },
                    ..Default::default()
                },
            )?;
            return y.reshape(&[b, co, h, w]);
        }
        let p = self.pad;
        conv2d(
            enc,
            x,
            &self.w,
            &Conv2dOpts {
                pad: [p, p, p, p],
                bias: Some(&self.b),
                relu,
                residual,
                ..Default::default()
            },
        )
    }
}

fn conv_bn(l: &Loader, conv: &str, bn: &str, shape: [usize; 4]) -> Result<Conv> {
    let (w, b) = l.conv_bn(conv, None, bn, shape, EPS)?;
    Ok(Conv {
        w,
        b,
        pad: shape[2] / 2,
    })
}

/// cls (1 channel) and reg (4 channels) convs of a branch, BN-folded and stacked: `[5, W, 1, 1]`.
fn cls_reg(l: &Loader, branch: &str, width: usize) -> Result<Conv> {
    let mut w = Vec::with_capacity(5 * width);
    let mut b = Vec::with_capacity(5);
    for (part, co) in [("cls", 1), ("reg", 4)] {
        let p = format!("head.{branch}_{part}");
        let wc = l.host(&format!("{p}.conv.weight"), &[co, width, 1, 1])?;
        let [g, beta, mean, var] = l.bn(&format!("{p}.bn"), co)?;
        let (wf, bf) =
            crate::ops::conv::fold_batch_norm(&wc, None, co, &g, &beta, &mean, &var, EPS);
        w.extend(wf);
        b.extend(bf);
    }
    Ok(Conv {
        w: l.gpu.upload(&[5, width, 1, 1], &w)?,
        b: l.gpu.upload(&[5], &b)?,
        pad: 0,
    })
}

struct Bottleneck {
    c1: Conv,
    c2: Conv,
    c3: Conv,
}

pub struct Head {
    fc1: Conv,
    fc2: Conv,
    fc_out: Conv,
    res_c1: Conv,
    res_c2: Conv,
    res_id: Conv,
    bottlenecks: Vec<Bottleneck>,
    conv_out: Conv,
    params: DecodeParams,
}

/// Head outputs: the two branches' stacked cls/reg maps `[B, 5, 19, 19]` and the decoded boxes.
pub struct HeadOut {
    pub fc: Tensor,
    pub conv: Tensor,
    pub decoded: Decoded,
}

impl Head {
    pub(crate) fn load(l: &Loader, cfg: &Config) -> Result<Head> {
        let (inp, width, bw) = (cfg.head_in(), cfg.head_width, cfg.bottleneck);
        let plain = |key: &str, shape: [usize; 4]| -> Result<Conv> {
            Ok(Conv {
                w: l.tensor(&format!("{key}.weight"), &shape)?,
                b: l.tensor(&format!("{key}.bias"), &[shape[0]])?,
                pad: 0,
            })
        };
        let r = "head.conv_branch.0";
        let bottlenecks = (1..=cfg.head_convs)
            .map(|i| {
                let p = format!("head.conv_branch.{i}");
                Ok(Bottleneck {
                    c1: conv_bn(
                        l,
                        &format!("{p}.conv1.weight"),
                        &format!("{p}.bn1"),
                        [bw, width, 1, 1],
                    )?,
                    c2: conv_bn(
                        l,
                        &format!("{p}.conv2.weight"),
                        &format!("{p}.bn2"),
                        [bw, bw, 3, 3],
                    )?,
                    c3: conv_bn(
                        l,
                        &format!("{p}.conv3.weight"),
                        &format!("{p}.bn3"),
                        [width, bw, 1, 1],
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Head {
            fc1: plain("head.fc_branch.0", [width, inp, 1, 1])?,
            fc2: plain("head.fc_branch.2", [width, width, 1, 1])?,
            fc_out: cls_reg(l, "fc_branch", width)?,
            res_c1: conv_bn(
                l,
                &format!("{r}.conv1.conv.weight"),
                &format!("{r}.conv1.bn"),
                [inp, inp, 3, 3],
            )?,
            res_c2: conv_bn(
                l,
                &format!("{r}.conv2.conv.weight"),
                &format!("{r}.conv2.bn"),
                [width, inp, 1, 1],
            )?,
            res_id: conv_bn(
                l,
                &format!("{r}.conv_identity.conv.weight"),
                &format!("{r}.conv_identity.bn"),
                [width, inp, 1, 1],
            )?,
            bottlenecks,
            conv_out: cls_reg(l, "conv_branch", width)?,
            params: DecodeParams {
                si_fc: l.scalar("head.si_fc")?,
                bi_fc: l.scalar("head.bi_fc")?,
                si_conv: l.scalar("head.si_conv")?,
                bi_conv: l.scalar("head.bi_conv")?,
                stride: STRIDE,
                offset: 0.0,
            },
        })
    }

    /// `x`: the neck output `[B, 2d, 19, 19]`.
    pub fn forward(&self, enc: &mut Encoder, x: &Tensor, taps: &mut Taps) -> Result<HeadOut> {
        let f = self.fc1.run(enc, x, true, None)?;
        let f = self.fc2.run(enc, &f, true, None)?;
        taps.put("head.fc_branch_feat", &f);
        let fc = self.fc_out.run(enc, &f, false, None)?;

        let id = self.res_id.run(enc, x, false, None)?;
        let h = self.res_c1.run(enc, x, true, None)?;
        let mut c = self.res_c2.run(enc, &h, true, Some(&id))?;
        for b in &self.bottlenecks {
            let h = b.c1.run(enc, &c, true, None)?;
            let h = b.c2.run(enc, &h, true, None)?;
            c = b.c3.run(enc, &h, true, Some(&c))?;
        }
        taps.put("head.conv_branch_feat", &c);
        let conv = self.conv_out.run(enc, &c, false, None)?;
        let decoded = decode(enc, &fc, &conv, &self.params)?;
        Ok(HeadOut { fc, conv, decoded })
    }
}
