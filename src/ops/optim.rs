//! AdamW exactly as `torch.optim.AdamW` (decoupled weight decay, bias correction, `eps` added to
//! the corrected √v), with its moments on the GPU, and `torch.nn.utils.clip_grad_norm_`'s global
//! L2 clipping. One dispatch per parameter tensor; the learning rate is an argument of every
//! step, so parameter groups (the backbone's × 0.1) and schedules are the caller's choice.
//! Shader: `shaders/optim.wgsl`.

use crate::gpu::{DType, Encoder, Tensor};
use crate::ops::reduce::{self, Axes, Dest, Reduce};
use crate::{shader, Error, Result};

shader!(OPTIM, "optim.wgsl");

/// Hyper-parameters of `torch.optim.AdamW`, in f64 like the Python floats PyTorch computes its
/// step scalars with. [`Default`] is PyTorch's default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// The f32 scalars of step `t` (1-based), as PyTorch forms them: Python floats (f64), rounded to
/// f32 when applied to f32 tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepScalars {
    /// `1 − lr·wd`
    pub decay: f32,
    /// `1 − β1`, the lerp weight of the first moment
    pub lerp_w: f32,
    pub beta2: f32,
    /// `1 − β2`
    pub one_m_beta2: f32,
    /// `sqrt(1 − β2^t)`
    pub bc2_sqrt: f32,
    /// `−lr / (1 − β1^t)`
    pub neg_step: f32,
    pub eps: f32,
}

impl AdamW {
    /// The scalars of step `t` (`t` ≥ 1, PyTorch's `state['step']` after its increment).
    pub fn scalars(&self, t: u64) -> StepScalars {
        let tf = t as f64;
        let bc1 = 1.0 - self.beta1.powf(tf);
        let bc2 = 1.0 - self.beta2.powf(tf);
        StepScalars {
            decay: (1.0 - self.lr * self.weight_decay) as f32,
            lerp_w: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_m_beta2: (1.0 - self.beta2) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            neg_step: (-(self.lr / bc1)) as f32,
            eps: self.eps as f32,
        }
    }
}

/// The optimizer state of one parameter tensor: first and second moments (`exp_avg`,
/// `exp_avg_sq`), zero at the start.
#[derive(Debug)]
pub struct AdamState {
    pub m: Tensor,
    pub v: Tensor,
}

