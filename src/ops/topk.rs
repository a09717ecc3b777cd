//! Top-K sparse attention (SparseTT's decoder self-attention) and the row-wise top-K selection it
//! is built on. Per batch item b, head h and query row i:
//! `logits = (scale·q)·kᵀ`; keep the K largest logits of the row; `w = softmax` over those K (max
//! subtracted), every other weight exactly 0; `out = w·v`.
//!
//! Selection order everywhere: larger value first, equal values → smaller index first. On
//! NaN-free input that is a strict total order, so the selection is unique and the GPU must equal
//! the CPU reference exactly.
//!
//! Kernels (`shaders/topk.wgsl`):
//! - `Variant::Tiled` (GPUs): logits, then a bitonic sort of each row in workgroup memory fused
//!   with softmax and `w·v` — two dispatches.
//! - `Variant::Register` (CPU adapters such as lavapipe): with subgroups of 8, head width 32,
//!   K ≤ 32 and 16-byte aligned views, one fused dispatch (logits, a sorted top-32 kept in
//!   registers, softmax, `w·v`); otherwise logits, then one barrier-free invocation per row.
//!
//! Backward ([`topk_attention_backward`], one barrier-free kernel set for both variants): from
//! the forward's saved indices and weights, three dispatches (dS per row plus a slot map, dq per
//! element, dk and dv gathered per key through the slot map).

use crate::gpu::{DType, Encoder, Gpu, Shader, ShaderNeeds, Tensor, Variant};
use crate::ops::{attention, HeadsView};
use crate::{Error, Result};

const SOURCE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/topk.wgsl"));

/// Byte offset of the subgroup kernels in the shader file: devices without subgroups compile
/// only what comes before.
const SUBGROUP_PART: usize = find(SOURCE.as_bytes(), b"// ==== SUBGROUP KERNELS ====");

const fn find(hay: &[u8], needle: &[u8]) -> usize {
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let mut k = 0;
        while k < needle.len() && hay[i + k] == needle[k] {
            k += 1;
        }
        if k == needle.len() {
            return i;
        }
        i += 1;
    }
    panic!("topk.wgsl lacks its ==== SUBGROUP KERNELS ==== marker")
}

const PLAIN_SOURCE: &str = match std::str::from_utf8(SOURCE.as_bytes().split_at(SUBGROUP_PART).0) {
    Ok(s) => s,
    Err(_) => panic!("the SUBGROUP KERNELS marker splits a character"),
};

/// Everything but the subgroup kernels.
pub static TOPK: Shader = Shader {
    name: "topk.wgsl",
    source: PLAIN_SOURCE,
    needs: ShaderNeeds {
        f16: false,
        subgroups: false,
    },
};

/// The whole file, subgroup kernels included.
pub static TOPK_SUBGROUP: Shader = Shader {
    name: "topk.wgsl (subgroups)",
    source: SOURCE,
    needs: ShaderNeeds {
        f16: false,
        subgroups: true,
    },
};

/// Largest K the kernels keep (the register variant holds 64 slots in registers).
pub const MAX_K: usize = 64;
/// Longest row the kernels select from (the tiled variant sorts a row in workgroup memory).
pub const MAX_N: usize = 1024;

/// Invocations per workgroup of the per-row register kernels.
const REG_WG: u64 = 64;
/// Entries the tiled selection sorts per workgroup (`SORT_N`).
const SORT_N: usize = 1024;
/// Slots of one register network; K above this takes a second one (`WIDE`).
const NET_SLOTS: usize = 32;
/// Query rows per workgroup of the subgroup kernels (8 lanes × 8 rows).
const SG_ROWS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    keep: u32,
    p2: u32,
    heads: u32,
    lq: u32,
    hd: u32,
    group_rows: u32,
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    scale: f32,
    tiles_j: u32,
}

/// Result of [`topk_attention`].
#[derive(Clone, Debug)]
pub struct TopK {
    /// `[B, Lq, heads·D]`.
    pub out: Tensor,
    /// `[B, heads, Lq, keep]` u32: the kept key indices, in selection order (descending logit).
    pub indices: Tensor,
    /// `[B, heads, Lq, keep]` f32: the softmax weights, aligned with `indices`.
    pub weights: Tensor,
}

fn u32_of(op: &'static str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::shape(op, format!("{what} {n} exceeds u32 indexing")))
}

fn check_keep(op: &'static str, n: usize, k: usize) -> Result<()> {
    if n == 0 || n > MAX_N {
        return Err(Error::shape(
            op,
            format!("row length n = {n} is outside the supported 1..={MAX_N}"),
        ));
    }
    if k == 0 || k > MAX_K {
        return Err(Error::shape(
            op,
            format!("K = {k} is outside the supported 1..={MAX_K}"),
        ));
    }
    if k > n {
        return Err(Error::shape(
            op,
            format!("K = {k} exceeds the row length n = {n}"),
        ));
    }
    Ok(())
}

/// Rows the tiled selection sorts together: as many padded rows as fill `SORT_N` entries.
fn group_rows(rows: usize, p2: usize) -> usize {
    (SORT_N / p2).min(rows).max(1)
}

