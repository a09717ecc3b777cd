//! The shipped demo model (`src/assets/sparsett-demo.safetensors`, what `sparsett track` and the
//! browser page run without `--weights`): its size and architecture, and that it tracks. The
//! tracking check uses sequences generated from photos the model never saw in training (the
//! golden reference frames; it was trained on clips, see scripts/train-demo.sh) and compares its
//! success AUC with its own untrained initialisation and with the trivial tracker's (the box left
//! where it started).
//!
//! Run with `WGPU_BACKEND=vulkan cargo test --test demo_model` (about a minute on lavapipe).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sparsett::eval::{metrics, open_dataset, DatasetKind, Protocol};
use sparsett::model::weights::StateDict;
use sparsett::model::{Config, SparseTT};
use sparsett::synth::{write_dataset, DatasetSpec};
use sparsett::tracker::Preset;
use sparsett::Gpu;

#[path = "support/golden.rs"]
mod golden;

const DEMO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/assets/sparsett-demo.safetensors"
);

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sparsett-demo-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn demo_model_is_the_tiny_configuration_and_small() {
    let bytes = std::fs::metadata(DEMO).unwrap().len();
    assert!(
        bytes <= 8 << 20,
        "{bytes} bytes: the demo model must stay ≤ 8 MB"
    );
    let sd = StateDict::load_checked(Path::new(DEMO)).unwrap();
    assert_eq!(sd.config(), Config::tiny());
    let preset = Preset::for_weights(&sd).unwrap();
    assert!(
        preset.is_some(),
        "the demo model carries the preset tuned for it (convert --preset)"
    );
    // Trained, not the seed-0 initialisation `init-weights --config tiny` writes.
    let init = Config::tiny().random_weights(0).unwrap();
    let name = "head.si_fc";
    assert_ne!(
        sd.tensor(name).unwrap().as_f32(),
        init.tensor(name).unwrap().as_f32(),
        "{name} still has its initial value"
    );
}

/// Mean success AUC (GOT-10k one-pass conventions) of `boxes_of` over the sequences under `root`.
fn mean_auc(
    root: &Path,
    mut boxes_of: impl FnMut(&sparsett::eval::Sequence) -> Vec<[f64; 4]>,
) -> f64 {
    let mut aucs = Vec::new();
    for seq in open_dataset(DatasetKind::Got10k, root, None).unwrap() {
        let seq = seq.unwrap();
        let boxes = boxes_of(&seq);
        let (s, _) = metrics::score_sequence(Protocol::Got10kOpe, &seq, &[boxes], None).unwrap();
        aucs.push(s.auc);
    }
    metrics::mean(&aucs)
}

#[test]
fn demo_model_tracks_better_than_untrained_on_unseen_photos() {
    let gpu = Arc::new(Gpu::new().expect("a GPU adapter (lavapipe in CI)"));
    let (bg, obj) = golden::photos();
    let root = scratch("seqs");
    let spec = DatasetSpec {
        sequences: 6,
        frames: 24,
        seed: 5,
        ..Default::default()
    };
    write_dataset(&[bg, obj], &root, &spec).unwrap();
    let demo = StateDict::load_checked(Path::new(DEMO)).unwrap();
    // Both models track with the demo model's own preset, as `sparsett track` runs it.
    let preset = Preset::for_weights(&demo).unwrap().unwrap_or_default();
    let auc_of = |sd: &StateDict| {
        let model = Arc::new(SparseTT::load(&gpu, sd).unwrap());
        sparsett::eval::success_auc(gpu.clone(), model, preset, &root, None).unwrap()
    };
    let tracked = auc_of(&demo);
    let untrained = auc_of(&Config::tiny().random_weights(0).unwrap());
    let stay = mean_auc(&root, |s| vec![s.init_box(); s.frames.len()]);
    println!(
        "success AUC: demo model {tracked:.3}, its untrained initialisation {untrained:.3}, \
         static baseline {stay:.3}"
    );
    let _ = std::fs::remove_dir_all(&root);
    // Training must show: the untrained initialisation loses the object within a few frames
    // (AUC 0.16 here with the demo preset), the trained model follows it (0.49), and it beats
    // the box left where it started (0.42). Tracking is deterministic on one adapter; lavapipe
    // and a GPU differ by rounding only, which moves these by far less than the margins (0.1
    // over the untrained model; 0.02 over the static box, of the 0.065 measured).
    assert!(
        tracked > untrained + 0.1,
        "the demo model (AUC {tracked:.3}) is not clearly better than its untrained \
         initialisation ({untrained:.3})"
    );
    assert!(
        tracked > stay + 0.02,
        "the demo model (AUC {tracked:.3}) does not beat the box left in place ({stay:.3})"
    );
}
