//! The official optimiser recipe: a multi-stage learning-rate schedule (constant within a stage,
//! no warm-up), parameter groups (the backbone, names starting `basemodel.`, at lr × 0.1) and
//! AdamW with weight decay 1e-4. The per-group learning rate is only a different
//! [`AdamW::lr`](crate::ops::optim::AdamW) for the same kernel ([`crate::ops::optim::adamw_step`]).

use crate::gpu::{Encoder, Tensor};
use crate::ops::optim::{self, AdamState, AdamW};
use crate::{Error, Result};

/// One constant-lr stage: epochs `[start, next stage's start)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    pub start_epoch: usize,
    pub lr: f64,
}

/// A piecewise-constant schedule over epochs; the last stage lasts for ever.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    stages: Vec<Stage>,
}

impl LrSchedule {
    /// Stages must start at epoch 0 and be strictly increasing, with finite lr ≥ 0.
    pub fn new(stages: Vec<Stage>) -> Result<LrSchedule> {
        let ok_start = stages.first().is_some_and(|s| s.start_epoch == 0);
        let increasing = stages
            .windows(2)
            .all(|w| w[0].start_epoch < w[1].start_epoch);
        let finite = stages.iter().all(|s| s.lr.is_finite() && s.lr >= 0.0);
        if !(ok_start && increasing && finite) {
            return Err(Error::shape(
                "lr_schedule",
                format!(
                    "stages must start at epoch 0, strictly increase and have finite lr ≥ 0, got {stages:?}"
                ),
            ));
        }
        Ok(LrSchedule { stages })
    }

    /// SparseTT's: 1e-4 for epochs 0–9, 1e-5 for 10–14, 1e-6 from 15 (20 epochs in all).
    pub fn official() -> LrSchedule {
        LrSchedule {
            stages: vec![
                Stage {
                    start_epoch: 0,
                    lr: 1e-4,
                },
                Stage {
                    start_epoch: 10,
                    lr: 1e-5,
                },
                Stage {
                    start_epoch: 15,
                    lr: 1e-6,
                },
            ],
        }
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The base learning rate of `epoch` (0-based).
    pub fn lr(&self, epoch: usize) -> f64 {
        self.stages
            .iter()
            .rev()
            .find(|s| s.start_epoch <= epoch)
            .map_or(self.stages[0].lr, |s| s.lr)
    }
}

/// A parameter group: parameters whose name starts with `prefix` train at `lr_mult` × the
/// schedule's lr. The first matching group wins; unmatched names use × 1.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    pub prefix: String,
    pub lr_mult: f64,
}

/// The schedule, the groups and AdamW's other hyper-parameters, together.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimConfig {
    pub schedule: LrSchedule,
    pub groups: Vec<ParamGroup>,
    /// β, ε and weight decay; its `lr` is ignored (the schedule and groups set it).
    pub adamw: AdamW,
}

impl Default for OptimConfig {
    /// The official recipe: [`LrSchedule::official`], `basemodel.` × 0.1, AdamW with PyTorch's
    /// β = (0.9, 0.999), ε = 1e-8 and weight decay 1e-4.
    fn default() -> Self {
        OptimConfig {
            schedule: LrSchedule::official(),
            groups: vec![ParamGroup {
                prefix: "basemodel.".into(),
                lr_mult: 0.1,
            }],
            adamw: AdamW {
                weight_decay: 1e-4,
                ..AdamW::default()
            },
        }
    }
}

impl OptimConfig {
    /// The lr multiplier of a parameter name.
    pub fn lr_mult(&self, name: &str) -> f64 {
        self.groups
            .iter()
            .find(|g| name.starts_with(&g.prefix))
            .map_or(1.0, |g| g.lr_mult)
    }

    /// The learning rate of parameter `name` in `epoch`: schedule lr × group multiplier.
    pub fn lr(&self, name: &str, epoch: usize) -> f64 {
        self.schedule.lr(epoch) * self.lr_mult(name)
    }

    /// The AdamW hyper-parameters for parameter `name` in `epoch`.
    pub fn adamw_for(&self, name: &str, epoch: usize) -> AdamW {
        AdamW {
            lr: self.lr(name, epoch),
            ..self.adamw
        }
    }

    /// One AdamW step (`t` ≥ 1) of parameter `name` with its group's lr in `epoch`: the existing
    /// [`optim::adamw_step`] kernel with this parameter's scalars.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        enc: &mut Encoder,
        name: &str,
        epoch: usize,
        t: u64,
        param: &Tensor,
        grad: &Tensor,
        state: &AdamState,
        clip: Option<&Tensor>,
    ) -> Result<()> {
        optim::adamw_step(
            enc,
            &self.adamw_for(name, epoch),
            t,
            param,
            grad,
            state,
            clip,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_lr_per_epoch() {
        let s = LrSchedule::official();
        for e in 0..10 {
            assert_eq!(s.lr(e), 1e-4, "epoch {e}");
        }
        for e in 10..15 {
            assert_eq!(s.lr(e), 1e-5, "epoch {e}");
        }
        for e in 15..20 {
            assert_eq!(s.lr(e), 1e-6, "epoch {e}");
        }
        assert_eq!(s.lr(100), 1e-6);
    }

    #[test]
    fn groups_scale_the_backbone() {
        let c = OptimConfig::default();
        let bb = "basemodel.net.stages.0.blocks.0.norm1.weight";
        assert_eq!(c.lr_mult(bb), 0.1);
        assert_eq!(c.lr_mult("head.si_fc"), 1.0);
        assert_eq!(c.lr_mult("neck.encoder.x"), 1.0);
        // A prefix match, not a substring one.
        assert_eq!(c.lr_mult("head.basemodel.x"), 1.0);
        assert_eq!(c.lr(bb, 0), 1e-4 * 0.1);
        assert_eq!(c.lr(bb, 12), 1e-5 * 0.1);
        assert_eq!(c.lr("head.x", 19), 1e-6);
        let a = c.adamw_for(bb, 3);
        assert_eq!((a.lr, a.weight_decay), (1e-4 * 0.1, 1e-4));
        assert_eq!((a.beta1, a.beta2, a.eps), (0.9, 0.999, 1e-8));
    }

    #[test]
    fn custom_stages() {
        let s = LrSchedule::new(vec![
            Stage {
                start_epoch: 0,
                lr: 3.0,
            },
            Stage {
                start_epoch: 2,
                lr: 1.0,
            },
        ])
        .unwrap();
        assert_eq!((s.lr(0), s.lr(1), s.lr(2), s.lr(9)), (3.0, 3.0, 1.0, 1.0));
        for bad in [
            vec![],
            vec![Stage {
                start_epoch: 1,
                lr: 1.0,
            }],
            vec![
                Stage {
                    start_epoch: 0,
                    lr: 1.0,
                },
                Stage {
                    start_epoch: 0,
                    lr: 2.0,
                },
            ],
            vec![Stage {
                start_epoch: 0,
                lr: f64::NAN,
            }],
        ] {
            let e = LrSchedule::new(bad).unwrap_err().to_string();
            assert!(e.contains("lr_schedule"), "{e}");
        }
    }
}
