//! The public toolkits' tracking metrics, reimplemented from their definitions
//! (`/work/shared/spec/metrics.md`). The toolkits disagree in details, so a score is always
//! computed under a named [`Protocol`]:
//!
//! * [`Protocol::Got10k`] — got10k-toolkit's GOT-10k experiment. IoU of continuous boxes
//!   (right edge `x + w`) after clipping both boxes to the image, frame 0 excluded, only frames
//!   whose cover label is > 0; the IoUs of all sequences (and repetitions) are concatenated, so the
//!   overall AO / SR are frame-weighted. SR0.5 / SR0.75 count IoU *strictly* above the threshold;
//!   the success curve has 101 thresholds. Predictions are used as written (no repair).
//! * [`Protocol::Pytracking`] — one-pass evaluation as the LaSOT / OTB MATLAB toolkits and
//!   pytracking define it (the default for LaSOT, OTB, UAV123, TrackingNet). Pixel-inclusive boxes
//!   (right edge `x + w − 1`, overlap width `+ 1`); the first prediction is replaced by the ground
//!   truth; a prediction that is NaN or has `w ≤ 0` or `h ≤ 0` is replaced by the previous
//!   (already repaired) one, unless the ground-truth row is NaN. A frame is *invalid* when the
//!   target is absent or any ground-truth coordinate is ≤ 0 or NaN; invalid frames count as
//!   failures in every curve (IoU −1, centre error +∞) and every curve divides by the full
//!   sequence length. Success: 21 thresholds `0, 0.05, …, 1`, IoU `>` t; AUC = mean of the curve.
//!   Precision: 0..=50 px, error `≤` t, reported at 20 px. Normalised precision: centre offset
//!   divided per axis by the ground-truth `w, h`, thresholds 0, 0.01, …, 0.5, reported at 0.20
//!   (the curve mean is reported too). Per-sequence values are averaged over sequences.
//! * [`Protocol::Got10kOpe`] — got10k-toolkit's OTB / LaSOT / UAV123 experiments. Continuous IoU
//!   (`+ eps` in the union, clipped to [0, 1]); only the first prediction is replaced; frames whose
//!   ground truth has a NaN are dropped (the denominators count the others); absence flags are not
//!   used; the normalised error divides by `max(1, w)`, `max(1, h)`, and its reported value is the
//!   mean of the curve (got10k-toolkit's LaSOT number), not the value at 0.20.
//!
//! Deliberate differences from the reference code (each would otherwise crash the toolkit or turn
//! the score into NaN): under `Got10k` a NaN prediction gives IoU 0; a NaN IoU (a NaN prediction
//! that could not be repaired) counts as 0 in every average overlap; results shorter than the
//! sequence are an error (pytracking pads them with zeros outside LaSOT, got10k-toolkit cuts the
//! ground truth to their length). Where the toolkits themselves differ from `Pytracking`: the
//! MATLAB toolkits give a coordinate-invalid frame centre error −1 (counted as *precise*), and
//! pytracking checks only `w, h > 0` for validity and, outside LaSOT and UAV123, divides by the
//! number of valid frames; metrics.md's rule (failures, full length) is what is implemented.

use std::fmt::Write as _;
use std::str::FromStr;

use super::datasets::{DatasetKind, Sequence};
use crate::{Error, Result};

/// A sequence's result boxes, one `Vec` per repetition.
pub type Runs = Vec<Vec<[f64; 4]>>;

