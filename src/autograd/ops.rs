//! Differentiable wrappers: each runs one forward op (`crate::ops`) and records one node on the
//! tape whose closure calls the matching backward kernel. A closure keeps only the tensors its
//! backward reads (clones of pooled tensors, so no copy), and computes only the gradients the
//! tape asks for. Where no input needs a gradient the tape drops the closure at once, so the
//! same model code runs forward-only without keeping anything alive.
//!
//! Layout ops that only change the shape ([`reshape`]) run no kernel in either direction: the
//! upstream gradient is handed over as a view, which is safe because the tape gives every
//! upstream gradient to exactly one backward and owns it.

use crate::autograd::{Tape, Var};
use crate::ops::attention::{self as attn, AttnInto, AttnOpts};
use crate::ops::conv::{self, BatchNorm, BatchNormInto, Conv2dOpts, ConvGeometry};
use crate::ops::elementwise::{self as ew, Binary, Unary};
use crate::ops::layout;
use crate::ops::loss;
use crate::ops::matmul::{self, Epilogue};
use crate::ops::norm::{self, LayerNormInto};
use crate::ops::random;
use crate::ops::reduce::{self, Axes, Reduce};
use crate::ops::topk;
use crate::ops::HeadsView;
use crate::{DType, Encoder, Error, Result, Tensor};

/// `y = x·Wᵀ + b` over the last dimension: `x` `[..., K]`, `w` `[N, K]`, `b` `[N]`.
/// Gradients: `dx = dy·W`, `dW = dyᵀ·x` (over all leading rows), `db = Σ_rows dy`.
pub fn linear(
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    w: &Var,
    b: Option<&Var>,
) -> Result<Var> {
    let epi = Epilogue {
        bias: b.map(|b| &b.t),
        ..Default::default()
    };
    let y = matmul::linear(enc, &x.t, &w.t, &epi)?;
    let (xt, wt) = (x.t.clone(), w.t.clone());
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(tape.record(
        "linear",
        &inputs,
        y,
        Box::new(move |enc, dy, need| {
            let dx = need[0]
                .then(|| matmul::linear_backward_input(enc, dy, &wt, None))
                .transpose()?;
            let dw = need[1]
                .then(|| matmul::linear_backward_weight(enc, dy, &xt, None))
                .transpose()?;
            let mut out = vec![dx, dw];
            if need.len() > 2 {
                out.push(
                    need[2]
                        .then(|| matmul::linear_backward_bias(enc, dy, None))
                        .transpose()?,
                );
            }
            Ok(out)
        }),
    ))
}

/// `C = A·B` (or `A·Bᵀ` with `trans_b`), batched as [`matmul::matmul`] does (a 2-D operand is
/// shared by every batch item, and its gradient sums over the batch).
pub fn matmul(tape: &mut Tape, enc: &mut Encoder, a: &Var, b: &Var, trans_b: bool) -> Result<Var> {
    let y = matmul::gemm(
        enc,
        &a.t,
        &b.t,
        &matmul::Gemm {
            trans_a: false,
            trans_b,
            into: None,
        },
        &Epilogue::default(),
    )?;
    let (at, bt) = (a.t.clone(), b.t.clone());
    Ok(tape.record(
        "matmul",
        &[a, b],
        y,
        Box::new(move |enc, dc, need| {
            let da = need[0]
                .then(|| matmul::matmul_backward_a(enc, dc, &at, &bt, trans_b, None))
                .transpose()?;
            let db = need[1]
                .then(|| matmul::matmul_backward_b(enc, dc, &at, &bt, trans_b, None))
                .transpose()?;
            Ok(vec![da, db])
        }),
    ))
}

/// `LN(x)·w + b` over the last dimension (`x` `[..., C]`, `w` and `b` `[C]`).
pub fn layer_norm(
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    w: &Var,
    b: &Var,
    eps: f32,
) -> Result<Var> {
    let y = norm::layer_norm(enc, &x.t, &w.t, &b.t, eps)?;
    let (xt, wt) = (x.t.clone(), w.t.clone());
    Ok(tape.record(
        "layer_norm",
        &[x, w, b],
        y,
        Box::new(move |enc, dy, need| {
            let g = norm::layer_norm_backward(enc, &xt, &wt, dy, eps, &LayerNormInto::default())?;
            Ok(vec![
                need[0].then_some(g.dx),
                need[1].then_some(g.dweight),
                need[2].then_some(g.dbias),
            ])
        }),
    ))
}

