//! Convolution and batch-norm kernels against `ops::conv::cpu` (f64 accumulation).
//!
//! Tolerances are per element, from the standard rounding-error bound rather than a fixed atol:
//! - conv2d: a K-term f32 dot product plus the bias and residual additions (K + 2 roundings) and
//!   the final rounding is within (K + 3)·u·Σ|terms| of the exact value, u = 2⁻²⁴; Σ|terms| is the
//!   reference run on |x|, |w|, |bias|, |residual|. We allow 2·(K + 3)·u·Σ|terms| + 1e-30 (the
//!   factor 2 covers the reference's own final rounding to f32). Any indexing bug moves an
//!   element by O(1) terms and fails this.
//! - batch_norm: the shader computes weight / sqrt(var + eps) (WGSL: sqrt and division within
//!   2.5 ulp each, plus the add), then one subtraction, multiply and add: ≲ 8 roundings of the
//!   magnitude |x − mean|·|scale| + |bias|; we allow 16·u times that magnitude.
//! - folded conv vs conv then BN: folding rounds each weight once more (1 u relative), so the two
//!   GPU results differ by at most the sum of both bounds; we allow 4·(K + 8)·u·Σ|terms| (on the
//!   folded weights) + 16·u·(|mean·scale| + |conv bias·scale| + |bn bias|) for the unfolded BN.

use sparsett::ops::conv::{self, cpu, BatchNorm, Conv2dOpts, RegisterKernel};
use sparsett::{Encoder, Tensor, Variant};

use crate::common::{gpu, rand_vec};

/// Every implementation: both Register GEMMs (the subgroup one where the adapter has subgroups
/// of 8, as lavapipe does) and the Tiled variant.
fn kernels() -> Vec<&'static str> {
    let mut k = vec!["register-plain", "tiled"];
    if RegisterKernel::for_gpu(gpu()) == RegisterKernel::Subgroup {
        k.push("register-subgroup");
    } else {
        eprintln!("note: adapter lacks subgroups of 8 lanes, the subgroup GEMM is not tested");
    }
    k
}

fn conv_by(
    enc: &mut Encoder,
    kernel: &str,
    x: &Tensor,
    w: &Tensor,
    o: &Conv2dOpts,
) -> sparsett::Result<Tensor> {
    match kernel {
        "register-plain" => conv::conv2d_register(enc, x, w, o, RegisterKernel::Plain),
        "register-subgroup" => conv::conv2d_register(enc, x, w, o, RegisterKernel::Subgroup),
        _ => conv::conv2d_with(enc, x, w, o, Variant::Tiled),
    }
}

const U: f64 = 1.0 / 16_777_216.0; // 2⁻²⁴

/// |got − want| ≤ bound element-wise; names the first element over its bound.
#[track_caller]
fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f64]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let d = (g as f64 - w as f64).abs();
        assert!(
            d <= b,
            "{what}: element {i} is {g}, expected {w} (|diff| {d:e} > bound {b:e})"
        );
    }
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// One convolution problem with its host data.
struct Case {
    xs: [usize; 4],
    ws: [usize; 4],
    stride: (usize, usize),
    pad: [usize; 4],
    bias: bool,
    relu: bool,
    residual: bool,
}

impl Case {
    fn new(xs: [usize; 4], ws: [usize; 4]) -> Self {
        Case {
            xs,
            ws,
            stride: (1, 1),
            pad: [0; 4],
            bias: false,
            relu: false,
            residual: false,
        }
    }
    fn stride(mut self, s: (usize, usize)) -> Self {
        self.stride = s;
        self
    }
    fn pad(mut self, p: [usize; 4]) -> Self {
        self.pad = p;
        self
    }
    fn bias(mut self) -> Self {
        self.bias = true;
        self
    }
    fn relu(mut self) -> Self {
        self.relu = true;
        self
    }
    fn residual(mut self) -> Self {
        self.residual = true;
        self
    }
}

fn run_case(seed: u64, c: &Case) {
    let g = gpu();
    let nx: usize = c.xs.iter().product();
    let nw: usize = c.ws.iter().product();
    let x = rand_vec(seed, nx, -1.0, 1.0);
    let w = rand_vec(seed + 1, nw, -1.0, 1.0);
    let b = rand_vec(seed + 2, c.ws[0], -1.0, 1.0);
    let mut args = cpu::ConvArgs {
        stride: c.stride,
        pad: c.pad,
        ..Default::default()
    };
    let os = cpu::out_shape(c.xs, c.ws, &args);
    let r = rand_vec(seed + 3, os.iter().product(), -1.0, 1.0);
    args.bias = c.bias.then_some(&b[..]);
    args.residual = c.residual.then_some(&r[..]);
    args.relu = c.relu;
    let want = cpu::conv2d(&x, c.xs, &w, c.ws, &args);

    let (ab, ar) = (abs(&b), abs(&r));
    let abs_args = cpu::ConvArgs {
        bias: c.bias.then_some(&ab[..]),
        residual: c.residual.then_some(&ar[..]),
        relu: false,
        ..args
    };
    let k = (c.ws[1] * c.ws[2] * c.ws[3]) as f64;
    let bound: Vec<f64> = cpu::conv2d(&abs(&x), c.xs, &abs(&w), c.ws, &abs_args)
        .iter()
        .map(|&s| 2.0 * (k + 3.0) * U * s as f64 + 1e-30)
        .collect();

    let xt = g.upload(&c.xs, &x).unwrap();
    let wt = g.upload(&c.ws, &w).unwrap();
    let bt = g.upload(&[c.ws[0]], &b).unwrap();
    let rt = g.upload(&os, &r).unwrap();
    let opts = Conv2dOpts {
        stride: c.stride,
        pad: c.pad,
        bias: c.bias.then_some(&bt),
        relu: c.relu,
        residual: c.residual.then_some(&rt),
    };
    for kernel in kernels() {
        let mut enc = g.encoder();
        let y = conv_by(&mut enc, kernel, &xt, &wt, &opts).unwrap();
        assert_eq!(y.shape(), os, "output shape");
        let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
        let what = format!(
            "conv2d {kernel} x{:?} w{:?} stride {:?} pad {:?} bias {} relu {} res {}",
            c.xs, c.ws, c.stride, c.pad, c.bias, c.relu, c.residual
        );
        assert_within(&what, &got, &want, &bound);
    }
}

