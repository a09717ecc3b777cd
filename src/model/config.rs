//! The architecture's sizes as one value, so the same code builds the official SparseTT and
//! smaller variants (the demo model, browser tests, training on a CPU adapter).
//!
//! A configuration travels with its weights: a safetensors file stores it under the metadata key
//! [`METADATA_KEY`] as the text [`Config`]'s `Display` writes (`embed=32 depths=1,1,2 …`), and a
//! file without that key is the official model.

use std::fmt;
use std::str::FromStr;

use crate::model::keys::{self, KeyDType};
use crate::model::weights::{derived_tensor, HostTensor, StateDict, PRNG_MIN_NUMEL};
use crate::prng::{prng_weights, SplitMix64};
use crate::{Error, Result};

/// The safetensors `__metadata__` key that holds a non-official configuration.
pub const METADATA_KEY: &str = "sparsett.config";

/// The safetensors `__metadata__` key that holds the tracker hyper-parameters tuned for the
/// weights (`test_lr=… window_influence=… penalty_k=…`): what `track`, `eval` and the browser
/// use when no preset is asked for.
pub const PRESET_KEY: &str = "sparsett.preset";

/// Template crop side (pixels) and its feature-map side after the total stride of 16.
pub const Z_SIZE: usize = 127;
pub const Z_FEAT: usize = 8;
/// Search crop side (pixels) and its feature-map (= score-map) side.
pub const X_SIZE: usize = 289;
pub const X_FEAT: usize = 19;

/// The architecture's knobs (the paper's); crop sizes 127/289 and total stride 16 are fixed.
///
/// Channels: Swin stages have `embed`, `2·embed`, `4·embed`; the adjusters map `4·embed` to
/// `d_model`; the head takes `2·d_model` (decoder output next to the adjusted search features).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Swin embed dim C (96); stage channels C, 2C, 4C; backbone output 4C.
    pub embed: usize,
    /// Blocks per used stage ([2, 2, 6]).
    pub depths: [usize; 3],
    /// Swin heads per stage ([3, 6, 12]).
    pub heads: [usize; 3],
    /// Swin window side (7); odd blocks shift by `window / 2`.
    pub window: usize,
    /// Neck width (256) = adjuster output.
    pub d_model: usize,
    /// Attention heads of the neck (8).
    pub neck_heads: usize,
    /// Hidden width of the neck's feed-forward layers (2048).
    pub ffn: usize,
    pub enc_layers: usize,
    pub dec_layers: usize,
    /// Keys each decoder self-attention query keeps (32).
    pub top_k: usize,
    /// Channels of both heads (1024).
    pub head_width: usize,
    /// Bottlenecks in the conv-head (7).
    pub head_convs: usize,
    /// Bottleneck width (256).
    pub bottleneck: usize,
}

/// Head widths the attention kernels take in every variant (the register kernels hold a head's
/// row in 4-wide registers, at most 32 wide).
const MAX_HEAD_DIM: usize = crate::ops::attention::MAX_REGISTER_HEAD_DIM;

impl Config {
    /// SparseTT with Swin-T as published (GOT-10k configuration).
    pub fn official() -> Config {
        Config {
            embed: 96,
            depths: [2, 2, 6],
            heads: [3, 6, 12],
            window: 7,
            d_model: 256,
            neck_heads: 8,
            ffn: 2048,
            enc_layers: 2,
            dec_layers: 2,
            top_k: 32,
            head_width: 1024,
            head_convs: 7,
            bottleneck: 256,
        }
    }

    /// A reduced model for the demo, browser tests and training on a CPU adapter: every part of
    /// the official architecture is there (shifted windows, both PatchMergings, encoder, top-K
    /// decoder, both heads), only narrower and shallower.
    ///
    /// 0.873 M parameters (the official model: 30.96 M); 0.961 GFLOP per track step (official:
    /// 25.7) and 0.176 GFLOP per template step (official: 3.7), counting 2 per multiply-add of
    /// the matmuls, convolutions and attention products (see [`Config::track_flops`]). Most of
    /// it is the backbone at 289 px (about 0.70 GFLOP) and the head (0.17).
    pub fn tiny() -> Config {
        Config {
            embed: 32,
            depths: [1, 1, 2],
            heads: [1, 2, 4],
            window: 7,
            d_model: 64,
            neck_heads: 4,
            ffn: 256,
            enc_layers: 1,
            dec_layers: 1,
            top_k: 32,
            head_width: 128,
            head_convs: 1,
            bottleneck: 32,
        }
    }