/// `LN(x + y)·w + b` (a post-norm residual in one dispatch). `x` and `y` both receive the
/// gradient of the sum.
pub fn add_layer_norm(
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    y: &Var,
    w: &Var,
    b: &Var,
    eps: f32,
) -> Result<Var> {
    let out = norm::add_layer_norm(enc, &x.t, &y.t, &w.t, &b.t, eps)?;
    let (xt, yt, wt) = (x.t.clone(), y.t.clone(), w.t.clone());
    let same = x.id == y.id;
    let inputs: Vec<&Var> = if same {
        vec![x, w, b]
    } else {
        vec![x, y, w, b]
    };
    Ok(tape.record(
        "add_layer_norm",
        &inputs,
        out,
        Box::new(move |enc, dy, need| {
            let g = norm::add_layer_norm_backward(
                enc,
                &xt,
                &yt,
                &wt,
                dy,
                eps,
                &LayerNormInto::default(),
            )?;
            let (dw, db) = (g.dweight, g.dbias);
            if same {
                // LN(x + x): the sum's gradient reaches x twice.
                let dx = need[0]
                    .then(|| {
                        ew::unary(
                            enc,
                            &g.dx,
                            Unary::Affine {
                                alpha: 2.0,
                                beta: 0.0,
                            },
                        )
                    })
                    .transpose()?;
                return Ok(vec![dx, need[1].then_some(dw), need[2].then_some(db)]);
            }
            // Both summands share one gradient; the tape needs distinct tensors.
            let dyy = match (need[0], need[1]) {
                (true, true) => Some(copy(enc, &g.dx)?),
                (false, true) => Some(g.dx.clone()),
                _ => None,
            };
            Ok(vec![
                need[0].then_some(g.dx),
                dyy,
                need[2].then_some(dw),
                need[3].then_some(db),
            ])
        }),
    ))
}

/// A fresh copy of `t` (one buffer copy, no kernel).
fn copy(enc: &mut Encoder, t: &Tensor) -> Result<Tensor> {
    let c = enc.gpu().empty("copy", t.shape(), t.dtype())?;
    enc.copy(t, &c)?;
    Ok(c)
}

/// `a ⊙ b` for `op` (add or mul) with `b` repeated over the leading dimensions of `a` (its shape
/// a suffix of `a`'s). `db` sums over the repeats.
fn binary(tape: &mut Tape, enc: &mut Encoder, a: &Var, b: &Var, op: Binary) -> Result<Var> {
    let y = ew::binary(enc, &a.t, &b.t, op)?;
    let name = match op {
        Binary::Add => "add",
        Binary::Mul => "mul",
    };
    if a.id == b.id {
        // a ⊙ a: one input whose gradient is 2·dy (add) or 2·a·dy (mul).
        let at = a.t.clone();
        return Ok(tape.record(
            name,
            &[a],
            y,
            Box::new(move |enc, dy, _| {
                let two = Unary::Affine {
                    alpha: 2.0,
                    beta: 0.0,
                };
                let g = match op {
                    Binary::Add => ew::unary(enc, dy, two)?,
                    Binary::Mul => {
                        let ady = ew::binary(enc, dy, &at, Binary::Mul)?;
                        ew::unary(enc, &ady, two)?
                    }
                };
                Ok(vec![Some(g)])
            }),
        ));
    }
    let (at, bt) = (a.t.clone(), b.t.clone());
    Ok(tape.record(
        name,
        &[a, b],
        y,
        Box::new(move |enc, dy, need| {
            let da = match (need[0], op) {
                (false, _) => None,
                // The tape owns `dy` and hands it to this node only: a view is enough.
                (true, Binary::Add) => Some(dy.clone()),
                (true, Binary::Mul) => Some(ew::binary(enc, dy, &bt, Binary::Mul)?),
            };
            let db = if need[1] {
                let axes = Axes {
                    outer: at.numel().checked_div(bt.numel()).unwrap_or(0),
                    mid: bt.numel(),
                    inner: 1,
                };
                let r = match op {
                    Binary::Add => reduce::reduce(enc, Reduce::Sum, dy, None, axes, None)?,
                    Binary::Mul => {
                        reduce::reduce(enc, Reduce::SumProduct, dy, Some(&at), axes, None)?
                    }
                };
                Some(r.reshape(bt.shape())?)
            } else {
                None
            };
            Ok(vec![da, db])
        }),
    ))
}

