//! SparseTT's box decoding and score fusion (shader: `shaders/decode.wgsl`).
//!
//! For each cell (i, j) with centre (stride·j + offset, stride·i + offset):
//! `p = σ(cls_fc) + σ(cls_conv)·(1 − σ(cls_fc))`, and per branch
//! `ltrb = exp(s·reg + b)·stride`, box = (cx − l, cy − t, cx + r, cy + b).

use crate::gpu::{DType, Encoder, Tensor};
use crate::{shader, Error, Result};

shader!(DECODE, "decode.wgsl");

/// The learned scalars of the two branches and the score-map geometry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeParams {
    pub si_fc: f32,
    pub bi_fc: f32,
    pub si_conv: f32,
    pub bi_conv: f32,
    pub stride: f32,
    pub offset: f32,
}

/// Decoded outputs: fused score `[B, cells]`, boxes `[B, cells, 4]` (x1, y1, x2, y2) of both branches.
pub struct Decoded {
    pub score: Tensor,
    pub bbox_conv: Tensor,
    pub bbox_fc: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    side: u32,
    stride: f32,
    offset: f32,
    si_fc: f32,
    bi_fc: f32,
    si_conv: f32,
    bi_conv: f32,
}

/// Checks the two head outputs (equal f32 `[B, 5, side, side]` or `[B, 5, side·side]`) and
/// returns `(B, cells, side)`.
fn head_geometry(op: &'static str, fc: &Tensor, conv: &Tensor) -> Result<(usize, usize, usize)> {
    let s = fc.shape();
    let ok = |t: &Tensor| t.dtype() == DType::F32 && t.shape() == s && s.len() >= 3 && s[1] == 5;
    if !ok(fc) || !ok(conv) {
        return Err(Error::shape(
            op,
            format!(
                "expects two equal [B, 5, side, side] f32 tensors, got {:?} and {:?}",
                fc.shape(),
                conv.shape()
            ),
        ));
    }
    let (b, cells) = (s[0], s[2..].iter().product::<usize>());
    let side = (cells as f64).sqrt().round() as usize;
    if side * side != cells {
        return Err(Error::shape(
            op,
            format!("{cells} cells is not a square map"),
        ));
    }
    Ok((b, cells, side))
}

/// `fc`, `conv`: `[B, 5, side, side]` or `[B, 5, side·side]` — channel 0 the cls logit, 1..4 raw l, t, r, b.
pub fn decode(enc: &mut Encoder, fc: &Tensor, conv: &Tensor, p: &DecodeParams) -> Result<Decoded> {
    let (b, cells, side) = head_geometry("decode", fc, conv)?;
    let gpu = enc.gpu();
    let score = gpu.empty("decode", &[b, cells], DType::F32)?;
    let bbox_conv = gpu.empty("decode", &[b, cells, 4], DType::F32)?;
    let bbox_fc = gpu.empty("decode", &[b, cells, 4], DType::F32)?;
    let params = Params {
        batch: b as u32,
        side: side as u32,
        stride: p.stride,
        offset: p.offset,
        si_fc: p.si_fc,
        bi_fc: p.bi_fc,
        si_conv: p.si_conv,
        bi_conv: p.bi_conv,
    };
    enc.dispatch(
        &DECODE,
        "decode",
        &[],
        bytemuck::bytes_of(&params),
        &[fc, conv, &score, &bbox_conv, &bbox_fc],
        [((b * cells) as u32).div_ceil(64), 1, 1],
    )?;
    Ok(Decoded {
        score,
        bbox_conv,
        bbox_fc,
    })
}

/// Where [`decode_backward`] adds its gradients (`None`: fresh zero tensors).
#[derive(Default)]
pub struct DecodeInto<'a> {
    /// `[B, 5, …]` like `fc`; only channels 1..4 (reg) are touched.
    pub dfc: Option<&'a Tensor>,
    pub dconv: Option<&'a Tensor>,
    /// `[4]`: (si_fc, bi_fc, si_conv, bi_conv).
    pub dscalars: Option<&'a Tensor>,
}

/// Gradients of [`decode`]'s boxes: `(dfc, dconv, dscalars)`.
pub struct DecodeGrads {
    pub dfc: Tensor,
    pub dconv: Tensor,
    pub dscalars: Tensor,
}

