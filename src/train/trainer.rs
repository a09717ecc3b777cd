//! The training loop behind `sparsett train`: pairs from the sampler's background loader, GPU
//! crops, the model on the tape, the four losses, backward, optional global-norm clipping and
//! AdamW with the schedule's per-group learning rate — all recorded into one encoder per step,
//! with one read-back (the loss terms).
//!
//! Exact resumption: pair `i` of a run is drawn from `(seed, i)` alone (see
//! [`crate::data::Sampler::pair`]), step `s` trains on pairs `s·B … s·B + B − 1`, and a checkpoint
//! holds the weights, the AdamW moments and the step. So a run stopped after step `k` and resumed
//! computes exactly what an uninterrupted run computes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::autograd::Tape;
use crate::data::{self, crop_batch, Loader, Sampler, SamplerConfig, TrainKind};
use crate::model::config::Config;
use crate::model::weights::{HostTensor, StateDict};
use crate::model::SparseTT;
use crate::ops::loss::LossConfig;
use crate::ops::optim::{self, AdamState};
use crate::train::checkpoint::{self, TrainState};
use crate::train::config::TrainFile;
use crate::train::net::{Net, TrainOpts};
use crate::train::schedule::OptimConfig;
use crate::train::target::{batch_targets, TargetConfig};
use crate::{Error, Gpu, Result, Tensor};

/// What one step reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLog {
    pub step: u64,
    pub epoch: usize,
    /// Weighted loss terms: cls_fc, reg_fc, cls_conv, reg_conv, and their sum.
    pub cls_fc: f32,
    pub reg_fc: f32,
    pub cls_conv: f32,
    pub reg_conv: f32,
    pub total: f32,
    /// Base learning rate of the step (before the group multipliers).
    pub lr: f64,
}

/// A training run.
pub struct Trainer {
    gpu: Arc<Gpu>,
    cfg: TrainFile,
    arch: Config,
    optim: OptimConfig,
    losses: LossConfig,
    net: Net,
    /// Every entry of the weights file the run started from; trained values replace the
    /// parameters' when a checkpoint is written.
    base: StateDict,
    states: Vec<AdamState>,
    sampler: Arc<Sampler>,
    loader: Option<Loader>,
    step: u64,
    dir: PathBuf,
    last_checkpoint: Option<PathBuf>,
    last_loss: f32,
}

fn kind_of(table: &str) -> Result<TrainKind> {
    let k = match table {
        "GOT10kDataset" | "GOT10kDatasetFixed" => TrainKind::Got10k,
        "LaSOTDataset" => TrainKind::Lasot,
        "TrackingNetDataset" => TrainKind::TrackingNet,
        "VIDDataset" => TrainKind::Vid,
        "DETDataset" => TrainKind::Det,
        "COCODataset" => TrainKind::Coco,
        other => {
            return Err(Error::Other(format!(
                "training dataset table '{other}' is not one sparsett reads (GOT10kDataset, \
                 LaSOTDataset, TrackingNetDataset, VIDDataset, DETDataset, COCODataset)"
            )))
        }
    };
    Ok(k)
}

