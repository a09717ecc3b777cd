//! Top-K sparse attention (SparseTT's decoder self-attention) and the row-wise top-K selection it
//! is built on. Per batch item b, head h and query row i:
//! `logits = (scale·q)·kᵀ`; keep the K largest logits of the row; `w = softmax` over those K (max
//! subtracted), every other weight exactly 0; `out = w·v`.
//!
//! Selection order everywhere: larger value first, equal values → smaller index first. On
//! NaN-free input that is a strict total order, so the selection is unique and the GPU must equal
//! the CPU reference exactly.
//!
//! Two dispatches: the logits `[B, H, Lq, Lk]`, then selection + softmax + `w·v` fused.
//! `Variant::Tiled` selects with a bitonic sort in workgroup memory (the GPU path);
//! `Variant::Register` runs one barrier-free invocation per row (lavapipe).
//! Shader: `shaders/topk.wgsl`.

use crate::gpu::{DType, Encoder, Tensor, Variant};
use crate::ops::HeadsView;
use crate::{shader, Error, Result};

shader!(TOPK, "topk.wgsl");

/// Largest K the kernels keep (the register variant's private arrays).
pub const MAX_K: usize = 64;
/// Longest row the kernels select from (the tiled variant sorts a row in workgroup memory).
pub const MAX_N: usize = 1024;

/// Invocations per workgroup of the register kernels (`@workgroup_size(64)`).
const REG_WG: u64 = 64;
/// Entries the tiled selection sorts per workgroup (`SORT_N`).
const SORT_N: usize = 1024;

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
    let mut p = Params {
        rows: rows as u32,
        n: n as u32,
        keep: k as u32,
        p2: p2 as u32,
        ..Default::default()
    };
    let (entry, groups) = match variant {
        Variant::Register => ("select_register", (rows as u64).div_ceil(REG_WG)),
        Variant::Tiled => {
            let g = group_rows(rows, p2);
            p.group_rows = g as u32;
            ("select_tiled", rows.div_ceil(g) as u64)
        }
    };
    enc.dispatch(
        &TOPK,
        entry,
        &[],
        bytemuck::bytes_of(&p),
        &[logits, &values, &indices],
        gpu.grid(groups),
    )?;
    Ok((values, indices))
}

