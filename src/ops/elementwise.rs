//! Element-wise ops: ReLU, exact-erf GELU, sigmoid, exp, affine scale (`αx + β`), and add / mul
//! with a second operand that broadcasts over the leading dimensions (e.g. a bias row); their
//! backward passes, and [`accumulate`] (`dst += src`) for gradients that add up.
//! Shader: `shaders/elementwise.wgsl`.

use crate::gpu::{DType, Encoder, Tensor};
use crate::ops::reduce::{self, Axes, Reduce};
use crate::{shader, Error, Result};

shader!(ELEMENTWISE, "elementwise.wgsl");

/// A unary element-wise function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Relu,
    /// `0.5 x (1 + erf(x / √2))`, PyTorch's default (exact) GELU.
    Gelu,
    Sigmoid,
    Exp,
    /// `alpha * x + beta`.
    Affine {
        alpha: f32,
        beta: f32,
    },
}

/// The tensor the backward of a unary op reads besides `dy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    /// The forward's input `x`.
    Input,
    /// The forward's output `y = f(x)`.
    Output,
    /// Nothing: the derivative is a constant.
    Nothing,
}

impl Unary {
    /// What [`unary_backward`] needs: ReLU and GELU differentiate at the input, sigmoid and exp
    /// at the output (as PyTorch saves them), affine at neither. ReLU also accepts its output.
    pub fn saved(self) -> Saved {
        match self {
            Unary::Relu | Unary::Gelu => Saved::Input,
            Unary::Sigmoid | Unary::Exp => Saved::Output,
            Unary::Affine { .. } => Saved::Nothing,
        }
    }

    fn code(self) -> u32 {
        match self {
            Unary::Relu => 0,
            Unary::Gelu => 1,
            Unary::Sigmoid => 2,
            Unary::Exp => 3,
            Unary::Affine { .. } => 4,
        }
    }
}

/// A binary element-wise function; the second operand broadcasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Mul,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    nb: u32,
    alpha: f32,
    beta: f32,
}

fn check_f32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::shape(op, format!("expects f32, got {t:?}")));
    }
    Ok(())
}

fn check_count(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::shape(op, format!("{n} elements exceed u32 indexing")))
}

/// `y = f(x)`, same shape as `x`.
pub fn unary(enc: &mut Encoder, x: &Tensor, f: Unary) -> Result<Tensor> {
    check_f32("unary", x)?;
    let gpu = enc.gpu();
    let n = check_count("unary", x.numel())?;
    let y = gpu.empty("unary", x.shape(), DType::F32)?;
    let (alpha, beta) = match f {
        Unary::Affine { alpha, beta } => (alpha, beta),
        _ => (1.0, 0.0),
    };
    let p = Params {
        n,
        nb: 1,
        alpha,
        beta,
    };
    enc.dispatch(
        &ELEMENTWISE,
        "unary",
        &[("OP", f.code() as f64)],
        bytemuck::bytes_of(&p),
        &[x, &y],
        gpu.grid((n as u64).div_ceil(256)),
    )?;
    Ok(y)
}

/// `y = a (op) b`, where `b`'s shape must equal a suffix of `a`'s shape (it repeats over the
/// leading dimensions of `a`).
pub fn binary(enc: &mut Encoder, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    let name = match op {
        Binary::Add => "add",
        Binary::Mul => "mul",
    };
    binary_into(enc, name, a, b, op, None)
}

fn check_broadcast(name: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    let (sa, sb) = (a.shape(), b.shape());
    if sb.len() > sa.len() || sa[sa.len() - sb.len()..] != *sb || b.numel() == 0 && a.numel() > 0 {
        return Err(Error::shape(
            name,
            format!("{sb:?} does not broadcast to {sa:?} (it must match trailing dimensions)"),
        ));
    }
    Ok(())
}

