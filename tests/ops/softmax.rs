//! Row softmax against `ops::softmax::cpu` (f64 inside), both variants.
//!
//! Tolerance: |got − want| ≤ 1e-9 + 2e-5·|want|. WGSL bounds f32 exp by 3 + 2|t| ulp (one ulp
//! ≤ 1.2e-7 relative). Inputs lie in a 16-wide range; the register kernel's reference m sits
//! within 8 of the row max, so t = x − m ∈ [−24, 8]: ≤ 51 ulp ≈ 6e-6 relative per term, once in
//! the sum and once in the numerator; raising m rescales the partial sum by exp(Δ) with Σ|Δ| ≤ 16
//! (≤ ~4e-6 in all); the sum of positive terms drifts ≤ ~√(n/4)·6e-8 ≈ 2e-6 at n = 4097 (four
//! accumulators; the tiled tree does better); the division adds 2.5 ulp. The specification's
//! worst case is thus ≈ 1.8e-5; lavapipe realises ≤ 3e-6 (print with --nocapture). The 1e-9
//! absolute term only matters for outputs that underflow to subnormals, which a GPU may flush to
//! zero. A missing max subtraction overflows at the x ≈ 1000 case; a wrong sum or index is off by
//! far more than 2e-5.
//!
//! Backward: dx = y ⊙ (dy − Σ dy⊙y) from the f32 output y (the same values on both sides) and
//! dy ∈ [−1, 1). Any order of the n-term dot product is off by at most n·u·Σ|y·dy| ≤ n·u
//! (Σy = 1), the subtraction and the product round once each: |error| ≤ yᵢ·u·(n + 4). The
//! tests allow yᵢ·6e-8·(n + 8) + 1e-12 per element, a bound no summation order can break,
//! while a missing or wrong dot product is off by yᵢ·|Σ dy⊙y| ≫ that.

use sparsett::ops::softmax::{self, cpu};
use sparsett::Variant;

use crate::common::{assert_close, gpu, rand_vec};
use crate::reduce::{assert_fd, numeric_grad, to32, to64};

const ATOL: f32 = 1e-9;
const RTOL: f32 = 2e-5;

fn check(shape: &[usize], x: &[f32]) {
    let g = gpu();
    let n = *shape.last().unwrap();
    let want = cpu::softmax(x, n);
    let xt = g.upload(shape, x).unwrap();
    for v in Variant::ALL {
        let mut enc = g.encoder();
        let y = softmax::softmax_with(&mut enc, &xt, v).unwrap();
        let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
        assert_eq!(y.shape(), shape);
        let rel = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-30))
            .fold(0.0, f32::max);
        println!("softmax {v:?} {shape:?}: max relative error {rel:e}");
        assert_close(&format!("softmax {v:?} {shape:?}"), &got, &want, ATOL, RTOL);
    }
}

#[test]
fn softmax_matches_reference() {
    // Size-1 rows and dims, odd lengths, rank 3, the neck's 361, a row past 4096.
    let shapes: [&[usize]; 9] = [
        &[1],
        &[5, 1],
        &[3, 7],
        &[2, 3, 33],
        &[1, 256],
        &[6, 361],
        &[2, 1000],
        &[1, 4096],
        &[2, 4097],
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let x = rand_vec(300 + i as u64, shape.iter().product(), -8.0, 8.0);
        check(shape, &x);
    }
}

#[test]
fn softmax_subtracts_the_max() {
    let x: Vec<f32> = rand_vec(42, 3 * 50, -8.0, 8.0)
        .iter()
        .map(|v| v + 1000.0)
        .collect();
    check(&[3, 50], &x);
    // Rows whose maximum comes last (the register kernel raises its reference m a few times on
    // the way) and first.
    let mut y: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
    y.extend((0..37).map(|i| -(i as f32) * 0.5));
    check(&[2, 37], &y);
    let ramp: Vec<f32> = (0..4001).map(|i| -8.0 + i as f32 * 0.004).collect();
    let mut z = ramp.clone();
    z.extend(ramp.iter().rev());
    check(&[2, 4001], &z);
}

#[test]
fn many_rows_use_a_2d_grid() {
    let x = rand_vec(43, 70_000 * 2, -4.0, 4.0);
    check(&[70_000, 2], &x);
}

#[test]
fn bad_inputs_are_errors() {
    let g = gpu();
    let u = g.upload_u32(&[2, 2], &[0; 4]).unwrap();
    let mut enc = g.encoder();
    let e = softmax::softmax(&mut enc, &u).unwrap_err().to_string();
    assert!(e.contains("softmax") && e.contains("f32"), "{e}");
    let s = g.zeros(&[]).unwrap();
    let e = softmax::softmax(&mut enc, &s).unwrap_err().to_string();
    assert!(e.contains("softmax") && e.contains("[]"), "{e}");
    let z = g.zeros(&[3, 0]).unwrap();
    let y = softmax::softmax(&mut enc, &z).unwrap();
    assert_eq!(y.shape(), [3, 0]);
    assert_eq!(enc.dispatch_count(), 0);
}

