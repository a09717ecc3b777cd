//! The Swin backbone in training mode: the same computation as [`crate::model::swin::Swin`]
//! (mmdet-2.x Swin, first three stages, `norm2` of stage 2), recorded on a [`Tape`] so that
//! [`Tape::backward`] returns the gradient of every backbone parameter under its official key
//! name (`basemodel.net.…`).
//!
//! The forward runs the inference kernels, fused where the fusion has a backward: LayerNorm fused
//! into the window partition, the attention scattering into the token map, the 2×2 merge fused
//! with its LayerNorm, the residual adds fused into the projections. Those Swin-specific nodes
//! live here (their backward kernels are in `crate::ops::window`); plain linear layers, norms,
//! GELU and the patch convolution use the generic wrappers of [`crate::autograd::ops`].
//!
//! Stage-2 PatchMerging and stage 3 are skipped, as at inference: their weights are not loaded
//! and get no gradient (the official step stores 0 for them).

use std::collections::HashMap;

use crate::autograd::ops as ag;
use crate::autograd::{BackwardFn, Tape, Var};
use crate::gpu::{Gpu, Tensor};
use crate::model::config::Config;
use crate::model::load::{Loader, WeightSource};
use crate::ops::attention::{attention, attention_backward, AttnInto, AttnOpts, Scatter};
use crate::ops::layout::concat;
use crate::ops::matmul::{
    linear as linear_fwd, linear_backward_bias, linear_backward_input, linear_backward_weight,
    Epilogue,
};
use crate::ops::norm::{layer_norm_nchw, layer_norm_nchw_backward, LayerNormInto};
use crate::ops::random;
use crate::ops::window::{
    self, patch_merge_ln, patch_merge_ln_backward, region_mask, relative_position_bias_backward,
    window_partition_ln, window_partition_ln_backward, window_reverse_backward, WindowGrid,
};
use crate::ops::HeadsView;
use crate::{Encoder, Error, Result};

/// LayerNorm epsilon of every Swin norm.
pub const EPS: f32 = 1e-5;
const PREFIX: &str = "basemodel.net";

/// The backbone's sizes (the Swin part of the model configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    /// Stage channels are `embed`, `2·embed`, `4·embed`; the output has `4·embed`.
    pub embed: usize,
    /// Blocks per stage.
    pub depths: [usize; 3],
    /// Attention heads per stage (each must divide its stage's channels).
    pub heads: [usize; 3],
    /// Window side; odd blocks of a stage shift by `window / 2`.
    pub window: usize,
}

impl From<&Config> for Arch {
    fn from(c: &Config) -> Arch {
        Arch {
            embed: c.embed,
            depths: c.depths,
            heads: c.heads,
            window: c.window,
        }
    }
}

impl Arch {
    /// Swin-T as SparseTT uses it.
    pub fn official() -> Arch {
        Arch {
            embed: 96,
            depths: [2, 2, 6],
            heads: [3, 6, 12],
            window: 7,
        }
    }

    fn check(&self) -> Result<()> {
        let ok = self.embed > 0
            && self.window > 0
            && (0..3).all(|s| {
                let c = self.embed << s;
                self.heads[s] > 0 && c.is_multiple_of(self.heads[s])
            });
        if !ok {
            return Err(Error::shape(
                "train::Swin",
                format!(
                    "invalid backbone sizes {self:?} (heads must divide each stage's channels)"
                ),
            ));
        }
        Ok(())
    }

    /// Channels of stage `s`.
    pub fn channels(&self, s: usize) -> usize {
        self.embed << s
    }

    /// Shift of block `i` of a stage: 0 on even blocks, `window / 2` on odd ones.
    pub fn shift(&self, i: usize) -> usize {
        if i % 2 == 1 {
            self.window / 2
        } else {
            0
        }
    }

