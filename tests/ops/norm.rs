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
//!
//! Backward (dy ∈ [−1, 1), against the f64 reference, itself checked by central differences):
//! dx = r·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·w. It inherits the forward's errors in r and
//! x̂ (≤ ~5e-6 absolute in x̂, see above) and adds two C-term means of terms ≤ 1.5·√3 in size
//! (≤ ~√(C/4)·u·2.6 each, a few 1e-6 at C = 2048); each enters dx with a factor ≤ r·|x̂| ≤ √3.
//! Allowed: 3e-5 absolute plus 2e-5 relative. dweight = Σ_rows dy·x̂ and dbias = Σ_rows dy are
//! R-term sums (R rows): the matmul/reduce argument allows 1e-6·R for the summation, plus, for
//! dweight, the x̂ error of every term (≤ 5e-6 each, growing like √R when signs vary): 1e-5 + 2e-6·R.
//! Realised (--nocapture): dx ≤ 4.3e-7, except ≤ 5e-6 with C = 3, where a row's σ can be small
//! and r large; dweight ≤ 9.3e-6 and dbias ≤ 1.4e-5 over 3001 rows.

use sparsett::ops::norm::{self, cpu, LayerNormInto};
use sparsett::Variant;

use crate::common::{assert_close, gpu, rand_vec};
use crate::reduce::{assert_fd, numeric_grad, to32, to64};

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

fn close64(what: &str, got: &[f32], want: &[f64], atol: f32, rtol: f32) {
    assert_close(what, got, &to32(want), atol, rtol);
}

/// Runs LayerNorm backward (with the residual input `y` when given) on every variant and
/// compares all three gradients with the reference.
fn check_ln_backward(shape: &[usize], offset: f32, seed: u64, with_y: bool) {
    let g = gpu();
    let c = *shape.last().unwrap();
    let n: usize = shape.iter().product();
    let rows = n / c;
    let x: Vec<f32> = rand_vec(seed, n, -2.0, 2.0)
        .iter()
        .map(|v| v + offset)
        .collect();
    let y = rand_vec(seed + 3, n, -1.0, 1.0);
    let w = rand_vec(seed + 1, c, 0.5, 1.5);
    let dy = rand_vec(seed + 2, n, -1.0, 1.0);
    let eps = 1e-5;
    // The sum x + y is rounded to f32 first, as the GPU and PyTorch do.
    let s: Vec<f32> = if with_y {
        x.iter().zip(&y).map(|(a, b)| a + b).collect()
    } else {
        x.clone()
    };
    let (wdx, wdw, wdb) = cpu::layer_norm_backward(&to64(&s), c, &to64(&w), &to64(&dy), eps as f64);
    let (xt, yt, wt, dyt) = (
        g.upload(shape, &x).unwrap(),
        g.upload(shape, &y).unwrap(),
        g.upload(&[c], &w).unwrap(),
        g.upload(shape, &dy).unwrap(),
    );
    for v in Variant::ALL {
        let mut enc = g.encoder();
        let none = LayerNormInto::default();
        let gr = if with_y {
            norm::add_layer_norm_backward_with(&mut enc, &xt, &yt, &wt, &dyt, eps, &none, v)
        } else {
            norm::layer_norm_backward_with(&mut enc, &xt, &wt, &dyt, eps, &none, v)
        }
        .unwrap();
        let got = enc.submit_read(&[&gr.dx, &gr.dweight, &gr.dbias]).unwrap();
        assert_eq!(gr.dx.shape(), shape);
        assert_eq!(gr.dweight.shape(), [c]);
        assert_eq!(gr.dbias.shape(), [c]);
        let what = format!("ln backward {v:?} {shape:?} offset {offset} residual {with_y}");
        let err = |a: &[f32], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(&p, &q)| (p as f64 - q).abs())
                .fold(0.0, f64::max)
        };
        println!(
            "{what}: max errors dx {:e} dw {:e} db {:e}",
            err(&got[0], &wdx),
            err(&got[1], &wdw),
            err(&got[2], &wdb)
        );
        close64(&format!("{what} dx"), &got[0], &wdx, 3e-5, 2e-5);
        let sum_tol = 1e-5 + 2e-6 * rows as f32;
        close64(&format!("{what} dweight"), &got[1], &wdw, sum_tol, 0.0);
        close64(
            &format!("{what} dbias"),
            &got[2],
            &wdb,
            1e-6 * rows as f32,
            0.0,
        );
    }
}

