//! The double head in training mode (BatchNorm frozen, as the golden step runs it): fc branch
//! (two 1×1 convs with ReLU), conv branch (a residual block in→width and `head_convs`
//! bottlenecks; official: 512→1024 and 7 of width 256), each
//! ending in cls (1×1 conv + BN(1)) and reg (1×1 conv + BN(4)); then the box decoding
//! `ltrb = exp(s·reg + b)·16`, box = (cx − l, cy − t, cx + r, cy + b) at cell centres
//! (16 j, 16 i). BatchNorm eps 1e-5.

use crate::autograd::{ops, Tape, Var};
use crate::model::config::Config;
use crate::train::params::{bn, bn_keys, Params};
use crate::{Encoder, Error, Result};

const EPS: f32 = 1e-5;
pub const STRIDE: f32 = 16.0;

/// Keys of the decoding constants among the parameters' buffers.
const SIGN: &str = "head.decode.sign";
const CENTRES: &str = "head.decode.centres";

/// Uploads the box decoding's constants for a `side`×`side` score map: the corner signs
/// (−1, −1, 1, 1) and the cell centres (16 j, 16 i) repeated as (cx, cy, cx, cy).
pub fn decode_constants(gpu: &crate::Gpu, p: &mut Params, side: usize) -> Result<()> {
    let mut ctr = Vec::with_capacity(side * side * 4);
    for i in 0..side {
        for j in 0..side {
            let (cx, cy) = (STRIDE * j as f32, STRIDE * i as f32);
            ctr.extend([cx, cy, cx, cy]);
        }
    }
    p.insert_buffer(SIGN, gpu.upload(&[4], &[-1.0, -1.0, 1.0, 1.0])?);
    p.insert_buffer(CENTRES, gpu.upload(&[side * side, 4], &ctr)?);
    Ok(())
}

/// What the losses read: raw cls logits `[B, cells, 1]` and decoded xyxy boxes `[B, cells, 4]`
/// of both branches.
pub struct HeadOut {
    pub cls_fc: Var,
    pub bbox_fc: Var,
    pub cls_conv: Var,
    pub bbox_conv: Var,
    /// The conv branch's ReLU inputs when [`Probe::keep_relu_inputs`] asked for them.
    pub relu_inputs: Vec<(ReluSite, crate::Tensor)>,
}

/// A ReLU of the conv branch: `block` 0 (the residual block) to `head_convs`, `site` 1 or 2
/// (after bn1 / bn2; block 0 has only site 1, after conv1) or 3 (the block output, after the
/// residual add).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReluSite {
    pub block: usize,
    pub site: usize,
}

/// Hooks for the golden-gradient parity test, off in training. A ReLU input within f32 rounding
/// of zero can fall on either side depending on summation order, and the official model's f32
/// run may have decided it the other way; the test keeps the inputs to find such elements and
/// nudges them across zero to take the official side (`tests/train_parity.rs`).
#[derive(Clone, Debug, Default)]
pub struct Probe {
    pub keep_relu_inputs: bool,
    /// (site, flat index into the `[B, C, H, W]` input, amount added before the ReLU).
    pub nudges: Vec<(ReluSite, usize, f32)>,
}

/// The ReLU of `site` on `x`, after the probe's nudges; keeps the input when asked.
fn probed_relu(
    probe: &Probe,
    site: ReluSite,
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    kept: &mut Vec<(ReluSite, crate::Tensor)>,
) -> Result<Var> {
    if probe.keep_relu_inputs {
        kept.push((site, x.t.clone()));
    }
    let mut x = x.clone();
    let here: Vec<_> = probe.nudges.iter().filter(|n| n.0 == site).collect();
    if !here.is_empty() {
        let mut d = vec![0f32; x.t.numel()];
        for &&(_, i, v) in &here {
            let n = d.len();
            let slot = d.get_mut(i).ok_or_else(|| {
                Error::shape("train::head", format!("nudge index {i} past {n} elements"))
            })?;
            *slot += v;
        }
        let dt = enc.gpu().upload(x.shape(), &d)?;
        let dv = tape.constant(&dt);
        x = ops::add(tape, enc, &x, &dv)?;
    }
    ops::relu(tape, enc, &x)
}

