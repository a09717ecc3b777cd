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

impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Preset> {
        match s.to_ascii_lowercase().as_str() {
            "got10k" | "got-10k" | "lasot" | "trackingnet" => Ok(Preset::GOT10K),
            "otb" | "otb2015" | "otb100" => Ok(Preset::OTB),
            "uav" | "uav123" => Ok(Preset::UAV),
            _ => Err(Error::Other(format!(
                "unknown preset {s:?}: expected got10k (also lasot, trackingnet), otb or uav"
            ))),
        }
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