impl Trainer {
    /// Prepares a run writing checkpoints to `dir`; with `resume`, continues from `dir/latest`.
    pub fn new(gpu: Arc<Gpu>, cfg: TrainFile, dir: &Path, resume: bool) -> Result<Trainer> {
        let arch = cfg.arch();
        let optim = cfg.optim()?;
        let losses = cfg.losses();
        let seed = cfg.sparsett.seed;
        let (base, state) = match resume.then(|| checkpoint::load_latest(dir)).transpose()? {
            Some(Some((w, s))) => {
                if s.seed != seed {
                    return Err(Error::Other(format!(
                        "{}: the checkpoint was made with seed {}, the config says {seed}",
                        dir.display(),
                        s.seed
                    )));
                }
                (StateDict::load(&w)?, Some(s))
            }
            Some(None) => {
                return Err(Error::Other(format!(
                    "--resume: {} holds no checkpoint (no 'latest' file)",
                    dir.display()
                )))
            }
            None => match &cfg.sparsett.init_weights {
                Some(p) => (StateDict::load_checked(p)?, None),
                None => (arch.random_weights(seed)?, None),
            },
        };
        let net = Net::load_with(&gpu, &base, &arch)?;
        let params = net.param_list();
        let mut states = Vec::with_capacity(params.len());
        for (name, t) in &params {
            let st = match &state {
                None => AdamState::zeros(&gpu, t.shape())?,
                Some(s) => {
                    let (m, v) = s.moments.get(name).ok_or_else(|| {
                        Error::Other(format!(
                            "{}: the checkpoint has no optimizer state for {name}",
                            dir.display()
                        ))
                    })?;
                    if m.len() != t.numel() {
                        return Err(Error::Other(format!(
                            "{}: the optimizer state of {name} has {} values, the parameter {}",
                            dir.display(),
                            m.len(),
                            t.numel()
                        )));
                    }
                    AdamState {
                        m: gpu.upload(t.shape(), m)?,
                        v: gpu.upload(t.shape(), v)?,
                    }
                }
            };
            states.push(st);
        }
        let sampler = Arc::new(build_sampler(&cfg)?);
        Ok(Trainer {
            gpu,
            arch,
            optim,
            losses,
            net,
            base,
            states,
            sampler,
            loader: None,
            step: state.as_ref().map_or(0, |s| s.step),
            dir: dir.to_path_buf(),
            last_checkpoint: None,
            last_loss: state.map_or(f32::NAN, |s| s.loss),
            cfg,
        })
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn arch(&self) -> &Config {
        &self.arch
    }

    /// Steps of the whole run (epochs × steps per epoch).
    pub fn total_steps(&self) -> u64 {
        (self.cfg.train.track.data.num_epochs * self.cfg.steps_per_epoch()) as u64
    }

    pub fn epoch_of(&self, step: u64) -> usize {
        (step / self.cfg.steps_per_epoch() as u64) as usize
    }

    fn batch(&self) -> usize {
        self.cfg.train.track.data.minibatch
    }

    /// One optimizer step. A non-finite loss stops the run with an error naming the last good
    /// checkpoint; the weights in memory are then not to be trusted (the step was applied), the
    /// ones on disk are.
    pub fn train_step(&mut self) -> Result<StepLog> {
        let b = self.batch();
        if self.loader.is_none() {
            let workers = self.cfg.train.track.data.num_workers.max(1);
            self.loader = Some(Loader::new(
                self.sampler.clone(),
                self.step * b as u64,
                workers,
                2 * b,
            )?);
        }
        let pairs = self.loader.as_mut().expect("started above").next_batch(b)?;
        let epoch = self.epoch_of(self.step);
        let gpu = self.gpu.clone();
        let mut enc = gpu.encoder();
        let batch = crop_batch(&mut enc, &pairs)?;
        let tcfg = TargetConfig::default();
        let gts: Vec<([f32; 4], bool)> = batch
            .boxes
            .iter()
            .zip(&batch.negative)
            .map(|(b, n)| (*b, *n))
            .collect();
        let tg = batch_targets(&tcfg, &gts);
        let cells = tcfg.cells();
        let labels = gpu.upload(&[b, cells, 1], &tg.cls)?;
        let box_gt = gpu.upload(&[b, cells, 4], &tg.box_gt)?;

        let t = self.step + 1;
        let mut tape = Tape::new();
        let z = tape.constant(&batch.z);
        let x = tape.constant(&batch.x);
        // Stochastic depth and dropout draw fresh masks each step, from (seed, step) alone so a
        // resumed run draws the same ones.
        let opts = TrainOpts {
            drop_path_rate: self.cfg.train.track.model.backbone.swin.drop_path_rate,
            neck_dropout: self.cfg.train.track.model.neck.transformer.prob_dropout,
            seed: crate::prng::SplitMix64::for_key("drop_path", self.cfg.sparsett.seed ^ t)
                .next_u64(),
        };
        let pred = self.net.forward_with(&mut tape, &mut enc, &z, &x, &opts)?;
        let l = Net::losses(&mut tape, &mut enc, &pred, &labels, &box_gt, &self.losses)?;
        let terms = [
            l.cls_fc.t.clone(),
            l.reg_fc.t.clone(),
            l.cls_conv.t.clone(),
            l.reg_conv.t.clone(),
            l.total.t.clone(),
        ];
        let seed = gpu.upload(&[1], &[1.0])?;
        let grads = tape.backward(&mut enc, &l.total, seed)?;
        let params = self.net.param_list();
        let mut gs: Vec<&Tensor> = Vec::with_capacity(params.len());
        for (name, _) in &params {
            gs.push(grads.get(name).ok_or_else(|| {
                Error::Other(format!("training step: no gradient reached {name}"))
            })?);
        }
        let clip = match self.cfg.sparsett.grad_clip {
            Some(max) => Some(optim::clip_grad_norm(&mut enc, &gs, max)?),
            None => None,
        };
        for (((name, p), g), st) in params.iter().zip(&gs).zip(&self.states) {
            self.optim
                .step(&mut enc, name, epoch, t, p, g, st, clip.as_ref())?;
        }
        let refs: Vec<&Tensor> = terms.iter().collect();
        let v = enc.submit_read(&refs)?;
        let val = |i: usize| v[i][0];
        let log = StepLog {
            step: t,
            epoch,
            cls_fc: val(0),
            reg_fc: val(1),
            cls_conv: val(2),
            reg_conv: val(3),
            total: val(4),
            lr: self.optim.schedule.lr(epoch),
        };
        if !log.total.is_finite() {
            let keep = match &self.last_checkpoint {
                Some(p) => format!("the last good checkpoint is {}", p.display()),
                None => "no checkpoint was written yet".to_string(),
            };
            return Err(Error::Other(format!(
                "training stopped: the loss became {} at step {t} (epoch {epoch}; cls_fc {}, \
                 reg_fc {}, cls_conv {}, reg_conv {}); {keep}. Lower the learning rate or set \
                 [sparsett] grad_clip.",
                log.total, log.cls_fc, log.reg_fc, log.cls_conv, log.reg_conv
            )));
        }
        self.step = t;
        self.last_loss = log.total;
        Ok(log)
    }

    /// The current weights as a state dict with the official key names (the architecture's
    /// config in the file's metadata, so `--weights` picks it up).
    pub fn weights(&self) -> Result<StateDict> {
        let params = self.net.param_list();
        let refs: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
        let values = self.gpu.read_many(&refs)?;
        let mut sd = self.base.clone();
        for ((name, t), v) in params.iter().zip(values) {
            let shape = self
                .base
                .get(name)
                .map_or_else(|| t.shape().to_vec(), |h| h.shape.clone());
            sd.insert(name.clone(), HostTensor::f32(&shape, v));
        }
        Ok(sd)
    }

    /// Writes a checkpoint of the current step; returns the weights' path.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        let params = self.net.param_list();
        let mut moments = std::collections::BTreeMap::new();
        for ((name, _), st) in params.iter().zip(&self.states) {
            let mut mv = self.gpu.read_many(&[&st.m, &st.v])?.into_iter();
            let (m, v) = (mv.next().unwrap_or_default(), mv.next().unwrap_or_default());
            moments.insert(name.clone(), (m, v));
        }
        let state = TrainState {
            step: self.step,
            epoch: self.epoch_of(self.step) as u64,
            seed: self.cfg.sparsett.seed,
            moments,
            loss: self.last_loss,
        };
        let p = checkpoint::save(&self.dir, &self.weights()?, &state)?;
        self.last_checkpoint = Some(p.clone());
        Ok(p)
    }

