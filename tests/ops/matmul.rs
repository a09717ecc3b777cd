//! Matmul / linear kernels against `ops::matmul::cpu` (f64 accumulation), on every kernel the
//! adapter can run (tiled, register, and subgroup where the adapter has 8-lane subgroups).
//!
//! Tolerances: inputs are uniform in [-1, 1). A K-term f32 dot product accumulated with FMAs is
//! off by at most K·u·Σ|a||b| ≤ K²·u (u = 2⁻²⁴) and in practice behaves like a random walk of
//! roundings of the partial sums (|partial| ~ √k/3), about u·K/4. We allow atol = 1e-6·K
//! (K = 300: 3e-4, some 70× the typical error, yet far below the ~0.1 error a wrong or missing
//! term leaves somewhere in a tile), plus rtol 1e-5 for the epilogue: the bias and residual adds
//! round once each, GELU adds the shader's erf error (1.2e-7 absolute, times |x|/2) and exp's few
//! ulp.

use sparsett::ops::matmul::{self, cpu, Activation, Epilogue, Kernel};
use sparsett::{Tensor, Variant};

use crate::common::{assert_close, gpu, rand_vec};

fn kernels() -> Vec<Kernel> {
    let g = gpu();
    Kernel::ALL.into_iter().filter(|k| k.supported(g)).collect()
}

fn atol(k: usize) -> f32 {
    1e-6 * k.max(1) as f32
}

struct Case {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a_batched: bool,
    b_batched: bool,
    trans_b: bool,
}

fn shape3(batched: bool, batch: usize, r: usize, c: usize) -> Vec<usize> {
    if batched {
        vec![batch, r, c]
    } else {
        vec![r, c]
    }
}

/// Runs one case with the given epilogue flags on one kernel and compares with the reference.
fn check(
    case: &Case,
    kernel: Kernel,
    bias: bool,
    row_bias: bool,
    act: Activation,
    residual: bool,
    seed: u64,
) {
    let g = gpu();
    let Case {
        batch,
        m,
        k,
        n,
        a_batched,
        b_batched,
        trans_b,
    } = *case;
    let ab = if a_batched { batch } else { 1 };
    let bb = if b_batched { batch } else { 1 };
    let a = rand_vec(seed, ab * m * k, -1.0, 1.0);
    let b = rand_vec(seed + 1, bb * k * n, -1.0, 1.0);
    let bias_v = rand_vec(seed + 2, n, -1.0, 1.0);
    let rb_v = rand_vec(seed + 3, m, -1.0, 1.0);
    let res_v = rand_vec(seed + 4, batch * m * n, -1.0, 1.0);
    let out_shape = if a_batched || b_batched {
        vec![batch, m, n]
    } else {
        vec![m, n]
    };
    let at = g.upload(&shape3(a_batched, batch, m, k), &a).unwrap();
    let b_shape = if trans_b {
        shape3(b_batched, batch, n, k)
    } else {
        shape3(b_batched, batch, k, n)
    };
    let bt = g.upload(&b_shape, &b).unwrap();
    let bias_t = g.upload(&[n], &bias_v).unwrap();
    let rb_t = g.upload(&[m], &rb_v).unwrap();
    let res_t = g.upload(&out_shape, &res_v).unwrap();
    let epi = Epilogue {
        bias: bias.then_some(&bias_t),
        row_bias: row_bias.then_some(&rb_t),
        act,
        residual: residual.then_some(&res_t),
    };
    let mut enc = g.encoder();
    let y = matmul::matmul_kernel(&mut enc, &at, &bt, trans_b, &epi, kernel).unwrap();
    let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
    assert_eq!(y.shape(), out_shape.as_slice());
    let cepi = cpu::Epilogue {
        bias: bias.then_some(bias_v.as_slice()),
        row_bias: row_bias.then_some(rb_v.as_slice()),
        act,
        residual: residual.then_some(res_v.as_slice()),
    };
    let want = cpu::matmul(&a, &b, batch, m, k, n, a_batched, b_batched, trans_b, &cepi);
    let what = format!(
        "{kernel:?} batch {batch} (a {a_batched}, b {b_batched}) {m}x{k}x{n} trans_b {trans_b} \
         bias {bias} row_bias {row_bias} {act:?} residual {residual}"
    );
    assert_close(&what, &got, &want, atol(k), 1e-5);
}

