//! The target focus network (neck) in training mode, on the tape: learned 2-D positional
//! encodings recomputed from their row/col tables (so the tables get gradients), a 2-layer
//! post-norm encoder on the template tokens, and a 2-layer decoder on the search tokens whose
//! self-attention keeps the top-K logits per row (gradient through the kept set only) and
//! whose cross-attention is dense. Sizes from the [`Config`] (official: d = 256, 8 heads of 32,
//! FFN 2048, 2 + 2 layers, K = 32); ReLU FFN, LayerNorm eps 1e-6; dropout as [`NeckDropout`]
//! (off in the golden step; see the golden README).

use crate::autograd::ops::{self, Packing};
use crate::autograd::{Tape, Var};
use crate::model::config::Config;
use crate::ops::attention::Dropout;
use crate::prng::SplitMix64;
use crate::train::params::Params;
use crate::{Encoder, Error, Result};

const EPS: f32 = 1e-6;

fn scale(c: &Config) -> f32 {
    1.0 / ((c.d_model / c.neck_heads) as f32).sqrt()
}

fn mha_keys(c: &Config, p: &str, out: &mut Vec<(String, Vec<usize>)>) {
    let d = c.d_model;
    out.extend([
        (format!("{p}.in_proj_weight"), vec![3 * d, d]),
        (format!("{p}.in_proj_bias"), vec![3 * d]),
        (format!("{p}.out_proj.weight"), vec![d, d]),
        (format!("{p}.out_proj.bias"), vec![d]),
    ]);
}

fn ln_keys(c: &Config, p: &str, out: &mut Vec<(String, Vec<usize>)>) {
    let d = c.d_model;
    out.extend([
        (format!("{p}.weight"), vec![d]),
        (format!("{p}.bias"), vec![d]),
    ]);
}

fn ffn_keys(c: &Config, p: &str, out: &mut Vec<(String, Vec<usize>)>) {
    let (d, f) = (c.d_model, c.ffn);
    out.extend([
        (format!("{p}.w_1.weight"), vec![f, d]),
        (format!("{p}.w_1.bias"), vec![f]),
        (format!("{p}.w_2.weight"), vec![d, f]),
        (format!("{p}.w_2.bias"), vec![d]),
    ]);
    ln_keys(c, &format!("{p}.layer_norm"), out);
}

/// Trainable keys of the neck for a `z_side²` template map and an `x_side²` search map.
pub fn keys(c: &Config, z_side: usize, x_side: usize) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for (part, side) in [("encoder", z_side), ("decoder", x_side)] {
        for t in ["row", "col"] {
            out.push((
                format!("neck.{part}.spatial_position_encoding.{t}_embed.weight"),
                vec![side, c.d_model / 2],
            ));
        }
    }
    for i in 0..c.enc_layers {
        let p = format!("neck.encoder.encoder_layers.{i}");
        mha_keys(c, &format!("{p}.slf_attn"), &mut out);
        ln_keys(c, &format!("{p}.norm"), &mut out);
        ffn_keys(c, &format!("{p}.pos_ffn"), &mut out);
    }
    for i in 0..c.dec_layers {
        let p = format!("neck.decoder.decoder_layers.{i}");
        mha_keys(c, &format!("{p}.slf_attn"), &mut out);
        ln_keys(c, &format!("{p}.norm1"), &mut out);
        mha_keys(c, &format!("{p}.enc_attn"), &mut out);
        ln_keys(c, &format!("{p}.norm2"), &mut out);
        ffn_keys(c, &format!("{p}.pos_ffn"), &mut out);
    }
    out
}

fn lin(p: &Params, tape: &mut Tape, enc: &mut Encoder, x: &Var, w: &str, b: &str) -> Result<Var> {
    let (w, b) = (p.var(tape, w)?, p.var(tape, b)?);
    ops::linear(tape, enc, x, &w, Some(&b))
}

/// `LN(x + y)` with LayerNorm `prefix`.
fn add_ln(
    p: &Params,
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    y: &Var,
    prefix: &str,
) -> Result<Var> {
    let w = p.var(tape, &format!("{prefix}.weight"))?;
    let b = p.var(tape, &format!("{prefix}.bias"))?;
    ops::add_layer_norm(tape, enc, x, y, &w, &b, EPS)
}

/// `LN(x + W2·relu(W1·x + b1) + b2)`.
/// The neck's dropout in training (the official `prob_dropout`): on the weights of every
/// attention (as `nn.MultiheadAttention` and `MultiHeadAttentionTopK` apply theirs) and on the
/// FFN's output before its residual add (`PositionWiseFeedForward`), each site with its own mask
/// stream derived from `seed`. `p = 0` (the golden step, evaluation) is off.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NeckDropout {
    pub p: f32,
    pub seed: u64,
}

impl NeckDropout {
    /// The dropout of one site (a parameter prefix such as `neck.encoder.encoder_layers.0.slf_attn`).
    fn at(&self, site: &str) -> Dropout {
        Dropout {
            p: self.p,
            seed: SplitMix64::for_key(&format!("dropout.{site}"), self.seed).next_u64(),
        }
    }
}