impl AdamState {
    /// Zero moments for a parameter of the given shape.
    pub fn zeros(gpu: &crate::Gpu, shape: &[usize]) -> Result<AdamState> {
        Ok(AdamState {
            m: gpu.zeros(shape)?,
            v: gpu.zeros(shape)?,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
    decay: f32,
    lerp_w: f32,
    beta2: f32,
    one_m_beta2: f32,
    bc2_sqrt: f32,
    neg_step: f32,
    eps: f32,
    _pad3: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ClipParams {
    count: u32,
    max_norm: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ScaleParams {
    n: u32,
    _pad: [u32; 3],
}

fn same_buffer(a: &Tensor, b: &Tensor) -> bool {
    std::sync::Arc::ptr_eq(a.pooled(), b.pooled())
}

fn check_f32(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::shape(op, format!("{what} must be f32, got {t:?}")));
    }
    Ok(())
}

fn check_coef(op: &'static str, coef: &Tensor) -> Result<()> {
    check_f32(op, "clip coefficient", coef)?;
    if coef.numel() != 2 {
        return Err(Error::shape(
            op,
            format!(
                "the clip tensor {:?} must be clip_grad_norm's [total, coefficient]",
                coef.shape()
            ),
        ));
    }
    Ok(())
}

/// One AdamW step (`t` ≥ 1) of one parameter tensor in place: `param`, `state.m` and `state.v`
/// are updated from `grad` (all the same shape, distinct buffers). With `clip` (the output of
/// [`clip_grad_norm`]) the gradient is multiplied by the clip coefficient on the way in, which is
/// what stepping after `clip_grad_norm_` does.
pub fn adamw_step(
    enc: &mut Encoder,
    cfg: &AdamW,
    t: u64,
    param: &Tensor,
    grad: &Tensor,
    state: &AdamState,
    clip: Option<&Tensor>,
) -> Result<()> {
    const OP: &str = "adamw";
    if t == 0 {
        return Err(Error::shape(OP, "the step count starts at 1"));
    }
    let named = [
        ("param", param),
        ("grad", grad),
        ("m", &state.m),
        ("v", &state.v),
    ];
    for (what, x) in named {
        check_f32(OP, what, x)?;
        if x.shape() != param.shape() {
            return Err(Error::shape(
                OP,
                format!(
                    "{what} {:?} must have the parameter's shape {:?}",
                    x.shape(),
                    param.shape()
                ),
            ));
        }
    }
    for (i, (wa, a)) in named.iter().enumerate() {
        for (wb, b) in &named[i + 1..] {
            if same_buffer(a, b) {
                return Err(Error::shape(
                    OP,
                    format!("{wa} and {wb} share a buffer {:?}", a.shape()),
                ));
            }
        }
    }
    if let Some(c) = clip {
        check_coef(OP, c)?;
        if named.iter().skip(1).any(|(_, x)| same_buffer(x, c)) || same_buffer(param, c) {
            return Err(Error::shape(
                OP,
                "the clip tensor shares a buffer with the state",
            ));
        }
    }
    let n = u32::try_from(param.numel())
        .map_err(|_| Error::shape(OP, format!("{:?} exceeds u32 indexing", param.shape())))?;
    if n == 0 {
        return Ok(());
    }
    let s = cfg.scalars(t);
    let p = Params {
        n,
        _pad: [0; 3],
        decay: s.decay,
        lerp_w: s.lerp_w,
        beta2: s.beta2,
        one_m_beta2: s.one_m_beta2,
        bc2_sqrt: s.bc2_sqrt,
        neg_step: s.neg_step,
        eps: s.eps,
        _pad3: 0,
    };
    let grid = enc.gpu().grid((n as u64).div_ceil(256));
    enc.dispatch(
        &OPTIM,
        "adamw",
        &[("CLIP", clip.is_some() as u8 as f64)],
        bytemuck::bytes_of(&p),
        &[grad, clip.unwrap_or(grad), param, &state.m, &state.v],
        grid,
    )
}

/// `clip_grad_norm_(max_norm)`'s numbers, left on the GPU: a `[2]` tensor holding the global L2
/// norm of all `grads` together and the clip coefficient `min(max_norm / (norm + 1e-6), 1)`.
/// Nothing is synchronised; pass the result to [`adamw_step`] (or [`scale_grads`]).
pub fn clip_grad_norm(enc: &mut Encoder, grads: &[&Tensor], max_norm: f32) -> Result<Tensor> {
    const OP: &str = "clip_grad_norm";
    if !(max_norm > 0.0 && max_norm.is_finite()) {
        return Err(Error::shape(
            OP,
            format!("max_norm must be finite and > 0, got {max_norm}"),
        ));
    }
    let gpu = enc.gpu();
    let count = grads.len();
    let sq = gpu.empty(OP, &[count.max(1)], DType::F32)?;
    for (i, g) in grads.iter().enumerate() {
        check_f32(OP, "grad", g)?;
        reduce::reduce_to(
            enc,
            Reduce::SumSquares,
            g,
            None,
            Axes::all(g.numel()),
            Dest {
                out: &sq,
                offset: i,
                accumulate: false,
            },
        )?;
    }
    let out = gpu.empty(OP, &[2], DType::F32)?;
    let p = ClipParams {
        count: count as u32,
        max_norm,
        _pad: [0; 2],
    };
    enc.dispatch(
        &OPTIM,
        "clip_coef",
        &[],
        bytemuck::bytes_of(&p),
        &[&sq, &out],
        [1, 1, 1],
    )?;
    Ok(out)
}

/// Multiplies every gradient in place by the coefficient of a [`clip_grad_norm`] result (what
/// `clip_grad_norm_` does to `.grad`); unneeded before [`adamw_step`], which can apply it itself.
pub fn scale_grads(enc: &mut Encoder, grads: &[&Tensor], clip: &Tensor) -> Result<()> {
    const OP: &str = "scale_grads";
    check_coef(OP, clip)?;
    for g in grads {
        check_f32(OP, "grad", g)?;
        if same_buffer(g, clip) {
            return Err(Error::shape(
                OP,
                "a gradient shares the clip tensor's buffer",
            ));
        }
        let n = u32::try_from(g.numel())
            .map_err(|_| Error::shape(OP, format!("{:?} exceeds u32 indexing", g.shape())))?;
        if n == 0 {
            continue;
        }
        let p = ScaleParams { n, _pad: [0; 3] };
        let grid = enc.gpu().grid((n as u64).div_ceil(256));
        enc.dispatch(
            &OPTIM,
            "scale",
            &[],
            bytemuck::bytes_of(&p),
            &[clip, g],
            grid,
        )?;
    }
    Ok(())
}

/// References: PyTorch's formulas with PyTorch's f32 roundings.
pub mod cpu {
    use super::AdamW;

    /// One step of `torch.optim.AdamW` (torch/optim/adamw.py, `_single_tensor_adamw`, amsgrad
    /// off), each line one PyTorch tensor op rounded to f32:
    ///
    /// ```text
    /// param.mul_(1 - lr * weight_decay)
    /// exp_avg.lerp_(grad, 1 - beta1)                 # m + w·(g − m), w < 0.5
    /// exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    /// bias_correction1 = 1 - beta1 ** step;  bias_correction2 = 1 - beta2 ** step
    /// step_size = lr / bias_correction1
    /// denom = (exp_avg_sq.sqrt() / sqrt(bias_correction2)).add_(eps)
    /// param.addcdiv_(exp_avg, denom, value=-step_size)
    /// ```
    ///
    /// `clip` multiplies the gradient first (`clip_grad_norm_` before the step).
    pub fn adamw_step(
        cfg: &AdamW,
        t: u64,
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        clip: Option<f32>,
    ) {
        let s = cfg.scalars(t);
        for i in 0..param.len() {
            let g = match clip {
                Some(c) => grad[i] * c,
                None => grad[i],
            };
            let w = param[i] * s.decay;
            let mi = m[i] + s.lerp_w * (g - m[i]);
            let vi = v[i] * s.beta2 + s.one_m_beta2 * g * g;
            let denom = vi.sqrt() / s.bc2_sqrt + s.eps;
            m[i] = mi;
            v[i] = vi;
            param[i] = w + s.neg_step * mi / denom;
        }
    }

    /// `clip_grad_norm_`'s (total norm, clamped coefficient), the norm in f64:
    /// `total = ‖(‖g₁‖, …, ‖gₙ‖)‖₂`, `coef = min(max_norm / (total + 1e-6), 1)`.
    pub fn clip_coef(grads: &[&[f32]], max_norm: f32) -> (f32, f32) {
        let s: f64 = grads
            .iter()
            .flat_map(|g| g.iter())
            .map(|&x| x as f64 * x as f64)
            .sum();
        let total = s.sqrt() as f32;
        (total, (max_norm / (total + 1e-6)).min(1.0))
    }
}