    /// Every trainable parameter of the used part of the backbone, as (official key, shape).
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let p = PREFIX;
        let e = self.embed;
        let mut out = vec![
            (
                format!("{p}.patch_embed.projection.weight"),
                vec![e, 3, 4, 4],
            ),
            (format!("{p}.patch_embed.projection.bias"), vec![e]),
            (format!("{p}.patch_embed.norm.weight"), vec![e]),
            (format!("{p}.patch_embed.norm.bias"), vec![e]),
        ];
        let rows = (2 * self.window - 1).pow(2);
        for s in 0..3 {
            let c = self.channels(s);
            for i in 0..self.depths[s] {
                let b = format!("{p}.stages.{s}.blocks.{i}");
                out.extend([
                    (format!("{b}.norm1.weight"), vec![c]),
                    (format!("{b}.norm1.bias"), vec![c]),
                    (
                        format!("{b}.attn.w_msa.relative_position_bias_table"),
                        vec![rows, self.heads[s]],
                    ),
                    (format!("{b}.attn.w_msa.qkv.weight"), vec![3 * c, c]),
                    (format!("{b}.attn.w_msa.qkv.bias"), vec![3 * c]),
                    (format!("{b}.attn.w_msa.proj.weight"), vec![c, c]),
                    (format!("{b}.attn.w_msa.proj.bias"), vec![c]),
                    (format!("{b}.norm2.weight"), vec![c]),
                    (format!("{b}.norm2.bias"), vec![c]),
                    (format!("{b}.ffn.layers.0.0.weight"), vec![4 * c, c]),
                    (format!("{b}.ffn.layers.0.0.bias"), vec![4 * c]),
                    (format!("{b}.ffn.layers.1.weight"), vec![c, 4 * c]),
                    (format!("{b}.ffn.layers.1.bias"), vec![c]),
                ]);
            }
            if s < 2 {
                let d = format!("{p}.stages.{s}.downsample");
                out.extend([
                    (format!("{d}.norm.weight"), vec![4 * c]),
                    (format!("{d}.norm.bias"), vec![4 * c]),
                    (format!("{d}.reduction.weight"), vec![2 * c, 4 * c]),
                ]);
            }
        }
        let c = self.channels(2);
        out.extend([
            (format!("{p}.norm2.weight"), vec![c]),
            (format!("{p}.norm2.bias"), vec![c]),
        ]);
        out
    }
}

/// Options of [`Swin::forward_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SwinOpts {
    /// Stochastic depth (drop path): the rate of the last block of the 4-stage Swin (the official
    /// recipe: 0.2). As in mmdet, block k (counted over all stages, the unused stage 3 included:
    /// n = Σ depths + [`STAGE3_DEPTH`] blocks) drops its attention and MLP branches per sample
    /// with rate `k·rate/(n − 1)`, scaling kept ones by `1/(1 − rate_k)`. 0 (the golden step,
    /// evaluation) is off.
    pub drop_path_rate: f32,
    /// Seed of the drop-path masks; give every training step its own. Each branch of each block
    /// derives its own stream from it ([`drop_path_seed`]).
    pub seed: u64,
}

/// Blocks of Swin-T's stage 3, which SparseTT computes and discards (it counts in the drop-path
/// schedule).
pub const STAGE3_DEPTH: usize = 2;

/// The drop-path rate of global block `k` (see [`SwinOpts::drop_path_rate`]).
pub fn drop_path_rate(arch: &Arch, rate: f32, k: usize) -> f32 {
    let n = arch.depths.iter().sum::<usize>() + STAGE3_DEPTH;
    if n < 2 {
        return 0.0;
    }
    (rate as f64 * k as f64 / (n - 1) as f64) as f32
}

/// The mask seed of branch `branch` (0 attention, 1 MLP) of global block `k`.
pub fn drop_path_seed(seed: u64, k: usize, branch: usize) -> u64 {
    crate::prng::SplitMix64::for_key(&format!("swin.drop_path.{k}.{branch}"), seed).next_u64()
}

/// The trainable backbone: parameters as GPU tensors by official key name, updated in place by
/// the optimizer (see [`Swin::params`]).
pub struct Swin {
    arch: Arch,
    params: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

impl Swin {
    /// Uploads the backbone parameters of `cfg` from `weights` (official key names, e.g. a
    /// `StateDict`; shapes are checked). Stage-2 PatchMerging and stage 3 are not read.
    pub fn load(gpu: &Gpu, weights: &dyn WeightSource, cfg: &Config) -> Result<Swin> {
        Self::load_arch(gpu, weights, &Arch::from(cfg))
    }

    /// [`Swin::load`] for backbone sizes alone (any head widths the kernels take).
    pub fn load_arch(gpu: &Gpu, weights: &dyn WeightSource, arch: &Arch) -> Result<Swin> {
        arch.check()?;
        let l = Loader::new(gpu, weights);
        let mut params = Vec::new();
        let mut index = HashMap::new();
        for (name, shape) in arch.param_shapes() {
            let t = l.tensor(&name, &shape)?;
            index.insert(name.clone(), params.len());
            params.push((name, t));
        }
        Ok(Swin {
            arch: *arch,
            params,
            index,
        })
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    /// The parameters (official key, tensor), in a fixed order. The tensors share their buffers
    /// with the model, so an optimizer step on them updates the backbone.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    fn param(&self, tape: &mut Tape, name: &str) -> Result<Var> {
        let i = self
            .index
            .get(name)
            .ok_or_else(|| Error::Other(format!("train::Swin: no parameter '{name}'")))?;
        Ok(tape.param(name, &self.params[*i].1))
    }

