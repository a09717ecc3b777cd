//! The feature adjusters in training mode: conv 1×1 backbone→d_model (official 384→256) with
//! bias, then BatchNorm (eps 1e-3, frozen statistics), on backbone tokens `[B, L, 4C]` (a 1×1
//! convolution is a per-token linear map; the BatchNorm runs on the tokens seen as `[B·L, d]`).

use crate::autograd::{ops, Tape, Var};
use crate::model::config::Config;
use crate::train::params::{bn, bn_keys, Params};
use crate::{Encoder, Error, Result};

const EPS: f32 = 1e-3;

/// (trainable, buffers) keys of adjuster `name` (`feat_adjuster_z` / `feat_adjuster_x`).
pub fn keys(c: &Config, name: &str) -> [Vec<(String, Vec<usize>)>; 2] {
    let (inp, out) = (c.backbone_out(), c.d_model);
    let [mut p, b] = bn_keys(&format!("{name}.bn"), out);
    p.push((format!("{name}.conv.weight"), vec![out, inp, 1, 1]));
    p.push((format!("{name}.conv.bias"), vec![out]));
    [p, b]
}

/// `BN(x·Wᵀ + b)` per token: `[B, L, 4C]` → `[B, L, d_model]`.
pub fn forward(
    p: &Params,
    c: &Config,
    tape: &mut Tape,
    enc: &mut Encoder,
    name: &str,
    x: &Var,
) -> Result<Var> {
    let s = x.shape().to_vec();
    let (inp, out) = (c.backbone_out(), c.d_model);
    if s.len() != 3 || s[2] != inp {
        return Err(Error::shape(
            "train::adjust",
            format!("expects [B, L, {inp}] tokens, got {s:?}"),
        ));
    }
    let w = p.var(tape, &format!("{name}.conv.weight"))?;
    let w = ops::reshape(tape, &w, &[out, inp])?;
    let b = p.var(tape, &format!("{name}.conv.bias"))?;
    let y = ops::linear(tape, enc, x, &w, Some(&b))?;
    let y = ops::reshape(tape, &y, &[s[0] * s[1], out])?;
    let y = bn(p, tape, enc, &y, &format!("{name}.bn"), EPS)?;
    ops::reshape(tape, &y, &[s[0], s[1], out])
}
