//! The tracker: the official post-processing on the golden score and box maps, the whole tracker
//! (crop → model → post-processing) on the golden frames, and its input checks.
//!
//! Tolerances. The post-processing mirrors NumPy's float32 arithmetic operation by operation, so
//! window, crop geometry and candidate boxes must be equal (sums and divisions of exactly
//! representable values); `exp` may differ by an ulp between libm and NumPy's SIMD exp, so penalty
//! is checked within 4 ulp (5e-7 relative) and everything after it within 1e-6 relative in f32
//! terms (a few ulp carried through two multiplications and an add).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use sparsett::model::weights::golden_state_dict;
use sparsett::model::SparseTT;
use sparsett::tracker::post::{first_argmax, hann_window, postprocess, TargetState};
use sparsett::tracker::{Preset, Tracker};
use sparsett::Gpu;

#[path = "support/golden.rs"]
mod golden;
use golden::{golden_dir, load_golden, meta, seed, Gold};

fn golden() -> &'static BTreeMap<String, Gold> {
    static G: OnceLock<BTreeMap<String, Gold>> = OnceLock::new();
    G.get_or_init(|| load_golden(&golden_dir()))
}

fn g(name: &str) -> &'static Gold {
    golden()
        .get(name)
        .unwrap_or_else(|| panic!("golden file lacks {name}"))
}

fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Arc::new(Gpu::new().expect("a GPU adapter (lavapipe: WGPU_BACKEND=vulkan)")))
        .clone()
}

fn model() -> Arc<SparseTT> {
    static M: OnceLock<Arc<SparseTT>> = OnceLock::new();
    M.get_or_init(|| {
        let dir = golden_dir();
        let sd = golden_state_dict(&dir.join("small_params.safetensors"), seed(&dir))
            .expect("golden weights");
        Arc::new(SparseTT::load(&gpu(), &sd).expect("model loads"))
    })
    .clone()
}

/// A golden HWC BGR frame as an RGB image.
fn frame(name: &str) -> image::RgbImage {
    let t = g(name);
    let (h, w) = (t.shape[0] as u32, t.shape[1] as u32);
    let rgb: Vec<u8> = t
        .u8()
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    image::RgbImage::from_raw(w, h, rgb).unwrap()
}

fn init_rect() -> [f32; 4] {
    g("tracker.init_rect_xywh").f32().try_into().unwrap()
}

#[track_caller]
fn close(what: &str, got: f64, want: f64, rtol: f64, atol: f64) {
    assert!(
        (got - want).abs() <= atol + rtol * want.abs(),
        "{what}: {got} vs official {want}"
    );
}

#[test]
fn hann_window_matches_numpy_definition() {
    // np.hanning(3) = [0, 1, 0]; np.hanning(5) = [0, .5, 1, .5, 0] (0.5 − 0.5·cos(2πn/(M−1))).
    let w3 = hann_window(3);
    let want3 = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
    for (a, b) in w3.iter().zip(want3) {
        assert!((a - b).abs() < 1e-15, "{w3:?}");
    }
    let w5 = hann_window(5);
    assert!((w5[5 + 1] - 0.25).abs() < 1e-15 && (w5[12] - 1.0).abs() < 1e-15);
    // The official window, stored in float64.
    let official = &g("tracker.window").v;
    let ours = hann_window(19);
    assert_eq!(ours.len(), official.len());
    for (i, (a, b)) in ours.iter().zip(official).enumerate() {
        assert!((a - b).abs() <= 1e-15, "window[{i}]: {a} vs {b}");
    }
}

