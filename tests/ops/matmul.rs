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
//!
//! Row norm (a LayerNorm folded into the product): the GPU sums the row statistics in f32 with
//! the row's first element as shift, and the folded weights round once more (w·γ); against the
//! f64 LayerNorm-then-linear reference the output (O(√K) in size after normalisation) gets
//! atol 1e-6·K·4 + rtol 1e-4. Rows with a mean 50× their spread check that the shift keeps the
//! statistics from cancelling (without it the error there is ~1e-2).
//!
//! Backward: every gradient is again a dot product, over the dimension the product summed away:
//! dA over N, dB over M (dW and db over the rows), times the batch where the operand was
//! broadcast and its gradient is the sum over the batch. The same atol = 1e-6·(terms) applies;
//! accumulating into an existing tensor adds one rounding of the (≤ 1e-6·terms·…) result. The
//! f64 references are checked against central differences, which are exact up to rounding
//! (≈1e-10) here because the loss is linear in each operand: tolerance 1e-8.

use sparsett::ops::matmul::{self, cpu, Activation, Epilogue, Gemm, Kernel};
use sparsett::{Tensor, Variant};

use crate::common::{assert_close, gpu, rand_vec};
use crate::reduce::{assert_fd, numeric_grad, to32, to64};

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
        row_norm: None,
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
        // Shapes Subgroup4 runs with 16-byte loads: rows past a multiple of 8, broadcast B.
        case(1, 12, 20, 68, false, false, false),
        case(2, 70, 8, 132, true, false, false),
        // K = 8n + 4, both operands contiguous along K: past K the last step reads the next row
        // of A and the next column of B, which only the tail mask keeps out.
        case(1, 9, 12, 10, false, false, true),
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
    // [4, 6] would repeat over the batch (see batch_periodic_residual); [3, 6] fits nothing.
    let res = t(&[3, 6]);
    let epi = Epilogue {
        residual: Some(&res),
        ..Default::default()
    };
    let msg = err_of(matmul::matmul(e, &t(&[2, 4, 5]), &t(&[5, 6]), false, &epi));
    assert!(
        msg.contains("matmul") && msg.contains("[3, 6]") && msg.contains("[2, 4, 6]"),
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

/// The aligned cases above do reach Subgroup4's 16-byte loads (the kernel falls back to the
/// scalar-load one otherwise, which would leave those loads untested), and awkward ones don't.
#[test]
fn vec4_loads_cover_the_aligned_test_cases() {
    // (m, n, k, trans_a, trans_b)
    let aligned = [
        (64, 64, 64, false, true),
        (33, 40, 16, false, true),
        (12, 68, 20, false, false),
        (70, 132, 8, false, false),
        (68, 20, 12, true, false),
        (4, 8, 16, true, true),
        (65, 70, 96, false, true), // row_norm: linear with K = 96
        (18, 20, 36, false, true), // row_norm: K = 36
        (9, 10, 12, false, true),
    ];
    for (m, n, k, ta, tb) in aligned {
        assert!(
            matmul::vec4_loads(m, n, k, ta, tb),
            "{m}x{k}x{n} trans_a {ta} trans_b {tb}"
        );
    }
    let awkward = [
        (7, 5, 13, false, false),  // K odd
        (9, 20, 12, true, false),  // A stored [K, M] with M = 9
        (12, 70, 8, false, false), // B [K, N] with N = 70
        (3, 5, 0, false, false),   // K = 0
    ];
    for (m, n, k, ta, tb) in awkward {
        assert!(
            !matmul::vec4_loads(m, n, k, ta, tb),
            "{m}x{k}x{n} trans_a {ta} trans_b {tb}"
        );
        assert_eq!(Kernel::Subgroup4.runs_as(m, n, k, ta, tb), Kernel::Subgroup);
    }
    assert_eq!(
        Kernel::Subgroup4.runs_as(64, 64, 64, false, true),
        Kernel::Subgroup4
    );
    assert_eq!(Kernel::Tiled.runs_as(7, 5, 13, false, false), Kernel::Tiled);
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

/// Row-major transpose of the last two dimensions of a `[batch, r, c]` array.
fn transpose(x: &[f32], batch: usize, r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0f32; x.len()];
    for b in 0..batch {
        for i in 0..r {
            for j in 0..c {
                t[b * r * c + j * r + i] = x[b * r * c + i * c + j];
            }
        }
    }
    t
}

#[test]
fn gemm_with_transposed_a_and_accumulation() {
    // op(A) = Aᵀ from A stored [batch?, K, M], against the forward reference on an explicitly
    // transposed copy; then the same product added into an existing tensor, with a bias.
    let g = gpu();
    let cases = [
        case(1, 1, 1, 1, false, false, false),
        case(1, 65, 33, 70, false, false, false),
        case(1, 7, 130, 5, false, false, true),
        case(3, 17, 9, 66, true, true, false),
        case(2, 66, 10, 9, true, false, true),
        case(2, 9, 12, 20, false, true, false),
        // Subgroup4's 16-byte loads along M (A stored [K, M]), with either B layout.
        case(2, 68, 12, 20, true, false, false),
        case(1, 4, 16, 8, false, false, true),
    ];
    for kernel in kernels() {
        for (i, c) in cases.iter().enumerate() {
            let ab = if c.a_batched { c.batch } else { 1 };
            let bb = if c.b_batched { c.batch } else { 1 };
            let a = rand_vec(200 + i as u64, ab * c.m * c.k, -1.0, 1.0);
            let b = rand_vec(210 + i as u64, bb * c.k * c.n, -1.0, 1.0);
            let bias = rand_vec(220 + i as u64, c.n, -1.0, 1.0);
            let out_shape = if c.a_batched || c.b_batched {
                vec![c.batch, c.m, c.n]
            } else {
                vec![c.m, c.n]
            };
            let init = rand_vec(230 + i as u64, out_shape.iter().product(), -1.0, 1.0);
            let at = g
                .upload(
                    &shape3(c.a_batched, c.batch, c.k, c.m),
                    &transpose(&a, ab, c.m, c.k),
                )
                .unwrap();
            let b_shape = if c.trans_b {
                shape3(c.b_batched, c.batch, c.n, c.k)
            } else {
                shape3(c.b_batched, c.batch, c.k, c.n)
            };
            let bt = g.upload(&b_shape, &b).unwrap();
            let biast = g.upload(&[c.n], &bias).unwrap();
            let acc = g.upload(&out_shape, &init).unwrap();
            let spec = Gemm {
                trans_a: true,
                trans_b: c.trans_b,
                into: None,
            };
            let mut enc = g.encoder();
            let y = matmul::gemm_kernel(&mut enc, &at, &bt, &spec, &Epilogue::default(), kernel)
                .unwrap();
            let epi = Epilogue {
                bias: Some(&biast),
                ..Default::default()
            };
            let into = Gemm {
                into: Some(&acc),
                ..spec
            };
            let r = matmul::gemm_kernel(&mut enc, &at, &bt, &into, &epi, kernel).unwrap();
            assert_eq!(r.buffer(), acc.buffer());
            assert_eq!(y.shape(), out_shape.as_slice());
            let got = enc.submit_read(&[&y, &acc]).unwrap();
            let (bi, m, k, n) = (c.batch, c.m, c.k, c.n);
            let plain = cpu::matmul(
                &a,
                &b,
                bi,
                m,
                k,
                n,
                c.a_batched,
                c.b_batched,
                c.trans_b,
                &Default::default(),
            );
            let what = format!("{kernel:?} gemm trans_a case {i}");
            assert_close(&what, &got[0], &plain, atol(k), 1e-5);
            let with_bias = cpu::Epilogue {
                bias: Some(&bias),
                residual: Some(&init),
                ..Default::default()
            };
            let want = cpu::matmul(
                &a,
                &b,
                bi,
                m,
                k,
                n,
                c.a_batched,
                c.b_batched,
                c.trans_b,
                &with_bias,
            );
            assert_close(&format!("{what} into"), &got[1], &want, atol(k), 1e-5);
        }
    }
}

/// Upstream gradients and operands of a `matmul` case, on the host and the device.
struct BwCase {
    a: Vec<f32>,
    b: Vec<f32>,
    dc: Vec<f32>,
    at: Tensor,
    bt: Tensor,
    dct: Tensor,
}

fn bw_case(c: &Case, seed: u64) -> BwCase {
    let g = gpu();
    let ab = if c.a_batched { c.batch } else { 1 };
    let bb = if c.b_batched { c.batch } else { 1 };
    let a = rand_vec(seed, ab * c.m * c.k, -1.0, 1.0);
    let b = rand_vec(seed + 1, bb * c.k * c.n, -1.0, 1.0);
    let out_shape = if c.a_batched || c.b_batched {
        vec![c.batch, c.m, c.n]
    } else {
        vec![c.m, c.n]
    };
    let dc = rand_vec(seed + 2, out_shape.iter().product(), -1.0, 1.0);
    let b_shape = if c.trans_b {
        shape3(c.b_batched, c.batch, c.n, c.k)
    } else {
        shape3(c.b_batched, c.batch, c.k, c.n)
    };
    BwCase {
        at: g
            .upload(&shape3(c.a_batched, c.batch, c.m, c.k), &a)
            .unwrap(),
        bt: g.upload(&b_shape, &b).unwrap(),
        dct: g.upload(&out_shape, &dc).unwrap(),
        a,
        b,
        dc,
    }
}

const BW_CASES: [(usize, usize, usize, usize, bool, bool, bool); 10] = [
    (1, 1, 1, 1, false, false, false),
    (1, 7, 13, 5, false, false, false),
    (1, 65, 33, 70, false, false, true),
    (1, 1, 40, 3, false, false, true),
    (1, 40, 3, 1, false, false, false),
    (3, 17, 9, 23, true, true, false),
    (2, 33, 16, 40, true, true, true),
    // Broadcast a (the 1×1-convolution form W·X) and broadcast b, both layouts.
    (3, 20, 12, 30, false, true, false),
    (2, 9, 10, 66, false, true, true),
    (2, 66, 10, 9, true, false, true),
];

#[test]
fn matmul_backward_matches_reference() {
    let g = gpu();
    for kernel in kernels() {
        for (i, &(bi, m, k, n, ab, bb, tb)) in BW_CASES.iter().enumerate() {
            let c = case(bi, m, k, n, ab, bb, tb);
            let t = bw_case(&c, 300 + 10 * i as u64);
            let mut enc = g.encoder();
            let da =
                matmul::matmul_backward_a_kernel(&mut enc, &t.dct, &t.at, &t.bt, tb, None, kernel)
                    .unwrap();
            let db =
                matmul::matmul_backward_b_kernel(&mut enc, &t.dct, &t.at, &t.bt, tb, None, kernel)
                    .unwrap();
            assert_eq!(da.shape(), t.at.shape());
            assert_eq!(db.shape(), t.bt.shape());
            let got = enc.submit_read(&[&da, &db]).unwrap();
            let (wa, wb) = cpu::matmul_backward(
                &to64(&t.a),
                &to64(&t.b),
                &to64(&t.dc),
                bi,
                m,
                k,
                n,
                ab,
                bb,
                tb,
            );
            let what = format!("{kernel:?} batch {bi} (a {ab}, b {bb}) {m}x{k}x{n} trans_b {tb}");
            let a_terms = n * if ab { 1 } else { bi };
            let b_terms = m * if bb { 1 } else { bi };
            assert_close(
                &format!("{what} dA"),
                &got[0],
                &to32(&wa),
                atol(a_terms),
                1e-5,
            );
            assert_close(
                &format!("{what} dB"),
                &got[1],
                &to32(&wb),
                atol(b_terms),
                1e-5,
            );
        }
    }
}

#[test]
fn matmul_backward_reference_is_the_derivative() {
    for &(bi, m, k, n, ab, bb, tb) in [
        (2, 3, 4, 5, true, true, false),
        (2, 3, 4, 5, false, true, true),
        (3, 2, 3, 4, true, false, true),
        (1, 3, 2, 4, false, false, false),
    ]
    .iter()
    {
        let na = if ab { bi } else { 1 } * m * k;
        let nb = if bb { bi } else { 1 } * k * n;
        let a = to64(&rand_vec(400, na, -1.0, 1.0));
        let b = to64(&rand_vec(401, nb, -1.0, 1.0));
        let dc = to64(&rand_vec(402, bi * m * n, -1.0, 1.0));
        let (da, db) = cpu::matmul_backward(&a, &b, &dc, bi, m, k, n, ab, bb, tb);
        let fa = numeric_grad(|x| cpu::matmul_f64(x, &b, bi, m, k, n, ab, bb, tb), &a, &dc);
        let fb = numeric_grad(|x| cpu::matmul_f64(&a, x, bi, m, k, n, ab, bb, tb), &b, &dc);
        let what = format!("batch {bi} (a {ab}, b {bb}) trans_b {tb}");
        assert_fd(&format!("{what} dA"), &da, &fa, 1e-8);
        assert_fd(&format!("{what} dB"), &db, &fb, 1e-8);
    }
    // Linear with bias: y = x·Wᵀ + b.
    let (rows, k, n) = (4, 3, 5);
    let x = to64(&rand_vec(410, rows * k, -1.0, 1.0));
    let w = to64(&rand_vec(411, n * k, -1.0, 1.0));
    let bias = to64(&rand_vec(412, n, -1.0, 1.0));
    let dy = to64(&rand_vec(413, rows * n, -1.0, 1.0));
    let fwd = |x: &[f64], w: &[f64], bias: &[f64]| -> Vec<f64> {
        let mut y = cpu::matmul_f64(x, w, 1, rows, k, n, false, false, true);
        for (i, v) in y.iter_mut().enumerate() {
            *v += bias[i % n];
        }
        y
    };
    let (dx, dw, db) = cpu::linear_backward(&x, &w, &dy, rows, k, n);
    assert_fd(
        "linear dx",
        &dx,
        &numeric_grad(|v| fwd(v, &w, &bias), &x, &dy),
        1e-8,
    );
    assert_fd(
        "linear dw",
        &dw,
        &numeric_grad(|v| fwd(&x, v, &bias), &w, &dy),
        1e-8,
    );
    assert_fd(
        "linear db",
        &db,
        &numeric_grad(|v| fwd(&x, &w, v), &bias, &dy),
        1e-8,
    );
}

#[test]
fn linear_backward_matches_reference() {
    let g = gpu();
    // (leading dims of x, K, N): one row, one input and one output feature, tile edges.
    let cases: [(&[usize], usize, usize); 6] = [
        (&[1], 1, 1),
        (&[1], 300, 2),
        (&[7], 13, 5),
        (&[2, 33], 17, 70),
        (&[130], 9, 65),
        (&[300], 2, 1),
    ];
    for kernel in kernels() {
        for (i, &(lead, k, n)) in cases.iter().enumerate() {
            let rows: usize = lead.iter().product();
            let x = rand_vec(500 + i as u64, rows * k, -1.0, 1.0);
            let w = rand_vec(510 + i as u64, n * k, -1.0, 1.0);
            let dy = rand_vec(520 + i as u64, rows * n, -1.0, 1.0);
            let xs = [lead, &[k]].concat();
            let ys = [lead, &[n]].concat();
            let (xt, wt, dyt) = (
                g.upload(&xs, &x).unwrap(),
                g.upload(&[n, k], &w).unwrap(),
                g.upload(&ys, &dy).unwrap(),
            );
            let mut enc = g.encoder();
            let dx =
                matmul::linear_backward_input_kernel(&mut enc, &dyt, &wt, None, kernel).unwrap();
            let dw =
                matmul::linear_backward_weight_kernel(&mut enc, &dyt, &xt, None, kernel).unwrap();
            let db = matmul::linear_backward_bias(&mut enc, &dyt, None).unwrap();
            assert_eq!(dx.shape(), xs.as_slice());
            assert_eq!(dw.shape(), [n, k]);
            assert_eq!(db.shape(), [n]);
            let got = enc.submit_read(&[&dx, &dw, &db]).unwrap();
            let (wx, ww, wb) = cpu::linear_backward(&to64(&x), &to64(&w), &to64(&dy), rows, k, n);
            let what = format!("{kernel:?} linear {xs:?} -> {n}");
            assert_close(&format!("{what} dx"), &got[0], &to32(&wx), atol(n), 1e-5);
            assert_close(&format!("{what} dw"), &got[1], &to32(&ww), atol(rows), 1e-5);
            assert_close(&format!("{what} db"), &got[2], &to32(&wb), atol(rows), 1e-5);
        }
    }
}

#[test]
fn backward_twice_adds_up() {
    // A parameter used twice (the backbone on the template and on the search crop): its
    // gradient tensor receives both contributions.
    let g = gpu();
    let (rows, k, n) = (9, 6, 11);
    let x = rand_vec(600, rows * k, -1.0, 1.0);
    let x2 = rand_vec(601, rows * k, -1.0, 1.0);
    let w = rand_vec(602, n * k, -1.0, 1.0);
    let dy = rand_vec(603, rows * n, -1.0, 1.0);
    let dy2 = rand_vec(604, rows * n, -1.0, 1.0);
    let init_w = rand_vec(605, n * k, -1.0, 1.0);
    let init_b = rand_vec(606, n, -1.0, 1.0);
    let init_x = rand_vec(607, rows * k, -1.0, 1.0);
    let up = |v: &[f32], s: &[usize]| g.upload(s, v).unwrap();
    let (xt, x2t, wt, dyt, dy2t) = (
        up(&x, &[rows, k]),
        up(&x2, &[rows, k]),
        up(&w, &[n, k]),
        up(&dy, &[rows, n]),
        up(&dy2, &[rows, n]),
    );
    let (_, w1, b1) = cpu::linear_backward(&to64(&x), &to64(&w), &to64(&dy), rows, k, n);
    let (_, w2, b2) = cpu::linear_backward(&to64(&x2), &to64(&w), &to64(&dy2), rows, k, n);
    let (dx1, _, _) = cpu::linear_backward(&to64(&x), &to64(&w), &to64(&dy), rows, k, n);
    let add3 = |i: &[f32], p: &[f64], q: &[f64]| -> Vec<f32> {
        i.iter()
            .zip(p.iter().zip(q))
            .map(|(&a, (&b, &c))| (a as f64 + b + c) as f32)
            .collect()
    };
    for kernel in kernels() {
        let (gw, gb, gx) = (
            up(&init_w, &[n, k]),
            up(&init_b, &[n]),
            up(&init_x, &[rows, k]),
        );
        let mut enc = g.encoder();
        for (xi, dyi) in [(&xt, &dyt), (&x2t, &dy2t)] {
            matmul::linear_backward_weight_kernel(&mut enc, dyi, xi, Some(&gw), kernel).unwrap();
            matmul::linear_backward_bias(&mut enc, dyi, Some(&gb)).unwrap();
        }
        for _ in 0..2 {
            matmul::linear_backward_input_kernel(&mut enc, &dyt, &wt, Some(&gx), kernel).unwrap();
        }
        let got = enc.submit_read(&[&gw, &gb, &gx]).unwrap();
        let what = format!("{kernel:?} twice");
        assert_close(
            &format!("{what} dw"),
            &got[0],
            &add3(&init_w, &w1, &w2),
            2.0 * atol(rows),
            1e-5,
        );
        assert_close(
            &format!("{what} db"),
            &got[1],
            &add3(&init_b, &b1, &b2),
            2.0 * atol(rows),
            1e-5,
        );
        assert_close(
            &format!("{what} dx"),
            &got[2],
            &add3(&init_x, &dx1, &dx1),
            2.0 * atol(n),
            1e-5,
        );
    }
    // The broadcast operand's gradient (summed over the batch by reduce) accumulates too.
    let c = case(3, 20, 12, 30, false, true, false);
    let t = bw_case(&c, 620);
    let init = rand_vec(630, 20 * 12, -1.0, 1.0);
    let (wa, _) = cpu::matmul_backward(
        &to64(&t.a),
        &to64(&t.b),
        &to64(&t.dc),
        3,
        20,
        12,
        30,
        false,
        true,
        false,
    );
    for kernel in kernels() {
        let acc = up(&init, &[20, 12]);
        let mut enc = g.encoder();
        for _ in 0..2 {
            matmul::matmul_backward_a_kernel(
                &mut enc,
                &t.dct,
                &t.at,
                &t.bt,
                false,
                Some(&acc),
                kernel,
            )
            .unwrap();
        }
        let got = enc.submit_read(&[&acc]).unwrap().pop().unwrap();
        assert_close(
            &format!("{kernel:?} broadcast dA twice"),
            &got,
            &add3(&init, &wa, &wa),
            2.0 * atol(90),
            1e-5,
        );
    }
}

#[test]
fn backward_bad_shapes_are_errors() {
    let g = gpu();
    let t = |s: &[usize]| g.zeros(s).unwrap();
    let mut enc = g.encoder();
    let e = &mut enc;
    let msg = err_of(matmul::matmul_backward_a(
        e,
        &t(&[4, 5]),
        &t(&[4, 3]),
        &t(&[3, 6]),
        false,
        None,
    ));
    assert!(
        msg.contains("matmul_backward_a") && msg.contains("[4, 5]"),
        "{msg}"
    );
    let msg = err_of(matmul::matmul_backward_b(
        e,
        &t(&[4, 6]),
        &t(&[4, 3]),
        &t(&[4, 6]),
        false,
        None,
    ));
    assert!(
        msg.contains("matmul_backward_b") && msg.contains("[4, 6]"),
        "{msg}"
    );
    let msg = err_of(matmul::linear_backward_input(
        e,
        &t(&[3, 5]),
        &t(&[4, 6]),
        None,
    ));
    assert!(
        msg.contains("linear_backward_input") && msg.contains("[4, 6]"),
        "{msg}"
    );
    let msg = err_of(matmul::linear_backward_weight(
        e,
        &t(&[3, 5]),
        &t(&[2, 6]),
        None,
    ));
    assert!(
        msg.contains("linear_backward_weight") && msg.contains("[2, 6]"),
        "{msg}"
    );
    let dy = t(&[3, 5]);
    let w = t(&[5, 6]);
    let msg = err_of(matmul::linear_backward_input(e, &dy, &w, Some(&t(&[3, 5]))));
    assert!(msg.contains("into") && msg.contains("[3, 6]"), "{msg}");
    let sq = t(&[5, 5]);
    let msg = err_of(matmul::linear_backward_weight(e, &sq, &sq, Some(&sq)));
    assert!(msg.contains("shares"), "{msg}");
}

/// `linear` with `row_norm` (weights folded by `fold_layer_norm`) against LayerNorm then
/// linear in f64, on every kernel; awkward sizes, batch > 1, K = 1 and rows with a large mean.
#[test]
fn row_norm_matches_layer_norm_then_linear() {
    let g = gpu();
    // (batch, rows, k, n, row offset, act, residual)
    let cases = [
        (1, 1, 1, 1, 0.0, Activation::None, false),
        (1, 7, 13, 5, 0.0, Activation::Gelu, false),
        (2, 65, 96, 70, 0.0, Activation::Gelu, true),
        (3, 17, 33, 129, 50.0, Activation::None, false),
        (1, 130, 17, 64, -20.0, Activation::Relu, true),
        // K = 8n + 4: Subgroup4's last step of 8 k is half past K.
        (2, 9, 36, 20, 5.0, Activation::Relu, true),
    ];
    for kernel in kernels() {
        for (i, &(batch, rows, k, n, offset, act, residual)) in cases.iter().enumerate() {
            let seed = 700 + 10 * i as u64;
            let m = batch * rows;
            let x: Vec<f32> = rand_vec(seed, m * k, -1.0, 1.0)
                .iter()
                .enumerate()
                .map(|(j, v)| v + offset * (1.0 + (j / k) as f32 * 0.01))
                .collect();
            let w = rand_vec(seed + 1, n * k, -1.0, 1.0);
            let bias = rand_vec(seed + 2, n, -1.0, 1.0);
            let gamma = rand_vec(seed + 3, k, 0.5, 1.5);
            let beta = rand_vec(seed + 4, k, -0.5, 0.5);
            let res = rand_vec(seed + 5, m * n, -1.0, 1.0);
            let eps = 1e-5;
            let (wf, bf, cs) = matmul::fold_layer_norm(&w, Some(&bias), &gamma, &beta);
            let xt = g.upload(&[batch, rows, k], &x).unwrap();
            let wt = g.upload(&[n, k], &wf).unwrap();
            let bt = g.upload(&[n], &bf).unwrap();
            let ct = g.upload(&[n], &cs).unwrap();
            let rt = g.upload(&[batch, rows, n], &res).unwrap();
            let epi = Epilogue {
                bias: Some(&bt),
                act,
                residual: residual.then_some(&rt),
                row_norm: Some(matmul::RowNorm { col_sum: &ct, eps }),
                ..Default::default()
            };
            let mut enc = g.encoder();
            let y = matmul::linear_kernel(&mut enc, &xt, &wt, &epi, kernel).unwrap();
            assert_eq!(y.shape(), &[batch, rows, n]);
            let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
            let cepi = cpu::Epilogue {
                bias: Some(&bias),
                act,
                residual: residual.then_some(res.as_slice()),
                ..Default::default()
            };
            let want = cpu::layer_norm_linear(&x, &gamma, &beta, eps, &w, m, k, n, &cepi);
            let what = format!("{kernel:?} row_norm {batch}x{rows}x{k}->{n} offset {offset}");
            assert_close(&what, &got, &want, 4.0 * atol(k), 1e-4);
        }
    }
}

#[test]
fn row_norm_bad_operands_are_shape_errors() {
    let g = gpu();
    let x = g.upload(&[3, 4], &[0.5; 12]).unwrap();
    let w = g.upload(&[5, 4], &[0.5; 20]).unwrap();
    let wrong = g.upload(&[4], &[1.0; 4]).unwrap();
    let mut enc = g.encoder();
    let epi = Epilogue {
        row_norm: Some(matmul::RowNorm {
            col_sum: &wrong,
            eps: 1e-5,
        }),
        ..Default::default()
    };
    let e = matmul::linear(&mut enc, &x, &w, &epi)
        .unwrap_err()
        .to_string();
    assert!(e.contains("col_sum [4] must be [5]"), "{e}");
    let right = g.upload(&[5], &[1.0; 5]).unwrap();
    let epi = Epilogue {
        row_norm: Some(matmul::RowNorm {
            col_sum: &right,
            eps: 0.0,
        }),
        ..Default::default()
    };
    let e = matmul::linear(&mut enc, &x, &w, &epi)
        .unwrap_err()
        .to_string();
    assert!(e.contains("positive finite eps"), "{e}");
}

/// A residual of one batch element's shape (`[L, N]` for a `[B, L, N]` output) repeats over the
/// batch, on every kernel; the reference adds `residual[o mod L·N]`.
#[test]
fn batch_periodic_residual() {
    let g = gpu();
    for kernel in kernels() {
        for (i, &(batch, rows, k, n)) in [(1, 5, 7, 3), (3, 19, 33, 70), (2, 65, 16, 9)]
            .iter()
            .enumerate()
        {
            let seed = 900 + 10 * i as u64;
            let x = rand_vec(seed, batch * rows * k, -1.0, 1.0);
            let w = rand_vec(seed + 1, n * k, -1.0, 1.0);
            let bias = rand_vec(seed + 2, n, -1.0, 1.0);
            let res = rand_vec(seed + 3, rows * n, -1.0, 1.0);
            let xt = g.upload(&[batch, rows, k], &x).unwrap();
            let wt = g.upload(&[n, k], &w).unwrap();
            let bt = g.upload(&[n], &bias).unwrap();
            let rt = g.upload(&[rows, n], &res).unwrap();
            let epi = Epilogue {
                bias: Some(&bt),
                residual: Some(&rt),
                ..Default::default()
            };
            let mut enc = g.encoder();
            let y = matmul::linear_kernel(&mut enc, &xt, &wt, &epi, kernel).unwrap();
            let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
            let mut want = cpu::linear(
                &x,
                &w,
                batch * rows,
                k,
                n,
                &cpu::Epilogue {
                    bias: Some(&bias),
                    ..Default::default()
                },
            );
            for (o, v) in want.iter_mut().enumerate() {
                *v += res[o % (rows * n)];
            }
            let what = format!("{kernel:?} periodic residual {batch}x{rows}x{k}->{n}");
            assert_close(&what, &got, &want, atol(k), 1e-5);
        }
    }
    // Any other residual shape is refused.
    let x = g.upload(&[2, 3, 4], &[0.5; 24]).unwrap();
    let w = g.upload(&[5, 4], &[0.5; 20]).unwrap();
    let r = g.upload(&[2, 5], &[0.5; 10]).unwrap();
    let epi = Epilogue {
        residual: Some(&r),
        ..Default::default()
    };
    let e = matmul::linear(&mut g.encoder(), &x, &w, &epi)
        .unwrap_err()
        .to_string();
    assert!(e.contains("without its leading dimension"), "{e}");
}
