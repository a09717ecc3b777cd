//! Golden gradient parity — a FULL-SIZE test (the whole model, forward and backward on a batch
//! of two 127/289 crop pairs; about a minute on lavapipe). The official training step of
//! `train.safetensors` (BatchNorm frozen, dropout and drop path off; see the golden README) is
//! rerun on the tape with the golden weights and the official targets, and compared:
//!
//! - the targets built from the pairs' boxes equal the official ones exactly;
//! - each loss term within 1e-5 relative;
//! - for every parameter, the gradient's L2 norm within 5e-3 relative, its 4 probe projections
//!   within 5e-3·l2·√(numel/3), and the full gradient (where stored) within 5e-3 of its max
//!   magnitude.
//!
//! These bounds are the issue's: about 3× the official model's own float32-vs-float64 spread
//! (≤ 2.2e-3 relative on L2 norms, ≤ 1.7e-3 on projections, ≤ 2.4e-6 on losses; meta.json
//! `train.grad_fp32_vs_fp64_free_topk`). `SPARSETT_GOLDEN_DIR` selects another golden folder.
//!
//! ReLU decisions within rounding of zero. The head's conv branch has ~740k ReLU inputs per
//! layer, and a few lie closer to zero than f32 rounding at that depth (the official model's
//! own f32-vs-f64 error on `head.conv_branch_feat` is 1.0e-4). Such an element can fall on
//! either side depending on summation order; where it falls differently from the official f32
//! run, its whole upstream gradient is kept or dropped, which moves the full gradients of the
//! BatchNorms on its path well past 5e-3·max (seed 0, register kernels: one element of block
//! 6's output, −1.6e-5 where the layer's max is 17.7, moves channel 435 of every earlier bn3;
//! the tiled kernels instead flip one element of block 7's bn2). As the golden README does for
//! top-K sets, the test takes the official side of such decisions, and only of those: when
//! full gradients mismatch, it finds the last ReLU (in forward order) whose BatchNorm bias
//! gradient mismatches in some channel, mirrors that channel's inputs within `RELU_TAU` of zero
//! to the other side, reruns the step and compares again, for at most `MAX_NUDGE_ROUNDS`
//! rounds. Every bound stays as it is, and nudges never touch an input farther from zero.

use std::collections::BTreeMap;

use safetensors::SafeTensors;
use sparsett::autograd::Tape;
use sparsett::model::weights::golden_state_dict;
use sparsett::ops::loss::LossConfig;
use sparsett::prng::SplitMix64;
use sparsett::train::head::{Probe, ReluSite};
use sparsett::train::net::{normalize_bgr, Net, TrainOpts, X_SIZE, Z_SIZE};
use sparsett::train::target::{batch_targets, TargetConfig};
use sparsett::Gpu;

#[path = "support/golden.rs"]
mod golden;
use golden::{gold_of, golden_dir, seed, Gold};

fn load_train(dir: &std::path::Path) -> BTreeMap<String, Gold> {
    let bytes = std::fs::read(dir.join("train.safetensors")).expect("train.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let g = gold_of(&k, &v);
            (k, g)
        })
        .collect()
}