/// Fails if `into` is not an f32 tensor of `numel` elements or shares a buffer with an input
/// (one dispatch cannot read and write the same buffer).
fn check_into(name: &'static str, into: &Tensor, numel: usize, inputs: &[&Tensor]) -> Result<()> {
    check_f32(name, into)?;
    if into.numel() != numel {
        return Err(Error::shape(
            name,
            format!("into {:?} must hold {numel} elements", into.shape()),
        ));
    }
    if inputs
        .iter()
        .any(|t| std::sync::Arc::ptr_eq(t.pooled(), into.pooled()))
    {
        return Err(Error::shape(
            name,
            format!("into {into:?} shares its buffer with an input"),
        ));
    }
    Ok(())
}

/// [`binary`], written to a fresh tensor or added into `into` (same element count as `a`).
fn binary_into(
    enc: &mut Encoder,
    name: &'static str,
    a: &Tensor,
    b: &Tensor,
    op: Binary,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    check_f32(name, a)?;
    check_f32(name, b)?;
    check_broadcast(name, a, b)?;
    let gpu = enc.gpu();
    let n = check_count(name, a.numel())?;
    let y = match into {
        Some(t) => {
            check_into(name, t, a.numel(), &[a, b])?;
            t.clone()
        }
        None => gpu.empty(name, a.shape(), DType::F32)?,
    };
    if n == 0 {
        return Ok(y);
    }
    let p = Params {
        n,
        nb: b.numel().max(1) as u32,
        alpha: 1.0,
        beta: 0.0,
    };
    let code = if op == Binary::Mul { 11.0 } else { 10.0 };
    enc.dispatch(
        &ELEMENTWISE,
        "binary",
        &[("OP", code), ("ACCUM", into.is_some() as u8 as f64)],
        bytemuck::bytes_of(&p),
        &[a, b, &y],
        gpu.grid((n as u64).div_ceil(256)),
    )?;
    Ok(y)
}

/// `dx = dy · f'(x)`, the backward of [`unary`], as a fresh tensor or added into `into` (which is
/// returned). `saved` is what [`Unary::saved`] names (the forward's input or output, shape of
/// `dy`); affine needs none.
pub fn unary_backward(
    enc: &mut Encoder,
    f: Unary,
    saved: Option<&Tensor>,
    dy: &Tensor,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "unary_backward";
    check_f32(OP, dy)?;
    let s = match (f.saved(), saved) {
        (Saved::Nothing, _) => dy,
        (_, Some(s)) => {
            check_f32(OP, s)?;
            if s.numel() != dy.numel() {
                return Err(Error::shape(
                    OP,
                    format!(
                        "saved {:?} and dy {:?} differ in size",
                        s.shape(),
                        dy.shape()
                    ),
                ));
            }
            s
        }
        (need, None) => {
            return Err(Error::shape(
                OP,
                format!("{f:?} needs the forward's {need:?} tensor"),
            ))
        }
    };
    let gpu = enc.gpu();
    let n = check_count(OP, dy.numel())?;
    let dx = match into {
        Some(t) => {
            check_into(OP, t, dy.numel(), &[s, dy])?;
            t.clone()
        }
        None => gpu.empty(OP, dy.shape(), DType::F32)?,
    };
    if n == 0 {
        return Ok(dx);
    }
    let alpha = match f {
        Unary::Affine { alpha, .. } => alpha,
        _ => 1.0,
    };
    let p = Params {
        n,
        nb: 1,
        alpha,
        beta: 0.0,
    };
    enc.dispatch(
        &ELEMENTWISE,
        "unary_backward",
        &[
            ("OP", f.code() as f64),
            ("ACCUM", into.is_some() as u8 as f64),
        ],
        bytemuck::bytes_of(&p),
        &[s, dy, &dx],
        gpu.grid((n as u64).div_ceil(256)),
    )?;
    Ok(dx)
}

