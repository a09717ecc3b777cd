//! The whole SparseTT training graph on the tape: Swin backbone on both crops (shared weights,
//! gradients added up) → adjusters → focus network → `concat(decoder output, adjusted search
//! features)` → double head, and the four weighted losses (focal 1.4 / IoU 0.6 / focal 0.5 /
//! IoU 2.0) with their sum.

use crate::autograd::{ops, Tape, Var};
use crate::model::config::Config;
use crate::model::load::WeightSource;
use crate::ops::loss::LossConfig;
use crate::train::head::HeadOut;
use crate::train::params::Params;
use crate::train::swin::{Swin, SwinOpts};
use crate::train::{adjust, focus, head};
use crate::{Encoder, Error, Gpu, Result, Tensor};

/// Template / search crop sizes and their token maps.
pub const Z_SIZE: usize = 127;
pub const X_SIZE: usize = 289;

/// The trainable model: backbone and the rest, parameters by official key.
pub struct Net {
    pub swin: Swin,
    pub params: Params,
    pub config: Config,
}

/// The random layers of a training step; the default (all off) is the golden step and evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrainOpts {
    /// The backbone's stochastic depth (see [`SwinOpts::drop_path_rate`]).
    pub drop_path_rate: f32,
    /// The neck's dropout probability (the official `prob_dropout`; see [`focus::NeckDropout`]).
    pub neck_dropout: f32,
    /// Seed of every mask of the step; give each step its own.
    pub seed: u64,
}

/// Head predictions of a batch of pairs.
pub type Predictions = HeadOut;

/// The loss terms (each `[1]`, already weighted) and their sum, the root of the backward.
pub struct Losses {
    pub cls_fc: Var,
    pub reg_fc: Var,
    pub cls_conv: Var,
    pub reg_conv: Var,
    pub total: Var,
}

impl Net {
    /// Loads the official architecture's trainable parameters from `weights` (official keys).
    pub fn load(gpu: &Gpu, weights: &dyn WeightSource) -> Result<Net> {
        Net::load_with(gpu, weights, &Config::official())
    }

    /// Loads the trainable parameters of architecture `config` from `weights`.
    pub fn load_with(gpu: &Gpu, weights: &dyn WeightSource, config: &Config) -> Result<Net> {
        config.validate()?;
        let swin = Swin::load(gpu, weights, config)?;
        let (zs, xs) = (Z_SIZE.div_ceil(16), X_SIZE.div_ceil(16));
        let mut p = focus::keys(config, zs, xs);
        let mut b = Vec::new();
        for name in ["feat_adjuster_z", "feat_adjuster_x"] {
            let [ap, ab] = adjust::keys(config, name);
            p.extend(ap);
            b.extend(ab);
        }
        let [hp, hb] = head::keys(config);
        p.extend(hp);
        b.extend(hb);
        let mut params = Params::load(gpu, weights, &p, &b)?;
        head::decode_constants(gpu, &mut params, xs)?;
        Ok(Net {
            swin,
            params,
            config: config.clone(),
        })
    }

    /// Every trainable (key, tensor): backbone first, then adjusters, neck and head.
    pub fn param_list(&self) -> Vec<(String, Tensor)> {
        let mut v = self.swin.params().to_vec();
        v.extend(self.params.list().iter().cloned());
        v
    }

    /// Predictions for normalised RGB crops `z` `[B, 3, 127, 127]` and `x` `[B, 3, 289, 289]`,
    /// with every stochastic layer off (the golden step).
    pub fn forward(
        &self,
        tape: &mut Tape,
        enc: &mut Encoder,
        z: &Var,
        x: &Var,
    ) -> Result<Predictions> {
        self.forward_with(tape, enc, z, x, &TrainOpts::default())
    }

    /// [`Net::forward`] with the training's random layers (`opts`): the backbone's stochastic
    /// depth (the search crop draws its masks from the seed + 1, so the two crops drop
    /// independently) and the neck's dropout.
    pub fn forward_with(
        &self,
        tape: &mut Tape,
        enc: &mut Encoder,
        z: &Var,
        x: &Var,
        opts: &TrainOpts,
    ) -> Result<Predictions> {
        self.forward_probed(tape, enc, z, x, opts, &head::Probe::default())
    }

