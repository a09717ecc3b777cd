//! The training config (TOML mirroring the official YAML) and checkpoint files: parsing, the
//! errors a user sees for bad files, the schedule read from the config, and atomic checkpoints
//! that survive a crash between their files. Host-only tests (no GPU).

use std::collections::BTreeMap;
use std::path::Path;

use sparsett::model::config::Config;
use sparsett::model::weights::{HostTensor, StateDict};
use sparsett::train::checkpoint::{self, TrainState};
use sparsett::train::config::{TrainFile, EXAMPLES};

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sparsett-train-config-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn official_examples_give_the_official_architecture_and_recipe() {
    for name in ["got10k", "fulldata"] {
        let f = TrainFile::load(Path::new(name)).unwrap();
        assert_eq!(f.arch(), Config::official(), "{name}");
        let t = &f.train.track;
        assert_eq!(t.data.minibatch, 32);
        assert_eq!(t.data.sampler.pair.negative_pair_ratio, 0.33);
        assert_eq!(t.data.transformer.random_crop.max_scale, 0.3);
        assert_eq!(t.data.transformer.random_crop.max_shift, 0.4);
        // The spec's schedule: 1e-4 for epochs 0–9, 1e-5 for 10–14, 1e-6 for 15–19.
        let o = f.optim().unwrap();
        for (epoch, lr) in [
            (0, 1e-4),
            (9, 1e-4),
            (10, 1e-5),
            (14, 1e-5),
            (15, 1e-6),
            (19, 1e-6),
        ] {
            assert_eq!(o.schedule.lr(epoch), lr, "{name} epoch {epoch}");
        }
        assert_eq!(
            o.lr_mult("basemodel.net.stages.0.blocks.0.attn.w_msa.qkv.weight"),
            0.1
        );
        assert_eq!(o.lr_mult("neck.encoder.layers.0.linear1.weight"), 1.0);
        assert_eq!(o.adamw.weight_decay, 1e-4);
        let lc = f.losses();
        assert_eq!(
            [
                lc.w_cls_fc,
                lc.w_reg_fc,
                lc.w_cls_conv,
                lc.w_reg_conv,
                lc.alpha,
                lc.gamma
            ],
            [1.4, 0.6, 0.5, 2.0, 0.75, 2.0]
        );
        let l = &t.model.losses;
        assert_eq!(
            [
                l.focal_fc.weight,
                l.iou_fc.weight,
                l.focal_conv.weight,
                l.iou_conv.weight
            ],
            [1.4, 0.6, 0.5, 2.0]
        );
        assert_eq!((l.focal_fc.alpha, l.focal_fc.gamma), (0.75, 2.0));
    }
    let full = TrainFile::load(Path::new("fulldata")).unwrap();
    let ds = &full.train.track.data.sampler.submodules.dataset;
    let ratio = |n: &str| ds.tables[n].ratio;
    assert_eq!(ratio("TrackingNetDataset"), 0.65);
    assert_eq!(ratio("LaSOTDataset"), 0.3);
    assert_eq!(ratio("COCODataset"), 0.07);
    assert_eq!(full.steps_per_epoch(), 600_000 / 32);
}

#[test]
fn demo_example_is_the_tiny_architecture() {
    let f = TrainFile::load(Path::new("demo")).unwrap();
    assert_eq!(f.arch(), Config::tiny());
    assert!(EXAMPLES.iter().any(|(n, _)| *n == "demo"));
    // The second stage trains the same architecture on from the first stage's last checkpoint.
    let s2 = TrainFile::load(Path::new("demo-stage2")).unwrap();
    assert_eq!(s2.arch(), Config::tiny());
    let first = f.steps_per_epoch() * f.train.track.data.num_epochs;
    assert_eq!(
        s2.sparsett.init_weights.as_deref(),
        Some(Path::new(&format!(
            "out/demo_run/step-{first:08}.safetensors"
        )))
    );
}

#[test]
fn bad_configs_are_one_clear_error() {
    let good = EXAMPLES[0].1;
    let cases: [(&str, String, &str); 6] = [
        (
            "typo",
            good.replace("minibatch = 32", "minibatc = 32"),
            "minibatc",
        ),
        (
            "type",
            good.replace("minibatch = 32", "minibatch = \"32\""),
            "minibatch",
        ),
        (
            "ratio",
            good.replace("negative_pair_ratio = 0.33", "negative_pair_ratio = 1.5"),
            "negative_pair_ratio",
        ),
        (
            "listed",
            good.replace("names = [\"GOT10kDataset\"]", "names = [\"LaSOTDataset\"]"),
            "LaSOTDataset",
        ),
        (
            "stages",
            good.replace(
                "[[10, 1e-4], [15, 1e-5], [20, 1e-6]]",
                "[[10, 1e-4], [5, 1e-5]]",
            ),
            "lr_stages",
        ),
        (
            "syntax",
            good.replace("[train.track.data]", "[train.track.data"),
            "line",
        ),
    ];
    for (what, text, needle) in cases {
        assert_ne!(text, good, "{what}: the replacement did not apply");
        let e = TrainFile::parse(&text, "case.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("case.toml"), "{what}: {e}");
        assert!(e.contains(needle), "{what}: {e}");
    }
    let e = TrainFile::load(Path::new("/nonexistent/cfg.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/cfg.toml") && e.contains("got10k"),
        "{e}"
    );
}

fn state(step: u64) -> TrainState {
    let mut moments = BTreeMap::new();
    moments.insert(
        "a.weight".to_string(),
        (vec![0.5, -1.0, step as f32], vec![1.0, 2.0, 3.0]),
    );
    moments.insert("b.bias".to_string(), (vec![f32::MIN_POSITIVE], vec![7.25]));
    TrainState {
        step,
        epoch: step / 10,
        seed: u64::MAX - 3,
        moments,
        loss: 1.5,
    }
}

fn weights(v: f32) -> StateDict {
    let mut w = StateDict::new();
    w.insert("a.weight", HostTensor::f32(&[3], vec![v, 2.0, 3.0]));
    w
}

#[test]
fn checkpoints_round_trip_and_latest_survives_an_interrupted_save() {
    let dir = tmpdir("ckpt");
    assert!(checkpoint::load_latest(&dir).unwrap().is_none());
    let wp = checkpoint::save(&dir, &weights(1.0), &state(20)).unwrap();
    let (lp, st) = checkpoint::load_latest(&dir).unwrap().unwrap();
    assert_eq!(lp, wp);
    assert_eq!(st, state(20));
    let w = StateDict::load(&lp).unwrap();
    assert_eq!(w.f32("a.weight").unwrap(), &[1.0, 2.0, 3.0]);

    // A crash after the state file of step 30 but before its weights and the pointer: the
    // pointer still names step 20, whose files are intact.
    let (_, s30) = checkpoint::names(30);
    std::fs::write(dir.join(s30), b"half a file").unwrap();
    let (lp, st) = checkpoint::load_latest(&dir).unwrap().unwrap();
    assert_eq!((lp, st.step), (wp, 20));

    // A corrupt state file named by the pointer is an error that names the file.
    let (_, s20) = checkpoint::names(20);
    std::fs::write(dir.join(&s20), b"garbage").unwrap();
    let e = checkpoint::load_latest(&dir).unwrap_err().to_string();
    assert!(e.contains(&s20), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
