//! Row softmax over the last dimension, max-subtracted, and its backward. Attention kernels fuse
//! their own softmax; this one serves everything else. Shader: `shaders/softmax.wgsl`.

use crate::gpu::{DType, Encoder, Tensor, Variant};
use crate::ops::norm::{rows_per_group, threads_per_row};
use crate::{shader, Error, Result};

shader!(SOFTMAX, "softmax.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
}

/// `y[.., i] = exp(x[.., i] − m) / Σⱼ exp(x[.., j] − m)` with `m` the row maximum, for `x` of
/// shape `[..., n]`.
pub fn softmax(enc: &mut Encoder, x: &Tensor) -> Result<Tensor> {
    let v = enc.gpu().variant();
    softmax_with(enc, x, v)
}

/// [`softmax`] with an explicit kernel variant.
pub fn softmax_with(enc: &mut Encoder, x: &Tensor, variant: Variant) -> Result<Tensor> {
    if x.dtype() != DType::F32 {
        return Err(Error::shape("softmax", format!("x must be f32, got {x:?}")));
    }
    let shape = x.shape();
    let Some(&n) = shape.last() else {
        return Err(Error::shape(
            "softmax",
            "x must have at least one dimension, got a scalar []",
        ));
    };
    let numel = x.numel();
    if u32::try_from(numel).is_err() {
        return Err(Error::shape(
            "softmax",
            format!("x {shape:?} has {numel} elements, over u32 indexing"),
        ));
    }
    let gpu = enc.gpu();
    let out = gpu.empty("softmax", shape, DType::F32)?;
    if numel == 0 {
        return Ok(out);
    }
    let rows = numel / n;
    let p = Params {
        rows: rows as u32,
        n: n as u32,
    };
    let (entry, constant, groups) = match variant {
        Variant::Register => {
            let rw = rows_per_group(rows);
            (
                "softmax_register",
                ("RW", rw as f64),
                gpu.grid((rows as u64).div_ceil(rw as u64)),
            )
        }
        Variant::Tiled => (
            "softmax_tiled",
            ("TW", threads_per_row(n) as f64),
            gpu.grid(rows as u64),
        ),
    };
    enc.dispatch(
        &SOFTMAX,
        entry,
        &[constant],
        bytemuck::bytes_of(&p),
        &[x, &out],
        groups,
    )?;
    Ok(out)
}

/// `dx = y ⊙ (dy − Σ dy⊙y)` per row, the backward of [`softmax`] from its output `y` and the
/// upstream `dy` (same shape). A fresh tensor, or added into `into` (which is returned).
pub fn softmax_backward(
    enc: &mut Encoder,
    y: &Tensor,
    dy: &Tensor,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    let v = enc.gpu().variant();
    softmax_backward_with(enc, y, dy, into, v)
}

/// [`softmax_backward`] with an explicit kernel variant.
pub fn softmax_backward_with(
    enc: &mut Encoder,
    y: &Tensor,
    dy: &Tensor,
    into: Option<&Tensor>,
    variant: Variant,
) -> Result<Tensor> {
    const OP: &str = "softmax_backward";
    for (name, t) in [("y", y), ("dy", dy)] {
        if t.dtype() != DType::F32 {
            return Err(Error::shape(OP, format!("{name} must be f32, got {t:?}")));
        }
    }
    let shape = y.shape();
    let Some(&n) = shape.last() else {
        return Err(Error::shape(
            OP,
            "y must have at least one dimension, got a scalar []",
        ));
    };
    if dy.shape() != shape {
        return Err(Error::shape(
            OP,
            format!(
                "y {shape:?} and dy {:?} must have the same shape",
                dy.shape()
            ),
        ));
    }
    let numel = y.numel();
    if u32::try_from(numel).is_err() {
        return Err(Error::shape(
            OP,
            format!("y {shape:?} has {numel} elements, over u32 indexing"),
        ));
    }
    let gpu = enc.gpu();
    let dx = match into {
        Some(t) => {
            let shared = [y, dy]
                .iter()
                .any(|s| std::sync::Arc::ptr_eq(s.pooled(), t.pooled()));
            if t.dtype() != DType::F32 || t.numel() != numel || shared {
                return Err(Error::shape(
                    OP,
                    format!(
                        "into {t:?} must be an f32 tensor of {numel} elements apart from y and dy"
                    ),
                ));
            }
            t.clone()
        }
        None => gpu.empty(OP, shape, DType::F32)?,
    };
    if numel == 0 {
        return Ok(dx);
    }
    let rows = numel / n;
    let p = Params {
        rows: rows as u32,
        n: n as u32,
    };
    let (entry, constant, groups) = match variant {
        Variant::Register => {
            let rw = rows_per_group(rows);
            (
                "softmax_backward_register",
                ("RW", rw as f64),
                gpu.grid((rows as u64).div_ceil(rw as u64)),
            )
        }
        Variant::Tiled => (
            "softmax_backward_tiled",
            ("TW", threads_per_row(n) as f64),
            gpu.grid(rows as u64),
        ),
    };
    enc.dispatch(
        &SOFTMAX,
        entry,
        &[constant, ("ACCUM", into.is_some() as u8 as f64)],
        bytemuck::bytes_of(&p),
        &[y, dy, &dx],
        groups,
    )?;
    Ok(dx)
}

/// Plain-loop reference (f64 inside).
pub mod cpu {
    /// Softmax of each `n`-long row in f64 (the forward the backward is differentiated against).
    pub fn softmax_f64(x: &[f64], n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(n) {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let e: Vec<f64> = row.iter().map(|&v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            out.extend(e.iter().map(|v| v / s));
        }
        out
    }

    /// `dx = y ⊙ (dy − Σ dy⊙y)` per `n`-long row, from the softmax output `y`.
    pub fn softmax_backward(y: &[f64], dy: &[f64], n: usize) -> Vec<f64> {
        let mut dx = Vec::with_capacity(y.len());
        for (yr, gr) in y.chunks(n).zip(dy.chunks(n)) {
            let dot: f64 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            dx.extend(yr.iter().zip(gr).map(|(a, b)| a * (b - dot)));
        }
        dx
    }

    /// Softmax of each `n`-long row of `x`.
    pub fn softmax(x: &[f32], n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(n) {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            out.extend(e.iter().map(|v| (v / s) as f32));
        }
        out
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &crate::Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
    // Full attention logits of the neck decoder: 8 heads × 361 queries × 361 keys.
    let (r, n) = (8 * 361usize, 361usize);
    let x = gpu.upload(
        &[r, n],
        &crate::prng::SplitMix64::new(2).vec_f32(r * n, -4.0, 4.0),
    )?;
    for v in Variant::ALL {
        let ms = crate::bench::median_ms(gpu, 2, 20, |enc| softmax_with(enc, &x, v).map(|_| ()))?;
        rows.push(crate::bench::Row {
            kernel: format!("softmax {}", v.name()),
            shape: format!("[{r}, {n}]"),
            median_ms: ms,
            flops: None,
            bytes: Some((8 * r * n) as f64),
        });
    }
    Ok(())
}