/// `a + b`, `b` broadcast over the leading dimensions of `a` (as [`ew::binary`]).
pub fn add(tape: &mut Tape, enc: &mut Encoder, a: &Var, b: &Var) -> Result<Var> {
    binary(tape, enc, a, b, Binary::Add)
}

/// `a ⊙ b`, `b` broadcast over the leading dimensions of `a`.
pub fn mul(tape: &mut Tape, enc: &mut Encoder, a: &Var, b: &Var) -> Result<Var> {
    binary(tape, enc, a, b, Binary::Mul)
}

/// `y = f(x)` element-wise; the backward reads what [`Unary::saved`] names.
pub fn unary(tape: &mut Tape, enc: &mut Encoder, x: &Var, f: Unary) -> Result<Var> {
    let y = ew::unary(enc, &x.t, f)?;
    let saved = match f.saved() {
        ew::Saved::Input => Some(x.t.clone()),
        ew::Saved::Output => Some(y.clone()),
        ew::Saved::Nothing => None,
    };
    Ok(tape.record(
        "unary",
        &[x],
        y,
        Box::new(move |enc, dy, _| {
            Ok(vec![Some(ew::unary_backward(
                enc,
                f,
                saved.as_ref(),
                dy,
                None,
            )?)])
        }),
    ))
}

/// Exact-erf GELU.
pub fn gelu(tape: &mut Tape, enc: &mut Encoder, x: &Var) -> Result<Var> {
    unary(tape, enc, x, Unary::Gelu)
}

/// `max(x, 0)`.
pub fn relu(tape: &mut Tape, enc: &mut Encoder, x: &Var) -> Result<Var> {
    unary(tape, enc, x, Unary::Relu)
}

/// `1 / (1 + e^−x)`.
pub fn sigmoid(tape: &mut Tape, enc: &mut Encoder, x: &Var) -> Result<Var> {
    unary(tape, enc, x, Unary::Sigmoid)
}

/// `e^x`.
pub fn exp(tape: &mut Tape, enc: &mut Encoder, x: &Var) -> Result<Var> {
    unary(tape, enc, x, Unary::Exp)
}

/// `alpha·x + beta`.
pub fn scale(tape: &mut Tape, enc: &mut Encoder, x: &Var, alpha: f32, beta: f32) -> Result<Var> {
    unary(tape, enc, x, Unary::Affine { alpha, beta })
}

/// 2-D convolution (`x` `[N, Ci, H, W]`, `w` `[Co, Ci, kh, kw]`, `b` `[Co]`) with `stride` and
/// zero padding `pad` = [top, left, bottom, right]. Gradients: the transposed convolution for
/// `x`, the correlation of `dy` with `x` for `w`, per-channel sums of `dy` for `b`.
pub fn conv2d(
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    w: &Var,
    b: Option<&Var>,
    stride: (usize, usize),
    pad: [usize; 4],
) -> Result<Var> {
    let opts = Conv2dOpts {
        stride,
        pad,
        bias: b.map(|b| &b.t),
        ..Default::default()
    };
    let y = conv::conv2d(enc, &x.t, &w.t, &opts)?;
    let geom = ConvGeometry { stride, pad };
    let (xt, wt) = (x.t.clone(), w.t.clone());
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(tape.record(
        "conv2d",
        &inputs,
        y,
        Box::new(move |enc, dy, need| {
            let dx = need[0]
                .then(|| conv::conv2d_backward_input(enc, dy, &wt, xt.shape(), &geom, None))
                .transpose()?;
            let dw = need[1]
                .then(|| conv::conv2d_backward_weight(enc, dy, &xt, wt.shape(), &geom, None))
                .transpose()?;
            let mut out = vec![dx, dw];
            if need.len() > 2 {
                out.push(
                    need[2]
                        .then(|| conv::conv2d_backward_bias(enc, dy, None))
                        .transpose()?,
                );
            }
            Ok(out)
        }),
    ))
}

