//! Training end to end on the tiny configuration (`Config::tiny()`, the demo model's
//! architecture) over generated sequences: the loss goes down over a few dozen steps, and a run
//! stopped at step k and resumed gives bit for bit the weights of an uninterrupted run (with the
//! neck's dropout on, whose masks a resumed run must redraw alike). Also the
//! run's clear errors (resume without a checkpoint, a dataset folder that is missing).
//!
//! Run with `WGPU_BACKEND=vulkan cargo test --test train` (lavapipe works; about a minute).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sparsett::model::weights::StateDict;
use sparsett::synth::{generate, write_got10k, SynthSpec};
use sparsett::train::config::TrainFile;
use sparsett::train::trainer::Trainer;
use sparsett::Gpu;

#[path = "support/golden.rs"]
mod golden;

fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Arc::new(Gpu::new().expect("a GPU adapter (lavapipe in CI)")))
        .clone()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sparsett-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Generated GOT-10k-layout sequences (a cat patch over the astronaut photo), made once.
fn dataset() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = scratch("data");
        // The config's GOT10kDataset table reads the `train` split: ROOT/train/list.txt.
        let dir = root.join("train");
        let (bg, obj) = golden::photos();
        let mut names = Vec::new();
        for seed in 0..3u64 {
            let s = generate(
                &bg,
                &obj,
                &SynthSpec {
                    frames: 12,
                    object_size: (60, 52),
                    seed,
                    ..Default::default()
                },
            )
            .unwrap();
            let name = format!("GOT-10k_Train_{:06}", seed + 1);
            write_got10k(&dir.join(&name), &s, false).unwrap();
            names.push(name);
        }
        std::fs::write(dir.join("list.txt"), names.join("\n") + "\n").unwrap();
        root
    })
}

/// The demo config, shrunk to a CI-sized run over [`dataset`].
fn config(batch: usize, pairs_per_epoch: usize) -> TrainFile {
    let mut f = TrainFile::load(Path::new("demo")).unwrap();
    let t = &mut f.train.track;
    t.data.minibatch = batch;
    t.data.nr_image_per_epoch = pairs_per_epoch;
    t.data.num_workers = 2;
    let ds = &mut t.data.sampler.submodules.dataset;
    ds.tables.get_mut("GOT10kDataset").unwrap().dataset_root = dataset().to_path_buf();
    // Positive pairs only: with so few steps a third of negative pairs makes the loss curve too
    // noisy to compare two short windows of it.
    t.data.sampler.pair.negative_pair_ratio = 0.0;
    f.sparsett.val_root = None;
    f
}

fn weights_of(dir: &Path) -> StateDict {
    let (w, _) = sparsett::train::checkpoint::load_latest(dir)
        .unwrap()
        .expect("a checkpoint");
    StateDict::load(&w).unwrap()
}

#[test]
fn the_tiny_model_learns_on_generated_sequences() {
    let dir = scratch("learn");
    let mut t = Trainer::new(gpu(), config(2, 64), &dir, false).unwrap();
    let logs = t.run(Some(30), true).unwrap();
    assert_eq!(logs.len(), 30);
    let mean = |s: &[sparsett::train::trainer::StepLog]| {
        s.iter().map(|l| l.total as f64).sum::<f64>() / s.len() as f64
    };
    let (first, last) = (mean(&logs[..8]), mean(&logs[22..]));
    // Training from random weights: the focal terms start near their prior and fall fast; a
    // loss that did not fall by a tenth over 30 steps means the gradients do not descend.
    assert!(
        last < 0.9 * first,
        "loss did not go down: first 8 steps {first:.4}, last 8 {last:.4}"
    );
    for l in &logs {
        assert!(l.total.is_finite());
    }
    // The checkpoint is a weights file `sparsett track` accepts, carrying its architecture.
    let sd = weights_of(&dir);
    assert!(sd.len() > 50);
    let _ = std::fs::remove_dir_all(&dir);
}

/// [`config`] with the official neck dropout (0.1): its masks must be a function of the seed
/// and the step, like everything else a resumed run redraws.
fn config_with_dropout(batch: usize, pairs_per_epoch: usize) -> TrainFile {
    let mut f = config(batch, pairs_per_epoch);
    f.train.track.model.neck.transformer.prob_dropout = 0.1;
    f
}

#[test]
fn stopping_and_resuming_gives_the_uninterrupted_weights() {
    let (k, n) = (3, 6);
    let a = scratch("straight");
    let mut t = Trainer::new(gpu(), config_with_dropout(2, 8), &a, false).unwrap();
    t.run(Some(n), true).unwrap();
    drop(t);

    let b = scratch("resumed");
    let mut t = Trainer::new(gpu(), config_with_dropout(2, 8), &b, false).unwrap();
    t.run(Some(k), true).unwrap();
    drop(t);
    let mut t = Trainer::new(gpu(), config_with_dropout(2, 8), &b, true).unwrap();
    assert_eq!(t.step(), k);
    t.run(Some(n - k), true).unwrap();
    drop(t);

    let (wa, wb) = (weights_of(&a), weights_of(&b));
    let mut compared = 0;
    for (k, ta) in wa.iter() {
        let tb = wb
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing after resume"));
        assert_eq!(
            ta, tb,
            "{k} differs between the straight and the resumed run"
        );
        compared += 1;
    }
    assert_eq!(compared, wb.len());
    // And training did change the weights (the comparison is not between two initialisations).
    let init = config(2, 8).arch().random_weights(0).unwrap();
    let changed = wa.iter().filter(|(k, t)| init.get(k) != Some(t)).count();
    assert!(changed > 10, "only {changed} entries changed");
    // The dropout is applied: without it the same steps end elsewhere.
    let c = scratch("no-dropout");
    let mut t = Trainer::new(gpu(), config(2, 8), &c, false).unwrap();
    t.run(Some(n), true).unwrap();
    drop(t);
    let wc = weights_of(&c);
    let neck_differs = wa
        .iter()
        .filter(|(k, t)| k.starts_with("neck.") && wc.get(k) != Some(t))
        .count();
    assert!(neck_differs > 0, "neck dropout changed no neck weight");
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn clear_errors_for_a_bad_run() {
    let dir = scratch("errors");
    let e = Trainer::new(gpu(), config(2, 8), &dir, true)
        .err()
        .expect("resume without a checkpoint must fail")
        .to_string();
    assert!(e.contains("no checkpoint"), "{e}");
    let mut cfg = config(2, 8);
    let missing = dir.join("nowhere");
    cfg.train
        .track
        .data
        .sampler
        .submodules
        .dataset
        .tables
        .get_mut("GOT10kDataset")
        .unwrap()
        .dataset_root = missing.clone();
    let e = Trainer::new(gpu(), cfg, &dir, false)
        .err()
        .expect("a missing dataset must fail")
        .to_string();
    assert!(e.contains("GOT10kDataset") && e.contains("nowhere"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