fn wide(k: usize) -> [(&'static str, f64); 1] {
    [("WIDE", if k > NET_SLOTS { 1.0 } else { 0.0 })]
}

/// One row-parallel dispatch of a selection stage: the register entry runs an invocation per row,
/// the tiled entry a workgroup per group of rows that share the sort buffer.
#[allow(clippy::too_many_arguments)]
fn dispatch_rows(
    enc: &mut Encoder,
    variant: Variant,
    (register, tiled): (&str, &str),
    k: usize,
    mut p: Params,
    tensors: &[&Tensor],
    rows: usize,
    p2: usize,
) -> Result<()> {
    let gpu = enc.gpu();
    match variant {
        Variant::Register => enc.dispatch(
            &TOPK,
            register,
            &wide(k),
            bytemuck::bytes_of(&p),
            tensors,
            gpu.grid((rows as u64).div_ceil(REG_WG)),
        ),
        Variant::Tiled => {
            let g = group_rows(rows, p2);
            p.group_rows = g as u32;
            enc.dispatch(
                &TOPK,
                tiled,
                &[],
                bytemuck::bytes_of(&p),
                tensors,
                gpu.grid(rows.div_ceil(g) as u64),
            )
        }
    }
}

/// The `k` largest entries of each row of `logits` (`[.., n]`), in descending order, ties to the
/// lower index: `(values [.., k] f32, indices [.., k] u32)`. Uses the device's variant.
pub fn topk_select(enc: &mut Encoder, logits: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let variant = enc.gpu().variant();
    topk_select_with(enc, logits, k, variant)
}

/// [`topk_select`] with an explicit kernel variant.
pub fn topk_select_with(
    enc: &mut Encoder,
    logits: &Tensor,
    k: usize,
    variant: Variant,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "topk_select";
    let s = logits.shape();
    if s.is_empty() || logits.dtype() != DType::F32 {
        return Err(Error::shape(
            OP,
            format!("expects an f32 [rows, n] tensor, got {logits:?}"),
        ));
    }
    let n = s[s.len() - 1];
    check_keep(OP, n, k).map_err(|e| match e {
        Error::Shape { op, msg } => Error::shape(op, format!("{msg} (logits {s:?})")),
        e => e,
    })?;
    let rows = logits.numel() / n;
    let mut out_shape = s.to_vec();
    *out_shape.last_mut().unwrap() = k;
    let gpu = enc.gpu();
    let values = gpu.empty(OP, &out_shape, DType::F32)?;
    let indices = gpu.empty(OP, &out_shape, DType::U32)?;
    if rows == 0 {
        return Ok((values, indices));
    }
    u32_of(OP, "element count", logits.numel())?;
    let p2 = n.next_power_of_two();
    let p = Params {
        rows: rows as u32,
        n: n as u32,
        keep: k as u32,
        p2: p2 as u32,
        ..Default::default()
    };
    let tensors = [logits, &values, &indices];
    dispatch_rows(
        enc,
        variant,
        ("select_register", "select_tiled"),
        k,
        p,
        &tensors,
        rows,
        p2,
    )?;
    Ok((values, indices))
}

/// The shapes of one attention call, checked.
struct Plan {
    hd: usize,
    batch: usize,
    lq: usize,
    lk: usize,
    /// Run the fused subgroup kernel (register variant only).
    subgroup: bool,
}

/// Checks q, k, v and `keep` and picks the kernels.
#[allow(clippy::too_many_arguments)]
fn plan(
    op: &'static str,
    gpu: &Gpu,
    q: &HeadsView,
    k: &HeadsView,
    v: &HeadsView,
    heads: usize,
    keep: usize,
    variant: Variant,
) -> Result<Plan> {
    let mut width = usize::MAX;
    for (name, x) in [("q", q), ("k", k), ("v", v)] {
        if x.t.dtype() != DType::F32 {
            return Err(Error::shape(
                op,
                format!("{name} must be f32, got {:?}", x.t),
            ));
        }
        if x.offset >= x.stride {
            return Err(Error::shape(
                op,
                format!(
                    "{name} view offset {} is not inside its rows of stride {} ({:?})",
                    x.offset,
                    x.stride,
                    x.t.shape()
                ),
            ));
        }
        // Views carry no width: it is the narrowest `stride − offset`, the column block that ends
        // its row (in any packed q/k/v layout at least one of them is the last block).
        width = width.min(x.stride - x.offset);
    }
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(Error::shape(
            op,
            format!(
                "width {width} (q {:?}, k {:?}, v {:?}) is not divisible by {heads} heads",
                q.t.shape(),
                k.t.shape(),
                v.t.shape()
            ),
        ));
    }
    for (name, x) in [("q", q), ("k", k), ("v", v)] {
        x.check(op, width).map_err(|e| match e {
            Error::Shape { op, msg } => Error::shape(op, format!("{name}: {msg}")),
            e => e,
        })?;
        u32_of(op, "view elements", x.t.numel())?;
        u32_of(op, "view stride", x.stride)?;
    }
    if k.batch != q.batch || v.batch != q.batch || v.len != k.len {
        return Err(Error::shape(
            op,
            format!(
                "q (batch {}, len {}), k (batch {}, len {}) and v (batch {}, len {}) must share the \
                 batch, and k and v the length",
                q.batch, q.len, k.batch, k.len, v.batch, v.len
            ),
        ));
    }
    let lk = k.len;
    check_keep(op, lk, keep).map_err(|e| match e {
        Error::Shape { op, msg } => Error::shape(
            op,
            format!(
                "{msg} (keys: k {:?}, v {:?}, len {lk})",
                k.t.shape(),
                v.t.shape()
            ),
        ),
        e => e,
    })?;
    let hd = width / heads;
    let aligned = [q, k, v]
        .iter()
        .all(|x| x.stride.is_multiple_of(4) && x.offset.is_multiple_of(4));
    let info = &gpu.info;
    // The subgroup kernel assumes exactly 8 lanes (each holds 4 of the 32 values of a row).
    let eight_lanes =
        gpu.has_subgroups() && info.subgroup_min_size == 8 && info.subgroup_max_size == 8;
    Ok(Plan {
        hd,
        batch: q.batch,
        lq: q.len,
        lk,
        subgroup: variant == Variant::Register
            && eight_lanes
            && hd == 32
            && keep <= NET_SLOTS
            && aligned,
    })
}

