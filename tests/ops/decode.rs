//! Box decoding against `ops::decode::cpu`. Tolerance: each output is one or two exp/sigmoid
//! evaluations (WGSL: 3 + 2|x| ulp) of O(1) arguments times the stride; 1e-5 relative plus 1e-4
//! absolute (in pixels, for boxes of up to a few hundred px) covers that with margin.

use sparsett::ops::decode::{self, cpu, DecodeParams};

use crate::common::{assert_close, gpu, rand_vec};

#[test]
fn decode_matches_reference() {
    let g = gpu();
    let p = DecodeParams {
        si_fc: 0.31,
        bi_fc: 0.9,
        si_conv: 0.27,
        bi_conv: 1.1,
        stride: 16.0,
        offset: 0.0,
    };
    for (batch, side) in [(1usize, 19usize), (3, 5), (2, 1)] {
        let n = batch * 5 * side * side;
        let fc = rand_vec(batch as u64, n, -3.0, 3.0);
        let cv = rand_vec(100 + side as u64, n, -3.0, 3.0);
        let shape = [batch, 5, side, side];
        let (ft, ct) = (
            g.upload(&shape, &fc).unwrap(),
            g.upload(&shape, &cv).unwrap(),
        );
        let mut enc = g.encoder();
        let d = decode::decode(&mut enc, &ft, &ct, &p).unwrap();
        let got = enc
            .submit_read(&[&d.score, &d.bbox_conv, &d.bbox_fc])
            .unwrap();
        let (s, bc, bf) = cpu::decode(&fc, &cv, batch, side, &p);
        assert_close("score", &got[0], &s, 1e-6, 1e-5);
        assert_close("bbox_conv", &got[1], &bc, 1e-4, 1e-5);
        assert_close("bbox_fc", &got[2], &bf, 1e-4, 1e-5);
    }
}