/// Which toolkit's definitions a score follows (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Got10k,
    Pytracking,
    Got10kOpe,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Got10k, Protocol::Pytracking, Protocol::Got10kOpe];

    /// The protocol each benchmark's published numbers use.
    pub fn default_for(kind: DatasetKind) -> Protocol {
        match kind {
            DatasetKind::Got10k => Protocol::Got10k,
            _ => Protocol::Pytracking,
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Got10k => "got10k",
            Protocol::Pytracking => "pytracking",
            Protocol::Got10kOpe => "got10k-ope",
        }
    }

    /// One line for report headers.
    pub fn describe(self) -> &'static str {
        match self {
            Protocol::Got10k => {
                "got10k-toolkit GOT-10k: continuous IoU clipped to the image, frames with cover > 0 \
                 (frame 0 excluded), frame-weighted AO / SR"
            }
            Protocol::Pytracking => {
                "LaSOT toolkit / pytracking OPE: pixel-inclusive boxes, absent or unannotated frames \
                 are failures, per-sequence averages, NP at 0.20"
            }
            Protocol::Got10kOpe => {
                "got10k-toolkit OPE: continuous IoU, unannotated frames dropped, per-sequence \
                 averages, NP = curve mean"
            }
        }
    }

    /// Overlap thresholds of the success curve.
    pub fn success_thresholds(self) -> Vec<f64> {
        match self {
            // np.linspace(0, 1, 101): i · 0.01.
            Protocol::Got10k => (0..=100).map(|i| i as f64 * 0.01).collect(),
            // torch.arange(0, 1.05, 0.05) and np.linspace(0, 1, 21): i · 0.05.
            _ => (0..=20).map(|i| i as f64 * 0.05).collect(),
        }
    }

    /// Centre-error thresholds in pixels (none under `Got10k`, which has no precision measure).
    pub fn precision_thresholds(self) -> Vec<f64> {
        match self {
            Protocol::Got10k => Vec::new(),
            _ => (0..=50).map(f64::from).collect(),
        }
    }

    /// Normalised centre-error thresholds (none under `Got10k`).
    pub fn norm_thresholds(self) -> Vec<f64> {
        match self {
            Protocol::Got10k => Vec::new(),
            // pytracking: torch.arange(0, 51) / 100.
            Protocol::Pytracking => (0..=50).map(|i| i as f64 / 100.0).collect(),
            // got10k-toolkit: np.linspace(0, 0.5, 51): i · 0.01.
            Protocol::Got10kOpe => (0..=50).map(|i| i as f64 * 0.01).collect(),
        }
    }
}

impl FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::Other(format!(
                    "unknown protocol '{s}': expected got10k, pytracking or got10k-ope"
                ))
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Box measures

/// got10k-toolkit's `rect_iou`: continuous boxes, `eps` added to the union, result clipped to
/// [0, 1]. NaN inputs give NaN.
pub fn iou_continuous(a: [f64; 4], b: [f64; 4]) -> f64 {
    if a.iter().chain(&b).any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let x1 = a[0].max(b[0]);
    let y1 = a[1].max(b[1]);
    let x2 = (a[0] + a[2]).min(b[0] + b[2]);
    let y2 = (a[1] + a[3]).min(b[1] + b[3]);
    let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    (inter / (union + f64::EPSILON)).clamp(0.0, 1.0)
}

/// The LaSOT / OTB toolkits' `calc_rect_int` and pytracking's `calc_iou_overlap`: pixel-inclusive
/// boxes (last pixel `x + w − 1`, overlap `right − left + 1`), no epsilon, no clipping. For boxes of
/// positive size it equals [`iou_continuous`] up to rounding; they part on degenerate boxes (two
/// empty boxes: 0/0 = NaN here, 0 there).
pub fn iou_pixel(a: [f64; 4], b: [f64; 4]) -> f64 {
    let left = a[0].max(b[0]);
    let top = a[1].max(b[1]);
    let right = (a[0] + a[2] - 1.0).min(b[0] + b[2] - 1.0);
    let bottom = (a[1] + a[3] - 1.0).min(b[1] + b[3] - 1.0);
    if [left, top, right, bottom].iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    let inter = (right - left + 1.0).max(0.0) * (bottom - top + 1.0).max(0.0);
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    inter / union
}

