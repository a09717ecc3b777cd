//! The feature adjusters in training mode: conv 1×1 384→256 with bias, then BatchNorm (eps 1e-3,
//! frozen statistics), on backbone tokens `[B, L, 384]` (a 1×1 convolution is a per-token
//! linear map; the BatchNorm runs on the tokens seen as `[B·L, 256]`).

use crate::autograd::{ops, Tape, Var};
use crate::train::params::{bn, bn_keys, Params};
use crate::{Encoder, Error, Result};

pub const IN: usize = 384;
pub const OUT: usize = 256;
const EPS: f32 = 1e-3;

/// (trainable, buffers) keys of adjuster `name` (`feat_adjuster_z` / `feat_adjuster_x`).
pub fn keys(name: &str) -> [Vec<(String, Vec<usize>)>; 2] {
    let [mut p, b] = bn_keys(&format!("{name}.bn"), OUT);
    p.push((format!("{name}.conv.weight"), vec![OUT, IN, 1, 1]));
    p.push((format!("{name}.conv.bias"), vec![OUT]));
    [p, b]
}

/// `BN(x·Wᵀ + b)` per token: `[B, L, 384]` → `[B, L, 256]`.
pub fn forward(p: &Params, tape: &mut Tape, enc: &mut Encoder, name: &str, x: &Var) -> Result<Var> {
    let s = x.shape().to_vec();
    if s.len() != 3 || s[2] != IN {
        return Err(Error::shape(
            "train::adjust",
            format!("expects [B, L, {IN}] tokens, got {s:?}"),
        ));
    }
    let w = p.var(tape, &format!("{name}.conv.weight"))?;
    let w = ops::reshape(tape, &w, &[OUT, IN])?;
    let b = p.var(tape, &format!("{name}.conv.bias"))?;
    let y = ops::linear(tape, enc, x, &w, Some(&b))?;
    let y = ops::reshape(tape, &y, &[s[0] * s[1], OUT])?;
    let y = bn(p, tape, enc, &y, &format!("{name}.bn"), EPS)?;
    ops::reshape(tape, &y, &[s[0], s[1], OUT])
}