    /// The model with the current weights, for tracking (validation).
    pub fn inference_model(&self) -> Result<SparseTT> {
        SparseTT::load_with(&self.gpu, &self.weights()?, &self.arch)
    }

    /// Mean success AUC (OPE) over the validation sequences of `[sparsett] val_root`, or `None`
    /// when the config names none.
    pub fn validate(&self) -> Result<Option<f64>> {
        let Some(root) = &self.cfg.sparsett.val_root else {
            return Ok(None);
        };
        let model = Arc::new(self.inference_model()?);
        // The official GOT-10k preset: a model in training has no tuned one yet.
        let auc = crate::eval::success_auc(
            self.gpu.clone(),
            model,
            crate::tracker::Preset::GOT10K,
            root,
            self.cfg.sparsett.val_sequences,
        )?;
        Ok(Some(auc))
    }

    /// Runs until the end of the schedule or `max_steps` more steps, with a progress bar (unless
    /// `quiet`), a checkpoint at the end of every epoch and every `checkpoint_every` steps, and
    /// the validation AUC after each epoch.
    pub fn run(&mut self, max_steps: Option<u64>, quiet: bool) -> Result<Vec<StepLog>> {
        use indicatif::{ProgressBar, ProgressStyle};
        let total = self.total_steps();
        let end = max_steps.map_or(total, |m| (self.step + m).min(total));
        // Without a terminal (a log file, CI) indicatif draws nothing: print a plain line every
        // LOG_EVERY steps instead, and the checkpoint and validation lines as they come.
        const LOG_EVERY: u64 = 20;
        let lines = !quiet && !std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = if quiet || lines {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total)
        };
        let say = |bar: &ProgressBar, s: String| {
            if lines {
                eprintln!("{s}");
            } else {
                bar.println(s);
            }
        };
        bar.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] {bar:30} step {pos}/{len} {msg} (eta {eta})",
            )
            .expect("valid template"),
        );
        bar.set_position(self.step);
        let every = self.cfg.sparsett.checkpoint_every as u64;
        let spe = self.cfg.steps_per_epoch() as u64;
        let b = self.batch() as f64;
        let mut logs = Vec::new();
        let t0 = Instant::now();
        let first = self.step;
        while self.step < end {
            let log = self.train_step()?;
            let rate = (self.step - first) as f64 * b / t0.elapsed().as_secs_f64();
            bar.set_position(self.step);
            let msg = format!(
                "epoch {} loss {:.4} (cls_fc {:.3} reg_fc {:.3} cls_conv {:.3} reg_conv {:.3}) \
                 lr {:.1e} {rate:.2} pairs/s",
                log.epoch, log.total, log.cls_fc, log.reg_fc, log.cls_conv, log.reg_conv, log.lr
            );
            if lines && (self.step.is_multiple_of(LOG_EVERY) || self.step == end) {
                eprintln!(
                    "[{:.0} s] step {}/{total} {msg}",
                    t0.elapsed().as_secs_f64(),
                    self.step
                );
            }
            bar.set_message(msg);
            logs.push(log);
            let epoch_end = self.step.is_multiple_of(spe);
            if epoch_end || (every > 0 && self.step.is_multiple_of(every)) || self.step == end {
                let p = self.checkpoint()?;
                say(
                    &bar,
                    format!("step {}: checkpoint {}", self.step, p.display()),
                );
            }
            if epoch_end {
                if let Some(auc) = self.validate()? {
                    say(
                        &bar,
                        format!(
                            "epoch {} done: validation success AUC {:.1}%",
                            log.epoch,
                            100.0 * auc
                        ),
                    );
                }
            }
        }
        bar.finish_and_clear();
        Ok(logs)
    }
}