fn ffn(
    p: &Params,
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    pre: &str,
    drop: NeckDropout,
) -> Result<Var> {
    let h = lin(
        p,
        tape,
        enc,
        x,
        &format!("{pre}.w_1.weight"),
        &format!("{pre}.w_1.bias"),
    )?;
    let h = ops::relu(tape, enc, &h)?;
    let h = lin(
        p,
        tape,
        enc,
        &h,
        &format!("{pre}.w_2.weight"),
        &format!("{pre}.w_2.bias"),
    )?;
    let d = drop.at(pre);
    let h = ops::dropout(tape, enc, &h, d.p, d.seed)?;
    add_ln(p, tape, enc, x, &h, &format!("{pre}.layer_norm"))
}

/// Tokens `[B, side², D]` plus the learned encoding of `neck.{part}`.
fn embed(
    p: &Params,
    c: &Config,
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    part: &str,
) -> Result<Var> {
    let s = x.shape().to_vec();
    let d = c.d_model;
    let side = (s[1] as f64).sqrt().round() as usize;
    if s.len() != 3 || s[2] != d || side * side != s[1] {
        return Err(Error::shape(
            "train::focus",
            format!("expects [B, side², {d}] tokens, got {s:?}"),
        ));
    }
    let key = |t: &str| format!("neck.{part}.spatial_position_encoding.{t}_embed.weight");
    let row = p.var(tape, &key("row"))?;
    let col = p.var(tape, &key("col"))?;
    let pos = ops::embed_2d(tape, enc, &row, &col, side, side)?;
    ops::add(tape, enc, x, &pos)
}

/// The neck on adjusted template tokens `z` `[B, 64, d]` and search tokens `x` `[B, 361, d]`:
/// returns the decoder output `[B, 361, d]`.
pub fn forward(
    p: &Params,
    c: &Config,
    tape: &mut Tape,
    enc: &mut Encoder,
    z: &Var,
    x: &Var,
    drop: NeckDropout,
) -> Result<Var> {
    let mut m = embed(p, c, tape, enc, z, "encoder")?;
    for i in 0..c.enc_layers {
        let pre = format!("neck.encoder.encoder_layers.{i}");
        let a = format!("{pre}.slf_attn");
        let qkv = lin(
            p,
            tape,
            enc,
            &m,
            &format!("{a}.in_proj_weight"),
            &format!("{a}.in_proj_bias"),
        )?;
        let o = ops::attention(
            tape,
            enc,
            &qkv,
            &qkv,
            &qkv,
            Packing::QKV,
            c.neck_heads,
            scale(c),
            None,
            None,
            Some(drop.at(&a)),
        )?;
        let o = lin(
            p,
            tape,
            enc,
            &o,
            &format!("{a}.out_proj.weight"),
            &format!("{a}.out_proj.bias"),
        )?;
        let y = add_ln(p, tape, enc, &m, &o, &format!("{pre}.norm"))?;
        m = ffn(p, tape, enc, &y, &format!("{pre}.pos_ffn"), drop)?;
    }
    let mut h = embed(p, c, tape, enc, x, "decoder")?;
    for i in 0..c.dec_layers {
        let pre = format!("neck.decoder.decoder_layers.{i}");
        let s = format!("{pre}.slf_attn");
        let qkv = lin(
            p,
            tape,
            enc,
            &h,
            &format!("{s}.in_proj_weight"),
            &format!("{s}.in_proj_bias"),
        )?;
        let o = ops::topk_attention(
            tape,
            enc,
            &qkv,
            c.neck_heads,
            c.top_k,
            scale(c),
            Some(drop.at(&s)),
        )?;
        let o = lin(
            p,
            tape,
            enc,
            &o,
            &format!("{s}.out_proj.weight"),
            &format!("{s}.out_proj.bias"),
        )?;
        let y = add_ln(p, tape, enc, &h, &o, &format!("{pre}.norm1"))?;
        // Cross-attention with the packed in_proj: the full projection of both sides, q read
        // from block 0 of the queries', k and v from blocks 1 and 2 of the memory's (the unused
        // blocks cost a few small GEMMs and get zero gradient).
        let ca = format!("{pre}.enc_attn");
        let (w, b) = (format!("{ca}.in_proj_weight"), format!("{ca}.in_proj_bias"));
        let qf = lin(p, tape, enc, &y, &w, &b)?;
        let kvf = lin(p, tape, enc, &m, &w, &b)?;
        let packing = Packing {
            q: (3, 0),
            k: (3, 1),
            v: (3, 2),
        };
        let o = ops::attention(
            tape,
            enc,
            &qf,
            &kvf,
            &kvf,
            packing,
            c.neck_heads,
            scale(c),
            None,
            None,
            Some(drop.at(&ca)),
        )?;
        let o = lin(
            p,
            tape,
            enc,
            &o,
            &format!("{ca}.out_proj.weight"),
            &format!("{ca}.out_proj.bias"),
        )?;
        let y = add_ln(p, tape, enc, &y, &o, &format!("{pre}.norm2"))?;
        h = ffn(p, tape, enc, &y, &format!("{pre}.pos_ffn"), drop)?;
    }
    Ok(h)
}