    /// A configuration by name: `official` or `tiny`.
    pub fn named(name: &str) -> Result<Config> {
        match name {
            "official" => Ok(Config::official()),
            "tiny" => Ok(Config::tiny()),
            _ => Err(Error::Other(format!(
                "unknown model configuration '{name}' (known: official, tiny)"
            ))),
        }
    }

    pub fn is_official(&self) -> bool {
        *self == Config::official()
    }

    /// Channels of Swin stage `s` (0, 1, 2).
    pub fn stage_channels(&self, s: usize) -> usize {
        self.embed << s
    }

    /// Channels of the backbone output (stage 2).
    pub fn backbone_out(&self) -> usize {
        self.embed << 2
    }

    /// Channels of the head's input.
    pub fn head_in(&self) -> usize {
        2 * self.d_model
    }

    /// Checks that the kernels can run this architecture; the error lists every problem.
    pub fn validate(&self) -> Result<()> {
        let mut bad = Vec::new();
        let mut head_dim = |what: String, c: usize, h: usize| {
            if h == 0 || !c.is_multiple_of(h) {
                bad.push(format!("{what}: {c} channels do not split into {h} heads"));
            } else if !(c / h).is_multiple_of(4) || c / h > MAX_HEAD_DIM {
                bad.push(format!(
                    "{what}: head width {} ({c} / {h}) must be a multiple of 4 and at most \
                     {MAX_HEAD_DIM}",
                    c / h
                ));
            }
        };
        for s in 0..3 {
            head_dim(
                format!("Swin stage {s}"),
                self.stage_channels(s),
                self.heads[s],
            );
        }
        head_dim("the neck".into(), self.d_model, self.neck_heads);
        if self.depths.contains(&0) {
            bad.push(format!(
                "every stage needs at least one block (depths {:?})",
                self.depths
            ));
        }
        if self.window < 2 {
            bad.push(format!("window {} must be at least 2", self.window));
        }
        if !self.d_model.is_multiple_of(2) {
            bad.push(format!(
                "d_model {} must be even (row and column halves of the position encoding)",
                self.d_model
            ));
        }
        let keys = X_FEAT * X_FEAT;
        let max_k = crate::ops::topk::MAX_K.min(keys);
        if self.top_k == 0 || self.top_k > max_k {
            bad.push(format!("top_k {} must be in 1..={max_k}", self.top_k));
        }
        if self.dec_layers == 0 {
            bad.push("the decoder needs at least one layer".into());
        }
        for (name, v) in [
            ("embed", self.embed),
            ("ffn", self.ffn),
            ("head_width", self.head_width),
            ("bottleneck", self.bottleneck),
        ] {
            if v == 0 {
                bad.push(format!("{name} must be positive"));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::Other(format!(
                "model configuration '{self}' is not supported: {}",
                bad.join("; ")
            )))
        }
    }

    /// Entries of this configuration's state dict in `state_dict()` order (see [`keys::schema`]).
    pub fn schema(&self) -> Vec<keys::KeySpec> {
        keys::schema(self)
    }

    /// Trainable parameter values inference uses.
    pub fn num_params(&self) -> usize {
        self.schema()
            .iter()
            .filter(|k| k.used && !k.is_buffer())
            .map(|k| k.numel())
            .sum()
    }

    /// FLOPs of one template step for one target (2 per multiply-add of every matmul,
    /// convolution and attention product; norms, softmax and elementwise work are left out).
    pub fn template_flops(&self) -> f64 {
        let d = self.d_model as f64;
        let z = (Z_FEAT * Z_FEAT) as f64;
        let layer = 2.0 * z * d * 3.0 * d
            + 4.0 * z * z * d
            + 2.0 * z * d * d
            + 4.0 * z * d * self.ffn as f64;
        self.backbone_flops(Z_SIZE)
            + 2.0 * z * self.backbone_out() as f64 * d
            + self.enc_layers as f64 * layer
            + self.dec_layers as f64 * 2.0 * z * d * 2.0 * d
    }

    /// FLOPs of one track step for one target, counted as in [`Config::template_flops`]; the
    /// decoder's top-K attention counts the full score matrix and K products with values.
    pub fn track_flops(&self) -> f64 {
        let d = self.d_model as f64;
        let n = (X_FEAT * X_FEAT) as f64;
        let z = (Z_FEAT * Z_FEAT) as f64;
        let layer = 2.0 * n * d * 3.0 * d
            + 2.0 * n * n * d
            + 2.0 * n * self.top_k as f64 * d
            + 2.0 * n * d * d
            + 2.0 * n * d * d
            + 4.0 * n * z * d
            + 2.0 * n * d * d
            + 4.0 * n * d * self.ffn as f64;
        let (hi, w, b) = (
            self.head_in() as f64,
            self.head_width as f64,
            self.bottleneck as f64,
        );
        let head = 2.0
            * n
            * (hi * w
                + w * w
                + 5.0 * w
                + hi * w
                + 9.0 * hi * hi
                + hi * w
                + self.head_convs as f64 * (w * b + 9.0 * b * b + b * w)
                + 5.0 * w);
        self.backbone_flops(X_SIZE)
            + 2.0 * n * self.backbone_out() as f64 * d
            + self.dec_layers as f64 * layer
            + head
    }

