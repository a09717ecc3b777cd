//! LayerNorm over the last dimension (PyTorch semantics: biased variance, `eps` inside the square
//! root) and the transformer neck's fused post-norm residual `LN(x + y)`, with their backward.
//! Shader: `shaders/norm.wgsl`.

use crate::gpu::{DType, Encoder, Tensor, Variant};
use crate::{shader, Error, Result};

shader!(NORM, "norm.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    eps: f32,
    hw: u32,
}

/// Rows per workgroup for the register entry points (`RW`, one invocation per row): large groups
/// amortise the per-group cost, small ones keep both cores of a CPU adapter busy on short inputs.
pub(crate) fn rows_per_group(rows: usize) -> u32 {
    match rows {
        0..128 => 8,
        128..1024 => 16,
        _ => 64,
    }
}

/// Threads per row for the tiled entry point: about four elements each, a power of two in 32..=256.
pub(crate) fn threads_per_row(n: usize) -> u32 {
    n.div_ceil(4).next_power_of_two().clamp(32, 256) as u32
}

/// `y = (x − mean) / sqrt(var + eps) · weight + bias` over the last dimension of `x` (`[..., C]`),
/// with `weight` and `bias` of shape `[C]`; mean and biased variance per row.
pub fn layer_norm(
    enc: &mut Encoder,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let v = enc.gpu().variant();
    layer_norm_with(enc, x, weight, bias, eps, v)
}

/// [`layer_norm`] with an explicit kernel variant.
pub fn layer_norm_with(
    enc: &mut Encoder,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
    variant: Variant,
) -> Result<Tensor> {
    run(
        enc,
        "layer_norm",
        x,
        None,
        weight,
        bias,
        eps,
        variant,
        false,
    )
}

/// LayerNorm over the channels of an NCHW map, written as tokens: `x` `[N, C, H, W]` →
/// `[N, H·W, C]` = `layer_norm(permute(x, [0, 2, 3, 1]))` in one dispatch (Swin's patch
/// embedding: convolution output → normalised tokens).
pub fn layer_norm_nchw(
    enc: &mut Encoder,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let v = enc.gpu().variant();
    layer_norm_nchw_with(enc, x, weight, bias, eps, v)
}

/// [`layer_norm_nchw`] with an explicit kernel variant.
pub fn layer_norm_nchw_with(
    enc: &mut Encoder,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
    variant: Variant,
) -> Result<Tensor> {
    run(
        enc,
        "layer_norm_nchw",
        x,
        None,
        weight,
        bias,
        eps,
        variant,
        true,
    )
}

/// `LayerNorm(x + y)` in one dispatch (post-norm residual): `x` and `y` of the same shape
/// `[..., C]`, `weight` and `bias` of shape `[C]`.
pub fn add_layer_norm(
    enc: &mut Encoder,
    x: &Tensor,
    y: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let v = enc.gpu().variant();
    add_layer_norm_with(enc, x, y, weight, bias, eps, v)
}

/// [`add_layer_norm`] with an explicit kernel variant.
pub fn add_layer_norm_with(
    enc: &mut Encoder,
    x: &Tensor,
    y: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
    variant: Variant,
) -> Result<Tensor> {
    run(
        enc,
        "add_layer_norm",
        x,
        Some(y),
        weight,
        bias,
        eps,
        variant,
        false,
    )
}

