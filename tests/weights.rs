//! Checkpoint loading: the official key schema, the torch zip / safetensors readers, validation,
//! the golden PRNG weights and `convert`. CPU only.
//!
//! Tolerances: none. Loading copies values, so every comparison is exact (bitwise for the PRNG
//! test vectors); the only arithmetic is dtype widening (f16/bf16 → f32 and i32 → i64, exact) and
//! f64 → f32, compared against Rust's `as f32` (round to nearest even, as torch's `copy_`).
//!
//! Fixtures (tests/data/weights/, made by make_fixtures.py without torch) are tiny; the golden
//! files (SPARSETT_GOLDEN_DIR, else tests/data/golden/seed0, else ../shared/golden/seed0) are
//! used when present, and the tests that need them print a note and pass when they are not.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sparsett::model::keys::{self, KeyDType};
use sparsett::model::pickle;
use sparsett::model::weights::{self, HostData, HostTensor, StateDict};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/weights")
        .join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn golden_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = match std::env::var_os("SPARSETT_GOLDEN_DIR") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            root.join("tests/data/golden/seed0"),
            root.join("../shared/golden/seed0"),
        ],
    };
    let found = candidates.iter().find(|d| d.join("meta.json").exists());
    if found.is_none() {
        eprintln!(
            "note: golden data not found in {candidates:?} (set SPARSETT_GOLDEN_DIR); skipping"
        );
    }
    found.cloned()
}

/// A scratch path unique to this process and test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sparsett-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The full-size official dict of schema_stride0.pkl, loaded once.
fn stride0() -> &'static StateDict {
    static SD: OnceLock<StateDict> = OnceLock::new();
    SD.get_or_init(|| StateDict::load(fixture("schema_stride0.pkl")).unwrap())
}

fn f32s(sd: &StateDict, key: &str) -> Vec<f32> {
    sd.f32(key).unwrap().to_vec()
}