/// Full size: about a minute on lavapipe with the register kernels (`--nocapture` prints each
/// comparison round). Seed 0 with the register kernels: 11 full gradients mismatch until one
/// ReLU input (block 6's output, batch 0, channel 435, −1.6e-5) takes the official side; then
/// everything passes, worst L2 error 4.2e-4. The tiled kernels (`SPARSETT_VARIANT=tiled`, 8
/// minutes here) round differently: three such inputs (block 7's bn2, block 6's output and
/// bn1, each within 3.3e-5 of zero), then everything passes, worst L2 error 4.3e-4.
#[test]
fn full_size_training_step_matches_the_official_gradients() {
    let dir = golden_dir();
    let s = seed(&dir);
    let gold = load_train(&dir);
    let gpu = Gpu::new().expect("a GPU adapter (lavapipe: WGPU_BACKEND=vulkan)");
    let sd = golden_state_dict(&dir.join("small_params.safetensors"), s).expect("golden weights");
    let net = Net::load(&gpu, &sd).expect("the training model loads");
    drop(sd);
    let batch = gold["z_crop_bgr_u8"].shape[0];

    // Targets from the pairs' boxes equal the official DenseboxTarget output exactly.
    let tcfg = TargetConfig::default();
    let boxes = &gold["bbox_x_xyxy"].v;
    let pairs: Vec<([f32; 4], bool)> = (0..batch)
        .map(|b| {
            let r = &boxes[b * 4..b * 4 + 4];
            (
                [r[0] as f32, r[1] as f32, r[2] as f32, r[3] as f32],
                gold["is_negative_pair"].v[b] != 0.0,
            )
        })
        .collect();
    let t = batch_targets(&tcfg, &pairs);
    assert_eq!(t.cls, gold["target.cls_gt"].f32(), "cls targets");
    assert_eq!(t.box_gt, gold["target.box_gt"].f32(), "box targets");

    let cells = tcfg.cells();
    let labels = gpu
        .upload(&[batch, cells, 1], &gold["target.cls_gt"].f32())
        .unwrap();
    let box_gt = gpu
        .upload(&[batch, cells, 4], &gold["target.box_gt"].f32())
        .unwrap();
    let z = normalize_bgr(&gold["z_crop_bgr_u8"].u8(), batch, Z_SIZE);
    let x = normalize_bgr(&gold["x_crop_bgr_u8"].u8(), batch, X_SIZE);
    let z = gpu.upload(&[batch, 3, Z_SIZE, Z_SIZE], &z).unwrap();
    let x = gpu.upload(&[batch, 3, X_SIZE, X_SIZE], &x).unwrap();

    let st = Step {
        gpu: &gpu,
        net: &net,
        gold: &gold,
        seed: s,
        labels,
        box_gt,
        z,
        x,
    };
    let mut probe = Probe {
        keep_relu_inputs: true,
        nudges: Vec::new(),
    };
    let mut out = run_step(&st, &probe);
    for round in 1..=MAX_NUDGE_ROUNDS {
        if out.failures.is_empty() {
            break;
        }
        let more = next_nudges(&out, &probe);
        if more.is_empty() {
            break;
        }
        eprintln!(
            "{} mismatches; round {round}: taking the other side of {} ReLU input(s) within {RELU_TAU:e} of zero:",
            out.failures.len(),
            more.len()
        );
        for (site, i, d) in &more {
            eprintln!("  {site:?} element {i}: {:e} -> {:e}", -d / 2.0, d / 2.0);
        }
        probe.nudges.extend(more);
        out = run_step(&st, &probe);
    }
    let failures = out.failures;
    assert!(
        failures.is_empty(),
        "{} mismatches (after taking the official side of {} ReLU decision(s) within {RELU_TAU:e} \
         of zero):\n{}",
        failures.len(),
        probe.nudges.len(),
        failures.join("\n")
    );
}

/// What one run of the golden step gives: the mismatches, the conv branch's ReLU inputs (when the probe keeps them) and, per parameter whose full gradient
/// mismatches, the mismatching elements.
struct Outcome {
    failures: Vec<String>,
    relu: Vec<(ReluSite, Vec<usize>, Vec<f32>)>,
    mismatched: BTreeMap<String, Vec<usize>>,
}

/// Inputs of the golden step on the device.
struct Step<'a> {
    gpu: &'a Gpu,
    net: &'a Net,
    gold: &'a BTreeMap<String, Gold>,
    seed: u64,
    labels: sparsett::Tensor,
    box_gt: sparsett::Tensor,
    z: sparsett::Tensor,
    x: sparsett::Tensor,
}