/// got10k-toolkit's image bound: `x` clipped to [0, W], `y` to [0, H], then `w` to [0, W − x] and
/// `h` to [0, H − y]. A box sticking out on the left keeps its width (clipped only at the right
/// edge), exactly as the toolkit does.
pub fn clip_to_image(b: [f64; 4], (w, h): (u32, u32)) -> [f64; 4] {
    let (bw, bh) = (f64::from(w), f64::from(h));
    let x = b[0].max(0.0).min(bw);
    let y = b[1].max(0.0).min(bh);
    [x, y, b[2].max(0.0).min(bw - x), b[3].max(0.0).min(bh - y)]
}

/// Box centre as every toolkit computes it: `x + (w − 1)/2`, `y + (h − 1)/2`.
pub fn centre(b: [f64; 4]) -> [f64; 2] {
    [b[0] + (b[2] - 1.0) / 2.0, b[1] + (b[3] - 1.0) / 2.0]
}

/// Euclidean distance between the centres, in pixels.
pub fn centre_error(pred: [f64; 4], gt: [f64; 4]) -> f64 {
    let (p, g) = (centre(pred), centre(gt));
    ((p[0] - g[0]).powi(2) + (p[1] - g[1]).powi(2)).sqrt()
}

/// Centre error with each axis divided by the ground-truth size (LaSOT toolkit, pytracking:
/// both centres are divided, then subtracted).
pub fn norm_centre_error(pred: [f64; 4], gt: [f64; 4]) -> f64 {
    let (p, g) = (centre(pred), centre(gt));
    let dx = p[0] / gt[2] - g[0] / gt[2];
    let dy = p[1] / gt[3] - g[1] / gt[3];
    (dx * dx + dy * dy).sqrt()
}

/// got10k-toolkit's normalised centre error: the offset divided by `max(1, w)`, `max(1, h)`.
pub fn norm_centre_error_got10k(pred: [f64; 4], gt: [f64; 4]) -> f64 {
    let (p, g) = (centre(pred), centre(gt));
    let dx = (p[0] - g[0]) / gt[2].max(1.0);
    let dy = (p[1] - g[1]) / gt[3].max(1.0);
    (dx * dx + dy * dy).sqrt()
}

/// Whether a ground-truth row is a usable box for the MATLAB toolkits: every coordinate finite and
/// strictly positive.
pub fn gt_valid(g: [f64; 4]) -> bool {
    g.iter().all(|v| !v.is_nan() && *v > 0.0)
}

/// The MATLAB toolkits' `calc_seq_err_robust` repair, in their order: from frame 1 on, a prediction
/// with a NaN or `w ≤ 0` or `h ≤ 0` is replaced by the previous (already repaired) prediction
/// unless the ground-truth row has a NaN; *then* frame 0 becomes the ground truth. (So a bad frame
/// 1 copies the tracker's own frame-0 output, as in the toolkits.) `pred` must not be shorter.
pub fn repair_predictions(pred: &[[f64; 4]], gt: &[[f64; 4]]) -> Vec<[f64; 4]> {
    let n = gt.len().min(pred.len());
    let mut out: Vec<[f64; 4]> = pred[..n].to_vec();
    for i in 1..n {
        let r = out[i];
        let bad = r.iter().any(|v| v.is_nan()) || r[2] <= 0.0 || r[3] <= 0.0;
        if bad && !gt[i].iter().any(|v| v.is_nan()) {
            out[i] = out[i - 1];
        }
    }
    if n > 0 {
        out[0] = gt[0];
    }
    out
}

/// `curve[t] = #{v > thr[t]} / denom`: strict, as every toolkit's success curve.
pub fn success_curve(ious: &[f64], thresholds: &[f64], denom: usize) -> Vec<f64> {
    thresholds
        .iter()
        .map(|t| ious.iter().filter(|v| **v > *t).count() as f64 / denom as f64)
        .collect()
}

/// `curve[t] = #{e ≤ thr[t]} / denom`: inclusive, as every toolkit's precision curve.
pub fn precision_curve(errors: &[f64], thresholds: &[f64], denom: usize) -> Vec<f64> {
    thresholds
        .iter()
        .map(|t| errors.iter().filter(|v| **v <= *t).count() as f64 / denom as f64)
        .collect()
}

