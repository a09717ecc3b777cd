//! Numerical parity with the official PyTorch SparseTT (full size; the few heavy tests of the suite).
//!
//! Weights come from the golden PRNG rule + `small_params.safetensors`; inputs and expected
//! intermediates from `forward.safetensors`. The golden folder is `SPARSETT_GOLDEN_DIR` when set
//! (same layout, seed read from its `meta.json`), else the copy in `tests/data/golden/seed0`.
//!
//! Tolerances (from the official model's own float32-vs-float64 spread, `meta.json`): every
//! intermediate through the neck within 1e-4 of the tensor's max magnitude; cls logits within 2e-4;
//! boxes within 0.05 px. Exception: a decoder row whose 32nd and 33rd logits are closer than 1e-4
//! in the golden data may keep a different top-K set; then downstream tensors are checked within
//! 2e-2 relative and 0.5 px, and the test says so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use safetensors::{Dtype, SafeTensors};
use sparsett::model::golden::{forward_all, Named};
use sparsett::model::weights::golden_state_dict;
use sparsett::model::SparseTT;
use sparsett::Gpu;

fn golden_dir() -> PathBuf {
    std::env::var_os("SPARSETT_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/seed0"))
}

fn seed(dir: &std::path::Path) -> u64 {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json")).unwrap();
    meta["seed"].as_u64().expect("meta.json has a seed")
}

/// A golden tensor converted to f64 (float, int16 and int64 entries alike).
struct Gold {
    shape: Vec<usize>,
    v: Vec<f64>,
}

fn load_golden(dir: &std::path::Path) -> BTreeMap<String, Gold> {
    let bytes = std::fs::read(dir.join("forward.safetensors")).expect("forward.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let v: Vec<f64> = match view.dtype() {
            Dtype::F32 => d.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            Dtype::F64 => d.chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::I16 => d.chunks(2).map(|c| i16::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            Dtype::I64 => d.chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            Dtype::U8 => d.iter().map(|&b| b as f64).collect(),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        out.insert(name.to_string(), Gold { shape: view.shape().to_vec(), v });
    }
    out
}

struct Run {
    golden: BTreeMap<String, Gold>,
    ours: BTreeMap<String, Named>,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = golden_dir();
        let gpu = Gpu::new().expect("a GPU adapter (lavapipe: WGPU_BACKEND=vulkan)");
        let sd = golden_state_dict(&dir.join("small_params.safetensors"), seed(&dir))
            .expect("golden weights");
        let model = SparseTT::load(&gpu, &sd).expect("model loads");
        let golden = load_golden(&dir);
        let f = |k: &str| golden[k].v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let ours = forward_all(&gpu, &model, &f("input.z"), &f("input.x")).expect("forward");
        Run { golden, ours }
    })
}

/// max |ours − golden| / max |golden|.
fn rel_to_max(name: &str, r: &Run) -> f64 {
    let g = &r.golden[name];
    let o = r.ours.get(name).unwrap_or_else(|| panic!("{name} was not captured"));
    assert_eq!(o.shape, g.shape, "{name}: shape");
    let o = o.f32().unwrap();
    let maxg = g.v.iter().fold(0f64, |m, &x| m.max(x.abs()));
    let maxd = o.iter().zip(&g.v).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
    maxd / maxg.max(1e-30)
}

