//! The target focus network: a post-norm transformer encoder on the template tokens and a decoder
//! on the search tokens whose self-attention keeps only the top-K keys per query. Officially 2 + 2
//! layers, d = 256, 8 heads of 32, FFN 2048 with ReLU, K = 32 (sizes from [`Config`]); LayerNorm
//! eps 1e-6, learned 2-D positional encoding added once to each input. Tokens are `[B, L, d]`.

use crate::gpu::Tensor;
use crate::model::config::Config;
use crate::model::load::Loader;
use crate::model::taps::Taps;
use crate::ops::attention::{attention, AttnOpts};
use crate::ops::elementwise::{binary, Binary};
use crate::ops::matmul::{linear, Activation, Epilogue};
use crate::ops::norm::add_layer_norm;
use crate::ops::topk::topk_attention;
use crate::ops::HeadsView;
use crate::{Encoder, Result};

const EPS: f32 = 1e-6;

struct Norm {
    w: Tensor,
    b: Tensor,
}

impl Norm {
    fn load(l: &Loader, prefix: &str, d: usize) -> Result<Norm> {
        Ok(Norm {
            w: l.tensor(&format!("{prefix}.weight"), &[d])?,
            b: l.tensor(&format!("{prefix}.bias"), &[d])?,
        })
    }

    /// LayerNorm(x + y).
    fn add(&self, enc: &mut Encoder, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        add_layer_norm(enc, x, y, &self.w, &self.b, EPS)
    }
}

struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn load(l: &Loader, w: &str, b: &str, out: usize, inp: usize) -> Result<Linear> {
        Ok(Linear {
            w: l.tensor(w, &[out, inp])?,
            b: l.tensor(b, &[out])?,
        })
    }

    /// Rows `rows` of a packed projection (e.g. the k/v part of `in_proj_weight`).
    fn load_rows(l: &Loader, p: &str, d: usize, rows: std::ops::Range<usize>) -> Result<Linear> {
        let w = l.host(&format!("{p}.in_proj_weight"), &[3 * d, d])?;
        let b = l.host(&format!("{p}.in_proj_bias"), &[3 * d])?;
        let n = rows.len();
        Ok(Linear {
            w: l.gpu.upload(&[n, d], &w[rows.start * d..rows.end * d])?,
            b: l.gpu.upload(&[n], &b[rows])?,
        })
    }

    fn run(&self, enc: &mut Encoder, x: &Tensor, act: Activation) -> Result<Tensor> {
        linear(
            enc,
            x,
            &self.w,
            &Epilogue {
                bias: Some(&self.b),
                act,
                ..Default::default()
            },
        )
    }
}

struct Ffn {
    w1: Linear,
    w2: Linear,
    norm: Norm,
}

impl Ffn {
    fn load(l: &Loader, p: &str, d: usize, ffn: usize) -> Result<Ffn> {
        Ok(Ffn {
            w1: Linear::load(
                l,
                &format!("{p}.w_1.weight"),
                &format!("{p}.w_1.bias"),
                ffn,
                d,
            )?,
            w2: Linear::load(
                l,
                &format!("{p}.w_2.weight"),
                &format!("{p}.w_2.bias"),
                d,
                ffn,
            )?,
            norm: Norm::load(l, &format!("{p}.layer_norm"), d)?,
        })
    }

    fn run(&self, enc: &mut Encoder, x: &Tensor) -> Result<Tensor> {
        let h = self.w1.run(enc, x, Activation::Relu)?;
        let h = self.w2.run(enc, &h, Activation::None)?;
        self.norm.add(enc, x, &h)
    }
}

/// The learned 2-D positional encoding of one input, built once at load time: `[s·s, d]`.
struct Embed {
    pos: Tensor,
    side: usize,
    d: usize,
}

impl Embed {
    fn load(l: &Loader, p: &str, side: usize, d: usize) -> Result<Embed> {
        let key = |t: &str| format!("{p}.spatial_position_encoding.{t}_embed.weight");
        let row = l.host(&key("row"), &[side, d / 2])?;
        let col = l.host(&key("col"), &[side, d / 2])?;
        let pos = crate::ops::layout::cpu::embed_2d(&row, &col, d / 2, side, side);
        Ok(Embed {
            pos: l.gpu.upload(&[side * side, d], &pos)?,
            side,
            d,
        })
    }

    /// Tokens `[B, s·s, d]` plus the positional encoding.
    fn tokens(&self, enc: &mut Encoder, x: &Tensor) -> Result<Tensor> {
        if x.shape().len() != 3 || x.shape()[1..] != [self.side * self.side, self.d] {
            return Err(crate::Error::shape(
                "focus",
                format!(
                    "expected [B, {}, {}] tokens, got {:?}",
                    self.side * self.side,
                    self.d,
                    x.shape()
                ),
            ));
        }
        binary(enc, x, &self.pos, Binary::Add)
    }
}

struct EncoderLayer {
    qkv: Linear,
    out: Linear,
    norm: Norm,
    ffn: Ffn,
}

struct DecoderLayer {
    qkv: Linear,
    out: Linear,
    norm1: Norm,
    cross_q: Linear,
    cross_kv: Linear,
    cross_out: Linear,
    norm2: Norm,
    ffn: Ffn,
}

fn mha_out(l: &Loader, p: &str, d: usize) -> Result<Linear> {
    Linear::load(
        l,
        &format!("{p}.out_proj.weight"),
        &format!("{p}.out_proj.bias"),
        d,
        d,
    )
}