fn case(batch: usize, m: usize, k: usize, n: usize, ab: bool, bb: bool, tb: bool) -> Case {
    Case {
        batch,
        m,
        k,
        n,
        a_batched: ab,
        b_batched: bb,
        trans_b: tb,
    }
}

#[test]
fn plain_products_match_reference() {
    // Sizes around the 64-wide tile: single elements, odd sizes, exact and partial tiles.
    let cases = [
        case(1, 1, 1, 1, false, false, false),
        case(1, 7, 13, 5, false, false, false),
        case(1, 64, 64, 64, false, false, true),
        case(1, 65, 33, 70, false, false, false),
        case(1, 130, 17, 129, false, false, true),
        case(1, 3, 300, 2, false, false, false),
        case(3, 17, 9, 23, true, true, false),
        case(2, 33, 16, 40, true, true, true),
        case(1, 5, 6, 7, true, true, false),
        // K = 0: the output is the epilogue of an empty sum.
        case(1, 3, 0, 5, false, false, false),
    ];
    for kernel in kernels() {
        for (i, c) in cases.iter().enumerate() {
            check(
                c,
                kernel,
                false,
                false,
                Activation::None,
                false,
                100 + i as u64,
            );
        }
    }
}

#[test]
fn two_d_operand_broadcasts_over_batch() {
    for kernel in kernels() {
        // a [M, K] shared by every batch of b (the 1×1-convolution form), and the reverse.
        check(
            &case(3, 20, 12, 30, false, true, false),
            kernel,
            false,
            false,
            Activation::None,
            false,
            7,
        );
        check(
            &case(2, 66, 10, 9, true, false, false),
            kernel,
            false,
            false,
            Activation::None,
            false,
            8,
        );
        check(
            &case(2, 9, 10, 66, true, false, true),
            kernel,
            false,
            false,
            Activation::None,
            false,
            9,
        );
    }
}

#[test]
fn empty_outputs_and_grids_over_the_dimension_limit() {
    let g = gpu();
    let mut enc = g.encoder();
    let y = matmul::matmul(
        &mut enc,
        &g.zeros(&[0, 4]).unwrap(),
        &g.zeros(&[4, 3]).unwrap(),
        false,
        &Epilogue::default(),
    )
    .unwrap();
    assert_eq!(y.shape(), [0, 3]);
    assert_eq!(enc.dispatch_count(), 0);
    // 70000 one-element products: more 64×64 tiles than a grid dimension holds (65535), so the
    // host splits the grid and the shader must ignore the padding workgroups.
    let batch = 70000;
    let a = rand_vec(60, batch, -1.0, 1.0);
    let b = rand_vec(61, batch, -1.0, 1.0);
    let at = g.upload(&[batch, 1, 1], &a).unwrap();
    let bt = g.upload(&[batch, 1, 1], &b).unwrap();
    let y = matmul::matmul(&mut enc, &at, &bt, false, &Epilogue::default()).unwrap();
    let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    assert_close("70000 batches", &got, &want, 0.0, 0.0);
}

#[test]
fn epilogues_match_reference() {
    let c = case(2, 37, 45, 70, true, true, false);
    let t = case(1, 70, 29, 37, false, false, true);
    for kernel in kernels() {
        check(&c, kernel, true, false, Activation::None, false, 20);
        check(&t, kernel, true, false, Activation::Gelu, false, 21);
        check(&c, kernel, false, true, Activation::Relu, false, 22);
        check(&t, kernel, true, true, Activation::Gelu, true, 23);
        check(&c, kernel, false, false, Activation::None, true, 24);
    }
}

