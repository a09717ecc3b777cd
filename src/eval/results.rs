//! Tracker result files in the layouts the toolkits read:
//!
//! * GOT-10k (got10k-toolkit): `DIR/SEQ/SEQ_001.txt` (repetition 1; the toolkit reads every
//!   `SEQ_NNN.txt`) and `DIR/SEQ/SEQ_time.txt` (seconds per frame).
//! * LaSOT, OTB, UAV123, TrackingNet (pytracking, the MATLAB toolkits, the TrackingNet server):
//!   `DIR/SEQ.txt` and `DIR/SEQ_time.txt`.
//!
//! Boxes are written `x,y,w,h` with commas (every toolkit reads that; pytracking also reads tabs),
//! reading accepts commas, tabs and spaces. Files are written to a temporary name and renamed, so
//! an interrupted run never leaves a half-written file that [`has_results`] would take as done; the
//! time file is written before the box file for the same reason.

use std::fs;
use std::path::{Path, PathBuf};

use super::datasets::{natural_cmp, DatasetKind};
use super::metrics::Runs;
use super::{parse_boxes, read_text};
use crate::{Error, Result};

/// The box file of repetition 1 of `seq`.
pub fn result_path(kind: DatasetKind, dir: &Path, seq: &str) -> PathBuf {
    match kind {
        DatasetKind::Got10k => dir.join(seq).join(format!("{seq}_001.txt")),
        _ => dir.join(format!("{seq}.txt")),
    }
}

/// The per-frame time file of `seq`.
pub fn time_path(kind: DatasetKind, dir: &Path, seq: &str) -> PathBuf {
    match kind {
        DatasetKind::Got10k => dir.join(seq).join(format!("{seq}_time.txt")),
        _ => dir.join(format!("{seq}_time.txt")),
    }
}

/// Whether `seq` already has a complete result file (writes are atomic, so existence suffices).
pub fn has_results(kind: DatasetKind, dir: &Path, seq: &str) -> bool {
    result_path(kind, dir, seq).is_file()
}

/// A box coordinate with 4 decimals (1e-4 px, far below what any metric resolves; the toolkits
/// themselves write 3 decimals or integers), trailing zeros trimmed.
pub fn format_coord(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Inf".into() } else { "-Inf".into() };
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// Write the boxes of `seq` (and its per-frame times in seconds, when given).
pub fn write_results(
    kind: DatasetKind,
    dir: &Path,
    seq: &str,
    boxes: &[[f64; 4]],
    times: Option<&[f64]>,
) -> Result<()> {
    if let Some(t) = times {
        let mut text = String::with_capacity(t.len() * 12);
        for v in t {
            text.push_str(&format!("{v:.8}\n"));
        }
        crate::fsio::write_atomic(&time_path(kind, dir, seq), text.as_bytes())?;
    }
    let mut text = String::with_capacity(boxes.len() * 32);
    for b in boxes {
        let f: Vec<String> = b.iter().map(|v| format_coord(*v)).collect();
        text.push_str(&f.join(","));
        text.push('\n');
    }
    crate::fsio::write_atomic(&result_path(kind, dir, seq), text.as_bytes())
}

/// The boxes of repetition 1 of `seq`.
pub fn read_results(kind: DatasetKind, dir: &Path, seq: &str) -> Result<Vec<[f64; 4]>> {
    let path = result_path(kind, dir, seq);
    if !path.is_file() {
        return Err(Error::Other(format!(
            "{}: no results for sequence {seq}",
            path.display()
        )));
    }
    parse_boxes(&path, &read_text(&path)?)
}

/// Every repetition of `seq`: GOT-10k's `SEQ_001.txt`, `SEQ_002.txt` … (the toolkit concatenates
/// the IoUs of all of them); one run elsewhere.
pub fn read_runs(kind: DatasetKind, dir: &Path, seq: &str) -> Result<Runs> {
    if kind != DatasetKind::Got10k {
        return Ok(vec![read_results(kind, dir, seq)?]);
    }
    let sdir = dir.join(seq);
    let prefix = format!("{seq}_");
    let mut names: Vec<String> = match fs::read_dir(&sdir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| {
                n.strip_prefix(&prefix)
                    .and_then(|r| r.strip_suffix(".txt"))
                    .is_some_and(|r| !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    if names.is_empty() {
        return Err(Error::Other(format!(
            "{}: no results for sequence {seq}",
            result_path(kind, dir, seq).display()
        )));
    }
    names.sort_by(|a, b| natural_cmp(a, b));
    names
        .into_iter()
        .map(|n| {
            let p = sdir.join(n);
            parse_boxes(&p, &read_text(&p)?)
        })
        .collect()
}