#[test]
fn layer_norm_backward_matches_reference() {
    for (i, &(shape, offset)) in CASES.iter().enumerate() {
        check_ln_backward(shape, offset, 1000 + 10 * i as u64, false);
    }
    // Many rows: the parameter sums split into chunks (two passes); one column.
    check_ln_backward(&[3001, 3], 0.0, 1200, false);
    check_ln_backward(&[300, 1], 0.0, 1210, false);
}

#[test]
fn add_layer_norm_backward_matches_reference() {
    for (i, &(shape, offset)) in CASES.iter().enumerate().step_by(2) {
        check_ln_backward(shape, offset, 1500 + 10 * i as u64, true);
    }
}

#[test]
fn layer_norm_backward_reference_is_the_derivative() {
    let (r, c) = (3, 7);
    let eps = 1e-5;
    let x = to64(&rand_vec(1600, r * c, -2.0, 2.0));
    let w = to64(&rand_vec(1601, c, 0.5, 1.5));
    let b = to64(&rand_vec(1602, c, -1.0, 1.0));
    let dy = to64(&rand_vec(1603, r * c, -1.0, 1.0));
    let (dx, dw, db) = cpu::layer_norm_backward(&x, c, &w, &dy, eps);
    let fx = numeric_grad(|x| cpu::layer_norm_f64(x, c, &w, &b, eps), &x, &dy);
    let fw = numeric_grad(|w| cpu::layer_norm_f64(&x, c, w, &b, eps), &w, &dy);
    let fb = numeric_grad(|b| cpu::layer_norm_f64(&x, c, &w, b, eps), &b, &dy);
    assert_fd("layer_norm dx", &dx, &fx, 1e-7);
    assert_fd("layer_norm dweight", &dw, &fw, 1e-7);
    assert_fd("layer_norm dbias", &db, &fb, 1e-7);
}

#[test]
fn layer_norm_backward_twice_adds_up() {
    let g = gpu();
    // (rows, C): one chunk (parameter sums written directly) and several (summed by reduce).
    for (rows, c) in [(5usize, 12usize), (2000, 5)] {
        let n = rows * c;
        let x = rand_vec(1700, n, -2.0, 2.0);
        let w = rand_vec(1701, c, 0.5, 1.5);
        let dy = rand_vec(1702, n, -1.0, 1.0);
        let init_x = rand_vec(1703, n, -1.0, 1.0);
        let init_w = rand_vec(1704, c, -1.0, 1.0);
        let init_b = rand_vec(1705, c, -1.0, 1.0);
        let (wdx, wdw, wdb) = cpu::layer_norm_backward(&to64(&x), c, &to64(&w), &to64(&dy), 1e-5);
        let twice = |init: &[f32], d: &[f64]| -> Vec<f64> {
            init.iter()
                .zip(d)
                .map(|(&a, &b)| a as f64 + 2.0 * b)
                .collect()
        };
        let (xt, wt, dyt) = (
            g.upload(&[rows, c], &x).unwrap(),
            g.upload(&[c], &w).unwrap(),
            g.upload(&[rows, c], &dy).unwrap(),
        );
        for v in Variant::ALL {
            let (ax, aw, ab) = (
                g.upload(&[rows, c], &init_x).unwrap(),
                g.upload(&[c], &init_w).unwrap(),
                g.upload(&[c], &init_b).unwrap(),
            );
            let into = LayerNormInto {
                dx: Some(&ax),
                dweight: Some(&aw),
                dbias: Some(&ab),
            };
            let mut enc = g.encoder();
            for _ in 0..2 {
                norm::layer_norm_backward_with(&mut enc, &xt, &wt, &dyt, 1e-5, &into, v).unwrap();
            }
            // Only dweight accumulates: dbias comes back fresh (the mixed case sums partials).
            let mixed = LayerNormInto {
                dweight: Some(&aw),
                ..Default::default()
            };
            let fresh =
                norm::layer_norm_backward_with(&mut enc, &xt, &wt, &dyt, 1e-5, &mixed, v).unwrap();
            let got = enc.submit_read(&[&ax, &aw, &ab, &fresh.dbias]).unwrap();
            let what = format!("twice {rows}x{c} {v:?}");
            close64(
                &format!("{what} dx"),
                &got[0],
                &twice(&init_x, &wdx),
                1e-4,
                1e-5,
            );
            let three_w: Vec<f64> = init_w
                .iter()
                .zip(&wdw)
                .map(|(&a, &b)| a as f64 + 3.0 * b)
                .collect();
            close64(
                &format!("{what} dweight"),
                &got[1],
                &three_w,
                1e-5 * rows as f32,
                0.0,
            );
            close64(
                &format!("{what} dbias"),
                &got[2],
                &twice(&init_b, &wdb),
                1e-5 * rows as f32,
                0.0,
            );
            close64(
                &format!("{what} fresh dbias"),
                &got[3],
                &wdb,
                1e-6 * rows as f32,
                0.0,
            );
        }
    }
}

