//! Everything around the tracker for `sparsett eval`: benchmark dataset readers ([`datasets`]),
//! tracker result files in each toolkit's layout ([`results`]), the toolkits' metrics ([`metrics`],
//! definitions in `/work/shared/spec/metrics.md`) and success / precision plots ([`plot`]).
//!
//! A typical run: [`open_dataset`] → track each [`Sequence`] whose results are missing
//! ([`results::has_results`], [`results::write_results`]) → [`metrics::score`] per result folder →
//! [`metrics::format_table`] and [`plot::success_plot`] / [`plot::precision_plot`].

pub mod datasets;
pub mod metrics;
pub mod plot;
pub mod results;
pub mod run;

pub use datasets::{frame_size, open_dataset, DatasetKind, Sequence};
pub use metrics::{format_sequences, format_table, score, Protocol, Report, Runs, Scores};
pub use run::{success_auc, track_sequence};

use std::path::Path;

use crate::{Error, Result};

/// The whole file as text, with an error that names it.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The fields of one line: toolkits write commas (GOT-10k, LaSOT, pytracking), tabs (pytracking,
/// some OTB files) or spaces (other OTB files), sometimes with a trailing separator.
fn fields(line: &str) -> impl Iterator<Item = &str> {
    line.split([',', '\t', ' ', '\r'])
        .map(str::trim)
        .filter(|f| !f.is_empty())
}

/// The lines that carry data. Blank lines at the end are tolerated (editors add them); a blank
/// line before the last data line would shift every later frame, so it is an error.
fn data_lines<'a>(path: &Path, text: &'a str) -> Result<Vec<(usize, &'a str)>> {
    let lines: Vec<&str> = text.lines().collect();
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let Some(last) = last else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(last + 1);
    for (i, line) in lines[..=last].iter().enumerate() {
        if line.trim().is_empty() {
            return Err(Error::Other(format!(
                "{} line {}: empty line inside the data",
                path.display(),
                i + 1
            )));
        }
        out.push((i + 1, *line));
    }
    Ok(out)
}

/// One `x,y,w,h` box per line (comma, tab or space separated). `NaN` is accepted: UAV123 marks
/// frames without a target that way.
pub(crate) fn parse_boxes(path: &Path, text: &str) -> Result<Vec<[f64; 4]>> {
    let mut boxes = Vec::new();
    for (n, line) in data_lines(path, text)? {
        let f: Vec<&str> = fields(line).collect();
        if f.len() != 4 {
            return Err(Error::Other(format!(
                "{} line {n}: expected 4 numbers (x,y,w,h), found {}",
                path.display(),
                f.len()
            )));
        }
        let mut b = [0.0; 4];
        for (v, s) in b.iter_mut().zip(&f) {
            *v = s.parse::<f64>().map_err(|_| {
                Error::Other(format!(
                    "{} line {n}: '{s}' is not a number (expected x,y,w,h)",
                    path.display()
                ))
            })?;
        }
        boxes.push(b);
    }
    Ok(boxes)
}

/// Integer labels, one per frame: GOT-10k writes one per line, LaSOT one comma-separated line.
pub(crate) fn parse_labels(path: &Path, text: &str) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for (n, line) in data_lines(path, text)? {
        for s in fields(line) {
            // Some label files are written by numpy as floats ("1.0"): accept integral values.
            let v = s
                .parse::<i64>()
                .ok()
                .or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| v.fract() == 0.0 && v.abs() < 1e15)
                        .map(|v| v as i64)
                })
                .ok_or_else(|| {
                    Error::Other(format!(
                        "{} line {n}: '{s}' is not an integer label",
                        path.display()
                    ))
                })?;
            out.push(v);
        }
    }
    Ok(out)
}
