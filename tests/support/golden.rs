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

/// BGR u8 pixels (as the golden file stores frames) as an RGB image.
pub fn bgr_to_rgb(bgr: &[u8], w: u32, h: u32) -> image::RgbImage {
    let rgb: Vec<u8> = bgr
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    image::RgbImage::from_raw(w, h, rgb).unwrap()
}

/// Background: the golden frame 1 (400×320); object: the centre of the negative pair's search
/// crop (a cat).
pub fn photos() -> (image::RgbImage, image::RgbImage) {
    let dir = golden_dir();
    let g = load_golden(&dir);
    let f = &g["frame1_bgr_u8"];
    let bg = bgr_to_rgb(&f.u8(), f.shape[1] as u32, f.shape[0] as u32);
    let bytes = std::fs::read(dir.join("train.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let x = st.tensor("x_crop_bgr_u8").unwrap();
    let one = 289 * 289 * 3;
    let cat = bgr_to_rgb(&x.data()[one..2 * one], 289, 289);
    let obj = image::imageops::crop_imm(&cat, 84, 84, 120, 120).to_image();
    (bg, obj)
}