#[test]
fn layer_norm_backward_bad_inputs_are_errors() {
    let g = gpu();
    let x = g.zeros(&[4, 8]).unwrap();
    let w8 = g.zeros(&[8]).unwrap();
    let w4 = g.zeros(&[4]).unwrap();
    let dy = g.zeros(&[8, 4]).unwrap();
    let none = LayerNormInto::default();
    let mut enc = g.encoder();
    let e = norm::layer_norm_backward(&mut enc, &x, &w4, &x, 1e-5, &none)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer_norm_backward") && e.contains("[4]"),
        "{e}"
    );
    let e = norm::layer_norm_backward(&mut enc, &x, &w8, &dy, 1e-5, &none)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dy") && e.contains("[8, 4]"), "{e}");
    let bad = LayerNormInto {
        dweight: Some(&w4),
        ..Default::default()
    };
    let e = norm::layer_norm_backward(&mut enc, &x, &w8, &x, 1e-5, &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dweight"), "{e}");
    let alias = LayerNormInto {
        dx: Some(&x),
        ..Default::default()
    };
    let e = norm::layer_norm_backward(&mut enc, &x, &w8, &x, 1e-5, &alias)
        .unwrap_err()
        .to_string();
    assert!(e.contains("into.dx"), "{e}");
}

