//! Swin backbone, first three stages (mmdet-2.x port as used by SparseTT; Swin-T in the
//! official configuration, sizes from [`Config`]).
//!
//! Token maps are `[B, H, W, C]`. PatchEmbed: pad bottom/right to a multiple of 4, conv 4×4/4,
//! LayerNorm. Block: `x += W-MSA(LN1(x))`, `x += MLP(LN2(x))`, windows of `window` (7) shifted by
//! `window / 2` (3) on odd blocks. PatchMerging: 2×2 gather in `nn.Unfold` order, LayerNorm(4C), Linear 4C→2C. Output:
//! `norm2` of stage 2, as NCHW.

use crate::gpu::Tensor;
use crate::model::config::Config;
use crate::model::load::Loader;
use crate::model::taps::Taps;
use crate::ops::attention::{attention, AttnOpts, Scatter};
use crate::ops::conv::{conv2d, Conv2dOpts};
use crate::ops::layout::permute;
use crate::ops::matmul::{linear, Activation, Epilogue};
use crate::ops::norm::{layer_norm, layer_norm_nchw};
use crate::ops::window::{self, patch_merge_ln, window_partition_ln};
use crate::ops::HeadsView;
use crate::{Encoder, Result};

const EPS: f32 = 1e-5;

struct Norm {
    w: Tensor,
    b: Tensor,
}

impl Norm {
    fn load(l: &Loader, prefix: &str, c: usize) -> Result<Norm> {
        Ok(Norm {
            w: l.tensor(&format!("{prefix}.weight"), &[c])?,
            b: l.tensor(&format!("{prefix}.bias"), &[c])?,
        })
    }

    fn run(&self, enc: &mut Encoder, x: &Tensor) -> Result<Tensor> {
        layer_norm(enc, x, &self.w, &self.b, EPS)
    }
}

struct Block {
    norm1: Norm,
    qkv_w: Tensor,
    qkv_b: Tensor,
    /// Relative position bias gathered once at load time: `[heads, 49, 49]`.
    rel_bias: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
    norm2: Norm,
    fc1_w: Tensor,
    fc1_b: Tensor,
    fc2_w: Tensor,
    fc2_b: Tensor,
    heads: usize,
    window: usize,
    shift: usize,
    c: usize,
}

impl Block {
    fn load(
        l: &Loader,
        p: &str,
        c: usize,
        heads: usize,
        window: usize,
        shift: usize,
    ) -> Result<Block> {
        let table = l.host(
            &format!("{p}.attn.w_msa.relative_position_bias_table"),
            &[(2 * window - 1).pow(2), heads],
        )?;
        let bias = window::cpu::relative_position_bias(&table, heads, window);
        Ok(Block {
            norm1: Norm::load(l, &format!("{p}.norm1"), c)?,
            qkv_w: l.tensor(&format!("{p}.attn.w_msa.qkv.weight"), &[3 * c, c])?,
            qkv_b: l.tensor(&format!("{p}.attn.w_msa.qkv.bias"), &[3 * c])?,
            rel_bias: l
                .gpu
                .upload(&[heads, window * window, window * window], &bias)?,
            proj_w: l.tensor(&format!("{p}.attn.w_msa.proj.weight"), &[c, c])?,
            proj_b: l.tensor(&format!("{p}.attn.w_msa.proj.bias"), &[c])?,
            norm2: Norm::load(l, &format!("{p}.norm2"), c)?,
            fc1_w: l.tensor(&format!("{p}.ffn.layers.0.0.weight"), &[4 * c, c])?,
            fc1_b: l.tensor(&format!("{p}.ffn.layers.0.0.bias"), &[4 * c])?,
            fc2_w: l.tensor(&format!("{p}.ffn.layers.1.weight"), &[c, 4 * c])?,
            fc2_b: l.tensor(&format!("{p}.ffn.layers.1.bias"), &[c])?,
            heads,
            window,
            shift,
            c,
        })
    }

    /// `x`: `[B, H, W, C]`; `mask`: the shifted-window region mask for this map size.
    fn run(&self, enc: &mut Encoder, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let [b, h, w, c] = [x.dim(0), x.dim(1), x.dim(2), x.dim(3)];
        let win = window_partition_ln(
            enc,
            x,
            &self.norm1.w,
            &self.norm1.b,
            EPS,
            self.window,
            self.shift,
        )?;
        let qkv = linear(
            enc,
            &win,
            &self.qkv_w,
            &Epilogue {
                bias: Some(&self.qkv_b),
                ..Default::default()
            },
        )?;
        // The output goes straight back to the token map (window reverse fused into the
        // attention), so the per-token projection runs on the map: pad tokens are never
        // projected and the residual add fuses into the projection.
        let merged = attention(
            enc,
            HeadsView::packed(&qkv, 3, 0)?,
            HeadsView::packed(&qkv, 3, 1)?,
            HeadsView::packed(&qkv, 3, 2)?,
            &AttnOpts {
                heads: self.heads,
                scale: ((self.c / self.heads) as f32).powf(-0.5),
                bias: Some(&self.rel_bias),
                mask: if self.shift > 0 { mask } else { None },
                scatter: Some(Scatter {
                    h,
                    w,
                    window: self.window,
                    shift: self.shift,
                }),
            },
        )?
        .reshape(&[b, h, w, c])?;
        let x = linear(
            enc,
            &merged,
            &self.proj_w,
            &Epilogue {
                bias: Some(&self.proj_b),
                residual: Some(x),
                ..Default::default()
            },
        )?;
        let y = self.norm2.run(enc, &x)?;
        let y = linear(
            enc,
            &y,
            &self.fc1_w,
            &Epilogue {
                bias: Some(&self.fc1_b),
                act: Activation::Gelu,
                ..Default::default()
            },
        )?;
        linear(
            enc,
            &y,
            &self.fc2_w,
            &Epilogue {
                bias: Some(&self.fc2_b),
                residual: Some(&x),
                ..Default::default()
            },
        )
        .and_then(|t| t.reshape(&[b, h, w, c]))
    }
}