#[test]
fn pointwise_1x1() {
    // Co and K neither multiples of 8 nor 4 (weights get repacked), columns not a multiple of 8.
    run_case(1, &Case::new([1, 5, 7, 9], [6, 5, 1, 1]).bias());
    // Batch 2, many column blocks (1334 columns), bias + ReLU.
    run_case(2, &Case::new([2, 8, 23, 29], [12, 8, 1, 1]).bias().relu());
    // Every dimension 1, residual only.
    run_case(3, &Case::new([1, 1, 1, 1], [1, 1, 1, 1]).residual());
}

#[test]
fn three_by_three_pad_1() {
    run_case(
        10,
        &Case::new([2, 4, 9, 11], [13, 4, 3, 3])
            .pad([1; 4])
            .bias()
            .relu(),
    );
    // The head's shape in miniature: 19×19, bias + residual + ReLU (a bottleneck's last step).
    run_case(
        11,
        &Case::new([1, 16, 19, 19], [40, 16, 3, 3])
            .pad([1; 4])
            .bias()
            .residual()
            .relu(),
    );
    // Two 64-row tiles (the second ragged) and two column tiles.
    run_case(
        13,
        &Case::new([1, 8, 9, 10], [70, 8, 3, 3])
            .pad([1; 4])
            .bias()
            .relu(),
    );
    // Kernel larger than the unpadded input.
    run_case(12, &Case::new([1, 2, 2, 2], [3, 2, 3, 3]).pad([1; 4]));
}

#[test]
fn patch_embed_4x4_stride_4() {
    // Bottom/right-only padding: 7 → 8 and Swin's own 127 → 128.
    run_case(
        20,
        &Case::new([1, 3, 7, 7], [10, 3, 4, 4])
            .stride((4, 4))
            .pad([0, 0, 1, 1])
            .bias(),
    );
    run_case(
        21,
        &Case::new([2, 3, 127, 127], [20, 3, 4, 4])
            .stride((4, 4))
            .pad([0, 0, 1, 1])
            .bias(),
    );
}

#[test]
fn asymmetric_stride_and_padding() {
    run_case(
        30,
        &Case::new([2, 3, 10, 8], [9, 3, 3, 2])
            .stride((2, 1))
            .pad([2, 0, 1, 3])
            .bias()
            .residual()
            .relu(),
    );
    // Rows of width 1 with side padding, K = 6 (repacked), stride larger than the kernel.
    run_case(
        31,
        &Case::new([3, 2, 1, 5], [4, 2, 1, 3])
            .pad([0, 1, 0, 1])
            .relu(),
    );
    run_case(
        32,
        &Case::new([1, 3, 11, 13], [5, 3, 2, 2])
            .stride((3, 3))
            .pad([1, 0, 0, 2]),
    );
}

#[test]
fn default_variant_and_options() {
    let g = gpu();
    let (xs, ws) = ([1, 3, 5, 6], [4, 3, 3, 3]);
    let x = rand_vec(40, 90, -1.0, 1.0);
    let w = rand_vec(41, 108, -1.0, 1.0);
    let want = cpu::conv2d(&x, xs, &w, ws, &cpu::ConvArgs::default());
    let bound: Vec<f64> = cpu::conv2d(&abs(&x), xs, &abs(&w), ws, &cpu::ConvArgs::default())
        .iter()
        .map(|&s| 2.0 * 30.0 * U * s as f64)
        .collect();
    let (xt, wt) = (g.upload(&xs, &x).unwrap(), g.upload(&ws, &w).unwrap());
    let mut enc = g.encoder();
    let y = conv::conv2d(&mut enc, &xt, &wt, &Conv2dOpts::default()).unwrap();
    assert_eq!(y.shape(), [1, 4, 3, 4]);
    let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
    assert_within("conv2d default", &got, &want, &bound);
}

struct BnHost {
    weight: Vec<f32>,
    bias: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
}

fn bn_host(seed: u64, c: usize) -> BnHost {
    BnHost {
        weight: rand_vec(seed, c, -2.0, 2.0),
        bias: rand_vec(seed + 1, c, -1.0, 1.0),
        mean: rand_vec(seed + 2, c, -1.0, 1.0),
        var: rand_vec(seed + 3, c, 0.05, 2.0),
    }
}

fn bn_upload(h: &BnHost) -> [Tensor; 4] {
    let g = gpu();
    let c = h.weight.len();
    [&h.weight, &h.bias, &h.mean, &h.var].map(|v| g.upload(&[c], v).unwrap())
}

fn bn_bound(x: &[f32], shape: &[usize], h: &BnHost, eps: f32) -> Vec<f64> {
    let hw: usize = shape[2..].iter().product();
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / hw) % shape[1];
            let s = (h.weight[c] as f64 / (h.var[c] as f64 + eps as f64).sqrt()).abs();
            16.0 * U * ((v as f64 - h.mean[c] as f64).abs() * s + h.bias[c].abs() as f64)
        })
        .collect()
}