    /// [`Net::forward_with`] with the head's parity-test hooks ([`head::Probe`]).
    pub fn forward_probed(
        &self,
        tape: &mut Tape,
        enc: &mut Encoder,
        z: &Var,
        x: &Var,
        opts: &TrainOpts,
        probe: &head::Probe,
    ) -> Result<Predictions> {
        let p = &self.params;
        let zo = SwinOpts {
            drop_path_rate: opts.drop_path_rate,
            seed: opts.seed,
        };
        let zt = self.swin.forward_with(tape, enc, z, &zo)?;
        let xo = SwinOpts {
            seed: opts.seed.wrapping_add(1),
            ..zo
        };
        let xt = self.swin.forward_with(tape, enc, x, &xo)?;
        let cf = &self.config;
        let za = adjust::forward(p, cf, tape, enc, "feat_adjuster_z", &zt)?;
        let xa = adjust::forward(p, cf, tape, enc, "feat_adjuster_x", &xt)?;
        let drop = focus::NeckDropout {
            p: opts.neck_dropout,
            seed: opts.seed,
        };
        let dec = focus::forward(p, cf, tape, enc, &za, &xa, drop)?;
        let (b, l, c) = (xa.dim(0), xa.dim(1), xa.dim(2));
        let side = (l as f64).sqrt().round() as usize;
        if side * side != l {
            return Err(Error::shape(
                "train::Net",
                format!("the search map has {l} tokens, not a square"),
            ));
        }
        let nchw = |tape: &mut Tape, enc: &mut Encoder, t: &Var| -> Result<Var> {
            let t = ops::permute(tape, enc, t, &[0, 2, 1])?;
            ops::reshape(tape, &t, &[b, c, side, side])
        };
        let d = nchw(tape, enc, &dec)?;
        let xa4 = nchw(tape, enc, &xa)?;
        let neck = ops::concat(tape, enc, &[&d, &xa4], 1)?;
        head::forward(p, cf, tape, enc, &neck, probe)
    }

    /// The four SparseTT losses of `pred` against the constant targets: `labels` `[B, cells, 1]`
    /// (1 / 0 / −1 ignored) and `box_gt` `[B, cells, 4]` xyxy.
    pub fn losses(
        tape: &mut Tape,
        enc: &mut Encoder,
        pred: &Predictions,
        labels: &Tensor,
        box_gt: &Tensor,
        cfg: &LossConfig,
    ) -> Result<Losses> {
        let batch = pred.cls_fc.dim(0);
        let focal = |w: f32| crate::ops::loss::Focal {
            alpha: cfg.alpha,
            gamma: cfg.gamma,
            weight: w,
        };
        let cls_fc = ops::focal_loss(tape, enc, &pred.cls_fc, labels, &focal(cfg.w_cls_fc), batch)?;
        let cls_conv = ops::focal_loss(
            tape,
            enc,
            &pred.cls_conv,
            labels,
            &focal(cfg.w_cls_conv),
            batch,
        )?;
        let r = ops::iou_loss(tape, enc, &pred.bbox_fc, box_gt, labels, cfg.w_reg_fc)?;
        let reg_fc = ops::slice(tape, enc, &r, 0, 0, 1)?;
        let r = ops::iou_loss(tape, enc, &pred.bbox_conv, box_gt, labels, cfg.w_reg_conv)?;
        let reg_conv = ops::slice(tape, enc, &r, 0, 0, 1)?;
        let t = ops::add(tape, enc, &cls_fc, &reg_fc)?;
        let t = ops::add(tape, enc, &t, &cls_conv)?;
        let total = ops::add(tape, enc, &t, &reg_conv)?;
        Ok(Losses {
            cls_fc,
            reg_fc,
            cls_conv,
            reg_conv,
            total,
        })
    }
}

/// BGR u8 crops `[B, S, S, 3]` (HWC, as frames are read) → normalised RGB NCHW f32
/// `(v − mean)/std` with the spec's mean and std.
pub fn normalize_bgr(bgr: &[u8], batch: usize, size: usize) -> Vec<f32> {
    let (mean, std) = (crate::tracker::MEAN, crate::tracker::STD);
    let hw = size * size;
    let mut out = vec![0f32; batch * 3 * hw];
    for b in 0..batch {
        for i in 0..hw {
            for c in 0..3 {
                let v = bgr[(b * hw + i) * 3 + (2 - c)] as f32;
                out[(b * 3 + c) * hw + i] = (v - mean[c]) / std[c];
            }
        }
    }
    out
}
