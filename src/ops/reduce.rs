//! Sums over axes: bias gradients (sum over rows), the gradient of an operand that was broadcast
//! (summed over the axes it was repeated along), row sums, and the squared L2 norms of gradient
//! clipping. Deterministic: no atomics, a fixed summation order. Shader: `shaders/reduce.wgsl`.

use crate::gpu::{DType, Encoder, Tensor};
use crate::{shader, Error, Result};

shader!(REDUCE, "reduce.wgsl");

/// What is summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// Σ x
    Sum,
    /// Σ x²
    SumSquares,
    /// Σ x·y, `y` of the shape of `x` (the gradient of a broadcast factor).
    SumProduct,
}

impl Reduce {
    fn code(self) -> f64 {
        match self {
            Reduce::Sum => 0.0,
            Reduce::SumSquares => 1.0,
            Reduce::SumProduct => 2.0,
        }
    }
}

/// A tensor seen as `[outer, mid, inner]` (row-major); a reduction keeps `mid` and sums over
/// `outer` and `inner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axes {
    pub outer: usize,
    pub mid: usize,
    pub inner: usize,
}

impl Axes {
    /// Column sums of `[..., C]`: sums over every leading dimension, one result per column (the
    /// bias gradient of `y = x·Wᵀ + b`).
    pub fn columns(shape: &[usize]) -> Axes {
        let c = shape.last().copied().unwrap_or(1);
        Axes {
            outer: numel(shape).checked_div(c).unwrap_or(0),
            mid: c,
            inner: 1,
        }
    }

    /// Row sums of `[..., C]`: one result per row, summed over the last dimension.
    pub fn rows(shape: &[usize]) -> Axes {
        let c = shape.last().copied().unwrap_or(1);
        Axes {
            outer: 1,
            mid: numel(shape).checked_div(c).unwrap_or(0),
            inner: c,
        }
    }

    /// The sum of everything (one result).
    pub fn all(n: usize) -> Axes {
        Axes {
            outer: 1,
            mid: 1,
            inner: n,
        }
    }

    /// Keeps dimensions `keep` of `shape` and sums over the others: `Axes::keep(&[N, C, H, W],
    /// 1..2)` is the per-channel sum of an NCHW tensor (a convolution's bias gradient).
    pub fn keep(shape: &[usize], keep: std::ops::Range<usize>) -> Axes {
        let (a, b) = (keep.start.min(shape.len()), keep.end.min(shape.len()));
        let b = b.max(a);
        Axes {
            outer: numel(&shape[..a]),
            mid: numel(&shape[a..b]),
            inner: numel(&shape[b..]),
        }
    }

    fn numel(&self) -> Option<usize> {
        self.outer.checked_mul(self.mid)?.checked_mul(self.inner)
    }
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    mid: u32,
    inner: u32,
    chunk: u32,
    chunks: u32,
    offset: u32,
    _pad: [u32; 2],
}

/// Invocations a reduction aims for: enough to fill a GPU, and few enough that the second pass
/// (one invocation per output summing `chunks` partials) stays short.
const TARGET_THREADS: usize = 16384;

/// How `count` terms per output (with `mid` outputs) are split into chunks: returns
/// `(chunk length, number of chunks)`. Chunks are at least 64 terms and at least √count, so the
/// second pass never sums more partials than a chunk holds terms.
pub(crate) fn split(count: usize, mid: usize) -> (usize, usize) {
    if count <= 1 {
        return (count.max(1), 1);
    }
    let min_chunk = 64usize.max(count.isqrt());
    let want = TARGET_THREADS.div_ceil(mid.max(1));
    let chunks = want.min(count.div_ceil(min_chunk)).max(1);
    let chunk = count.div_ceil(chunks);
    (chunk, count.div_ceil(chunk))
}

/// Where a reduction writes: element `offset..offset + mid` of `out`, added to its contents or
/// overwriting them.
#[derive(Clone, Copy, Debug)]
pub struct Dest<'a> {
    pub out: &'a Tensor,
    pub offset: usize,
    pub accumulate: bool,
}

fn check_f32(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::shape(op, format!("{what} must be f32, got {t:?}")));
    }
    Ok(())
}

/// `r[j] = Σ_{o, i} f(x[o, j, i])` for `x` seen as `axes` (`f` per [`Reduce`]; `y` only for
/// [`Reduce::SumProduct`]). Returns a fresh `[mid]` tensor, or, with `into` (`mid` elements, any
/// shape), adds the sums into it and returns it.
pub fn reduce(
    enc: &mut Encoder,
    kind: Reduce,
    x: &Tensor,
    y: Option<&Tensor>,
    axes: Axes,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    let out = match into {
        Some(t) => {
            if t.numel() != axes.mid {
                return Err(Error::shape(
                    "reduce",
                    format!(
                        "into {:?} must hold {} sums (one per kept index) for x {:?}",
                        t.shape(),
                        axes.mid,
                        x.shape()
                    ),
                ));
            }
            t.clone()
        }
        None => enc.gpu().empty("reduce", &[axes.mid], DType::F32)?,
    };
    reduce_to(
        enc,
        kind,
        x,
        y,
        axes,
        Dest {
            out: &out,
            offset: 0,
            accumulate: into.is_some(),
        },
    )?;
    Ok(out)
}

/// Column sums of `x` `[..., C]` → `[C]` (bias gradients), optionally added into `into`.
pub fn sum_columns(enc: &mut Encoder, x: &Tensor, into: Option<&Tensor>) -> Result<Tensor> {
    reduce(enc, Reduce::Sum, x, None, Axes::columns(x.shape()), into)
}