fn params(
    pl: &Plan,
    q: &HeadsView,
    k: &HeadsView,
    v: &HeadsView,
    heads: usize,
    scale: f32,
) -> Params {
    Params {
        rows: (pl.batch * heads) as u32,
        n: pl.lk as u32,
        heads: heads as u32,
        lq: pl.lq as u32,
        hd: pl.hd as u32,
        q_stride: q.stride as u32,
        q_off: q.offset as u32,
        k_stride: k.stride as u32,
        k_off: k.offset as u32,
        v_stride: v.stride as u32,
        v_off: v.offset as u32,
        scale,
        ..Default::default()
    }
}

/// Records the logits dispatch of the non-fused paths.
#[allow(clippy::too_many_arguments)]
fn logits_dispatch(
    op: &'static str,
    enc: &mut Encoder,
    pl: &Plan,
    q: &HeadsView,
    k: &HeadsView,
    heads: usize,
    base: Params,
    variant: Variant,
) -> Result<Tensor> {
    let gpu = enc.gpu();
    let rows = pl.batch * heads;
    let logits = gpu.empty(op, &[pl.batch, heads, pl.lq, pl.lk], DType::F32)?;
    if logits.numel() == 0 {
        return Ok(logits);
    }
    u32_of(op, "logit count", logits.numel())?;
    let tile = match variant {
        Variant::Register => 4,
        Variant::Tiled => 16,
    };
    let tiles_j = pl.lk.div_ceil(tile);
    let p = Params {
        tiles_j: tiles_j as u32,
        ..base
    };
    let tiles = (rows * pl.lq.div_ceil(tile) * tiles_j) as u64;
    let (entry, groups) = match variant {
        Variant::Register => ("logits_register", tiles.div_ceil(REG_WG)),
        Variant::Tiled => ("logits_tiled", tiles),
    };
    enc.dispatch(
        &TOPK,
        entry,
        &[],
        bytemuck::bytes_of(&p),
        &[q.t, k.t, &logits],
        gpu.grid(groups),
    )?;
    Ok(logits)
}

/// Top-K sparse multi-head attention with the device's variant: per batch item and head,
/// `logits = (scale·q)·kᵀ`, keep the `keep` largest of each row (ties to the lower key index),
/// softmax over those (max subtracted; all other weights 0), `out = weights·v`. q is a
/// `[B, Lq, ·]` view, k and v `[B, Lk, ·]` views of width `heads·D` (the narrowest
/// `stride − offset` of the three).
pub fn topk_attention(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    heads: usize,
    keep: usize,
    scale: f32,
) -> Result<TopK> {
    let variant = enc.gpu().variant();
    topk_attention_with(enc, q, k, v, heads, keep, scale, variant)
}

/// [`topk_attention`] with an explicit kernel variant.
#[allow(clippy::too_many_arguments)]
pub fn topk_attention_with(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    heads: usize,
    keep: usize,
    scale: f32,
    variant: Variant,
) -> Result<TopK> {
    const OP: &str = "topk_attention";
    let gpu = enc.gpu();
    let pl = plan(OP, gpu, &q, &k, &v, heads, keep, variant)?;
    let out = gpu.empty(OP, &[pl.batch, pl.lq, heads * pl.hd], DType::F32)?;
    let indices = gpu.empty(OP, &[pl.batch, heads, pl.lq, keep], DType::U32)?;
    let weights = gpu.empty(OP, &[pl.batch, heads, pl.lq, keep], DType::F32)?;
    let rows = pl.batch * heads * pl.lq;
    let result = TopK {
        out,
        indices,
        weights,
    };
    if rows == 0 {
        return Ok(result);
    }
    u32_of(OP, "output elements", result.out.numel())?;
    u32_of(OP, "kept entries", result.weights.numel())?;
    let base = Params {
        keep: keep as u32,
        ..params(&pl, &q, &k, &v, heads, scale)
    };
    if pl.subgroup {
        let groups = (pl.batch * heads * pl.lq.div_ceil(SG_ROWS)) as u64;
        enc.dispatch(
            &TOPK_SUBGROUP,
            "attend_subgroup",
            &[],
            bytemuck::bytes_of(&base),
            &[q.t, k.t, v.t, &result.out, &result.indices, &result.weights],
            gpu.grid(groups),
        )?;
        return Ok(result);
    }
    let logits = logits_dispatch(OP, enc, &pl, &q, &k, heads, base, variant)?;
    let p2 = pl.lk.next_power_of_two();
    let p = Params {
        rows: rows as u32,
        p2: p2 as u32,
        ..base
    };
    let tensors = [&logits, v.t, &result.out, &result.indices, &result.weights];
    dispatch_rows(
        enc,
        variant,
        ("attend_register", "attend_tiled"),
        keep,
        p,
        &tensors,
        rows,
        p2,
    )?;
    Ok(result)
}