#[test]
fn batch_norm_matches_reference() {
    let g = gpu();
    for (i, (shape, eps)) in [
        (vec![2usize, 5, 7, 3], 1e-5f32),
        (vec![1, 1, 1, 1], 1e-3),
        (vec![3, 17, 19, 19], 1e-5),
        (vec![4, 6], 1e-3),
    ]
    .into_iter()
    .enumerate()
    {
        let n: usize = shape.iter().product();
        let x = rand_vec(50 + i as u64, n, -3.0, 3.0);
        let h = bn_host(60 + 10 * i as u64, shape[1]);
        let want = cpu::batch_norm(&x, &shape, &h.weight, &h.bias, &h.mean, &h.var, eps);
        let [wt, bt, mt, vt] = bn_upload(&h);
        let bn = BatchNorm {
            weight: &wt,
            bias: &bt,
            mean: &mt,
            var: &vt,
            eps,
        };
        let xt = g.upload(&shape, &x).unwrap();
        let mut enc = g.encoder();
        let y = conv::batch_norm(&mut enc, &xt, &bn).unwrap();
        assert_eq!(y.shape(), &shape[..]);
        let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
        assert_within(
            &format!("batch_norm {shape:?}"),
            &got,
            &want,
            &bn_bound(&x, &shape, &h, eps),
        );
    }
}

#[test]
fn cpu_batch_norm_values() {
    // Hand-computed: (x − 1) / sqrt(3 + 1) · 4 + 0.5 = 2(x − 1) + 0.5.
    let y = cpu::batch_norm(
        &[1.0, 3.0, -1.0],
        &[1, 1, 3],
        &[4.0],
        &[0.5],
        &[1.0],
        &[3.0],
        1.0,
    );
    assert_eq!(y, vec![0.5, 4.5, -3.5]);
}