    fn backbone_flops(&self, size: usize) -> f64 {
        let sides = crate::model::swin::Swin::stage_sizes(size);
        let c0 = self.embed as f64;
        let mut f = 2.0 * (sides[0] * sides[0]) as f64 * c0 * 48.0;
        let win = (self.window * self.window) as f64;
        for (s, &side) in sides.iter().enumerate() {
            let c = self.stage_channels(s) as f64;
            let t = (side * side) as f64;
            let padded = side.div_ceil(self.window) * self.window;
            let tp = (padded * padded) as f64;
            let block =
                2.0 * tp * c * 3.0 * c + 4.0 * tp * win * c + 2.0 * t * c * c + 16.0 * t * c * c;
            f += self.depths[s] as f64 * block;
            if s < 2 {
                let next = sides[s + 1];
                f += 2.0 * (next * next) as f64 * 4.0 * c * 2.0 * c;
            }
        }
        f
    }

    /// A complete, valid, deterministic weight set for this configuration (every entry of its
    /// schema): matrices and convolution kernels LeCun-uniform as in the golden PRNG rule (for
    /// the official configuration these are the golden weights' large entries), LayerNorm and
    /// BatchNorm scales 1 ± 0.1, biases and running means within ± 0.1, running variances in
    /// [0.5, 1.5), relative-position tables within ± 0.02, position embeddings in [0, 1), box
    /// scales 1 and offsets 0. The dict carries the configuration (saved as metadata).
    pub fn random_weights(&self, seed: u64) -> Result<StateDict> {
        self.validate()?;
        let mut sd = StateDict::new();
        for spec in self.schema() {
            if spec.derived {
                if let Some(t) = derived_tensor(&spec) {
                    sd.insert(spec.key, t);
                }
                continue;
            }
            debug_assert_eq!(spec.dtype, KeyDType::F32);
            let n = spec.numel();
            let mut rng = SplitMix64::for_key(&spec.key, seed ^ 0x5EED_C0F1_6000_0000);
            let mut uniform = |lo: f32, hi: f32| rng.vec_f32(n, lo, hi);
            let k = spec.key.as_str();
            let v = if k.starts_with("head.si_") {
                vec![1.0]
            } else if k.starts_with("head.bi_") {
                vec![0.0]
            } else if k.ends_with(".running_var") {
                uniform(0.5, 1.5)
            } else if k.ends_with("_embed.weight") {
                uniform(0.0, 1.0)
            } else if k.ends_with(".relative_position_bias_table") {
                uniform(-0.02, 0.02)
            } else if spec.shape.len() >= 2 || n > PRNG_MIN_NUMEL {
                prng_weights(k, seed, &spec.shape)
            } else if k.ends_with(".weight") {
                uniform(0.9, 1.1)
            } else {
                uniform(-0.1, 0.1)
            };
            sd.insert(spec.key, HostTensor::f32(&spec.shape, v));
        }
        sd.set_config(Some(self.clone()));
        sd.validate()?;
        Ok(sd)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::official()
    }
}

fn join(v: &[usize; 3]) -> String {
    format!("{},{},{}", v[0], v[1], v[2])
}

/// `embed=96 depths=2,2,6 heads=3,6,12 window=7 d_model=256 neck_heads=8 ffn=2048 enc_layers=2
/// dec_layers=2 top_k=32 head_width=1024 head_convs=7 bottleneck=256` (one line).
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "embed={} depths={} heads={} window={} d_model={} neck_heads={} ffn={} enc_layers={} \
             dec_layers={} top_k={} head_width={} head_convs={} bottleneck={}",
            self.embed,
            join(&self.depths),
            join(&self.heads),
            self.window,
            self.d_model,
            self.neck_heads,
            self.ffn,
            self.enc_layers,
            self.dec_layers,
            self.top_k,
            self.head_width,
            self.head_convs,
            self.bottleneck
        )
    }
}

const FIELDS: [&str; 13] = [
    "embed",
    "depths",
    "heads",
    "window",
    "d_model",
    "neck_heads",
    "ffn",
    "enc_layers",
    "dec_layers",
    "top_k",
    "head_width",
    "head_convs",
    "bottleneck",
];