/// Backward of the box decoding. With `e_k = exp(s·reg_k + b)·stride` and upstream gradients
/// `dbox = (dx1, dy1, dx2, dy2)`, so that `de = (−dx1, −dy1, dx2, dy2)`:
/// `∂reg_k = de_k·e_k·s`, `∂s = Σ de_k·e_k·reg_k`, `∂b = Σ de_k·e_k` (sums over batch, cells
/// and sides in a fixed order). The score fusion is not differentiated (training uses the logits
/// directly), so channel 0 of `dfc`/`dconv` receives nothing. Gradients are added into `into`.
pub fn decode_backward(
    enc: &mut Encoder,
    fc: &Tensor,
    conv: &Tensor,
    dbox_fc: &Tensor,
    dbox_conv: &Tensor,
    p: &DecodeParams,
    into: &DecodeInto,
) -> Result<DecodeGrads> {
    const OP: &str = "decode_backward";
    let (b, cells, side) = head_geometry(OP, fc, conv)?;
    let s = fc.shape();
    for (what, t) in [("dbox_fc", dbox_fc), ("dbox_conv", dbox_conv)] {
        if t.dtype() != DType::F32 || t.numel() != b * cells * 4 {
            return Err(Error::shape(
                OP,
                format!("{what} {:?} must be f32 [{b}, {cells}, 4]", t.shape()),
            ));
        }
    }
    let inputs = [fc, conv, dbox_fc, dbox_conv];
    let gpu = enc.gpu();
    let fresh = |what: &str, t: Option<&Tensor>, shape: &[usize]| -> Result<Tensor> {
        match t {
            Some(t) => {
                let shares = inputs
                    .iter()
                    .any(|x| std::sync::Arc::ptr_eq(x.pooled(), t.pooled()));
                if t.dtype() != DType::F32 || t.shape() != shape || shares {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "into.{what} {t:?} must be a separate f32 tensor of shape {shape:?}"
                        ),
                    ));
                }
                Ok(t.clone())
            }
            None => gpu.zeros(shape),
        }
    };
    let dfc = fresh("dfc", into.dfc, s)?;
    let dconv = fresh("dconv", into.dconv, s)?;
    let dscalars = fresh("dscalars", into.dscalars, &[4])?;
    if std::sync::Arc::ptr_eq(dfc.pooled(), dconv.pooled()) {
        return Err(Error::shape(OP, "into.dfc and into.dconv share a buffer"));
    }
    let params = Params {
        batch: b as u32,
        side: side as u32,
        stride: p.stride,
        offset: p.offset,
        si_fc: p.si_fc,
        bi_fc: p.bi_fc,
        si_conv: p.si_conv,
        bi_conv: p.bi_conv,
    };
    let grid = gpu.grid(((b * cells) as u64).div_ceil(64));
    enc.dispatch(
        &DECODE,
        "decode_bwd",
        &[],
        bytemuck::bytes_of(&params),
        &[fc, conv, dbox_conv, dbox_fc, &dfc, &dconv],
        grid,
    )?;
    enc.dispatch(
        &DECODE,
        "decode_bwd_scalars",
        &[],
        bytemuck::bytes_of(&params),
        &[fc, conv, dbox_conv, dbox_fc, &dscalars],
        [4, 1, 1],
    )?;
    Ok(DecodeGrads {
        dfc,
        dconv,
        dscalars,
    })
}

/// Plain-loop reference.
pub mod cpu {
    use super::DecodeParams;

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Returns (score `[B·cells]`, bbox_conv `[B·cells·4]`, bbox_fc `[B·cells·4]`).
    pub fn decode(
        fc: &[f32],
        conv: &[f32],
        batch: usize,
        side: usize,
        p: &DecodeParams,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let cells = side * side;
        let mut score = Vec::with_capacity(batch * cells);
        let mut bc = Vec::with_capacity(batch * cells * 4);
        let mut bf = Vec::with_capacity(batch * cells * 4);
        for b in 0..batch {
            for c in 0..cells {
                let at = |t: &[f32], ch: usize| t[(b * 5 + ch) * cells + c] as f64;
                let (pf, pc) = (sigmoid(at(fc, 0)), sigmoid(at(conv, 0)));
                score.push((pf + pc * (1.0 - pf)) as f32);
                let cx = p.stride as f64 * (c % side) as f64 + p.offset as f64;
                let cy = p.stride as f64 * (c / side) as f64 + p.offset as f64;
                for (t, si, bi, out) in [
                    (conv, p.si_conv, p.bi_conv, &mut bc),
                    (fc, p.si_fc, p.bi_fc, &mut bf),
                ] {
                    let d = |ch| (si as f64 * at(t, ch) + bi as f64).exp() * p.stride as f64;
                    out.extend([cx - d(1), cy - d(2), cx + d(3), cy + d(4)].map(|v| v as f32));
                }
            }
        }
        (score, bc, bf)
    }

    /// Boxes of one branch in f64 (for finite differences): `x` is `[B, 5, cells]`.
    pub fn boxes(
        x: &[f64],
        batch: usize,
        side: usize,
        s: f64,
        b: f64,
        stride: f64,
        offset: f64,
    ) -> Vec<f64> {
        let cells = side * side;
        let mut out = Vec::with_capacity(batch * cells * 4);
        for bi in 0..batch {
            for c in 0..cells {
                let cx = stride * (c % side) as f64 + offset;
                let cy = stride * (c / side) as f64 + offset;
                let d = |ch: usize| (s * x[(bi * 5 + ch) * cells + c] + b).exp() * stride;
                out.extend([cx - d(1), cy - d(2), cx + d(3), cy + d(4)]);
            }
        }
        out
    }

    /// Backward of one branch: (∂x `[B, 5, cells]` with channel 0 zero, ∂s, ∂b) for upstream `dbox`.
    pub fn boxes_backward(
        x: &[f64],
        dbox: &[f64],
        batch: usize,
        side: usize,
        s: f64,
        b: f64,
        stride: f64,
    ) -> (Vec<f64>, f64, f64) {
        let cells = side * side;
        let mut dx = vec![0.0; x.len()];
        let (mut ds, mut db) = (0.0, 0.0);
        for bi in 0..batch {
            for c in 0..cells {
                for k in 0..4 {
                    let o = (bi * 5 + 1 + k) * cells + c;
                    let e = (s * x[o] + b).exp() * stride;
                    let d = dbox[(bi * cells + c) * 4 + k];
                    let g = if k < 2 { -d } else { d } * e;
                    dx[o] = g * s;
                    ds += g * x[o];
                    db += g;
                }
            }
        }
        (dx, ds, db)
    }
}