    /// [`Swin::forward_with`] with stochastic depth off (the golden step, evaluation).
    pub fn forward(&self, tape: &mut Tape, enc: &mut Encoder, img: &Var) -> Result<Var> {
        self.forward_with(tape, enc, img, &SwinOpts::default())
    }

    /// `img`: `[B, 3, S, S]` normalised RGB (usually a tape constant). Returns the tokens
    /// `[B, s·s, 4·embed]` of `norm2(stage 2)` (s = ⌈⌈⌈S/4⌉/2⌉/2⌉, row-major over the map),
    /// recorded on `tape`: PatchEmbed (pad bottom/right to a multiple of 4, conv 4×4/4,
    /// LayerNorm), then per stage its blocks `x += proj(W-MSA(LN1(x)))`,
    /// `x += fc2(GELU(fc1(LN2(x))))` (odd blocks on windows shifted by window/2, with the region
    /// mask), and after stages 0 and 1 PatchMerging (`nn.Unfold` order, LayerNorm, linear
    /// 4C→2C). Every parameter is registered under its official key, so calling this twice on
    /// one tape (template and search crop) adds both gradients up.
    pub fn forward_with(
        &self,
        tape: &mut Tape,
        enc: &mut Encoder,
        img: &Var,
        opts: &SwinOpts,
    ) -> Result<Var> {
        const OP: &str = "train::Swin::forward";
        let s = img.shape();
        if s.len() != 4 || s[1] != 3 || s[0] == 0 || s[2] == 0 || s[3] == 0 {
            return Err(Error::shape(
                OP,
                format!("expects a [B, 3, H, W] image, got {s:?}"),
            ));
        }
        if !(0.0..1.0).contains(&opts.drop_path_rate) {
            return Err(Error::shape(
                OP,
                format!("drop_path_rate {} is outside [0, 1)", opts.drop_path_rate),
            ));
        }
        let a = self.arch;
        let p = PREFIX;
        let b = s[0];
        let (pad_h, pad_w) = (
            s[2].next_multiple_of(4) - s[2],
            s[3].next_multiple_of(4) - s[3],
        );
        let w = self.param(tape, &format!("{p}.patch_embed.projection.weight"))?;
        let bias = self.param(tape, &format!("{p}.patch_embed.projection.bias"))?;
        let e = ag::conv2d(
            tape,
            enc,
            img,
            &w,
            Some(&bias),
            (4, 4),
            [0, 0, pad_h, pad_w],
        )?;
        let nw = self.param(tape, &format!("{p}.patch_embed.norm.weight"))?;
        let nb = self.param(tape, &format!("{p}.patch_embed.norm.bias"))?;
        let mut x = ln_nchw_node(tape, enc, &e, &nw, &nb)?;
        let mut k = 0;
        for st in 0..3 {
            let (h, wd) = (x.dim(1), x.dim(2));
            let g = WindowGrid::new(h, wd, a.window)?;
            let shift = a.window / 2;
            let mask = if a.depths[st] > 1 && shift > 0 {
                Some(region_mask(enc, g.hp, g.wp, a.window, shift)?)
            } else {
                None
            };
            for i in 0..a.depths[st] {
                let drop = DropPath {
                    p: drop_path_rate(&a, opts.drop_path_rate, k),
                    seeds: [0, 1].map(|br| drop_path_seed(opts.seed, k, br)),
                };
                x = self.block(tape, enc, &x, st, i, mask.as_ref(), &drop)?;
                k += 1;
            }
            if st < 2 {
                let d = format!("{p}.stages.{st}.downsample");
                let nw = self.param(tape, &format!("{d}.norm.weight"))?;
                let nb = self.param(tape, &format!("{d}.norm.bias"))?;
                let m = merge_ln_node(tape, enc, &x, &nw, &nb)?;
                let r = self.param(tape, &format!("{d}.reduction.weight"))?;
                let c = a.channels(st);
                let shape = [b, h.div_ceil(2), wd.div_ceil(2), 2 * c];
                let y = ag::linear(tape, enc, &m, &r, None)?;
                x = ag::reshape(tape, &y, &shape)?;
            }
        }
        let [h, wd, c] = [x.dim(1), x.dim(2), x.dim(3)];
        let nw = self.param(tape, &format!("{p}.norm2.weight"))?;
        let nb = self.param(tape, &format!("{p}.norm2.bias"))?;
        let y = ag::layer_norm(tape, enc, &x, &nw, &nb, EPS)?;
        ag::reshape(tape, &y, &[b, h * wd, c])
    }