/// Batch norm with frozen statistics over dimension 1 of `x` (`[N, C, ...]`):
/// `y = (x − mean)/sqrt(var + eps)·weight + bias`. The running statistics are constants; `x`,
/// `weight` and `bias` get gradients.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_frozen(
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    weight: &Var,
    bias: &Var,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<Var> {
    let y = conv::batch_norm(
        enc,
        &x.t,
        &BatchNorm {
            weight: &weight.t,
            bias: &bias.t,
            mean: running_mean,
            var: running_var,
            eps,
        },
    )?;
    let (xt, wt, bt) = (x.t.clone(), weight.t.clone(), bias.t.clone());
    let (mt, vt) = (running_mean.clone(), running_var.clone());
    Ok(tape.record(
        "batch_norm_frozen",
        &[x, weight, bias],
        y,
        Box::new(move |enc, dy, need| {
            let bn = BatchNorm {
                weight: &wt,
                bias: &bt,
                mean: &mt,
                var: &vt,
                eps,
            };
            let g = conv::batch_norm_frozen_backward(enc, &xt, &bn, dy, &BatchNormInto::default())?;
            Ok(vec![
                need[0].then_some(g.dx),
                need[1].then_some(g.dweight),
                need[2].then_some(g.dbias),
            ])
        }),
    ))
}

/// Where q, k and v sit in the tensors given to [`attention`]: each is column block `index` of
/// `parts` equal blocks of its `[B, L, parts·C]` tensor (see [`HeadsView::packed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packing {
    /// (parts, index) of q, k and v.
    pub q: (usize, usize),
    pub k: (usize, usize),
    pub v: (usize, usize),
}

impl Packing {
    /// Three dense `[B, L, C]` tensors.
    pub const DENSE: Packing = Packing {
        q: (1, 0),
        k: (1, 0),
        v: (1, 0),
    };
    /// One packed qkv projection `[B, L, 3C]` given as q, k and v alike (Swin, self-attention
    /// with PyTorch's `in_proj_weight`).
    pub const QKV: Packing = Packing {
        q: (3, 0),
        k: (3, 1),
        v: (3, 2),
    };
    /// Dense q `[B, Lq, C]`; k and v one packed `[B, Lk, 2C]` tensor given twice.
    pub const KV: Packing = Packing {
        q: (1, 0),
        k: (2, 0),
        v: (2, 1),
    };
}

