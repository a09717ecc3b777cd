//! Moves named host weights to the GPU while building the model, with errors that name the key.

use std::collections::HashMap;

use crate::gpu::{Gpu, Tensor};
use crate::{Error, Result};

/// Read access to float weights by official key name (a validated state dict, or a test fixture).
pub trait WeightSource {
    /// Shape and row-major f32 values of `key`.
    fn get_f32(&self, key: &str) -> Option<(Vec<usize>, &[f32])>;

    /// The model configuration the weights are for, when they say (else the official one).
    fn config(&self) -> Option<crate::model::Config> {
        None
    }
}

impl WeightSource for HashMap<String, (Vec<usize>, Vec<f32>)> {
    fn get_f32(&self, key: &str) -> Option<(Vec<usize>, &[f32])> {
        self.get(key).map(|(s, v)| (s.clone(), v.as_slice()))
    }
}

pub(crate) struct Loader<'a> {
    pub gpu: &'a Gpu,
    src: &'a dyn WeightSource,
}

impl<'a> Loader<'a> {
    pub fn new(gpu: &'a Gpu, src: &'a dyn WeightSource) -> Self {
        Loader { gpu, src }
    }

    /// Host values of `key`, checked against the expected shape.
    pub fn host(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, v) = self
            .src
            .get_f32(key)
            .ok_or_else(|| Error::Other(format!("weights: missing '{key}'")))?;
        if s != shape {
            return Err(Error::Other(format!(
                "weights: '{key}' has shape {s:?}, the model needs {shape:?}"
            )));
        }
        Ok(v.to_vec())
    }

    /// `key` uploaded as a tensor of the given shape.
    pub fn tensor(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let v = self.host(key, shape)?;
        self.gpu.upload(shape, &v)
    }

    /// A 0-d scalar parameter.
    pub fn scalar(&self, key: &str) -> Result<f32> {
        Ok(self.host(key, &[])?[0])
    }

    /// BatchNorm parameters `(weight, bias, running_mean, running_var)` of `prefix`.
    pub fn bn(&self, prefix: &str, c: usize) -> Result<[Vec<f32>; 4]> {
        Ok([
            self.host(&format!("{prefix}.weight"), &[c])?,
            self.host(&format!("{prefix}.bias"), &[c])?,
            self.host(&format!("{prefix}.running_mean"), &[c])?,
            self.host(&format!("{prefix}.running_var"), &[c])?,
        ])
    }

    /// A convolution with BatchNorm folded in at load time: returns (weight, bias) tensors.
    pub fn conv_bn(
        &self,
        conv_key: &str,
        conv_bias_key: Option<&str>,
        bn_prefix: &str,
        shape: [usize; 4],
        eps: f32,
    ) -> Result<(Tensor, Tensor)> {
        let w = self.host(conv_key, &shape)?;
        let b = match conv_bias_key {
            Some(k) => Some(self.host(k, &[shape[0]])?),
            None => None,
        };
        let [g, beta, mean, var] = self.bn(bn_prefix, shape[0])?;
        let (wf, bf) = crate::ops::conv::fold_batch_norm(
            &w,
            b.as_deref(),
            shape[0],
            &g,
            &beta,
            &mean,
            &var,
            eps,
        );
        Ok((
            self.gpu.upload(&shape, &wf)?,
            self.gpu.upload(&[shape[0]], &bf)?,
        ))
    }
}

impl WeightSource for crate::model::weights::StateDict {
    fn get_f32(&self, key: &str) -> Option<(Vec<usize>, &[f32])> {
        let t = self.get(key)?;
        Some((t.shape.clone(), t.as_f32()?))
    }

    fn config(&self) -> Option<crate::model::Config> {
        Some(crate::model::weights::StateDict::config(self))
    }
}
