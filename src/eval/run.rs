//! Tracking whole sequences: what `sparsett eval` runs per sequence and what training's
//! validation scores after every epoch.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::eval::{metrics, open_dataset, DatasetKind, Protocol, Sequence};
use crate::model::SparseTT;
use crate::tracker::{Preset, Tracker};
use crate::video::{first_frame, folder::FolderSource, Prefetch, VideoSource};
use crate::{Error, Gpu, Result};

/// Tracks one sequence: the boxes (first frame = ground truth, as every toolkit expects) and the
/// seconds each frame took.
pub fn track_sequence(t: &mut Tracker, seq: &Sequence) -> Result<(Vec<[f64; 4]>, Vec<f64>)> {
    let mut src: Box<dyn VideoSource> = Box::new(Prefetch::new(Box::new(
        FolderSource::from_paths(&seq.name, seq.frames.clone())?,
    )));
    let first = first_frame(&mut *src)?;
    let init = seq.init_box().map(|v| v as f32);
    let t0 = Instant::now();
    t.init(&first, init)?;
    let mut boxes = vec![seq.init_box()];
    let mut times = vec![t0.elapsed().as_secs_f64()];
    while let Some(frame) = src.next_frame()? {
        let t0 = Instant::now();
        let u = t
            .update(&frame)
            .map_err(|e| Error::Other(format!("frame {}: {e}", boxes.len() + 1)))?;
        times.push(t0.elapsed().as_secs_f64());
        boxes.push(u.rect.map(f64::from));
    }
    Ok((boxes, times))
}

/// Mean success AUC (one-pass evaluation, got10k-toolkit definitions) of `model` over the
/// GOT-10k-layout sequences under `root` (at most `max` of them, in list order), tracked with
/// `preset`.
pub fn success_auc(
    gpu: Arc<Gpu>,
    model: Arc<SparseTT>,
    preset: Preset,
    root: &Path,
    max: Option<usize>,
) -> Result<f64> {
    let seqs = open_dataset(DatasetKind::Got10k, root, None)?;
    let mut aucs = Vec::new();
    for seq in seqs.into_iter().take(max.unwrap_or(usize::MAX)) {
        let seq = seq?;
        let mut t = Tracker::new(gpu.clone(), model.clone(), preset);
        let (boxes, _) = track_sequence(&mut t, &seq)
            .map_err(|e| Error::Other(format!("validation sequence {}: {e}", seq.name)))?;
        let (s, _) = metrics::score_sequence(Protocol::Got10kOpe, &seq, &[boxes], None)?;
        aucs.push(s.auc);
    }
    if aucs.is_empty() {
        return Err(Error::Other(format!(
            "{}: no validation sequences",
            root.display()
        )));
    }
    Ok(metrics::mean(&aucs))
}