/// What the template contributes to every search frame: the encoder memory's keys and values
/// for each decoder layer's cross-attention, `[B, 64, 2d]` each (k | v).
pub struct TemplateMemory {
    pub kv: Vec<Tensor>,
}

pub struct FocusNet {
    enc_embed: Embed,
    dec_embed: Embed,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    heads: usize,
    top_k: usize,
    /// Attention logit scale `1/√(d / heads)`.
    scale: f32,
}

impl FocusNet {
    pub(crate) fn load(l: &Loader, cfg: &Config, z_side: usize, x_side: usize) -> Result<FocusNet> {
        let (d, ffn) = (cfg.d_model, cfg.ffn);
        let encoder = (0..cfg.enc_layers)
            .map(|i| {
                let p = format!("neck.encoder.encoder_layers.{i}");
                let a = format!("{p}.slf_attn");
                Ok(EncoderLayer {
                    qkv: Linear::load_rows(l, &a, d, 0..3 * d)?,
                    out: mha_out(l, &a, d)?,
                    norm: Norm::load(l, &format!("{p}.norm"), d)?,
                    ffn: Ffn::load(l, &format!("{p}.pos_ffn"), d, ffn)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..cfg.dec_layers)
            .map(|i| {
                let p = format!("neck.decoder.decoder_layers.{i}");
                let s = format!("{p}.slf_attn");
                let c = format!("{p}.enc_attn");
                Ok(DecoderLayer {
                    qkv: Linear::load_rows(l, &s, d, 0..3 * d)?,
                    out: mha_out(l, &s, d)?,
                    norm1: Norm::load(l, &format!("{p}.norm1"), d)?,
                    cross_q: Linear::load_rows(l, &c, d, 0..d)?,
                    cross_kv: Linear::load_rows(l, &c, d, d..3 * d)?,
                    cross_out: mha_out(l, &c, d)?,
                    norm2: Norm::load(l, &format!("{p}.norm2"), d)?,
                    ffn: Ffn::load(l, &format!("{p}.pos_ffn"), d, ffn)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FocusNet {
            enc_embed: Embed::load(l, "neck.encoder", z_side, d)?,
            dec_embed: Embed::load(l, "neck.decoder", x_side, d)?,
            encoder,
            decoder,
            heads: cfg.neck_heads,
            top_k: cfg.top_k,
            scale: ((d / cfg.neck_heads) as f32).powf(-0.5),
        })
    }

    /// Encodes the adjusted template tokens `[B, 64, d]`.
    pub fn encode(&self, enc: &mut Encoder, z: &Tensor, taps: &mut Taps) -> Result<TemplateMemory> {
        let mut x = self.enc_embed.tokens(enc, z)?;
        for (i, layer) in self.encoder.iter().enumerate() {
            let qkv = layer.qkv.run(enc, &x, Activation::None)?;
            let a = attention(
                enc,
                HeadsView::packed(&qkv, 3, 0)?,
                HeadsView::packed(&qkv, 3, 1)?,
                HeadsView::packed(&qkv, 3, 2)?,
                &AttnOpts {
                    heads: self.heads,
                    scale: self.scale,
                    bias: None,
                    mask: None,
                    scatter: None,
                },
            )?;
            let o = layer.out.run(enc, &a, Activation::None)?;
            let y = layer.norm.add(enc, &x, &o)?;
            x = layer.ffn.run(enc, &y)?;
            taps.put(format!("neck.encoder.layer{i}"), &x);
        }
        let kv = self
            .decoder
            .iter()
            .map(|l| l.cross_kv.run(enc, &x, Activation::None))
            .collect::<Result<Vec<_>>>()?;
        Ok(TemplateMemory { kv })
    }

    /// Decodes the adjusted search tokens `[B, 361, d]` against the template memory; returns
    /// the decoder output tokens `[B, 361, d]`.
    pub fn decode(
        &self,
        enc: &mut Encoder,
        xf: &Tensor,
        mem: &TemplateMemory,
        taps: &mut Taps,
    ) -> Result<Tensor> {
        let mut x = self.dec_embed.tokens(enc, xf)?;
        for (i, (layer, kv)) in self.decoder.iter().zip(&mem.kv).enumerate() {
            let qkv = layer.qkv.run(enc, &x, Activation::None)?;
            let sparse = topk_attention(
                enc,
                HeadsView::packed(&qkv, 3, 0)?,
                HeadsView::packed(&qkv, 3, 1)?,
                HeadsView::packed(&qkv, 3, 2)?,
                self.heads,
                self.top_k,
                self.scale,
            )?;
            taps.put(format!("neck.decoder.layer{i}.topk_index"), &sparse.indices);
            taps.put(format!("neck.decoder.layer{i}.topk_attn"), &sparse.weights);
            let o = layer.out.run(enc, &sparse.out, Activation::None)?;
            let y = layer.norm1.add(enc, &x, &o)?;
            let q = layer.cross_q.run(enc, &y, Activation::None)?;
            let c = attention(
                enc,
                HeadsView::dense(&q)?,
                HeadsView::packed(kv, 2, 0)?,
                HeadsView::packed(kv, 2, 1)?,
                &AttnOpts {
                    heads: self.heads,
                    scale: self.scale,
                    bias: None,
                    mask: None,
                    scatter: None,
                },
            )?;
            let o = layer.cross_out.run(enc, &c, Activation::None)?;
            let y = layer.norm2.add(enc, &y, &o)?;
            x = layer.ffn.run(enc, &y)?;
            if i == 0 {
                taps.put("neck.decoder.layer0", &x);
            }
        }
        Ok(x)
    }
}