/// Multi-head attention `softmax(scale·q·kᵀ + bias + mask)·v` per batch item and head (see
/// [`attn::attention`]); q, k, v are views given by `packed` and may be the same variable. The
/// mask is a constant; `bias` (`[heads, Lq, Lk]`) gets `Σ_batch dS`. The gradient of a packed
/// tensor gathers the gradients of its blocks (zeros for blocks no view reads). `drop` with
/// `p ≠ 0` drops attention weights (training; [`attn::attention_dropout`], whose backward
/// applies the same mask).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    tape: &mut Tape,
    enc: &mut Encoder,
    q: &Var,
    k: &Var,
    v: &Var,
    packed: Packing,
    heads: usize,
    scale: f32,
    bias: Option<&Var>,
    mask: Option<&Tensor>,
    drop: Option<attn::Dropout>,
) -> Result<Var> {
    let drop = drop.filter(|d| d.p != 0.0);
    let views = [(q, packed.q), (k, packed.k), (v, packed.v)];
    for (x, (parts, index)) in views {
        let width = x.shape().last().copied().unwrap_or(0);
        if parts == 0 || index >= parts || !width.is_multiple_of(parts) {
            return Err(Error::shape(
                "attention",
                format!("cannot take block {index} of {parts} from {:?}", x.shape()),
            ));
        }
    }
    // Distinct tensors among q, k, v (same variable ⇒ one input whose gradient is gathered).
    let mut distinct: Vec<&Var> = Vec::new();
    let mut slot = [0usize; 3];
    for (i, (x, _)) in views.iter().enumerate() {
        slot[i] = match distinct.iter().position(|d| d.id == x.id) {
            Some(p) => p,
            None => {
                distinct.push(x);
                distinct.len() - 1
            }
        };
        let first = (0..=i).find(|&j| views[j].0.id == x.id).unwrap_or(i);
        if views[i].1 .0 != views[first].1 .0 {
            return Err(Error::shape(
                "attention",
                "views of one tensor must cut it into the same number of blocks",
            ));
        }
    }
    fn hv(x: &Var, (parts, index): (usize, usize)) -> Result<HeadsView<'_>> {
        HeadsView::packed(&x.t, parts, index)
    }
    let opts = AttnOpts {
        heads,
        scale,
        bias: bias.map(|b| &b.t),
        mask,
        scatter: None,
    };
    let (qv, kv, vv) = (hv(q, packed.q)?, hv(k, packed.k)?, hv(v, packed.v)?);
    let y = match drop {
        Some(d) => attn::attention_dropout(enc, qv, kv, vv, &opts, d)?,
        None => attn::attention(enc, qv, kv, vv, &opts)?,
    };
    let tensors: Vec<Tensor> = distinct.iter().map(|d| d.t.clone()).collect();
    let (bt, mt) = (bias.map(|b| b.t.clone()), mask.cloned());
    let mut inputs = distinct.clone();
    inputs.extend(bias);
    let n_distinct = distinct.len();
    let blocks = [packed.q, packed.k, packed.v];
    Ok(tape.record(
        "attention",
        &inputs,
        y,
        Box::new(move |enc, dout, need| {
            let view = |i: usize| HeadsView::packed(&tensors[slot[i]], blocks[i].0, blocks[i].1);
            let opts = AttnOpts {
                heads,
                scale,
                bias: bt.as_ref(),
                mask: mt.as_ref(),
                scatter: None,
            };
            let (qv, kv, vv) = (view(0)?, view(1)?, view(2)?);
            let none = AttnInto::default();
            let g = match drop {
                Some(d) => {
                    attn::attention_dropout_backward(enc, qv, kv, vv, &opts, d, dout, &none)?
                }
                None => attn::attention_backward(enc, qv, kv, vv, &opts, dout, &none)?,
            };
            let mut per_view = [Some(g.dq), Some(g.dk), Some(g.dv)];
            let mut out = Vec::with_capacity(need.len());
            for (s, t) in tensors.iter().enumerate() {
                if !need[s] {
                    out.push(None);
                    continue;
                }
                let parts = blocks[(0..3).find(|&i| slot[i] == s).expect("a view")].0;
                // Block b of this tensor's gradient: the sum of the views reading block b.
                let mut by_block: Vec<Option<Tensor>> = vec![None; parts];
                for i in (0..3).filter(|&i| slot[i] == s) {
                    let g = per_view[i].take().expect("each view once");
                    match &by_block[blocks[i].1] {
                        Some(acc) => ew::accumulate(enc, acc, &g)?,
                        None => by_block[blocks[i].1] = Some(g),
                    }
                }
                if parts == 1 {
                    out.push(by_block.pop().flatten());
                    continue;
                }
                let s3 = t.shape();
                let block_shape = [s3[0], s3[1], s3[2] / parts];
                let mut filled = Vec::with_capacity(parts);
                for b in by_block {
                    filled.push(match b {
                        Some(b) => b,
                        None => {
                            let z = enc.gpu().empty("attention", &block_shape, DType::F32)?;
                            enc.clear(&z);
                            z
                        }
                    });
                }
                let refs: Vec<&Tensor> = filled.iter().collect();
                out.push(Some(layout::concat(enc, &refs, 2)?));
            }
            if out.len() < need.len() {
                out.push(if need[n_distinct] { g.dbias } else { None });
            }
            Ok(out)
        }),
    ))
}