    /// One Swin block on the map `x` (`[B, H, W, C]`).
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        tape: &mut Tape,
        enc: &mut Encoder,
        x: &Var,
        st: usize,
        i: usize,
        mask: Option<&Tensor>,
        drop: &DropPath,
    ) -> Result<Var> {
        let a = self.arch;
        let pb = format!("{PREFIX}.stages.{st}.blocks.{i}");
        let prm = |tape: &mut Tape, k: &str| self.param(tape, &format!("{pb}.{k}"));
        let shift = a.shift(i);
        let heads = a.heads[st];
        let c = a.channels(st);
        let n1w = prm(tape, "norm1.weight")?;
        let n1b = prm(tape, "norm1.bias")?;
        let win = ln_partition_node(tape, enc, x, &n1w, &n1b, a.window, shift)?;
        let qw = prm(tape, "attn.w_msa.qkv.weight")?;
        let qb = prm(tape, "attn.w_msa.qkv.bias")?;
        let qkv = ag::linear(tape, enc, &win, &qw, Some(&qb))?;
        let table = prm(tape, "attn.w_msa.relative_position_bias_table")?;
        let rel = rel_bias_node(tape, enc, &table, a.window)?;
        let att = window_attention_node(
            tape,
            enc,
            &qkv,
            &rel,
            heads,
            ((c / heads) as f32).powf(-0.5),
            if shift > 0 { mask } else { None },
            [x.dim(0), x.dim(1), x.dim(2)],
            a.window,
            shift,
        )?;
        let pw = prm(tape, "attn.w_msa.proj.weight")?;
        let pbias = prm(tape, "attn.w_msa.proj.bias")?;
        let x = drop.residual(tape, enc, &att, &pw, &pbias, x, 0)?;
        let n2w = prm(tape, "norm2.weight")?;
        let n2b = prm(tape, "norm2.bias")?;
        let y = ag::layer_norm(tape, enc, &x, &n2w, &n2b, EPS)?;
        let f1w = prm(tape, "ffn.layers.0.0.weight")?;
        let f1b = prm(tape, "ffn.layers.0.0.bias")?;
        let y = ag::linear(tape, enc, &y, &f1w, Some(&f1b))?;
        let y = ag::gelu(tape, enc, &y)?;
        let f2w = prm(tape, "ffn.layers.1.weight")?;
        let f2b = prm(tape, "ffn.layers.1.bias")?;
        drop.residual(tape, enc, &y, &f2w, &f2b, &x, 1)
    }
}

/// A block's stochastic depth: rate `p` and one seed per branch.
struct DropPath {
    p: f32,
    seeds: [u64; 2],
}

impl DropPath {
    /// `residual + drop_path(x·Wᵀ + b)`; without drop path the add is fused into the linear.
    #[allow(clippy::too_many_arguments)]
    fn residual(
        &self,
        tape: &mut Tape,
        enc: &mut Encoder,
        x: &Var,
        w: &Var,
        b: &Var,
        residual: &Var,
        branch: usize,
    ) -> Result<Var> {
        if self.p == 0.0 {
            return linear_residual(tape, enc, x, w, b, residual);
        }
        let y = ag::linear(tape, enc, x, w, Some(b))?;
        let y = drop_path_node(tape, enc, &y, self.p, self.seeds[branch])?;
        ag::add(tape, enc, residual, &y)
    }
}

/// Drop path on a `[B, ...]` branch: `y[b] = x[b]·m_b/(1 − p)`; the backward regenerates the
/// mask from the seed.
fn drop_path_node(tape: &mut Tape, enc: &mut Encoder, x: &Var, p: f32, seed: u64) -> Result<Var> {
    let y = random::drop_path(enc, &x.t, p, seed)?;
    let back: BackwardFn = Box::new(move |enc, dy, _| {
        Ok(vec![Some(random::drop_path_backward(
            enc, dy, p, seed, None,
        )?)])
    });
    Ok(tape.record("swin.drop_path", &[x], y, back))
}