#[test]
fn first_argmax_keeps_the_first_of_ties_and_stops_at_nan() {
    assert_eq!(first_argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
    assert_eq!(first_argmax(&[0.1, f64::NAN, 0.9]), 1);
    assert_eq!(first_argmax(&[-1.0]), 0);
}

#[test]
fn presets_parse_and_reject() {
    assert_eq!("LaSOT".parse::<Preset>().unwrap(), Preset::GOT10K);
    assert_eq!("otb".parse::<Preset>().unwrap().penalty_k, 0.053);
    assert_eq!("uav123".parse::<Preset>().unwrap().test_lr, 0.7364);
    let e = "vot".parse::<Preset>().unwrap_err().to_string();
    assert!(e.contains("vot") && e.contains("got10k"), "{e}");
}

#[test]
fn preset_overrides_parse_round_trip_and_reject() {
    // A base preset with one override keeps the other two values.
    let p: Preset = "otb,window_influence=0.4".parse().unwrap();
    assert_eq!(
        (p.name, p.test_lr, p.window_influence, p.penalty_k),
        ("custom", Preset::OTB.test_lr, 0.4, Preset::OTB.penalty_k)
    );
    // Overrides alone start from got10k; spaces separate as well as commas.
    let p: Preset = "test_lr=0.3  penalty_k=0.05".parse().unwrap();
    assert_eq!(
        (p.test_lr, p.window_influence, p.penalty_k),
        (0.3, Preset::GOT10K.window_influence, 0.05)
    );
    // The text form reads back to the same values.
    let q: Preset = p.to_text().parse().unwrap();
    assert_eq!(q, p);
    for (bad, words) in [
        ("otb,window=0.4", "window_influence"),
        ("test_lr=fast", "not a number"),
        ("window_influence=1.5", "outside"),
        ("otb,0.4", "key=value"),
        ("", "empty"),
    ] {
        let e = bad.parse::<Preset>().unwrap_err().to_string();
        assert!(e.contains(words), "{bad:?}: {e}");
    }
}

#[test]
fn preset_stored_with_the_weights() {
    use sparsett::model::weights::StateDict;
    let mut sd = StateDict::new();
    sd.insert(
        "x",
        sparsett::model::weights::HostTensor::f32(&[1], vec![1.0]),
    );
    assert_eq!(
        Preset::for_weights(&sd).unwrap(),
        None,
        "no metadata, no preset"
    );
    let want: Preset = "uav,test_lr=0.25".parse().unwrap();
    sd.set_preset_text(Some(want.to_text()));
    let back = StateDict::from_safetensors_bytes(&sd.to_safetensors_bytes().unwrap()).unwrap();
    let got = Preset::for_weights(&back)
        .unwrap()
        .expect("the preset survives a save");
    assert_eq!(
        (got.name, got.test_lr, got.window_influence, got.penalty_k),
        (
            "weights",
            0.25,
            Preset::UAV.window_influence,
            Preset::UAV.penalty_k
        )
    );
    sd.set_preset_text(Some("test_lr=2".into()));
    let e = Preset::for_weights(&sd).unwrap_err().to_string();
    assert!(
        e.contains("sparsett.preset") && e.contains("outside"),
        "{e}"
    );
}

#[test]
fn rect_and_state_conventions() {
    // cx = x + (w − 1)/2, and back.
    let s = TargetState::from_rect([10.0, 20.0, 5.0, 8.0]);
    assert_eq!(s.pos, [12.0, 23.5]);
    assert_eq!(s.rect(), [10.0, 20.0, 5.0, 8.0]);
}

/// The post-processing on the official score and box maps equals the official tracker step.
#[test]
fn postprocess_matches_official_step() {
    let dir = golden_dir();
    let m = meta(&dir);
    let hp = &m["tracker"]["hyper_params"];
    let preset = Preset {
        name: "golden",
        test_lr: hp["test_lr"].as_f64().unwrap() as f32,
        window_influence: hp["window_influence"].as_f64().unwrap(),
        penalty_k: hp["penalty_k"].as_f64().unwrap() as f32,
    };
    assert_eq!(
        preset,
        Preset {
            name: "golden",
            ..Preset::GOT10K
        }
    );
    let prev = TargetState::from_rect(init_rect());
    let geo = prev.crop(127, 289);
    assert_eq!(geo.scale as f64, g("tracker.scale_x").v[0], "scale_x");
    let f2 = g("frame2_bgr_u8");
    let size = (f2.shape[1], f2.shape[0]);
    let p = postprocess(
        &g("head.final_score").f32(),
        &g("head.bbox_conv").f32(),
        &prev,
        geo.scale,
        289,
        &hann_window(19),
        &preset,
        size,
    );
    let want = &g("tracker.box_cxywh_in_crop").v;
    for (i, b) in p.boxes_cxywh.iter().enumerate() {
        for c in 0..4 {
            assert_eq!(b[c] as f64, want[i * 4 + c], "box_cxywh[{i}][{c}]");
        }
    }
    for (i, (&a, &b)) in p.penalty.iter().zip(&g("tracker.penalty").v).enumerate() {
        close(&format!("penalty[{i}]"), a as f64, b, 5e-7, 0.0);
    }
    for (i, (&a, &b)) in p.pscore.iter().zip(&g("tracker.pscore").v).enumerate() {
        close(&format!("pscore[{i}]"), a, b, 1e-6, 0.0);
    }
    assert_eq!(
        p.best as f64,
        g("tracker.best_pscore_id").v[0],
        "chosen cell"
    );
    close("lr", p.lr as f64, g("tracker.lr").v[0], 1e-6, 0.0);
    let pred = &g("tracker.pred_in_crop_cxywh_div_scale").v;
    for (c, &want) in pred.iter().enumerate() {
        close("pred/scale", p.pred[c] as f64, want, 1e-6, 0.0);
    }
    let before = &g("tracker.new_pos_sz_before_clamp").v;
    let un = [p.unclamped.pos, p.unclamped.size].concat();
    for c in 0..4 {
        close("state before clamp", un[c] as f64, before[c], 1e-6, 0.0);
    }
    let rect = p.state.rect();
    for (c, &want) in g("tracker.result_rect_xywh").v.iter().enumerate() {
        close("result rect", rect[c] as f64, want, 1e-6, 0.0);
    }
}

/// Clamping follows Python's max(lo, min(hi, v)), NaN included.
#[test]
fn update_clamps_to_the_frame() {
    let prev = TargetState::from_rect([0.0, 0.0, 40.0, 40.0]);
    let geo = prev.crop(127, 289);
    // One candidate far outside the crop to the top-left, tiny; the rest score 0.
    let mut score = vec![0.0f32; 361];
    score[0] = 1.0;
    let mut boxes = vec![0.0f32; 361 * 4];
    boxes[..4].copy_from_slice(&[-900.0, -900.0, -899.0, -899.0]);
    let p = postprocess(
        &score,
        &boxes,
        &prev,
        geo.scale,
        289,
        &vec![0.0; 361],
        &Preset::GOT10K,
        (64, 48),
    );
    assert_eq!(p.best, 0);
    assert_eq!(p.state.pos, [0.0, 0.0]);
    assert!(p.state.size[0] >= 10.0 && p.state.size[1] >= 10.0);
    assert!(p.state.size[0] <= 64.0 && p.state.size[1] <= 48.0);
    boxes[..4].copy_from_slice(&[f32::NAN; 4]);
    let p = postprocess(
        &score,
        &boxes,
        &prev,
        geo.scale,
        289,
        &vec![0.0; 361],
        &Preset::GOT10K,
        (64, 48),
    );
    assert_eq!(
        p.state.pos,
        [64.0, 48.0],
        "NaN becomes the upper bound, as in Python"
    );
}

/// The whole tracker on the official frames: crops, model and post-processing give the official
/// result (full size: one template step and one track step on the device).
#[test]
fn tracker_reproduces_official_step_full_size() {
    let mut t = Tracker::new(gpu(), model(), Preset::GOT10K);
    t.init(&frame("frame1_bgr_u8"), init_rect()).unwrap();
    let p = t.update_detailed(&frame("frame2_bgr_u8")).unwrap();
    assert_eq!(
        p[0].best as f64,
        g("tracker.best_pscore_id").v[0],
        "chosen cell"
    );
    // Boxes agree within 0.05 crop px (parity tests); divided by the scale (0.58) and weighted by
    // lr (< 1), the rectangle may move by up to 0.1 frame px.
    for (c, &want) in g("tracker.result_rect_xywh").v.iter().enumerate() {
        close("result rect", p[0].state.rect()[c] as f64, want, 0.0, 0.1);
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let mut t = Tracker::new(gpu(), model(), Preset::GOT10K);
    let f = image::RgbImage::new(64, 48);
    let e = t.update(&f).unwrap_err().to_string();
    assert!(e.contains("init"), "{e}");
    for (rect, words) in [
        ([70.0, 10.0, 5.0, 5.0], "outside the 64×48 frame"),
        ([-20.0, 10.0, 20.0, 5.0], "outside"),
        ([10.0, 10.0, 0.0, 5.0], "empty"),
        ([10.0, 10.0, f32::NAN, 5.0], "non-finite"),
    ] {
        let e = t.init(&f, rect).unwrap_err().to_string();
        assert!(e.contains(words), "{rect:?}: {e}");
    }
    let e = t.init_many(&f, &[]).unwrap_err().to_string();
    assert!(e.contains("no target"), "{e}");
    let e = t
        .init(&image::RgbImage::new(0, 0), [0.0, 0.0, 1.0, 1.0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
    t.init(&f, [10.0, 10.0, 20.0, 20.0]).unwrap();
    let e = t
        .update(&image::RgbImage::new(32, 32))
        .unwrap_err()
        .to_string();
    assert!(e.contains("32×32") && e.contains("64×48"), "{e}");
}

/// Several targets share one batched pass; each gets what it would get alone.
#[test]
fn batched_targets_equal_single_runs_full_size() {
    let (f1, f2) = (frame("frame1_bgr_u8"), frame("frame2_bgr_u8"));
    let a = init_rect();
    let b = [a[0] + 60.0, a[1] + 90.0, 50.0, 70.0];
    let mut both = Tracker::new(gpu(), model(), Preset::GOT10K);
    both.init_many(&f1, &[a, b]).unwrap();
    let got = both.update_many(&f2).unwrap();
    assert_eq!(got.len(), 2);
    for (i, r) in [a, b].into_iter().enumerate() {
        let mut one = Tracker::new(gpu(), model(), Preset::GOT10K);
        one.init(&f1, r).unwrap();
        let want = one.update(&f2).unwrap();
        for c in 0..4 {
            close(
                "batched rect",
                got[i].rect[c] as f64,
                want.rect[c] as f64,
                1e-5,
                1e-4,
            );
        }
        close(
            "batched score",
            got[i].score as f64,
            want.score as f64,
            1e-5,
            1e-6,
        );
    }
}
