//! `sparsett eval`: run the tracker over a benchmark (resuming), write toolkit result files, score
//! one or several result folders with the toolkits' metrics, print the table, draw the plots.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use sparsett::eval::{self, metrics, plot, results, DatasetKind, Protocol, Sequence};
use sparsett::model::SparseTT;
use sparsett::tracker::{Preset, Tracker};
use sparsett::{Error, Gpu, Result};

pub struct EvalArgs<'a> {
    pub dataset: DatasetKind,
    pub root: &'a Path,
    pub split: Option<&'a str>,
    /// The first folder receives this run's results; all are scored side by side.
    pub results: &'a [PathBuf],
    pub score_only: bool,
    pub preset: Option<Preset>,
    pub protocol: Option<Protocol>,
    pub weights: Option<&'a Path>,
    pub plots: Option<&'a Path>,
    /// Where to write (and then score) the box-stays-put baseline.
    pub static_baseline: Option<&'a Path>,
}

/// The official preset for a benchmark.
pub fn preset_for(kind: DatasetKind) -> Preset {
    match kind {
        DatasetKind::Otb => Preset::OTB,
        DatasetKind::Uav123 => Preset::UAV,
        _ => Preset::GOT10K,
    }
}

fn bar(len: u64) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(
            "[{elapsed_precise}] {wide_bar} {pos}/{len} sequences {msg} (eta {eta})",
        )
        .expect("valid template"),
    );
    b
}

pub fn run(gpu: Option<Arc<Gpu>>, a: &EvalArgs) -> Result<()> {
    let kind = a.dataset;
    let opened = eval::open_dataset(kind, a.root, a.split)?;
    let mut seqs = Vec::new();
    let mut broken = Vec::new();
    for s in opened {
        match s {
            Ok(s) => seqs.push(s),
            Err(e) => broken.push(e.to_string()),
        }
    }
    for e in &broken {
        eprintln!("skipping a broken sequence: {e}");
    }
    if seqs.is_empty() {
        return Err(Error::Other(format!(
            "{}: no usable {} sequence",
            a.root.display(),
            kind.title()
        )));
    }
    let Some(out) = a.results.first() else {
        return Err(Error::Other("give at least one --results folder".into()));
    };

    if !a.score_only {
        let gpu = gpu.ok_or_else(|| Error::Other("tracking needs a GPU adapter".into()))?;
        std::fs::create_dir_all(out).map_err(|source| Error::Io {
            path: out.display().to_string(),
            source,
        })?;
        let todo: Vec<&Sequence> = seqs
            .iter()
            .filter(|s| !results::has_results(kind, out, &s.name))
            .collect();
        // The weights are read only when there is something to track; they may carry the
        // preset to use.
        let (model, stored) = if todo.is_empty() {
            (None, None)
        } else {
            let sd = super::weights::load(a.weights, false)?;
            (Some(SparseTT::load(&gpu, &sd)?), Preset::for_weights(&sd)?)
        };
        let preset = a.preset.or(stored).unwrap_or_else(|| preset_for(kind));
        eprintln!(
            "{} sequences, {} already have results in {}; preset {preset}",
            seqs.len(),
            seqs.len() - todo.len(),
            out.display()
        );
        if let Some(model) = model {
            let mut tracker = Tracker::new(gpu, Arc::new(model), preset);
            let pb = bar(todo.len() as u64);
            for seq in todo {
                pb.set_message(seq.name.clone());
                let t0 = Instant::now();
                match eval::track_sequence(&mut tracker, seq) {
                    Ok((boxes, times)) => {
                        results::write_results(kind, out, &seq.name, &boxes, Some(&times))?;
                        let fps = boxes.len() as f64 / t0.elapsed().as_secs_f64();
                        pb.println(format!(
                            "{}: {} frames, {fps:.2} frames/s",
                            seq.name,
                            boxes.len()
                        ));
                    }
                    Err(e) => pb.println(format!("skipping sequence {}: {e}", seq.name)),
                }
                pb.inc(1);
            }
            pb.finish_and_clear();
        }
    }

    let mut folders: Vec<PathBuf> = a.results.to_vec();
    if let Some(dir) = a.static_baseline {
        write_static_baseline(kind, dir, &seqs)?;
        folders.push(dir.to_path_buf());
    }
    let protocol = a.protocol.unwrap_or_else(|| Protocol::default_for(kind));
    let reports: Vec<metrics::Report> = folders
        .iter()
        .map(|dir| {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string());
            metrics::score(
                protocol,
                &name,
                &seqs,
                &|s| results::read_runs(kind, dir, &s.name),
                &|s| eval::frame_size(s),
            )
        })
        .collect();
    for r in &reports {
        for (seq, why) in &r.skipped {
            eprintln!("{}: not scored: {seq}: {why}", r.tracker);
        }
    }
    let title = format!("{} ({})", kind.title(), protocol.describe());
    print!("{}", metrics::format_table(&title, &reports));
    if reports.iter().all(|r| r.sequences.is_empty()) {
        return Err(Error::Other("no sequence could be scored".into()));
    }
    let dir = a.plots.unwrap_or(out);
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let size = (800, 600);
    let success = dir.join("success.png");
    plot::success_plot(&success, &title, &reports, size)?;
    println!("success plot: {}", success.display());
    if protocol != Protocol::Got10k {
        let precision = dir.join("precision.png");
        plot::precision_plot(&precision, &title, &reports, size)?;
        println!("precision plot: {}", precision.display());
    }
    Ok(())
}

/// The trivial tracker: every frame's box is the first frame's ground truth.
fn write_static_baseline(kind: DatasetKind, dir: &Path, seqs: &[Sequence]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    for s in seqs {
        let Some(first) = s.gt.first() else {
            continue;
        };
        let boxes = vec![*first; s.frames.len()];
        results::write_results(kind, dir, &s.name, &boxes, None)?;
    }
    eprintln!(
        "static baseline (the first box, never moved) written to {}",
        dir.display()
    );
    Ok(())
}