/// Joins variables along `axis`; each gets its slice of the gradient back.
pub fn concat(tape: &mut Tape, enc: &mut Encoder, xs: &[&Var], axis: usize) -> Result<Var> {
    let ts: Vec<&Tensor> = xs.iter().map(|x| &x.t).collect();
    let y = layout::concat(enc, &ts, axis)?;
    let sizes: Vec<usize> = xs.iter().map(|x| x.shape()[axis]).collect();
    Ok(tape.record(
        "concat",
        xs,
        y,
        Box::new(move |enc, dy, need| {
            let mut start = 0;
            let mut out = Vec::with_capacity(sizes.len());
            for (&len, &n) in sizes.iter().zip(need) {
                out.push(
                    n.then(|| layout::slice(enc, dy, axis, start, len))
                        .transpose()?,
                );
                start += len;
            }
            Ok(out)
        }),
    ))
}

/// `len` entries of dimension `axis` from `start`; the gradient is zero-padded back.
pub fn slice(
    tape: &mut Tape,
    enc: &mut Encoder,
    x: &Var,
    axis: usize,
    start: usize,
    len: usize,
) -> Result<Var> {
    let y = layout::slice(enc, &x.t, axis, start, len)?;
    let shape = x.shape().to_vec();
    Ok(tape.record(
        "slice",
        &[x],
        y,
        Box::new(move |enc, dy, _| {
            let mut pads = vec![(0, 0); shape.len()];
            pads[axis] = (start, shape[axis] - start - len);
            Ok(vec![Some(layout::pad(enc, dy, &pads, 0.0)?)])
        }),
    ))
}

/// Zero padding with `pads[d] = (before, after)` per dimension (up to 4-D); the gradient is the
/// inside part of `dy`.
pub fn pad(tape: &mut Tape, enc: &mut Encoder, x: &Var, pads: &[(usize, usize)]) -> Result<Var> {
    let y = layout::pad(enc, &x.t, pads, 0.0)?;
    let (pads, shape) = (pads.to_vec(), x.shape().to_vec());
    Ok(tape.record(
        "pad",
        &[x],
        y,
        Box::new(move |enc, dy, _| {
            let mut g = dy.clone();
            for (d, &(before, _)) in pads.iter().enumerate() {
                if g.shape()[d] != shape[d] {
                    g = layout::slice(enc, &g, d, before, shape[d])?;
                }
            }
            // Where nothing was padded `g` is a view of `dy`, ours to hand on (module doc).
            Ok(vec![Some(g)])
        }),
    ))
}

/// Reorders dimensions (up to 4-D) as `torch.permute`; the gradient is permuted back.
pub fn permute(tape: &mut Tape, enc: &mut Encoder, x: &Var, perm: &[usize]) -> Result<Var> {
    let y = layout::permute(enc, &x.t, perm)?;
    let mut inverse = vec![0; perm.len()];
    for (k, &p) in perm.iter().enumerate() {
        inverse[p] = k;
    }
    Ok(tape.record(
        "permute",
        &[x],
        y,
        Box::new(move |enc, dy, _| Ok(vec![Some(layout::permute(enc, dy, &inverse)?)])),
    ))
}

/// The same values with another shape (no kernel either way).
pub fn reshape(tape: &mut Tape, x: &Var, shape: &[usize]) -> Result<Var> {
    let y = x.t.reshape(shape)?;
    let from = x.shape().to_vec();
    Ok(tape.record(
        "reshape",
        &[x],
        y,
        Box::new(move |_, dy, _| Ok(vec![Some(dy.reshape(&from)?)])),
    ))
}