/// `nchw`: `x` is `[N, C, H, W]`, normalised over C and written as tokens `[N, H·W, C]`.
#[allow(clippy::too_many_arguments)]
fn run(
    enc: &mut Encoder,
    op: &'static str,
    x: &Tensor,
    y: Option<&Tensor>,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
    variant: Variant,
    nchw: bool,
) -> Result<Tensor> {
    for (name, t) in [
        ("x", Some(x)),
        ("y", y),
        ("weight", Some(weight)),
        ("bias", Some(bias)),
    ] {
        if let Some(t) = t {
            if t.dtype() != DType::F32 {
                return Err(Error::shape(op, format!("{name} must be f32, got {t:?}")));
            }
        }
    }
    let shape = x.shape();
    let (c, hw, out_shape) = if nchw {
        if shape.len() != 4 {
            return Err(Error::shape(
                op,
                format!("x must be [N, C, H, W], got {shape:?}"),
            ));
        }
        let hw = shape[2] * shape[3];
        (shape[1], hw, vec![shape[0], hw, shape[1]])
    } else {
        let Some(&c) = shape.last() else {
            return Err(Error::shape(
                op,
                "x must have at least one dimension, got a scalar []",
            ));
        };
        (c, 0, shape.to_vec())
    };
    if let Some(y) = y {
        if y.shape() != shape {
            return Err(Error::shape(
                op,
                format!("x {shape:?} and y {:?} must have the same shape", y.shape()),
            ));
        }
    }
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if t.shape() != [c] {
            return Err(Error::shape(
                op,
                format!("{name} {:?} must be [{c}] for x {shape:?}", t.shape()),
            ));
        }
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::shape(
            op,
            format!("eps must be finite and ≥ 0, got {eps}"),
        ));
    }
    let n = x.numel();
    if u32::try_from(n).is_err() {
        return Err(Error::shape(
            op,
            format!("x {shape:?} has {n} elements, over u32 indexing"),
        ));
    }
    let gpu = enc.gpu();
    let out = gpu.empty(op, &out_shape, DType::F32)?;
    if n == 0 {
        return Ok(out);
    }
    let rows = n / c;
    let p = Params {
        rows: rows as u32,
        c: c as u32,
        eps,
        hw: hw as u32,
    };
    let add = if y.is_some() { 1.0 } else { 0.0 };
    let (entry, constant, groups) = match variant {
        Variant::Register => {
            let rw = rows_per_group(rows);
            (
                "ln_register",
                ("RW", rw as f64),
                gpu.grid((rows as u64).div_ceil(rw as u64)),
            )
        }
        Variant::Tiled => (
            "ln_tiled",
            ("TW", threads_per_row(c) as f64),
            gpu.grid(rows as u64),
        ),
    };
    enc.dispatch(
        &NORM,
        entry,
        &[
            ("ADD", add),
            ("NCHW", if nchw { 1.0 } else { 0.0 }),
            constant,
        ],
        bytemuck::bytes_of(&p),
        &[x, y.unwrap_or(x), weight, bias, &out],
        groups,
    )?;
    Ok(out)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ParamsBw {
    rows: u32,
    c: u32,
    chunk: u32,
    chunks: u32,
}

/// Existing tensors the gradients of [`layer_norm_backward`] are added into (`None`: a fresh
/// tensor).
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerNormInto<'a> {
    pub dx: Option<&'a Tensor>,
    pub dweight: Option<&'a Tensor>,
    pub dbias: Option<&'a Tensor>,
}

/// Gradients of a LayerNorm: `dx` has the input's shape, `dweight` and `dbias` are `[C]`.
#[derive(Debug)]
pub struct LayerNormGrads {
    pub dx: Tensor,
    pub dweight: Tensor,
    pub dbias: Tensor,
}

/// Backward of [`layer_norm`] for the upstream `dy` (shape of `x`): `dx`, `dweight = Σ dy·x̂`,
/// `dbias = Σ dy` (sums over all rows). The statistics are recomputed from `x`; the bias is not
/// needed. Gradients named in `into` are added into those tensors.
pub fn layer_norm_backward(
    enc: &mut Encoder,
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    eps: f32,
    into: &LayerNormInto,
) -> Result<LayerNormGrads> {
    let v = enc.gpu().variant();
    layer_norm_backward_with(enc, x, weight, dy, eps, into, v)
}

/// [`layer_norm_backward`] with an explicit kernel variant.
pub fn layer_norm_backward_with(
    enc: &mut Encoder,
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    eps: f32,
    into: &LayerNormInto,
    variant: Variant,
) -> Result<LayerNormGrads> {
    run_backward(
        enc,
        "layer_norm_backward",
        x,
        None,
        weight,
        dy,
        eps,
        into,
        variant,
    )
}

/// Backward of [`add_layer_norm`] (`LN(x + y)`): `dx` is the gradient of the sum, so of `x` and
/// of `y` alike.
pub fn add_layer_norm_backward(
    enc: &mut Encoder,
    x: &Tensor,
    y: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    eps: f32,
    into: &LayerNormInto,
) -> Result<LayerNormGrads> {
    let v = enc.gpu().variant();
    add_layer_norm_backward_with(enc, x, y, weight, dy, eps, into, v)
}

