//! Dropout and stochastic depth (drop path) with seeded random masks made on the GPU
//! (`shaders/random.wgsl`). No random state lives on the device: the mask bit of element (or
//! sample) c is `pcg(pcg(c ^ key0) + key1) ≥ round(p·2³²)` with `(key0, key1)` derived from the
//! 64-bit seed and the op's stream, so [`cpu`] reproduces every mask bit for bit and the
//! backward regenerates the forward's mask from the same seed rather than storing it (two integer
//! hashes per element are cheaper than writing and re-reading a mask).
//!
//! - dropout: `y = x·m / (1 − p)` with one mask bit `m` per element, kept with probability
//!   `1 − p` (exactly `1 − round(p·2³²)/2³²`);
//! - drop path: `y[b] = x[b]·m_b / (1 − p)` with one bit per sample b (the first dimension):
//!   a whole sample's residual branch is kept or dropped.
//!
//! Backward: `dx = dy·m / (1 − p)` with the same mask. `p = 0` is an exact identity (a copy).
//! Callers give every dropout site and training step its own seed (e.g. a hash of step and
//! layer); the same seed in dropout and drop path still gives unrelated masks (distinct streams).

use crate::gpu::{DType, Encoder, Tensor};
use crate::{Error, Result};

crate::shader!(RANDOM, "random.wgsl");

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    inner: u32,
    key0: u32,
    key1: u32,
    thr: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
}

const STREAM_DROPOUT: u32 = 0;
const STREAM_DROP_PATH: u32 = 1;

fn check_p(op: &'static str, p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::shape(
            op,
            format!("drop probability p = {p} is outside [0, 1)"),
        ));
    }
    Ok(())
}

/// Elements per sample for drop path (`x` is `[B, ...]`).
fn inner_of(op: &'static str, x: &Tensor) -> Result<usize> {
    let s = x.shape();
    if s.is_empty() {
        return Err(Error::shape(
            op,
            format!("expects a [batch, ...] tensor, got a scalar {x:?}"),
        ));
    }
    Ok(s[1..].iter().product())
}

/// Records `out (+)= keep ? src·scale : 0`; `into`: add into that tensor instead of a fresh one.
#[allow(clippy::too_many_arguments)]
fn run(
    enc: &mut Encoder,
    op: &'static str,
    src: &Tensor,
    p: f32,
    seed: u64,
    stream: u32,
    inner: Option<usize>,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    check_p(op, p)?;
    if src.dtype() != DType::F32 {
        return Err(Error::shape(op, format!("expects f32, got {src:?}")));
    }
    let n = u32::try_from(src.numel())
        .map_err(|_| Error::shape(op, format!("{src:?} exceeds u32 indexing")))?;
    let gpu = enc.gpu();
    let out = match into {
        Some(t) => {
            if t.dtype() != DType::F32 || t.shape() != src.shape() {
                return Err(Error::shape(
                    op,
                    format!("into must be f32 {:?}, got {t:?}", src.shape()),
                ));
            }
            if std::sync::Arc::ptr_eq(t.pooled(), src.pooled()) {
                return Err(Error::shape(
                    op,
                    format!("into {t:?} shares its buffer with the input"),
                ));
            }
            t.clone()
        }
        None => gpu.empty(op, src.shape(), DType::F32)?,
    };
    if n == 0 {
        return Ok(out);
    }
    if p == 0.0 && into.is_none() {
        // Exact identity, whatever the values (a multiply by 1 could touch NaN payloads).
        enc.copy(src, &out)?;
        return Ok(out);
    }
    let [key0, key1] = cpu::keys(seed, stream);
    let params = Params {
        n,
        inner: inner.unwrap_or(1).max(1) as u32,
        key0,
        key1,
        thr: cpu::threshold(p),
        scale: cpu::scale(p),
        ..Default::default()
    };
    enc.dispatch(
        &RANDOM,
        "mask_scale",
        &[
            ("ACCUM", into.is_some() as u8 as f64),
            ("PER_SAMPLE", inner.is_some() as u8 as f64),
        ],
        bytemuck::bytes_of(&params),
        &[src, &out],
        gpu.grid((n as u64).div_ceil(256)),
    )?;
    Ok(out)
}

/// Dropout: `y = x·m / (1 − p)`, one mask bit per element from `seed` (see the module doc),
/// `p ∈ [0, 1)`.
pub fn dropout(enc: &mut Encoder, x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    run(enc, "dropout", x, p, seed, STREAM_DROPOUT, None, None)
}

/// Backward of [`dropout`] with the same `p` and `seed`: `dx = dy·m / (1 − p)`, fresh or added
/// into `into` (which is returned).
pub fn dropout_backward(
    enc: &mut Encoder,
    dy: &Tensor,
    p: f32,
    seed: u64,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    run(
        enc,
        "dropout_backward",
        dy,
        p,
        seed,
        STREAM_DROPOUT,
        None,
        into,
    )
}

