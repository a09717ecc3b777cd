//! Focal and IoU losses against `ops::loss::cpu` (f64), whose backward is checked against
//! central finite differences.
//!
//! Tolerances. Forward: one scalar, an f32 tree sum of ≤ 1100 terms each within a few ulp
//! (WGSL exp/log: 3 + 2|x| ulp), so ≤ 2e-5 relative (+1e-6 absolute for near-zero losses).
//! Backward: one closed-form expression per element from sigmoid/exp/log, ≤ 1e-4 relative plus
//! 1e-6 absolute (gradients are O(1/npos)). Finite differences (f64, h = 1e-5 on logits, 1e-4 px on
//! boxes): truncation O(h²) ≪ 1e-6, so 1e-6 relative of the largest gradient.

use sparsett::ops::loss::{self, cpu, Focal};
use sparsett::Tensor;

use crate::common::{assert_close, gpu, rand_vec};

const FOCALS: [Focal; 2] = [
    Focal {
        alpha: 0.75,
        gamma: 2.0,
        weight: 1.4,
    },
    // A non-integer γ takes the pow path of the shader.
    Focal {
        alpha: 0.25,
        gamma: 1.5,
        weight: 0.5,
    },
];

/// Labels in {1, 0, −1} with roughly the given shares of positives and ignored cells.
fn labels(seed: u64, n: usize, pos: f32, ign: f32) -> Vec<f32> {
    rand_vec(seed, n, 0.0, 1.0)
        .into_iter()
        .map(|u| {
            if u < pos {
                1.0
            } else if u < pos + ign {
                -1.0
            } else {
                0.0
            }
        })
        .collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// (batch, cells, positive share, ignored share): small, odd, batch 3, more cells than the
/// 256-wide workgroup, no positives, all ignored.
const CASES: [(usize, usize, f32, f32); 6] = [
    (1, 5, 0.4, 0.2),
    (2, 361, 0.05, 0.5),
    (3, 49, 0.2, 0.3),
    (3, 361, 0.03, 0.4),
    (2, 25, 0.0, 0.3),
    (1, 9, 0.0, 1.0),
];

#[test]
fn focal_forward_and_backward_match_reference() {
    let g = gpu();
    for (ci, &(b, cells, pos, ign)) in CASES.iter().enumerate() {
        for f in &FOCALS {
            let n = b * cells;
            let x = rand_vec(10 + ci as u64, n, -5.0, 5.0);
            let lab = labels(20 + ci as u64, n, pos, ign);
            let what = format!("focal b{b} cells{cells} γ{}", f.gamma);
            let (xt, lt) = (
                g.upload(&[b, cells, 1], &x).unwrap(),
                g.upload(&[b, cells, 1], &lab).unwrap(),
            );
            let dl = g.upload(&[1], &[0.7]).unwrap();
            let prior = rand_vec(30, n, -1.0, 1.0);
            let into = g.upload(&[b, cells], &prior).unwrap();
            let mut enc = g.encoder();
            let l = loss::focal_loss(&mut enc, &xt, &lt, f).unwrap();
            let fresh = loss::focal_loss_backward(&mut enc, &xt, &lt, f, b, &dl, None).unwrap();
            loss::focal_loss_backward(&mut enc, &xt, &lt, f, b, &dl, Some(&into)).unwrap();
            let got = enc.submit_read(&[&l, &fresh, &into]).unwrap();
            let want = cpu::focal_loss(&f64s(&x), &lab, f) as f32;
            assert_close(&what, &got[0], &[want], 1e-6, 2e-5);
            let dwant: Vec<f32> = cpu::focal_loss_backward(&f64s(&x), &lab, f)
                .iter()
                .map(|d| (d * 0.7) as f32)
                .collect();
            assert_close(&format!("{what} d"), &got[1], &dwant, 1e-6, 1e-4);
            let acc: Vec<f32> = prior.iter().zip(&dwant).map(|(p, d)| p + d).collect();
            assert_close(&format!("{what} d into"), &got[2], &acc, 1e-6, 1e-4);
        }
    }
}

#[test]
fn focal_backward_into_head_channel_zero() {
    // The gradient goes into channel 0 of a [B, 5, cells] head output; channels 1..4 untouched.
    let g = gpu();
    let (b, cells) = (3, 7);
    let x = rand_vec(1, b * cells, -3.0, 3.0);
    let lab = labels(2, b * cells, 0.3, 0.3);
    let f = FOCALS[0];
    let prior = rand_vec(3, b * 5 * cells, -1.0, 1.0);
    let (xt, lt) = (
        g.upload(&[b, cells], &x).unwrap(),
        g.upload(&[b, cells], &lab).unwrap(),
    );
    let head = g.upload(&[b, 5, cells], &prior).unwrap();
    let dl = g.upload(&[1], &[1.0]).unwrap();
    let mut enc = g.encoder();
    loss::focal_loss_backward(&mut enc, &xt, &lt, &f, b, &dl, Some(&head)).unwrap();
    let got = enc.submit_read(&[&head]).unwrap().remove(0);
    let d = cpu::focal_loss_backward(&f64s(&x), &lab, &f);
    let mut want = prior.clone();
    for bi in 0..b {
        for c in 0..cells {
            want[bi * 5 * cells + c] += d[bi * cells + c] as f32;
        }
    }
    assert_close("focal into head", &got, &want, 1e-6, 1e-4);
}

/// Ground-truth boxes (x1 < x2, y1 < y2) and predictions around them, some far off (IoU 0).
fn boxes(seed: u64, n: usize) -> (Vec<f32>, Vec<f32>) {
    let u = rand_vec(seed, n * 8, 0.0, 1.0);
    let (mut gt, mut pr) = (Vec::new(), Vec::new());
    for c in 0..n {
        let r = &u[c * 8..c * 8 + 8];
        let (x1, y1) = (r[0] * 200.0, r[1] * 200.0);
        let (w, h) = (10.0 + r[2] * 80.0, 10.0 + r[3] * 80.0);
        gt.extend([x1, y1, x1 + w, y1 + h]);
        // Every 7th prediction is shifted far away: no overlap.
        let far = if c % 7 == 3 { 400.0 } else { 0.0 };
        let j = |v: f32, k: usize| v + (r[4 + k] - 0.5) * 30.0 + far;
        pr.extend([j(x1, 0), j(y1, 1), j(x1 + w, 2), j(y1 + h, 3)]);
    }
    (pr, gt)
}

#[test]
fn iou_forward_and_backward_match_reference() {
    let g = gpu();
    for (ci, &(b, cells, pos, ign)) in CASES.iter().enumerate() {
        let n = b * cells;
        let (pr, gtv) = boxes(40 + ci as u64, n);
        let lab = labels(50 + ci as u64, n, pos.max(0.0), ign);
        let what = format!("iou b{b} cells{cells}");
        let up = |v: &[f32], w: usize| -> Tensor { g.upload(&[b, cells, w], v).unwrap() };
        let (pt, gt, lt) = (up(&pr, 4), up(&gtv, 4), up(&lab, 1));
        let dl = g.upload(&[1], &[1.3]).unwrap();
        let prior = rand_vec(60, n * 4, -1.0, 1.0);
        let into = g.upload(&[b, cells, 4], &prior).unwrap();
        let mut enc = g.encoder();
        let l = loss::iou_loss(&mut enc, &pt, &gt, &lt, 2.0).unwrap();
        let fresh = loss::iou_loss_backward(&mut enc, &pt, &gt, &lt, 2.0, &dl, None).unwrap();
        loss::iou_loss_backward(&mut enc, &pt, &gt, &lt, 2.0, &dl, Some(&into)).unwrap();
        let got = enc.submit_read(&[&l, &fresh, &into]).unwrap();
        let (wl, wi) = cpu::iou_loss(&f64s(&pr), &f64s(&gtv), &lab, 2.0);
        assert_close(&what, &got[0], &[wl as f32, wi as f32], 1e-6, 2e-5);
        let dwant: Vec<f32> = cpu::iou_loss_backward(&f64s(&pr), &f64s(&gtv), &lab, 2.0)
            .iter()
            .map(|d| (d * 1.3) as f32)
            .collect();
        assert_close(&format!("{what} d"), &got[1], &dwant, 1e-6, 1e-4);
        let acc: Vec<f32> = prior.iter().zip(&dwant).map(|(p, d)| p + d).collect();
        assert_close(&format!("{what} d into"), &got[2], &acc, 1e-6, 1e-4);
    }
}

#[test]
fn losses_are_deterministic() {
    let g = gpu();
    let n = 3 * 361;
    let x = rand_vec(70, n, -4.0, 4.0);
    let lab = labels(71, n, 0.05, 0.4);
    let (xt, lt) = (g.upload(&[n], &x).unwrap(), g.upload(&[n], &lab).unwrap());
    let run = || {
        let mut enc = g.encoder();
        let l = loss::focal_loss(&mut enc, &xt, &lt, &FOCALS[0]).unwrap();
        enc.submit_read(&[&l]).unwrap()[0][0].to_bits()
    };
    assert_eq!(run(), run());
}

#[track_caller]
fn assert_fd(what: &str, analytic: &[f64], numeric: &[f64]) {
    let scale = numeric.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-6 * scale,
            "{what}: element {i} analytic {a} vs finite difference {n} (scale {scale})"
        );
    }
}