fn err_text<T: std::fmt::Debug>(r: sparsett::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

// --- schema ------------------------------------------------------------------------------------

/// (key, shape, dtype, kind) rows of official_keys.txt (copied from the golden meta.json).
fn committed_keys() -> Vec<(String, Vec<usize>, String, String)> {
    std::fs::read_to_string(fixture("official_keys.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let shape = f[1]
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            (f[0].into(), shape, f[2].into(), f[3].into())
        })
        .collect()
}

#[test]
fn schema_equals_official_key_list() {
    let rows = committed_keys();
    assert_eq!(rows.len(), keys::NUM_ENTRIES);
    let schema = keys::schema_map();
    assert_eq!(schema.len(), keys::NUM_ENTRIES);
    for (key, shape, dtype, kind) in &rows {
        let s = schema
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the schema"));
        assert_eq!(&s.shape, shape, "{key}");
        assert_eq!(s.dtype.name(), dtype, "{key}");
        assert_eq!(s.derived, kind == "derived", "{key}");
        // The golden rule's split follows from the schema alone.
        let prng = !s.derived && s.dtype == KeyDType::F32 && s.numel() > weights::PRNG_MIN_NUMEL;
        assert_eq!(prng, kind == "prng", "{key}");
    }
    let kinds = |k: &str| rows.iter().filter(|r| r.3 == k).count();
    assert_eq!(
        (kinds("prng"), kinds("explicit"), kinds("derived")),
        (100, 295, 43)
    );
    let params = schema.values().filter(|s| !s.is_buffer()).count();
    assert_eq!(params, keys::NUM_PARAMETERS);
}

#[test]
fn schema_used_flags() {
    let schema = keys::schema_map();
    let unused: Vec<&str> = schema
        .values()
        .filter(|s| !s.used)
        .map(|s| s.key.as_str())
        .collect();
    for k in &unused {
        assert!(
            k.starts_with("basemodel.net.stages.3.")
                || k.starts_with("basemodel.net.stages.2.downsample.")
                || k.ends_with(".num_batches_tracked"),
            "{k} marked unused"
        );
    }
    assert!(schema["basemodel.net.stages.1.downsample.reduction.weight"].used);
    assert!(schema["basemodel.net.norm2.weight"].used);
    assert!(!schema["basemodel.net.stages.2.downsample.norm.weight"].used);
    assert!(!schema["basemodel.net.stages.3.blocks.1.ffn.layers.1.bias"].used);
    // stage 3: 2 blocks x 14 entries; stage-2 downsample: 3; BatchNorm counters: 30.
    assert_eq!(unused.len(), 2 * 14 + 3 + 30);
}

#[test]
fn schema_equals_golden_meta_json() {
    let Some(dir) = golden_dir() else { return };
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let shape = |v: &serde_json::Value| -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    };
    let mut want: Vec<(String, Vec<usize>, &str)> = Vec::new();
    for e in meta["prng_entries"].as_array().unwrap() {
        want.push((e["key"].as_str().unwrap().into(), shape(&e["shape"]), "f32"));
    }
    for (k, v) in meta["explicit_entries"].as_object().unwrap() {
        want.push((k.clone(), shape(v), "f32"));
    }
    for (k, v) in meta["derived_entries"].as_object().unwrap() {
        let dt = match v["dtype"].as_str().unwrap() {
            "torch.int64" => "i64",
            "torch.float32" => "f32",
            other => panic!("{other}"),
        };
        want.push((k.clone(), shape(&v["shape"]), dt));
    }
    let mut got: Vec<(String, Vec<usize>, &str)> = keys::official_schema()
        .into_iter()
        .map(|s| (s.key, s.shape, s.dtype.name()))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

// --- golden weights ----------------------------------------------------------------------------

#[test]
fn golden_state_dict_follows_the_rule() {
    let Some(dir) = golden_dir() else { return };
    let small = dir.join("small_params.safetensors");
    let sd = weights::golden_state_dict(&small, 0).unwrap();
    assert_eq!(sd.len(), keys::NUM_ENTRIES);
    sd.validate().unwrap();
    // PRNG_RULE.md test vectors 1 and 2 (seed 0), as f32 bits.
    let bits = |k: &str| -> Vec<u32> {
        sd.f32(k).unwrap()[..4]
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    assert_eq!(
        bits("basemodel.net.patch_embed.projection.weight"),
        [0x3c33e580, 0x3e3bd2b8, 0x3d7fe948, 0xbe3c2282]
    );
    assert_eq!(
        bits("neck.decoder.decoder_layers.0.slf_attn.in_proj_weight"),
        [0xbdc83549, 0x3d7295e6, 0x3d9ee7e1, 0xbdaf40ea]
    );
    // Explicit entries are the file's, untouched.
    let file = StateDict::load(&small).unwrap();
    assert_eq!(file.len(), 295);
    for (k, t) in file.iter() {
        assert_eq!(sd.get(k), Some(t), "{k}");
    }
    assert_eq!(sd.get("head.si_fc").unwrap().shape, Vec::<usize>::new());
    // Derived buffers.
    let ctr = f32s(&sd, "head.fm_ctr");
    assert_eq!(&ctr[2 * (3 * 19 + 5)..2 * (3 * 19 + 5) + 2], &[80.0, 48.0]);
    let rpi = sd
        .get("basemodel.net.stages.2.blocks.4.attn.w_msa.relative_position_index")
        .unwrap()
        .as_i64()
        .unwrap();
    // i = (1, 2), j = (3, 0): (1 - 3 + 6) * 13 + (2 - 0 + 6) = 60.
    assert_eq!(rpi[9 * 49 + 21], 60);
    assert_eq!(
        sd.get("head.conv_branch.3.bn2.num_batches_tracked"),
        Some(&HostTensor::i64(&[], vec![0]))
    );
}

#[test]
fn golden_state_dict_rejects_a_wrong_file() {
    let e = err_text(weights::golden_state_dict(
        &fixture("mixed_dtypes.safetensors"),
        0,
    ));
    assert!(e.contains("not the golden small-parameter file"), "{e}");
    assert!(e.contains("mixed_dtypes.safetensors"), "{e}");
}

// --- torch zip reader --------------------------------------------------------------------------

#[test]
fn torch_zip_layouts_and_dtypes() {
    let sd = StateDict::from_torch_zip_bytes(&fixture_bytes("bare_v2.pt")).unwrap();
    let keys: Vec<&str> = sd.keys().collect();
    assert_eq!(
        keys,
        [
            "a.weight",
            "a.weight_t",
            "b.slice",
            "c.idx",
            "d.scalar",
            "e.half",
            "f.bf16",
            "g.double",
            "h.int32",
            "p.param",
            "x.expand",
            "z.empty"
        ]
    );
    let a = [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75];
    assert_eq!(
        sd.get("a.weight"),
        Some(&HostTensor::f32(&[2, 3], a.to_vec()))
    );
    // Transposed view of the same storage: element (i, j) = a[j * 3 + i].
    assert_eq!(
        sd.get("a.weight_t"),
        Some(&HostTensor::f32(
            &[3, 2],
            vec![-0.5, 0.25, -0.25, 0.5, 0.0, 0.75]
        ))
    );
    // Storage i * 1.5, offset 1, stride [4, 1]: elements 1, 2, 5, 6.
    assert_eq!(
        sd.get("b.slice"),
        Some(&HostTensor::f32(&[2, 2], vec![1.5, 3.0, 7.5, 9.0]))
    );
    assert_eq!(
        sd.get("c.idx"),
        Some(&HostTensor::i64(&[3], vec![-1, 0, 1 << 40]))
    );
    assert_eq!(sd.get("d.scalar"), Some(&HostTensor::f32(&[], vec![10.5])));
    assert_eq!(f32s(&sd, "e.half"), [1.0, -2.0, 0.5, 65504.0]);
    assert_eq!(f32s(&sd, "f.bf16"), [1.5, -3.0]);
    assert_eq!(f32s(&sd, "g.double"), [0.1f64 as f32, 1e-3f64 as f32]);
    assert_eq!(sd.get("h.int32"), Some(&HostTensor::i64(&[2], vec![7, -9])));
    assert_eq!(
        sd.get("p.param"),
        Some(&HostTensor::f32(&[2], vec![3.0, 4.0]))
    );
    assert_eq!(
        sd.get("x.expand"),
        Some(&HostTensor::f32(
            &[2, 3],
            vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
        ))
    );
    assert_eq!(sd.get("z.empty"), Some(&HostTensor::f32(&[0, 3], vec![])));
}

#[test]
fn torch_zip_protocol4_and_dataparallel_prefix() {
    let (sd, info) = StateDict::load_with_info(fixture("dataparallel_p4.pt")).unwrap();
    assert!(info.stripped_module_prefix);
    assert_eq!(info.format, "torch zip");
    assert_eq!(
        sd.keys().collect::<Vec<_>>(),
        ["conv.weight", "conv.bias", "bn.num_batches_tracked"]
    );
    assert_eq!(
        sd.get("conv.weight"),
        Some(&HostTensor::f32(&[2, 2, 1, 1], vec![0.5, -1.0, 2.0, 4.0]))
    );
    assert_eq!(
        sd.get("bn.num_batches_tracked"),
        Some(&HostTensor::i64(&[], vec![12]))
    );
}

#[test]
fn torch_checkpoint_with_optimizer_state() {
    let (sd, info) = StateDict::load_with_info(fixture("ckpt_epoch19.pkl")).unwrap();
    assert_eq!(sd.keys().collect::<Vec<_>>(), ["fc.weight", "fc.bias"]);
    assert_eq!(
        sd.get("fc.weight"),
        Some(&HostTensor::f32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]))
    );
    assert_eq!(f32s(&sd, "fc.bias"), [-0.5, 0.5]);
    assert_eq!(info.epoch, Some(19));
    assert_eq!(info.other_keys, ["'epoch'", "'optimizer_state_dict'"]);
    let raw = pickle::read_torch_zip_bytes(&fixture_bytes("ckpt_epoch19.pkl")).unwrap();
    assert!(raw.nested);
}