/// [`add_layer_norm_backward`] with an explicit kernel variant.
#[allow(clippy::too_many_arguments)]
pub fn add_layer_norm_backward_with(
    enc: &mut Encoder,
    x: &Tensor,
    y: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    eps: f32,
    into: &LayerNormInto,
    variant: Variant,
) -> Result<LayerNormGrads> {
    run_backward(
        enc,
        "add_layer_norm_backward",
        x,
        Some(y),
        weight,
        dy,
        eps,
        into,
        variant,
    )
}

/// Backward of [`layer_norm_nchw`] for `dy` (`[N, H·W, C]`, token layout) of `x` (`[N, C, H, W]`):
/// the tokens are recomputed (`permute(x, [0, 2, 3, 1])`), [`layer_norm_backward`] runs on them,
/// and the token gradient goes back to NCHW with `permute_backward`: `dx` is `[N, C, H, W]`,
/// `dweight`/`dbias` are `[C]`. Gradients named in `into` are added into those tensors.
pub fn layer_norm_nchw_backward(
    enc: &mut Encoder,
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    eps: f32,
    into: &LayerNormInto,
) -> Result<LayerNormGrads> {
    const OP: &str = "layer_norm_nchw_backward";
    use crate::ops::layout::{permute, permute_backward};
    let s = x.shape();
    if s.len() != 4 || x.dtype() != DType::F32 {
        return Err(Error::shape(
            OP,
            format!("x must be an f32 [N, C, H, W] map, got {x:?}"),
        ));
    }
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    if dy.shape() != [n, h * w, c] || dy.dtype() != DType::F32 {
        return Err(Error::shape(
            OP,
            format!("x {x:?} needs f32 dy [{n}, {}, {c}], got {dy:?}", h * w),
        ));
    }
    if let Some(t) = into.dx {
        check_into(OP, "dx", t, x.numel(), &[x, weight, dy])?;
    }
    let tokens = permute(enc, x, &[0, 2, 3, 1])?.reshape(&[n, h * w, c])?;
    let params_only = LayerNormInto {
        dx: None,
        dweight: into.dweight,
        dbias: into.dbias,
    };
    let g = layer_norm_backward(enc, &tokens, weight, dy, eps, &params_only)?;
    let into_dx = into.dx.map(|t| t.reshape(s)).transpose()?;
    let dx = permute_backward(
        enc,
        &g.dx.reshape(&[n, h, w, c])?,
        &[0, 2, 3, 1],
        into_dx.as_ref(),
    )?;
    Ok(LayerNormGrads {
        dx,
        dweight: g.dweight,
        dbias: g.dbias,
    })
}

