//! Training checkpoints: the weights as a safetensors file with the official key names (loadable
//! by `sparsett track --weights` as it is), and beside it a state file with the AdamW moments, the
//! step, the epoch and the sampler's random state, so `--resume` continues exactly where a run
//! stopped.
//!
//! Every file is written atomically (write to a temporary name, fsync, rename, fsync the folder),
//! and the `latest` pointer is replaced only after both files of a checkpoint are complete: a
//! crash at any moment leaves the previous checkpoint intact and pointed to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::fsio::write_atomic;
use crate::model::weights::StateDict;
use crate::{Error, Result};

/// Where a run is, besides its weights.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Optimizer steps done (AdamW's `t`).
    pub step: u64,
    /// Epoch the next step belongs to.
    pub epoch: u64,
    /// Seed of the run; pair `i` of the run is drawn from `(seed, i)`, so the step and the seed
    /// are the whole random state.
    pub seed: u64,
    /// AdamW first and second moments by parameter name.
    pub moments: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
    /// The last finite loss, for the log.
    pub loss: f32,
}

const LATEST: &str = "latest";

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn state_bytes(s: &TrainState) -> Result<Vec<u8>> {
    let mut views = Vec::new();
    for (name, (m, v)) in &s.moments {
        views.push((format!("exp_avg.{name}"), m));
        views.push((format!("exp_avg_sq.{name}"), v));
    }
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = views
        .iter()
        .map(|(k, v)| {
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                vec![v.len()],
                bytemuck::cast_slice(v.as_slice()),
            )
            .map(|t| (k.clone(), t))
            .map_err(|e| Error::Other(format!("checkpoint state: {e}")))
        })
        .collect::<Result<_>>()?;
    let meta = [
        ("step".to_string(), s.step.to_string()),
        ("epoch".to_string(), s.epoch.to_string()),
        ("seed".to_string(), s.seed.to_string()),
        ("loss".to_string(), s.loss.to_string()),
    ]
    .into_iter()
    .collect();
    safetensors::serialize(tensors, Some(meta))
        .map_err(|e| Error::Other(format!("cannot serialise the checkpoint state ({e})")))
}

fn parse_state(bytes: &[u8], path: &Path) -> Result<TrainState> {
    let bad = |msg: String| Error::Other(format!("{}: {msg}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a sparsett checkpoint state ({e})")))?;
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a sparsett checkpoint state ({e})")))?;
    let md = meta
        .metadata()
        .as_ref()
        .ok_or_else(|| bad("no step/epoch/seed metadata".into()))?;
    let num = |k: &str| -> Result<u64> {
        md.get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("metadata '{k}' is missing or not a number")))
    };
    let mut moments: BTreeMap<String, (Vec<f32>, Vec<f32>)> = BTreeMap::new();
    for (k, t) in st.tensors() {
        if t.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!("{k} is {:?}, expected F32", t.dtype())));
        }
        let data: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(name) = k.strip_prefix("exp_avg_sq.") {
            moments.entry(name.to_string()).or_default().1 = data;
        } else if let Some(name) = k.strip_prefix("exp_avg.") {
            moments.entry(name.to_string()).or_default().0 = data;
        } else {
            return Err(bad(format!("unexpected entry {k}")));
        }
    }
    if let Some((k, _)) = moments.iter().find(|(_, (m, v))| m.len() != v.len()) {
        return Err(bad(format!("the two moments of {k} differ in size")));
    }
    Ok(TrainState {
        step: num("step")?,
        epoch: num("epoch")?,
        seed: num("seed")?,
        moments,
        loss: md
            .get("loss")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f32::NAN),
    })
}

/// File names of the checkpoint taken after `step`.
pub fn names(step: u64) -> (String, String) {
    (
        format!("step-{step:08}.safetensors"),
        format!("step-{step:08}.state.safetensors"),
    )
}

/// Saves weights and state under `dir` and points `dir/latest` at them. Returns the weights path.
pub fn save(dir: &Path, weights: &StateDict, state: &TrainState) -> Result<PathBuf> {
    let (w, s) = names(state.step);
    let wp = dir.join(&w);
    write_atomic(&dir.join(&s), &state_bytes(state)?)?;
    write_atomic(&wp, &weights.to_safetensors_bytes()?)?;
    write_atomic(&dir.join(LATEST), format!("{w}\n{s}\n").as_bytes())?;
    Ok(wp)
}

/// The checkpoint `dir/latest` points to, if any: (weights path, state).
pub fn load_latest(dir: &Path) -> Result<Option<(PathBuf, TrainState)>> {
    let latest = dir.join(LATEST);
    let text = match std::fs::read_to_string(&latest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&latest, e)),
    };
    let mut lines = text.lines();
    let (Some(w), Some(s)) = (lines.next(), lines.next()) else {
        return Err(Error::Other(format!(
            "{}: expected two file names (weights, state)",
            latest.display()
        )));
    };
    let sp = dir.join(s);
    let bytes = std::fs::read(&sp).map_err(|e| io_err(&sp, e))?;
    Ok(Some((dir.join(w), parse_state(&bytes, &sp)?)))
}
