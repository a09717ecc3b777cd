//! SparseTT's training losses (shader: `shaders/loss.wgsl`), the official `FocalLoss` and
//! `IOULoss` of its training config. Labels per cell: 1 positive, 0 negative, −1 ignored;
//! `npos = max(#cells with label > 0 in the whole batch, 1)`.
//!
//! ```text
//! focal = weight/npos · Σ_{label ≠ −1} α_t·(1 − p_t)^γ·BCE(x, t),   t = [label > 0], p = σ(x),
//!         p_t = t ? p : 1 − p,  α_t = t ? α : 1 − α
//! iou   = weight/npos · Σ_{label > 0} −log(max(IoU, f32::MIN_POSITIVE)),
//!         IoU = max(inter / (A_p + A_g − inter), 0),  A = |x2 − x1 + 1|·|y2 − y1 + 1|,
//!         inter = max(min(x2) − max(x1) + 1, 0)·max(min(y2) − max(y1) + 1, 0)
//! total = cls_fc + reg_fc + cls_conv + reg_conv   (each term already weighted)
//! ```
//!
//! Forward results stay on the GPU ([`sparsett_losses`] returns one small tensor); backward
//! passes take the upstream gradient `dloss` as a `[1]` GPU tensor and add into their outputs.

use crate::gpu::{DType, Encoder, Tensor};
use crate::{shader, Error, Result};

shader!(LOSS, "loss.wgsl");

/// Sigmoid focal loss hyper-parameters (weight included).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Focal {
    pub alpha: f32,
    pub gamma: f32,
    pub weight: f32,
}

/// SparseTT's four loss weights and the focal parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    pub alpha: f32,
    pub gamma: f32,
    pub w_cls_fc: f32,
    pub w_reg_fc: f32,
    pub w_cls_conv: f32,
    pub w_reg_conv: f32,
}

impl Default for LossConfig {
    /// The official training config: α 0.75, γ 2, weights 1.4 / 0.6 / 0.5 / 2.0.
    fn default() -> Self {
        LossConfig {
            alpha: 0.75,
            gamma: 2.0,
            w_cls_fc: 1.4,
            w_reg_fc: 0.6,
            w_cls_conv: 0.5,
            w_reg_conv: 2.0,
        }
    }
}

impl LossConfig {
    fn focal(&self, weight: f32) -> Focal {
        Focal {
            alpha: self.alpha,
            gamma: self.gamma,
            weight,
        }
    }
}

/// Slots of the tensor [`sparsett_losses`] returns.
pub mod slot {
    pub const CLS_FC: usize = 0;
    pub const REG_FC: usize = 1;
    pub const CLS_CONV: usize = 2;
    pub const REG_CONV: usize = 3;
    pub const TOTAL: usize = 4;
    /// Mean IoU over positive cells (the official `extra`), not part of the loss.
    pub const IOU_FC: usize = 5;
    pub const IOU_CONV: usize = 6;
    pub const COUNT: usize = 7;
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    out_off: u32,
    extra_off: u32,
    cells: u32,
    ostride: u32,
    _pad: [u32; 3],
    alpha: f32,
    gamma: f32,
    weight: f32,
    _pad3: f32,
}

fn count(op: &'static str, t: &Tensor) -> Result<u32> {
    u32::try_from(t.numel())
        .map_err(|_| Error::shape(op, format!("{:?} exceeds u32 indexing", t.shape())))
}

fn check_f32(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::shape(op, format!("{what} must be f32, got {t:?}")));
    }
    Ok(())
}

/// Logits and labels: f32 with one value per cell each (any shape, same element count).
fn check_cls(op: &'static str, logits: &Tensor, labels: &Tensor) -> Result<u32> {
    check_f32(op, "logits", logits)?;
    check_f32(op, "labels", labels)?;
    if logits.numel() != labels.numel() || logits.numel() == 0 {
        return Err(Error::shape(
            op,
            format!(
                "logits {:?} and labels {:?} must hold the same (non-zero) number of cells",
                logits.shape(),
                labels.shape()
            ),
        ));
    }
    count(op, logits)
}