/// Decoder rows whose kept top-K set differs from the golden one: (layer, head, row).
fn topk_flips(r: &Run) -> Vec<(usize, usize, usize, f64)> {
    let mut flips = Vec::new();
    for layer in 0..2 {
        let name = format!("neck.decoder.layer{layer}.topk_index");
        let g = &r.golden[&name];
        let ours = match &r.ours[&name].data {
            sparsett::model::golden::NamedData::U32(v) => v.clone(),
            _ => panic!("{name} should be u32"),
        };
        let margin = |h: usize, i: usize| -> f64 {
            if layer == 0 {
                let l = &r.golden["neck.decoder.layer0.topk_logits"].v;
                let base = (h * 361 + i) * 33;
                l[base + 31] - l[base + 32]
            } else {
                let l = &r.golden["neck.decoder.layer1.topk_boundary_logits"].v;
                let base = (h * 361 + i) * 2;
                l[base] - l[base + 1]
            }
        };
        let (heads, rows, k) = (g.shape[0], g.shape[1], g.shape[2]);
        for h in 0..heads {
            for i in 0..rows {
                let base = (h * rows + i) * k;
                let mut a: Vec<u32> = ours[base..base + k].to_vec();
                let mut b: Vec<u32> = g.v[base..base + k].iter().map(|&x| x as u32).collect();
                a.sort_unstable();
                b.sort_unstable();
                if a != b {
                    flips.push((layer, h, i, margin(h, i)));
                }
            }
        }
    }
    flips
}

#[test]
fn full_model_matches_official_intermediates() {
    let r = run();
    let flips = topk_flips(r);
    for &(layer, h, i, m) in &flips {
        assert!(
            m < 1e-4,
            "decoder layer {layer} head {h} row {i}: top-K set differs although the golden margin \
             between the 32nd and 33rd logits is {m:.3e} (≥ 1e-4)"
        );
        eprintln!("note: layer {layer} head {h} row {i} keeps another top-K set (golden margin {m:.2e})");
    }
    let before_neck = [
        "z.backbone.patch_embed",
        "z.backbone.stage0.out",
        "z.backbone.stage0.down",
        "z.backbone.stage1.out",
        "z.backbone.stage1.down",
        "z.backbone.stage2.out",
        "x.backbone.stage0.down",
        "x.backbone.stage1.down",
        "backbone.z",
        "backbone.x",
        "feat_adjuster.z",
        "feat_adjuster.x",
        "neck.encoder.layer0",
        "neck.encoder.layer1",
    ];
    let mut report = Vec::new();
    for name in before_neck {
        let e = rel_to_max(name, r);
        report.push(format!("{name}: {e:.2e}"));
        assert!(e <= 1e-4, "{name}: max error {e:.3e} of max magnitude > 1e-4\n{}", report.join("\n"));
    }
    let strict = flips.is_empty();
    for name in ["neck.decoder.layer0", "neck.output"] {
        let e = rel_to_max(name, r);
        report.push(format!("{name}: {e:.2e}"));
        let tol = if strict { 1e-4 } else { 2e-2 };
        assert!(e <= tol, "{name}: max error {e:.3e} of max magnitude > {tol}\n{}", report.join("\n"));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn head_logits_and_boxes_match() {
    let r = run();
    let strict = topk_flips(r).is_empty();
    for name in ["head.cls_fc_logits", "head.cls_conv_logits"] {
        let g = &r.golden[name].v;
        let o = r.ours[name].f32().unwrap();
        let d = o.iter().zip(g).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
        let tol = if strict { 2e-4 } else { 2e-2 * g.iter().fold(0f64, |m, x| m.max(x.abs())) };
        assert!(d <= tol, "{name}: max |diff| {d:.3e} > {tol:.1e}");
    }
    for name in ["head.bbox_conv", "head.bbox_fc"] {
        let g = &r.golden[name].v;
        let o = r.ours[name].f32().unwrap();
        let d = o.iter().zip(g).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
        let tol = if strict { 0.05 } else { 0.5 };
        assert!(d <= tol, "{name}: max |diff| {d:.4} px > {tol} px");
    }
    let g = &r.golden["head.final_score"].v;
    let o = r.ours["head.final_score"].f32().unwrap();
    let argmax = |v: &mut dyn Iterator<Item = f64>| {
        v.enumerate().fold((0, f64::MIN), |b, (i, x)| if x > b.1 { (i, x) } else { b }).0
    };
    assert_eq!(
        argmax(&mut o.iter().map(|&x| x as f64)),
        argmax(&mut g.iter().copied()),
        "the best-scoring cell differs"
    );
}