#[test]
fn folded_conv_equals_conv_then_batch_norm() {
    let g = gpu();
    let eps = 1e-5;
    for (seed, xs, ws, pad, with_bias) in [
        (
            70u64,
            [2usize, 6, 9, 7],
            [11usize, 6, 3, 3],
            [1usize; 4],
            true,
        ),
        (80, [1, 16, 19, 19], [24, 16, 1, 1], [0; 4], false),
    ] {
        let co = ws[0];
        let x = rand_vec(seed, xs.iter().product(), -1.0, 1.0);
        let w = rand_vec(seed + 1, ws.iter().product(), -1.0, 1.0);
        let b = rand_vec(seed + 2, co, -1.0, 1.0);
        let h = bn_host(seed + 3, co);
        let bias = with_bias.then_some(&b[..]);
        let (wf, bf) =
            conv::fold_batch_norm(&w, bias, co, &h.weight, &h.bias, &h.mean, &h.var, eps);
        assert_eq!((wf.len(), bf.len()), (w.len(), co));

        let args = cpu::ConvArgs {
            pad,
            bias,
            ..Default::default()
        };
        let os = cpu::out_shape(xs, ws, &args);
        let conv_ref = cpu::conv2d(&x, xs, &w, ws, &args);
        let want = cpu::batch_norm(&conv_ref, &os, &h.weight, &h.bias, &h.mean, &h.var, eps);
        let k = (ws[1] * ws[2] * ws[3]) as f64;
        let abs_b = abs(&bf);
        let abs_args = cpu::ConvArgs {
            pad,
            bias: Some(&abs_b[..]),
            ..Default::default()
        };
        let pix = os[2] * os[3];
        let bound: Vec<f64> = cpu::conv2d(&abs(&x), xs, &abs(&wf), ws, &abs_args)
            .iter()
            .enumerate()
            .map(|(i, &sum)| {
                let c = (i / pix) % co;
                let s = (h.weight[c] as f64 / (h.var[c] as f64 + eps as f64).sqrt()).abs();
                let b0 = bias.map_or(0.0, |b| b[c].abs() as f64);
                let bn_terms = (h.mean[c].abs() as f64 + b0) * s + h.bias[c].abs() as f64;
                4.0 * (k + 8.0) * U * sum as f64 + 16.0 * U * bn_terms + 1e-30
            })
            .collect();

        let xt = g.upload(&xs, &x).unwrap();
        let wt = g.upload(&ws, &w).unwrap();
        let bt = g.upload(&[co], &b).unwrap();
        let wft = g.upload(&ws, &wf).unwrap();
        let bft = g.upload(&[co], &bf).unwrap();
        let [bw, bb, bm, bv] = bn_upload(&h);
        let bn = BatchNorm {
            weight: &bw,
            bias: &bb,
            mean: &bm,
            var: &bv,
            eps,
        };
        for kernel in kernels() {
            let mut enc = g.encoder();
            let plain = Conv2dOpts {
                pad,
                bias: with_bias.then_some(&bt),
                ..Default::default()
            };
            let c = conv_by(&mut enc, kernel, &xt, &wt, &plain).unwrap();
            let two_step = conv::batch_norm(&mut enc, &c, &bn).unwrap();
            let folded = Conv2dOpts {
                pad,
                bias: Some(&bft),
                ..Default::default()
            };
            let one_step = conv_by(&mut enc, kernel, &xt, &wft, &folded).unwrap();
            let out = enc.submit_read(&[&two_step, &one_step]).unwrap();
            let what = format!("{kernel} x{xs:?} w{ws:?}");
            assert_within(&format!("folded {what}"), &out[1], &out[0], &bound);
            assert_within(&format!("folded vs f64 {what}"), &out[1], &want, &bound);
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let g = gpu();
    let x = g.zeros(&[1, 3, 5, 5]).unwrap();
    let w = g.zeros(&[4, 3, 3, 3]).unwrap();
    let expect = |r: sparsett::Result<Tensor>, op: &str, parts: &[&str]| {
        let e = r.expect_err("expected a shape error").to_string();
        assert!(e.starts_with(op), "{e}");
        for p in parts {
            assert!(e.contains(p), "'{e}' should mention {p}");
        }
    };
    let run = |x: &Tensor, w: &Tensor, o: &Conv2dOpts| {
        let mut enc = g.encoder();
        conv::conv2d_with(&mut enc, x, w, o, Variant::Register)
    };
    let d = Conv2dOpts::default();
    let w2 = g.zeros(&[4, 2, 3, 3]).unwrap();
    expect(
        run(&x, &w2, &d),
        "conv2d",
        &["[1, 3, 5, 5]", "[4, 2, 3, 3]"],
    );
    let big = g.zeros(&[4, 3, 7, 3]).unwrap();
    expect(
        run(&x, &big, &d),
        "conv2d",
        &["larger", "[1, 3, 5, 5]", "[4, 3, 7, 3]"],
    );
    let o = Conv2dOpts {
        stride: (1, 0),
        ..d
    };
    expect(run(&x, &w, &o), "conv2d", &["stride"]);
    let b = g.zeros(&[5]).unwrap();
    let o = Conv2dOpts {
        bias: Some(&b),
        ..d
    };
    expect(run(&x, &w, &o), "conv2d", &["bias", "[5]", "[4]"]);
    let r = g.zeros(&[1, 4, 5, 5]).unwrap();
    let o = Conv2dOpts {
        residual: Some(&r),
        ..d
    };
    expect(
        run(&x, &w, &o),
        "conv2d",
        &["residual", "[1, 4, 5, 5]", "[1, 4, 3, 3]"],
    );
    let x3 = g.zeros(&[3, 5, 5]).unwrap();
    expect(run(&x3, &w, &d), "conv2d", &["[3, 5, 5]"]);

    let (c4, c3) = (g.zeros(&[4]).unwrap(), g.zeros(&[3]).unwrap());
    let bn = BatchNorm {
        weight: &c3,
        bias: &c3,
        mean: &c4,
        var: &c3,
        eps: 1e-5,
    };
    let mut enc = g.encoder();
    expect(
        conv::batch_norm(&mut enc, &x, &bn),
        "batch_norm",
        &["mean", "[4]", "[1, 3, 5, 5]"],
    );
}

// ---------------------------------------------------------------------------------------------
// Backward. The CPU reference (`cpu::conv2d_backward`, scattering in f64) is checked against
// central differences of `cpu::conv2d_f64` (the helper's error is ~1e-10, see
// `reduce::numeric_grad`; we allow 1e-7). The GPU kernels gather in f32: a gradient element is a
// sum of `count` products of values in [−1, 1), off by at most count·u·Σ|terms| ≤ count²·u
// (u = 2⁻²⁴) in any order and ~u·count/4 typically; as for matmul we allow atol = 1e-6·count
// (count = Co·kh·kw for dx, N·Ho·Wo for dw and db), while a missed or doubled tap moves an
// element by one product, ~0.3 on average.

use sparsett::ops::conv::ConvGeometry;

use crate::common::assert_close;
use crate::reduce::{assert_fd, numeric_grad, to32, to64};

/// (input shape, weight shape, stride, padding [top, left, bottom, right])
type BwCase = ([usize; 4], [usize; 4], (usize, usize), [usize; 4]);

const BW_CASES: [BwCase; 7] = [
    // 1×1, odd sizes, batch 2
    ([2, 3, 5, 7], [4, 3, 1, 1], (1, 1), [0; 4]),
    // 3×3 "same"
    ([2, 3, 6, 5], [2, 3, 3, 3], (1, 1), [1; 4]),
    // 3×3 stride 2, asymmetric padding, non-square stride
    ([1, 2, 7, 6], [3, 2, 3, 3], (2, 1), [1, 0, 2, 1]),
    // stride larger than the kernel: some inputs get no gradient
    ([2, 1, 7, 7], [2, 1, 2, 2], (3, 3), [0; 4]),
    // the 4×4/4 patch embedding with bottom/right padding (9 → 12)
    ([1, 3, 9, 9], [5, 3, 4, 4], (4, 4), [0, 0, 3, 3]),
    // padding wider than the kernel reach on one side (rows of zeros at the border)
    ([1, 2, 4, 3], [2, 2, 3, 2], (1, 2), [2, 3, 0, 1]),
    // channels and K = Ci·kh·kw past the 64-wide GEMM tiles, batch 3 (the summed per-image path)
    ([3, 70, 9, 8], [66, 70, 3, 3], (1, 1), [1; 4]),
];

fn bw_out_shape(c: &BwCase) -> [usize; 4] {
    let a = cpu::ConvArgs {
        stride: c.2,
        pad: c.3,
        ..Default::default()
    };
    cpu::out_shape(c.0, c.1, &a)
}

#[test]
fn cpu_conv_backward_matches_finite_differences() {
    // The last case only exercises the GEMM tiling; finite differences over its 15k inputs
    // would take minutes and check nothing the small cases do not.
    for (k, c) in BW_CASES[..BW_CASES.len() - 1].iter().enumerate() {
        let (xs, ws, s, p) = *c;
        let seed = 900 + 10 * k as u64;
        let x = to64(&rand_vec(seed, xs.iter().product(), -1.0, 1.0));
        let w = to64(&rand_vec(seed + 1, ws.iter().product(), -1.0, 1.0));
        let os = bw_out_shape(c);
        let dy = to64(&rand_vec(seed + 2, os.iter().product(), -1.0, 1.0));
        let (dx, dw, db) = cpu::conv2d_backward(&x, xs, &w, ws, &dy, s, p);
        let fx = numeric_grad(|x| cpu::conv2d_f64(x, xs, &w, ws, s, p), &x, &dy);
        let fw = numeric_grad(|w| cpu::conv2d_f64(&x, xs, w, ws, s, p), &w, &dy);
        // The bias adds b[o] to every output pixel of channel o.
        let b0 = vec![0f64; ws[0]];
        let plane = os[2] * os[3];
        let with_bias = |b: &[f64]| {
            let mut y = cpu::conv2d_f64(&x, xs, &w, ws, s, p);
            for (i, v) in y.iter_mut().enumerate() {
                *v += b[(i / plane) % ws[0]];
            }
            y
        };
        let fb = numeric_grad(with_bias, &b0, &dy);
        assert_fd(&format!("case {k} dx"), &dx, &fx, 1e-7);
        assert_fd(&format!("case {k} dw"), &dw, &fw, 1e-7);
        assert_fd(&format!("case {k} db"), &db, &fb, 1e-7);
    }
}

#[test]
fn conv_backward_matches_cpu() {
    let g = gpu();
    for (k, c) in BW_CASES.iter().enumerate() {
        let (xs, ws, stride, pad) = *c;
        let seed = 1900 + 10 * k as u64;
        let x = rand_vec(seed, xs.iter().product(), -1.0, 1.0);
        let w = rand_vec(seed + 1, ws.iter().product(), -1.0, 1.0);
        let os = bw_out_shape(c);
        let dy = rand_vec(seed + 2, os.iter().product(), -1.0, 1.0);
        let (dx, dw, db) =
            cpu::conv2d_backward(&to64(&x), xs, &to64(&w), ws, &to64(&dy), stride, pad);
        let (xt, wt, dyt) = (
            g.upload(&xs, &x).unwrap(),
            g.upload(&ws, &w).unwrap(),
            g.upload(&os, &dy).unwrap(),
        );
        let geom = ConvGeometry { stride, pad };
        let mut enc = g.encoder();
        let gx = conv::conv2d_backward_input(&mut enc, &dyt, &wt, &xs, &geom, None).unwrap();
        let gw = conv::conv2d_backward_weight(&mut enc, &dyt, &xt, &ws, &geom, None).unwrap();
        let gb = conv::conv2d_backward_bias(&mut enc, &dyt, None).unwrap();
        assert_eq!(gx.shape(), xs);
        assert_eq!(gw.shape(), ws);
        assert_eq!(gb.shape(), [ws[0]]);
        let got = enc.submit_read(&[&gx, &gw, &gb]).unwrap();
        let count_x = ws[0] * ws[2] * ws[3];
        let count_w = os[0] * os[2] * os[3];
        let what = format!("case {k} {xs:?}*{ws:?} s{stride:?} p{pad:?}");
        assert_close(
            &format!("{what} dx"),
            &got[0],
            &to32(&dx),
            1e-6 * count_x as f32,
            0.0,
        );
        assert_close(
            &format!("{what} dw"),
            &got[1],
            &to32(&dw),
            1e-6 * count_w as f32,
            0.0,
        );
        assert_close(
            &format!("{what} db"),
            &got[2],
            &to32(&db),
            1e-6 * count_w as f32,
            0.0,
        );
    }
}

#[test]
fn conv_backward_accumulates_into_existing_gradients() {
    // Pointwise with a batch (GEMM straight into dx), 3×3 with a batch (fold, summed per-image
    // weight products), strided with batch 1 (weight GEMM straight into dw).
    for case in [0, 1, 2] {
        accumulate_case(case);
    }
}

fn accumulate_case(case: usize) {
    let g = gpu();
    let (xs, ws, stride, pad) = BW_CASES[case];
    let os = bw_out_shape(&BW_CASES[case]);
    let x = rand_vec(71, xs.iter().product(), -1.0, 1.0);
    let w = rand_vec(72, ws.iter().product(), -1.0, 1.0);
    let dy = rand_vec(73, os.iter().product(), -1.0, 1.0);
    let ix = rand_vec(74, x.len(), -2.0, 2.0);
    let iw = rand_vec(75, w.len(), -2.0, 2.0);
    let ib = rand_vec(76, ws[0], -2.0, 2.0);
    let (dx, dw, db) = cpu::conv2d_backward(&to64(&x), xs, &to64(&w), ws, &to64(&dy), stride, pad);
    let plus = |init: &[f32], d: &[f64]| -> Vec<f32> {
        init.iter()
            .zip(d)
            .map(|(&a, &b)| (a as f64 + b) as f32)
            .collect()
    };
    let (xt, wt, dyt) = (
        g.upload(&xs, &x).unwrap(),
        g.upload(&ws, &w).unwrap(),
        g.upload(&os, &dy).unwrap(),
    );
    let (tx, tw, tb) = (
        g.upload(&xs, &ix).unwrap(),
        g.upload(&ws, &iw).unwrap(),
        g.upload(&[ws[0]], &ib).unwrap(),
    );
    let geom = ConvGeometry { stride, pad };
    let mut enc = g.encoder();
    let gx = conv::conv2d_backward_input(&mut enc, &dyt, &wt, &xs, &geom, Some(&tx)).unwrap();
    let gw = conv::conv2d_backward_weight(&mut enc, &dyt, &xt, &ws, &geom, Some(&tw)).unwrap();
    let gb = conv::conv2d_backward_bias(&mut enc, &dyt, Some(&tb)).unwrap();
    let got = enc.submit_read(&[&gx, &gw, &gb, &tx]).unwrap();
    // One more rounding (the add) on values up to ~|init| + |grad|: covered by the same atol.
    let count_x = (ws[0] * ws[2] * ws[3]) as f32;
    let count_w = (os[0] * os[2] * os[3]) as f32;
    assert_close(
        &format!("case {case} dx into"),
        &got[0],
        &plus(&ix, &dx),
        1e-6 * count_x + 1e-6,
        0.0,
    );
    assert_close(
        &format!("case {case} dw into"),
        &got[1],
        &plus(&iw, &dw),
        1e-6 * count_w + 1e-6,
        0.0,
    );
    assert_close(
        &format!("case {case} db into"),
        &got[2],
        &plus(&ib, &db),
        1e-6 * count_w + 1e-6,
        0.0,
    );
    // The returned tensor is the one passed in.
    assert_eq!(got[0], got[3]);
}

#[test]
fn conv_backward_rejects_bad_shapes() {
    let g = gpu();
    let w = g.upload(&[2, 3, 3, 3], &[0.0; 54]).unwrap();
    let x = g.upload(&[1, 3, 5, 5], &[0.0; 75]).unwrap();
    let dy_bad = g.upload(&[1, 2, 4, 4], &[0.0; 32]).unwrap();
    let geom = ConvGeometry::default();
    let mut enc = g.encoder();
    let e = conv::conv2d_backward_input(&mut enc, &dy_bad, &w, &[1, 3, 5, 5], &geom, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dy [1, 2, 4, 4]"), "{e}");
    let dy = g.upload(&[1, 2, 3, 3], &[0.0; 18]).unwrap();
    let e = conv::conv2d_backward_weight(&mut enc, &dy, &x, &[2, 4, 3, 3], &geom, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("channels"), "{e}");
    let e = conv::conv2d_backward_input(&mut enc, &dy, &w, &[1, 3, 5], &geom, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("4-D"), "{e}");
    // Accumulating into an operand is refused.
    let e = conv::conv2d_backward_weight(&mut enc, &dy, &x, &[2, 3, 3, 3], &geom, Some(&x))
        .unwrap_err()
        .to_string();
    assert!(e.contains("into"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Batch norm, training mode and the backward passes. CPU references (f64, the textbook chain
// rule through mean and variance) are checked by central differences to 1e-7 as above. GPU vs
// CPU: every per-channel statistic is an f32 sum of `cnt` terms (N·H·W values per channel),
// relatively off by ≲ cnt·u; normalising multiplies by |x̂| ≤ √cnt and the backward combines
// three such sums. We allow atol = rtol = 1e-6·cnt (≥ 8·cnt·u·√cnt for the sizes here), while a
// missed term or a wrong variance (biased vs unbiased alone changes r by cnt/(cnt − 1)) is
// orders of magnitude above it. Running statistics: one f32 blend of the batch statistic, same
// bound.

use sparsett::ops::conv::{BatchNormInto, BatchNormTrain};

/// Shapes of the batch-norm tests: spatial NCHW with batch > 1, odd 3-D, 2-D (one value per
/// sample and channel), a batch of one with a spatial map.
const BN_SHAPES: [&[usize]; 4] = [&[2, 3, 4, 5], &[3, 4, 7], &[5, 3], &[1, 2, 3, 3]];

fn bn_count(shape: &[usize]) -> usize {
    shape.iter().product::<usize>() / shape[1]
}

#[test]
fn cpu_batch_norm_backward_matches_finite_differences() {
    let eps = 1e-5;
    for (k, &shape) in BN_SHAPES.iter().enumerate() {
        let c = shape[1];
        let n: usize = shape.iter().product();
        let seed = 3000 + 10 * k as u64;
        // An offset per tensor so that the mean does not vanish.
        let x: Vec<f64> = to64(&rand_vec(seed, n, -1.0, 1.5));
        let w = to64(&rand_vec(seed + 1, c, 0.5, 1.5));
        let b = to64(&rand_vec(seed + 2, c, -1.0, 1.0));
        let dy = to64(&rand_vec(seed + 3, n, -1.0, 1.0));
        let (dx, dw, db) = cpu::batch_norm_train_backward(&x, shape, &w, &dy, eps);
        let f = |x: &[f64], w: &[f64], b: &[f64]| cpu::batch_norm_train_f64(x, shape, w, b, eps);
        assert_fd(
            &format!("train {shape:?} dx"),
            &dx,
            &numeric_grad(|x| f(x, &w, &b), &x, &dy),
            1e-7,
        );
        assert_fd(
            &format!("train {shape:?} dw"),
            &dw,
            &numeric_grad(|w| f(&x, w, &b), &w, &dy),
            1e-7,
        );
        assert_fd(
            &format!("train {shape:?} db"),
            &db,
            &numeric_grad(|b| f(&x, &w, b), &b, &dy),
            1e-7,
        );

        let mean = to64(&rand_vec(seed + 4, c, -0.5, 0.5));
        let var = to64(&rand_vec(seed + 5, c, 0.2, 2.0));
        let hw = n / (shape[0] * c);
        let frozen = |x: &[f64], w: &[f64], b: &[f64]| -> Vec<f64> {
            x.iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = (i / hw) % c;
                    (v - mean[ch]) / (var[ch] + eps).sqrt() * w[ch] + b[ch]
                })
                .collect()
        };
        let (dx, dw, db) = cpu::batch_norm_frozen_backward(&x, shape, &w, &mean, &var, &dy, eps);
        assert_fd(
            &format!("frozen {shape:?} dx"),
            &dx,
            &numeric_grad(|x| frozen(x, &w, &b), &x, &dy),
            1e-7,
        );
        assert_fd(
            &format!("frozen {shape:?} dw"),
            &dw,
            &numeric_grad(|w| frozen(&x, w, &b), &w, &dy),
            1e-7,
        );
        assert_fd(
            &format!("frozen {shape:?} db"),
            &db,
            &numeric_grad(|b| frozen(&x, &w, b), &b, &dy),
            1e-7,
        );
    }
}

#[test]
fn batch_norm_train_forward_and_running_stats() {
    let g = gpu();
    let eps = 1e-5f32;
    for (k, &shape) in BN_SHAPES.iter().enumerate() {
        for momentum in [0.1f32, 0.35] {
            let c = shape[1];
            let n: usize = shape.iter().product();
            let cnt = bn_count(shape);
            let seed = 4000 + 10 * k as u64;
            let x = rand_vec(seed, n, -1.0, 1.5);
            let w = rand_vec(seed + 1, c, 0.5, 1.5);
            let b = rand_vec(seed + 2, c, -1.0, 1.0);
            let rm = rand_vec(seed + 3, c, -0.5, 0.5);
            let rv = rand_vec(seed + 4, c, 0.5, 2.0);
            let want =
                cpu::batch_norm_train_f64(&to64(&x), shape, &to64(&w), &to64(&b), eps as f64);
            // PyTorch: running = (1 − m)·running + m·batch, the variance unbiased (cnt − 1).
            let st = cpu::channel_stats(&to64(&x), shape);
            let m = momentum as f64;
            let want_rm: Vec<f64> = (0..c)
                .map(|i| (1.0 - m) * rm[i] as f64 + m * st[i].0)
                .collect();
            let unbiased = cnt as f64 / (cnt as f64 - 1.0);
            let want_rv: Vec<f64> = (0..c)
                .map(|i| (1.0 - m) * rv[i] as f64 + m * st[i].1 * unbiased)
                .collect();
            let want_stats: Vec<f64> = st
                .iter()
                .flat_map(|&(mu, var)| [mu, 1.0 / (var + eps as f64).sqrt()])
                .collect();

            let (xt, wt, bt) = (
                g.upload(shape, &x).unwrap(),
                g.upload(&[c], &w).unwrap(),
                g.upload(&[c], &b).unwrap(),
            );
            let (rmt, rvt) = (g.upload(&[c], &rm).unwrap(), g.upload(&[c], &rv).unwrap());
            let bn = BatchNormTrain {
                weight: &wt,
                bias: &bt,
                running_mean: &rmt,
                running_var: &rvt,
                momentum,
                eps,
            };
            let mut enc = g.encoder();
            let (y, stats) = conv::batch_norm_train(&mut enc, &xt, &bn).unwrap();
            assert_eq!(y.shape(), shape);
            assert_eq!(stats.shape(), [c, 2]);
            let got = enc.submit_read(&[&y, &stats, &rmt, &rvt]).unwrap();
            let tol = 1e-6 * cnt as f32;
            let what = format!("{shape:?} m={momentum}");
            assert_close(&format!("{what} y"), &got[0], &to32(&want), tol, tol);
            assert_close(
                &format!("{what} stats"),
                &got[1],
                &to32(&want_stats),
                tol,
                tol,
            );
            assert_close(
                &format!("{what} running_mean"),
                &got[2],
                &to32(&want_rm),
                tol,
                tol,
            );
            assert_close(
                &format!("{what} running_var"),
                &got[3],
                &to32(&want_rv),
                tol,
                tol,
            );
        }
    }
}

/// (dx, dweight, dbias) from the GPU, training mode (`frozen` None) or frozen with
/// (mean, var), optionally added into the given initial gradients.
fn gpu_bn_backward(
    shape: &[usize],
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    frozen: Option<(&[f32], &[f32])>,
    init: [Option<&[f32]>; 3],
) -> Vec<Vec<f32>> {
    let g = gpu();
    let c = shape[1];
    let eps = 1e-5;
    let (xt, wt, dyt) = (
        g.upload(shape, x).unwrap(),
        g.upload(&[c], w).unwrap(),
        g.upload(shape, dy).unwrap(),
    );
    let it: Vec<Option<sparsett::Tensor>> = init
        .iter()
        .zip([shape, &[c][..], &[c][..]])
        .map(|(v, s)| v.map(|v| g.upload(s, v).unwrap()))
        .collect();
    let into = BatchNormInto {
        dx: it[0].as_ref(),
        dweight: it[1].as_ref(),
        dbias: it[2].as_ref(),
    };
    let zeros = g.upload(&[c], &vec![0.0; c]).unwrap();
    let mut enc = g.encoder();
    let grads = match frozen {
        None => {
            let rm = g.upload(&[c], &vec![0.0; c]).unwrap();
            let rv = g.upload(&[c], &vec![1.0; c]).unwrap();
            let bn = BatchNormTrain {
                weight: &wt,
                bias: &zeros,
                running_mean: &rm,
                running_var: &rv,
                momentum: 0.1,
                eps,
            };
            let (_, stats) = conv::batch_norm_train(&mut enc, &xt, &bn).unwrap();
            conv::batch_norm_train_backward(&mut enc, &xt, &wt, &stats, &dyt, &into).unwrap()
        }
        Some((mean, var)) => {
            let (mt, vt) = (g.upload(&[c], mean).unwrap(), g.upload(&[c], var).unwrap());
            let bn = BatchNorm {
                weight: &wt,
                bias: &zeros,
                mean: &mt,
                var: &vt,
                eps,
            };
            conv::batch_norm_frozen_backward(&mut enc, &xt, &bn, &dyt, &into).unwrap()
        }
    };
    assert_eq!(grads.dx.shape(), shape);
    assert_eq!(grads.dweight.shape(), [c]);
    assert_eq!(grads.dbias.shape(), [c]);
    enc.submit_read(&[&grads.dx, &grads.dweight, &grads.dbias])
        .unwrap()
}

#[test]
fn batch_norm_backward_matches_cpu() {
    for (k, &shape) in BN_SHAPES.iter().enumerate() {
        let c = shape[1];
        let n: usize = shape.iter().product();
        let cnt = bn_count(shape);
        let seed = 5000 + 10 * k as u64;
        let x = rand_vec(seed, n, -1.0, 1.5);
        let w = rand_vec(seed + 1, c, 0.5, 1.5);
        let dy = rand_vec(seed + 2, n, -1.0, 1.0);
        let mean = rand_vec(seed + 3, c, -0.5, 0.5);
        let var = rand_vec(seed + 4, c, 0.2, 2.0);
        let (x64, w64, dy64) = (to64(&x), to64(&w), to64(&dy));
        let tol = 1e-6 * cnt as f32;

        let (dx, dw, db) = cpu::batch_norm_train_backward(&x64, shape, &w64, &dy64, 1e-5);
        let got = gpu_bn_backward(shape, &x, &w, &dy, None, [None; 3]);
        assert_close(
            &format!("train {shape:?} dx"),
            &got[0],
            &to32(&dx),
            tol,
            tol,
        );
        assert_close(
            &format!("train {shape:?} dw"),
            &got[1],
            &to32(&dw),
            tol,
            tol,
        );
        assert_close(
            &format!("train {shape:?} db"),
            &got[2],
            &to32(&db),
            tol,
            tol,
        );

        let (dx, dw, db) = cpu::batch_norm_frozen_backward(
            &x64,
            shape,
            &w64,
            &to64(&mean),
            &to64(&var),
            &dy64,
            1e-5,
        );
        let got = gpu_bn_backward(shape, &x, &w, &dy, Some((&mean, &var)), [None; 3]);
        assert_close(
            &format!("frozen {shape:?} dx"),
            &got[0],
            &to32(&dx),
            tol,
            tol,
        );
        assert_close(
            &format!("frozen {shape:?} dw"),
            &got[1],
            &to32(&dw),
            tol,
            tol,
        );
        assert_close(
            &format!("frozen {shape:?} db"),
            &got[2],
            &to32(&db),
            tol,
            tol,
        );
    }
}

#[test]
fn batch_norm_backward_accumulates() {
    let shape: &[usize] = &[2, 3, 2, 3];
    let (c, n, cnt) = (3, 36, 12);
    let x = rand_vec(61, n, -1.0, 1.5);
    let w = rand_vec(62, c, 0.5, 1.5);
    let dy = rand_vec(63, n, -1.0, 1.0);
    let ix = rand_vec(64, n, -2.0, 2.0);
    let iw = rand_vec(65, c, -2.0, 2.0);
    let ib = rand_vec(66, c, -2.0, 2.0);
    let (dx, dw, db) =
        cpu::batch_norm_train_backward(&to64(&x), shape, &to64(&w), &to64(&dy), 1e-5);
    let plus = |init: &[f32], d: &[f64]| -> Vec<f32> {
        init.iter()
            .zip(d)
            .map(|(&a, &b)| (a as f64 + b) as f32)
            .collect()
    };
    let tol = 1e-6 * cnt as f32;
    // Every combination, including only one of the two parameter gradients accumulating (the
    // kernel then runs one pass per destination).
    for mask in 0..8u32 {
        let init = [&ix[..], &iw, &ib];
        let init: [Option<&[f32]>; 3] =
            std::array::from_fn(|i| (mask & (1 << i) != 0).then_some(init[i]));
        let got = gpu_bn_backward(shape, &x, &w, &dy, None, init);
        let want = |bit: u32, init: &[f32], d: &[f64]| {
            if mask & bit != 0 {
                plus(init, d)
            } else {
                to32(d)
            }
        };
        assert_close(
            &format!("mask {mask} dx"),
            &got[0],
            &want(1, &ix, &dx),
            tol,
            tol,
        );
        assert_close(
            &format!("mask {mask} dw"),
            &got[1],
            &want(2, &iw, &dw),
            tol,
            tol,
        );
        assert_close(
            &format!("mask {mask} db"),
            &got[2],
            &want(4, &ib, &db),
            tol,
            tol,
        );
    }
}

#[test]
fn batch_norm_train_rejects_single_values() {
    let g = gpu();
    let x = g.upload(&[1, 2, 1, 1], &[0.5, 0.25]).unwrap();
    let p = g.upload(&[2], &[1.0, 1.0]).unwrap();
    let (rm, rv) = (
        g.upload(&[2], &[0.0; 2]).unwrap(),
        g.upload(&[2], &[1.0; 2]).unwrap(),
    );
    let bn = BatchNormTrain {
        weight: &p,
        bias: &p,
        running_mean: &rm,
        running_var: &rv,
        momentum: 0.1,
        eps: 1e-5,
    };
    let mut enc = g.encoder();
    let e = conv::batch_norm_train(&mut enc, &x, &bn)
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than one"), "{e}");
    let x = g.upload(&[2, 2], &[0.5, 0.25, 1.0, 2.0]).unwrap();
    let bad = BatchNormTrain {
        momentum: 1.5,
        ..bn
    };
    let e = conv::batch_norm_train(&mut enc, &x, &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("momentum"), "{e}");
}