/// SparseTT's learned positional encoding of an `h × w` map ([`layout::embed_2d`]):
/// `y[i·w + j, c] = col[j, c]` for `c < C/2`, `row[i, c − C/2]` otherwise. Gradients:
/// `dcol[j, c] = Σ_i dy[i·w + j, c]`, `drow[i, c] = Σ_j dy[i·w + j, C/2 + c]` (rows of the
/// tables past `w` / `h` get zero).
pub fn embed_2d(
    tape: &mut Tape,
    enc: &mut Encoder,
    row: &Var,
    col: &Var,
    h: usize,
    w: usize,
) -> Result<Var> {
    let y = layout::embed_2d(enc, &row.t, &col.t, h, w)?;
    let (rs, cs) = (row.shape().to_vec(), col.shape().to_vec());
    let half = cs[1];
    Ok(tape.record(
        "embed_2d",
        &[row, col],
        y,
        Box::new(move |enc, dy, need| {
            // dy [h, w, 2·half]: split the halves, then sum over the other map axis.
            let dy3 = dy.reshape(&[h, w, 2 * half])?;
            let mut out = vec![None, None];
            if need[0] {
                let right = layout::slice(enc, &dy3, 2, half, half)?;
                // Σ_j over [h, w, half] keeping (i, c): permute to [h, half, w] and sum rows.
                let p = layout::permute(enc, &right, &[0, 2, 1])?;
                let s = reduce::reduce(enc, Reduce::Sum, &p, None, Axes::rows(p.shape()), None)?
                    .reshape(&[h, half])?;
                out[0] = Some(pad_rows(enc, s, rs[0])?);
            }
            if need[1] {
                let left = layout::slice(enc, &dy3, 2, 0, half)?;
                let s = reduce::reduce(
                    enc,
                    Reduce::Sum,
                    &left,
                    None,
                    Axes {
                        outer: h,
                        mid: w * half,
                        inner: 1,
                    },
                    None,
                )?
                .reshape(&[w, half])?;
                out[1] = Some(pad_rows(enc, s, cs[0])?);
            }
            Ok(out)
        }),
    ))
}

/// `t` `[r, c]` zero-padded at the bottom to `rows` rows.
fn pad_rows(enc: &mut Encoder, t: Tensor, rows: usize) -> Result<Tensor> {
    let r = t.shape()[0];
    if r == rows {
        return Ok(t);
    }
    layout::pad(enc, &t, &[(0, rows - r), (0, 0)], 0.0)
}

/// The sum of all elements, shape `[1]`.
pub fn sum(tape: &mut Tape, enc: &mut Encoder, x: &Var) -> Result<Var> {
    let y = reduce::reduce(enc, Reduce::Sum, &x.t, None, Axes::all(x.t.numel()), None)?;
    let shape = x.shape().to_vec();
    Ok(tape.record(
        "sum",
        &[x],
        y,
        Box::new(move |enc, dy, _| {
            // Broadcast the scalar: dy added onto a cleared [numel, 1] tensor (the add repeats
            // its second operand over the leading dimension).
            let n: usize = shape.iter().product();
            let z = enc.gpu().empty("sum", &[n, 1], DType::F32)?;
            enc.clear(&z);
            let g = ew::binary(enc, &z, &dy.reshape(&[1])?, Binary::Add)?;
            Ok(vec![Some(g.reshape(&shape)?)])
        }),
    ))
}