fn central(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let (mut a, mut b) = (x.to_vec(), x.to_vec());
            a[i] += h;
            b[i] -= h;
            (f(&a) - f(&b)) / (2.0 * h)
        })
        .collect()
}

#[test]
fn cpu_backward_matches_finite_differences() {
    for (ci, &(b, cells, pos, ign)) in CASES.iter().take(4).enumerate() {
        let n = (b * cells).min(60);
        let x = f64s(&rand_vec(80 + ci as u64, n, -4.0, 4.0));
        let lab = labels(90 + ci as u64, n, pos.max(0.2), ign);
        for f in &FOCALS {
            let num = central(&x, 1e-5, |x| cpu::focal_loss(x, &lab, f));
            assert_fd("focal", &cpu::focal_loss_backward(&x, &lab, f), &num);
        }
        let (pr, gt) = boxes(100 + ci as u64, n);
        let (pr, gt) = (f64s(&pr), f64s(&gt));
        let num = central(&pr, 1e-4, |p| cpu::iou_loss(p, &gt, &lab, 0.6).0);
        assert_fd("iou", &cpu::iou_loss_backward(&pr, &gt, &lab, 0.6), &num);
    }
}

#[test]
fn losses_reject_bad_shapes() {
    let g = gpu();
    let a = g.zeros(&[2, 361]).unwrap();
    let b = g.zeros(&[2, 360]).unwrap();
    let bx = g.zeros(&[2, 361, 3]).unwrap();
    let s2 = g.zeros(&[2]).unwrap();
    let mut enc = g.encoder();
    let f = FOCALS[0];
    let e = loss::focal_loss(&mut enc, &a, &b, &f)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("focal_loss") && e.contains("[2, 360]"), "{e}");
    let e = loss::iou_loss(&mut enc, &bx, &bx, &a, 1.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("iou_loss") && e.contains("[2, 361, 3]"), "{e}");
    let e = loss::focal_loss_backward(&mut enc, &a, &a, &f, 2, &s2, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("focal_loss_backward") && e.contains("dloss"),
        "{e}"
    );
    let d = g.zeros(&[1]).unwrap();
    let e = loss::focal_loss_backward(&mut enc, &a, &a, &f, 2, &d, Some(&b))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("into") && e.contains("[2, 360]"), "{e}");
}