fn run_step(st: &Step, probe: &Probe) -> Outcome {
    let (gpu, net, gold, s) = (st.gpu, st.net, st.gold, st.seed);
    let (labels, box_gt, z, x) = (&st.labels, &st.box_gt, &st.z, &st.x);
    let mut tape = Tape::new();
    let mut enc = gpu.encoder();
    let zv = tape.constant(z);
    let xv = tape.constant(x);
    let pred = net
        .forward_probed(&mut tape, &mut enc, &zv, &xv, &TrainOpts::default(), probe)
        .expect("forward");
    let l = Net::losses(
        &mut tape,
        &mut enc,
        &pred,
        labels,
        box_gt,
        &LossConfig::default(),
    )
    .expect("losses");
    let mut reads = vec![
        &l.cls_fc.t,
        &l.reg_fc.t,
        &l.cls_conv.t,
        &l.reg_conv.t,
        &l.total.t,
        &pred.cls_fc.t,
        &pred.bbox_conv.t,
    ];
    reads.extend(pred.relu_inputs.iter().map(|(_, t)| t));
    let mut got = enc.submit_read(&reads).expect("forward runs");
    let relu: Vec<(ReluSite, Vec<usize>, Vec<f32>)> = pred
        .relu_inputs
        .iter()
        .zip(got.drain(7..))
        .map(|((site, t), v)| (*site, t.shape().to_vec(), v))
        .collect();
    let mut failures = Vec::new();
    for (i, k) in ["cls_fc", "reg_fc", "cls_conv", "reg_conv", "total"]
        .iter()
        .enumerate()
    {
        let want = gold[&format!("loss.{k}")].v[0];
        let rel = (got[i][0] as f64 - want).abs() / want.abs();
        eprintln!("loss.{k}: {} vs {want} (rel {rel:.2e})", got[i][0]);
        if rel > 1e-5 {
            failures.push(format!(
                "loss.{k}: {} vs {want} (rel {rel:.2e} > 1e-5)",
                got[i][0]
            ));
        }
    }
    for (i, k) in [(5, "pred.cls_fc"), (6, "pred.bbox_conv")] {
        let g = &gold[k].v;
        let m = g.iter().fold(0f64, |a, v| a.max(v.abs()));
        let e = got[i]
            .iter()
            .zip(g)
            .fold(0f64, |a, (&o, &w)| a.max((o as f64 - w).abs()));
        eprintln!("{k}: max |diff| {e:.3e} (max |golden| {m:.3e})");
    }
    drop(pred);

    let mut enc = gpu.encoder();
    let root = l.total.clone();
    drop(l);
    let grads = tape
        .backward(&mut enc, &root, gpu.upload(&[1], &[1.0]).unwrap())
        .expect("backward");
    let params = net.param_list();
    let missing: Vec<&str> = params
        .iter()
        .filter(|(k, _)| grads.get(k).is_none())
        .map(|(k, _)| k.as_str())
        .collect();
    let reads: Vec<&sparsett::Tensor> = params.iter().filter_map(|(k, _)| grads.get(k)).collect();
    let values = enc.submit_read(&reads).expect("backward runs");
    let mut by_name: BTreeMap<&str, &Vec<f32>> = BTreeMap::new();
    for ((k, _), v) in params
        .iter()
        .filter(|(k, _)| grads.get(k).is_some())
        .zip(&values)
    {
        by_name.insert(k.as_str(), v);
    }
    for k in &missing {
        failures.push(format!("{k}: no gradient"));
    }
    // Every parameter the golden step trained is one of ours.
    for key in gold.keys().filter_map(|k| k.strip_prefix("grad_l2.")) {
        let l2 = gold[&format!("grad_l2.{key}")].v[0];
        if l2 != 0.0 && !params.iter().any(|(k, _)| k == key) {
            failures.push(format!("{key}: trained by the official step, not by ours"));
        }
    }
    let mut worst = (0f64, String::new());
    let mut mismatched = BTreeMap::new();
    for (key, g) in &by_name {
        let n = g.len();
        let l2w = gold[&format!("grad_l2.{key}")].v[0];
        let l2 = g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        let rel = (l2 - l2w).abs() / l2w.max(f64::MIN_POSITIVE);
        if rel > worst.0 {
            worst = (rel, key.to_string());
        }
        if rel > 5e-3 {
            failures.push(format!(
                "{key}: grad L2 {l2:.6e} vs {l2w:.6e} (rel {rel:.2e})"
            ));
        }
        let proj = &gold[&format!("grad_proj.{key}")].v;
        let tol = 5e-3 * l2w * (n as f64 / 3.0).sqrt();
        for (pk, &want) in proj.iter().enumerate() {
            let mut r = SplitMix64::for_key(&format!("{key}#probe{pk}"), s);
            let p: f64 = g.iter().map(|&v| v as f64 * r.next_sym()).sum();
            if (p - want).abs() > tol {
                failures.push(format!(
                    "{key}: probe {pk} {p:.6e} vs {want:.6e} (|diff| {:.2e} > {tol:.2e})",
                    (p - want).abs()
                ));
            }
        }
        if let Some(full) = gold.get(&format!("grad.{key}")) {
            let m = full.v.iter().fold(0f64, |a, v| a.max(v.abs()));
            let e = g
                .iter()
                .zip(&full.v)
                .fold(0f64, |a, (&o, &w)| a.max((o as f64 - w).abs()));
            if e > 5e-3 * m {
                failures.push(format!(
                    "{key}: full gradient max |diff| {e:.3e} > 5e-3·{m:.3e}"
                ));
                let bad = g.iter().zip(&full.v).enumerate();
                let bad = bad.filter(|(_, (&o, &w))| (o as f64 - w).abs() > 5e-3 * m);
                mismatched.insert(key.to_string(), bad.map(|(i, _)| i).collect());
            }
        }
    }
    eprintln!(
        "{} parameters compared; worst L2 relative error {:.2e} ({})",
        by_name.len(),
        worst.0,
        worst.1
    );
    Outcome {
        failures,
        relu,
        mismatched,
    }
}

