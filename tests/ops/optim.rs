//! AdamW and gradient clipping against `ops::optim::cpu`, which replays `torch.optim.AdamW`'s
//! tensor ops with PyTorch's f32 roundings (formula in its doc comment), and against closed forms.
//!
//! Tolerances. The GPU runs the same f32 operations, but WGSL lets the compiler fuse a multiply
//! and an add, and specifies sqrt and division only to 2.5 ulp, so each step may differ from the
//! reference by a few ulp in m, v and the update (≤ ~8 ulp ≈ 1e-6 relative of an update of at
//! most a few·lr), plus half an ulp of p when the decayed parameter is rounded. Over five steps:
//! atol 1e-5·lr, rtol 1e-6 for the parameters; rtol 1e-6 (and 1e-7·max|g| absolute, for m near
//! a sign change) for the moments. A missing bias correction (a 10× larger first step), weight
//! decay coupled into the gradient instead of decoupled, or eps inside the square root would
//! each miss by orders of magnitude more.

use sparsett::ops::optim::{self, cpu, AdamState, AdamW};

use crate::common::{assert_close, gpu, rand_vec};

struct Run {
    param: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// `steps` AdamW steps on the GPU (one submit per step) with the given per-step gradients.
fn gpu_steps(cfg: &AdamW, p0: &[f32], grads: &[Vec<f32>], clip: Option<f32>) -> Run {
    let g = gpu();
    let shape = [p0.len()];
    let param = g.upload(&shape, p0).unwrap();
    let state = AdamState::zeros(g, &shape).unwrap();
    for (i, grad) in grads.iter().enumerate() {
        let gt = g.upload(&shape, grad).unwrap();
        let mut enc = g.encoder();
        let coef = clip.map(|c| optim::clip_grad_norm(&mut enc, &[&gt], c).unwrap());
        optim::adamw_step(
            &mut enc,
            cfg,
            i as u64 + 1,
            &param,
            &gt,
            &state,
            coef.as_ref(),
        )
        .unwrap();
        enc.submit().unwrap();
    }
    let mut out = g.read_many(&[&param, &state.m, &state.v]).unwrap();
    let v = out.pop().unwrap();
    let m = out.pop().unwrap();
    Run {
        param: out.pop().unwrap(),
        m,
        v,
    }
}

fn cpu_steps(cfg: &AdamW, p0: &[f32], grads: &[Vec<f32>], clip: Option<f32>) -> Run {
    let mut r = Run {
        param: p0.to_vec(),
        m: vec![0.0; p0.len()],
        v: vec![0.0; p0.len()],
    };
    for (i, g) in grads.iter().enumerate() {
        let coef = clip.map(|c| cpu::clip_coef(&[g], c).1);
        cpu::adamw_step(cfg, i as u64 + 1, &mut r.param, g, &mut r.m, &mut r.v, coef);
    }
    r
}

fn compare(what: &str, cfg: &AdamW, got: &Run, want: &Run, gmax: f32) {
    let lr = cfg.lr as f32;
    assert_close(
        &format!("{what} param"),
        &got.param,
        &want.param,
        1e-5 * lr,
        1e-6,
    );
    assert_close(&format!("{what} m"), &got.m, &want.m, 1e-7 * gmax, 1e-6);
    assert_close(
        &format!("{what} v"),
        &got.v,
        &want.v,
        1e-7 * gmax * gmax,
        1e-6,
    );
}

#[test]
fn first_step_is_the_closed_form() {
    // Step 1: m̂ = g and v̂ = g², so p₁ = p₀·(1 − lr·wd) − lr·g / (|g| + eps), computed in f64.
    // The last gradients are so small that eps (added after the square root) dominates.
    let cfg = AdamW {
        lr: 1e-3,
        weight_decay: 0.05,
        ..Default::default()
    };
    let mut grad = rand_vec(1, 9, -2.0, 2.0);
    grad.extend([1e-9, -3e-9, 0.0]);
    let p0 = rand_vec(2, grad.len(), -1.5, 1.5);
    let got = gpu_steps(&cfg, &p0, std::slice::from_ref(&grad), None);
    let want: Vec<f32> = p0
        .iter()
        .zip(&grad)
        .map(|(&p, &g)| {
            let (p, g) = (p as f64, g as f64);
            (p * (1.0 - cfg.lr * cfg.weight_decay) - cfg.lr * g / (g.abs() + cfg.eps)) as f32
        })
        .collect();
    // Besides the GPU's own few ulp, the f32 scalars (1 − β1 = 0.1 and √(1 − β2) rounded)
    // make m̂/√v̂ differ from g/|g| by ~1e-7 relative: 1e-9 = 1e-6·lr absolute, 3e-7 relative.
    assert_close("first step", &got.param, &want, 1e-9, 3e-7);
}

#[test]
fn steps_match_pytorch_formula() {
    // Weight decay 0 and > 0, PyTorch's defaults and the training recipe's 1e-4 / 1e-4.
    let configs = [
        AdamW {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
        AdamW::default(),
        AdamW {
            lr: 1e-4,
            weight_decay: 1e-4,
            ..Default::default()
        },
        AdamW {
            lr: 0.05,
            beta1: 0.8,
            beta2: 0.95,
            eps: 1e-6,
            weight_decay: 0.3,
        },
    ];
    for (ci, cfg) in configs.iter().enumerate() {
        for n in [1usize, 7, 1000, 70001] {
            let seed = 10 * ci as u64 + n as u64;
            let p0 = rand_vec(seed, n, -1.0, 1.0);
            // Gradients that change sign and size from step to step.
            let grads: Vec<Vec<f32>> = (0..5)
                .map(|s| {
                    rand_vec(seed + 100 + s, n, -1.0, 1.0)
                        .iter()
                        .map(|g| g * (s + 1) as f32 * 0.5)
                        .collect()
                })
                .collect();
            let got = gpu_steps(cfg, &p0, &grads, None);
            let want = cpu_steps(cfg, &p0, &grads, None);
            compare(&format!("{cfg:?} n {n}"), cfg, &got, &want, 2.5);
        }
    }
}

#[test]
fn clipping_has_clip_grad_norm_semantics() {
    let g = gpu();
    let xs = [
        rand_vec(30, 5, -1.0, 1.0),
        rand_vec(31, 1, -1.0, 1.0),
        rand_vec(32, 3001, -1.0, 1.0),
    ];
    let ts: Vec<_> = xs
        .iter()
        .map(|x| g.upload(&[x.len()], x).unwrap())
        .collect();
    let refs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
    let tr: Vec<_> = ts.iter().collect();
    // total ≈ √(3007/3) ≈ 31.7: max_norm 2 clips, 1000 leaves the gradients alone (coefficient 1).
    for max_norm in [2.0f32, 1000.0] {
        let mut enc = g.encoder();
        let c = optim::clip_grad_norm(&mut enc, &tr, max_norm).unwrap();
        let got = enc.submit_read(&[&c]).unwrap().pop().unwrap();
        let (total, coef) = cpu::clip_coef(&refs, max_norm);
        // The norm is a 3007-term f32 sum of squares (see reduce.rs) then a square root.
        assert_close(&format!("norm {max_norm}"), &got[..1], &[total], 0.0, 1e-5);
        assert_close(&format!("coef {max_norm}"), &got[1..], &[coef], 0.0, 1e-5);
        if max_norm > total {
            assert_eq!(got[1], 1.0);
        } else {
            assert!((coef - max_norm / total).abs() < 1e-6 * coef);
        }
    }
    // Scaling in place multiplies every gradient by the coefficient.
    let mut enc = g.encoder();
    let c = optim::clip_grad_norm(&mut enc, &tr, 2.0).unwrap();
    optim::scale_grads(&mut enc, &tr, &c).unwrap();
    let got = enc.submit_read(&[&ts[0], &ts[1], &ts[2]]).unwrap();
    let coef = cpu::clip_coef(&refs, 2.0).1;
    let mut total = 0.0f64;
    for (x, gx) in xs.iter().zip(&got) {
        let want: Vec<f32> = x.iter().map(|v| v * coef).collect();
        assert_close("scaled grads", gx, &want, 0.0, 2e-5);
        total += gx.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
    }
    assert!(
        (total.sqrt() - 2.0).abs() < 1e-4,
        "clipped norm {}",
        total.sqrt()
    );

    // AdamW reading the coefficient gives the step on clipped gradients.
    let cfg = AdamW::default();
    let p0 = rand_vec(40, 64, -1.0, 1.0);
    let grads: Vec<Vec<f32>> = (0..3).map(|s| rand_vec(41 + s, 64, -3.0, 3.0)).collect();
    let got = gpu_steps(&cfg, &p0, &grads, Some(0.5));
    let want = cpu_steps(&cfg, &p0, &grads, Some(0.5));
    // The coefficient itself may differ by ~1e-6 relative (f32 sum vs f64), which moves m and v
    // by as much.
    let lr = cfg.lr as f32;
    assert_close("clipped param", &got.param, &want.param, 1e-5 * lr, 2e-6);
    assert_close("clipped m", &got.m, &want.m, 1e-7, 1e-5);
    assert_close("clipped v", &got.v, &want.v, 1e-9, 1e-5);
}

#[test]
fn bad_inputs_are_errors() {
    let g = gpu();
    let p = g.zeros(&[4]).unwrap();
    let grad = g.zeros(&[4]).unwrap();
    let state = AdamState::zeros(g, &[4]).unwrap();
    let cfg = AdamW::default();
    let mut enc = g.encoder();
    let e = optim::adamw_step(&mut enc, &cfg, 0, &p, &grad, &state, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("adamw") && e.contains("step"), "{e}");
    let g5 = g.zeros(&[5]).unwrap();
    let e = optim::adamw_step(&mut enc, &cfg, 1, &p, &g5, &state, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("grad") && e.contains("[5]"), "{e}");
    let e = optim::adamw_step(&mut enc, &cfg, 1, &p, &p, &state, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("share"), "{e}");
    let e = optim::clip_grad_norm(&mut enc, &[&grad], 0.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_norm"), "{e}");
    let e = optim::adamw_step(&mut enc, &cfg, 1, &p, &grad, &state, Some(&g5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("clip"), "{e}");
}