/// `y = x·Wᵀ + b + residual` over the last dimension (`w` `[N, K]`, `residual` of the output's
/// shape): the block's residual adds fused into the projection and fc2, as at inference (one
/// dispatch instead of two). Gradients as [`ag::linear`], plus `dresidual = dy` (a copy: the tape
/// may add into it).
fn linear_residual(
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    w: &Var,
    b: &Var,
    residual: &Var,
) -> Result<Var> {
    let y = linear_fwd(
        enc,
        &x.t,
        &w.t,
        &Epilogue {
            bias: Some(&b.t),
            residual: Some(&residual.t),
            ..Default::default()
        },
    )?;
    let (xt, wt) = (x.t.clone(), w.t.clone());
    let back: BackwardFn = Box::new(move |enc, dy, needs| {
        let dres = if needs[3] {
            let t = enc
                .gpu()
                .empty("train::swin::linear_residual", dy.shape(), dy.dtype())?;
            enc.copy(dy, &t)?;
            Some(t)
        } else {
            None
        };
        Ok(vec![
            needs[0]
                .then(|| linear_backward_input(enc, dy, &wt, None))
                .transpose()?,
            needs[1]
                .then(|| linear_backward_weight(enc, dy, &xt, None))
                .transpose()?,
            needs[2]
                .then(|| linear_backward_bias(enc, dy, None))
                .transpose()?,
            dres,
        ])
    });
    Ok(tape.record("swin.linear_residual", &[x, w, b, residual], y, back))
}

/// PatchEmbed's LayerNorm on the NCHW conv output (`[B, C, H, W]`), written as the
/// `[B, H, W, C]` token map (the transpose fused into the norm).
fn ln_nchw_node(tape: &mut Tape, enc: &mut Encoder, e: &Var, w: &Var, b: &Var) -> Result<Var> {
    let [n, c, h, wd] = [e.dim(0), e.dim(1), e.dim(2), e.dim(3)];
    let y = layer_norm_nchw(enc, &e.t, &w.t, &b.t, EPS)?.reshape(&[n, h, wd, c])?;
    let (et, wt) = (e.t.clone(), w.t.clone());
    let back: BackwardFn = Box::new(move |enc, dy, needs| {
        let dy = dy.reshape(&[n, h * wd, c])?;
        let g = layer_norm_nchw_backward(enc, &et, &wt, &dy, EPS, &LayerNormInto::default())?;
        Ok(vec![
            needs[0].then_some(g.dx),
            needs[1].then_some(g.dweight),
            needs[2].then_some(g.dbias),
        ])
    });
    Ok(tape.record("swin.patch_embed_norm", &[e, w, b], y, back))
}

/// norm1 fused with the (shifted) window partition: `[B, H, W, C]` → `[B·nW, w², C]`.
fn ln_partition_node(
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    w: &Var,
    b: &Var,
    window: usize,
    shift: usize,
) -> Result<Var> {
    let y = window_partition_ln(enc, &x.t, &w.t, &b.t, EPS, window, shift)?;
    let (xt, wt) = (x.t.clone(), w.t.clone());
    let back: BackwardFn = Box::new(move |enc, dy, needs| {
        let into = LayerNormInto::default();
        let g = window_partition_ln_backward(enc, &xt, &wt, dy, EPS, window, shift, &into)?;
        Ok(vec![
            needs[0].then_some(g.dx),
            needs[1].then_some(g.dweight),
            needs[2].then_some(g.dbias),
        ])
    });
    Ok(tape.record("swin.norm1_partition", &[x, w, b], y, back))
}

/// The relative position bias `[heads, w², w²]` gathered from its table `[(2w − 1)², heads]`;
/// the table's gradient sums the bias cells that read each entry.
fn rel_bias_node(tape: &mut Tape, enc: &mut Encoder, table: &Var, window: usize) -> Result<Var> {
    let y = window::relative_position_bias(enc, &table.t, window)?;
    let back: BackwardFn = Box::new(move |enc, dy, _| {
        Ok(vec![Some(relative_position_bias_backward(
            enc, dy, window, None,
        )?)])
    });
    Ok(tape.record("swin.rel_bias", &[table], y, back))
}

