//! Element-wise kernels against `ops::elementwise::cpu`.
//!
//! Tolerances: ReLU, add and mul are exact in f32 (one rounding, identical on both sides). Exp and
//! sigmoid use the hardware exp, specified by WGSL to 3 + 2|x| ulp; GELU adds the erf
//! approximation's 1.2e-7 absolute error: 2e-6 relative plus 1e-6 absolute covers both on the
//! tested ranges. Affine allows 5e-7 absolute: alpha*x (up to 3 in size, ulp 2.4e-7) may be fused
//! with the add or rounded separately on the GPU, which shows where alpha*x + beta cancels.

use sparsett::ops::elementwise::{self, cpu, Binary, Unary};

use crate::common::{assert_close, gpu, rand_vec};

const SHAPES: [&[usize]; 4] = [&[1], &[7, 13], &[3, 5, 257], &[70001]];

#[test]
fn unary_ops_match_reference() {
    let g = gpu();
    let ops = [
        (Unary::Relu, 0.0, 0.0),
        (Unary::Gelu, 1e-6, 2e-6),
        (Unary::Sigmoid, 1e-6, 2e-6),
        (Unary::Exp, 1e-6, 2e-6),
        (
            Unary::Affine {
                alpha: -0.37,
                beta: 2.5,
            },
            5e-7,
            1e-6,
        ),
    ];
    for (si, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = rand_vec(si as u64, n, -8.0, 8.0);
        let xt = g.upload(shape, &x).unwrap();
        for (op, atol, rtol) in ops {
            let mut enc = g.encoder();
            let y = elementwise::unary(&mut enc, &xt, op).unwrap();
            let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
            assert_eq!(y.shape(), *shape);
            assert_close(
                &format!("{op:?} {shape:?}"),
                &got,
                &cpu::unary(&x, op),
                atol,
                rtol,
            );
        }
    }
}

#[test]
fn gelu_is_the_erf_form() {
    // Independent of the shared erf: values of PyTorch's exact GELU (computed with mpmath).
    let x = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0];
    let want = [
        -0.0040496627,
        -0.15865526,
        -0.15426877,
        0.0,
        0.34573123,
        0.8413447,
        2.9959502,
    ];
    let g = gpu();
    let t = g.upload(&[7], &x).unwrap();
    let mut enc = g.encoder();
    let y = elementwise::unary(&mut enc, &t, Unary::Gelu).unwrap();
    let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
    assert_close("gelu values", &got, &want, 1e-6, 1e-6);
    assert_close("cpu gelu", &cpu::unary(&x, Unary::Gelu), &want, 1e-7, 1e-6);
}

#[test]
fn binary_ops_broadcast() {
    let g = gpu();
    let cases: [(&[usize], &[usize]); 4] = [
        (&[5], &[5]),
        (&[7, 13], &[13]),
        (&[2, 3, 33], &[3, 33]),
        (&[3, 1001], &[1001]),
    ];
    for (i, (sa, sb)) in cases.iter().enumerate() {
        let a = rand_vec(10 + i as u64, sa.iter().product(), -2.0, 2.0);
        let b = rand_vec(20 + i as u64, sb.iter().product(), -2.0, 2.0);
        let (at, bt) = (g.upload(sa, &a).unwrap(), g.upload(sb, &b).unwrap());
        for op in [Binary::Add, Binary::Mul] {
            let mut enc = g.encoder();
            let y = elementwise::binary(&mut enc, &at, &bt, op).unwrap();
            let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
            assert_close(
                &format!("{op:?} {sa:?}+{sb:?}"),
                &got,
                &cpu::binary(&a, &b, op),
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn binary_rejects_non_broadcastable() {
    let g = gpu();
    let a = g.zeros(&[4, 6]).unwrap();
    let b = g.zeros(&[4]).unwrap();
    let mut enc = g.encoder();
    let err = elementwise::binary(&mut enc, &a, &b, Binary::Add)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("add") && err.contains("[4]") && err.contains("[4, 6]"),
        "{err}"
    );
}