fn build_sampler(cfg: &TrainFile) -> Result<Sampler> {
    let d = &cfg.train.track.data;
    let list = &d.sampler.submodules.dataset;
    let mut sets = Vec::new();
    for name in &list.names {
        let t = &list.tables[name];
        let kind = kind_of(name)?;
        let split = t
            .subset
            .clone()
            .or_else(|| t.subsets.as_ref().and_then(|s| s.first().cloned()));
        let ds = data::scan(kind, &t.dataset_root, split.as_deref()).map_err(|e| {
            Error::Other(format!(
                "training dataset {name} ({}): {e}",
                t.dataset_root.display()
            ))
        })?;
        sets.push((Arc::new(ds), t.ratio));
    }
    let f = &d.sampler.submodules.filter.pair;
    let rc = &d.transformer.random_crop;
    let max_gap = list
        .names
        .iter()
        .map(|n| list.tables[n].max_diff)
        .max()
        .unwrap_or(100);
    let sc = SamplerConfig {
        negative_prob: d.sampler.pair.negative_pair_ratio,
        max_gap,
        max_aspect: f.max_ratio,
        max_scale: 1.0 + rc.max_scale,
        max_shift: rc.max_shift,
    };
    Sampler::new(sets, sc, cfg.sparsett.seed)
}
