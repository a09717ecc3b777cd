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
use std::sync::OnceLock;

use sparsett::model::golden::{forward_all, Named};
use sparsett::model::weights::golden_state_dict;
use sparsett::model::SparseTT;
use sparsett::Gpu;

#[path = "support/golden.rs"]
mod golden;
use golden::{golden_dir, load_golden, seed, Gold};

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().expect("a GPU adapter (lavapipe: WGPU_BACKEND=vulkan)"))
}

fn golden() -> &'static BTreeMap<String, Gold> {
    static G: OnceLock<BTreeMap<String, Gold>> = OnceLock::new();
    G.get_or_init(|| load_golden(&golden_dir()))
}

struct Run {
    golden: &'static BTreeMap<String, Gold>,
    ours: BTreeMap<String, Named>,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = golden_dir();
        let gpu = gpu();
        let sd = golden_state_dict(&dir.join("small_params.safetensors"), seed(&dir))
            .expect("golden weights");
        let model = SparseTT::load(gpu, &sd).expect("model loads");
        let golden = golden();
        let f = |k: &str| golden[k].v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let ours = forward_all(gpu, &model, &f("input.z"), &f("input.x")).expect("forward");
        Run { golden, ours }
    })
}

/// max |ours − golden| / max |golden|.
fn rel_to_max(name: &str, r: &Run) -> f64 {
    let g = &r.golden[name];
    let o = r
        .ours
        .get(name)
        .unwrap_or_else(|| panic!("{name} was not captured"));
    assert_eq!(o.shape, g.shape, "{name}: shape");
    let o = o.f32().unwrap();
    let maxg = g.v.iter().fold(0f64, |m, &x| m.max(x.abs()));
    let maxd = o
        .iter()
        .zip(&g.v)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
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
        eprintln!(
            "note: layer {layer} head {h} row {i} keeps another top-K set (golden margin {m:.2e})"
        );
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
        assert!(
            e <= 1e-4,
            "{name}: max error {e:.3e} of max magnitude > 1e-4\n{}",
            report.join("\n")
        );
    }
    let strict = flips.is_empty();
    for name in ["neck.decoder.layer0", "neck.output"] {
        let e = rel_to_max(name, r);
        report.push(format!("{name}: {e:.2e}"));
        let tol = if strict { 1e-4 } else { 2e-2 };
        assert!(
            e <= tol,
            "{name}: max error {e:.3e} of max magnitude > {tol}\n{}",
            report.join("\n")
        );
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
        let d = o
            .iter()
            .zip(g)
            .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
        let tol = if strict {
            2e-4
        } else {
            2e-2 * g.iter().fold(0f64, |m, x| m.max(x.abs()))
        };
        assert!(d <= tol, "{name}: max |diff| {d:.3e} > {tol:.1e}");
    }
    for name in ["head.bbox_conv", "head.bbox_fc"] {
        let g = &r.golden[name].v;
        let o = r.ours[name].f32().unwrap();
        let d = o
            .iter()
            .zip(g)
            .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
        let tol = if strict { 0.05 } else { 0.5 };
        assert!(d <= tol, "{name}: max |diff| {d:.4} px > {tol} px");
    }
    let g = &r.golden["head.final_score"].v;
    let o = r.ours["head.final_score"].f32().unwrap();
    let argmax = |v: &mut dyn Iterator<Item = f64>| {
        v.enumerate()
            .fold((0, f64::MIN), |b, (i, x)| if x > b.1 { (i, x) } else { b })
            .0
    };
    assert_eq!(
        argmax(&mut o.iter().map(|&x| x as f64)),
        argmax(&mut g.iter().copied()),
        "the best-scoring cell differs"
    );
}

