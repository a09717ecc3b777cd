//! The official pair sampler. Pair `i` is a pure function of `(seed, i)`: its own splitmix64
//! stream draws a dataset (by ratio), a sequence (uniform), a template frame (uniform over the
//! sequence's valid frames), a search frame (uniform over the valid frames within `max_gap` of the
//! template, the template frame itself only when no other is in reach, e.g. a still image), whether
//! the pair is negative (probability `negative_prob`; the search frame then comes from another
//! sequence, drawn the same way), and the search-crop augmentation. Workers can therefore make any
//! pair in any order and the stream is still the same for a seed.
//!
//! A frame is valid when its box is finite with positive sides, the target is not marked absent,
//! and the aspect ratio `max(w/h, h/w)` is below `max_aspect`. Sequences without a valid frame are
//! never drawn.

use std::path::PathBuf;
use std::sync::Arc;

use super::augment::Augment;
use super::TrainDataset;
use crate::prng::{fnv1a64, SplitMix64};
use crate::{Error, Result};

/// The sampler's knobs; the defaults are the official recipe's.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Probability that a pair is negative (search frame from another sequence).
    pub negative_prob: f64,
    /// Largest `|search − template|` frame distance within a sequence.
    pub max_gap: usize,
    /// Frames whose box aspect ratio `max(w/h, h/w)` reaches this are never used.
    pub max_aspect: f64,
    /// The search crop's scale is drawn from `U(1/max_scale, max_scale)`.
    pub max_scale: f64,
    /// The search crop's centre shift per axis is `U(−max_shift, max_shift) · side / 2`.
    pub max_shift: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            negative_prob: 0.33,
            max_gap: 100,
            max_aspect: 10.0,
            max_scale: 1.3,
            max_shift: 0.4,
        }
    }
}

/// One frame of one sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameRef {
    /// Index into the sampler's datasets.
    pub dataset: usize,
    pub sequence: usize,
    pub frame: usize,
    pub path: PathBuf,
    /// `x, y, w, h` in frame pixels.
    pub bbox: [f64; 4],
}

/// A training pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    pub index: u64,
    pub template: FrameRef,
    pub search: FrameRef,
    /// The search frame shows another sequence's object: no target in the search crop.
    pub negative: bool,
    /// The search crop's augmentation draw.
    pub augment: Augment,
}

/// Whether a box can be trained on (see the module doc).
pub fn valid_box(b: &[f64; 4], absent: bool, max_aspect: f64) -> bool {
    let [_, _, w, h] = *b;
    !absent
        && b.iter().all(|v| v.is_finite())
        && w > 0.0
        && h > 0.0
        && (w / h).max(h / w) < max_aspect
}

pub struct Sampler {
    datasets: Vec<Arc<TrainDataset>>,
    /// Cumulative normalised dataset weights (last = 1).
    cum: Vec<f64>,
    /// Per dataset, per usable sequence: (sequence index, sorted valid frame indices).
    valid: Vec<Vec<(usize, Vec<usize>)>>,
    config: SamplerConfig,
    seed: u64,
}

/// Uniform integer in `0..n` (n > 0) by multiply-shift (no modulo bias worth the name).
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