/// (S)W-MSA on the windows' packed `qkv` (`[B·nW, w², 3C]`) with the relative position bias
/// and, on shifted blocks, the region mask; the output is scattered straight into the
/// `[B, H, W, C]` map (window reverse and crop fused). Backward: the scatter's adjoint
/// ([`window_reverse_backward`], zero on pad tokens), then the dense attention backward; `dqkv`
/// packs dq, dk, dv again.
#[allow(clippy::too_many_arguments)]
fn window_attention_node(
    tape: &mut Tape,
    enc: &mut Encoder,
    qkv: &Var,
    bias: &Var,
    heads: usize,
    scale: f32,
    mask: Option<&Tensor>,
    [b, h, w]: [usize; 3],
    window: usize,
    shift: usize,
) -> Result<Var> {
    let c = qkv.dim(-1) / 3;
    let [q, k, v] = views(&qkv.t)?;
    let y = attention(
        enc,
        q,
        k,
        v,
        &AttnOpts {
            heads,
            scale,
            bias: Some(&bias.t),
            mask,
            scatter: Some(Scatter {
                h,
                w,
                window,
                shift,
            }),
        },
    )?
    .reshape(&[b, h, w, c])?;
    let (qt, bt, mt) = (qkv.t.clone(), bias.t.clone(), mask.cloned());
    let back: BackwardFn = Box::new(move |enc, dy, needs| {
        let dwin = window_reverse_backward(enc, dy, window, shift, None)?;
        let [q, k, v] = views(&qt)?;
        let opts = AttnOpts {
            heads,
            scale,
            bias: Some(&bt),
            mask: mt.as_ref(),
            scatter: None,
        };
        let g = attention_backward(enc, q, k, v, &opts, &dwin, &AttnInto::default())?;
        let dqkv = if needs[0] {
            Some(concat(enc, &[&g.dq, &g.dk, &g.dv], 2)?)
        } else {
            None
        };
        Ok(vec![dqkv, if needs[1] { g.dbias } else { None }])
    });
    Ok(tape.record("swin.window_attention", &[qkv, bias], y, back))
}

/// q, k and v of a packed `[B·nW, w², 3C]` projection.
fn views(t: &Tensor) -> Result<[HeadsView<'_>; 3]> {
    Ok([
        HeadsView::packed(t, 3, 0)?,
        HeadsView::packed(t, 3, 1)?,
        HeadsView::packed(t, 3, 2)?,
    ])
}

/// PatchMerging's 2×2 gather (`nn.Unfold` order, zero pad to even) fused with its LayerNorm:
/// `[B, H, W, C]` → `[B, ⌈H/2⌉·⌈W/2⌉, 4C]`.
fn merge_ln_node(tape: &mut Tape, enc: &mut Encoder, x: &Var, w: &Var, b: &Var) -> Result<Var> {
    let y = patch_merge_ln(enc, &x.t, &w.t, &b.t, EPS)?;
    let (xt, wt) = (x.t.clone(), w.t.clone());
    let back: BackwardFn = Box::new(move |enc, dy, needs| {
        let g = patch_merge_ln_backward(enc, &xt, &wt, dy, EPS, &LayerNormInto::default())?;
        Ok(vec![
            needs[0].then_some(g.dx),
            needs[1].then_some(g.dweight),
            needs[2].then_some(g.dbias),
        ])
    });
    Ok(tape.record("swin.patch_merge_norm", &[x, w, b], y, back))
}

/// The whole backbone in plain f64 loops, written the way the PyTorch code reads (pad, roll,
/// windows, attention, reverse), for finite-difference checks of the tape's gradients.
pub mod cpu {
    use std::collections::HashMap;

    use super::{drop_path_rate, drop_path_seed, Arch, SwinOpts, PREFIX};
    use crate::ops::elementwise::cpu::erf;
    use crate::ops::random::cpu::{drop_path_mask, scale as random_scale};
    use crate::ops::window::cpu::{region_mask, relative_position_index};

    const EPS: f64 = super::EPS as f64;

    /// A `[B, H, W, C]` map.
    #[derive(Clone, Debug)]
    pub struct Map {
        pub b: usize,
        pub h: usize,
        pub w: usize,
        pub c: usize,
        pub v: Vec<f64>,
    }

    impl Map {
        fn at(&self, b: usize, y: usize, x: usize) -> &[f64] {
            let i = ((b * self.h + y) * self.w + x) * self.c;
            &self.v[i..i + self.c]
        }
    }