/// Row sums of `x` `[..., C]` → one value per row (shape `x.shape()` without the last
/// dimension), optionally added into `into`.
pub fn sum_rows(enc: &mut Encoder, x: &Tensor, into: Option<&Tensor>) -> Result<Tensor> {
    let s = x.shape();
    let r = reduce(enc, Reduce::Sum, x, None, Axes::rows(s), into)?;
    if into.is_some() || s.is_empty() {
        return Ok(r);
    }
    r.reshape(&s[..s.len() - 1])
}

/// The reduction written to `dest` (the general form of [`reduce`]).
pub fn reduce_to(
    enc: &mut Encoder,
    kind: Reduce,
    x: &Tensor,
    y: Option<&Tensor>,
    axes: Axes,
    dest: Dest,
) -> Result<()> {
    const OP: &str = "reduce";
    check_f32(OP, "x", x)?;
    check_f32(OP, "out", dest.out)?;
    if axes.numel() != Some(x.numel()) {
        return Err(Error::shape(
            OP,
            format!("x {:?} cannot be viewed as {axes:?}", x.shape()),
        ));
    }
    match (kind, y) {
        (Reduce::SumProduct, Some(y)) => {
            check_f32(OP, "y", y)?;
            if y.numel() != x.numel() {
                return Err(Error::shape(
                    OP,
                    format!(
                        "y {:?} must have the element count of x {:?}",
                        y.shape(),
                        x.shape()
                    ),
                ));
            }
        }
        (Reduce::SumProduct, None) => {
            return Err(Error::shape(OP, "a sum of products needs y"));
        }
        (_, Some(_)) => {
            return Err(Error::shape(OP, format!("{kind:?} takes no y")));
        }
        _ => {}
    }
    if dest.offset + axes.mid > dest.out.numel() {
        return Err(Error::shape(
            OP,
            format!(
                "{} sums from offset {} do not fit out {:?}",
                axes.mid,
                dest.offset,
                dest.out.shape()
            ),
        ));
    }
    let aliased = [Some(x), y]
        .into_iter()
        .flatten()
        .any(|t| std::sync::Arc::ptr_eq(t.pooled(), dest.out.pooled()));
    if aliased {
        return Err(Error::shape(
            OP,
            format!("out {:?} shares its buffer with an input", dest.out.shape()),
        ));
    }
    if u32::try_from(dest.out.numel().max(x.numel())).is_err() {
        return Err(Error::shape(
            OP,
            format!("x {:?} has more than 2^32 elements", x.shape()),
        ));
    }
    if axes.mid == 0 {
        return Ok(());
    }
    let gpu = enc.gpu();
    let count = axes.outer * axes.inner;
    if count == 0 {
        // Empty sums are zero: overwrite, or leave an accumulator as it is.
        if !dest.accumulate {
            let z = gpu.zeros(&[axes.mid])?;
            enc.copy_elems(&z, 0, dest.out, dest.offset, axes.mid)?;
        }
        return Ok(());
    }
    let (chunk, chunks) = split(count, axes.mid);
    let y = y.unwrap_or(x);
    if chunks == 1 {
        return dispatch(enc, kind, x, y, axes, chunk, 1, dest);
    }
    let partial = gpu.empty(OP, &[chunks, axes.mid], DType::F32)?;
    dispatch(
        enc,
        kind,
        x,
        y,
        axes,
        chunk,
        chunks,
        Dest {
            out: &partial,
            offset: 0,
            accumulate: false,
        },
    )?;
    let pass2 = Axes {
        outer: chunks,
        mid: axes.mid,
        inner: 1,
    };
    dispatch(enc, Reduce::Sum, &partial, &partial, pass2, chunks, 1, dest)
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    enc: &mut Encoder,
    kind: Reduce,
    x: &Tensor,
    y: &Tensor,
    axes: Axes,
    chunk: usize,
    chunks: usize,
    dest: Dest,
) -> Result<()> {
    let p = Params {
        outer: axes.outer as u32,
        mid: axes.mid as u32,
        inner: axes.inner as u32,
        chunk: chunk as u32,
        chunks: chunks as u32,
        offset: dest.offset as u32,
        _pad: [0; 2],
    };
    let groups = ((axes.mid * chunks) as u64).div_ceil(64);
    let grid = enc.gpu().grid(groups);
    enc.dispatch(
        &REDUCE,
        "reduce",
        &[
            ("MODE", kind.code()),
            ("ACCUM", dest.accumulate as u8 as f64),
        ],
        bytemuck::bytes_of(&p),
        &[x, y, dest.out],
        grid,
    )
}

/// Plain-loop references in f64.
pub mod cpu {
    use super::{Axes, Reduce};

    /// `r[j] = Σ_{o, i} f(x[o, j, i])`.
    pub fn reduce(kind: Reduce, x: &[f64], y: Option<&[f64]>, a: Axes) -> Vec<f64> {
        let mut r = vec![0.0; a.mid];
        for o in 0..a.outer {
            for (j, rj) in r.iter_mut().enumerate() {
                for i in 0..a.inner {
                    let idx = (o * a.mid + j) * a.inner + i;
                    *rj += match kind {
                        Reduce::Sum => x[idx],
                        Reduce::SumSquares => x[idx] * x[idx],
                        Reduce::SumProduct => x[idx] * y.expect("SumProduct needs y")[idx],
                    };
                }
            }
        }
        r
    }
}