/// Mean, NaN for an empty slice (as numpy's).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn nan_as_zero(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Scores and reports

/// The numbers of one sequence, or of a whole tracker (the `mean` of a [`Report`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    /// Frames behind the numbers: the curves' denominator (for a report mean: their sum).
    pub frames: usize,
    /// Average overlap. `Got10k`: mean IoU of the counted frames (the headline AO). OPE protocols:
    /// mean IoU of the valid frames (pytracking's "avg overlap").
    pub ao: f64,
    /// Fraction of frames with IoU > 0.5, and > 0.75.
    pub sr50: f64,
    pub sr75: f64,
    /// Success curve at [`Protocol::success_thresholds`].
    pub success: Vec<f64>,
    /// Mean of the success curve (the OPE "AUC" / success score).
    pub auc: f64,
    /// Precision curve at [`Protocol::precision_thresholds`] (empty under `Got10k`).
    pub precision: Vec<f64>,
    /// Precision at 20 px.
    pub prec20: Option<f64>,
    /// Normalised precision curve at [`Protocol::norm_thresholds`] (empty under `Got10k`).
    pub norm_precision: Vec<f64>,
    /// Normalised precision at 0.20 (LaSOT toolkit, pytracking, pysot).
    pub norm_prec20: Option<f64>,
    /// Mean of the normalised precision curve (got10k-toolkit's LaSOT number).
    pub norm_prec_mean: Option<f64>,
}

impl Scores {
    /// The number a report leads with under `protocol`: AO for GOT-10k, AUC otherwise.
    pub fn headline(&self, protocol: Protocol) -> f64 {
        match protocol {
            Protocol::Got10k => self.ao,
            _ => self.auc,
        }
    }

    /// The normalised precision the protocol reports.
    pub fn norm_prec(&self, protocol: Protocol) -> Option<f64> {
        match protocol {
            Protocol::Got10kOpe => self.norm_prec_mean,
            _ => self.norm_prec20,
        }
    }
}

/// One scored sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqScore {
    pub name: String,
    pub scores: Scores,
}

/// A tracker's scores on a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Legend / table name (usually the result folder's name).
    pub tracker: String,
    pub protocol: Protocol,
    pub sequences: Vec<SeqScore>,
    /// Sequences that could not be scored, with the reason; they are left out of `mean`.
    pub skipped: Vec<(String, String)>,
    /// Over the scored sequences: frame-weighted under `Got10k`, the mean of the per-sequence
    /// values otherwise.
    pub mean: Scores,
}

/// Score one sequence. `runs` holds the tracker's boxes, one `Vec` per repetition (GOT-10k may have
/// several; the OPE protocols take exactly one). `image_size` is needed under `Got10k` only.
/// Also returns the counted IoUs (the `Got10k` overall scores concatenate them).
pub fn score_sequence(
    protocol: Protocol,
    seq: &Sequence,
    runs: &[Vec<[f64; 4]>],
    image_size: Option<(u32, u32)>,
) -> Result<(Scores, Vec<f64>)> {
    let n = seq.gt.len();
    if !seq.fully_annotated() {
        return Err(Error::Other(format!(
            "{}: only {} of {} frames are annotated (a test split): score it on the benchmark's server",
            seq.name,
            n,
            seq.frames.len()
        )));
    }
    if runs.is_empty() {
        return Err(Error::Other(format!("{}: no result runs", seq.name)));
    }
    match protocol {
        Protocol::Got10k => {
            let size = image_size.ok_or_else(|| {
                Error::Other(format!(
                    "{}: the GOT-10k protocol needs the image size",
                    seq.name
                ))
            })?;
            let mut ious = Vec::new();
            for (r, run) in runs.iter().enumerate() {
                if run.len() != n {
                    return Err(Error::Other(format!(
                        "{}: run {} has {} boxes but the sequence has {n} frames",
                        seq.name,
                        r + 1,
                        run.len()
                    )));
                }
                ious.extend(got10k_ious(seq, run, size));
            }
            Ok((got10k_scores(protocol, &ious), ious))
        }
        Protocol::Pytracking | Protocol::Got10kOpe => {
            if runs.len() != 1 {
                return Err(Error::Other(format!(
                    "{}: one-pass evaluation takes one run, got {}",
                    seq.name,
                    runs.len()
                )));
            }
            let pred = &runs[0];
            if pred.len() < n {
                return Err(Error::Other(format!(
                    "{}: {} result boxes for {n} frames",
                    seq.name,
                    pred.len()
                )));
            }
            // Longer results are cut to the ground truth, as both toolkits do (LaSOT's monkey-17).
            let s = if protocol == Protocol::Pytracking {
                ope_pytracking(seq, &pred[..n])
            } else {
                ope_got10k(seq, &pred[..n])
            };
            Ok((s, Vec::new()))
        }
    }
}