/// The logits `[B, heads, Lq, Lk]` that [`topk_attention_with`] selects from for the same
/// arguments, `(scale·q)·kᵀ`, computed by the same code (the fused register kernel keeps its
/// logits in registers; this runs its arithmetic and stores them). For tests that check the
/// selection exactly against the values it was made on.
#[allow(clippy::too_many_arguments)]
pub fn topk_attention_logits(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    heads: usize,
    keep: usize,
    scale: f32,
    variant: Variant,
) -> Result<Tensor> {
    const OP: &str = "topk_attention_logits";
    let gpu = enc.gpu();
    let pl = plan(OP, gpu, &q, &k, &v, heads, keep, variant)?;
    let base = params(&pl, &q, &k, &v, heads, scale);
    if !pl.subgroup {
        return logits_dispatch(OP, enc, &pl, &q, &k, heads, base, variant);
    }
    let logits = gpu.empty(OP, &[pl.batch, heads, pl.lq, pl.lk], DType::F32)?;
    if logits.numel() == 0 {
        return Ok(logits);
    }
    u32_of(OP, "logit count", logits.numel())?;
    let groups = (pl.batch * heads * pl.lq.div_ceil(SG_ROWS)) as u64;
    enc.dispatch(
        &TOPK_SUBGROUP,
        "logits_subgroup",
        &[],
        bytemuck::bytes_of(&base),
        &[q.t, k.t, &logits],
        gpu.grid(groups),
    )?;
    Ok(logits)
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct BwParams {
    batch: u32,
    heads: u32,
    lq: u32,
    lk: u32,
    hd: u32,
    keep: u32,
    width: u32,
    map_words: u32,
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    scale: f32,
    col_chunks: u32,
}

/// Existing tensors the gradients of [`topk_attention_backward`] are added into (`None`: fresh).
/// The top-K weights as a dense `[B, heads, Lq, lk]` matrix: `weights` at `indices` (both
/// `[B, heads, Lq, K]`, as [`TopK`] holds them), 0 everywhere else.
pub fn dense_weights(
    enc: &mut Encoder,
    indices: &Tensor,
    weights: &Tensor,
    lk: usize,
) -> Result<Tensor> {
    const DW: &str = "topk_dense_weights";
    let s = indices.shape().to_vec();
    if s.len() != 4 || indices.dtype() != DType::U32 {
        return Err(Error::shape(
            DW,
            format!("indices must be u32 [B, heads, Lq, K], got {indices:?}"),
        ));
    }
    if weights.dtype() != DType::F32 || weights.shape() != s.as_slice() {
        return Err(Error::shape(
            DW,
            format!("weights must be f32 {s:?} like the indices, got {weights:?}"),
        ));
    }
    if s[3] > lk {
        return Err(Error::shape(
            DW,
            format!("K = {} kept entries do not fit rows of {lk} keys", s[3]),
        ));
    }
    let gpu = enc.gpu();
    let out = gpu.empty(DW, &[s[0], s[1], s[2], lk], DType::F32)?;
    enc.clear(&out);
    let entries = indices.numel();
    if entries == 0 {
        return Ok(out);
    }
    let params = Params {
        rows: u32_of(DW, "rows", s[0] * s[1] * s[2])?,
        n: u32_of(DW, "Lk", lk)?,
        keep: s[3] as u32,
        ..Default::default()
    };
    u32_of(DW, "dense element count", out.numel())?;
    enc.dispatch(
        &TOPK,
        "dense_weights",
        &[],
        bytemuck::bytes_of(&params),
        &[indices, weights, &out],
        gpu.grid((entries as u64).div_ceil(64)),
    )?;
    Ok(out)
}

/// Top-K attention with dropout on the kept weights, for training (the official
/// `MultiHeadAttentionTopK` drops its scattered weights, whose zeros stay zero): the selection and
/// softmax of [`topk_attention`], then `out = dropout(P)·v` on the dense GEMM path, with P
/// `[B·heads, Lq, Lk]` zero outside the kept keys. Returns the output `[B, Lq, width]` and P,
/// which [`topk_attention_dropout_backward`] takes.
#[allow(clippy::too_many_arguments)]
pub fn topk_attention_dropout(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    heads: usize,
    keep: usize,
    scale: f32,
    drop: attention::Dropout,
) -> Result<(Tensor, Tensor)> {
    attention::check_drop("topk_attention_dropout", drop)?;
    let (batch, lq, lk) = (q.batch, q.len, k.len);
    let r = topk_attention(enc, q, k, v, heads, keep, scale)?;
    let probs =
        dense_weights(enc, &r.indices, &r.weights, lk)?.reshape(&[batch * heads, lq, lk])?;
    let width = r.out.shape()[2];
    let vd = attention::gather_heads(enc, &v, heads, width / heads, 1.0)?;
    let out = enc
        .gpu()
        .empty("topk_attention_dropout", &[batch, lq, width], DType::F32)?;
    attention::attend_dense_into(enc, &probs, &vd, Some(drop), heads, &out)?;
    Ok((out, probs))
}

/// Backward of [`topk_attention_dropout`] (same views, `drop` and its weights `probs`): the dense
/// attention backward with P given, so gradient flows through the kept entries only.
#[allow(clippy::too_many_arguments)]
pub fn topk_attention_dropout_backward(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    heads: usize,
    scale: f32,
    probs: &Tensor,
    drop: attention::Dropout,
    dout: &Tensor,
) -> Result<TopKGrads> {
    attention::check_drop("topk_attention_dropout_backward", drop)?;
    let opts = attention::AttnOpts {
        heads,
        scale,
        bias: None,
        mask: None,
        scatter: None,
    };
    let g = attention::attention_backward_dense(
        enc,
        q,
        k,
        v,
        &opts,
        Some(drop),
        Some(probs),
        dout,
        &attention::AttnInto::default(),
    )?;
    Ok(TopKGrads {
        dq: g.dq,
        dk: g.dk,
        dv: g.dv,
    })
}

#[derive(Clone, Copy, Debug, Default)]
pub struct TopKInto<'a> {
    pub dq: Option<&'a Tensor>,
    pub dk: Option<&'a Tensor>,
    pub dv: Option<&'a Tensor>,
}

