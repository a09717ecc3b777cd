//! Axis sums against `ops::reduce::cpu` (f64), and the central-difference helper the backward
//! tests of every family share.
//!
//! Tolerance of a GPU sum of `count` terms, each at most 1 in size (inputs in [−1, 1)): any f32
//! summation order is off by at most (count − 1)·u·Σ|terms| ≤ count²·u (u = 2⁻²⁴), and in
//! practice, rounding errors of the partial sums behave like a random walk, about u·count/4.
//! As for matmul's K-term dot products we allow atol = 1e-6·count: some 70× the typical error,
//! while a term missed or counted twice leaves an error ~0.5. Squares and products are one more
//! rounding per term (≤ u each), inside that bound.

use sparsett::ops::reduce::{self, cpu, Axes, Dest, Reduce};

use crate::common::{assert_close, gpu, rand_vec};

/// Central differences in f64 of `L(x) = Σᵢ dyᵢ·f(x)ᵢ`: the gradient that a backward pass
/// gives for the upstream gradient `dy`. Error: h²/6·|L'''| (truncation) plus ~1e-16·|L|/h
/// (rounding), about 1e-10 each for h = 1e-5 and the O(1)–O(100) values used here; callers
/// allow 1e-7 (absolute and relative), which a wrong term in a derivative exceeds by orders of
/// magnitude.
pub fn numeric_grad(f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64], dy: &[f64]) -> Vec<f64> {
    const H: f64 = 1e-5;
    let loss = |x: &[f64]| -> f64 { f(x).iter().zip(dy).map(|(a, b)| a * b).sum() };
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = xp[i];
            xp[i] = x0 + H;
            let up = loss(&xp);
            xp[i] = x0 - H;
            let down = loss(&xp);
            xp[i] = x0;
            (up - down) / (2.0 * H)
        })
        .collect()
}

/// Asserts an analytic gradient equals the central differences within `tol`·(1 + |want|).
#[track_caller]
pub fn assert_fd(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: analytic {g}, finite differences {w}"
        );
    }
}

pub fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

pub fn to32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

fn atol(count: usize) -> f32 {
    1e-6 * count.max(1) as f32
}

/// Shapes as (outer, mid, inner): single elements, one row, one column, odd sizes, sums long
/// enough to be split into chunks (two passes) with few or many outputs.
const CASES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (1, 7, 1),
    (7, 1, 1),
    (5, 3, 11),
    (13, 33, 1),
    (1, 2, 5000),
    (3000, 1, 3),
    (9001, 2, 1),
    (257, 65, 3),
];

#[test]
fn sums_match_reference() {
    let g = gpu();
    for (ci, &(outer, mid, inner)) in CASES.iter().enumerate() {
        let axes = Axes { outer, mid, inner };
        let n = outer * mid * inner;
        let x = rand_vec(700 + ci as u64, n, -1.0, 1.0);
        let y = rand_vec(800 + ci as u64, n, -1.0, 1.0);
        let xt = g.upload(&[n], &x).unwrap();
        let yt = g.upload(&[n], &y).unwrap();
        for kind in [Reduce::Sum, Reduce::SumSquares, Reduce::SumProduct] {
            let yo = (kind == Reduce::SumProduct).then_some(&yt);
            let mut enc = g.encoder();
            let r = reduce::reduce(&mut enc, kind, &xt, yo, axes, None).unwrap();
            let got = enc.submit_read(&[&r]).unwrap().pop().unwrap();
            assert_eq!(r.shape(), [mid]);
            let want = cpu::reduce(
                kind,
                &to64(&x),
                (kind == Reduce::SumProduct).then_some(to64(&y)).as_deref(),
                axes,
            );
            assert_close(
                &format!("{kind:?} {axes:?}"),
                &got,
                &to32(&want),
                atol(outer * inner),
                0.0,
            );
        }
    }
}