#[test]
fn malicious_pickles_are_refused() {
    let marker = Path::new("/tmp/sparsett_pwned");
    let _ = std::fs::remove_file(marker);
    let e = err_text(StateDict::load(fixture("malicious_system.pkl")));
    assert!(e.contains("os.system"), "{e}");
    assert!(e.contains("malicious_system.pkl"), "{e}");
    let e = err_text(StateDict::from_torch_zip_bytes(&fixture_bytes(
        "malicious_eval.pkl",
    )));
    assert!(e.contains("builtins.eval"), "{e}");
    assert!(!marker.exists());
}

#[test]
fn foreign_files_are_refused() {
    let e = err_text(StateDict::load(fixture("not_torch.zip")));
    assert!(e.contains("data.pkl"), "{e}");
    let e = err_text(StateDict::load(fixture("make_fixtures.py")));
    assert!(
        e.contains("neither a safetensors file nor a torch.save"),
        "{e}"
    );
    let e = err_text(StateDict::load(fixture("does_not_exist.pkl")));
    assert!(e.contains("does_not_exist.pkl"), "{e}");
    // A legacy (pre-zip) torch file starts with a pickle protocol byte.
    let p = scratch("legacy.pt");
    std::fs::write(&p, b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    let e = err_text(StateDict::load(&p));
    std::fs::remove_file(&p).unwrap();
    assert!(e.contains("legacy"), "{e}");
}

// --- safetensors -------------------------------------------------------------------------------

#[test]
fn safetensors_dtypes_are_widened() {
    let (sd, info) = StateDict::load_with_info(fixture("mixed_dtypes.safetensors")).unwrap();
    assert_eq!(info.format, "safetensors");
    assert!(info.stripped_module_prefix);
    assert_eq!(f32s(&sd, "h"), [1.0, -0.5]);
    assert_eq!(f32s(&sd, "b"), [2.0, -0.25]);
    assert_eq!(
        sd.get("d"),
        Some(&HostTensor::f32(&[1, 2], vec![0.1f64 as f32, 3.0]))
    );
    assert_eq!(sd.get("i"), Some(&HostTensor::i64(&[3], vec![1, -2, 3])));
    assert_eq!(sd.get("f"), Some(&HostTensor::f32(&[], vec![1.25])));
    let mut conv: Vec<(&str, &str)> = info
        .converted
        .iter()
        .map(|(k, d)| (k.as_str(), *d))
        .collect();
    conv.sort();
    assert_eq!(
        conv,
        [
            ("b", "bfloat16"),
            ("d", "float64"),
            ("h", "float16"),
            ("i", "int32")
        ]
    );
}

#[test]
fn safetensors_round_trip() {
    let mut sd = StateDict::new();
    sd.insert(
        "w",
        HostTensor::f32(&[2, 3], vec![1.0, -2.0, 3.5, 0.0, -0.0, 1e-30]),
    );
    sd.insert("n", HostTensor::i64(&[], vec![-7]));
    sd.insert("e", HostTensor::f32(&[0], vec![]));
    let p = scratch("round_trip.safetensors");
    sd.save_safetensors(&p).unwrap();
    let back = StateDict::load(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    let mut a: Vec<_> = sd.iter().collect();
    let mut b: Vec<_> = back.iter().collect();
    a.sort_by_key(|x| x.0);
    b.sort_by_key(|x| x.0);
    assert_eq!(a, b);
    // -0.0 keeps its sign bit.
    assert_eq!(back.f32("w").unwrap()[4].to_bits(), (-0.0f32).to_bits());
}

// --- validation --------------------------------------------------------------------------------

#[test]
fn full_checkpoint_validates_and_converts() {
    let sd = stride0();
    assert_eq!(sd.len(), keys::NUM_ENTRIES);
    sd.validate().unwrap();
    // Zero-stride views expand to full tensors.
    let w = f32s(sd, "head.conv_branch.0.conv1.conv.weight");
    assert_eq!(w.len(), 512 * 512 * 9);
    assert!(w.iter().all(|&x| x == w[0]));

    let out = scratch("converted.safetensors");
    let report = weights::convert(&fixture("schema_stride0.pkl"), &out, None).unwrap();
    assert_eq!(report.entries, keys::NUM_ENTRIES);
    assert_eq!(report.unused_entries, 61);
    assert_eq!(report.filled_derived, 0);
    assert_eq!(report.epoch, Some(19));
    assert_eq!(
        report.ignored_top_level,
        ["'epoch'", "'optimizer_state_dict'"]
    );
    assert!(report.to_string().contains("438 entries"), "{report}");
    let back = StateDict::load_checked(&out).unwrap();
    // Saved files come back in schema order whatever order the checkpoint had.
    let schema_order: Vec<String> = keys::official_schema().into_iter().map(|s| s.key).collect();
    assert!(back.keys().eq(schema_order.iter().map(String::as_str)));
    for (k, t) in sd.iter() {
        assert_eq!(back.get(k), Some(t), "{k}");
    }
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut sd = stride0().clone();
    sd.remove("neck.decoder.decoder_layers.1.enc_attn.in_proj_weight");
    sd.remove("head.si_conv");
    sd.insert("head.centerness.weight", HostTensor::f32(&[1], vec![0.0]));
    sd.insert("transformer.extra", HostTensor::f32(&[2], vec![0.0; 2]));
    sd.insert(
        "feat_adjuster_z.conv.bias",
        HostTensor::f32(&[255], vec![0.0; 255]),
    );
    sd.insert("head.bi_fc", HostTensor::i64(&[], vec![1]));
    let mut w = f32s(&sd, "neck.encoder.encoder_layers.0.norm.weight");
    w[17] = f32::NAN;
    w[20] = f32::INFINITY;
    sd.insert(
        "neck.encoder.encoder_layers.0.norm.weight",
        HostTensor::f32(&[256], w),
    );
    let mut ctr = f32s(&sd, "head.fm_ctr");
    ctr[3] += 8.0;
    sd.insert("head.fm_ctr", HostTensor::f32(&[1, 361, 2], ctr));
    let e = err_text(sd.validate());
    for want in [
        "2 missing",
        "2 unexpected",
        "1 with a wrong shape",
        "1 with a wrong dtype",
        "1 with NaN/inf",
        "1 with wrong derived values",
        "neck.decoder.decoder_layers.1.enc_attn.in_proj_weight [768, 256]",
        "head.si_conv []",
        "head.centerness.weight",
        "transformer.extra",
        "feat_adjuster_z.conv.bias (expected [256], found [255])",
        "head.bi_fc (expected f32, found i64)",
        "neck.encoder.encoder_layers.0.norm.weight (2 of 256 values, first at flat index 17",
        "head.fm_ctr (differs",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    // One line per kind of problem after the summary.
    assert_eq!(e.lines().count(), 7, "{e}");
}

#[test]
fn another_models_checkpoint_is_named_as_such() {
    let mut sd = StateDict::new();
    for i in 0..40 {
        sd.insert(
            format!("resnet.layer{i}.weight"),
            HostTensor::f32(&[1], vec![0.0]),
        );
    }
    let e = err_text(sd.validate());
    assert!(e.contains("another model"), "{e}");
    assert!(e.contains("40 unexpected"), "{e}");
    assert!(e.contains("... and 28 more"), "{e}");
    // Lists of hundreds are cut: the message stays readable.
    assert!(e.len() < 4000, "{} bytes", e.len());
    let e = err_text(StateDict::new().validate());
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn unused_and_derived_entries_may_be_absent() {
    let mut sd = stride0().clone();
    let schema = keys::official_schema();
    for s in &schema {
        if !s.used || s.derived {
            sd.remove(&s.key);
        }
    }
    assert!(sd.len() < keys::NUM_ENTRIES - 60);
    sd.validate().unwrap();
    let added = sd.fill_derived();
    assert_eq!(added, 43);
    sd.validate().unwrap();
    assert_eq!(
        sd.get("head.fm_ctr"),
        stride0().get("head.fm_ctr"),
        "filled fm_ctr equals the checkpoint's"
    );
}

#[test]
fn nan_in_a_weight_is_rejected_with_its_key() {
    let mut sd = stride0().clone();
    let key = "basemodel.net.stages.1.blocks.0.attn.w_msa.qkv.bias";
    let mut v = f32s(&sd, key);
    v[5] = f32::NAN;
    sd.insert(key, HostTensor::f32(&[576], v));
    let e = err_text(sd.validate());
    assert!(e.contains(key) && e.contains("NaN"), "{e}");
    // And through a file (only the bad entry: the others would just add "missing" lines).
    let mut small = StateDict::new();
    small.insert(key, sd.get(key).unwrap().clone());
    let p = scratch("nan.safetensors");
    small.save_safetensors(&p).unwrap();
    let e = err_text(StateDict::load_checked(&p));
    assert!(e.contains(key) && e.contains("nan.safetensors"), "{e}");
    std::fs::remove_file(&p).unwrap();
}

// --- corrupt files -----------------------------------------------------------------------------

/// Every prefix is an error; flipped bytes give an error or a dict, never a panic.
fn shake(bytes: &[u8], parse: impl Fn(&[u8]) -> sparsett::Result<StateDict>, what: &str) {
    assert!(parse(bytes).is_ok(), "{what} itself must parse");
    for n in 0..bytes.len() {
        assert!(
            parse(&bytes[..n]).is_err(),
            "{what} truncated to {n} bytes parsed"
        );
    }
    let mut b = bytes.to_vec();
    for i in 0..b.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            b[i] ^= flip;
            let _ = parse(&b);
            b[i] ^= flip;
        }
    }
}

#[test]
fn truncated_or_corrupt_torch_zip() {
    shake(
        &fixture_bytes("bare_v2.pt"),
        StateDict::from_torch_zip_bytes,
        "bare_v2.pt",
    );
    shake(
        &fixture_bytes("ckpt_epoch19.pkl"),
        StateDict::from_torch_zip_bytes,
        "ckpt_epoch19.pkl",
    );
}

#[test]
fn truncated_or_corrupt_safetensors() {
    shake(
        &fixture_bytes("mixed_dtypes.safetensors"),
        StateDict::from_safetensors_bytes,
        "mixed_dtypes.safetensors",
    );
}

/// Corrupts the pickle itself (re-zipped with a valid CRC, so the pickle machine and the tensor
/// gather see the damage rather than the zip checksum).
#[test]
fn corrupt_pickle_inside_a_valid_zip() {
    use std::io::{Cursor, Read, Write};
    let src = fixture_bytes("bare_v2.pt");
    let mut zin = zip::ZipArchive::new(Cursor::new(&src[..])).unwrap();
    let mut files = Vec::new();
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        files.push((f.name().to_string(), data));
    }
    let rezip = |pkl: &[u8]| -> Vec<u8> {
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in &files {
            out.start_file(name.as_str(), opts).unwrap();
            out.write_all(if name.ends_with("data.pkl") {
                pkl
            } else {
                data
            })
            .unwrap();
        }
        out.finish().unwrap().into_inner()
    };
    let pkl = files
        .iter()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .unwrap()
        .1
        .clone();
    assert!(StateDict::from_torch_zip_bytes(&rezip(&pkl)).is_ok());
    let mut errors = 0;
    let mut p = pkl.clone();
    for i in 0..p.len() {
        for v in [0x00u8, 0x7f, 0xff, p[i].wrapping_add(1)] {
            let old = p[i];
            p[i] = v;
            errors += StateDict::from_torch_zip_bytes(&rezip(&p)).is_err() as usize;
            p[i] = old;
        }
    }
    assert!(
        errors > pkl.len(),
        "most corruptions must be caught, {errors} were"
    );
    for n in 0..pkl.len() {
        assert!(StateDict::from_torch_zip_bytes(&rezip(&pkl[..n])).is_err());
    }
}

#[test]
fn compressed_zip_entries_get_a_clear_error() {
    use std::io::{Cursor, Write};
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    // Deflate is not compiled in; an unknown method number stands for any compression.
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    out.start_file("archive/data.pkl", opts).unwrap();
    out.write_all(b"\x80\x02}.").unwrap();
    let mut bytes = out.finish().unwrap().into_inner();
    // Patch the method field (offset 8 of the local header, 10 of the central one) to 8 = deflate.
    bytes[8] = 8;
    let cd = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[cd + 10] = 8;
    let e = err_text(StateDict::from_torch_zip_bytes(&bytes));
    assert!(e.contains("data.pkl"), "{e}");
}

#[test]
fn host_tensor_accessors() {
    let t = HostTensor::f32(&[2], vec![1.0, 2.0]);
    assert_eq!(t.numel(), 2);
    assert_eq!(t.dtype(), KeyDType::F32);
    assert!(t.as_i64().is_none());
    assert!(matches!(t.data, HostData::F32(_)));
}
