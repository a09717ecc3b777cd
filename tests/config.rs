//! Model configurations: the tiny model's random weights round-trip through safetensors with
//! their configuration, build the model it describes and run template + track; bad
//! configurations and mismatched weights give clear errors. The official configuration's
//! numbers are covered by tests/parity.rs.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use sparsett::model::config::METADATA_KEY;
use sparsett::model::weights::StateDict;
use sparsett::model::{keys, Config, SparseTT, Taps, X_SIZE, Z_SIZE};
use sparsett::prng::SplitMix64;
use sparsett::Gpu;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().expect("a GPU adapter (lavapipe: WGPU_BACKEND=vulkan)"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sparsett-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn tiny_schema_is_the_used_part_of_the_official_names() {
    let tiny = Config::tiny().schema();
    let official = keys::schema_map();
    assert!(tiny
        .iter()
        .all(|k| k.used || k.key.ends_with("num_batches_tracked")));
    for k in &tiny {
        assert!(
            official.contains_key(&k.key),
            "{} is not an official key",
            k.key
        );
    }
    let names: std::collections::HashSet<&str> = tiny.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(names.len(), tiny.len(), "duplicate keys");
    // One Swin block per stage 0/1, two in stage 2; one encoder and one decoder layer; one
    // bottleneck.
    assert!(names.contains("basemodel.net.stages.2.blocks.1.norm1.weight"));
    assert!(!names.contains("basemodel.net.stages.2.blocks.2.norm1.weight"));
    assert!(!names.contains("basemodel.net.stages.3.blocks.0.norm1.weight"));
    assert!(!names.contains("neck.decoder.decoder_layers.1.norm1.weight"));
    assert!(names.contains("head.conv_branch.1.conv1.weight"));
    assert!(!names.contains("head.conv_branch.2.conv1.weight"));
    assert_eq!(keys::official_schema().len(), keys::NUM_ENTRIES);
}

#[test]
fn random_weights_are_deterministic_and_carry_their_config() {
    let c = Config::tiny();
    let a = c.random_weights(3).unwrap();
    assert_eq!(a, c.random_weights(3).unwrap());
    assert_ne!(a, c.random_weights(4).unwrap());
    assert_eq!(a.config(), c);
    let bytes = a.to_safetensors_bytes().unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let text = meta.metadata().as_ref().unwrap()[METADATA_KEY].clone();
    assert_eq!(text.parse::<Config>().unwrap(), c);
    let back = StateDict::from_safetensors_bytes(&bytes).unwrap();
    assert_eq!(back.config(), c);
    back.validate().unwrap();
    assert_eq!(back.len(), a.len());
    for (k, t) in a.iter() {
        assert_eq!(back.get(k), Some(t), "{k}");
    }
    // Official weights carry no config key, so files stay what the official tools write.
    let o = Config::official().random_weights(0).unwrap();
    assert_eq!(o.len(), keys::NUM_ENTRIES);
    let ob = o.to_safetensors_bytes().unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&ob).unwrap();
    assert!(!meta.metadata().as_ref().unwrap().contains_key(METADATA_KEY));
    // Its large entries follow the golden PRNG rule.
    let key = "head.fc_branch.2.weight";
    assert_eq!(
        o.f32(key).unwrap(),
        sparsett::prng::prng_weights(key, 0, &[1024, 1024, 1, 1]).as_slice()
    );
}

#[test]
fn bad_config_metadata_and_mismatched_weights_are_clear_errors() {
    let mut sd = Config::tiny().random_weights(0).unwrap();
    let bytes = sd.to_safetensors_bytes().unwrap();
    // Same length, so the header's size field stays right.
    let (from, to) = (b"ffn=256", b"ffn=2x6");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("config text in the header");
    let mut patched = bytes.clone();
    patched[at..at + from.len()].copy_from_slice(to);
    let e = StateDict::from_safetensors_bytes(&patched)
        .unwrap_err()
        .to_string();
    assert!(e.contains(METADATA_KEY) && e.contains("ffn=2x6"), "{e}");
    // Tiny weights claimed to be official: the schema check names the mismatch.
    sd.set_config(None);
    let e = sd.validate().unwrap_err().to_string();
    assert!(e.contains("Swin-T") && e.contains("wrong shape"), "{e}");
    // Forced onto the official architecture, the model load names a key and both shapes.
    let e = SparseTT::load_with(gpu(), &sd, &Config::official())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("has shape") && e.contains("the model needs"),
        "{e}"
    );
}

#[test]
fn tiny_model_runs_template_and_track() {
    let g = gpu();
    let sd = Config::tiny().random_weights(1).unwrap();
    let model = SparseTT::load(g, &sd).unwrap();
    assert_eq!(*model.config(), Config::tiny());
    let b = 2;
    let mut rng = SplitMix64::new(9);
    let z = g
        .upload(
            &[b, 3, Z_SIZE, Z_SIZE],
            &rng.vec_f32(b * 3 * Z_SIZE * Z_SIZE, -2.0, 2.0),
        )
        .unwrap();
    let x = g
        .upload(
            &[b, 3, X_SIZE, X_SIZE],
            &rng.vec_f32(b * 3 * X_SIZE * X_SIZE, -2.0, 2.0),
        )
        .unwrap();
    let mut enc = g.encoder();
    let t = model.template(&mut enc, &z, &mut Taps::off()).unwrap();
    let out = model.track(&mut enc, &t, &x, &mut Taps::off()).unwrap();
    assert_eq!(out.score.shape(), &[b, 361]);
    assert_eq!(out.boxes.shape(), &[b, 361, 4]);
    let score = out.score.clone();
    let boxes = out.boxes.clone();
    let reads = enc.submit_read(&[&score, &boxes]).unwrap();
    for (name, v) in ["score", "boxes"].iter().zip(&reads) {
        assert!(v.iter().all(|x| x.is_finite()), "{name} has NaN/inf");
    }
    // Scores are sigmoids; the two targets see different crops, so they differ.
    assert!(reads[0].iter().all(|&s| (0.0..=1.0).contains(&s)));
    assert_ne!(&reads[0][..361], &reads[0][361..]);
}

/// `init-weights` then `track --weights` on a generated 3-frame sequence: the file's
/// configuration is all the tracker needs.
#[test]
fn cli_init_weights_then_track() {
    let d = scratch("cli");
    let w = d.join("tiny.safetensors");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_sparsett"))
            .args(args)
            .env(
                "WGPU_BACKEND",
                std::env::var("WGPU_BACKEND").unwrap_or("vulkan".into()),
            )
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{args:?}: {err}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = run(&[
        "init-weights",
        "--config",
        "tiny",
        "--seed",
        "2",
        "--out",
        w.to_str().unwrap(),
    ]);
    assert!(out.contains("embed=32"), "{out}");
    let seq = d.join("seq");
    std::fs::create_dir_all(&seq).unwrap();
    for i in 0..3u32 {
        let img = image::RgbImage::from_fn(160, 120, |x, y| {
            let inside = (40 + 5 * i..80 + 5 * i).contains(&x) && (30..70).contains(&y);
            if inside {
                image::Rgb([220, 40, 40])
            } else {
                image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
            }
        });
        img.save(seq.join(format!("{:08}.png", i + 1))).unwrap();
    }
    let boxes = d.join("boxes.txt");
    run(&[
        "track",
        "--video",
        seq.to_str().unwrap(),
        "--init",
        "40,30,40,40",
        "--weights",
        w.to_str().unwrap(),
        "--out",
        boxes.to_str().unwrap(),
        "--quiet",
    ]);
    let lines = std::fs::read_to_string(&boxes).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
}