/// IoUs of one GOT-10k run over the counted frames (cover > 0, frame 0 excluded).
fn got10k_ious(seq: &Sequence, run: &[[f64; 4]], size: (u32, u32)) -> Vec<f64> {
    // Without cover labels, fall back to the absence labels, then to every frame.
    let counted = |i: usize| match (&seq.cover, &seq.absent) {
        (Some(c), _) => c[i] > 0,
        (None, Some(a)) => !a[i],
        (None, None) => true,
    };
    (1..seq.gt.len())
        .filter(|&i| counted(i))
        .map(|i| {
            let p = clip_to_image(run[i], size);
            let g = clip_to_image(seq.gt[i], size);
            nan_as_zero(iou_continuous(p, g))
        })
        .collect()
}

fn got10k_scores(protocol: Protocol, ious: &[f64]) -> Scores {
    let success = success_curve(ious, &protocol.success_thresholds(), ious.len());
    Scores {
        frames: ious.len(),
        ao: mean(ious),
        sr50: success_curve(ious, &[0.5], ious.len())[0],
        sr75: success_curve(ious, &[0.75], ious.len())[0],
        auc: mean(&success),
        success,
        precision: Vec::new(),
        prec20: None,
        norm_precision: Vec::new(),
        norm_prec20: None,
        norm_prec_mean: None,
    }
}

fn ope_pytracking(seq: &Sequence, pred: &[[f64; 4]]) -> Scores {
    let protocol = Protocol::Pytracking;
    let n = seq.gt.len();
    let rep = repair_predictions(pred, &seq.gt);
    let (mut ious, mut ce, mut nce, mut valid_ious) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::new(),
    );
    for i in 0..n {
        let g = seq.gt[i];
        let absent = seq.absent.as_ref().is_some_and(|a| a[i]);
        if absent || !gt_valid(g) {
            ious.push(-1.0);
            ce.push(f64::INFINITY);
            nce.push(f64::INFINITY);
        } else {
            let iou = iou_pixel(rep[i], g);
            valid_ious.push(nan_as_zero(iou));
            ious.push(iou);
            ce.push(centre_error(rep[i], g));
            nce.push(norm_centre_error(rep[i], g));
        }
    }
    ope_scores(protocol, &ious, &ce, &nce, n, mean(&valid_ious))
}

fn ope_got10k(seq: &Sequence, pred: &[[f64; 4]]) -> Scores {
    let protocol = Protocol::Got10kOpe;
    let (mut ious, mut ce, mut nce) = (Vec::new(), Vec::new(), Vec::new());
    for (i, g) in seq.gt.iter().enumerate() {
        if g.iter().any(|v| v.is_nan()) {
            continue;
        }
        let p = if i == 0 { *g } else { pred[i] };
        ious.push(iou_continuous(p, *g));
        ce.push(centre_error(p, *g));
        nce.push(norm_centre_error_got10k(p, *g));
    }
    let ao = mean(&ious.iter().map(|v| nan_as_zero(*v)).collect::<Vec<_>>());
    let m = ious.len();
    ope_scores(protocol, &ious, &ce, &nce, m, ao)
}