/// LayerNorm over the channels of an NCHW map written as tokens equals the CPU transpose then
/// the CPU LayerNorm (same tolerance as above), both variants, odd sizes and batch 2.
#[test]
fn layer_norm_nchw_matches_transpose_then_norm() {
    use sparsett::ops::norm::layer_norm_nchw_with;
    let g = gpu();
    for (n, c, h, w) in [
        (1usize, 96usize, 5usize, 7usize),
        (2, 13, 3, 4),
        (1, 4, 1, 1),
    ] {
        let x = rand_vec((n * c * h * w) as u64, n * c * h * w, -2.0, 2.0);
        let gam = rand_vec(5, c, 0.5, 1.5);
        let bet = rand_vec(6, c, -1.0, 1.0);
        let mut tokens = vec![0.0f32; x.len()];
        for b in 0..n {
            for ch in 0..c {
                for p in 0..h * w {
                    tokens[(b * h * w + p) * c + ch] = x[(b * c + ch) * h * w + p];
                }
            }
        }
        let want = cpu::layer_norm(&tokens, c, &gam, &bet, 1e-5);
        for v in [Variant::Register, Variant::Tiled] {
            let mut enc = g.encoder();
            let y = layer_norm_nchw_with(
                &mut enc,
                &g.upload(&[n, c, h, w], &x).unwrap(),
                &g.upload(&[c], &gam).unwrap(),
                &g.upload(&[c], &bet).unwrap(),
                1e-5,
                v,
            )
            .unwrap();
            assert_eq!(y.shape(), [n, h * w, c]);
            let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
            assert_close(
                &format!("nchw {n}x{c}x{h}x{w} {v:?}"),
                &got,
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

/// NCHW → tokens transpose (`permute(x, [0, 2, 3, 1])` viewed as `[N, H·W, C]`), and back.
fn nchw_to_tokens<T: Copy + Default>(x: &[T], [n, c, h, w]: [usize; 4], back: bool) -> Vec<T> {
    let mut out = vec![T::default(); x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                let (t, m) = ((b * h * w + p) * c + ch, (b * c + ch) * h * w + p);
                if back {
                    out[m] = x[t];
                } else {
                    out[t] = x[m];
                }
            }
        }
    }
    out
}

/// The f64 reference of the NCHW LayerNorm backward: LN backward on the tokens, dx back to NCHW.
fn ln_nchw_bw64(
    x: &[f64],
    dims: [usize; 4],
    w: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (dx, dw, db) =
        cpu::layer_norm_backward(&nchw_to_tokens(x, dims, false), dims[1], w, dy, 1e-5);
    (nchw_to_tokens(&dx, dims, true), dw, db)
}

#[test]
fn layer_norm_nchw_backward_reference_is_the_derivative() {
    let dims = [2, 3, 2, 3];
    let n: usize = dims.iter().product();
    let x = to64(&rand_vec(1700, n, -2.0, 2.0));
    let w = to64(&rand_vec(1701, 3, 0.5, 1.5));
    let b = to64(&rand_vec(1702, 3, -1.0, 1.0));
    let dy = to64(&rand_vec(1703, n, -1.0, 1.0));
    let f = |x: &[f64], w: &[f64], b: &[f64]| {
        cpu::layer_norm_f64(&nchw_to_tokens(x, dims, false), 3, w, b, 1e-5)
    };
    let (dx, dw, db) = ln_nchw_bw64(&x, dims, &w, &dy);
    assert_fd(
        "nchw dx",
        &dx,
        &numeric_grad(|v| f(v, &w, &b), &x, &dy),
        1e-7,
    );
    assert_fd(
        "nchw dweight",
        &dw,
        &numeric_grad(|v| f(&x, v, &b), &w, &dy),
        1e-7,
    );
    assert_fd(
        "nchw dbias",
        &db,
        &numeric_grad(|v| f(&x, &w, v), &b, &dy),
        1e-7,
    );
}

/// The NCHW LayerNorm backward against the f64 reference, with the backward tolerances above
/// (its LayerNorm is `layer_norm_backward`; the transposes move values exactly), fresh and added
/// into given tensors (one f32 addition per element on top of the fresh result: 1e-6).
#[test]
fn layer_norm_nchw_backward_matches_reference() {
    let g = gpu();
    for (i, dims) in [[1, 96, 5, 7], [2, 13, 3, 4], [1, 4, 1, 1], [2, 5, 9, 11]]
        .into_iter()
        .enumerate()
    {
        let [n, c, h, w] = dims;
        let len = n * c * h * w;
        let seed = 1800 + 10 * i as u64;
        let x: Vec<f32> = rand_vec(seed, len, -2.0, 2.0)
            .iter()
            .map(|v| v + 3.0)
            .collect();
        let wt = rand_vec(seed + 1, c, 0.5, 1.5);
        let dy = rand_vec(seed + 2, len, -1.0, 1.0);
        let want = ln_nchw_bw64(&to64(&x), dims, &to64(&wt), &to64(&dy));
        let base = [
            rand_vec(seed + 3, len, -1.0, 1.0),
            rand_vec(seed + 4, c, -1.0, 1.0),
            rand_vec(seed + 5, c, -1.0, 1.0),
        ];
        let (xg, wg, dyg) = (
            g.upload(&dims, &x).unwrap(),
            g.upload(&[c], &wt).unwrap(),
            g.upload(&[n, h * w, c], &dy).unwrap(),
        );
        let acc = [
            g.upload(&dims, &base[0]).unwrap(),
            g.upload(&[c], &base[1]).unwrap(),
            g.upload(&[c], &base[2]).unwrap(),
        ];
        let mut enc = g.encoder();
        let gr = norm::layer_norm_nchw_backward(
            &mut enc,
            &xg,
            &wg,
            &dyg,
            1e-5,
            &LayerNormInto::default(),
        )
        .unwrap();
        let into = LayerNormInto {
            dx: Some(&acc[0]),
            dweight: Some(&acc[1]),
            dbias: Some(&acc[2]),
        };
        norm::layer_norm_nchw_backward(&mut enc, &xg, &wg, &dyg, 1e-5, &into).unwrap();
        assert_eq!(gr.dx.shape(), dims);
        let got = enc
            .submit_read(&[&gr.dx, &gr.dweight, &gr.dbias, &acc[0], &acc[1], &acc[2]])
            .unwrap();
        let what = format!("nchw bw {dims:?}");
        let rows = (n * h * w) as f32;
        close64(&format!("{what} dx"), &got[0], &want.0, 3e-5, 2e-5);
        close64(
            &format!("{what} dweight"),
            &got[1],
            &want.1,
            1e-5 + 2e-6 * rows,
            0.0,
        );
        close64(&format!("{what} dbias"), &got[2], &want.2, 1e-6 * rows, 0.0);
        for k in 0..3 {
            let added: Vec<f32> = base[k].iter().zip(&got[k]).map(|(a, b)| a + b).collect();
            assert_close(&format!("{what} into {k}"), &got[3 + k], &added, 1e-6, 1e-6);
        }
    }
    let mut enc = g.encoder();
    let e = norm::layer_norm_nchw_backward(
        &mut enc,
        &g.zeros(&[1, 4, 2, 3]).unwrap(),
        &g.zeros(&[4]).unwrap(),
        &g.zeros(&[1, 4, 6]).unwrap(),
        1e-5,
        &LayerNormInto::default(),
    )
    .expect_err("dy in NCHW order")
    .to_string();
    assert!(
        e.contains("layer_norm_nchw_backward") && e.contains("[1, 6, 4]"),
        "{e}"
    );
}