/// Top-K sparse self-attention on one packed qkv projection `[B, L, 3C]` (q, k, v its column
/// blocks): per head, logits `scale·q·kᵀ`, the `keep` largest of each row softmaxed, all others
/// 0 ([`topk::topk_attention`]). The kept indices and weights are saved, so the backward sends
/// gradient through exactly the forward's kept set. `drop` with `p ≠ 0` drops kept weights
/// (training): the dense path of [`topk::topk_attention_dropout`], which saves the weights as a
/// dense `[B·heads, Lq, Lk]` matrix instead.
pub fn topk_attention(
    tape: &mut Tape,
    enc: &mut Encoder,
    qkv: &Var,
    heads: usize,
    keep: usize,
    scale: f32,
    drop: Option<attn::Dropout>,
) -> Result<Var> {
    /// What the backward reads.
    enum Saved {
        Kept { indices: Tensor, weights: Tensor },
        Dense { probs: Tensor, drop: attn::Dropout },
    }
    fn views(t: &Tensor) -> Result<[HeadsView<'_>; 3]> {
        Ok([
            HeadsView::packed(t, 3, 0)?,
            HeadsView::packed(t, 3, 1)?,
            HeadsView::packed(t, 3, 2)?,
        ])
    }
    let t = qkv.t.clone();
    let [q, k, v] = views(&t)?;
    let (out, saved) = match drop.filter(|d| d.p != 0.0) {
        None => {
            let r = topk::topk_attention(enc, q, k, v, heads, keep, scale)?;
            let saved = Saved::Kept {
                indices: r.indices,
                weights: r.weights,
            };
            (r.out, saved)
        }
        Some(d) => {
            let (out, probs) = topk::topk_attention_dropout(enc, q, k, v, heads, keep, scale, d)?;
            (out, Saved::Dense { probs, drop: d })
        }
    };
    Ok(tape.record(
        "topk_attention",
        &[qkv],
        out,
        Box::new(move |enc, dout, _| {
            let [q, k, v] = views(&t)?;
            let g = match &saved {
                Saved::Kept { indices, weights } => topk::topk_attention_backward(
                    enc,
                    q,
                    k,
                    v,
                    heads,
                    scale,
                    indices,
                    weights,
                    dout,
                    &topk::TopKInto::default(),
                )?,
                Saved::Dense { probs, drop } => topk::topk_attention_dropout_backward(
                    enc, q, k, v, heads, scale, probs, *drop, dout,
                )?,
            };
            Ok(vec![Some(layout::concat(enc, &[&g.dq, &g.dk, &g.dv], 2)?)])
        }),
    ))
}

/// Dropout `y = x·m/(1 − p)` with the mask drawn from `seed` (see
/// [`crate::ops::random::dropout`]); its backward applies the same mask. `p = 0` is `x` itself.
pub fn dropout(tape: &mut Tape, enc: &mut Encoder, x: &Var, p: f32, seed: u64) -> Result<Var> {
    if p == 0.0 {
        return Ok(x.clone());
    }
    let y = random::dropout(enc, &x.t, p, seed)?;
    Ok(tape.record(
        "dropout",
        &[x],
        y,
        Box::new(move |enc, dy, _| {
            Ok(vec![Some(random::dropout_backward(
                enc, dy, p, seed, None,
            )?)])
        }),
    ))
}

/// SparseTT's sigmoid focal loss (see [`loss`]) of `logits` (one per cell, `batch` pairs)
/// against constant `labels`, as a `[1]` variable.
pub fn focal_loss(
    tape: &mut Tape,
    enc: &mut Encoder,
    logits: &Var,
    labels: &Tensor,
    f: &loss::Focal,
    batch: usize,
) -> Result<Var> {
    let y = loss::focal_loss(enc, &logits.t, labels, f)?;
    let (lt, lab, f) = (logits.t.clone(), labels.clone(), *f);
    Ok(tape.record(
        "focal_loss",
        &[logits],
        y,
        Box::new(move |enc, dy, _| {
            Ok(vec![Some(loss::focal_loss_backward(
                enc, &lt, &lab, &f, batch, dy, None,
            )?)])
        }),
    ))
}

/// SparseTT's IoU loss of the xyxy boxes `pred` against constant `gt` at the positive cells of
/// `labels`: a `[2]` variable (weighted loss, mean IoU); only the loss carries a gradient.
pub fn iou_loss(
    tape: &mut Tape,
    enc: &mut Encoder,
    pred: &Var,
    gt: &Tensor,
    labels: &Tensor,
    weight: f32,
) -> Result<Var> {
    let y = loss::iou_loss(enc, &pred.t, gt, labels, weight)?;
    let (pt, gt, lab) = (pred.t.clone(), gt.clone(), labels.clone());
    Ok(tape.record(
        "iou_loss",
        &[pred],
        y,
        Box::new(move |enc, dy, _| {
            let dloss = layout::slice(enc, dy, 0, 0, 1)?;
            Ok(vec![Some(loss::iou_loss_backward(
                enc, &pt, &gt, &lab, weight, &dloss, None,
            )?)])
        }),
    ))
}