/// Boxes `[…, 4]` (xyxy) for every label.
fn check_boxes(op: &'static str, pred: &Tensor, gt: &Tensor, labels: &Tensor) -> Result<u32> {
    for (what, t) in [("pred", pred), ("gt", gt), ("labels", labels)] {
        check_f32(op, what, t)?;
    }
    let ok = pred.shape() == gt.shape()
        && pred.shape().last() == Some(&4)
        && pred.numel() == 4 * labels.numel()
        && labels.numel() > 0;
    if !ok {
        return Err(Error::shape(
            op,
            format!(
                "pred {:?} and gt {:?} must be equal [cells…, 4] boxes, one per label of {:?}",
                pred.shape(),
                gt.shape(),
                labels.shape()
            ),
        ));
    }
    count(op, labels)
}

fn check_dest(op: &'static str, out: &Tensor, need: usize) -> Result<()> {
    check_f32(op, "out", out)?;
    if out.numel() < need {
        return Err(Error::shape(
            op,
            format!("out {:?} has no slot {}", out.shape(), need - 1),
        ));
    }
    Ok(())
}

fn check_scalar(op: &'static str, dloss: &Tensor) -> Result<()> {
    check_f32(op, "dloss", dloss)?;
    if dloss.numel() != 1 {
        return Err(Error::shape(
            op,
            format!("dloss {:?} must be one scalar", dloss.shape()),
        ));
    }
    Ok(())
}

/// The focal loss (see the module doc) into `out[slot]`. One workgroup; deterministic.
pub fn focal_loss_to(
    enc: &mut Encoder,
    logits: &Tensor,
    labels: &Tensor,
    f: &Focal,
    out: &Tensor,
    slot: usize,
) -> Result<()> {
    const OP: &str = "focal_loss";
    let n = check_cls(OP, logits, labels)?;
    check_dest(OP, out, slot + 1)?;
    let p = Params {
        n,
        out_off: slot as u32,
        alpha: f.alpha,
        gamma: f.gamma,
        weight: f.weight,
        ..Params::default()
    };
    enc.dispatch(
        &LOSS,
        "focal_fwd",
        &[],
        bytemuck::bytes_of(&p),
        &[logits, labels, out],
        [1, 1, 1],
    )
}

/// The focal loss as a fresh `[1]` tensor.
pub fn focal_loss(
    enc: &mut Encoder,
    logits: &Tensor,
    labels: &Tensor,
    f: &Focal,
) -> Result<Tensor> {
    let out = enc.gpu().empty("focal_loss", &[1], DType::F32)?;
    focal_loss_to(enc, logits, labels, f, &out, 0)?;
    Ok(out)
}

/// `[max(#positives, 1)]` on the GPU.
fn positives(enc: &mut Encoder, op: &'static str, labels: &Tensor, n: u32) -> Result<Tensor> {
    let cnt = enc.gpu().empty(op, &[1], DType::F32)?;
    let p = Params {
        n,
        ..Params::default()
    };
    enc.dispatch(
        &LOSS,
        "count_pos",
        &[],
        bytemuck::bytes_of(&p),
        &[labels, &cnt],
        [1, 1, 1],
    )?;
    Ok(cnt)
}

