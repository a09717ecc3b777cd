//! LayerNorm kernels against `ops::norm::cpu` (statistics in f64), both variants.
//!
//! Tolerance: |got − want| ≤ 1e-5 + 1e-5·|want| (u = 2⁻²⁴ ≈ 6e-8 below). Inputs are
//! offset + U(−2, 2) (σ ≈ 1.15, offsets up to ±1000), w ∈ [0.5, 1.5), b ∈ [−1, 1), so the normalised
//! value |z| = |x − μ|·r ≤ √3 and the output is at most ~3.6 in size. The kernels work on x − x₀
//! (x₀ the row's first element; exact for nearby values, else ≤ u·4), so the offset drops out:
//! - the mean of the shifted row (≲ 4 in size) carries ≲ √(C/4)·u·4 ≈ 5e-6 of accumulated
//!   rounding at C = 2048 (4-element chunks merged à la Chan, or a tree), i.e. ≤ 5e-6·r in z;
//! - the variance, a sum of C positive terms, is off by ≲ √(C/4)·u ≈ 1.4e-6 relative, which the
//!   square root halves: ≤ 1e-6·|z|;
//! - the final ((x − x₀) − μ)·r·w + b takes five roundings: ≤ 3e-7·(|z·w| + |b|).
//!
//! Realised worst case: 1.4e-6 (print with --nocapture), so the tolerance keeps 7× headroom while
//! an unbiased variance (factor √(C/(C−1)) ≥ 2.4e-4 relative at C = 2048), eps outside the root,
//! a naive E[x²] − E[x]² at offset 1000 (σ² lost to cancellation) or any indexing slip fails.

use sparsett::ops::norm::{self, cpu};
use sparsett::Variant;

use crate::common::{assert_close, gpu, rand_vec};

const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-5;

/// (shape, offset added to x): size-1 and odd rows, C not a multiple of 4 or of any thread count,
/// rank 3 with batch > 1, the model's sizes, and the longest row the model uses.
const CASES: [(&[usize], f32); 11] = [
    (&[1, 1], 0.0),
    (&[3, 5], 0.0),
    (&[2, 3, 96], 0.0),
    (&[7, 257], 50.0),
    (&[65, 96], 0.0),
    (&[19, 256], -20.0),
    (&[2, 5, 384], 0.0),
    (&[3, 768], 10.0),
    (&[4, 2048], 50.0),
    (&[5, 300], 1000.0),
    (&[2, 2048], -1000.0),
];

