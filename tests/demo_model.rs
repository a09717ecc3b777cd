//! The shipped demo model (`src/assets/sparsett-demo.safetensors`, what `sparsett track` and the
//! browser page run without `--weights`): its size and architecture, and that it tracks. The
//! tracking check uses sequences generated from photos the model never saw in training (the
//! golden reference frames; it was trained on clips, see scripts/train-demo.sh) and compares its
//! success AUC with its own untrained initialisation (and prints the trivial tracker's, the box
//! left where it started).
//!
//! Run with `WGPU_BACKEND=vulkan cargo test --test demo_model` (about a minute on lavapipe).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sparsett::eval::{metrics, open_dataset, DatasetKind, Protocol};
use sparsett::model::weights::StateDict;
use sparsett::model::{Config, SparseTT};
use sparsett::synth::{write_dataset, DatasetSpec};
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
    let auc_of = |sd: &StateDict| {
        let model = Arc::new(SparseTT::load(&gpu, sd).unwrap());
        sparsett::eval::success_auc(gpu.clone(), model, &root, None).unwrap()
    };
    let tracked = auc_of(&StateDict::load_checked(Path::new(DEMO)).unwrap());
    let untrained = auc_of(&Config::tiny().random_weights(0).unwrap());
    let stay = mean_auc(&root, |s| vec![s.init_box(); s.frames.len()]);
    println!(
        "success AUC: demo model {tracked:.3}, its untrained initialisation {untrained:.3}, \
         static baseline {stay:.3}"
    );
    let _ = std::fs::remove_dir_all(&root);
    // Training must show: the untrained initialisation loses the object within a few frames
    // (AUC ≈ 0.07 here), the trained model follows it part of the way (≈ 0.25). A margin of 0.1 is
    // far above the spread between adapters (tracking is deterministic on one adapter; lavapipe
    // and a GPU differ by rounding only). The static baseline is printed, not asserted: the demo
    // model does not beat it yet (README, "Weights").
    assert!(
        tracked > untrained + 0.1,
        "the demo model (AUC {tracked:.3}) is not clearly better than its untrained \
         initialisation ({untrained:.3})"
    );
}