/// Gradient of [`focal_loss`] w.r.t. the logits times `dloss`, added into `into` (or a fresh
/// zero tensor shaped like `logits`). `into` may hold the logits alone (as many elements) or be
/// a `[B, C, …]` head output whose channel 0 are the logits of batch item b (B = `batch`,
/// `C·cells` elements per item): then only channel 0 is touched.
pub fn focal_loss_backward(
    enc: &mut Encoder,
    logits: &Tensor,
    labels: &Tensor,
    f: &Focal,
    batch: usize,
    dloss: &Tensor,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "focal_loss_backward";
    let n = check_cls(OP, logits, labels)?;
    check_scalar(OP, dloss)?;
    if batch == 0 || n as usize % batch != 0 {
        return Err(Error::shape(
            OP,
            format!("{n} cells do not split into batch {batch}"),
        ));
    }
    let cells = n as usize / batch;
    let dx = match into {
        Some(t) => {
            check_f32(OP, "into", t)?;
            let per = t.numel() / batch;
            let ok = t.numel() % batch == 0
                && per % cells == 0
                && (t.numel() == n as usize || t.shape().first() == Some(&batch));
            if !ok || [logits, labels, dloss].iter().any(|x| same(x, t)) {
                return Err(Error::shape(
                    OP,
                    format!(
                        "into {:?} must be a separate f32 tensor of the logits' {n} cells or [{batch}, C, …] with channel 0 the logits",
                        t.shape()
                    ),
                ));
            }
            t.clone()
        }
        None => enc.gpu().zeros(logits.shape())?,
    };
    let cnt = positives(enc, OP, labels, n)?;
    let p = Params {
        n,
        cells: cells as u32,
        ostride: (dx.numel() / batch) as u32,
        alpha: f.alpha,
        gamma: f.gamma,
        weight: f.weight,
        ..Params::default()
    };
    let grid = enc.gpu().grid((n as u64).div_ceil(64));
    enc.dispatch(
        &LOSS,
        "focal_bwd",
        &[],
        bytemuck::bytes_of(&p),
        &[logits, labels, &cnt, dloss, &dx],
        grid,
    )?;
    Ok(dx)
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    std::sync::Arc::ptr_eq(a.pooled(), b.pooled())
}

/// The IoU loss into `out[slot]` and the mean IoU of the positive cells into `out[iou_slot]`.
#[allow(clippy::too_many_arguments)]
pub fn iou_loss_to(
    enc: &mut Encoder,
    pred: &Tensor,
    gt: &Tensor,
    labels: &Tensor,
    weight: f32,
    out: &Tensor,
    slot: usize,
    iou_slot: usize,
) -> Result<()> {
    const OP: &str = "iou_loss";
    let n = check_boxes(OP, pred, gt, labels)?;
    check_dest(OP, out, slot.max(iou_slot) + 1)?;
    let p = Params {
        n,
        out_off: slot as u32,
        extra_off: iou_slot as u32,
        weight,
        ..Params::default()
    };
    enc.dispatch(
        &LOSS,
        "iou_fwd",
        &[],
        bytemuck::bytes_of(&p),
        &[pred, gt, labels, out],
        [1, 1, 1],
    )
}

/// The IoU loss as a fresh `[2]` tensor: (loss, mean IoU of the positive cells).
pub fn iou_loss(
    enc: &mut Encoder,
    pred: &Tensor,
    gt: &Tensor,
    labels: &Tensor,
    weight: f32,
) -> Result<Tensor> {
    let out = enc.gpu().empty("iou_loss", &[2], DType::F32)?;
    iou_loss_to(enc, pred, gt, labels, weight, &out, 0, 1)?;
    Ok(out)
}

/// Gradient of [`iou_loss`] w.r.t. the predicted boxes times `dloss`, added into `into` (or a
/// fresh zero tensor shaped like `pred`). Cells where the IoU is clamped (≤ f32::MIN_POSITIVE)
/// get no gradient, as in PyTorch; ties of min/max split the gradient in halves, as PyTorch's
/// `minimum`/`maximum` do.
pub fn iou_loss_backward(
    enc: &mut Encoder,
    pred: &Tensor,
    gt: &Tensor,
    labels: &Tensor,
    weight: f32,
    dloss: &Tensor,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "iou_loss_backward";
    let n = check_boxes(OP, pred, gt, labels)?;
    check_scalar(OP, dloss)?;
    let dp = match into {
        Some(t) => {
            check_f32(OP, "into", t)?;
            if t.numel() != pred.numel() || [pred, gt, labels, dloss].iter().any(|x| same(x, t)) {
                return Err(Error::shape(
                    OP,
                    format!(
                        "into {:?} must be a separate f32 tensor shaped like pred {:?}",
                        t.shape(),
                        pred.shape()
                    ),
                ));
            }
            t.clone()
        }
        None => enc.gpu().zeros(pred.shape())?,
    };
    let cnt = positives(enc, OP, labels, n)?;
    let p = Params {
        n,
        weight,
        ..Params::default()
    };
    let grid = enc.gpu().grid((n as u64).div_ceil(64));
    enc.dispatch(
        &LOSS,
        "iou_bwd",
        &[],
        bytemuck::bytes_of(&p),
        &[pred, gt, labels, &cnt, dloss, &dp],
        grid,
    )?;
    Ok(dp)
}

