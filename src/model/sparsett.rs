//! The whole SparseTT model: `template(z)` once per target, `track(&template, x)` per frame, both
//! batched over targets.

use crate::gpu::{Gpu, Tensor};
use crate::model::adjust::Adjuster;
use crate::model::config::Config;
use crate::model::focus::{FocusNet, TemplateMemory};
use crate::model::head::{Head, HeadOut};
use crate::model::load::{Loader, WeightSource};
use crate::model::swin::{Masks, Swin};
use crate::model::taps::Taps;
use crate::ops::layout::{concat, permute};
use crate::{Encoder, Error, Result};

pub use crate::model::config::{X_SIZE, Z_SIZE};
/// Score map side.
pub const SCORE_SIDE: usize = crate::model::config::X_FEAT;

pub struct SparseTT {
    backbone: Swin,
    adj_z: Adjuster,
    adj_x: Adjuster,
    neck: FocusNet,
    head: Head,
    masks_z: Masks,
    masks_x: Masks,
    config: Config,
}

/// Per-target template state: everything the search step needs from the template.
pub struct TemplateFeatures {
    pub memory: TemplateMemory,
    pub batch: usize,
}

/// Device-side outputs of one track step.
pub struct TrackOut {
    /// `[B, 361]` fused score.
    pub score: Tensor,
    /// `[B, 361, 4]` boxes (x1, y1, x2, y2) in search-crop pixels, from the conv branch.
    pub boxes: Tensor,
    pub head: HeadOut,
}

impl SparseTT {
    /// Builds the model on `gpu` from weights with the official key names, in the
    /// configuration the weights carry (official when they carry none).
    pub fn load(gpu: &Gpu, weights: &dyn WeightSource) -> Result<SparseTT> {
        let config = weights.config().unwrap_or_else(Config::official);
        Self::load_with(gpu, weights, &config)
    }

    /// Builds the model of configuration `config` on `gpu` from weights with its key names.
    pub fn load_with(gpu: &Gpu, weights: &dyn WeightSource, config: &Config) -> Result<SparseTT> {
        config.validate()?;
        let l = Loader::new(gpu, weights);
        let [_, _, zs] = Swin::stage_sizes(Z_SIZE);
        let [_, _, xs] = Swin::stage_sizes(X_SIZE);
        let backbone = Swin::load(&l, config)?;
        let mut enc = gpu.encoder();
        let masks_z = backbone.masks(&mut enc, Z_SIZE)?;
        let masks_x = backbone.masks(&mut enc, X_SIZE)?;
        enc.submit()?;
        Ok(SparseTT {
            backbone,
            adj_z: Adjuster::load(&l, "feat_adjuster_z", config)?,
            adj_x: Adjuster::load(&l, "feat_adjuster_x", config)?,
            neck: FocusNet::load(&l, config, zs, xs)?,
            head: Head::load(&l, config)?,
            masks_z,
            masks_x,
            config: config.clone(),
        })
    }

    /// The architecture this model was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn check_input(t: &Tensor, size: usize, what: &str) -> Result<usize> {
        let s = t.shape();
        if s.len() != 4 || s[1] != 3 || s[2] != size || s[3] != size || s[0] == 0 {
            return Err(Error::shape(
                "sparsett",
                format!("{what} must be [B, 3, {size}, {size}], got {s:?}"),
            ));
        }
        Ok(s[0])
    }

    /// Records the template step for normalised crops `z`: `[B, 3, 127, 127]`.
    pub fn template(
        &self,
        enc: &mut Encoder,
        z: &Tensor,
        taps: &mut Taps,
    ) -> Result<TemplateFeatures> {
        let batch = Self::check_input(z, Z_SIZE, "the template")?;
        let f = self.backbone.forward(enc, z, &self.masks_z, "z", taps)?;
        let a = self.adj_z.forward(enc, &f)?;
        tap_nchw(enc, taps, "feat_adjuster.z", &a)?;
        let memory = self.neck.encode(enc, &a, taps)?;
        Ok(TemplateFeatures { memory, batch })
    }

    /// Records the track step for normalised search crops `x`: `[B, 3, 289, 289]`.
    pub fn track(
        &self,
        enc: &mut Encoder,
        t: &TemplateFeatures,
        x: &Tensor,
        taps: &mut Taps,
    ) -> Result<TrackOut> {
        let batch = Self::check_input(x, X_SIZE, "the search region")?;
        if batch != t.batch {
            return Err(Error::shape(
                "sparsett",
                format!("{batch} search crops for {} templates", t.batch),
            ));
        }
        let f = self.backbone.forward(enc, x, &self.masks_x, "x", taps)?;
        let a = self.adj_x.forward(enc, &f)?;
        tap_nchw(enc, taps, "feat_adjuster.x", &a)?;
        let d = self.neck.decode(enc, &a, &t.memory, taps)?;
        // Decoder output and adjusted features side by side per token, then one transpose to
        // the NCHW map the head's convolutions take.
        let (b, l) = (d.dim(0), d.dim(1));
        let side = (l as f64).sqrt() as usize;
        let tokens = concat(enc, &[&d, &a], 2)?;
        let neck = permute(enc, &tokens, &[0, 2, 1])?.reshape(&[b, 2 * d.dim(2), side, side])?;
        taps.put("neck.output", &neck);
        let head = self.head.forward(enc, &neck, taps)?;
        Ok(TrackOut {
            score: head.decoded.score.clone(),
            boxes: head.decoded.bbox_conv.clone(),
            head,
        })
    }
}

/// Captures tokens `[B, s·s, C]` under `name` as the NCHW map the golden file stores (the
/// transpose is recorded only when capturing).
fn tap_nchw(enc: &mut Encoder, taps: &mut Taps, name: &str, t: &Tensor) -> Result<()> {
    if taps.enabled() {
        let (b, l, c) = (t.dim(0), t.dim(1), t.dim(2));
        let side = (l as f64).sqrt() as usize;
        let nchw = permute(enc, t, &[0, 2, 1])?.reshape(&[b, c, side, side])?;
        taps.put(name, &nchw);
    }
    Ok(())
}
