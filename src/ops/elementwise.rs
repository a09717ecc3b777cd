//! Element-wise ops: ReLU, exact-erf GELU, sigmoid, exp, affine scale (`αx + β`), and add / mul
//! with a second operand that broadcasts over the leading dimensions (e.g. a bias row).
//! Shader: `shaders/elementwise.wgsl`.

use crate::gpu::{DType, Encoder, Tensor};
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

impl Unary {
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
    check_f32(name, a)?;
    check_f32(name, b)?;
    let (sa, sb) = (a.shape(), b.shape());
    if sb.len() > sa.len() || sa[sa.len() - sb.len()..] != *sb || b.numel() == 0 && a.numel() > 0 {
        return Err(Error::shape(
            name,
            format!("{sb:?} does not broadcast to {sa:?} (it must match trailing dimensions)"),
        ));
    }
    let gpu = enc.gpu();
    let n = check_count(name, a.numel())?;
    let y = gpu.empty(name, sa, DType::F32)?;
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
        &[("OP", code)],
        bytemuck::bytes_of(&p),
        &[a, b, &y],
        gpu.grid((n as u64).div_ceil(256)),
    )?;
    Ok(y)
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