/// Full size (batch 32 × 361 cells, the official training batch): all four terms forward and
/// backward in one submission against the references; prints the wall time of a second,
/// pipeline-warm run (lavapipe: the single-workgroup forward sums dominate).
#[test]
fn full_size_batch32_losses() {
    use sparsett::ops::loss::{slot, LossConfig, Preds, Targets};
    let g = gpu();
    let (b, cells) = (32usize, 361usize);
    let n = b * cells;
    let lab = labels(7, n, 0.03, 0.3);
    let x = rand_vec(8, n, -4.0, 4.0);
    let (pr, gtv) = boxes(9, n);
    let xt = g.upload(&[b, cells], &x).unwrap();
    let lt = g.upload(&[b, cells], &lab).unwrap();
    let pt = g.upload(&[b, cells, 4], &pr).unwrap();
    let gt = g.upload(&[b, cells, 4], &gtv).unwrap();
    let one = g.upload(&[1], &[1.0]).unwrap();
    let c = LossConfig::default();
    let f = Focal {
        alpha: c.alpha,
        gamma: c.gamma,
        weight: c.w_cls_fc,
    };
    let run = || {
        let mut enc = g.encoder();
        let preds = Preds {
            cls_fc: &xt,
            bbox_fc: &pt,
            cls_conv: &xt,
            bbox_conv: &pt,
        };
        let tg = Targets {
            cls: &lt,
            box_gt: &gt,
        };
        let out = loss::sparsett_losses(&mut enc, &preds, &tg, &c).unwrap();
        let dx = loss::focal_loss_backward(&mut enc, &xt, &lt, &f, b, &one, None).unwrap();
        let db = loss::iou_loss_backward(&mut enc, &pt, &gt, &lt, c.w_reg_fc, &one, None).unwrap();
        enc.submit_read(&[&out, &dx, &db]).unwrap()
    };
    run();
    let t0 = std::time::Instant::now();
    let got = run();
    eprintln!(
        "batch 32 losses fwd+bwd: {:.2} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let xf = f64s(&x);
    let (pf, gf) = (f64s(&pr), f64s(&gtv));
    let ffc = cpu::focal_loss(&xf, &lab, &f);
    let (ifc, _) = cpu::iou_loss(&pf, &gf, &lab, c.w_reg_fc);
    assert_close(
        "cls_fc",
        &got[0][slot::CLS_FC..=slot::CLS_FC],
        &[ffc as f32],
        1e-6,
        2e-5,
    );
    assert_close(
        "reg_fc",
        &got[0][slot::REG_FC..=slot::REG_FC],
        &[ifc as f32],
        1e-6,
        2e-5,
    );
    let dx: Vec<f32> = cpu::focal_loss_backward(&xf, &lab, &f)
        .iter()
        .map(|&v| v as f32)
        .collect();
    assert_close("dlogits", &got[1], &dx, 1e-6, 1e-4);
    let db: Vec<f32> = cpu::iou_loss_backward(&pf, &gf, &lab, c.w_reg_fc)
        .iter()
        .map(|&v| v as f32)
        .collect();
    assert_close("dboxes", &got[2], &db, 1e-6, 1e-4);
}