    fn get<'a>(params: &'a HashMap<String, Vec<f64>>, key: &str) -> &'a [f64] {
        params
            .get(key)
            .unwrap_or_else(|| panic!("train::swin::cpu: missing parameter {key}"))
    }

    fn layer_norm(x: &[f64], c: usize, g: &[f64], b: &[f64]) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(c) {
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64;
            let r = 1.0 / (var + EPS).sqrt();
            out.extend(
                row.iter()
                    .enumerate()
                    .map(|(i, v)| (v - mean) * r * g[i] + b[i]),
            );
        }
        out
    }

    /// `x·Wᵀ + b` over rows of `k` (`w` `[n, k]`).
    fn linear(x: &[f64], k: usize, w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        let n = w.len() / k;
        let mut out = Vec::with_capacity(x.len() / k * n);
        for row in x.chunks(k) {
            for o in 0..n {
                let s: f64 = row
                    .iter()
                    .zip(&w[o * k..(o + 1) * k])
                    .map(|(a, b)| a * b)
                    .sum();
                out.push(s + b.map_or(0.0, |b| b[o]));
            }
        }
        out
    }

    fn gelu(x: f64) -> f64 {
        0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
    }

    /// Backbone output tokens `[B, s·s, 4·embed]` (row-major) for `img` `[B, 3, hi, wi]`;
    /// `params` maps official keys to row-major values of the shapes [`Arch::param_shapes`]
    /// lists. Drop path uses the GPU's masks (`ops::random::cpu`), bit for bit.
    pub fn forward(
        arch: &Arch,
        params: &HashMap<String, Vec<f64>>,
        img: &[f64],
        [b, hi, wi]: [usize; 3],
        opts: &SwinOpts,
    ) -> Vec<f64> {
        let p = |k: &str| get(params, &format!("{PREFIX}.{k}"));
        // PatchEmbed: zero pad bottom/right, conv 4×4 stride 4, LayerNorm per token.
        let e = arch.embed;
        let (h, w) = (hi.div_ceil(4), wi.div_ceil(4));
        let (cw, cb) = (
            p("patch_embed.projection.weight"),
            p("patch_embed.projection.bias"),
        );
        let mut tok = vec![0.0; b * h * w * e];
        for bi in 0..b {
            for y in 0..h {
                for x in 0..w {
                    for o in 0..e {
                        let mut s = cb[o];
                        for ci in 0..3 {
                            for ky in 0..4 {
                                for kx in 0..4 {
                                    let (iy, ix) = (4 * y + ky, 4 * x + kx);
                                    if iy < hi && ix < wi {
                                        s += cw[((o * 3 + ci) * 4 + ky) * 4 + kx]
                                            * img[((bi * 3 + ci) * hi + iy) * wi + ix];
                                    }
                                }
                            }
                        }
                        tok[((bi * h + y) * w + x) * e + o] = s;
                    }
                }
            }
        }
        let v = layer_norm(
            &tok,
            e,
            p("patch_embed.norm.weight"),
            p("patch_embed.norm.bias"),
        );
        let mut m = Map { b, h, w, c: e, v };
        let mut k = 0;
        for s in 0..3 {
            for i in 0..arch.depths[s] {
                let p = drop_path_rate(arch, opts.drop_path_rate, k);
                let keep: [Vec<bool>; 2] = [0, 1].map(|br| {
                    if p == 0.0 {
                        vec![true; b]
                    } else {
                        drop_path_mask(b, p, drop_path_seed(opts.seed, k, br))
                    }
                });
                // The GPU scales kept branches by the f32 1/(1 − p).
                let scale = random_scale(p) as f64;
                m = block(arch, params, &m, s, i, &keep, scale);
                k += 1;
            }
            if s < 2 {
                m = merge(params, &m, &format!("{PREFIX}.stages.{s}.downsample"));
            }
        }
        layer_norm(&m.v, m.c, p("norm2.weight"), p("norm2.bias"))
    }

    /// One block; `keep[branch][b]`: whether sample b keeps that residual branch (scaled by
    /// `keep_scale`).
    fn block(
        arch: &Arch,
        params: &HashMap<String, Vec<f64>>,
        x: &Map,
        s: usize,
        i: usize,
        keep: &[Vec<bool>; 2],
        keep_scale: f64,
    ) -> Map {
        let per = x.h * x.w * x.c;
        let branch = |v: Vec<f64>, br: usize| -> Vec<f64> {
            v.into_iter()
                .enumerate()
                .map(|(j, y)| {
                    if keep[br][j / per] {
                        y * keep_scale
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let pre = format!("{PREFIX}.stages.{s}.blocks.{i}");
        let p = |k: &str| get(params, &format!("{pre}.{k}"));
        let (ws, shift, heads, c) = (arch.window, arch.shift(i), arch.heads[s], x.c);
        let hd = c / heads;
        let scale = (hd as f64).powf(-0.5);
        let n = ws * ws;
        let (hp, wp) = (x.h.div_ceil(ws) * ws, x.w.div_ceil(ws) * ws);
        let (nwh, nww) = (hp / ws, wp / ws);
        let normed = Map {
            v: layer_norm(&x.v, c, p("norm1.weight"), p("norm1.bias")),
            ..x.clone()
        };
        let idx = relative_position_index(ws);
        let table = p("attn.w_msa.relative_position_bias_table");
        let mask: Vec<f64> = if shift > 0 {
            region_mask(hp, wp, ws, shift)
                .iter()
                .map(|&v| v as f64)
                .collect()
        } else {
            vec![0.0; nwh * nww * n * n]
        };
        let mut att = vec![0.0; x.v.len()];
        for bi in 0..x.b {
            for wy in 0..nwh {
                for wx in 0..nww {
                    // Token t of the window sits at rolled (wy·ws + ty, wx·ws + tx), i.e. at
                    // (… + shift) mod Hp of the padded map; pad tokens are zero.
                    let pos: Vec<(usize, usize)> = (0..n)
                        .map(|t| {
                            (
                                (wy * ws + t / ws + shift) % hp,
                                (wx * ws + t % ws + shift) % wp,
                            )
                        })
                        .collect();
                    let mut win = vec![0.0; n * c];
                    for (t, &(y, xx)) in pos.iter().enumerate() {
                        if y < x.h && xx < x.w {
                            win[t * c..(t + 1) * c].copy_from_slice(normed.at(bi, y, xx));
                        }
                    }
                    let qkv = linear(
                        &win,
                        c,
                        p("attn.w_msa.qkv.weight"),
                        Some(p("attn.w_msa.qkv.bias")),
                    );
                    let mut out = vec![0.0; n * c];
                    let wi = wy * nww + wx;
                    for hh in 0..heads {
                        for qi in 0..n {
                            let logits: Vec<f64> = (0..n)
                                .map(|kj| {
                                    let dot: f64 = (0..hd)
                                        .map(|d| {
                                            qkv[qi * 3 * c + hh * hd + d]
                                                * qkv[kj * 3 * c + c + hh * hd + d]
                                        })
                                        .sum();
                                    dot * scale
                                        + table[idx[qi * n + kj] * heads + hh]
                                        + mask[(wi * n + qi) * n + kj]
                                })
                                .collect();
                            let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
                            let ex: Vec<f64> = logits.iter().map(|l| (l - mx).exp()).collect();
                            let z: f64 = ex.iter().sum();
                            for d in 0..hd {
                                out[qi * c + hh * hd + d] = (0..n)
                                    .map(|kj| ex[kj] / z * qkv[kj * 3 * c + 2 * c + hh * hd + d])
                                    .sum();
                            }
                        }
                    }
                    for (t, &(y, xx)) in pos.iter().enumerate() {
                        if y < x.h && xx < x.w {
                            let o = ((bi * x.h + y) * x.w + xx) * c;
                            att[o..o + c].copy_from_slice(&out[t * c..(t + 1) * c]);
                        }
                    }
                }
            }
        }
        let proj = branch(
            linear(
                &att,
                c,
                p("attn.w_msa.proj.weight"),
                Some(p("attn.w_msa.proj.bias")),
            ),
            0,
        );
        let x1: Vec<f64> = x.v.iter().zip(&proj).map(|(a, b)| a + b).collect();
        let y = layer_norm(&x1, c, p("norm2.weight"), p("norm2.bias"));
        let y: Vec<f64> = linear(
            &y,
            c,
            p("ffn.layers.0.0.weight"),
            Some(p("ffn.layers.0.0.bias")),
        )
        .into_iter()
        .map(gelu)
        .collect();
        let y = branch(
            linear(
                &y,
                4 * c,
                p("ffn.layers.1.weight"),
                Some(p("ffn.layers.1.bias")),
            ),
            1,
        );
        Map {
            v: x1.iter().zip(&y).map(|(a, b)| a + b).collect(),
            ..x.clone()
        }
    }

    fn merge(params: &HashMap<String, Vec<f64>>, x: &Map, pre: &str) -> Map {
        let p = |k: &str| get(params, k);
        let (h2, w2, c) = (x.h.div_ceil(2), x.w.div_ceil(2), x.c);
        let mut g = vec![0.0; x.b * h2 * w2 * 4 * c];
        for bi in 0..x.b {
            for oy in 0..h2 {
                for ox in 0..w2 {
                    for kh in 0..2 {
                        for kw in 0..2 {
                            let (y, xx) = (2 * oy + kh, 2 * ox + kw);
                            if y < x.h && xx < x.w {
                                for (ci, v) in x.at(bi, y, xx).iter().enumerate() {
                                    g[((bi * h2 + oy) * w2 + ox) * 4 * c + ci * 4 + kh * 2 + kw] =
                                        *v;
                                }
                            }
                        }
                    }
                }
            }
        }
        let g = layer_norm(
            &g,
            4 * c,
            p(&format!("{pre}.norm.weight")),
            p(&format!("{pre}.norm.bias")),
        );
        Map {
            b: x.b,
            h: h2,
            w: w2,
            c: 2 * c,
            v: linear(&g, 4 * c, p(&format!("{pre}.reduction.weight")), None),
        }
    }
}
