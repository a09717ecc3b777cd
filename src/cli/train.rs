//! `sparsett train --config FILE [--out DIR] [--resume] [--steps N]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sparsett::train::config::TrainFile;
use sparsett::train::trainer::Trainer;
use sparsett::{Gpu, Result};

pub struct TrainArgs<'a> {
    pub config: &'a Path,
    pub out: Option<&'a Path>,
    pub resume: bool,
    pub steps: Option<u64>,
    pub quiet: bool,
}

pub fn run(gpu: Arc<Gpu>, a: &TrainArgs) -> Result<()> {
    let cfg = TrainFile::load(a.config)?;
    let t = &cfg.train.track;
    let dir: PathBuf = a
        .out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| t.exp_save.join(&t.exp_name));
    let arch = cfg.arch();
    let mut trainer = Trainer::new(gpu.clone(), cfg.clone(), &dir, a.resume)?;
    if !a.quiet {
        eprintln!(
            "adapter: {}\nmodel: {:.2} M parameters; batch {}; {} steps per epoch, {} epochs; \
             checkpoints in {}{}",
            gpu.adapter_line(),
            arch.num_params() as f64 / 1e6,
            t.data.minibatch,
            cfg.steps_per_epoch(),
            t.data.num_epochs,
            dir.display(),
            if trainer.step() > 0 {
                format!(" (resuming after step {})", trainer.step())
            } else {
                String::new()
            }
        );
    }
    let logs = trainer.run(a.steps, a.quiet)?;
    if let (Some(first), Some(last)) = (logs.first(), logs.last()) {
        println!(
            "steps {}–{}: loss {:.4} → {:.4}; weights: {}",
            first.step,
            last.step,
            first.total,
            last.total,
            dir.display()
        );
    }
    Ok(())
}