/// Checks dx against the f64 reference with the per-element bound yᵢ·6e-8·(n + 8) + 1e-12.
#[track_caller]
fn check_backward(what: &str, got: &[f32], want: &[f64], y: &[f32], n: usize) {
    for (i, ((&g, &w), &yi)) in got.iter().zip(want).zip(y).enumerate() {
        let tol = yi as f64 * 6e-8 * (n + 8) as f64 + 1e-12;
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}: element {i} is {g}, expected {w} (tolerance {tol:e})"
        );
    }
}

#[test]
fn softmax_backward_matches_reference() {
    let g = gpu();
    let shapes: [&[usize]; 8] = [
        &[1],
        &[5, 1],
        &[3, 7],
        &[2, 3, 33],
        &[6, 361],
        &[2, 1000],
        &[2, 4097],
        &[70_000, 2],
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let n = *shape.last().unwrap();
        let numel: usize = shape.iter().product();
        let x = rand_vec(400 + i as u64, numel, -8.0, 8.0);
        let y = to32(&cpu::softmax_f64(&to64(&x), n));
        let dy = rand_vec(500 + i as u64, numel, -1.0, 1.0);
        let want = cpu::softmax_backward(&to64(&y), &to64(&dy), n);
        let (yt, dyt) = (g.upload(shape, &y).unwrap(), g.upload(shape, &dy).unwrap());
        for v in Variant::ALL {
            let mut enc = g.encoder();
            let dx = softmax::softmax_backward_with(&mut enc, &yt, &dyt, None, v).unwrap();
            let got = enc.submit_read(&[&dx]).unwrap().pop().unwrap();
            assert_eq!(dx.shape(), *shape);
            check_backward(
                &format!("softmax_backward {v:?} {shape:?}"),
                &got,
                &want,
                &y,
                n,
            );
        }
    }
}

#[test]
fn softmax_backward_reference_is_the_derivative() {
    let n = 5;
    let x = to64(&rand_vec(600, 3 * n, -3.0, 3.0));
    let dy = to64(&rand_vec(601, 3 * n, -1.0, 1.0));
    let fd = numeric_grad(|x| cpu::softmax_f64(x, n), &x, &dy);
    let dx = cpu::softmax_backward(&cpu::softmax_f64(&x, n), &dy, n);
    assert_fd("softmax", &dx, &fd, 1e-7);
}

#[test]
fn softmax_backward_twice_adds_up() {
    let g = gpu();
    let (r, n) = (4, 37);
    let x = rand_vec(610, r * n, -4.0, 4.0);
    let y = to32(&cpu::softmax_f64(&to64(&x), n));
    let dy = rand_vec(611, r * n, -1.0, 1.0);
    let init = rand_vec(612, r * n, -1.0, 1.0);
    let d = cpu::softmax_backward(&to64(&y), &to64(&dy), n);
    let want: Vec<f32> = init
        .iter()
        .zip(&d)
        .map(|(&a, &b)| (a as f64 + 2.0 * b) as f32)
        .collect();
    let (yt, dyt) = (
        g.upload(&[r, n], &y).unwrap(),
        g.upload(&[r, n], &dy).unwrap(),
    );
    for v in Variant::ALL {
        let acc = g.upload(&[r, n], &init).unwrap();
        let mut enc = g.encoder();
        for _ in 0..2 {
            softmax::softmax_backward_with(&mut enc, &yt, &dyt, Some(&acc), v).unwrap();
        }
        let got = enc.submit_read(&[&acc]).unwrap().pop().unwrap();
        // Two gradients of |dx| ≤ 2 added to values ≤ 1: a few ulp of 5.
        assert_close(&format!("twice {v:?}"), &got, &want, 2e-6, 0.0);
    }
}

#[test]
fn softmax_backward_bad_inputs_are_errors() {
    let g = gpu();
    let y = g.zeros(&[2, 3]).unwrap();
    let dy = g.zeros(&[3, 2]).unwrap();
    let mut enc = g.encoder();
    let e = softmax::softmax_backward(&mut enc, &y, &dy, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("softmax_backward") && e.contains("[3, 2]"),
        "{e}"
    );
    let e = softmax::softmax_backward(&mut enc, &y, &y, Some(&y))
        .unwrap_err()
        .to_string();
    assert!(e.contains("into"), "{e}");
}
