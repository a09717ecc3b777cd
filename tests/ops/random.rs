//! Dropout and drop path (`ops::random`) against `ops::random::cpu`.
//!
//! Tolerances:
//! - Masks and values: exact. The mask is an integer hash compared to an integer threshold, and a
//!   kept value is one f32 product `x·scale` (plus one f32 add when accumulating), rounded the
//!   same way on both sides: outputs are compared bit for bit.
//! - Keep rates: the mask bits are meant to be independent Bernoulli(q = 1 − p) draws, so the
//!   count over n elements has σ = √(n·p·q), and the count of adjacent kept pairs (overlapping,
//!   so with variance n·(q²(1 − q²) + 2q³(1 − q))) checks that neighbours are uncorrelated. Both
//!   must fall within 6σ of their mean (a 2e-9 two-sided chance for a sound generator; the seeds
//!   are fixed, so the test is deterministic).
//! - Backward against f64 central differences of the f64 forward with a fixed mask: the forward
//!   is linear, so differences are exact up to rounding (≈ ε·|y|/h ≈ 1e-13 for h = 1e-3), and
//!   the reference's f32 factor 1/(1 − p) is within 2⁻²⁴ relative: atol 1e-9, rtol 1e-6.

use sparsett::ops::random::{self, cpu};
use sparsett::{Encoder, Result, Tensor};

use crate::common::{gpu, rand_vec};

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

type Fwd = fn(&mut Encoder, &Tensor, f32, u64) -> Result<Tensor>;
type Bwd = fn(&mut Encoder, &Tensor, f32, u64, Option<&Tensor>) -> Result<Tensor>;

/// Runs forward, backward and accumulating backward on the GPU: `(y, dx, pre + dx)`.
fn run3(
    fwd: Fwd,
    bwd: Bwd,
    shape: &[usize],
    x: &[f32],
    pre: &[f32],
    p: f32,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let g = gpu();
    let xt = g.upload(shape, x).unwrap();
    let acc = g.upload(shape, pre).unwrap();
    let mut enc = g.encoder();
    let y = fwd(&mut enc, &xt, p, seed).unwrap();
    let dx = bwd(&mut enc, &xt, p, seed, None).unwrap();
    let dx2 = bwd(&mut enc, &xt, p, seed, Some(&acc)).unwrap();
    assert_eq!(y.shape(), shape);
    let mut r = enc.submit_read(&[&y, &dx, &dx2]).unwrap();
    let c = r.pop().unwrap();
    let b = r.pop().unwrap();
    (r.pop().unwrap(), b, c)
}

const SEEDS: [u64; 3] = [0, 12345, 0xdead_beef_0000_0007];

#[test]
fn dropout_matches_reference_bit_for_bit() {
    let shapes: [&[usize]; 4] = [&[1], &[7], &[3, 257], &[2, 3, 1001]];
    for shape in shapes {
        let n: usize = shape.iter().product();
        let x = rand_vec(n as u64, n, -2.0, 2.0);
        let pre = rand_vec(n as u64 + 1, n, -1.0, 1.0);
        for p in [0.1, 0.5, 0.9] {
            for seed in SEEDS {
                let (y, dx, acc) = run3(
                    random::dropout,
                    random::dropout_backward,
                    shape,
                    &x,
                    &pre,
                    p,
                    seed,
                );
                let want = cpu::dropout(&x, p, seed);
                let what = format!("dropout {shape:?} p {p} seed {seed}");
                assert_eq!(bits(&y), bits(&want), "{what}: forward");
                assert_eq!(
                    bits(&dx),
                    bits(&cpu::dropout_backward(&x, p, seed)),
                    "{what}: backward"
                );
                let want_acc: Vec<f32> = pre.iter().zip(&dx).map(|(a, b)| a + b).collect();
                assert_eq!(bits(&acc), bits(&want_acc), "{what}: accumulated backward");
                // The forward's dropped elements are the mask's zeros (x is never 0 here).
                let m = cpu::dropout_mask(n, p, seed);
                assert!(y.iter().zip(&m).all(|(v, &k)| (*v != 0.0) == k), "{what}");
            }
        }
    }
}