/// Checks q, k, v and returns `(head width D, batch, Lq, Lk)`.
fn check_views(
    op: &'static str,
    q: &HeadsView,
    k: &HeadsView,
    v: &HeadsView,
    heads: usize,
) -> Result<(usize, usize, usize, usize)> {
    let mut width = usize::MAX;
    for (name, x) in [("q", q), ("k", k), ("v", v)] {
        if x.t.dtype() != DType::F32 {
            return Err(Error::shape(op, format!("{name} must be f32, got {:?}", x.t)));
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
    if heads == 0 || width % heads != 0 {
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
    Ok((width / heads, q.batch, q.len, k.len))
}

fn view_params(q: &HeadsView, k: &HeadsView, v: &HeadsView) -> Result<[u32; 6]> {
    const OP: &str = "topk_attention";
    Ok([
        u32_of(OP, "q stride", q.stride)?,
        u32_of(OP, "q offset", q.offset)?,
        u32_of(OP, "k stride", k.stride)?,
        u32_of(OP, "k offset", k.offset)?,
        u32_of(OP, "v stride", v.stride)?,
        u32_of(OP, "v offset", v.offset)?,
    ])
}

/// `logits[b, h, i, j] = Σ_d (scale·q[b, i, h, d])·k[b, j, h, d]` as `[B, heads, Lq, Lk]`, for
/// q and k views of width `heads·head_dim`: the first half of [`topk_attention_with`], exposed so
/// tests can check a selection against the very logits the GPU selected from.
#[allow(clippy::too_many_arguments)]
pub fn topk_logits_with(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    heads: usize,
    head_dim: usize,
    scale: f32,
    variant: Variant,
) -> Result<Tensor> {
    const OP: &str = "topk_logits";
    for (name, x) in [("q", &q), ("k", &k)] {
        if x.t.dtype() != DType::F32 {
            return Err(Error::shape(OP, format!("{name} must be f32, got {:?}", x.t)));
        }
        x.check(OP, heads * head_dim).map_err(|e| match e {
            Error::Shape { op, msg } => Error::shape(op, format!("{name}: {msg}")),
            e => e,
        })?;
    }
    if k.batch != q.batch {
        return Err(Error::shape(
            OP,
            format!("q batch {} and k batch {} differ", q.batch, k.batch),
        ));
    }
    logits_dispatch(OP, enc, &q, &k, heads, head_dim, q.batch, q.len, k.len, scale, variant)
}

#[allow(clippy::too_many_arguments)]
fn logits_dispatch(
    op: &'static str,
    enc: &mut Encoder,
    q: &HeadsView,
    k: &HeadsView,
    heads: usize,
    hd: usize,
    batch: usize,
    lq: usize,
    lk: usize,
    scale: f32,
    variant: Variant,
) -> Result<Tensor> {
    let gpu = enc.gpu();
    let logits = gpu.empty(op, &[batch, heads, lq, lk], DType::F32)?;
    if logits.numel() == 0 {
        return Ok(logits);
    }
    u32_of(op, "logit count", logits.numel())?;
    u32_of(op, "q elements", q.t.numel())?;
    u32_of(op, "k elements", k.t.numel())?;
    let [q_stride, q_off, k_stride, k_off, ..] = view_params(q, k, k)?;
    let tile = match variant {
        Variant::Register => 4,
        Variant::Tiled => 16,
    };
    let tiles_j = lk.div_ceil(tile);
    let p = Params {
        rows: (batch * heads) as u32,
        n: lk as u32,
        heads: heads as u32,
        lq: lq as u32,
        hd: hd as u32,
        q_stride,
        q_off,
        k_stride,
        k_off,
        scale,
        tiles_j: tiles_j as u32,
        ..Default::default()
    };
    let tiles = (batch * heads * lq.div_ceil(tile) * tiles_j) as u64;
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
    let (hd, batch, lq, lk) = check_views(OP, &q, &k, &v, heads)?;
    check_keep(OP, lk, keep).map_err(|e| match e {
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
    u32_of(OP, "v elements", v.t.numel())?;
    let gpu = enc.gpu();
    let out = gpu.empty(OP, &[batch, lq, heads * hd], DType::F32)?;
    let indices = gpu.empty(OP, &[batch, heads, lq, keep], DType::U32)?;
    let weights = gpu.empty(OP, &[batch, heads, lq, keep], DType::F32)?;
    let rows = batch * heads * lq;
    if rows == 0 {
        return Ok(TopK {
            out,
            indices,
            weights,
        });
    }
    u32_of(OP, "output elements", out.numel())?;
    let logits = logits_dispatch(OP, enc, &q, &k, heads, hd, batch, lq, lk, scale, variant)?;
    let [_, _, _, _, v_stride, v_off] = view_params(&q, &k, &v)?;
    let p2 = lk.next_power_of_two();
    let mut p = Params {
        rows: rows as u32,
        n: lk as u32,
        keep: keep as u32,
        p2: p2 as u32,
        heads: heads as u32,
        lq: lq as u32,
        hd: hd as u32,
        v_stride,
        v_off,
        scale,
        ..Default::default()
    };
    let (entry, groups) = match variant {
        Variant::Register => ("attend_register", (rows as u64).div_ceil(REG_WG)),
        Variant::Tiled => {
            let g = group_rows(rows, p2);
            p.group_rows = g as u32;
            ("attend_tiled", rows.div_ceil(g) as u64)
        }
    };
    enc.dispatch(
        &TOPK,
        entry,
        &[],
        bytemuck::bytes_of(&p),
        &[&logits, v.t, &out, &indices, &weights],
        gpu.grid(groups),
    )?;
    Ok(TopK {
        out,
        indices,
        weights,
    })
}

/// Plain-loop references.
pub mod cpu {
    /// A `[batch, len, heads·D]` view of a slice: element (b, i, h, d) at
    /// `b·len·stride + i·stride + offset + h·D + d` (as [`crate::ops::HeadsView`]).
    #[derive(Clone, Copy, Debug)]
    pub struct View<'a> {
        pub data: &'a [f32],
        pub batch: usize,
        pub len: usize,
        pub stride: usize,
        pub offset: usize,
    }

    impl View<'_> {
        fn at(&self, b: usize, i: usize, col: usize) -> f64 {
            self.data[(b * self.len + i) * self.stride + self.offset + col] as f64
        }
    }

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
            let m = sel.iter().map(|&j| l[j as usize]).fold(f64::NEG_INFINITY, f64::max);
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
}

/// Benchmarks: the model's top-32 attention (361 queries × 361 keys × 8 heads of 32, packed qkv)
/// and the selection alone on its 8·361 logits rows, per variant.
#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &crate::Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
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
        let ms = median_ms(gpu, 2, 10, |enc| {
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
        let ms = median_ms(gpu, 2, 10, |enc| {
            let q = HeadsView::packed(&qkv, 3, 0)?;
            let k = HeadsView::packed(&qkv, 3, 1)?;
            topk_logits_with(enc, q, k, heads, hd, scale, variant)?;
            Ok(())
        })?;
        rows.push(Row {
            kernel: format!("topk_logits {}", variant.name()),
            shape: format!("{l}x{l} h{heads} d{hd}"),
            median_ms: ms,
            flops: Some((2 * l * l * hd * heads) as f64),
            bytes: None,
        });
        let ms = median_ms(gpu, 2, 10, |enc| {
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
    Ok(())
}