fn ope_scores(
    protocol: Protocol,
    ious: &[f64],
    ce: &[f64],
    nce: &[f64],
    denom: usize,
    ao: f64,
) -> Scores {
    let success = success_curve(ious, &protocol.success_thresholds(), denom);
    let precision = precision_curve(ce, &protocol.precision_thresholds(), denom);
    let norm_precision = precision_curve(nce, &protocol.norm_thresholds(), denom);
    Scores {
        frames: denom,
        ao,
        sr50: success_curve(ious, &[0.5], denom)[0],
        sr75: success_curve(ious, &[0.75], denom)[0],
        auc: mean(&success),
        prec20: Some(precision[20]),
        norm_prec20: Some(norm_precision[20]),
        norm_prec_mean: Some(mean(&norm_precision)),
        success,
        precision,
        norm_precision,
    }
}

/// Elementwise mean of per-sequence scores (the OPE protocols' averaging).
fn average(protocol: Protocol, rows: &[SeqScore]) -> Scores {
    let k = rows.len() as f64;
    let avg = |f: &dyn Fn(&Scores) -> f64| rows.iter().map(|r| f(&r.scores)).sum::<f64>() / k;
    let avg_curve = |len: usize, f: &dyn Fn(&Scores) -> &Vec<f64>| -> Vec<f64> {
        (0..len)
            .map(|t| rows.iter().map(|r| f(&r.scores)[t]).sum::<f64>() / k)
            .collect()
    };
    let success = avg_curve(protocol.success_thresholds().len(), &|s| &s.success);
    let precision = avg_curve(protocol.precision_thresholds().len(), &|s| &s.precision);
    let norm_precision = avg_curve(protocol.norm_thresholds().len(), &|s| &s.norm_precision);
    Scores {
        frames: rows.iter().map(|r| r.scores.frames).sum(),
        ao: avg(&|s| s.ao),
        sr50: avg(&|s| s.sr50),
        sr75: avg(&|s| s.sr75),
        auc: mean(&success),
        prec20: precision.get(20).copied(),
        norm_prec20: norm_precision.get(20).copied(),
        norm_prec_mean: (!norm_precision.is_empty()).then(|| mean(&norm_precision)),
        success,
        precision,
        norm_precision,
    }
}

/// Score a tracker on `seqs`. `results` gives a sequence's runs (e.g.
/// `|s| results::read_runs(kind, dir, &s.name)`); `image_size` is asked under `Got10k` only (e.g.
/// [`super::frame_size`]). A sequence whose results or size cannot be had, or that cannot be
/// scored, lands in `skipped` with the reason.
pub fn score(
    protocol: Protocol,
    tracker: &str,
    seqs: &[Sequence],
    results: &dyn Fn(&Sequence) -> Result<Runs>,
    image_size: &dyn Fn(&Sequence) -> Result<(u32, u32)>,
) -> Report {
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut all_ious = Vec::new();
    for seq in seqs {
        let res = (|| {
            let runs = results(seq)?;
            let size = match protocol {
                Protocol::Got10k => Some(image_size(seq)?),
                _ => None,
            };
            score_sequence(protocol, seq, &runs, size)
        })();
        match res {
            Ok((scores, ious)) => {
                all_ious.extend(ious);
                rows.push(SeqScore {
                    name: seq.name.clone(),
                    scores,
                });
            }
            Err(e) => skipped.push((seq.name.clone(), e.to_string())),
        }
    }
    let mean = match protocol {
        Protocol::Got10k => got10k_scores(protocol, &all_ious),
        _ => average(protocol, &rows),
    };
    Report {
        tracker: tracker.to_string(),
        protocol,
        sequences: rows,
        skipped,
        mean,
    }
}

// ---------------------------------------------------------------------------------------------
// Text tables

fn pct(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{:.2}", 100.0 * v)
    }
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), pct)
}