/// The head's predictions for the losses: cls logits (one per cell) and xyxy boxes of both
/// branches.
pub struct Preds<'a> {
    pub cls_fc: &'a Tensor,
    pub bbox_fc: &'a Tensor,
    pub cls_conv: &'a Tensor,
    pub bbox_conv: &'a Tensor,
}

/// Targets: cls labels (one per cell) and xyxy ground-truth boxes.
pub struct Targets<'a> {
    pub cls: &'a Tensor,
    pub box_gt: &'a Tensor,
}

/// All four SparseTT loss terms, their weighted total and the two mean IoUs, as one `[7]` tensor
/// left on the GPU (indices in [`slot`]).
pub fn sparsett_losses(
    enc: &mut Encoder,
    pred: &Preds,
    tgt: &Targets,
    cfg: &LossConfig,
) -> Result<Tensor> {
    let out = enc
        .gpu()
        .empty("sparsett_losses", &[slot::COUNT], DType::F32)?;
    focal_loss_to(
        enc,
        pred.cls_fc,
        tgt.cls,
        &cfg.focal(cfg.w_cls_fc),
        &out,
        slot::CLS_FC,
    )?;
    let (w, s) = (cfg.w_reg_fc, slot::REG_FC);
    iou_loss_to(
        enc,
        pred.bbox_fc,
        tgt.box_gt,
        tgt.cls,
        w,
        &out,
        s,
        slot::IOU_FC,
    )?;
    let f = cfg.focal(cfg.w_cls_conv);
    focal_loss_to(enc, pred.cls_conv, tgt.cls, &f, &out, slot::CLS_CONV)?;
    let (w, s) = (cfg.w_reg_conv, slot::REG_CONV);
    iou_loss_to(
        enc,
        pred.bbox_conv,
        tgt.box_gt,
        tgt.cls,
        w,
        &out,
        s,
        slot::IOU_CONV,
    )?;
    let p = Params {
        n: 4,
        out_off: slot::CLS_FC as u32,
        extra_off: slot::TOTAL as u32,
        ..Params::default()
    };
    enc.dispatch(
        &LOSS,
        "total",
        &[],
        bytemuck::bytes_of(&p),
        &[&out],
        [1, 1, 1],
    )?;
    Ok(out)
}

/// Plain-loop references in f64 (the backward ones are checked against finite differences).
pub mod cpu {
    use super::Focal;

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn softplus(z: f64) -> f64 {
        z.max(0.0) + (-z.abs()).exp().ln_1p()
    }

    /// Number of positive cells, at least 1.
    pub fn npos(labels: &[f32]) -> f64 {
        (labels.iter().filter(|&&l| l > 0.0).count() as f64).max(1.0)
    }

    /// Focal loss with PyTorch's formula (`p_t`, `1 − p_t`, BCE with logits).
    pub fn focal_loss(logits: &[f64], labels: &[f32], f: &Focal) -> f64 {
        let (a, g) = (f.alpha as f64, f.gamma as f64);
        let mut s = 0.0;
        for (&x, &l) in logits.iter().zip(labels) {
            if l == -1.0 {
                continue;
            }
            let t = if l > 0.0 { 1.0 } else { 0.0 };
            let p = sigmoid(x);
            let ce = x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
            let pt = p * t + (1.0 - p) * (1.0 - t);
            let at = a * t + (1.0 - a) * (1.0 - t);
            s += at * (1.0 - pt).powf(g) * ce;
        }
        s / npos(labels) * f.weight as f64
    }

