//! Element-wise kernels against `ops::elementwise::cpu`.
//!
//! Tolerances: ReLU, add and mul are exact in f32 (one rounding, identical on both sides). Exp and
//! sigmoid use the hardware exp, specified by WGSL to 3 + 2|x| ulp; GELU adds the erf
//! approximation's 1.2e-7 absolute error: 2e-6 relative plus 1e-6 absolute covers both on the
//! tested ranges. Affine allows 5e-7 absolute: alpha*x (up to 3 in size, ulp 2.4e-7) may be fused
//! with the add or rounded separately on the GPU, which shows where alpha*x + beta cancels.
//!
//! Backward (against the f64 references, which are themselves checked by central differences,
//! see `reduce::numeric_grad`, to 1e-7): ReLU's select and add's copy are exact; mul's dy·b is
//! one correctly rounded product (rtol 1.2e-7 = 2u); affine's α·dy likewise. GELU's derivative
//! adds the erf approximation (1.2e-7 absolute in Φ) and exp(−x²/2), whose 3 + 2|t| ulp reach
//! ~8e-6 relative at |x| = 8 on a term x·φ(x) ≤ 0.25 in size: atol 3e-6, rtol 2e-6. Sigmoid and
//! exp differentiate at the saved f32 output y: exp's dy·y is two roundings (rtol 3e-7), and
//! sigmoid's dy·(1 − y)·y loses up to u/2 absolute in 1 − y when y is near 1 (atol 1e-7, rtol
//! 1e-6). The broadcast operand's gradient is a sum over `outer` repeats, allowed 1e-6·outer
//! as in reduce.rs.

use sparsett::ops::elementwise::{self, cpu, Binary, Saved, Unary};

use crate::common::{assert_close, gpu, rand_vec};
use crate::reduce::{assert_fd, numeric_grad, to32, to64};

const SHAPES: [&[usize]; 4] = [&[1], &[7, 13], &[3, 5, 257], &[70001]];

#[test]
fn unary_ops_match_reference() {
    let g = gpu();
    let ops = [
        (Unary::Relu, 0.0, 0.0),
        (Unary::Gelu, 1e-6, 2e-6),
        (Unary::Sigmoid, 1e-6, 2e-6),
        (Unary::Exp, 1e-6, 2e-6),
        (
            Unary::Affine {
                alpha: -0.37,
                beta: 2.5,
            },
            5e-7,
            1e-6,
        ),
    ];
    for (si, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = rand_vec(si as u64, n, -8.0, 8.0);
        let xt = g.upload(shape, &x).unwrap();
        for (op, atol, rtol) in ops {
            let mut enc = g.encoder();
            let y = elementwise::unary(&mut enc, &xt, op).unwrap();
            let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
            assert_eq!(y.shape(), *shape);
            assert_close(
                &format!("{op:?} {shape:?}"),
                &got,
                &cpu::unary(&x, op),
                atol,
                rtol,
            );
        }
    }
}

#[test]
fn gelu_is_the_erf_form() {
    // Independent of the shared erf: values of PyTorch's exact GELU (computed with mpmath).
    let x = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0];
    let want = [
        -0.0040496627,
        -0.15865526,
        -0.15426877,
        0.0,
        0.34573123,
        0.8413447,
        2.9959502,
    ];
    let g = gpu();
    let t = g.upload(&[7], &x).unwrap();
    let mut enc = g.encoder();
    let y = elementwise::unary(&mut enc, &t, Unary::Gelu).unwrap();
    let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
    assert_close("gelu values", &got, &want, 1e-6, 1e-6);
    assert_close("cpu gelu", &cpu::unary(&x, Unary::Gelu), &want, 1e-7, 1e-6);
}