/// `dst += src` element-wise (same element count, distinct buffers): a gradient added into an
/// existing one.
pub fn accumulate(enc: &mut Encoder, dst: &Tensor, src: &Tensor) -> Result<()> {
    const OP: &str = "accumulate";
    check_f32(OP, src)?;
    check_into(OP, dst, src.numel(), &[src])?;
    let n = check_count(OP, src.numel())?;
    if n == 0 {
        return Ok(());
    }
    let p = Params {
        n,
        nb: 1,
        alpha: 1.0,
        beta: 0.0,
    };
    let grid = enc.gpu().grid((n as u64).div_ceil(256));
    enc.dispatch(
        &ELEMENTWISE,
        "accumulate",
        &[],
        bytemuck::bytes_of(&p),
        &[src, dst],
        grid,
    )
}

/// Gradients `(da, db)` of [`binary`] (`y = a (op) b`, `b` repeated over `a`'s leading
/// dimensions) for the upstream `dy` (shape of `a`): add gives `da = dy`, mul `da = dy·b`; `db`
/// is the sum of `dy` (add) or `dy·a` (mul) over the repeats, shaped like `b`. Each is a fresh
/// tensor (`da` never aliases `dy`) or is added into `into_a` / `into_b`.
pub fn binary_backward(
    enc: &mut Encoder,
    op: Binary,
    a: &Tensor,
    b: &Tensor,
    dy: &Tensor,
    into_a: Option<&Tensor>,
    into_b: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "binary_backward";
    check_f32(OP, a)?;
    check_f32(OP, b)?;
    check_f32(OP, dy)?;
    check_broadcast(OP, a, b)?;
    if dy.shape() != a.shape() {
        return Err(Error::shape(
            OP,
            format!(
                "dy {:?} must have the shape of a {:?}",
                dy.shape(),
                a.shape()
            ),
        ));
    }
    let (n, nb) = (a.numel(), b.numel());
    let da = match (op, into_a) {
        (Binary::Add, Some(t)) => {
            accumulate(enc, t, dy)?;
            t.clone()
        }
        (Binary::Add, None) => {
            let t = enc.gpu().empty(OP, a.shape(), DType::F32)?;
            enc.copy(dy, &t)?;
            t
        }
        (Binary::Mul, into) => binary_into(enc, OP, dy, b, Binary::Mul, into)?,
    };
    let axes = Axes {
        outer: n.checked_div(nb).unwrap_or(0),
        mid: nb,
        inner: 1,
    };
    let db = match op {
        Binary::Add => reduce::reduce(enc, Reduce::Sum, dy, None, axes, into_b)?,
        Binary::Mul => reduce::reduce(enc, Reduce::SumProduct, dy, Some(a), axes, into_b)?,
    };
    let db = if into_b.is_some() {
        db
    } else {
        db.reshape(b.shape())?
    };
    Ok((da, db))
}

/// Plain-loop references.
pub mod cpu {
    use super::{Binary, Unary};