/// A tensor a gradient is added into: f32, `numel` elements, no buffer shared with an input.
fn check_into(
    op: &'static str,
    what: &str,
    t: &Tensor,
    numel: usize,
    inputs: &[&Tensor],
) -> Result<()> {
    let shared = inputs
        .iter()
        .any(|i| std::sync::Arc::ptr_eq(i.pooled(), t.pooled()));
    if t.dtype() != DType::F32 || t.numel() != numel || shared {
        return Err(Error::shape(
            op,
            format!(
                "into.{what} {t:?} must be an f32 tensor of {numel} elements apart from the inputs"
            ),
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_backward(
    enc: &mut Encoder,
    op: &'static str,
    x: &Tensor,
    y: Option<&Tensor>,
    weight: &Tensor,
    dy: &Tensor,
    eps: f32,
    into: &LayerNormInto,
    variant: Variant,
) -> Result<LayerNormGrads> {
    // The forward's checks cover x, y, weight and eps (weight doubles for the unused bias).
    let shape = x.shape();
    if shape.is_empty() {
        return Err(Error::shape(
            op,
            "x must have at least one dimension, got a scalar []",
        ));
    }
    for (name, t) in [
        ("x", Some(x)),
        ("y", y),
        ("weight", Some(weight)),
        ("dy", Some(dy)),
    ] {
        if let Some(t) = t {
            if t.dtype() != DType::F32 {
                return Err(Error::shape(op, format!("{name} must be f32, got {t:?}")));
            }
        }
    }
    let c = shape[shape.len() - 1];
    for (name, t) in [("y", y), ("dy", Some(dy))] {
        if let Some(t) = t {
            if t.shape() != shape {
                return Err(Error::shape(
                    op,
                    format!(
                        "x {shape:?} and {name} {:?} must have the same shape",
                        t.shape()
                    ),
                ));
            }
        }
    }
    if weight.shape() != [c] {
        return Err(Error::shape(
            op,
            format!("weight {:?} must be [{c}] for x {shape:?}", weight.shape()),
        ));
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::shape(
            op,
            format!("eps must be finite and ≥ 0, got {eps}"),
        ));
    }
    let n = x.numel();
    if u32::try_from(n.max(3 * (n / c.max(1)))).is_err() {
        return Err(Error::shape(
            op,
            format!("x {shape:?} has {n} elements, over u32 indexing"),
        ));
    }
    let inputs: Vec<&Tensor> = [Some(x), y, Some(weight), Some(dy)]
        .into_iter()
        .flatten()
        .collect();
    if let Some(t) = into.dx {
        check_into(op, "dx", t, n, &inputs)?;
    }
    for (what, t) in [("dweight", into.dweight), ("dbias", into.dbias)] {
        if let Some(t) = t {
            check_into(op, what, t, c, &inputs)?;
        }
    }
    let gpu = enc.gpu();
    let fresh = |t: Option<&Tensor>, shape: &[usize]| match t {
        Some(t) => Ok(t.clone()),
        None => gpu.empty(op, shape, DType::F32),
    };
    let dx = fresh(into.dx, shape)?;
    let rows = n.checked_div(c).unwrap_or(0);
    if rows == 0 || c == 0 {
        // No rows: the parameter gradients are empty sums.
        let zero = |t: Option<&Tensor>| match t {
            Some(t) => Ok(t.clone()),
            None => gpu.zeros(&[c]),
        };
        return Ok(LayerNormGrads {
            dx,
            dweight: zero(into.dweight)?,
            dbias: zero(into.dbias)?,
        });
    }
    let stats = gpu.empty(op, &[rows, 3], DType::F32)?;
    let p = Params {
        rows: rows as u32,
        c: c as u32,
        eps,
        hw: 0,
    };
    let add = if y.is_some() { 1.0 } else { 0.0 };
    let (entry, constant, groups) = match variant {
        Variant::Register => {
            let rw = rows_per_group(rows);
            (
                "ln_backward_register",
                ("RW", rw as f64),
                gpu.grid((rows as u64).div_ceil(rw as u64)),
            )
        }
        Variant::Tiled => (
            "ln_backward_tiled",
            ("TW", threads_per_row(c) as f64),
            gpu.grid(rows as u64),
        ),
    };
    let yb = y.unwrap_or(x);
    enc.dispatch(
        &NORM,
        entry,
        &[
            ("ADD", add),
            constant,
            ("ACCUM", into.dx.is_some() as u8 as f64),
        ],
        bytemuck::bytes_of(&p),
        &[x, yb, weight, dy, &dx, &stats],
        groups,
    )?;

    // dweight and dbias: column sums over chunks of rows. One chunk writes (or adds) the results
    // directly when both go the same way; otherwise the chunks' partial sums are summed (and
    // added where asked) by the reduce kernel.
    let (chunk, chunks) = crate::ops::reduce::split(rows, c);
    let direct = chunks == 1 && into.dweight.is_some() == into.dbias.is_some();
    let (pw, pb) = if direct {
        (fresh(into.dweight, &[c])?, fresh(into.dbias, &[c])?)
    } else {
        (
            gpu.empty(op, &[chunks, c], DType::F32)?,
            gpu.empty(op, &[chunks, c], DType::F32)?,
        )
    };
    let q = ParamsBw {
        rows: rows as u32,
        c: c as u32,
        chunk: chunk as u32,
        chunks: chunks as u32,
    };
    enc.dispatch(
        &NORM,
        "ln_backward_params",
        &[
            ("ADD", add),
            ("ACCUM", (direct && into.dweight.is_some()) as u8 as f64),
        ],
        bytemuck::bytes_of(&q),
        &[x, yb, &stats, dy, &pw, &pb],
        gpu.grid(((c * chunks) as u64).div_ceil(64)),
    )?;
    if direct {
        return Ok(LayerNormGrads {
            dx,
            dweight: pw,
            dbias: pb,
        });
    }
    use crate::ops::reduce::{reduce, Axes, Reduce};
    let axes = Axes {
        outer: chunks,
        mid: c,
        inner: 1,
    };
    let dweight = reduce(enc, Reduce::Sum, &pw, None, axes, into.dweight)?;
    let dbias = reduce(enc, Reduce::Sum, &pb, None, axes, into.dbias)?;
    Ok(LayerNormGrads { dx, dweight, dbias })
}

/// Plain-loop references (statistics in f64).
pub mod cpu {
    /// LayerNorm of each `c`-long row in f64 (the forward the backward is differentiated against).
    pub fn layer_norm_f64(x: &[f64], c: usize, weight: &[f64], bias: &[f64], eps: f64) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(c) {
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|&v| (v - mean).powi(2)).sum::<f64>() / c as f64;
            let r = 1.0 / (var + eps).sqrt();
            for (i, &v) in row.iter().enumerate() {
                out.push((v - mean) * r * weight[i] + bias[i]);
            }
        }
        out
    }

    /// `(dx, dweight, dbias)` of LayerNorm over `c`-long rows for the upstream `dy`:
    /// with x̂ = (x − μ)·r and g = dy·w, `dx = r·(g − mean(g) − x̂·mean(g·x̂))`,
    /// `dweight = Σ_rows dy·x̂`, `dbias = Σ_rows dy`.
    pub fn layer_norm_backward(
        x: &[f64],
        c: usize,
        weight: &[f64],
        dy: &[f64],
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut dx = Vec::with_capacity(x.len());
        let mut dw = vec![0.0; c];
        let mut db = vec![0.0; c];
        for (row, g) in x.chunks(c).zip(dy.chunks(c)) {
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|&v| (v - mean).powi(2)).sum::<f64>() / c as f64;
            let r = 1.0 / (var + eps).sqrt();
            let xh: Vec<f64> = row.iter().map(|&v| (v - mean) * r).collect();
            let gw: Vec<f64> = g.iter().zip(weight).map(|(a, b)| a * b).collect();
            let mg = gw.iter().sum::<f64>() / c as f64;
            let mgx = gw.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / c as f64;
            for i in 0..c {
                dx.push(r * (gw[i] - mg - xh[i] * mgx));
                dw[i] += g[i] * xh[i];
                db[i] += g[i];
            }
        }
        (dx, dw, db)
    }

    /// LayerNorm of each `c`-long row of `x`.
    pub fn layer_norm(x: &[f32], c: usize, weight: &[f32], bias: &[f32], eps: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(c) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
            let r = 1.0 / (var + eps as f64).sqrt();
            for (i, &v) in row.iter().enumerate() {
                out.push(((v as f64 - mean) * r * weight[i] as f64 + bias[i] as f64) as f32);
            }
        }
        out
    }

    /// LayerNorm of `x + y` (the sum rounded to f32 first, as the GPU and PyTorch do).
    pub fn add_layer_norm(
        x: &[f32],
        y: &[f32],
        c: usize,
        weight: &[f32],
        bias: &[f32],
        eps: f32,
    ) -> Vec<f32> {
        let s: Vec<f32> = x.iter().zip(y).map(|(a, b)| a + b).collect();
        layer_norm(&s, c, weight, bias, eps)
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &crate::Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
    // Swin stage 0 on a search frame (73·73 tokens of 96) and the neck decoder (19·19 of 256).
    for (r, c) in [(5329usize, 96usize), (361, 256)] {
        let x = gpu.upload(
            &[r, c],
            &crate::prng::SplitMix64::new(1).vec_f32(r * c, -1.0, 1.0),
        )?;
        let w = gpu.upload(&[c], &vec![1.0; c])?;
        let b = gpu.upload(&[c], &vec![0.0; c])?;
        for v in Variant::ALL {
            let ms = crate::bench::median_ms(gpu, 2, 20, |enc| {
                layer_norm_with(enc, &x, &w, &b, 1e-5, v).map(|_| ())
            })?;
            rows.push(crate::bench::Row {
                kernel: format!("layer_norm {}", v.name()),
                shape: format!("[{r}, {c}]"),
                median_ms: ms,
                flops: None,
                bytes: Some((8 * r * c) as f64),
            });
        }
        let ms = crate::bench::median_ms(gpu, 2, 20, |enc| {
            add_layer_norm_with(enc, &x, &x, &w, &b, 1e-5, gpu.variant()).map(|_| ())
        })?;
        rows.push(crate::bench::Row {
            kernel: format!("add_layer_norm {}", gpu.variant().name()),
            shape: format!("[{r}, {c}]"),
            median_ms: ms,
            flops: None,
            bytes: Some((12 * r * c) as f64),
        });
    }
    Ok(())
}