/// Drop path (stochastic depth) on a residual branch `x` of shape `[B, ...]`:
/// `y[b] = x[b]·m_b / (1 − p)`, one mask bit per sample b from `seed`, `p ∈ [0, 1)`.
pub fn drop_path(enc: &mut Encoder, x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    const OP: &str = "drop_path";
    let inner = inner_of(OP, x)?;
    run(enc, OP, x, p, seed, STREAM_DROP_PATH, Some(inner), None)
}

/// Backward of [`drop_path`] with the same `p` and `seed`: `dx[b] = dy[b]·m_b / (1 − p)`, fresh
/// or added into `into` (which is returned).
pub fn drop_path_backward(
    enc: &mut Encoder,
    dy: &Tensor,
    p: f32,
    seed: u64,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "drop_path_backward";
    let inner = inner_of(OP, dy)?;
    run(enc, OP, dy, p, seed, STREAM_DROP_PATH, Some(inner), into)
}

/// Plain-loop references that reproduce the GPU masks bit for bit.
pub mod cpu {
    /// The PCG-RXS-M-XS 32-bit hash (Jarzynski & Olano, JCGT 2020), as in `random.wgsl`.
    pub fn pcg(v: u32) -> u32 {
        let s = v.wrapping_mul(747796405).wrapping_add(2891336453);
        let w = ((s >> ((s >> 28) + 4)) ^ s).wrapping_mul(277803737);
        (w >> 22) ^ w
    }

    /// The two 32-bit keys of a (seed, stream) pair.
    pub fn keys(seed: u64, stream: u32) -> [u32; 2] {
        let (lo, hi) = (seed as u32, (seed >> 32) as u32);
        let k0 = pcg(lo ^ pcg(hi ^ pcg(stream)));
        let k1 = pcg(k0 ^ 0x9e37_79b9);
        [k0, k1]
    }

    /// The random word of counter `c` under `keys`.
    pub fn bits(keys: [u32; 2], c: u32) -> u32 {
        pcg(pcg(c ^ keys[0]).wrapping_add(keys[1]))
    }

    /// Words at or above this are kept: `round(p·2³²)` (p < 1).
    pub fn threshold(p: f32) -> u32 {
        (p as f64 * 4294967296.0).round().min(u32::MAX as f64) as u32
    }

    /// The kept values' factor `1/(1 − p)`, in f32 as the GPU gets it.
    pub fn scale(p: f32) -> f32 {
        1.0 / (1.0 - p)
    }

    fn mask(count: usize, p: f32, seed: u64, stream: u32) -> Vec<bool> {
        let k = keys(seed, stream);
        let thr = threshold(p);
        (0..count).map(|c| bits(k, c as u32) >= thr).collect()
    }

    /// Dropout's keep bit of each of `n` elements.
    pub fn dropout_mask(n: usize, p: f32, seed: u64) -> Vec<bool> {
        mask(n, p, seed, super::STREAM_DROPOUT)
    }

    /// Drop path's keep bit of each of `batch` samples.
    pub fn drop_path_mask(batch: usize, p: f32, seed: u64) -> Vec<bool> {
        mask(batch, p, seed, super::STREAM_DROP_PATH)
    }

    /// `x·m·scale` in f32 with `m` the mask of element `e / inner`, exactly as the GPU rounds.
    fn apply(x: &[f32], mask: &[bool], inner: usize, p: f32) -> Vec<f32> {
        let s = scale(p);
        x.iter()
            .enumerate()
            .map(|(e, &v)| if mask[e / inner] { v * s } else { 0.0 })
            .collect()
    }

    /// [`super::dropout`]: `y = x·m / (1 − p)`.
    pub fn dropout(x: &[f32], p: f32, seed: u64) -> Vec<f32> {
        apply(x, &dropout_mask(x.len(), p, seed), 1, p)
    }

    /// [`super::dropout_backward`]: `dx = dy·m / (1 − p)` (the same mask as the forward).
    pub fn dropout_backward(dy: &[f32], p: f32, seed: u64) -> Vec<f32> {
        apply(dy, &dropout_mask(dy.len(), p, seed), 1, p)
    }

    /// [`super::drop_path`] on `x` of `batch` equal samples.
    pub fn drop_path(x: &[f32], batch: usize, p: f32, seed: u64) -> Vec<f32> {
        apply(
            x,
            &drop_path_mask(batch, p, seed),
            (x.len() / batch.max(1)).max(1),
            p,
        )
    }

    /// [`super::drop_path_backward`] on `dy` of `batch` equal samples.
    pub fn drop_path_backward(dy: &[f32], batch: usize, p: f32, seed: u64) -> Vec<f32> {
        drop_path(dy, batch, p, seed)
    }

    /// The forward in f64 with a given mask (one bit per `inner` elements), for finite
    /// differences: `y = x·m / (1 − p)`.
    pub fn masked_scale_f64(x: &[f64], mask: &[bool], inner: usize, p: f64) -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(e, &v)| if mask[e / inner] { v / (1.0 - p) } else { 0.0 })
            .collect()
    }
}