/// Gradients of [`topk_attention`]: `dq` `[B, Lq, width]`, `dk` and `dv` `[B, Lk, width]`, dense
/// whatever the layout of the views (a packed qkv gets three separate gradients).
#[derive(Debug)]
pub struct TopKGrads {
    pub dq: Tensor,
    pub dk: Tensor,
    pub dv: Tensor,
}

/// Backward of [`topk_attention`] for the upstream `dout` (`[B, Lq, width]`, dense), from the
/// forward's saved `indices` and `weights` P (`[B, heads, Lq, K]`, exactly as [`TopK`] returns
/// them; the logits and the selection are not recomputed, so the kept set is the forward's). The
/// selection is piecewise constant, so gradient flows only through the kept entries: per row,
/// `dP_t = dO·v[idx_t]`, `dS_t = P_t·(dP_t − Σ_u P_u·dP_u)`, `dq = scale·Σ_t dS_t·k[idx_t]`,
/// `dk[j] = scale·Σ dS·q` and `dv[j] = Σ P·dO` over the (row, slot) pairs that kept key j.
/// The key-side sums gather through a per-row slot map built on the GPU (rows in ascending
/// order, no atomics: deterministic). Gradients named in `into` are added into those tensors.
///
/// `indices` must be the forward's (distinct per row, each < Lk): an index ≥ Lk is ignored, and
/// of duplicated indices only the last slot reaches dk and dv.
#[allow(clippy::too_many_arguments)]
pub fn topk_attention_backward(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    heads: usize,
    scale: f32,
    indices: &Tensor,
    weights: &Tensor,
    dout: &Tensor,
    into: &TopKInto,
) -> Result<TopKGrads> {
    const BW: &str = "topk_attention_backward";
    let gpu = enc.gpu();
    let is = indices.shape();
    if is.len() != 4 || indices.dtype() != DType::U32 {
        return Err(Error::shape(
            BW,
            format!("indices must be u32 [B, heads, Lq, K], got {indices:?}"),
        ));
    }
    let keep = is[3];
    let pl = plan(BW, gpu, &q, &k, &v, heads, keep, Variant::Register)?;
    let (batch, lq, lk, hd) = (pl.batch, pl.lq, pl.lk, pl.hd);
    let width = heads * hd;
    let saved = [batch, heads, lq, keep];
    if is != saved {
        return Err(Error::shape(
            BW,
            format!("indices must be [B, heads, Lq, K] = {saved:?}, got {indices:?}"),
        ));
    }
    if weights.dtype() != DType::F32 || weights.shape() != saved {
        return Err(Error::shape(
            BW,
            format!("weights must be f32 [B, heads, Lq, K] = {saved:?}, got {weights:?}"),
        ));
    }
    if dout.dtype() != DType::F32 || dout.shape() != [batch, lq, width] {
        return Err(Error::shape(
            BW,
            format!("dout must be f32 [B, Lq, width] = [{batch}, {lq}, {width}], got {dout:?}"),
        ));
    }
    let operands = [q.t, k.t, v.t, indices, weights, dout];
    let dest = |what: &str, t: Option<&Tensor>, shape: &[usize]| -> Result<Tensor> {
        match t {
            Some(t) => {
                if t.dtype() != DType::F32 || t.shape() != shape {
                    return Err(Error::shape(
                        BW,
                        format!("{what} must be f32 {shape:?}, got {t:?}"),
                    ));
                }
                if operands
                    .iter()
                    .any(|o| std::sync::Arc::ptr_eq(o.pooled(), t.pooled()))
                {
                    return Err(Error::shape(
                        BW,
                        format!("{what} {t:?} shares its buffer with an operand"),
                    ));
                }
                Ok(t.clone())
            }
            None => gpu.empty(BW, shape, DType::F32),
        }
    };
    let dq = dest("into.dq", into.dq, &[batch, lq, width])?;
    let dk = dest("into.dk", into.dk, &[batch, lk, width])?;
    let dv = dest("into.dv", into.dv, &[batch, lk, width])?;
    if [&dq, &dk, &dv].iter().enumerate().any(|(a, x)| {
        [&dq, &dk, &dv][a + 1..]
            .iter()
            .any(|y| std::sync::Arc::ptr_eq(x.pooled(), y.pooled()))
    }) {
        return Err(Error::shape(
            BW,
            "into.dq, into.dk and into.dv must be distinct tensors",
        ));
    }
    let rows = batch * heads * lq;
    let map_words = lk.div_ceil(4);
    let col_chunks = hd.div_ceil(4);
    for (what, n) in [
        ("B·heads·Lq·K", rows * keep),
        ("slot map words", rows * map_words),
        ("dq element count", batch * lq * width),
        ("dk element count", batch * lk * width),
        ("dk invocations", batch * heads * map_words * col_chunks),
    ] {
        u32_of(BW, what, n)?;
    }
    if rows == 0 {
        // Nothing flows back; fresh gradients must still be zero.
        for (t, acc) in [
            (&dq, into.dq.is_some()),
            (&dk, into.dk.is_some()),
            (&dv, into.dv.is_some()),
        ] {
            if !acc {
                enc.clear(t);
            }
        }
        return Ok(TopKGrads { dq, dk, dv });
    }
    let p = BwParams {
        batch: batch as u32,
        heads: heads as u32,
        lq: lq as u32,
        lk: lk as u32,
        hd: hd as u32,
        keep: keep as u32,
        width: width as u32,
        map_words: map_words as u32,
        q_stride: q.stride as u32,
        q_off: q.offset as u32,
        k_stride: k.stride as u32,
        k_off: k.offset as u32,
        v_stride: v.stride as u32,
        v_off: v.offset as u32,
        scale,
        col_chunks: col_chunks as u32,
    };
    let ds = gpu.empty(BW, &saved, DType::F32)?;
    let map = gpu.empty(BW, &[rows * map_words], DType::U32)?;
    let grid = |n: usize| gpu.grid((n as u64).div_ceil(64));
    let flag = |b: bool| b as u8 as f64;
    let bytes = bytemuck::bytes_of(&p);
    enc.dispatch(
        &TOPK,
        "tk_bw_rows",
        &[],
        bytes,
        &[v.t, dout, indices, weights, &ds, &map],
        grid(rows),
    )?;
    enc.dispatch(
        &TOPK,
        "tk_bw_dq",
        &[("ACCUM", flag(into.dq.is_some()))],
        bytes,
        &[k.t, indices, &ds, &dq],
        grid(dq.numel()),
    )?;
    enc.dispatch(
        &TOPK,
        "tk_bw_dkv",
        &[
            ("ACCUM", flag(into.dk.is_some())),
            ("ACCUM_V", flag(into.dv.is_some())),
        ],
        bytes,
        &[q.t, dout, weights, &ds, &map, &dk, &dv],
        grid(batch * heads * map_words * col_chunks),
    )?;
    Ok(TopKGrads { dq, dk, dv })
}