fn max_error(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn layer_norm_matches_reference() {
    let g = gpu();
    for (i, &(shape, offset)) in CASES.iter().enumerate() {
        let c = *shape.last().unwrap();
        let n: usize = shape.iter().product();
        let seed = 100 + 10 * i as u64;
        let x: Vec<f32> = rand_vec(seed, n, -2.0, 2.0)
            .iter()
            .map(|v| v + offset)
            .collect();
        let w = rand_vec(seed + 1, c, 0.5, 1.5);
        let b = rand_vec(seed + 2, c, -1.0, 1.0);
        let want = cpu::layer_norm(&x, c, &w, &b, 1e-5);
        let xt = g.upload(shape, &x).unwrap();
        let wt = g.upload(&[c], &w).unwrap();
        let bt = g.upload(&[c], &b).unwrap();
        for v in Variant::ALL {
            let mut enc = g.encoder();
            let y = norm::layer_norm_with(&mut enc, &xt, &wt, &bt, 1e-5, v).unwrap();
            let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
            assert_eq!(y.shape(), shape);
            println!(
                "layer_norm {v:?} {shape:?}: max error {:e}",
                max_error(&got, &want)
            );
            assert_close(
                &format!("layer_norm {v:?} {shape:?}"),
                &got,
                &want,
                ATOL,
                RTOL,
            );
        }
    }
}

#[test]
fn add_layer_norm_matches_reference() {
    let g = gpu();
    for (i, &(shape, offset)) in CASES.iter().enumerate() {
        let c = *shape.last().unwrap();
        let n: usize = shape.iter().product();
        let seed = 500 + 10 * i as u64;
        let x: Vec<f32> = rand_vec(seed, n, -2.0, 2.0)
            .iter()
            .map(|v| v + offset)
            .collect();
        let y = rand_vec(seed + 3, n, -1.0, 1.0);
        let w = rand_vec(seed + 1, c, 0.5, 1.5);
        let b = rand_vec(seed + 2, c, -1.0, 1.0);
        let want = cpu::add_layer_norm(&x, &y, c, &w, &b, 1e-6);
        let xt = g.upload(shape, &x).unwrap();
        let yt = g.upload(shape, &y).unwrap();
        let wt = g.upload(&[c], &w).unwrap();
        let bt = g.upload(&[c], &b).unwrap();
        for v in Variant::ALL {
            let mut enc = g.encoder();
            let o = norm::add_layer_norm_with(&mut enc, &xt, &yt, &wt, &bt, 1e-6, v).unwrap();
            let got = enc.submit_read(&[&o]).unwrap().pop().unwrap();
            println!(
                "add_layer_norm {v:?} {shape:?}: max error {:e}",
                max_error(&got, &want)
            );
            assert_close(
                &format!("add_layer_norm {v:?} {shape:?}"),
                &got,
                &want,
                ATOL,
                RTOL,
            );
        }
    }
}

#[test]
fn eps_dominates_constant_rows() {
    // A constant row has zero variance: the output is exactly bias (x − μ = 0), and a row with
    // variance comparable to eps shows whether eps sits inside the square root.
    let g = gpu();
    let c = 40;
    let mut x = vec![3.25f32; c];
    x.extend((0..c).map(|i| if i % 2 == 0 { 1e-3 } else { -1e-3 }));
    let w = vec![1.0f32; c];
    let b = rand_vec(7, c, -1.0, 1.0);
    let eps = 1e-6;
    let want = cpu::layer_norm(&x, c, &w, &b, eps);
    // var = 1e-6 = eps: z = ±1e-3 / sqrt(2e-6) = ±0.7071.
    assert!((want[c] - b[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-5);
    let (xt, wt, bt) = (
        g.upload(&[2, c], &x).unwrap(),
        g.upload(&[c], &w).unwrap(),
        g.upload(&[c], &b).unwrap(),
    );
    for v in Variant::ALL {
        let mut enc = g.encoder();
        let y = norm::layer_norm_with(&mut enc, &xt, &wt, &bt, eps, v).unwrap();
        let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
        assert_eq!(
            &got[..c],
            &b[..],
            "{v:?}: constant row must give exactly the bias"
        );
        assert_close(&format!("eps row {v:?}"), &got, &want, ATOL, RTOL);
    }
}

#[test]
fn many_rows_use_a_2d_grid() {
    // 70000 rows exceed 65535 workgroups for the tiled variant (one workgroup per row).
    let g = gpu();
    let (r, c) = (70_000, 3);
    let x = rand_vec(9, r * c, -1.0, 1.0);
    let w = rand_vec(10, c, 0.5, 1.5);
    let b = rand_vec(11, c, -1.0, 1.0);
    let want = cpu::layer_norm(&x, c, &w, &b, 1e-5);
    let (xt, wt, bt) = (
        g.upload(&[r, c], &x).unwrap(),
        g.upload(&[c], &w).unwrap(),
        g.upload(&[c], &b).unwrap(),
    );
    for v in Variant::ALL {
        let mut enc = g.encoder();
        let y = norm::layer_norm_with(&mut enc, &xt, &wt, &bt, 1e-5, v).unwrap();
        let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
        assert_close(&format!("70000 rows {v:?}"), &got, &want, ATOL, RTOL);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let g = gpu();
    let x = g.zeros(&[4, 8]).unwrap();
    let w8 = g.zeros(&[8]).unwrap();
    let w4 = g.zeros(&[4]).unwrap();
    let y = g.zeros(&[8, 4]).unwrap();
    let mut enc = g.encoder();
    let e = norm::layer_norm(&mut enc, &x, &w4, &w8, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer_norm") && e.contains("[4]") && e.contains("[4, 8]"),
        "{e}"
    );
    let e = norm::layer_norm(&mut enc, &x, &w8, &w4, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer_norm") && e.contains("bias"), "{e}");
    let e = norm::add_layer_norm(&mut enc, &x, &y, &w8, &w8, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("add_layer_norm") && e.contains("[8, 4]"), "{e}");
    let e = norm::layer_norm(&mut enc, &x, &w8, &w8, -1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer_norm") && e.contains("eps"), "{e}");
    let u = g.upload_u32(&[4, 8], &[0; 32]).unwrap();
    let e = norm::layer_norm(&mut enc, &u, &w8, &w8, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer_norm") && e.contains("f32"), "{e}");
}

#[test]
fn empty_input_gives_empty_output() {
    let g = gpu();
    let x = g.zeros(&[0, 8]).unwrap();
    let w = g.zeros(&[8]).unwrap();
    let mut enc = g.encoder();
    let y = norm::layer_norm(&mut enc, &x, &w, &w, 1e-5).unwrap();
    assert_eq!(y.shape(), [0, 8]);
    assert_eq!(enc.dispatch_count(), 0);
}
