//! The official test-time hyper-parameters (SparseTT's released test configs).

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Hyper-parameters of the box update; the names follow the official YAML.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    /// How fast the size follows the prediction (scaled by penalty · score).
    pub test_lr: f32,
    /// Weight of the Hann window (motion prior) in the final candidate score.
    pub window_influence: f64,
    /// Strength of the scale/ratio change penalty.
    pub penalty_k: f32,
}

impl Preset {
    /// GOT-10k, also used for LaSOT and TrackingNet.
    pub const GOT10K: Preset = Preset {
        name: "got10k",
        test_lr: 0.95,
        window_influence: 0.21,
        penalty_k: 0.04,
    };
    pub const OTB: Preset = Preset {
        name: "otb",
        test_lr: 0.626,
        window_influence: 0.2549,
        penalty_k: 0.053,
    };
    pub const UAV: Preset = Preset {
        name: "uav",
        test_lr: 0.7364,
        window_influence: 0.2398,
        penalty_k: 0.0734,
    };
    pub const ALL: [Preset; 3] = [Preset::GOT10K, Preset::OTB, Preset::UAV];
}

impl Default for Preset {
    fn default() -> Self {
        Preset::GOT10K
    }
}

impl Preset {
    /// The hyper-parameters stored with the weights (`sparsett.preset` metadata), if any: what
    /// a tracker should use unless asked for a benchmark's preset. A stored text that does not
    /// parse is an error, not a silent fallback.
    pub fn for_weights(sd: &crate::model::weights::StateDict) -> Result<Option<Preset>> {
        let Some(text) = sd.preset_text() else {
            return Ok(None);
        };
        let mut p: Preset = text.parse().map_err(|e| {
            Error::Other(format!(
                "the weights' '{}' metadata ({text:?}) is unusable: {e}",
                crate::model::config::PRESET_KEY
            ))
        })?;
        p.name = "weights";
        Ok(Some(p))
    }

    /// The `key=value` text [`FromStr`] reads back (and the weights' metadata stores).
    pub fn to_text(&self) -> String {
        format!(
            "test_lr={} window_influence={} penalty_k={}",
            self.test_lr, self.window_influence, self.penalty_k
        )
    }

    fn named(s: &str) -> Option<Preset> {
        match s.to_ascii_lowercase().as_str() {
            "got10k" | "got-10k" | "lasot" | "trackingnet" => Some(Preset::GOT10K),
            "otb" | "otb2015" | "otb100" => Some(Preset::OTB),
            "uav" | "uav123" => Some(Preset::UAV),
            _ => None,
        }
    }

    /// Sets one hyper-parameter by its YAML name.
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let v: f64 = value
            .trim()
            .parse()
            .map_err(|_| Error::Other(format!("preset: {key} = {value:?} is not a number")))?;
        let check = |lo: f64, hi: f64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::Other(format!(
                    "preset: {key} = {v} is outside [{lo}, {hi}]"
                )))
            }
        };
        match key.trim() {
            "test_lr" => {
                check(0.0, 1.0)?;
                self.test_lr = v as f32;
            }
            "window_influence" => {
                check(0.0, 1.0)?;
                self.window_influence = v;
            }
            "penalty_k" => {
                check(0.0, 10.0)?;
                self.penalty_k = v as f32;
            }
            other => {
                return Err(Error::Other(format!(
                    "preset: unknown hyper-parameter {other:?}: expected test_lr, \
                     window_influence or penalty_k"
                )))
            }
        }
        self.name = "custom";
        Ok(())
    }
}

/// A benchmark name (`got10k`, `otb`, `uav`), optionally followed by `key=value` overrides, or
/// overrides alone (on top of `got10k`), separated by commas or spaces:
/// `otb,window_influence=0.4` or `test_lr=0.3 penalty_k=0.05`.
impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Preset> {
        let mut parts = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .peekable();
        let mut preset = match parts.peek() {
            Some(first) if !first.contains('=') => {
                let p = Preset::named(first).ok_or_else(|| {
                    Error::Other(format!(
                        "unknown preset {first:?}: expected got10k (also lasot, trackingnet), \
                         otb or uav, optionally followed by key=value overrides"
                    ))
                })?;
                parts.next();
                p
            }
            Some(_) => Preset::GOT10K,
            None => return Err(Error::Other("empty preset".into())),
        };
        for kv in parts {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Error::Other(format!("preset: expected key=value, got {kv:?}")))?;
            preset.set(k, v)?;
        }
        Ok(preset)
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (test_lr {}, window_influence {}, penalty_k {})",
            self.name, self.test_lr, self.window_influence, self.penalty_k
        )
    }
}