#[test]
fn drop_path_matches_reference_bit_for_bit() {
    let shapes: [&[usize]; 4] = [&[1, 4], &[5, 3, 7], &[33, 10], &[64]];
    for shape in shapes {
        let n: usize = shape.iter().product();
        let batch = shape[0];
        let x = rand_vec(n as u64 + 7, n, 0.5, 2.0);
        let pre = rand_vec(n as u64 + 8, n, -1.0, 1.0);
        for p in [0.2, 0.5] {
            for seed in SEEDS {
                let (y, dx, acc) = run3(
                    random::drop_path,
                    random::drop_path_backward,
                    shape,
                    &x,
                    &pre,
                    p,
                    seed,
                );
                let what = format!("drop_path {shape:?} p {p} seed {seed}");
                assert_eq!(
                    bits(&y),
                    bits(&cpu::drop_path(&x, batch, p, seed)),
                    "{what}: forward"
                );
                assert_eq!(
                    bits(&dx),
                    bits(&cpu::drop_path_backward(&x, batch, p, seed)),
                    "{what}: backward"
                );
                let want_acc: Vec<f32> = pre.iter().zip(&dx).map(|(a, b)| a + b).collect();
                assert_eq!(bits(&acc), bits(&want_acc), "{what}: accumulated backward");
                // Whole samples are kept or dropped.
                for s in y.chunks(n / batch) {
                    assert!(
                        s.iter().all(|&v| v != 0.0) || s.iter().all(|&v| v == 0.0),
                        "{what}: a sample was partly dropped"
                    );
                }
            }
        }
    }
}

#[test]
fn p_zero_is_exact_identity() {
    let g = gpu();
    let x = vec![
        1.5,
        -0.0,
        0.0,
        f32::NAN,
        f32::from_bits(0x7fa0_0001), // a signalling NaN payload
        f32::INFINITY,
        -3.25e-40, // subnormal
        7.0,
    ];
    let xt = g.upload(&[2, 4], &x).unwrap();
    let mut enc = g.encoder();
    let outs = [
        random::dropout(&mut enc, &xt, 0.0, 3).unwrap(),
        random::dropout_backward(&mut enc, &xt, 0.0, 3, None).unwrap(),
        random::drop_path(&mut enc, &xt, 0.0, 3).unwrap(),
        random::drop_path_backward(&mut enc, &xt, 0.0, 3, None).unwrap(),
    ];
    let got = enc.submit_read(&outs.iter().collect::<Vec<_>>()).unwrap();
    for (i, y) in got.iter().enumerate() {
        assert_eq!(bits(y), bits(&x), "output {i}");
    }
    assert!(cpu::dropout_mask(1000, 0.0, 9).iter().all(|&k| k));
}

/// GPU dropout masks of `n` elements (x = 1, so kept elements are nonzero).
fn gpu_mask(n: usize, p: f32, seed: u64, path: bool) -> Vec<bool> {
    let g = gpu();
    let x = g.upload(&[n, 1], &vec![1.0; n]).unwrap();
    let mut enc = g.encoder();
    let y = if path {
        random::drop_path(&mut enc, &x, p, seed)
    } else {
        random::dropout(&mut enc, &x, p, seed)
    }
    .unwrap();
    let y = enc.submit_read(&[&y]).unwrap().pop().unwrap();
    y.iter().map(|&v| v != 0.0).collect()
}

#[track_caller]
fn assert_within(what: &str, got: f64, mean: f64, var: f64) {
    let sigma = var.sqrt();
    assert!(
        (got - mean).abs() <= 6.0 * sigma,
        "{what}: {got} vs expected {mean} ± 6·{sigma}"
    );
}

#[test]
fn keep_rates_match_p() {
    let n = 1usize << 20;
    for path in [false, true] {
        for (p, seed) in [(0.1f32, 1u64), (0.5, 2), (0.9, 3), (0.2, u64::MAX)] {
            let m = gpu_mask(n, p, seed, path);
            let q = 1.0 - p as f64;
            let nf = n as f64;
            let what = format!(
                "{} p {p} seed {seed}",
                if path { "drop_path" } else { "dropout" }
            );
            let kept = m.iter().filter(|&&k| k).count() as f64;
            assert_within(&format!("{what} kept"), kept, nf * q, nf * q * (1.0 - q));
            let pairs = m.windows(2).filter(|w| w[0] && w[1]).count() as f64;
            let np = nf - 1.0;
            assert_within(
                &format!("{what} adjacent kept pairs"),
                pairs,
                np * q * q,
                np * (q * q * (1.0 - q * q) + 2.0 * q.powi(3) * (1.0 - q)),
            );
        }
    }
}