    /// erf in f64 (series below 3, continued fraction above): accurate to ~1e-15.
    pub fn erf(x: f64) -> f64 {
        // Abramowitz & Stegun 7.1.5 series for |x| < 3, asymptotic tail otherwise.
        let ax = x.abs();
        let r = if ax < 3.0 {
            let mut sum = ax;
            let mut term = ax;
            for k in 1..200 {
                let n = k as f64;
                term *= -ax * ax / n;
                let add = term / (2.0 * n + 1.0);
                sum += add;
                if add.abs() <= 1e-17 * sum.abs() {
                    break;
                }
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc continued fraction (Lentz), converges fast for x ≥ 3.
            let mut f = ax;
            let mut c = ax;
            let mut d = 0.0;
            for k in 1..60 {
                let a = k as f64 / 2.0;
                d = 1.0 / (ax + a * d);
                c = ax + a / c;
                f *= c * d;
            }
            1.0 - (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt())
        };
        if x < 0.0 {
            -r
        } else {
            r
        }
    }

    pub fn unary_f64(x: f64, f: Unary) -> f64 {
        match f {
            Unary::Relu => x.max(0.0),
            Unary::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Exp => x.exp(),
            Unary::Affine { alpha, beta } => alpha as f64 * x + beta as f64,
        }
    }

    pub fn unary(x: &[f32], f: Unary) -> Vec<f32> {
        x.iter().map(|&v| unary_f64(v as f64, f) as f32).collect()
    }

    /// f'(x) in f64 (ReLU's derivative at 0 is 0, as in PyTorch).
    pub fn unary_grad_f64(x: f64, f: Unary) -> f64 {
        match f {
            Unary::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Unary::Gelu => {
                let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                cdf + x * pdf
            }
            Unary::Sigmoid => {
                let y = 1.0 / (1.0 + (-x).exp());
                y * (1.0 - y)
            }
            Unary::Exp => x.exp(),
            Unary::Affine { alpha, .. } => alpha as f64,
        }
    }

    /// `dx = dy · f'(x)` from the forward's input `x`.
    pub fn unary_backward(x: &[f64], dy: &[f64], f: Unary) -> Vec<f64> {
        x.iter()
            .zip(dy)
            .map(|(&x, &g)| g * unary_grad_f64(x, f))
            .collect()
    }

    /// [`binary`] in f64.
    pub fn binary_f64(a: &[f64], b: &[f64], op: Binary) -> Vec<f64> {
        a.iter()
            .enumerate()
            .map(|(i, &x)| match op {
                Binary::Add => x + b[i % b.len()],
                Binary::Mul => x * b[i % b.len()],
            })
            .collect()
    }

    /// `(da, db)` of [`binary`] for the upstream `dy`: `b[i mod nb]` takes part in every output
    /// `i`, so its gradient sums over all of them.
    pub fn binary_backward(a: &[f64], b: &[f64], dy: &[f64], op: Binary) -> (Vec<f64>, Vec<f64>) {
        let mut da = vec![0.0; a.len()];
        let mut db = vec![0.0; b.len()];
        for i in 0..a.len() {
            let j = i % b.len();
            match op {
                Binary::Add => {
                    da[i] = dy[i];
                    db[j] += dy[i];
                }
                Binary::Mul => {
                    da[i] = dy[i] * b[j];
                    db[j] += dy[i] * a[i];
                }
            }
        }
        (da, db)
    }

    pub fn binary(a: &[f32], b: &[f32], op: Binary) -> Vec<f32> {
        a.iter()
            .enumerate()
            .map(|(i, &x)| {
                let y = b[i % b.len()];
                match op {
                    Binary::Add => x + y,
                    Binary::Mul => x * y,
                }
            })
            .collect()
    }
}

/// Throughput of the element-wise kernels on a Swin-sized activation.
#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &crate::Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
    let n = 5329 * 384; // the stage-0 MLP hidden activation of a search frame
    let x = gpu.upload(&[n], &vec![0.5; n])?;
    for (name, f) in [("gelu", Unary::Gelu), ("sigmoid", Unary::Sigmoid)] {
        let ms = crate::bench::median_ms(gpu, 2, 10, |enc| unary(enc, &x, f).map(|_| ()))?;
        rows.push(crate::bench::Row {
            kernel: format!("elementwise {name}"),
            shape: format!("[{n}]"),
            median_ms: ms,
            flops: None,
            bytes: Some((8 * n) as f64),
        });
    }
    let ms = crate::bench::median_ms(gpu, 2, 10, |enc| {
        binary(enc, &x, &x, Binary::Add).map(|_| ())
    })?;
    rows.push(crate::bench::Row {
        kernel: "elementwise add".into(),
        shape: format!("[{n}] + [{n}]"),
        median_ms: ms,
        flops: None,
        bytes: Some((12 * n) as f64),
    });
    Ok(())
}