#[test]
fn binary_ops_broadcast() {
    let g = gpu();
    let cases: [(&[usize], &[usize]); 4] = [
        (&[5], &[5]),
        (&[7, 13], &[13]),
        (&[2, 3, 33], &[3, 33]),
        (&[3, 1001], &[1001]),
    ];
    for (i, (sa, sb)) in cases.iter().enumerate() {
        let a = rand_vec(10 + i as u64, sa.iter().product(), -2.0, 2.0);
        let b = rand_vec(20 + i as u64, sb.iter().product(), -2.0, 2.0);
        let (at, bt) = (g.upload(sa, &a).unwrap(), g.upload(sb, &b).unwrap());
        for op in [Binary::Add, Binary::Mul] {
            let mut enc = g.encoder();
            let y = elementwise::binary(&mut enc, &at, &bt, op).unwrap();
            let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
            assert_close(
                &format!("{op:?} {sa:?}+{sb:?}"),
                &got,
                &cpu::binary(&a, &b, op),
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn binary_rejects_non_broadcastable() {
    let g = gpu();
    let a = g.zeros(&[4, 6]).unwrap();
    let b = g.zeros(&[4]).unwrap();
    let mut enc = g.encoder();
    let err = elementwise::binary(&mut enc, &a, &b, Binary::Add)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("add") && err.contains("[4]") && err.contains("[4, 6]"),
        "{err}"
    );
}

const UNARY_OPS: [Unary; 5] = [
    Unary::Relu,
    Unary::Gelu,
    Unary::Sigmoid,
    Unary::Exp,
    Unary::Affine {
        alpha: -0.37,
        beta: 2.5,
    },
];

fn backward_tol(f: Unary) -> (f32, f32) {
    match f {
        Unary::Relu => (0.0, 0.0),
        Unary::Gelu => (3e-6, 2e-6),
        Unary::Sigmoid => (1e-7, 1e-6),
        Unary::Exp => (0.0, 3e-7),
        Unary::Affine { .. } => (0.0, 1.2e-7),
    }
}

/// The tensor the backward of `f` reads, uploaded from `x`.
fn saved_for(f: Unary, x: &[f32], shape: &[usize]) -> Option<sparsett::Tensor> {
    let g = gpu();
    match f.saved() {
        Saved::Input => Some(g.upload(shape, x).unwrap()),
        Saved::Output => Some(g.upload(shape, &cpu::unary(x, f)).unwrap()),
        Saved::Nothing => None,
    }
}

#[test]
fn unary_backward_matches_reference() {
    let g = gpu();
    for (si, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = rand_vec(40 + si as u64, n, -8.0, 8.0);
        let dy = rand_vec(50 + si as u64, n, -1.0, 1.0);
        let dyt = g.upload(shape, &dy).unwrap();
        for f in UNARY_OPS {
            let saved = saved_for(f, &x, shape);
            let mut enc = g.encoder();
            let dx = elementwise::unary_backward(&mut enc, f, saved.as_ref(), &dyt, None).unwrap();
            let got = enc.submit_read(&[&dx]).unwrap().pop().unwrap();
            assert_eq!(dx.shape(), *shape);
            let want = to32(&cpu::unary_backward(&to64(&x), &to64(&dy), f));
            let (atol, rtol) = backward_tol(f);
            assert_close(&format!("d{f:?} {shape:?}"), &got, &want, atol, rtol);
        }
    }
}

#[test]
fn relu_backward_accepts_its_output() {
    let g = gpu();
    let x = [-2.0f32, -0.0, 0.0, 1e-30, 3.0];
    let dy = [1.0f32, 2.0, 3.0, 4.0, 5.0];
    let y = cpu::unary(&x, Unary::Relu);
    let mut enc = g.encoder();
    let dyt = g.upload(&[5], &dy).unwrap();
    let from_x = g.upload(&[5], &x).unwrap();
    let from_y = g.upload(&[5], &y).unwrap();
    let a = elementwise::unary_backward(&mut enc, Unary::Relu, Some(&from_x), &dyt, None).unwrap();
    let b = elementwise::unary_backward(&mut enc, Unary::Relu, Some(&from_y), &dyt, None).unwrap();
    let got = enc.submit_read(&[&a, &b]).unwrap();
    // Zero passes nothing (PyTorch's threshold_backward); a tiny positive input passes dy.
    assert_eq!(got[0], [0.0, 0.0, 0.0, 4.0, 5.0]);
    assert_eq!(got[1], got[0]);
}

#[test]
fn unary_backward_reference_is_the_derivative() {
    // Inputs away from ReLU's kink (|x| ≥ 0.1 ≫ h).
    let x: Vec<f64> = to64(&rand_vec(60, 24, 0.1, 3.0))
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 2 == 0 { -v } else { v })
        .collect();
    let dy = to64(&rand_vec(61, 24, -1.0, 1.0));
    for f in UNARY_OPS {
        let fwd = |x: &[f64]| x.iter().map(|&v| cpu::unary_f64(v, f)).collect::<Vec<_>>();
        let fd = numeric_grad(fwd, &x, &dy);
        assert_fd(
            &format!("{f:?}"),
            &cpu::unary_backward(&x, &dy, f),
            &fd,
            1e-7,
        );
    }
}

const BINARY_CASES: [(&[usize], &[usize]); 6] = [
    (&[1], &[1]),
    (&[5], &[5]),
    (&[7, 13], &[13]),
    (&[2, 3, 33], &[3, 33]),
    (&[3, 1001], &[1001]),
    (&[1000, 3], &[3]),
];

#[test]
fn binary_backward_matches_reference() {
    let g = gpu();
    for (i, (sa, sb)) in BINARY_CASES.iter().enumerate() {
        let (na, nb) = (sa.iter().product::<usize>(), sb.iter().product::<usize>());
        let a = rand_vec(70 + i as u64, na, -1.0, 1.0);
        let b = rand_vec(80 + i as u64, nb, -1.0, 1.0);
        let dy = rand_vec(90 + i as u64, na, -1.0, 1.0);
        let (at, bt, dyt) = (
            g.upload(sa, &a).unwrap(),
            g.upload(sb, &b).unwrap(),
            g.upload(sa, &dy).unwrap(),
        );
        for op in [Binary::Add, Binary::Mul] {
            let mut enc = g.encoder();
            let (da, db) =
                elementwise::binary_backward(&mut enc, op, &at, &bt, &dyt, None, None).unwrap();
            let got = enc.submit_read(&[&da, &db]).unwrap();
            assert_eq!(da.shape(), *sa);
            assert_eq!(db.shape(), *sb);
            let (wa, wb) = cpu::binary_backward(&to64(&a), &to64(&b), &to64(&dy), op);
            let what = format!("{op:?} {sa:?} by {sb:?}");
            assert_close(&format!("{what} da"), &got[0], &to32(&wa), 0.0, 1.2e-7);
            assert_close(
                &format!("{what} db"),
                &got[1],
                &to32(&wb),
                1e-6 * (na / nb) as f32,
                0.0,
            );
        }
    }
}

#[test]
fn binary_backward_reference_is_the_derivative() {
    let a = to64(&rand_vec(100, 12, -2.0, 2.0));
    let b = to64(&rand_vec(101, 4, -2.0, 2.0));
    let dy = to64(&rand_vec(102, 12, -1.0, 1.0));
    for op in [Binary::Add, Binary::Mul] {
        let (da, db) = cpu::binary_backward(&a, &b, &dy, op);
        let fa = numeric_grad(|x| cpu::binary_f64(x, &b, op), &a, &dy);
        let fb = numeric_grad(|x| cpu::binary_f64(&a, x, op), &b, &dy);
        assert_fd(&format!("{op:?} da"), &da, &fa, 1e-7);
        assert_fd(
            &format!("{op:?} db (summed over 3 repeats)"),
            &db,
            &fb,
            1e-7,
        );
    }
}

#[test]
fn backward_twice_adds_up() {
    // Gradients added into existing tensors: initial contents plus twice the gradient.
    let g = gpu();
    let (sa, sb) = ([6usize, 5usize], [5usize]);
    let a = rand_vec(110, 30, -1.0, 1.0);
    let b = rand_vec(111, 5, -1.0, 1.0);
    let dy = rand_vec(112, 30, -1.0, 1.0);
    let init_a = rand_vec(113, 30, -1.0, 1.0);
    let init_b = rand_vec(114, 5, -1.0, 1.0);
    let (at, bt, dyt) = (
        g.upload(&sa, &a).unwrap(),
        g.upload(&sb, &b).unwrap(),
        g.upload(&sa, &dy).unwrap(),
    );
    let twice = |init: &[f32], grad: &[f64]| -> Vec<f32> {
        init.iter()
            .zip(grad)
            .map(|(&i, &d)| (i as f64 + 2.0 * d) as f32)
            .collect()
    };
    for op in [Binary::Add, Binary::Mul] {
        let ga = g.upload(&sa, &init_a).unwrap();
        let gb = g.upload(&sb, &init_b).unwrap();
        let mut enc = g.encoder();
        for _ in 0..2 {
            let (ra, rb) =
                elementwise::binary_backward(&mut enc, op, &at, &bt, &dyt, Some(&ga), Some(&gb))
                    .unwrap();
            assert_eq!((ra.buffer(), rb.buffer()), (ga.buffer(), gb.buffer()));
        }
        let got = enc.submit_read(&[&ga, &gb]).unwrap();
        let (wa, wb) = cpu::binary_backward(&to64(&a), &to64(&b), &to64(&dy), op);
        assert_close(
            &format!("{op:?} da twice"),
            &got[0],
            &twice(&init_a, &wa),
            1e-6,
            0.0,
        );
        assert_close(
            &format!("{op:?} db twice"),
            &got[1],
            &twice(&init_b, &wb),
            1e-5,
            0.0,
        );
    }
    for f in UNARY_OPS {
        let x = rand_vec(115, 30, -3.0, 3.0);
        let saved = saved_for(f, &x, &sa);
        let acc = g.upload(&sa, &init_a).unwrap();
        let mut enc = g.encoder();
        for _ in 0..2 {
            elementwise::unary_backward(&mut enc, f, saved.as_ref(), &dyt, Some(&acc)).unwrap();
        }
        let got = enc.submit_read(&[&acc]).unwrap().pop().unwrap();
        let want = twice(&init_a, &cpu::unary_backward(&to64(&x), &to64(&dy), f));
        assert_close(&format!("d{f:?} twice"), &got, &want, 1e-5, 1e-5);
    }
    // accumulate: dst += src.
    let dst = g.upload(&sb, &init_b).unwrap();
    let mut enc = g.encoder();
    elementwise::accumulate(&mut enc, &dst, &bt).unwrap();
    let got = enc.submit_read(&[&dst]).unwrap().pop().unwrap();
    let want: Vec<f32> = init_b.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(got, want);
}

#[test]
fn backward_rejects_bad_inputs() {
    let g = gpu();
    let a = g.zeros(&[4, 6]).unwrap();
    let b = g.zeros(&[6]).unwrap();
    let mut enc = g.encoder();
    let e = elementwise::unary_backward(&mut enc, Unary::Gelu, None, &a, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Gelu") && e.contains("Input"), "{e}");
    let e = elementwise::unary_backward(&mut enc, Unary::Relu, Some(&b), &a, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[6]") && e.contains("[4, 6]"), "{e}");
    let e = elementwise::binary_backward(&mut enc, Binary::Add, &a, &b, &b, None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dy") && e.contains("[6]"), "{e}");
    let e = elementwise::unary_backward(&mut enc, Unary::Relu, Some(&a), &a, Some(&a))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shares"), "{e}");
}