#[test]
fn seeds_reproduce_and_differ() {
    let n = 1usize << 16;
    let p = 0.5f32;
    for path in [false, true] {
        let a = gpu_mask(n, p, 42, path);
        assert_eq!(a, gpu_mask(n, p, 42, path), "same seed, same mask");
        // Seeds differing in the low word, in the high word only, and the other stream.
        let others = [
            gpu_mask(n, p, 43, path),
            gpu_mask(n, p, 42 + (1 << 32), path),
            gpu_mask(n, p, 42, !path),
        ];
        for (i, b) in others.iter().enumerate() {
            // Independent masks agree on a fraction q² + p² = 1/2 of the elements.
            let agree = a.iter().zip(b).filter(|(x, y)| x == y).count() as f64;
            let nf = n as f64;
            assert_within(
                &format!("path {path} other mask {i}: agreement"),
                agree,
                nf * 0.5,
                nf * 0.25,
            );
        }
    }
}

#[test]
fn backward_reference_matches_finite_differences() {
    let n = 40;
    for (p, seed, inner) in [(0.3f32, 5u64, 1usize), (0.6, 6, 8)] {
        let x: Vec<f64> = rand_vec(seed, n, -2.0, 2.0)
            .iter()
            .map(|&v| v as f64)
            .collect();
        let dy = rand_vec(seed + 1, n, -1.0, 1.0);
        let (mask, got) = if inner == 1 {
            (
                cpu::dropout_mask(n, p, seed),
                cpu::dropout_backward(&dy, p, seed),
            )
        } else {
            (
                cpu::drop_path_mask(n / inner, p, seed),
                cpu::drop_path_backward(&dy, n / inner, p, seed),
            )
        };
        assert!(mask.iter().any(|&k| k) && mask.iter().any(|&k| !k));
        let loss = |x: &[f64]| -> f64 {
            cpu::masked_scale_f64(x, &mask, inner, p as f64)
                .iter()
                .zip(&dy)
                .map(|(y, &d)| y * d as f64)
                .sum()
        };
        let h = 1e-3;
        for e in 0..n {
            let mut xp = x.clone();
            xp[e] += h;
            let up = loss(&xp);
            xp[e] -= 2.0 * h;
            let fd = (up - loss(&xp)) / (2.0 * h);
            let g = got[e] as f64;
            assert!(
                (fd - g).abs() <= 1e-9 + 1e-6 * fd.abs(),
                "p {p} inner {inner} element {e}: reference {g} vs finite difference {fd}"
            );
        }
    }
}

#[test]
fn rejects_bad_inputs() {
    let g = gpu();
    let mut enc = g.encoder();
    let x = g.zeros(&[3, 4]).unwrap();
    for p in [1.0, -0.1, f32::NAN, 2.0] {
        let e = random::dropout(&mut enc, &x, p, 0).unwrap_err().to_string();
        assert!(e.contains("dropout") && e.contains("[0, 1)"), "{e}");
        let e = random::drop_path_backward(&mut enc, &x, p, 0, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("drop_path_backward") && e.contains("[0, 1)"),
            "{e}"
        );
    }
    let ints = g.upload_u32(&[3, 4], &[0; 12]).unwrap();
    let e = random::drop_path(&mut enc, &ints, 0.5, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("drop_path") && e.contains("f32"), "{e}");
    let wrong = g.zeros(&[4, 3]).unwrap();
    let e = random::dropout_backward(&mut enc, &x, 0.5, 0, Some(&wrong))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dropout_backward") && e.contains("[3, 4]"),
        "{e}"
    );
    let e = random::dropout_backward(&mut enc, &x, 0.5, 0, Some(&x))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shares"), "{e}");
}