/// Inputs within this distance of zero may take either side of a ReLU: the official model's
/// own f32-vs-f64 error on `head.conv_branch_feat` (golden README).
const RELU_TAU: f32 = 1e-4;
const MAX_NUDGE_ROUNDS: usize = 6;

/// The BatchNorm whose bias gradient, channel by channel, is the summed upstream gradient of the
/// ReLU at `site`: a decision flipped there shows in that bias first.
fn bias_of(site: ReluSite) -> String {
    match (site.block, site.site) {
        (0, 1) => "head.conv_branch.0.conv1.bn.bias".into(),
        (0, _) => "head.conv_branch.0.conv2.bn.bias".into(),
        (b, k) => format!("head.conv_branch.{b}.bn{k}.bias"),
    }
}

/// Nudges for the next round: at the last ReLU (in forward order) whose bias mismatches, in
/// each mismatching channel, the input closest to zero if it lies within `RELU_TAU`, mirrored to
/// the other side (x → −x). One per channel and round, so that an input that was already on the
/// official side is not flipped along with the one that was not.
fn next_nudges(out: &Outcome, probe: &Probe) -> Vec<(ReluSite, usize, f32)> {
    let mut sites: Vec<&(ReluSite, Vec<usize>, Vec<f32>)> = out.relu.iter().collect();
    sites.sort_by_key(|(site, _, _)| std::cmp::Reverse(*site));
    for (site, shape, v) in sites {
        let Some(chans) = out.mismatched.get(&bias_of(*site)) else {
            continue;
        };
        // [B, C, H, W]
        let (c, hw) = (shape[1], shape[2] * shape[3]);
        let mut closest: BTreeMap<usize, (f32, usize)> = BTreeMap::new();
        for (i, &xv) in v.iter().enumerate() {
            let ch = (i / hw) % c;
            let nudged = probe.nudges.iter().any(|n| n.0 == *site && n.1 == i);
            if xv.abs() < RELU_TAU && chans.contains(&ch) && !nudged {
                let e = closest.entry(ch).or_insert((xv, i));
                if xv.abs() < e.0.abs() {
                    *e = (xv, i);
                }
            }
        }
        if !closest.is_empty() {
            return closest
                .into_values()
                .map(|(xv, i)| (*site, i, -2.0 * xv))
                .collect();
        }
    }
    Vec::new()
}