type Keys = Vec<(String, Vec<usize>)>;

fn conv_bn_keys(conv: &str, bnp: &str, shape: [usize; 4], p: &mut Keys, b: &mut Keys) {
    p.push((conv.to_string(), shape.to_vec()));
    let [bp, bb] = bn_keys(bnp, shape[0]);
    p.extend(bp);
    b.extend(bb);
}

/// (trainable, buffers) keys of the head.
pub fn keys(c: &Config) -> [Keys; 2] {
    let (inp, width, mid) = (c.head_in(), c.head_width, c.bottleneck);
    let (mut p, mut b) = (Keys::new(), Keys::new());
    for s in ["si_fc", "bi_fc", "si_conv", "bi_conv"] {
        p.push((format!("head.{s}"), vec![]));
    }
    for (k, ci) in [("head.fc_branch.0", inp), ("head.fc_branch.2", width)] {
        p.push((format!("{k}.weight"), vec![width, ci, 1, 1]));
        p.push((format!("{k}.bias"), vec![width]));
    }
    let r = "head.conv_branch.0";
    for (c, shape) in [
        ("conv1", [inp, inp, 3, 3]),
        ("conv2", [width, inp, 1, 1]),
        ("conv_identity", [width, inp, 1, 1]),
    ] {
        let (cw, cb) = (format!("{r}.{c}.conv.weight"), format!("{r}.{c}.bn"));
        conv_bn_keys(&cw, &cb, shape, &mut p, &mut b);
    }
    for i in 1..=c.head_convs {
        let q = format!("head.conv_branch.{i}");
        for (j, shape) in [
            (1, [mid, width, 1, 1]),
            (2, [mid, mid, 3, 3]),
            (3, [width, mid, 1, 1]),
        ] {
            let (cw, cb) = (format!("{q}.conv{j}.weight"), format!("{q}.bn{j}"));
            conv_bn_keys(&cw, &cb, shape, &mut p, &mut b);
        }
    }
    for branch in ["fc_branch", "conv_branch"] {
        for (part, co) in [("cls", 1), ("reg", 4)] {
            let pre = format!("head.{branch}_{part}");
            let (cw, cb) = (format!("{pre}.conv.weight"), format!("{pre}.bn"));
            conv_bn_keys(&cw, &cb, [co, width, 1, 1], &mut p, &mut b);
        }
    }
    [p, b]
}

/// Bias-free conv `w` (padding `pad` on every side), then frozen BN `bnp`.
fn conv_bn(
    p: &Params,
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    w: &str,
    bnp: &str,
    pad: usize,
) -> Result<Var> {
    let w = p.var(tape, w)?;
    let y = ops::conv2d(tape, enc, x, &w, None, (1, 1), [pad; 4])?;
    bn(p, tape, enc, &y, bnp, EPS)
}