/// Plain-loop references.
pub mod cpu {
    /// The host view shared with the dense attention reference.
    pub use crate::ops::attention::cpu::View;

    /// Indices of the `k` first entries of `row` in the order (value desc, index asc).
    pub fn top_indices<T: PartialOrd + Copy>(row: &[T], k: usize) -> Vec<u32> {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        // A stable sort on the value alone keeps equal values in index order.
        idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).expect("NaN in top-k input"));
        idx.truncate(k);
        idx.into_iter().map(|i| i as u32).collect()
    }

    /// Top `k` of each `n`-long row of `x`: `(values, indices)`, each `rows·k` long.
    pub fn topk_select(x: &[f32], n: usize, k: usize) -> (Vec<f32>, Vec<u32>) {
        let mut vals = Vec::new();
        let mut idxs = Vec::new();
        for row in x.chunks(n) {
            for i in top_indices(row, k) {
                vals.push(row[i as usize]);
                idxs.push(i);
            }
        }
        (vals, idxs)
    }

    /// `[B, heads, Lq, Lk]` logits `Σ_d (scale·q)·k` in f64.
    pub fn topk_logits(q: View, k: View, heads: usize, hd: usize, scale: f32) -> Vec<f64> {
        let mut out = Vec::with_capacity(q.batch * heads * q.len * k.len);
        for b in 0..q.batch {
            for h in 0..heads {
                for i in 0..q.len {
                    for j in 0..k.len {
                        let mut s = 0.0;
                        for d in 0..hd {
                            s += q.at(b, i, h * hd + d) * scale as f64 * k.at(b, j, h * hd + d);
                        }
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    /// What [`super::TopK`] holds, on the host.
    #[derive(Clone, Debug)]
    pub struct TopK {
        pub out: Vec<f32>,
        pub indices: Vec<u32>,
        pub weights: Vec<f32>,
    }

    /// Softmax over the given kept keys of each logits row (f64, max subtracted) and `w·v`:
    /// `indices` is `[B, heads, Lq, keep]` in selection order, `logits` `[B, heads, Lq, Lk]`.
    pub fn topk_attend(
        logits: &[f64],
        indices: &[u32],
        v: View,
        heads: usize,
        hd: usize,
        lq: usize,
        keep: usize,
    ) -> TopK {
        let lk = v.len;
        let mut out = vec![0f32; v.batch * lq * heads * hd];
        let mut weights = Vec::with_capacity(indices.len());
        for (row, sel) in indices.chunks(keep).enumerate() {
            let (i, bh) = (row % lq, row / lq);
            let (h, b) = (bh % heads, bh / heads);
            let l = &logits[row * lk..(row + 1) * lk];
            let m = sel
                .iter()
                .map(|&j| l[j as usize])
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = sel.iter().map(|&j| (l[j as usize] - m).exp()).collect();
            let s: f64 = e.iter().sum();
            let w: Vec<f64> = e.iter().map(|x| x / s).collect();
            for d in 0..hd {
                let acc: f64 = sel
                    .iter()
                    .zip(&w)
                    .map(|(&j, &wt)| wt * v.at(b, j as usize, h * hd + d))
                    .sum();
                out[(b * lq + i) * heads * hd + h * hd + d] = acc as f32;
            }
            weights.extend(w.iter().map(|&x| x as f32));
        }
        TopK {
            out,
            indices: indices.to_vec(),
            weights,
        }
    }

    /// The whole op: f64 logits, exact selection on them, f64 softmax and `w·v`.
    pub fn topk_attention(
        q: View,
        k: View,
        v: View,
        heads: usize,
        hd: usize,
        keep: usize,
        scale: f32,
    ) -> TopK {
        let logits = topk_logits(q, k, heads, hd, scale);
        let indices: Vec<u32> = logits
            .chunks(k.len)
            .flat_map(|row| top_indices(row, keep))
            .collect();
        topk_attend(&logits, &indices, v, heads, hd, q.len, keep)
    }

    /// f64 top-K attention on dense `[B, L, heads·hd]` slices, `dims = [B, Lq, Lk, heads, hd]`:
    /// `(out [B, Lq, width], indices [B, heads, Lq, keep])`. The kept keys are `indices` when
    /// given, else the exact selection on the f64 logits (value desc, index asc).
    #[allow(clippy::too_many_arguments)]
    pub fn topk_attention_f64(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        dims: [usize; 5],
        keep: usize,
        scale: f64,
        indices: Option<&[u32]>,
    ) -> (Vec<f64>, Vec<u32>) {
        let [batch, lq, lk, heads, hd] = dims;
        let width = heads * hd;
        let mut out = vec![0f64; batch * lq * width];
        let mut sel_all = Vec::with_capacity(batch * heads * lq * keep);
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..lq {
                    let row = (b * heads + h) * lq + i;
                    let l = logits_row(q, k, dims, scale, b, h, i);
                    let sel = match indices {
                        Some(x) => x[row * keep..(row + 1) * keep].to_vec(),
                        None => top_indices(&l, keep),
                    };
                    let w = softmax_kept(&l, &sel);
                    for d in 0..hd {
                        let c = h * hd + d;
                        out[(b * lq + i) * width + c] = sel
                            .iter()
                            .zip(&w)
                            .map(|(&j, &wt)| wt * v[(b * lk + j as usize) * width + c])
                            .sum();
                    }
                    sel_all.extend(sel);
                }
            }
        }
        (out, sel_all)
    }

    /// Dense top-K weights `[B·heads, Lq, Lk]` (softmax over the kept keys of each row, 0
    /// elsewhere) of f64 q, k, with the kept keys `indices` `[B, heads, Lq, keep]`.
    pub fn topk_probs_f64(
        q: &[f64],
        k: &[f64],
        dims: [usize; 5],
        keep: usize,
        scale: f64,
        indices: &[u32],
    ) -> Vec<f64> {
        let [batch, lq, lk, heads, _] = dims;
        let mut p = vec![0f64; batch * heads * lq * lk];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..lq {
                    let row = (b * heads + h) * lq + i;
                    let l = logits_row(q, k, dims, scale, b, h, i);
                    let sel = &indices[row * keep..(row + 1) * keep];
                    for (&j, w) in sel.iter().zip(softmax_kept(&l, sel)) {
                        p[row * lk + j as usize] = w;
                    }
                }
            }
        }
        p
    }

    /// Logits `scale·q_i·k_j` of row (b, h, i) over all Lk keys.
    fn logits_row(
        q: &[f64],
        k: &[f64],
        [_, lq, lk, heads, hd]: [usize; 5],
        scale: f64,
        b: usize,
        h: usize,
        i: usize,
    ) -> Vec<f64> {
        let width = heads * hd;
        (0..lk)
            .map(|j| {
                (0..hd)
                    .map(|d| {
                        let c = h * hd + d;
                        q[(b * lq + i) * width + c] * k[(b * lk + j) * width + c]
                    })
                    .sum::<f64>()
                    * scale
            })
            .collect()
    }

    /// Softmax over the kept entries `sel` of a logits row, in `sel` order.
    fn softmax_kept(l: &[f64], sel: &[u32]) -> Vec<f64> {
        let m = sel
            .iter()
            .map(|&j| l[j as usize])
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = sel.iter().map(|&j| (l[j as usize] - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    /// Gradients `(dq, dk, dv)` of [`topk_attention_f64`] with the kept set fixed to `indices`,
    /// for the upstream `dout`, through the full softmax Jacobian over the kept entries
    /// `∂P_t/∂S_u = P_t·(δ_tu − P_u)` (not the rowsum shortcut the GPU uses); keys a row did not
    /// keep get nothing from it.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn topk_attention_backward(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        dims: [usize; 5],
        keep: usize,
        scale: f64,
        indices: &[u32],
        dout: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let [batch, lq, lk, heads, hd] = dims;
        let width = heads * hd;
        let (mut dq, mut dk, mut dv) = (
            vec![0f64; q.len()],
            vec![0f64; k.len()],
            vec![0f64; v.len()],
        );
        let qi = |b: usize, i: usize, c: usize| (b * lq + i) * width + c;
        let ki = |b: usize, j: usize, c: usize| (b * lk + j) * width + c;
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..lq {
                    let row = (b * heads + h) * lq + i;
                    let sel = &indices[row * keep..(row + 1) * keep];
                    let p = softmax_kept(&logits_row(q, k, dims, scale, b, h, i), sel);
                    let dp: Vec<f64> = sel
                        .iter()
                        .map(|&j| {
                            (0..hd)
                                .map(|d| {
                                    dout[qi(b, i, h * hd + d)] * v[ki(b, j as usize, h * hd + d)]
                                })
                                .sum()
                        })
                        .collect();
                    for (u, &j) in sel.iter().enumerate() {
                        let j = j as usize;
                        let ds: f64 = (0..keep)
                            .map(|t| dp[t] * p[t] * (((t == u) as u8 as f64) - p[u]))
                            .sum();
                        for d in 0..hd {
                            let c = h * hd + d;
                            dq[qi(b, i, c)] += scale * ds * k[ki(b, j, c)];
                            dk[ki(b, j, c)] += scale * ds * q[qi(b, i, c)];
                            dv[ki(b, j, c)] += p[u] * dout[qi(b, i, c)];
                        }
                    }
                }
            }
        }
        (dq, dk, dv)
    }
}

