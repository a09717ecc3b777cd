//! Data movement: pad, slice (crop), concat, permute, and SparseTT's learned 2-D positional
//! embedding. Each op is one dispatch (concat of more than 7 inputs: one per 7) and copies 4-byte
//! elements bit for bit, so f32, u32 and i32 tensors all work. Shader: `shaders/layout.wgsl`.

use crate::gpu::{DType, Encoder, Tensor};
use crate::{shader, Error, Result};

shader!(LAYOUT, "layout.wgsl");

/// Threads per workgroup (`WG` in the shader).
const WG: u64 = 64;
/// Consecutive output elements one invocation copies (`R` in the shader).
const RUN: usize = 16;
/// Highest rank of `pad` and `permute`.
const MAX_RANK: usize = 4;
/// Inputs one concat dispatch can read (8 storage buffers per stage, one is the output).
const CONCAT_INPUTS: usize = 7;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PadParams {
    out_shape: [u32; 4],
    in_shape: [u32; 4],
    before: [u32; 4],
    n: u32,
    runs: u32,
    value: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PermuteParams {
    out_shape: [u32; 4],
    strides: [u32; 4],
    n: u32,
    runs: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SliceParams {
    n: u32,
    runs: u32,
    span: u32,
    in_row: u32,
    in_off: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConcatParams {
    span: [u32; 8],
    at: [u32; 8],
    first_run: [u32; 8],
    n: u32,
    count: u32,
    out_row: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbedParams {
    n: u32,
    runs: u32,
    w: u32,
    half: u32,
}

fn check_elem(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() == DType::F16 {
        return Err(Error::shape(
            op,
            format!("moves 4-byte elements; {t:?} is f16"),
        ));
    }
    if u32::try_from(t.numel()).is_err() {
        return Err(Error::shape(
            op,
            format!("{t:?} has more than u32::MAX elements"),
        ));
    }
    Ok(())
}

fn check_rank(op: &'static str, shape: &[usize]) -> Result<()> {
    if shape.len() > MAX_RANK {
        return Err(Error::shape(
            op,
            format!(
                "supports up to {MAX_RANK}-D tensors, got {}-D {shape:?}",
                shape.len()
            ),
        ));
    }
    Ok(())
}

/// The output of `op`, checked to be u32-indexable.
fn output(enc: &Encoder, op: &'static str, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let t = enc.gpu().empty(op, shape, dtype)?;
    if u32::try_from(t.numel()).is_err() {
        return Err(Error::shape(
            op,
            format!("output {shape:?} has more than u32::MAX elements"),
        ));
    }
    Ok(t)
}

/// `dims` right-aligned into 4 slots, the missing leading ones filled with `fill`.
fn right_align(dims: &[usize], fill: u32) -> [u32; 4] {
    let mut out = [fill; 4];
    out[MAX_RANK - dims.len()..]
        .iter_mut()
        .zip(dims)
        .for_each(|(o, &d)| *o = d as u32);
    out
}

/// Invocations for `rows` rows of `len` elements, one per run of `RUN`: (invocations, runs per row).
fn runs(rows: usize, len: usize) -> (usize, usize) {
    let per_row = len.div_ceil(RUN);
    (rows * per_row, per_row)
}

fn groups(enc: &Encoder, invocations: usize) -> [u32; 3] {
    enc.gpu().grid((invocations as u64).div_ceil(WG))
}

/// Pads `x` (up to 4-D) with `pads[d] = (before, after)` elements of `value` on each side of
/// dimension `d`: `y[i] = x[i − before]` inside, `value` outside. For u32/i32 tensors `value` is
/// converted with `as` (truncating toward zero, saturating).
pub fn pad(enc: &mut Encoder, x: &Tensor, pads: &[(usize, usize)], value: f32) -> Result<Tensor> {
    check_elem("pad", x)?;
    let shape = x.shape();
    check_rank("pad", shape)?;
    if pads.len() != shape.len() {
        return Err(Error::shape(
            "pad",
            format!("needs one (before, after) pair per dimension of {shape:?}, got {pads:?}"),
        ));
    }
    let out_shape = shape
        .iter()
        .zip(pads)
        .map(|(&d, &(a, b))| d.checked_add(a)?.checked_add(b))
        .collect::<Option<Vec<usize>>>()
        .filter(|s| s.iter().all(|&d| u32::try_from(d).is_ok()))
        .ok_or_else(|| Error::shape("pad", format!("padding {shape:?} by {pads:?} overflows")))?;
    let y = output(enc, "pad", &out_shape, x.dtype())?;
    let n = y.numel();
    if n == 0 {
        return Ok(y);
    }
    let value = match x.dtype() {
        DType::U32 => value as u32,
        DType::I32 => (value as i32) as u32,
        _ => value.to_bits(),
    };
    let before: Vec<usize> = pads.iter().map(|p| p.0).collect();
    let last = *out_shape.last().unwrap_or(&1);
    let (inv, per_row) = runs(n / last, last);
    let p = PadParams {
        out_shape: right_align(&out_shape, 1),
        in_shape: right_align(shape, 1),
        before: right_align(&before, 0),
        n: inv as u32,
        runs: per_row as u32,
        value,
        _pad: 0,
    };
    let g = groups(enc, inv);
    enc.dispatch(&LAYOUT, "pad", &[], bytemuck::bytes_of(&p), &[x, &y], g)?;
    Ok(y)
}

/// `len` entries of dimension `axis` starting at `start`: `y[.., i, ..] = x[.., start + i, ..]`.
pub fn slice(
    enc: &mut Encoder,
    x: &Tensor,
    axis: usize,
    start: usize,
    len: usize,
) -> Result<Tensor> {
    check_elem("slice", x)?;
    let shape = x.shape();
    if axis >= shape.len() {
        return Err(Error::shape(
            "slice",
            format!("axis {axis} is out of range for {shape:?}"),
        ));
    }
    let dim = shape[axis];
    if start.checked_add(len).is_none_or(|end| end > dim) {
        return Err(Error::shape(
            "slice",
            format!(
                "[{start}, {start} + {len}) runs past dimension {axis} (size {dim}) of {shape:?}"
            ),
        ));
    }
    let mut out_shape = shape.to_vec();
    out_shape[axis] = len;
    let y = output(enc, "slice", &out_shape, x.dtype())?;
    let n = y.numel();
    if n == 0 {
        return Ok(y);
    }
    let inner: usize = shape[axis + 1..].iter().product();
    let span = len * inner;
    let (inv, per_row) = runs(n / span, span);
    let p = SliceParams {
        n: inv as u32,
        runs: per_row as u32,
        span: span as u32,
        in_row: (dim * inner) as u32,
        in_off: (start * inner) as u32,
    };
    let g = groups(enc, inv);
    enc.dispatch(&LAYOUT, "slice", &[], bytemuck::bytes_of(&p), &[x, &y], g)?;
    Ok(y)
}

/// Joins tensors along `axis`; all other dimensions and the element type must agree.
pub fn concat(enc: &mut Encoder, xs: &[&Tensor], axis: usize) -> Result<Tensor> {
    let Some(first) = xs.first() else {
        return Err(Error::shape(
            "concat",
            "needs at least one tensor, got none",
        ));
    };
    let shape = first.shape();
    if axis >= shape.len() {
        return Err(Error::shape(
            "concat",
            format!("axis {axis} is out of range for {shape:?}"),
        ));
    }
    let mut total = 0usize;
    for t in xs {
        check_elem("concat", t)?;
        let s = t.shape();
        let same_rest = s.len() == shape.len()
            && s.iter()
                .zip(shape)
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !same_rest || t.dtype() != first.dtype() {
            let all: Vec<String> = xs.iter().map(|t| format!("{t:?}")).collect();
            return Err(Error::shape(
                "concat",
                format!(
                    "inputs must share type and every dimension but {axis}: {}",
                    all.join(", ")
                ),
            ));
        }
        total += s[axis];
    }
    let mut out_shape = shape.to_vec();
    out_shape[axis] = total;
    let y = output(enc, "concat", &out_shape, first.dtype())?;
    if y.numel() == 0 {
        return Ok(y);
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    // Empty inputs contribute nothing; the rest go 7 to a dispatch.
    let mut parts = Vec::with_capacity(xs.len());
    let mut at = 0usize;
    for t in xs {
        let len = t.shape()[axis];
        if len > 0 {
            parts.push((*t, at));
        }
        at += len;
    }
    for chunk in parts.chunks(CONCAT_INPUTS) {
        let mut p = ConcatParams {
            span: [0; 8],
            at: [0; 8],
            first_run: [0; 8],
            n: 0,
            count: chunk.len() as u32,
            out_row: (total * inner) as u32,
            _pad: 0,
        };
        let mut per_row = 0;
        for (j, (t, at)) in chunk.iter().enumerate() {
            let span = t.shape()[axis] * inner;
            p.span[j] = span as u32;
            p.at[j] = (at * inner) as u32;
            p.first_run[j] = per_row as u32;
            per_row += span.div_ceil(RUN);
        }
        p.first_run[chunk.len()] = per_row as u32;
        let inv = outer * per_row;
        p.n = inv as u32;
        let mut bind: Vec<&Tensor> = (0..CONCAT_INPUTS)
            .map(|j| chunk.get(j).unwrap_or(&chunk[0]).0)
            .collect();
        bind.push(&y);
        let g = groups(enc, inv);
        enc.dispatch(&LAYOUT, "concat", &[], bytemuck::bytes_of(&p), &bind, g)?;
    }
    Ok(y)
}

/// Reorders the dimensions of `x` (up to 4-D): output dimension `k` is input dimension `perm[k]`,
/// as `torch.permute`.
pub fn permute(enc: &mut Encoder, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    check_elem("permute", x)?;
    let shape = x.shape();
    check_rank("permute", shape)?;
    let mut seen = [false; MAX_RANK];
    let valid = perm.len() == shape.len()
        && perm
            .iter()
            .all(|&p| p < shape.len() && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(Error::shape(
            "permute",
            format!("{perm:?} is not a permutation of the dimensions of {shape:?}"),
        ));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let y = output(enc, "permute", &out_shape, x.dtype())?;
    let n = y.numel();
    if n == 0 {
        return Ok(y);
    }
    let in_strides: Vec<usize> = (0..shape.len())
        .map(|d| shape[d + 1..].iter().product())
        .collect();
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let last = *out_shape.last().unwrap_or(&1);
    let (inv, per_row) = runs(n / last, last);
    let p = PermuteParams {
        out_shape: right_align(&out_shape, 1),
        strides: right_align(&strides, 0),
        n: inv as u32,
        runs: per_row as u32,
        _pad: [0; 2],
    };
    let g = groups(enc, inv);
    enc.dispatch(&LAYOUT, "permute", &[], bytemuck::bytes_of(&p), &[x, &y], g)?;
    Ok(y)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConcatTParams {
    n: u32,
    runs: u32,
    l: u32,
    ca: u32,
    cb: u32,
}

/// Two token tensors side by side per token, transposed to channel-major: `a` `[B, L, Ca]` and
/// `x` `[B, L, Cb]` give `y` `[B, Ca + Cb, L]` with `y[b, c, l] = a[b, l, c]` for `c < Ca`, else
/// `x[b, l, c − Ca]`: `permute(concat([a, x], 2), [0, 2, 1])` in one dispatch.
pub fn concat_transpose(enc: &mut Encoder, a: &Tensor, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "concat_transpose";
    check_elem(OP, a)?;
    check_elem(OP, x)?;
    let (sa, sx) = (a.shape(), x.shape());
    if sa.len() != 3 || sx.len() != 3 || sa[..2] != sx[..2] || a.dtype() != x.dtype() {
        return Err(Error::shape(
            OP,
            format!("needs [B, L, Ca] and [B, L, Cb] tensors of one dtype, got {a:?} and {x:?}"),
        ));
    }
    let (b, l, ca, cb) = (sa[0], sa[1], sa[2], sx[2]);
    let y = output(enc, OP, &[b, ca + cb, l], a.dtype())?;
    if y.numel() == 0 {
        return Ok(y);
    }
    let (inv, per_row) = runs(b * (ca + cb), l);
    let p = ConcatTParams {
        n: inv as u32,
        runs: per_row as u32,
        l: l as u32,
        ca: ca as u32,
        cb: cb as u32,
    };
    let g = groups(enc, inv);
    enc.dispatch(&LAYOUT, OP, &[], bytemuck::bytes_of(&p), &[a, x, &y], g)?;
    Ok(y)
}

/// SparseTT's learned positional encoding for an `h × w` map from `row: [Hmax, C/2]` and
/// `col: [Wmax, C/2]`: `y[i·w + j, c] = col[j, c]` for `c < C/2`, `row[i, c − C/2]` otherwise;
/// shape `[h·w, C]`.
pub fn embed_2d(
    enc: &mut Encoder,
    row: &Tensor,
    col: &Tensor,
    h: usize,
    w: usize,
) -> Result<Tensor> {
    check_elem("embed_2d", row)?;
    check_elem("embed_2d", col)?;
    let (rs, cs) = (row.shape(), col.shape());
    if rs.len() != 2 || cs.len() != 2 || rs[1] != cs[1] || row.dtype() != col.dtype() {
        return Err(Error::shape(
            "embed_2d",
            format!("row {row:?} and col {col:?} must be [Hmax, C/2] and [Wmax, C/2] of one type"),
        ));
    }
    if h > rs[0] || w > cs[0] {
        return Err(Error::shape(
            "embed_2d",
            format!(
                "a {h}×{w} map needs h ≤ {} (rows of row {rs:?}) and w ≤ {} (rows of col {cs:?})",
                rs[0], cs[0]
            ),
        ));
    }
    let half = rs[1];
    let tokens = h.checked_mul(w);
    let c = half.checked_mul(2);
    let (Some(tokens), Some(c)) = (tokens, c) else {
        return Err(Error::shape(
            "embed_2d",
            format!("{h}×{w} tokens of {rs:?} overflow"),
        ));
    };
    let y = output(enc, "embed_2d", &[tokens, c], row.dtype())?;
    let n = y.numel();
    if n == 0 {
        return Ok(y);
    }
    let (inv, per_row) = runs(2 * tokens, half);
    let p = EmbedParams {
        n: inv as u32,
        runs: per_row as u32,
        w: w as u32,
        half: half as u32,
    };
    let g = groups(enc, inv);
    enc.dispatch(
        &LAYOUT,
        "embed_2d",
        &[],
        bytemuck::bytes_of(&p),
        &[row, col, &y],
        g,
    )?;
    Ok(y)
}

// ---- backward ------------------------------------------------------------------------------
// Gradients are f32. Each backward returns a fresh gradient, or adds into `into` (the backward
// ops' convention) when given.

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StridedParams {
    shape: [u32; 4],
    src_st: [u32; 4],
    dst_st: [u32; 4],
    n: u32,
    runs: u32,
    src_off: u32,
    dst_off: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbedBwParams {
    n: u32,
    h: u32,
    w: u32,
    half: u32,
    row_elems: u32,
    _pad: [u32; 3],
}

fn check_grad(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::shape(op, format!("{what} must be f32, got {t:?}")));
    }
    check_elem(op, t)
}

/// A tensor a gradient is added into: f32, of `shape`, no buffer shared with `input`.
fn check_into(op: &'static str, t: &Tensor, shape: &[usize], input: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32
        || t.shape() != shape
        || std::sync::Arc::ptr_eq(t.pooled(), input.pooled())
    {
        return Err(Error::shape(
            op,
            format!("into {t:?} must be an f32 {shape:?} tensor apart from the input"),
        ));
    }
    Ok(())
}

fn grad_out(
    enc: &Encoder,
    op: &'static str,
    into: Option<&Tensor>,
    shape: &[usize],
    input: &Tensor,
) -> Result<Tensor> {
    match into {
        Some(t) => {
            check_into(op, t, shape, input)?;
            Ok(t.clone())
        }
        None => output(enc, op, shape, DType::F32),
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    (0..shape.len())
        .map(|d| shape[d + 1..].iter().product())
        .collect()
}

/// `dst[dst_off + Σ c·dst_st] (+)= src[src_off + Σ c·src_st]` over the (≤ 4-D) `shape`.
#[allow(clippy::too_many_arguments)]
fn strided(
    enc: &mut Encoder,
    src: &Tensor,
    dst: &Tensor,
    shape: &[usize],
    (src_st, src_off): (&[usize], usize),
    (dst_st, dst_off): (&[usize], usize),
    accum: bool,
) -> Result<()> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Ok(());
    }
    let last = *shape.last().unwrap_or(&1);
    let (inv, per_row) = runs(n / last, last);
    let p = StridedParams {
        shape: right_align(shape, 1),
        src_st: right_align(src_st, 0),
        dst_st: right_align(dst_st, 0),
        n: inv as u32,
        runs: per_row as u32,
        src_off: src_off as u32,
        dst_off: dst_off as u32,
    };
    let g = groups(enc, inv);
    let consts: &[(&str, f64)] = if accum { &[("BW_ACCUM", 1.0)] } else { &[] };
    enc.dispatch(
        &LAYOUT,
        "strided_bw",
        consts,
        bytemuck::bytes_of(&p),
        &[src, dst],
        g,
    )
}

/// Backward of [`pad`] for `dy` (the padded shape) of an input of `shape`: the crop
/// `dx[i] = dy[i + before]` (the gradient of the pad values is dropped). With `into`, added there.
pub fn pad_backward(
    enc: &mut Encoder,
    dy: &Tensor,
    shape: &[usize],
    pads: &[(usize, usize)],
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "pad_backward";
    check_grad(OP, "dy", dy)?;
    check_rank(OP, shape)?;
    let padded: Option<Vec<usize>> = (pads.len() == shape.len())
        .then(|| {
            shape
                .iter()
                .zip(pads)
                .map(|(&d, &(a, b))| d.checked_add(a)?.checked_add(b))
                .collect()
        })
        .flatten();
    if padded.as_deref() != Some(dy.shape()) {
        return Err(Error::shape(
            OP,
            format!("dy {dy:?} is not {shape:?} padded by {pads:?}"),
        ));
    }
    let dx = grad_out(enc, OP, into, shape, dy)?;
    let st = contiguous_strides(dy.shape());
    let off = pads.iter().zip(&st).map(|(p, s)| p.0 * s).sum();
    strided(
        enc,
        dy,
        &dx,
        shape,
        (&st, off),
        (&contiguous_strides(shape), 0),
        into.is_some(),
    )?;
    Ok(dx)
}

/// Backward of [`slice`] for `dy` (the slice) of an input of `shape`: `dx` is `dy` at
/// `[start, start + len)` of `axis` and zero elsewhere. With `into`, `dy` is added into that
/// region of it.
pub fn slice_backward(
    enc: &mut Encoder,
    dy: &Tensor,
    shape: &[usize],
    axis: usize,
    start: usize,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "slice_backward";
    check_grad(OP, "dy", dy)?;
    let ds = dy.shape();
    let fits = axis < shape.len()
        && ds.len() == shape.len()
        && (0..shape.len()).all(|d| d == axis || ds[d] == shape[d])
        && start
            .checked_add(ds[axis])
            .is_some_and(|end| end <= shape[axis]);
    if !fits {
        return Err(Error::shape(
            OP,
            format!("dy {dy:?} is not a slice of {shape:?} at {start} along axis {axis}"),
        ));
    }
    let (dim, len) = (shape[axis], ds[axis]);
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    match into {
        None => {
            let view = dy.reshape(&[outer, len, inner])?;
            let pads = [(0, 0), (start, dim - start - len), (0, 0)];
            let dx = pad(enc, &view, &pads, 0.0)?;
            dx.reshape(shape)
        }
        Some(t) => {
            check_into(OP, t, shape, dy)?;
            strided(
                enc,
                dy,
                t,
                &[outer, len * inner],
                (&[len * inner, 1], 0),
                (&[dim * inner, 1], start * inner),
                true,
            )?;
            Ok(t.clone())
        }
    }
}

/// Backward of [`concat`] for `dy` (the joined tensor) of inputs whose lengths along `axis` are
/// `sizes`: input j's gradient is `dy`'s slice at its place. `into` is empty (fresh gradients)
/// or has one entry per input; the gradients of named tensors are added into them.
pub fn concat_backward(
    enc: &mut Encoder,
    dy: &Tensor,
    sizes: &[usize],
    axis: usize,
    into: &[Option<&Tensor>],
) -> Result<Vec<Tensor>> {
    const OP: &str = "concat_backward";
    check_grad(OP, "dy", dy)?;
    let ds = dy.shape();
    let total = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
    if axis >= ds.len() || total != Some(ds[axis]) {
        return Err(Error::shape(
            OP,
            format!("dy {dy:?} does not join lengths {sizes:?} along axis {axis}"),
        ));
    }
    if !into.is_empty() && into.len() != sizes.len() {
        return Err(Error::shape(
            OP,
            format!(
                "into needs no entry or one per input ({}), got {}",
                sizes.len(),
                into.len()
            ),
        ));
    }
    let outer: usize = ds[..axis].iter().product();
    let inner: usize = ds[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for (j, &len) in sizes.iter().enumerate() {
        let mut shape = ds.to_vec();
        shape[axis] = len;
        let t = into.get(j).copied().flatten();
        let dx = grad_out(enc, OP, t, &shape, dy)?;
        strided(
            enc,
            dy,
            &dx,
            &[outer, len * inner],
            (&[ds[axis] * inner, 1], at * inner),
            (&[len * inner, 1], 0),
            t.is_some(),
        )?;
        out.push(dx);
        at += len;
    }
    Ok(out)
}

/// Backward of [`permute`] for `dy` (the permuted tensor): `dx = permute(dy, perm⁻¹)`, of the
/// input's shape (`shape[perm[k]] = dy.shape[k]`). With `into`, added there.
pub fn permute_backward(
    enc: &mut Encoder,
    dy: &Tensor,
    perm: &[usize],
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "permute_backward";
    check_grad(OP, "dy", dy)?;
    let ds = dy.shape();
    check_rank(OP, ds)?;
    let mut inv = [usize::MAX; MAX_RANK];
    let valid = perm.len() == ds.len()
        && perm
            .iter()
            .enumerate()
            .all(|(k, &p)| p < ds.len() && std::mem::replace(&mut inv[p], k) == usize::MAX);
    if !valid {
        return Err(Error::shape(
            OP,
            format!("{perm:?} is not a permutation of the dimensions of dy {dy:?}"),
        ));
    }
    let shape: Vec<usize> = (0..ds.len()).map(|d| ds[inv[d]]).collect();
    let dx = grad_out(enc, OP, into, &shape, dy)?;
    // Walk dx in order (contiguous writes, and reads for the accumulation).
    let dst = contiguous_strides(ds);
    let src_st: Vec<usize> = (0..ds.len()).map(|d| dst[inv[d]]).collect();
    strided(
        enc,
        dy,
        &dx,
        &shape,
        (&src_st, 0),
        (&contiguous_strides(&shape), 0),
        into.is_some(),
    )?;
    Ok(dx)
}

/// Backward of [`embed_2d`] for `dpos` (`[h·w, C]`) and tables of `hmax` and `wmax` rows:
/// `drow[i, c] = Σ_j dpos[i·w + j, C/2 + c]`, `dcol[j, c] = Σ_i dpos[i·w + j, c]` (ascending
/// order, deterministic), zero for rows the map does not reach. Returns `(drow, dcol)`
/// (`[hmax, C/2]`, `[wmax, C/2]`); `into_row` / `into_col` are added into when given.
#[allow(clippy::too_many_arguments)]
pub fn embed_2d_backward(
    enc: &mut Encoder,
    dpos: &Tensor,
    hmax: usize,
    wmax: usize,
    h: usize,
    w: usize,
    into_row: Option<&Tensor>,
    into_col: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "embed_2d_backward";
    check_grad(OP, "dpos", dpos)?;
    let s = dpos.shape();
    if s.len() != 2
        || Some(s[0]) != h.checked_mul(w)
        || !s[1].is_multiple_of(2)
        || h > hmax
        || w > wmax
    {
        return Err(Error::shape(
            OP,
            format!(
                "an {h}×{w} map (h ≤ {hmax}, w ≤ {wmax}) needs f32 dpos [{}, C] with C even, \
                 got {dpos:?}",
                h * w
            ),
        ));
    }
    let half = s[1] / 2;
    let accum = into_row.is_some() || into_col.is_some();
    // One accumulating dispatch serves both tables, so a table not given starts from zeros.
    let table = |t: Option<&Tensor>, rows: usize| match t {
        Some(t) => {
            check_into(OP, t, &[rows, half], dpos)?;
            Ok(t.clone())
        }
        None if accum => enc.gpu().zeros(&[rows, half]),
        None => output(enc, OP, &[rows, half], DType::F32),
    };
    let drow = table(into_row, hmax)?;
    let dcol = table(into_col, wmax)?;
    let n = (hmax + wmax)
        .checked_mul(half)
        .filter(|&n| u32::try_from(n).is_ok())
        .ok_or_else(|| Error::shape(OP, format!("tables of {hmax} + {wmax} rows overflow")))?;
    if n == 0 {
        return Ok((drow, dcol));
    }
    let p = EmbedBwParams {
        n: n as u32,
        h: h as u32,
        w: w as u32,
        half: half as u32,
        row_elems: (hmax * half) as u32,
        _pad: [0; 3],
    };
    let consts: &[(&str, f64)] = if accum { &[("BW_ACCUM", 1.0)] } else { &[] };
    let g = groups(enc, n);
    enc.dispatch(
        &LAYOUT,
        "embed_2d_bw",
        consts,
        bytemuck::bytes_of(&p),
        &[dpos, &drow, &dcol],
        g,
    )?;
    Ok((drow, dcol))
}

/// Plain-loop references, generic over the element so tests can compare bit patterns.
pub mod cpu {
    /// Row-major strides of `shape`.
    fn strides(shape: &[usize]) -> Vec<usize> {
        (0..shape.len())
            .map(|d| shape[d + 1..].iter().product())
            .collect()
    }

    /// Row-major coordinates of linear index `i`.
    fn coords(mut i: usize, shape: &[usize]) -> Vec<usize> {
        let mut c = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            c[d] = i % shape[d];
            i /= shape[d];
        }
        c
    }

    pub fn pad<T: Copy>(x: &[T], shape: &[usize], pads: &[(usize, usize)], value: T) -> Vec<T> {
        let out_shape: Vec<usize> = shape.iter().zip(pads).map(|(d, p)| d + p.0 + p.1).collect();
        let st = strides(shape);
        let n: usize = out_shape.iter().product();
        (0..n)
            .map(|o| {
                let c = coords(o, &out_shape);
                let mut idx = 0;
                for d in 0..shape.len() {
                    if c[d] < pads[d].0 || c[d] >= pads[d].0 + shape[d] {
                        return value;
                    }
                    idx += (c[d] - pads[d].0) * st[d];
                }
                x[idx]
            })
            .collect()
    }

    pub fn slice<T: Copy>(
        x: &[T],
        shape: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Vec<T> {
        let mut out_shape = shape.to_vec();
        out_shape[axis] = len;
        let st = strides(shape);
        let n: usize = out_shape.iter().product();
        (0..n)
            .map(|o| {
                let mut c = coords(o, &out_shape);
                c[axis] += start;
                x[c.iter().zip(&st).map(|(a, b)| a * b).sum::<usize>()]
            })
            .collect()
    }

    /// Concatenation of `(data, shape)` pairs along `axis`.
    pub fn concat<T: Copy>(xs: &[(&[T], &[usize])], axis: usize) -> Vec<T> {
        let shape = xs[0].1;
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut out = Vec::new();
        for o in 0..outer {
            for (data, s) in xs {
                let block = s[axis] * inner;
                out.extend_from_slice(&data[o * block..(o + 1) * block]);
            }
        }
        out
    }

    pub fn permute<T: Copy>(x: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let st = strides(shape);
        let n: usize = out_shape.iter().product();
        (0..n)
            .map(|o| {
                let c = coords(o, &out_shape);
                x[c.iter().zip(perm).map(|(ck, &p)| ck * st[p]).sum::<usize>()]
            })
            .collect()
    }

    /// `row` is `[Hmax, half]`, `col` is `[Wmax, half]`; returns `[h·w, 2·half]`.
    /// `y[b, c, l] = a[b, l, c]` for `c < ca`, else `x[b, l, c − ca]`; `a` is `[b, l, ca]`,
    /// `x` `[b, l, cb]`, `y` `[b, ca + cb, l]`.
    pub fn concat_transpose<T: Copy>(
        a: &[T],
        x: &[T],
        b: usize,
        l: usize,
        ca: usize,
        cb: usize,
    ) -> Vec<T> {
        let mut y = Vec::with_capacity(b * (ca + cb) * l);
        for bi in 0..b {
            for c in 0..ca + cb {
                for li in 0..l {
                    y.push(if c < ca {
                        a[(bi * l + li) * ca + c]
                    } else {
                        x[(bi * l + li) * cb + c - ca]
                    });
                }
            }
        }
        y
    }

    pub fn embed_2d<T: Copy>(row: &[T], col: &[T], half: usize, h: usize, w: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(h * w * 2 * half);
        for i in 0..h {
            for j in 0..w {
                out.extend_from_slice(&col[j * half..(j + 1) * half]);
                out.extend_from_slice(&row[i * half..(i + 1) * half]);
            }
        }
        out
    }

    // ---- backward references: each forward's loop with the copy reversed into an add --------

    /// Adjoint of [`pad`]: the padded gradient `dy` cropped back to `shape`.
    pub fn pad_backward<T: Copy + Default + std::ops::AddAssign>(
        dy: &[T],
        shape: &[usize],
        pads: &[(usize, usize)],
    ) -> Vec<T> {
        let out_shape: Vec<usize> = shape.iter().zip(pads).map(|(d, p)| d + p.0 + p.1).collect();
        let st = strides(shape);
        let mut dx = vec![T::default(); shape.iter().product()];
        for (o, &g) in dy.iter().enumerate() {
            let c = coords(o, &out_shape);
            let inside = (0..shape.len()).all(|d| c[d] >= pads[d].0 && c[d] < pads[d].0 + shape[d]);
            if inside {
                let idx: usize = (0..shape.len()).map(|d| (c[d] - pads[d].0) * st[d]).sum();
                dx[idx] += g;
            }
        }
        dx
    }

    /// Adjoint of [`slice`]: `dy` placed at `start` along `axis` of a zero tensor of `shape`.
    pub fn slice_backward<T: Copy + Default + std::ops::AddAssign>(
        dy: &[T],
        shape: &[usize],
        axis: usize,
        start: usize,
        len: usize,
    ) -> Vec<T> {
        let mut out_shape = shape.to_vec();
        out_shape[axis] = len;
        let st = strides(shape);
        let mut dx = vec![T::default(); shape.iter().product()];
        for (o, &g) in dy.iter().enumerate() {
            let mut c = coords(o, &out_shape);
            c[axis] += start;
            dx[c.iter().zip(&st).map(|(a, b)| a * b).sum::<usize>()] += g;
        }
        dx
    }

    /// Adjoint of [`concat`]: the gradients of inputs of lengths `sizes` along `axis`.
    pub fn concat_backward<T: Copy>(
        dy: &[T],
        shape: &[usize],
        sizes: &[usize],
        axis: usize,
    ) -> Vec<Vec<T>> {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut out: Vec<Vec<T>> = sizes.iter().map(|_| Vec::new()).collect();
        let mut it = dy.iter();
        for _ in 0..outer {
            for (j, &len) in sizes.iter().enumerate() {
                out[j].extend(it.by_ref().take(len * inner).copied());
            }
        }
        out
    }

    /// Adjoint of [`permute`]: `dy` (the permuted shape) scattered back to `shape`.
    pub fn permute_backward<T: Copy + Default + std::ops::AddAssign>(
        dy: &[T],
        shape: &[usize],
        perm: &[usize],
    ) -> Vec<T> {
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let st = strides(shape);
        let mut dx = vec![T::default(); dy.len()];
        for (o, &g) in dy.iter().enumerate() {
            let c = coords(o, &out_shape);
            dx[c.iter().zip(perm).map(|(ck, &p)| ck * st[p]).sum::<usize>()] += g;
        }
        dx
    }

    /// Adjoint of [`embed_2d`]: `(drow [hmax, half], dcol [wmax, half])` from `dpos`
    /// (`[h·w, 2·half]`), each table element summed over the map in ascending order.
    pub fn embed_2d_backward<T: Copy + Default + std::ops::AddAssign>(
        dpos: &[T],
        half: usize,
        [hmax, wmax]: [usize; 2],
        h: usize,
        w: usize,
    ) -> (Vec<T>, Vec<T>) {
        let mut drow = vec![T::default(); hmax * half];
        let mut dcol = vec![T::default(); wmax * half];
        for i in 0..h {
            for c in 0..half {
                for j in 0..w {
                    drow[i * half + c] += dpos[(i * w + j) * 2 * half + half + c];
                }
            }
        }
        for j in 0..w {
            for c in 0..half {
                for i in 0..h {
                    dcol[j * half + c] += dpos[(i * w + j) * 2 * half + c];
                }
            }
        }
        (drow, dcol)
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &crate::Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
    let mut push = |kernel: &str, shape: String, ms: f64, elems: usize| {
        rows.push(crate::bench::Row {
            kernel: kernel.into(),
            shape,
            median_ms: ms,
            flops: None,
            bytes: Some((8 * elems) as f64),
        })
    };
    // Stage-0 patch embedding output of a search frame, NCHW → tokens.
    let s = [1usize, 96, 73, 73];
    let n: usize = s.iter().product();
    let x = gpu.upload(&s, &crate::prng::SplitMix64::new(3).vec_f32(n, -1.0, 1.0))?;
    let ms = crate::bench::median_ms(gpu, 2, 20, |enc| {
        permute(enc, &x, &[0, 2, 3, 1]).map(|_| ())
    })?;
    push("permute", format!("{s:?} → [0, 2, 3, 1]"), ms, n);
    // Swin's pad of the 73×73 token map to 77×77 before windowing.
    let t = x.reshape(&[1, 73, 73, 96])?;
    let ms = crate::bench::median_ms(gpu, 2, 20, |enc| {
        pad(enc, &t, &[(0, 0), (0, 4), (0, 4), (0, 0)], 0.0).map(|_| ())
    })?;
    push(
        "pad",
        "[1, 73, 73, 96] → [1, 77, 77, 96]".into(),
        ms,
        77 * 77 * 96,
    );
    // The neck's output: decoder tokens and adjusted search features on channels.
    let a = gpu.upload(&[1, 256, 19, 19], &vec![1.0; 256 * 361])?;
    let ms = crate::bench::median_ms(gpu, 2, 20, |enc| concat(enc, &[&a, &a], 1).map(|_| ()))?;
    push("concat", "2 × [1, 256, 19, 19] on 1".into(), ms, 512 * 361);
    Ok(())
}
