//! Row softmax against `ops::softmax::cpu` (f64 inside), both variants.
//!
//! Tolerance: |got − want| ≤ 1e-9 + 1e-5·|want|. WGSL bounds f32 exp by 3 + 2|t| ulp; with
//! t = x − max ≥ −16 on the [−8, 8) inputs that is ≤ 35 ulp = 2.1e-6 relative per term. The sum of
//! positive terms adds at most that much relative error plus its own accumulation drift
//! (~√(n/4)·u ≈ 2e-6 at n = 4097 with the register variant's four accumulators, log₂(256)·u for
//! the tiled tree), and the division 2.5 ulp: ≤ ~5e-6 relative in total, so 1e-5 keeps 2× headroom
//! over the specification bound (lavapipe realises ≤ 2e-6). The 1e-9 absolute term only matters for
//! outputs that underflow to subnormals, which a GPU may flush to zero.
//! The shifted-input case checks the max subtraction: exp(x) of x ≈ 1000 overflows to inf without it.

use sparsett::ops::softmax::{self, cpu};
use sparsett::Variant;

use crate::common::{assert_close, gpu, rand_vec};

const ATOL: f32 = 1e-9;
const RTOL: f32 = 1e-5;

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
    // A row whose maximum is its last element, and one whose maximum is its first.
    let mut y: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
    y.extend((0..37).map(|i| -(i as f32) * 0.5));
    check(&[2, 37], &y);
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
