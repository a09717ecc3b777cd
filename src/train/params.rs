//! The trainable parameters of the adjusters, the neck and the head, by official key name, as
//! GPU tensors (BatchNorm NOT folded: its weight and bias train, its running statistics are
//! buffers the frozen-mode forward reads). The backbone keeps its own ([`crate::train::swin`]).

use std::collections::HashMap;

use crate::autograd::{Tape, Var};
use crate::model::load::{Loader, WeightSource};
use crate::{Error, Gpu, Result, Tensor};

/// Parameters and buffers by official key, in a fixed order.
pub struct Params {
    params: Vec<(String, Tensor)>,
    buffers: HashMap<String, Tensor>,
    index: HashMap<String, usize>,
}

impl Params {
    /// Uploads `params` (trainable) and `buffers` (key, shape) from `weights`; shapes are checked.
    /// 0-d scalars (`head.si_fc`, …) become `[1]` tensors.
    pub fn load(
        gpu: &Gpu,
        weights: &dyn WeightSource,
        params: &[(String, Vec<usize>)],
        buffers: &[(String, Vec<usize>)],
    ) -> Result<Params> {
        let l = Loader::new(gpu, weights);
        let up = |k: &str, s: &[usize]| -> Result<Tensor> {
            let v = l.host(k, s)?;
            let shape = if s.is_empty() { vec![1] } else { s.to_vec() };
            gpu.upload(&shape, &v)
        };
        let mut out = Params {
            params: Vec::new(),
            buffers: HashMap::new(),
            index: HashMap::new(),
        };
        for (k, s) in params {
            out.index.insert(k.clone(), out.params.len());
            out.params.push((k.clone(), up(k, s)?));
        }
        for (k, s) in buffers {
            out.buffers.insert(k.clone(), up(k, s)?);
        }
        Ok(out)
    }

    /// The trainable tensors (official key, tensor); an optimizer step on them updates the
    /// model in place.
    pub fn list(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Registers parameter `key` on `tape` (each registration's gradient is added up under the
    /// key).
    pub fn var(&self, tape: &mut Tape, key: &str) -> Result<Var> {
        let i = self
            .index
            .get(key)
            .ok_or_else(|| Error::Other(format!("train::Params: no parameter '{key}'")))?;
        Ok(tape.param(key, &self.params[*i].1))
    }

    /// Adds a constant the forward reads every step (made once, at load).
    pub fn insert_buffer(&mut self, key: &str, t: Tensor) {
        self.buffers.insert(key.to_string(), t);
    }

    /// A buffer (BatchNorm running statistic, or a constant from [`Params::insert_buffer`]).
    pub fn buffer(&self, key: &str) -> Result<&Tensor> {
        self.buffers
            .get(key)
            .ok_or_else(|| Error::Other(format!("train::Params: no buffer '{key}'")))
    }
}

/// Keys and shapes of a BatchNorm `prefix` of `c` channels: (trainable, buffers).
pub(crate) fn bn_keys(prefix: &str, c: usize) -> [Vec<(String, Vec<usize>)>; 2] {
    [
        vec![
            (format!("{prefix}.weight"), vec![c]),
            (format!("{prefix}.bias"), vec![c]),
        ],
        vec![
            (format!("{prefix}.running_mean"), vec![c]),
            (format!("{prefix}.running_var"), vec![c]),
        ],
    ]
}

/// Frozen BatchNorm `prefix` (running statistics, as the golden step runs it) over dimension 1.
pub(crate) fn bn(
    p: &Params,
    tape: &mut Tape,
    enc: &mut crate::Encoder,
    x: &Var,
    prefix: &str,
    eps: f32,
) -> Result<Var> {
    let w = p.var(tape, &format!("{prefix}.weight"))?;
    let b = p.var(tape, &format!("{prefix}.bias"))?;
    let m = p.buffer(&format!("{prefix}.running_mean"))?.clone();
    let v = p.buffer(&format!("{prefix}.running_var"))?.clone();
    crate::autograd::ops::batch_norm_frozen(tape, enc, x, &w, &b, &m, &v, eps)
}