/// Column names and values of one row under `protocol` (values in percent).
fn columns(protocol: Protocol, s: &Scores) -> Vec<(&'static str, String)> {
    match protocol {
        Protocol::Got10k => vec![
            ("AO", pct(s.ao)),
            ("SR0.5", pct(s.sr50)),
            ("SR0.75", pct(s.sr75)),
        ],
        Protocol::Pytracking => vec![
            ("AUC", pct(s.auc)),
            ("P@20", opt_pct(s.prec20)),
            ("NP@0.20", opt_pct(s.norm_prec20)),
            ("NP-mean", opt_pct(s.norm_prec_mean)),
            ("AO", pct(s.ao)),
        ],
        Protocol::Got10kOpe => vec![
            ("AUC", pct(s.auc)),
            ("P@20", opt_pct(s.prec20)),
            ("NP-mean", opt_pct(s.norm_prec_mean)),
            ("NP@0.20", opt_pct(s.norm_prec20)),
            ("AO", pct(s.ao)),
        ],
    }
}

fn table(head: &[String], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 0 {
                let _ = write!(s, "{c:<width$}", width = w[0]);
            } else {
                let _ = write!(s, "  {c:>width$}", width = w[i]);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head);
    for r in rows {
        out += &line(r);
    }
    out
}

/// One row per tracker (values in percent), grouped by protocol, each group headed by what its
/// protocol computes; then the sequences each tracker could not be scored on. Trackers scored on
/// different sequence sets are flagged, since their means are not comparable.
pub fn format_table(title: &str, reports: &[Report]) -> String {
    let mut out = String::new();
    for p in Protocol::ALL {
        let group: Vec<&Report> = reports.iter().filter(|r| r.protocol == p).collect();
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title} — protocol {}: {}", p.name(), p.describe());
        let cols = columns(p, &group[0].mean);
        let mut head = vec!["tracker".to_string()];
        head.extend(cols.iter().map(|c| c.0.to_string()));
        head.push("sequences".into());
        head.push("frames".into());
        let rows: Vec<Vec<String>> = group
            .iter()
            .map(|r| {
                let mut row = vec![r.tracker.clone()];
                row.extend(columns(p, &r.mean).into_iter().map(|c| c.1));
                row.push(format!(
                    "{}/{}",
                    r.sequences.len(),
                    r.sequences.len() + r.skipped.len()
                ));
                row.push(r.mean.frames.to_string());
                row
            })
            .collect();
        out += &table(&head, &rows);
        let sets: Vec<Vec<&str>> = group
            .iter()
            .map(|r| r.sequences.iter().map(|s| s.name.as_str()).collect())
            .collect();
        if sets.windows(2).any(|w| w[0] != w[1]) {
            out += "warning: the trackers were scored on different sequences; their means are not comparable\n";
        }
        for r in &group {
            if !r.skipped.is_empty() {
                let _ = writeln!(
                    out,
                    "{}: {} sequence(s) not scored:",
                    r.tracker,
                    r.skipped.len()
                );
                for (name, why) in &r.skipped {
                    let _ = writeln!(out, "  {name}: {why}");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// One row per sequence of one report, then its mean row.
pub fn format_sequences(report: &Report) -> String {
    let p = report.protocol;
    let cols = columns(p, &report.mean);
    let mut head = vec!["sequence".to_string()];
    head.extend(cols.iter().map(|c| c.0.to_string()));
    head.push("frames".into());
    let mut rows: Vec<Vec<String>> = report
        .sequences
        .iter()
        .map(|s| {
            let mut row = vec![s.name.clone()];
            row.extend(columns(p, &s.scores).into_iter().map(|c| c.1));
            row.push(s.scores.frames.to_string());
            row
        })
        .collect();
    let mut last = vec![format!("mean ({})", report.tracker)];
    last.extend(columns(p, &report.mean).into_iter().map(|c| c.1));
    last.push(report.mean.frames.to_string());
    rows.push(last);
    table(&head, &rows)
}