#[test]
fn conv1x1_as_matmul_with_row_bias() {
    // Conv 1×1, 24 → 40 channels on a 2×(7×9) NCHW input: W[Co, Ci] · X[N, Ci, H·W] + b[Co], ReLU.
    let g = gpu();
    let (n, ci, co, hw) = (2, 24, 40, 63);
    let w = rand_vec(30, co * ci, -1.0, 1.0);
    let x = rand_vec(31, n * ci * hw, -1.0, 1.0);
    let bias = rand_vec(32, co, -1.0, 1.0);
    let wt = g.upload(&[co, ci], &w).unwrap();
    let xt = g.upload(&[n, ci, 7, 9], &x).unwrap();
    let bt = g.upload(&[co], &bias).unwrap();
    // Direct per-pixel reference, independent of cpu::matmul's indexing.
    let mut want = vec![0f32; n * co * hw];
    for b in 0..n {
        for o in 0..co {
            for p in 0..hw {
                let mut s = bias[o] as f64;
                for i in 0..ci {
                    s += w[o * ci + i] as f64 * x[(b * ci + i) * hw + p] as f64;
                }
                want[(b * co + o) * hw + p] = s.max(0.0) as f32;
            }
        }
    }
    for kernel in kernels() {
        let mut enc = g.encoder();
        let xr = xt.reshape(&[n, ci, hw]).unwrap();
        let epi = Epilogue {
            row_bias: Some(&bt),
            act: Activation::Relu,
            ..Default::default()
        };
        let y = matmul::matmul_kernel(&mut enc, &wt, &xr, false, &epi, kernel).unwrap();
        assert_eq!(y.shape(), [n, co, hw]);
        let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
        assert_close(&format!("conv1x1 {kernel:?}"), &got, &want, atol(ci), 1e-5);
    }
}

#[test]
fn linear_keeps_leading_dims() {
    let g = gpu();
    let (k, n) = (40, 70);
    let x = rand_vec(40, 2 * 3 * k, -1.0, 1.0);
    let w = rand_vec(41, n * k, -1.0, 1.0);
    let bias = rand_vec(42, n, -1.0, 1.0);
    let res = rand_vec(43, 2 * 3 * n, -1.0, 1.0);
    let xt = g.upload(&[2, 3, k], &x).unwrap();
    let wt = g.upload(&[n, k], &w).unwrap();
    let bt = g.upload(&[n], &bias).unwrap();
    let rt = g.upload(&[2, 3, n], &res).unwrap();
    let x1 = g.upload(&[k], &x[..k]).unwrap();
    for variant in Variant::ALL {
        let epi = Epilogue {
            bias: Some(&bt),
            act: Activation::Gelu,
            residual: Some(&rt),
            ..Default::default()
        };
        let mut enc = g.encoder();
        let y = matmul::linear_with(&mut enc, &xt, &wt, &epi, variant).unwrap();
        let y1 = matmul::linear_with(&mut enc, &x1, &wt, &Epilogue::default(), variant).unwrap();
        assert_eq!(y.shape(), [2, 3, n]);
        assert_eq!(y1.shape(), [n]);
        let mut got = enc.submit_read(&[&y, &y1]).unwrap();
        let cepi = cpu::Epilogue {
            bias: Some(&bias),
            act: Activation::Gelu,
            residual: Some(&res),
            ..Default::default()
        };
        let want = cpu::linear(&x, &w, 6, k, n, &cepi);
        let want1 = cpu::linear(&x[..k], &w, 1, k, n, &Default::default());
        assert_close(
            &format!("linear 1-D {variant:?}"),
            &got.pop().unwrap(),
            &want1,
            atol(k),
            1e-5,
        );
        assert_close(
            &format!("linear {variant:?}"),
            &got.pop().unwrap(),
            &want,
            atol(k),
            1e-5,
        );
    }
}

#[test]
fn variants_pick_runnable_kernels() {
    let g = gpu();
    assert_eq!(Kernel::for_variant(g, Variant::Tiled), Kernel::Tiled);
    assert!(Kernel::for_variant(g, Variant::Register).supported(g));
    assert_ne!(Kernel::for_variant(g, Variant::Register), Kernel::Tiled);
    // matmul_with runs through the same path for both variants.
    let a = rand_vec(50, 5 * 6, -1.0, 1.0);
    let b = rand_vec(51, 6 * 4, -1.0, 1.0);
    let (at, bt) = (
        g.upload(&[5, 6], &a).unwrap(),
        g.upload(&[6, 4], &b).unwrap(),
    );
    let want = cpu::matmul(&a, &b, 1, 5, 6, 4, false, false, false, &Default::default());
    for v in Variant::ALL {
        let mut enc = g.encoder();
        let y = matmul::matmul_with(&mut enc, &at, &bt, false, &Epilogue::default(), v).unwrap();
        let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
        assert_close(&format!("matmul_with {v:?}"), &got, &want, atol(6), 1e-5);
    }
}