struct Merge {
    norm: Norm,
    reduction: Tensor,
    c: usize,
}

pub struct Swin {
    embed_w: Tensor,
    embed_b: Tensor,
    embed_norm: Norm,
    stages: Vec<Vec<Block>>,
    merges: Vec<Merge>,
    out_norm: Norm,
    window: usize,
}

/// The shifted-window masks a map of `h × w` tokens needs, per stage.
pub struct Masks {
    per_stage: Vec<Tensor>,
}

impl Swin {
    pub(crate) fn load(l: &Loader, cfg: &Config) -> Result<Swin> {
        let p = "basemodel.net";
        let mut stages = Vec::new();
        let mut merges = Vec::new();
        let mut c = cfg.embed;
        let win = cfg.window;
        for (s, (&depth, &heads)) in cfg.depths.iter().zip(&cfg.heads).enumerate() {
            let blocks = (0..depth)
                .map(|i| {
                    let shift = if i % 2 == 1 { win / 2 } else { 0 };
                    let q = format!("{p}.stages.{s}.blocks.{i}");
                    Block::load(l, &q, c, heads, win, shift)
                })
                .collect::<Result<Vec<_>>>()?;
            stages.push(blocks);
            if s < 2 {
                let d = format!("{p}.stages.{s}.downsample");
                merges.push(Merge {
                    norm: Norm::load(l, &format!("{d}.norm"), 4 * c)?,
                    reduction: l.tensor(&format!("{d}.reduction.weight"), &[2 * c, 4 * c])?,
                    c,
                });
                c *= 2;
            }
        }
        Ok(Swin {
            embed_w: l.tensor(
                &format!("{p}.patch_embed.projection.weight"),
                &[cfg.embed, 3, 4, 4],
            )?,
            embed_b: l.tensor(&format!("{p}.patch_embed.projection.bias"), &[cfg.embed])?,
            embed_norm: Norm::load(l, &format!("{p}.patch_embed.norm"), cfg.embed)?,
            stages,
            merges,
            out_norm: Norm::load(l, &format!("{p}.norm2"), c)?,
            window: win,
        })
    }

    /// Token-map sizes of the three stages for an input of `size × size` pixels.
    pub fn stage_sizes(size: usize) -> [usize; 3] {
        let s0 = size.div_ceil(4);
        let s1 = s0.div_ceil(2);
        [s0, s1, s1.div_ceil(2)]
    }

    /// Region masks for the shifted windows of an input of `size × size` pixels (built once).
    pub fn masks(&self, enc: &mut Encoder, size: usize) -> Result<Masks> {
        let win = self.window;
        let per_stage = Self::stage_sizes(size)
            .iter()
            .map(|&s| {
                let hp = s.div_ceil(win) * win;
                window::region_mask(enc, hp, hp, win, win / 2)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Masks { per_stage })
    }

    /// `img`: `[B, 3, S, S]` normalised RGB. Returns tokens `[B, s·s, 4C]` (s = S/16 rounded
    /// up): everything downstream works on tokens, so the map is never transposed to NCHW.
    /// `tag` ("z" or "x") prefixes the captured intermediates.
    pub fn forward(
        &self,
        enc: &mut Encoder,
        img: &Tensor,
        masks: &Masks,
        tag: &str,
        taps: &mut Taps,
    ) -> Result<Tensor> {
        let (b, size) = (img.dim(0), img.dim(2));
        let pad = size.next_multiple_of(4) - size;
        let e = conv2d(
            enc,
            img,
            &self.embed_w,
            &Conv2dOpts {
                stride: (4, 4),
                pad: [0, 0, pad, pad],
                bias: Some(&self.embed_b),
                ..Default::default()
            },
        )?;
        let s0 = e.dim(2);
        let mut x = layer_norm_nchw(enc, &e, &self.embed_norm.w, &self.embed_norm.b, EPS)?
            .reshape(&[b, s0, s0, e.dim(1)])?;
        taps.put(format!("{tag}.backbone.patch_embed"), &x);
        let mut side = s0;
        for (s, blocks) in self.stages.iter().enumerate() {
            for blk in blocks {
                x = blk.run(enc, &x, Some(&masks.per_stage[s]))?;
            }
            taps.put(format!("{tag}.backbone.stage{s}.out"), &x);
            if let Some(m) = self.merges.get(s) {
                let g = patch_merge_ln(enc, &x, &m.norm.w, &m.norm.b, EPS)?;
                side = side.div_ceil(2);
                x = linear(enc, &g, &m.reduction, &Epilogue::default())?.reshape(&[
                    b,
                    side,
                    side,
                    2 * m.c,
                ])?;
                taps.put(format!("{tag}.backbone.stage{s}.down"), &x);
            }
        }
        let y = self
            .out_norm
            .run(enc, &x)?
            .reshape(&[b, side * side, x.dim(3)])?;
        if taps.enabled() {
            // The golden file keeps this output as NCHW.
            let nchw = permute(enc, &y, &[0, 2, 1])?.reshape(&[b, x.dim(3), side, side])?;
            taps.put(format!("backbone.{tag}"), &nchw);
        }
        Ok(y)
    }
}