/// Benchmarks: the model's top-32 attention (361 queries × 361 keys × 8 heads of 32, packed qkv)
/// and the selection alone on its 8·361 logits rows, per variant. The variant the device would not
/// choose runs fewer iterations (the tiled kernels take seconds on lavapipe).
#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
    use crate::bench::{median_ms, Row};
    let (l, heads, hd, keep) = (361usize, 8usize, 32usize, 32usize);
    let c = heads * hd;
    let data = crate::prng::SplitMix64::new(7).vec_f32(l * 3 * c, -1.0, 1.0);
    let qkv = gpu.upload(&[1, l, 3 * c], &data)?;
    let scale = 1.0 / (hd as f32).sqrt();
    let logit_rows = gpu.upload(
        &[heads * l, l],
        &crate::prng::SplitMix64::new(8).vec_f32(heads * l * l, -4.0, 4.0),
    )?;
    // Logits 2·L²·D·H, w·v 2·L·K·D·H.
    let flops = (2 * l * l * hd * heads + 2 * l * keep * hd * heads) as f64;
    for variant in Variant::ALL {
        let (warmup, iters) = if variant == gpu.variant() {
            (2, 10)
        } else {
            (1, 3)
        };
        let ms = median_ms(gpu, warmup, iters, |enc| {
            let q = HeadsView::packed(&qkv, 3, 0)?;
            let k = HeadsView::packed(&qkv, 3, 1)?;
            let v = HeadsView::packed(&qkv, 3, 2)?;
            topk_attention_with(enc, q, k, v, heads, keep, scale, variant)?;
            Ok(())
        })?;
        rows.push(Row {
            kernel: format!("topk_attention {}", variant.name()),
            shape: format!("{l}x{l} h{heads} d{hd} k{keep}"),
            median_ms: ms,
            flops: Some(flops),
            bytes: None,
        });
        let ms = median_ms(gpu, warmup, iters, |enc| {
            topk_select_with(enc, &logit_rows, keep, variant)?;
            Ok(())
        })?;
        rows.push(Row {
            kernel: format!("topk_select {}", variant.name()),
            shape: format!("{}x{l} k{keep}", heads * l),
            median_ms: ms,
            flops: None,
            bytes: Some((heads * l * l * 4 + heads * l * keep * 8) as f64),
        });
    }
    // Backward (one kernel set for every variant) at batch 1 and the training batch 32, from the
    // forward's saved indices and weights. FLOPs: dP, dq, dk, dv are 2·K·D·H each per query row.
    for batch in [1usize, 32] {
        let data = crate::prng::SplitMix64::new(9).vec_f32(batch * l * 3 * c, -1.0, 1.0);
        let qkv = gpu.upload(&[batch, l, 3 * c], &data)?;
        let dout = gpu.upload(
            &[batch, l, c],
            &crate::prng::SplitMix64::new(10).vec_f32(batch * l * c, -1.0, 1.0),
        )?;
        let q = HeadsView::packed(&qkv, 3, 0)?;
        let k = HeadsView::packed(&qkv, 3, 1)?;
        let v = HeadsView::packed(&qkv, 3, 2)?;
        let mut enc = gpu.encoder();
        let fwd = topk_attention(&mut enc, q, k, v, heads, keep, scale)?;
        enc.submit()?;
        let (warmup, iters) = if batch == 1 { (2, 10) } else { (1, 3) };
        let ms = median_ms(gpu, warmup, iters, |enc| {
            topk_attention_backward(
                enc,
                q,
                k,
                v,
                heads,
                scale,
                &fwd.indices,
                &fwd.weights,
                &dout,
                &TopKInto::default(),
            )?;
            Ok(())
        })?;
        rows.push(Row {
            kernel: "topk_attention_backward".into(),
            shape: format!("b{batch} {l}x{l} h{heads} d{hd} k{keep}"),
            median_ms: ms,
            flops: Some((8 * batch * l * keep * hd * heads) as f64),
            bytes: None,
        });
    }
    Ok(())
}