#[test]
fn named_axes_and_hand_values() {
    let g = gpu();
    // [2, 3] = [[1, 2, 3], [4, 5, 6]]: columns 5 7 9, rows 6 15.
    let t = g.upload(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    // NCHW [2, 2, 1, 2]: channel sums over N, H, W.
    let nchw = g
        .upload(&[2, 2, 1, 2], &[1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0])
        .unwrap();
    let mut enc = g.encoder();
    let cols = reduce::sum_columns(&mut enc, &t, None).unwrap();
    let rows = reduce::sum_rows(&mut enc, &t, None).unwrap();
    let ch = reduce::reduce(
        &mut enc,
        Reduce::Sum,
        &nchw,
        None,
        Axes::keep(&[2, 2, 1, 2], 1..2),
        None,
    )
    .unwrap();
    let got = enc.submit_read(&[&cols, &rows, &ch]).unwrap();
    assert_eq!(cols.shape(), [3]);
    assert_eq!(rows.shape(), [2]);
    assert_eq!(got[0], [5.0, 7.0, 9.0]);
    assert_eq!(got[1], [6.0, 15.0]);
    assert_eq!(got[2], [10.0, 100.0]);
}

#[test]
fn sums_accumulate_into_existing_tensors() {
    let g = gpu();
    // One pass (short sums) and two passes (split into chunks): adding into `into` twice gives
    // the initial contents plus twice the sum.
    for (outer, mid) in [(4usize, 5usize), (20000, 3)] {
        let n = outer * mid;
        let x = rand_vec(900 + outer as u64, n, -1.0, 1.0);
        let init = rand_vec(901, mid, -1.0, 1.0);
        let xt = g.upload(&[outer, mid], &x).unwrap();
        let acc = g.upload(&[mid], &init).unwrap();
        let mut enc = g.encoder();
        let r1 = reduce::sum_columns(&mut enc, &xt, Some(&acc)).unwrap();
        let r2 = reduce::sum_columns(&mut enc, &xt, Some(&acc)).unwrap();
        let got = enc.submit_read(&[&acc]).unwrap().pop().unwrap();
        // The returned tensor is the accumulator itself.
        assert_eq!(r1.buffer(), acc.buffer());
        assert_eq!(r2.shape(), [mid]);
        let s = cpu::reduce(Reduce::Sum, &to64(&x), None, Axes::columns(&[outer, mid]));
        let want: Vec<f32> = init
            .iter()
            .zip(&s)
            .map(|(&a, &b)| (a as f64 + 2.0 * b) as f32)
            .collect();
        assert_close(
            &format!("accumulated {outer}x{mid}"),
            &got,
            &want,
            2.0 * atol(outer),
            0.0,
        );
    }
}

#[test]
fn slots_of_a_shared_output() {
    // Sums of squares of three tensors into slots 0..3 of one buffer (gradient clipping).
    let g = gpu();
    let xs = [
        rand_vec(1, 10, -1.0, 1.0),
        rand_vec(2, 1, -1.0, 1.0),
        rand_vec(3, 4099, -1.0, 1.0),
    ];
    let out = g.upload(&[3], &[7.0, 7.0, 7.0]).unwrap();
    let ts: Vec<_> = xs
        .iter()
        .map(|x| g.upload(&[x.len()], x).unwrap())
        .collect();
    let mut enc = g.encoder();
    for (i, t) in ts.iter().enumerate() {
        reduce::reduce_to(
            &mut enc,
            Reduce::SumSquares,
            t,
            None,
            Axes::all(t.numel()),
            Dest {
                out: &out,
                offset: i,
                accumulate: false,
            },
        )
        .unwrap();
    }
    let got = enc.submit_read(&[&out]).unwrap().pop().unwrap();
    let want: Vec<f32> = xs
        .iter()
        .map(|x| x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() as f32)
        .collect();
    assert_close("slots", &got, &want, atol(4099), 0.0);
}

#[test]
fn empty_sums_are_zero() {
    let g = gpu();
    let x = g.zeros(&[0, 4]).unwrap();
    let acc = g.upload(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let mut enc = g.encoder();
    let r = reduce::sum_columns(&mut enc, &x, None).unwrap();
    reduce::sum_columns(&mut enc, &x, Some(&acc)).unwrap();
    let got = enc.submit_read(&[&r, &acc]).unwrap();
    assert_eq!(got[0], [0.0; 4]);
    assert_eq!(got[1], [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn bad_inputs_are_errors() {
    let g = gpu();
    let x = g.zeros(&[4, 6]).unwrap();
    let mut enc = g.encoder();
    let bad_axes = Axes {
        outer: 5,
        mid: 6,
        inner: 1,
    };
    let e = reduce::reduce(&mut enc, Reduce::Sum, &x, None, bad_axes, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("reduce") && e.contains("[4, 6]"), "{e}");
    let e = reduce::reduce(&mut enc, Reduce::SumProduct, &x, None, Axes::all(24), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs y"), "{e}");
    let small = g.zeros(&[5]).unwrap();
    let e = reduce::sum_columns(&mut enc, &x, Some(&small))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[5]") && e.contains("6"), "{e}");
    let e = reduce::reduce_to(
        &mut enc,
        Reduce::Sum,
        &x,
        None,
        Axes::all(24),
        Dest {
            out: &x,
            offset: 0,
            accumulate: false,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("shares"), "{e}");
}
