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

use sparsett::ops::softmax::{self, cpu};
use sparsett::Variant;

use crate::common::{assert_close, gpu, rand_vec};

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