/// The head on the neck output `[B, 2·d_model, s, s]`.
pub fn forward(
    p: &Params,
    cfg: &Config,
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    probe: &Probe,
) -> Result<HeadOut> {
    let mut kept = Vec::new();
    let s = x.shape().to_vec();
    let inp = cfg.head_in();
    if s.len() != 4 || s[1] != inp || s[2] != s[3] {
        return Err(Error::shape(
            "train::head",
            format!("expects [B, {inp}, s, s], got {s:?}"),
        ));
    }
    let mut f = x.clone();
    for k in ["head.fc_branch.0", "head.fc_branch.2"] {
        let w = p.var(tape, &format!("{k}.weight"))?;
        let b = p.var(tape, &format!("{k}.bias"))?;
        f = ops::conv2d(tape, enc, &f, &w, Some(&b), (1, 1), [0; 4])?;
        f = ops::relu(tape, enc, &f)?;
    }
    let r = "head.conv_branch.0";
    let h = conv_bn(
        p,
        tape,
        enc,
        x,
        &format!("{r}.conv1.conv.weight"),
        &format!("{r}.conv1.bn"),
        1,
    )?;
    let site = |block, site| ReluSite { block, site };
    let h = probed_relu(probe, site(0, 1), tape, enc, &h, &mut kept)?;
    let h = conv_bn(
        p,
        tape,
        enc,
        &h,
        &format!("{r}.conv2.conv.weight"),
        &format!("{r}.conv2.bn"),
        0,
    )?;
    let id = conv_bn(
        p,
        tape,
        enc,
        x,
        &format!("{r}.conv_identity.conv.weight"),
        &format!("{r}.conv_identity.bn"),
        0,
    )?;
    let sum = ops::add(tape, enc, &h, &id)?;
    let mut c = probed_relu(probe, site(0, 3), tape, enc, &sum, &mut kept)?;
    for i in 1..=cfg.head_convs {
        let q = format!("head.conv_branch.{i}");
        let mut h = c.clone();
        for (j, pad) in [(1, 0), (2, 1), (3, 0)] {
            h = conv_bn(
                p,
                tape,
                enc,
                &h,
                &format!("{q}.conv{j}.weight"),
                &format!("{q}.bn{j}"),
                pad,
            )?;
            if j < 3 {
                h = probed_relu(probe, site(i, j), tape, enc, &h, &mut kept)?;
            }
        }
        let sum = ops::add(tape, enc, &h, &c)?;
        c = probed_relu(probe, site(i, 3), tape, enc, &sum, &mut kept)?;
    }
    let (cls_fc, bbox_fc) = cls_reg(p, tape, enc, &f, "fc")?;
    let (cls_conv, bbox_conv) = cls_reg(p, tape, enc, &c, "conv")?;
    Ok(HeadOut {
        cls_fc,
        bbox_fc,
        cls_conv,
        bbox_conv,
        relu_inputs: kept,
    })
}

/// cls logits `[B, cells, 1]` and decoded boxes `[B, cells, 4]` of branch `fc` / `conv`.
fn cls_reg(
    p: &Params,
    tape: &mut Tape,
    enc: &mut Encoder,
    feat: &Var,
    branch: &str,
) -> Result<(Var, Var)> {
    let s = feat.shape().to_vec();
    let (b, side) = (s[0], s[2]);
    let cells = side * side;
    let pre = |part: &str| format!("head.{branch}_branch_{part}");
    let cls = conv_bn(
        p,
        tape,
        enc,
        feat,
        &format!("{}.conv.weight", pre("cls")),
        &format!("{}.bn", pre("cls")),
        0,
    )?;
    let cls = ops::reshape(tape, &cls, &[b, cells, 1])?;
    let reg = conv_bn(
        p,
        tape,
        enc,
        feat,
        &format!("{}.conv.weight", pre("reg")),
        &format!("{}.bn", pre("reg")),
        0,
    )?;
    let reg = ops::reshape(tape, &reg, &[b, 4, cells])?;
    let reg = ops::permute(tape, enc, &reg, &[0, 2, 1])?;
    // exp(s·reg + b)·16 with the learned scalars broadcast over every element.
    let flat = ops::reshape(tape, &reg, &[b * cells * 4, 1])?;
    let si = p.var(tape, &format!("head.si_{branch}"))?;
    let bi = p.var(tape, &format!("head.bi_{branch}"))?;
    let t = ops::mul(tape, enc, &flat, &si)?;
    let t = ops::add(tape, enc, &t, &bi)?;
    let t = ops::exp(tape, enc, &t)?;
    let ltrb = ops::scale(tape, enc, &t, STRIDE, 0.0)?;
    let ltrb = ops::reshape(tape, &ltrb, &[b, cells, 4])?;
    // (cx − l, cy − t, cx + r, cy + b): a sign per coordinate, then the cell centres (both
    // uploaded once, at load: [`decode_constants`]).
    let sign = tape.constant(p.buffer(SIGN)?);
    let ctr = tape.constant(p.buffer(CENTRES)?);
    if ctr.shape() != [cells, 4] {
        return Err(Error::shape(
            "train::head",
            format!(
                "a {side}×{side} map, but the cell centres are {:?}",
                ctr.shape()
            ),
        ));
    }
    let boxes = ops::mul(tape, enc, &ltrb, &sign)?;
    let boxes = ops::add(tape, enc, &boxes, &ctr)?;
    Ok((cls, boxes))
}