/// Parses the `Display` text: whitespace-separated `key=value` pairs, every field exactly once
/// (lists as `a,b,c`), then [`Config::validate`].
impl FromStr for Config {
    type Err = Error;

    fn from_str(s: &str) -> Result<Config> {
        let err = |m: String| Error::Other(format!("model configuration '{s}': {m}"));
        let num = |k: &str, v: &str| {
            v.parse::<usize>()
                .map_err(|_| err(format!("{k}={v} is not a non-negative integer")))
        };
        let triple = |k: &str, v: &str| -> Result<[usize; 3]> {
            let parts: Vec<&str> = v.split(',').collect();
            if parts.len() != 3 {
                return Err(err(format!(
                    "{k}={v} must be three comma-separated integers (one per stage)"
                )));
            }
            Ok([num(k, parts[0])?, num(k, parts[1])?, num(k, parts[2])?])
        };
        let mut c = Config::official();
        let mut seen = [false; FIELDS.len()];
        for item in s.split_whitespace() {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| err(format!("'{item}' is not key=value")))?;
            let i = FIELDS
                .iter()
                .position(|f| *f == k)
                .ok_or_else(|| err(format!("unknown key '{k}' (known: {})", FIELDS.join(", "))))?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(err(format!("'{k}' is given twice")));
            }
            match k {
                "embed" => c.embed = num(k, v)?,
                "depths" => c.depths = triple(k, v)?,
                "heads" => c.heads = triple(k, v)?,
                "window" => c.window = num(k, v)?,
                "d_model" => c.d_model = num(k, v)?,
                "neck_heads" => c.neck_heads = num(k, v)?,
                "ffn" => c.ffn = num(k, v)?,
                "enc_layers" => c.enc_layers = num(k, v)?,
                "dec_layers" => c.dec_layers = num(k, v)?,
                "top_k" => c.top_k = num(k, v)?,
                "head_width" => c.head_width = num(k, v)?,
                "head_convs" => c.head_convs = num(k, v)?,
                _ => c.bottleneck = num(k, v)?,
            }
        }
        let missing: Vec<&str> = FIELDS
            .iter()
            .zip(seen)
            .filter(|(_, s)| !s)
            .map(|(f, _)| *f)
            .collect();
        if !missing.is_empty() {
            return Err(err(format!("missing {}", missing.join(", "))));
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        for c in [Config::official(), Config::tiny()] {
            assert_eq!(c.to_string().parse::<Config>().unwrap(), c);
        }
    }

    #[test]
    fn parse_errors() {
        let t = Config::tiny().to_string();
        let e = |s: &str| s.parse::<Config>().unwrap_err().to_string();
        assert!(e(&t.replace("embed=32 ", "")).contains("missing embed"));
        assert!(e(&format!("{t} ffn=3")).contains("'ffn' is given twice"));
        assert!(e(&format!("{t} colour=red")).contains("unknown key 'colour'"));
        assert!(e(&t.replace("depths=1,1,2", "depths=1,2")).contains("three"));
        assert!(e(&t.replace("ffn=256", "ffn=x")).contains("ffn=x"));
        assert!(e(&t.replace("top_k=32", "top_k")).contains("key=value"));
        // 64 channels in 3 heads; neck head width 64 / 4 = 16 is fine, 64 / 1 = 64 is too wide.
        assert!(e(&t.replace("heads=1,2,4", "heads=1,3,4")).contains("Swin stage 1"));
        assert!(e(&t.replace("neck_heads=4", "neck_heads=1")).contains("head width 64"));
        assert!(e(&t.replace("top_k=32", "top_k=0")).contains("top_k 0"));
    }

    #[test]
    fn official_sizes() {
        let c = Config::official();
        assert_eq!(c.backbone_out(), 384);
        assert_eq!(c.head_in(), 512);
        // The spec's 30.96 M inference parameters.
        assert_eq!((c.num_params() as f64 / 1e4).round() / 100.0, 30.96);
    }

    /// The figures quoted in `Config::tiny`'s documentation.
    #[test]
    fn tiny_figures() {
        let c = Config::tiny();
        assert_eq!((c.num_params() as f64 / 1e3).round() / 1e3, 0.873);
        assert_eq!((c.track_flops() / 1e6).round() / 1e3, 0.961);
        assert_eq!((c.template_flops() / 1e6).round() / 1e3, 0.176);
        let o = Config::official();
        assert_eq!((o.track_flops() / 1e8).round() / 10.0, 25.7);
        assert_eq!((o.template_flops() / 1e8).round() / 10.0, 3.7);
    }
}
