//! The golden reference folder shared by the parity and tracker tests: `SPARSETT_GOLDEN_DIR` when
//! set (same layout as `../shared/golden/seed0`, seed read from its `meta.json`), else the copy in
//! `tests/data/golden/seed0`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

pub fn golden_dir() -> PathBuf {
    std::env::var_os("SPARSETT_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/seed0")
        })
}

pub fn seed(dir: &std::path::Path) -> u64 {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json")).unwrap();
    meta["seed"].as_u64().expect("meta.json has a seed")
}

/// A golden tensor converted to f64 (float, int16 and int64 entries alike).
pub struct Gold {
    pub shape: Vec<usize>,
    pub v: Vec<f64>,
}

/// Reads `forward.safetensors` and any `forward.*.safetensors` beside it: the project's copy is
/// split into parts under 5 MB, the shared golden folders keep one file.
pub fn load_golden(dir: &std::path::Path) -> BTreeMap<String, Gold> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("golden folder")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("forward") && n.ends_with(".safetensors")
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{}: no forward*.safetensors",
        dir.display()
    );
    let mut out = BTreeMap::new();
    for file in files {
        let bytes = std::fs::read(&file).expect("readable golden file");
        let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
        for (name, view) in st.tensors() {
            out.insert(name.to_string(), gold_of(&name, &view));
        }
    }
    out
}

pub fn gold_of(name: &str, view: &safetensors::tensor::TensorView) -> Gold {
    let d = view.data();
    let v: Vec<f64> = match view.dtype() {
        Dtype::F32 => d
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => d
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::I16 => d
            .chunks(2)
            .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I64 => d
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::U8 => d.iter().map(|&b| b as f64).collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    Gold {
        shape: view.shape().to_vec(),
        v,
    }
}

/// The folder's `meta.json`.
pub fn meta(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json"))
        .expect("meta.json is JSON")
}

impl Gold {
    pub fn f32(&self) -> Vec<f32> {
        self.v.iter().map(|&x| x as f32).collect()
    }

    /// A uint8 HWC image (the golden frames and crops).
    pub fn u8(&self) -> Vec<u8> {
        self.v.iter().map(|&x| x as u8).collect()
    }
}