impl Sampler {
    /// `datasets`: each with its weight (normalised here; zero drops a dataset).
    pub fn new(
        datasets: Vec<(Arc<TrainDataset>, f64)>,
        config: SamplerConfig,
        seed: u64,
    ) -> Result<Sampler> {
        let c = &config;
        let bad = |msg: String| Err(Error::Other(format!("pair sampler: {msg}")));
        if !(0.0..=1.0).contains(&c.negative_prob) {
            return bad(format!(
                "negative_prob {} is outside [0, 1]",
                c.negative_prob
            ));
        }
        // Written so that NaN fails every check.
        let ranges_ok = c.max_aspect > 1.0
            && (1.0..f64::INFINITY).contains(&c.max_scale)
            && (0.0..f64::INFINITY).contains(&c.max_shift);
        if !ranges_ok {
            return bad(format!(
                "max_aspect {} must be > 1, max_scale {} ≥ 1, max_shift {} ≥ 0",
                c.max_aspect, c.max_scale, c.max_shift
            ));
        }
        let mut kept = Vec::new();
        let mut weights = Vec::new();
        let mut valid = Vec::new();
        for (ds, w) in datasets {
            if !(w.is_finite() && w >= 0.0) {
                return bad(format!("dataset {} has weight {w}", ds.kind));
            }
            if w == 0.0 {
                continue;
            }
            let v: Vec<(usize, Vec<usize>)> = ds
                .sequences
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let frames = (0..s.frames.len())
                        .filter(|&f| valid_box(&s.boxes[f], s.absent[f], c.max_aspect))
                        .collect::<Vec<_>>();
                    (i, frames)
                })
                .filter(|(_, f)| !f.is_empty())
                .collect();
            if v.is_empty() {
                return bad(format!(
                    "{} ({}) has no sequence with a usable box",
                    ds.kind,
                    ds.root.display()
                ));
            }
            kept.push(ds);
            weights.push(w);
            valid.push(v);
        }
        if kept.is_empty() {
            return bad("no dataset with a positive weight".into());
        }
        let total_seqs: usize = valid.iter().map(Vec::len).sum();
        if c.negative_prob > 0.0 && total_seqs < 2 {
            return bad("negative pairs need at least two usable sequences".into());
        }
        let sum: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cum: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / sum;
                acc
            })
            .collect();
        *cum.last_mut().unwrap() = 1.0;
        Ok(Sampler {
            datasets: kept,
            cum,
            valid,
            config,
            seed,
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    pub fn datasets(&self) -> &[Arc<TrainDataset>] {
        &self.datasets
    }

    /// The normalised probability of each dataset.
    pub fn probabilities(&self) -> Vec<f64> {
        let mut prev = 0.0;
        self.cum
            .iter()
            .map(|&c| {
                let p = c - prev;
                prev = c;
                p
            })
            .collect()
    }

    fn frame(&self, d: usize, seq: usize, frame: usize) -> FrameRef {
        let s = &self.datasets[d].sequences[seq];
        FrameRef {
            dataset: d,
            sequence: seq,
            frame,
            path: s.frames[frame].clone(),
            bbox: s.boxes[frame],
        }
    }

    fn pick_sequence(&self, rng: &mut SplitMix64) -> (usize, usize) {
        let u = rng.next_unit();
        let d = self
            .cum
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.cum.len() - 1);
        (d, below(rng, self.valid[d].len()))
    }

    /// Pair number `index` of this seed's stream.
    pub fn pair(&self, index: u64) -> Pair {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..].copy_from_slice(&index.to_le_bytes());
        let mut rng = SplitMix64::new(fnv1a64(&key));
        let (d, k) = self.pick_sequence(&mut rng);
        let (seq, frames) = &self.valid[d][k];
        let t = frames[below(&mut rng, frames.len())];
        let negative = rng.next_unit() < self.config.negative_prob;
        let search = if negative {
            // Another sequence of any dataset: redraw until it differs (two usable sequences
            // exist, checked in `new`, so this ends).
            loop {
                let (d2, k2) = self.pick_sequence(&mut rng);
                if (d2, k2) == (d, k) {
                    continue;
                }
                let (seq2, frames2) = &self.valid[d2][k2];
                break self.frame(d2, *seq2, frames2[below(&mut rng, frames2.len())]);
            }
        } else {
            let gap = self.config.max_gap;
            let lo = frames.partition_point(|&f| f + gap < t);
            let hi = frames.partition_point(|&f| f <= t + gap);
            let n_other = hi - lo - 1;
            let s = if n_other == 0 {
                t
            } else {
                // Uniform over the window without the template frame itself.
                let j = lo + below(&mut rng, n_other);
                let pos_t = frames.partition_point(|&f| f < t);
                frames[if j >= pos_t { j + 1 } else { j }]
            };
            self.frame(d, *seq, s)
        };
        let c = &self.config;
        // U(1/m, m), uniform in the factor itself as the recipe states it.
        let m = c.max_scale;
        let augment = Augment {
            scale: 1.0 / m + (m - 1.0 / m) * rng.next_unit(),
            shift: [
                c.max_shift * (2.0 * rng.next_unit() - 1.0),
                c.max_shift * (2.0 * rng.next_unit() - 1.0),
            ],
        };
        Pair {
            index,
            template: self.frame(d, *seq, t),
            search,
            negative,
            augment,
        }
    }
}