/// The top-K kernel fed the decoder's layer-0 self-attention logits, rebuilt in f64 from the
/// golden inputs (adjusted search features, positional encoding, packed projection), keeps exactly
/// the golden key set in every row whose 32nd/33rd golden margin exceeds 1e-4.
#[test]
fn topk_selection_on_golden_logits() {
    let gold = golden();
    let dir = golden_dir();
    let sd = golden_state_dict(&dir.join("small_params.safetensors"), seed(&dir)).unwrap();
    let p = "neck.decoder";
    let w = sd
        .f32(&format!("{p}.decoder_layers.0.slf_attn.in_proj_weight"))
        .unwrap();
    let b = sd
        .f32(&format!("{p}.decoder_layers.0.slf_attn.in_proj_bias"))
        .unwrap();
    let row = sd
        .f32(&format!("{p}.spatial_position_encoding.row_embed.weight"))
        .unwrap();
    let col = sd
        .f32(&format!("{p}.spatial_position_encoding.col_embed.weight"))
        .unwrap();
    let feat = &gold["feat_adjuster.x"].v; // (1, 256, 19, 19)
    let (d, l, heads, hd) = (256usize, 361usize, 8usize, 32usize);
    // Decoder input tokens: features + learned 2-D position (col for c < 128, row for c ≥ 128).
    let x: Vec<f64> = (0..l * d)
        .map(|t| {
            let (tok, c) = (t / d, t % d);
            let (i, j) = (tok / 19, tok % 19);
            let pos = if c < 128 {
                col[j * 128 + c]
            } else {
                row[i * 128 + c - 128]
            };
            feat[c * l + tok] + pos as f64
        })
        .collect();
    let proj = |o: usize| -> Vec<f64> {
        (0..l)
            .flat_map(|t| {
                let x = &x;
                (0..d).map(move |c| {
                    let wr = &w[(o + c) * d..(o + c + 1) * d];
                    b[o + c] as f64 + (0..d).map(|k| x[t * d + k] * wr[k] as f64).sum::<f64>()
                })
            })
            .collect()
    };
    let (q, k) = (proj(0), proj(d));
    let scale = 1.0 / (hd as f64).sqrt();
    let mut logits = vec![0f32; heads * l * l];
    for h in 0..heads {
        for i in 0..l {
            for j in 0..l {
                let s: f64 = (0..hd)
                    .map(|e| q[i * d + h * hd + e] * k[j * d + h * hd + e])
                    .sum();
                logits[(h * l + i) * l + j] = (s * scale) as f32;
            }
        }
    }
    // The rebuilt logits agree with the golden top-33 values (a check of the rebuild itself).
    let gl = &gold["neck.decoder.layer0.topk_logits"].v;
    let gi = &gold["neck.decoder.layer0.topk_index"].v;
    for h in 0..heads {
        for i in 0..l {
            let j = gi[(h * l + i) * 32] as usize;
            let ours = logits[(h * l + i) * l + j] as f64;
            assert!(
                (ours - gl[(h * l + i) * 33]).abs() < 1e-4,
                "rebuilt logit head {h} row {i}"
            );
        }
    }
    let gpu = gpu();
    let t = gpu.upload(&[heads * l, l], &logits).unwrap();
    for variant in sparsett::Variant::ALL {
        let mut enc = gpu.encoder();
        let (vals, idx) = sparsett::ops::topk::topk_select_with(&mut enc, &t, 32, variant).unwrap();
        let out = pollster::block_on(enc.submit_read_raw_async(&[&vals, &idx])).unwrap();
        let idx: Vec<u32> = bytemuck::pod_collect_to_vec(&out[1]);
        let (mut close, mut differ) = (0, 0);
        for row_i in 0..heads * l {
            let margin = gl[row_i * 33 + 31] - gl[row_i * 33 + 32];
            let mut a = idx[row_i * 32..(row_i + 1) * 32].to_vec();
            let mut g: Vec<u32> = gi[row_i * 32..(row_i + 1) * 32]
                .iter()
                .map(|&v| v as u32)
                .collect();
            a.sort_unstable();
            g.sort_unstable();
            if margin < 1e-4 {
                close += 1;
                differ += usize::from(a != g);
                continue;
            }
            assert_eq!(
                a, g,
                "{variant:?}: row {row_i} keeps another set (golden margin {margin:.2e})"
            );
        }
        eprintln!(
            "{variant:?}: every row with a margin ≥ 1e-4 keeps the golden set; {differ} of the {close} \
             rows within 1e-4 keep another"
        );
    }
}

/// The dispatch budget of a frame: the track step records at most 120 dispatches and reads back
/// with one submit (counted on the real model, not timed; `sparsett bench track` times it).
#[test]
fn track_step_fits_the_dispatch_budget() {
    use sparsett::model::{Taps, X_SIZE, Z_SIZE};
    let gpu = gpu();
    let dir = golden_dir();
    let sd = golden_state_dict(&dir.join("small_params.safetensors"), seed(&dir)).unwrap();
    let model = SparseTT::load(gpu, &sd).unwrap();
    let z = gpu.zeros(&[1, 3, Z_SIZE, Z_SIZE]).unwrap();
    let x = gpu.zeros(&[1, 3, X_SIZE, X_SIZE]).unwrap();
    let mut enc = gpu.encoder();
    let tf = model.template(&mut enc, &z, &mut Taps::off()).unwrap();
    enc.submit().unwrap();
    let mut enc = gpu.encoder();
    let out = model.track(&mut enc, &tf, &x, &mut Taps::off()).unwrap();
    let n = enc.dispatch_count();
    assert!(
        n <= 120,
        "the track step records {n} dispatches (budget 120)"
    );
    let v = enc.submit_read(&[&out.score, &out.boxes]).unwrap();
    assert_eq!((v[0].len(), v[1].len()), (361, 361 * 4));
}