fn err_of(r: sparsett::Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_shapes_are_errors_naming_the_op_and_shapes() {
    let g = gpu();
    let t = |s: &[usize]| g.zeros(s).unwrap();
    let none = Epilogue::default();
    let mut enc = g.encoder();
    let e = &mut enc;

    let msg = err_of(matmul::matmul(e, &t(&[4, 5]), &t(&[6, 3]), false, &none));
    assert!(
        msg.contains("matmul") && msg.contains("[4, 5]") && msg.contains("[6, 3]"),
        "{msg}"
    );
    let msg = err_of(matmul::matmul(e, &t(&[4, 5]), &t(&[3, 6]), true, &none));
    assert!(msg.contains("matmul") && msg.contains("[3, 6]"), "{msg}");
    let msg = err_of(matmul::matmul(
        e,
        &t(&[2, 4, 5]),
        &t(&[3, 5, 6]),
        false,
        &none,
    ));
    assert!(
        msg.contains("matmul") && msg.contains("[2, 4, 5]") && msg.contains("[3, 5, 6]"),
        "{msg}"
    );
    let msg = err_of(matmul::matmul(e, &t(&[5]), &t(&[5, 6]), false, &none));
    assert!(msg.contains("matmul") && msg.contains("[5]"), "{msg}");

    let bias = t(&[5]);
    let epi = Epilogue {
        bias: Some(&bias),
        ..Default::default()
    };
    let msg = err_of(matmul::matmul(e, &t(&[4, 5]), &t(&[5, 6]), false, &epi));
    assert!(
        msg.contains("matmul") && msg.contains("bias [5]") && msg.contains("[6]"),
        "{msg}"
    );
    let epi = Epilogue {
        row_bias: Some(&bias),
        ..Default::default()
    };
    let msg = err_of(matmul::matmul(e, &t(&[4, 5]), &t(&[5, 6]), false, &epi));
    assert!(
        msg.contains("matmul") && msg.contains("row_bias [5]") && msg.contains("[4]"),
        "{msg}"
    );
    let res = t(&[4, 6]);
    let epi = Epilogue {
        residual: Some(&res),
        ..Default::default()
    };
    let msg = err_of(matmul::matmul(e, &t(&[2, 4, 5]), &t(&[5, 6]), false, &epi));
    assert!(
        msg.contains("matmul") && msg.contains("[4, 6]") && msg.contains("[2, 4, 6]"),
        "{msg}"
    );

    let msg = err_of(matmul::linear(e, &t(&[3, 7]), &t(&[4, 6]), &none));
    assert!(
        msg.contains("linear") && msg.contains("[3, 7]") && msg.contains("[4, 6]"),
        "{msg}"
    );
    let epi = Epilogue {
        bias: Some(&bias),
        ..Default::default()
    };
    let msg = err_of(matmul::linear(e, &t(&[3, 6]), &t(&[4, 6]), &epi));
    assert!(
        msg.contains("linear") && msg.contains("bias [5]") && msg.contains("[4]"),
        "{msg}"
    );
    let msg = err_of(matmul::linear(e, &t(&[3, 6]), &t(&[4, 6, 1]), &none));
    assert!(msg.contains("linear") && msg.contains("[4, 6, 1]"), "{msg}");
    let u = g.upload_u32(&[4, 5], &[0; 20]).unwrap();
    let msg = err_of(matmul::matmul(e, &u, &t(&[5, 6]), false, &none));
    assert!(msg.contains("matmul") && msg.contains("f32"), "{msg}");
    drop(enc);
    g.check_errors().unwrap();
}

/// `cargo test --release --test ops matmul::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench() {
    let g = gpu();
    let mut rows = Vec::new();
    matmul::bench(g, &mut rows).unwrap();
    println!("{}\n{}", g.adapter_line(), sparsett::bench::table(&rows));
}