#[test]
fn decode_rejects_bad_shapes() {
    let g = gpu();
    let a = g.zeros(&[1, 4, 19, 19]).unwrap();
    let mut enc = g.encoder();
    let err = decode::decode(
        &mut enc,
        &a,
        &a,
        &DecodeParams {
            si_fc: 1.0,
            bi_fc: 0.0,
            si_conv: 1.0,
            bi_conv: 0.0,
            stride: 16.0,
            offset: 0.0,
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("decode") && err.contains("[1, 4, 19, 19]"),
        "{err}"
    );
}

/// Backward tolerances: per-element gradients are one exp per element (3 + 2|x| ulp), 1e-4
/// relative; the scalar gradients are f32 tree sums of ≤ 1444 terms of mixed sign, so they are
/// compared within 1e-5 of the sum of the terms' magnitudes.
#[test]
fn decode_backward_matches_reference() {
    let g = gpu();
    let p = DecodeParams {
        si_fc: 0.31,
        bi_fc: 0.9,
        si_conv: 0.27,
        bi_conv: 1.1,
        stride: 16.0,
        offset: 0.0,
    };
    for (batch, side) in [(1usize, 19usize), (3, 5), (2, 1)] {
        let n = batch * 5 * side * side;
        let nb = batch * side * side * 4;
        let fc = rand_vec(200 + batch as u64, n, -3.0, 3.0);
        let cv = rand_vec(300 + side as u64, n, -3.0, 3.0);
        let dbf = rand_vec(400, nb, -1.0, 1.0);
        let dbc = rand_vec(401, nb, -1.0, 1.0);
        let shape = [batch, 5, side, side];
        let up = |s: &[usize], v: &[f32]| g.upload(s, v).unwrap();
        let (ft, ct) = (up(&shape, &fc), up(&shape, &cv));
        let (dft, dct) = (
            up(&[batch, side * side, 4], &dbf),
            up(&[batch, side * side, 4], &dbc),
        );
        let prior = rand_vec(402, n, -1.0, 1.0);
        let into_fc = up(&shape, &prior);
        let into_s = up(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let mut enc = g.encoder();
        let fresh = decode::decode_backward(
            &mut enc,
            &ft,
            &ct,
            &dft,
            &dct,
            &p,
            &decode::DecodeInto::default(),
        )
        .unwrap();
        let into = decode::DecodeInto {
            dfc: Some(&into_fc),
            dconv: None,
            dscalars: Some(&into_s),
        };
        decode::decode_backward(&mut enc, &ft, &ct, &dft, &dct, &p, &into).unwrap();
        let got = enc
            .submit_read(&[&fresh.dfc, &fresh.dconv, &fresh.dscalars, &into_fc, &into_s])
            .unwrap();
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let st = p.stride as f64;
        let (wf, sf, bf) = cpu::boxes_backward(
            &f64s(&fc),
            &f64s(&dbf),
            batch,
            side,
            p.si_fc as f64,
            p.bi_fc as f64,
            st,
        );
        let (wc, sc, bc) = cpu::boxes_backward(
            &f64s(&cv),
            &f64s(&dbc),
            batch,
            side,
            p.si_conv as f64,
            p.bi_conv as f64,
            st,
        );
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        assert_close("dfc", &got[0], &f32s(&wf), 1e-4, 1e-4);
        assert_close("dconv", &got[1], &f32s(&wc), 1e-4, 1e-4);
        // Magnitude of the summed terms: |de·e| (and × |reg| for s) summed.
        let mag = |x: &[f32], s: f32, b: f32, d: &[f32], times_x: bool| -> f32 {
            let cells = side * side;
            let mut m = 0.0f64;
            for bi in 0..batch {
                for c in 0..cells {
                    for k in 0..4 {
                        let xv = x[(bi * 5 + 1 + k) * cells + c] as f64;
                        let e = ((s as f64) * xv + b as f64).exp() * st;
                        let t = (d[(bi * cells + c) * 4 + k] as f64 * e).abs();
                        m += if times_x { t * xv.abs() } else { t };
                    }
                }
            }
            m as f32
        };
        let want_s = [sf as f32, bf as f32, sc as f32, bc as f32];
        let tol = [
            mag(&fc, p.si_fc, p.bi_fc, &dbf, true),
            mag(&fc, p.si_fc, p.bi_fc, &dbf, false),
            mag(&cv, p.si_conv, p.bi_conv, &dbc, true),
            mag(&cv, p.si_conv, p.bi_conv, &dbc, false),
        ];
        for k in 0..4 {
            assert_close(
                "dscalars",
                &got[2][k..k + 1],
                &want_s[k..k + 1],
                1e-5 * tol[k],
                0.0,
            );
            let acc = [want_s[k] + (k + 1) as f32];
            assert_close(
                "dscalars into",
                &got[4][k..k + 1],
                &acc,
                1e-5 * tol[k],
                1e-6,
            );
        }
        let acc: Vec<f32> = prior.iter().zip(&wf).map(|(a, d)| a + *d as f32).collect();
        assert_close("dfc into", &got[3], &acc, 1e-4, 1e-4);
    }
}

#[test]
fn decode_cpu_backward_matches_finite_differences() {
    let (batch, side) = (2usize, 3usize);
    let n = batch * 5 * side * side;
    let x: Vec<f64> = rand_vec(500, n, -2.0, 2.0)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let dbox: Vec<f64> = rand_vec(501, batch * side * side * 4, -1.0, 1.0)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let (s, b, st, off) = (0.3, 0.8, 16.0, 4.0);
    // Scalar objective L = Σ dbox · boxes, whose gradient is the backward of dbox.
    let obj = |x: &[f64], s: f64, b: f64| -> f64 {
        cpu::boxes(x, batch, side, s, b, st, off)
            .iter()
            .zip(&dbox)
            .map(|(a, d)| a * d)
            .sum()
    };
    let (dx, ds, db) = cpu::boxes_backward(&x, &dbox, batch, side, s, b, st);
    let h = 1e-6;
    let mut worst = 0f64;
    let scale = dx
        .iter()
        .fold(ds.abs().max(db.abs()), |m, v| m.max(v.abs()));
    for i in 0..n {
        let (mut a, mut c) = (x.clone(), x.clone());
        a[i] += h;
        c[i] -= h;
        let num = (obj(&a, s, b) - obj(&c, s, b)) / (2.0 * h);
        worst = worst.max((num - dx[i]).abs());
    }
    let num_s = (obj(&x, s + h, b) - obj(&x, s - h, b)) / (2.0 * h);
    let num_b = (obj(&x, s, b + h) - obj(&x, s, b - h)) / (2.0 * h);
    worst = worst.max((num_s - ds).abs()).max((num_b - db).abs());
    assert!(worst <= 1e-6 * scale, "worst {worst} vs scale {scale}");
}

#[test]
fn decode_backward_rejects_bad_shapes() {
    let g = gpu();
    let a = g.zeros(&[1, 5, 4, 4]).unwrap();
    let bad = g.zeros(&[1, 16, 3]).unwrap();
    let p = DecodeParams {
        si_fc: 1.0,
        bi_fc: 0.0,
        si_conv: 1.0,
        bi_conv: 0.0,
        stride: 16.0,
        offset: 0.0,
    };
    let mut enc = g.encoder();
    let e = decode::decode_backward(
        &mut enc,
        &a,
        &a,
        &bad,
        &bad,
        &p,
        &decode::DecodeInto::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("decode_backward") && e.contains("[1, 16, 3]"),
        "{e}"
    );
}
