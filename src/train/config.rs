//! `sparsett train --config FILE`: a TOML file whose tables and keys mirror the official
//! video_analyst / SparseTT YAML training config (`train.track.model`, `.data`, `.trainer`,
//! `.optim`), so an official setting can be carried over key by key. The official GOT-10k and
//! full-data settings ship as examples (`src/train/configs/*.toml`, also reachable by name:
//! `--config got10k`, `--config fulldata`, `--config demo`).
//!
//! Differences from the YAML, each because TOML or this runtime needs it:
//! - `lr_policy` and `lr_multiplier` are tables, not JSON strings inside YAML strings.
//! - `lr_multiplier` matches a `prefix` of the parameter name instead of a Python regex; the
//!   first entry that matches wins, names matching none get ratio 1. The official pair
//!   (`basemodel` × 0.1, everything else × 1) is `prefix = "basemodel."`.
//! - Keys that only concern PyTorch (num_processes, pin_memory, amp, use_sync_bn, monitors,
//!   pretrained paths) are accepted and ignored.
//! - `[sparsett]` holds what the YAML has no key for: the seed, the validation set, gradient
//!   clipping, the initial weights and the reduced architecture knobs of the demo model.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::config::Config as Arch;
use crate::ops::loss::LossConfig;
use crate::ops::optim::AdamW;
use crate::train::schedule::{LrSchedule, OptimConfig, ParamGroup, Stage};
use crate::{Error, Result};

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainFile {
    pub train: TrainTable,
    #[serde(default)]
    pub test: Option<toml::Value>,
    #[serde(default)]
    pub sparsett: Extra,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainTable {
    pub track: Track,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Track {
    pub exp_name: String,
    #[serde(default = "default_exp_save")]
    pub exp_save: PathBuf,
    #[serde(default)]
    pub num_processes: Option<u32>,
    pub model: ModelTable,
    pub data: DataTable,
    #[serde(default)]
    pub trainer: Option<toml::Value>,
    pub optim: OptimTable,
}

fn default_exp_save() -> PathBuf {
    PathBuf::from("work_dir/train")
}

// ---------------------------------------------------------------- model

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTable {
    #[serde(default)]
    pub use_sync_bn: Option<bool>,
    #[serde(default)]
    pub task_model: Option<toml::Value>,
    pub backbone: Backbone,
    pub neck: Neck,
    pub task_head: TaskHead,
    pub losses: Losses,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backbone {
    pub name: String,
    #[serde(rename = "SwinTransformer")]
    pub swin: Swin,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swin {
    pub embed_dims: usize,
    /// Four stages as in the YAML; the fourth is never run.
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub window_size: usize,
    #[serde(default = "four")]
    pub mlp_ratio: usize,
    #[serde(default)]
    pub drop_rate: f32,
    #[serde(default)]
    pub attn_drop_rate: f32,
    #[serde(default = "drop_path_default")]
    pub drop_path_rate: f32,
    /// PyTorch-only keys, accepted and ignored.
    #[serde(default)]
    pub qkv_bias: Option<bool>,
    #[serde(default)]
    pub patch_norm: Option<bool>,
    #[serde(default)]
    pub with_cp: Option<bool>,
    #[serde(default)]
    pub convert_weights: Option<bool>,
    #[serde(default)]
    pub pretrained: Option<String>,
    #[serde(default)]
    pub out_indices: Option<Vec<usize>>,
}

fn four() -> usize {
    4
}

fn drop_path_default() -> f32 {
    0.2
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neck {
    pub name: String,
    #[serde(rename = "TransformerNeck")]
    pub transformer: TransformerNeck,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerNeck {
    pub mid_channels_model: usize,
    pub mid_channels_ffn: usize,
    pub num_heads: usize,
    pub num_encoder_layers: usize,
    pub num_decoder_layers: usize,
    pub prob_dropout: f32,
    #[serde(default)]
    pub f_z_size: Option<usize>,
    #[serde(default)]
    pub f_x_size: Option<usize>,
    pub top_k: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskHead {
    pub name: String,
    #[serde(rename = "DoubleConvFCBBoxHead")]
    pub double: DoubleHead,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoubleHead {
    pub in_channels: usize,
    pub num_convs: usize,
    #[serde(default)]
    pub x_size: Option<usize>,
    #[serde(default)]
    pub score_size: Option<usize>,
    #[serde(default)]
    pub total_stride: Option<usize>,
    /// Not in the YAML (the official head is always 1024 wide with 256-wide bottlenecks).
    #[serde(default = "head_width_default")]
    pub head_width: usize,
    #[serde(default = "bottleneck_default")]
    pub bottleneck_width: usize,
}

fn head_width_default() -> usize {
    1024
}

fn bottleneck_default() -> usize {
    256
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Losses {
    pub names: Vec<String>,
    #[serde(rename = "FocalLossFC")]
    pub focal_fc: FocalLoss,
    #[serde(rename = "IOULossFC")]
    pub iou_fc: IouLoss,
    #[serde(rename = "FocalLossConv")]
    pub focal_conv: FocalLoss,
    #[serde(rename = "IOULossConv")]
    pub iou_conv: IouLoss,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FocalLoss {
    pub name: String,
    pub alpha: f32,
    pub gamma: f32,
    pub weight: f32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IouLoss {
    pub name: String,
    pub weight: f32,
}

// ---------------------------------------------------------------- data

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataTable {
    #[serde(default)]
    pub exp_name: Option<String>,
    #[serde(default)]
    pub exp_save: Option<PathBuf>,
    pub num_epochs: usize,
    pub minibatch: usize,
    #[serde(default = "workers_default")]
    pub num_workers: usize,
    pub nr_image_per_epoch: usize,
    #[serde(default)]
    pub pin_memory: Option<bool>,
    #[serde(default)]
    pub datapipeline: Option<toml::Value>,
    pub sampler: Sampler,
    pub transformer: Transformer,
    #[serde(default)]
    pub target: Option<toml::Value>,
}

fn workers_default() -> usize {
    4
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampler {
    pub name: String,
    #[serde(rename = "TrackPairSampler")]
    pub pair: TrackPairSampler,
    pub submodules: SamplerSubmodules,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackPairSampler {
    pub negative_pair_ratio: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerSubmodules {
    pub dataset: DatasetList,
    pub filter: Filter,
}

/// `names` selects which of the dataset tables are used, as in the YAML.
#[derive(Clone, Debug, Deserialize)]
pub struct DatasetList {
    pub names: Vec<String>,
    #[serde(flatten)]
    pub tables: std::collections::BTreeMap<String, DatasetTable>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetTable {
    pub ratio: f64,
    #[serde(default = "max_diff_default")]
    pub max_diff: usize,
    pub dataset_root: PathBuf,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub subsets: Option<Vec<String>>,
    #[serde(default)]
    pub check_integrity: Option<bool>,
}

fn max_diff_default() -> usize {
    100
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub name: String,
    #[serde(rename = "TrackPairFilter")]
    pub pair: TrackPairFilter,
}

/// The official pair filter. Only `max_ratio` filters, as in the official code: its
/// `filter_unreasonable_training_boxes` puts the two area-rate comparisons in a tuple inside
/// `all([...])`, and a non-empty tuple is always true, so the area rates never reject a box (the
/// spec names only the aspect-ratio filter). They are read so that official configs load.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackPairFilter {
    pub max_area_rate: f64,
    pub min_area_rate: f64,
    pub max_ratio: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transformer {
    pub names: Vec<String>,
    #[serde(rename = "RandomCropTransformer")]
    pub random_crop: RandomCrop,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomCrop {
    /// Search-crop scale drawn from U(1/(1 + max_scale), 1 + max_scale).
    pub max_scale: f64,
    /// Shift drawn from U(−max_shift, max_shift) · s/2 per axis.
    pub max_shift: f64,
    #[serde(default)]
    pub z_size: Option<usize>,
    #[serde(default)]
    pub x_size: Option<usize>,
}

// ---------------------------------------------------------------- optim

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimTable {
    pub optimizer: Optimizer,
    #[serde(default)]
    pub grad_modifier: Option<toml::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Optimizer {
    pub name: String,
    #[serde(rename = "AdamW")]
    pub adamw: AdamWTable,
    #[serde(rename = "SGD", default)]
    pub sgd: Option<toml::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWTable {
    pub lr: f64,
    pub weight_decay: f64,
    #[serde(default)]
    pub amp: Option<bool>,
    #[serde(default)]
    pub minibatch: Option<usize>,
    #[serde(default)]
    pub nr_image_per_epoch: Option<usize>,
    pub lr_policy: Vec<LrPolicy>,
    #[serde(default)]
    pub lr_multiplier: Vec<LrMultiplier>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrPolicy {
    pub name: String,
    /// `[[end_epoch, lr], …]`: `lr` holds for epochs before `end_epoch`.
    pub lr_stages: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrMultiplier {
    pub name: String,
    /// Parameters whose official key starts with this train at `ratio` × the schedule's lr.
    pub prefix: String,
    pub ratio: f64,
}

// ---------------------------------------------------------------- sparsett

/// What the official YAML has no key for.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extra {
    /// Seeds pair sampling, augmentation, weight initialisation and dropout.
    #[serde(default)]
    pub seed: u64,
    /// Initial weights (safetensors or official .pkl); random initialisation when absent.
    #[serde(default)]
    pub init_weights: Option<PathBuf>,
    /// Global gradient-norm clipping (`clip_grad_norm_`), off when absent.
    #[serde(default)]
    pub grad_clip: Option<f32>,
    /// Held-out sequences in GOT-10k layout, tracked after every epoch for the success AUC.
    #[serde(default)]
    pub val_root: Option<PathBuf>,
    /// At most this many validation sequences (all when absent).
    #[serde(default)]
    pub val_sequences: Option<usize>,
    /// Checkpoint every this many steps besides the end of each epoch (0: epochs only).
    #[serde(default)]
    pub checkpoint_every: usize,
}

/// The shipped example configurations, by name.
pub const EXAMPLES: [(&str, &str); 4] = [
    (
        "got10k",
        include_str!("configs/sparsett_swin_train_got10k.toml"),
    ),
    (
        "fulldata",
        include_str!("configs/sparsett_swin_train_fulldata.toml"),
    ),
    ("demo", include_str!("configs/demo_tiny.toml")),
    ("demo-stage2", include_str!("configs/demo_stage2.toml")),
];

impl TrainFile {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<TrainFile> {
        let f: TrainFile =
            toml::from_str(text).map_err(|e| Error::Other(format!("{origin}: {e}")))?;
        f.check(origin)?;
        Ok(f)
    }

    /// Reads a file, or one of the [`EXAMPLES`] when `path` is one of their names.
    pub fn load(path: &Path) -> Result<TrainFile> {
        if let Some(name) = path.to_str() {
            if let Some((_, text)) = EXAMPLES.iter().find(|(n, _)| *n == name) {
                return TrainFile::parse(text, &format!("the built-in '{name}' config"));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Other(format!(
                "cannot read the training config {}: {e} (built-in configs: {})",
                path.display(),
                EXAMPLES.map(|(n, _)| n).join(", ")
            ))
        })?;
        TrainFile::parse(&text, &path.display().to_string())
    }

    fn check(&self, origin: &str) -> Result<()> {
        let t = &self.train.track;
        let bad = |msg: String| Err(Error::Other(format!("{origin}: {msg}")));
        let m = &t.model;
        if m.backbone.name != "SwinTransformer" {
            return bad(format!(
                "train.track.model.backbone.name is {:?}; only \"SwinTransformer\" is implemented",
                m.backbone.name
            ));
        }
        if m.neck.name != "TransformerNeck" || m.task_head.name != "DoubleConvFCBBoxHead" {
            return bad(
                "the neck must be TransformerNeck and the head DoubleConvFCBBoxHead".into(),
            );
        }
        let s = &m.backbone.swin;
        if s.depths.len() < 3 || s.num_heads.len() < 3 {
            return bad(
                "backbone depths and num_heads need at least the three stages that run".into(),
            );
        }
        if s.mlp_ratio != 4 {
            return bad(format!("mlp_ratio {} (only 4 is implemented)", s.mlp_ratio));
        }
        let d = m.neck.transformer.mid_channels_model;
        if m.task_head.double.in_channels != 2 * d {
            return bad(format!(
                "task_head in_channels {} must be 2 × the neck's mid_channels_model {d}",
                m.task_head.double.in_channels
            ));
        }
        if t.data.minibatch == 0 || t.data.nr_image_per_epoch == 0 || t.data.num_epochs == 0 {
            return bad(
                "data.minibatch, data.nr_image_per_epoch and data.num_epochs must be > 0".into(),
            );
        }
        let p = t.data.sampler.pair.negative_pair_ratio;
        if !(0.0..=1.0).contains(&p) {
            return bad(format!("negative_pair_ratio {p} is not in [0, 1]"));
        }
        let ds = &t.data.sampler.submodules.dataset;
        if ds.names.is_empty() {
            return bad("data.sampler.submodules.dataset.names is empty".into());
        }
        for n in &ds.names {
            match ds.tables.get(n) {
                None => {
                    return bad(format!(
                        "dataset {n:?} is listed in names but has no [...dataset.{n}] table"
                    ))
                }
                Some(d) if d.ratio.is_nan() || d.ratio <= 0.0 => {
                    return bad(format!("dataset {n} has ratio {} (must be > 0)", d.ratio))
                }
                _ => {}
            }
        }
        let o = &t.optim.optimizer;
        if o.name != "AdamW" {
            return bad(format!("optimizer {:?}: only AdamW is implemented", o.name));
        }
        for pol in &o.adamw.lr_policy {
            if pol.name != "MultiStageLR" {
                return bad(format!(
                    "lr_policy {:?}: only MultiStageLR is implemented",
                    pol.name
                ));
            }
            if pol.lr_stages.is_empty() || pol.lr_stages.windows(2).any(|w| w[1].0 <= w[0].0) {
                return bad("lr_stages must be non-empty with increasing end epochs".into());
            }
        }
        let l = &m.losses;
        if (l.focal_fc.alpha, l.focal_fc.gamma) != (l.focal_conv.alpha, l.focal_conv.gamma) {
            return bad("FocalLossFC and FocalLossConv must share alpha and gamma".into());
        }
        self.arch()
            .validate()
            .map_err(|e| Error::Other(format!("{origin}: {e}")))?;
        Ok(())
    }

    /// The architecture these keys describe.
    pub fn arch(&self) -> Arch {
        let m = &self.train.track.model;
        let s = &m.backbone.swin;
        let n = &m.neck.transformer;
        let h = &m.task_head.double;
        Arch {
            embed: s.embed_dims,
            depths: [s.depths[0], s.depths[1], s.depths[2]],
            heads: [s.num_heads[0], s.num_heads[1], s.num_heads[2]],
            window: s.window_size,
            d_model: n.mid_channels_model,
            neck_heads: n.num_heads,
            ffn: n.mid_channels_ffn,
            enc_layers: n.num_encoder_layers,
            dec_layers: n.num_decoder_layers,
            top_k: n.top_k,
            head_width: h.head_width,
            head_convs: h.num_convs,
            bottleneck: h.bottleneck_width,
        }
    }

    /// The schedule, the parameter groups and AdamW's hyper-parameters.
    pub fn optim(&self) -> Result<OptimConfig> {
        let a = &self.train.track.optim.optimizer.adamw;
        // `lr_stages` lists [end_epoch, lr]; a stage starts where the previous one ended.
        let stages = match a.lr_policy.first() {
            Some(p) => {
                let mut start = 0;
                let mut v = Vec::new();
                for &(end, lr) in &p.lr_stages {
                    v.push(Stage {
                        start_epoch: start,
                        lr,
                    });
                    start = end as usize;
                }
                v
            }
            None => vec![Stage {
                start_epoch: 0,
                lr: a.lr,
            }],
        };
        Ok(OptimConfig {
            schedule: LrSchedule::new(stages)?,
            groups: a
                .lr_multiplier
                .iter()
                .map(|m| ParamGroup {
                    prefix: m.prefix.clone(),
                    lr_mult: m.ratio,
                })
                .collect(),
            adamw: AdamW {
                weight_decay: a.weight_decay,
                ..AdamW::default()
            },
        })
    }

    /// The four loss weights and the focal loss's α and γ.
    pub fn losses(&self) -> LossConfig {
        let l = &self.train.track.model.losses;
        LossConfig {
            alpha: l.focal_fc.alpha,
            gamma: l.focal_fc.gamma,
            w_cls_fc: l.focal_fc.weight,
            w_reg_fc: l.iou_fc.weight,
            w_cls_conv: l.focal_conv.weight,
            w_reg_conv: l.iou_conv.weight,
        }
    }

    /// Optimizer steps per epoch: pairs per epoch ÷ batch, rounded up.
    pub fn steps_per_epoch(&self) -> usize {
        let d = &self.train.track.data;
        d.nr_image_per_epoch.div_ceil(d.minibatch)
    }
}