    /// ∂focal/∂logits, from the closed form in z = ±x (see `shaders/loss.wgsl`).
    pub fn focal_loss_backward(logits: &[f64], labels: &[f32], f: &Focal) -> Vec<f64> {
        let (a, g) = (f.alpha as f64, f.gamma as f64);
        let k = f.weight as f64 / npos(labels);
        logits
            .iter()
            .zip(labels)
            .map(|(&x, &l)| {
                if l == -1.0 {
                    return 0.0;
                }
                let pos = l > 0.0;
                let z = if pos { -x } else { x };
                let at = if pos { a } else { 1.0 - a };
                let q = sigmoid(z);
                let dz = at * q.powf(g) * (g * (1.0 - q) * softplus(z) + q);
                k * if pos { -dz } else { dz }
            })
            .collect()
    }

    /// IoU of one (pred, gt) pair with the official "+1" convention, clamped at 0.
    pub fn iou(p: &[f64], g: &[f64]) -> f64 {
        let aog = (g[2] - g[0] + 1.0).abs() * (g[3] - g[1] + 1.0).abs();
        let aop = (p[2] - p[0] + 1.0).abs() * (p[3] - p[1] + 1.0).abs();
        let iw = p[2].min(g[2]) - p[0].max(g[0]) + 1.0;
        let ih = p[3].min(g[3]) - p[1].max(g[1]) + 1.0;
        let inter = iw.max(0.0) * ih.max(0.0);
        (inter / (aog + aop - inter)).max(0.0)
    }

    /// (IoU loss, mean IoU) over the positive cells; `pred`, `gt` are `[cells, 4]`.
    pub fn iou_loss(pred: &[f64], gt: &[f64], labels: &[f32], weight: f32) -> (f64, f64) {
        let (mut s, mut si) = (0.0, 0.0);
        for (c, &l) in labels.iter().enumerate() {
            if l > 0.0 {
                let v = iou(&pred[c * 4..c * 4 + 4], &gt[c * 4..c * 4 + 4]);
                s -= v.max(f32::MIN_POSITIVE as f64).ln();
                si += v;
            }
        }
        let d = npos(labels);
        (s / d * weight as f64, si / d)
    }

    /// ∂(IoU loss)/∂pred by the chain rule through areas, intersection and union (no ties: the
    /// references are only compared away from them).
    pub fn iou_loss_backward(pred: &[f64], gt: &[f64], labels: &[f32], weight: f32) -> Vec<f64> {
        let k = weight as f64 / npos(labels);
        let mut d = vec![0.0; pred.len()];
        for (c, &l) in labels.iter().enumerate() {
            if l <= 0.0 {
                continue;
            }
            let (p, g) = (&pred[c * 4..c * 4 + 4], &gt[c * 4..c * 4 + 4]);
            let aog = (g[2] - g[0] + 1.0).abs() * (g[3] - g[1] + 1.0).abs();
            let (w, h) = (p[2] - p[0] + 1.0, p[3] - p[1] + 1.0);
            let aop = w.abs() * h.abs();
            let iw = p[2].min(g[2]) - p[0].max(g[0]) + 1.0;
            let ih = p[3].min(g[3]) - p[1].max(g[1]) + 1.0;
            let inter = iw.max(0.0) * ih.max(0.0);
            let uni = aog + aop - inter;
            let v = inter / uni;
            if v <= f32::MIN_POSITIVE as f64 {
                continue;
            }
            let diou = -k / v;
            let dinter = diou * (uni + inter) / (uni * uni);
            let daop = -diou * inter / (uni * uni);
            let (dw, dh) = (daop * w.signum() * h.abs(), daop * w.abs() * h.signum());
            let diw = dinter * ih.max(0.0) * f64::from(iw > 0.0);
            let dih = dinter * iw.max(0.0) * f64::from(ih > 0.0);
            let o = &mut d[c * 4..c * 4 + 4];
            o[0] = -dw - diw * f64::from(p[0] > g[0]);
            o[1] = -dh - dih * f64::from(p[1] > g[1]);
            o[2] = dw + diw * f64::from(p[2] < g[2]);
            o[3] = dh + dih * f64::from(p[3] < g[3]);
        }
        d
    }
}
