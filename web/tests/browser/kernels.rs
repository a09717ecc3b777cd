//! Kernel parity: the WGSL kernels on the page's WebGPU adapter (headless Chromium's SwiftShader
//! in CI, ~0.2 GFLOP/s, so shapes are small) against the plain-loop CPU references of
//! `sparsett::ops::<family>::cpu`, for every kernel the adapter can run.
//!
//! Tolerances are the native suite's (`tests/ops/*.rs`, where each is derived): WebGPU promises
//! the same WGSL precision as Vulkan (exp within 3 + 2|x| ulp, correctly rounded f32 add, mul and
//! fma, division and sqrt within 2.5 ulp), so a bound that holds for any conforming adapter holds
//! here. Exact checks (top-K selection, the crop) stay exact.

use sparsett::ops::attention::{self, AttnOpts};
use sparsett::ops::conv::{self, Conv2dOpts, RegisterKernel};
use sparsett::ops::crop::{self, CropSpec};
use sparsett::ops::matmul::{self, Activation, Epilogue, Kernel};
use sparsett::ops::{norm, softmax, topk, HeadsView};
use sparsett::prng::SplitMix64;
use sparsett::Variant;
use wasm_bindgen_test::*;

use crate::{assert_close, gpu, rand_vec, read, read_u32};

/// Matmul with the full epilogue (bias, row bias, GELU, residual), batched and transposed, on
/// every kernel the adapter supports. Tolerance (tests/ops/matmul.rs): atol 1e-6·K for the K-term
/// dot product, rtol 1e-5 for the epilogue's roundings and GELU's erf.
#[wasm_bindgen_test]
async fn matmul_matches_reference() {
    let g = gpu().await;
    // (batch, m, k, n, a batched, b batched, trans_b): odd sizes that fill no tile.
    let cases = [
        (1, 5, 7, 3, false, false, false),
        (2, 33, 17, 19, true, false, true),
        (3, 8, 40, 12, true, true, false),
    ];
    for (ci, &(batch, m, k, n, ab, bb, tb)) in cases.iter().enumerate() {
        let seed = 10 * ci as u64;
        let a = rand_vec(seed, if ab { batch } else { 1 } * m * k, -1.0, 1.0);
        let b = rand_vec(seed + 1, if bb { batch } else { 1 } * k * n, -1.0, 1.0);
        let bias = rand_vec(seed + 2, n, -1.0, 1.0);
        let row_bias = rand_vec(seed + 3, m, -1.0, 1.0);
        let batched = ab || bb;
        let out_shape = if batched {
            vec![batch, m, n]
        } else {
            vec![m, n]
        };
        let res = rand_vec(seed + 4, batch * m * n, -1.0, 1.0);
        let shape = |bt: bool, r, c| if bt { vec![batch, r, c] } else { vec![r, c] };
        let at = g.upload(&shape(ab, m, k), &a).unwrap();
        let bt = g
            .upload(&if tb { shape(bb, n, k) } else { shape(bb, k, n) }, &b)
            .unwrap();
        let bias_t = g.upload(&[n], &bias).unwrap();
        let rb_t = g.upload(&[m], &row_bias).unwrap();
        let res_t = g.upload(&out_shape, &res).unwrap();
        let act = [Activation::None, Activation::Gelu, Activation::Relu][ci % 3];
        let epi = Epilogue {
            bias: Some(&bias_t),
            row_bias: Some(&rb_t),
            act,
            residual: Some(&res_t),
            ..Default::default()
        };
        let want = matmul::cpu::matmul(
            &a,
            &b,
            batch,
            m,
            k,
            n,
            ab,
            bb,
            tb,
            &matmul::cpu::Epilogue {
                bias: Some(&bias),
                row_bias: Some(&row_bias),
                act,
                residual: Some(&res),
            },
        );
        for kernel in Kernel::ALL.into_iter().filter(|kr| kr.supported(&g)) {
            let mut enc = g.encoder();
            let y = matmul::matmul_kernel(&mut enc, &at, &bt, tb, &epi, kernel).unwrap();
            assert_eq!(y.shape(), out_shape.as_slice());
            let got = read(enc, &[&y]).await.remove(0);
            let what = format!("matmul {kernel:?} case {ci} ({batch}×{m}×{k}×{n}, {act:?})");
            assert_close(&what, &got, &want, 1e-6 * k as f32, 1e-5);
        }
    }
}

/// Row softmax; inputs span 16 around an offset of 1000 in one case (a missing max subtraction
/// overflows). Tolerance (tests/ops/softmax.rs): 1e-9 + 2e-5·|want|.
#[wasm_bindgen_test]
async fn softmax_matches_reference() {
    let g = gpu().await;
    for (i, (shape, offset)) in [
        (&[3usize, 7][..], 0.0f32),
        (&[2, 3, 33], 0.0),
        (&[4, 361], 1000.0),
    ]
    .into_iter()
    .enumerate()
    {
        let n = *shape.last().unwrap();
        let x: Vec<f32> = rand_vec(300 + i as u64, shape.iter().product(), -8.0, 8.0)
            .iter()
            .map(|v| v + offset)
            .collect();
        let want = softmax::cpu::softmax(&x, n);
        let xt = g.upload(shape, &x).unwrap();
        for v in Variant::ALL {
            let mut enc = g.encoder();
            let y = softmax::softmax_with(&mut enc, &xt, v).unwrap();
            let got = read(enc, &[&y]).await.remove(0);
            assert_close(&format!("softmax {v:?} {shape:?}"), &got, &want, 1e-9, 2e-5);
        }
    }
}

/// LayerNorm and the fused add + LayerNorm, rows offset by up to ±1000 (a naive E[x²] − E[x]²
/// fails there). Tolerance (tests/ops/norm.rs): 1e-5 + 1e-5·|want|.
#[wasm_bindgen_test]
async fn layer_norm_matches_reference() {
    let g = gpu().await;
    for (i, (shape, offset)) in [
        (&[3usize, 5][..], 0.0f32),
        (&[2, 3, 96], 50.0),
        (&[5, 300], -1000.0),
    ]
    .into_iter()
    .enumerate()
    {
        let c = *shape.last().unwrap();
        let n: usize = shape.iter().product();
        let seed = 100 + 10 * i as u64;
        let x: Vec<f32> = rand_vec(seed, n, -2.0, 2.0)
            .iter()
            .map(|v| v + offset)
            .collect();
        let r = rand_vec(seed + 3, n, -1.0, 1.0);
        let w = rand_vec(seed + 1, c, 0.5, 1.5);
        let b = rand_vec(seed + 2, c, -1.0, 1.0);
        let want = norm::cpu::layer_norm(&x, c, &w, &b, 1e-5);
        let want_add = norm::cpu::add_layer_norm(&x, &r, c, &w, &b, 1e-5);
        let (xt, rt) = (g.upload(shape, &x).unwrap(), g.upload(shape, &r).unwrap());
        let (wt, bt) = (g.upload(&[c], &w).unwrap(), g.upload(&[c], &b).unwrap());
        for v in Variant::ALL {
            let mut enc = g.encoder();
            let y = norm::layer_norm_with(&mut enc, &xt, &wt, &bt, 1e-5, v).unwrap();
            let ya = norm::add_layer_norm_with(&mut enc, &xt, &rt, &wt, &bt, 1e-5, v).unwrap();
            let got = read(enc, &[&y, &ya]).await;
            let what = format!("layer_norm {v:?} {shape:?}");
            assert_close(&what, &got[0], &want, 1e-5, 1e-5);
            assert_close(&format!("add_{what}"), &got[1], &want_add, 1e-5, 1e-5);
        }
    }
}

/// Fused multi-head attention on a packed qkv tensor with relative-position bias and a window
/// mask, on every kernel the shapes allow. Tolerance (tests/ops/attention.rs): atol 3e-5,
/// rtol 1e-4 (D = 32 logits, Lk ≤ 64 keys).
#[wasm_bindgen_test]
async fn attention_matches_reference() {
    let g = gpu().await;
    let (batch, len, heads, hd) = (4, 49, 2, 32);
    let width = heads * hd;
    let windows = 2;
    let qkv = rand_vec(7, batch * len * 3 * width, -1.0, 1.0);
    let bias = rand_vec(8, heads * len * len, -2.0, 2.0);
    // Window masks as Swin builds them: 0 within a region, −100 across regions.
    let mask: Vec<f32> = (0..windows * len * len)
        .map(|e| {
            let (w, i, j) = (e / (len * len), e / len % len, e % len);
            if w > 0 && (i < 20) != (j < 20) {
                -100.0
            } else {
                0.0
            }
        })
        .collect();
    let scale = 1.0 / (hd as f32).sqrt();
    let view = |index| attention::cpu::View {
        data: &qkv,
        batch,
        len,
        stride: 3 * width,
        offset: index * width,
    };
    let want = attention::cpu::attention(
        view(0),
        view(1),
        view(2),
        width,
        heads,
        scale,
        Some(&bias),
        Some(&mask),
    );
    let t = g.upload(&[batch, len, 3 * width], &qkv).unwrap();
    let bias_t = g.upload(&[heads, len, len], &bias).unwrap();
    let mask_t = g.upload(&[windows, len, len], &mask).unwrap();
    let opts = AttnOpts {
        heads,
        scale,
        bias: Some(&bias_t),
        mask: Some(&mask_t),
        scatter: None,
    };
    let mut kernels = vec![attention::Kernel::Tiled, attention::Kernel::Register];
    if attention::subgroup_kernel_available(&g) {
        kernels.push(attention::Kernel::RegisterSubgroup);
    }
    for kernel in kernels {
        let hv = |i| HeadsView::packed(&t, 3, i).unwrap();
        let mut enc = g.encoder();
        let y = attention::attention_kernel(&mut enc, hv(0), hv(1), hv(2), &opts, kernel).unwrap();
        assert_eq!(y.shape(), [batch, len, width]);
        let got = read(enc, &[&y]).await.remove(0);
        assert_close(&format!("attention {kernel:?}"), &got, &want, 3e-5, 1e-4);
    }
}

/// Top-K selection is exact (values copied, order (value desc, index asc)), on rows with ties,
/// ±0 and −inf.
#[wasm_bindgen_test]
async fn topk_select_is_exact() {
    let g = gpu().await;
    let n = 45;
    let mut x = rand_vec(7, 9 * n, -1.0, 1.0);
    for v in x.iter_mut().skip(3).step_by(4) {
        *v = (*v * 4.0).round(); // many exact ties, ±0 among them
    }
    for v in x.iter_mut().skip(5).step_by(11) {
        *v = f32::NEG_INFINITY;
    }
    let xt = g.upload(&[9, n], &x).unwrap();
    for variant in Variant::ALL {
        for k in [1, 8, 32] {
            let mut enc = g.encoder();
            let (vals, idx) = topk::topk_select_with(&mut enc, &xt, k, variant).unwrap();
            let got_v = read(enc, &[&vals]).await.remove(0);
            let got_i = read_u32(&g, &idx).await;
            let (want_v, want_i) = topk::cpu::topk_select(&x, n, k);
            assert_eq!(got_i, want_i, "topk_select {variant:?} K {k}: indices");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got_v),
                bits(&want_v),
                "topk_select {variant:?} K {k}: values"
            );
        }
    }
}

/// Top-K sparse attention (tests/ops/topk.rs): the GPU logits within their rounding bound
/// δ = (D + 2)·2⁻²⁴·Σ|scale·q·k| of the exact ones, the picks exactly the selection on the GPU's
/// own logits, weights within 1e-7 + 1e-5·|w| and out within 4e-5 of the f64 softmax on them.
#[wasm_bindgen_test]
async fn topk_attention_matches_reference() {
    let g = gpu().await;
    let (batch, len, heads, hd, keep) = (1, 40, 2, 16, 8);
    let width = heads * hd;
    let x = rand_vec(21, batch * len * 3 * width, -2.0, 2.0);
    let t = g.upload(&[batch, len, 3 * width], &x).unwrap();
    let scale = 1.0 / (hd as f32).sqrt();
    let cv = |data, index| topk::cpu::View {
        data,
        batch,
        len,
        stride: 3 * width,
        offset: index * width,
    };
    let exact = topk::cpu::topk_logits(cv(&x, 0), cv(&x, 1), heads, hd, scale);
    let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let u = (hd as f64 + 2.0) * 2f64.powi(-24);
    let delta: Vec<f64> = topk::cpu::topk_logits(cv(&xa, 0), cv(&xa, 1), heads, hd, scale)
        .iter()
        .map(|s| s * u)
        .collect();
    for variant in Variant::ALL {
        let hv = |i| HeadsView::packed(&t, 3, i).unwrap();
        let mut enc = g.encoder();
        let logits =
            topk::topk_attention_logits(&mut enc, hv(0), hv(1), hv(2), heads, keep, scale, variant)
                .unwrap();
        let r =
            topk::topk_attention_with(&mut enc, hv(0), hv(1), hv(2), heads, keep, scale, variant)
                .unwrap();
        let got = read(enc, &[&logits, &r.out, &r.weights]).await;
        let gidx = read_u32(&g, &r.indices).await;
        let what = format!("topk_attention {variant:?}");
        for (e, ((&gl, &x), &d)) in got[0].iter().zip(&exact).zip(&delta).enumerate() {
            assert!(
                (gl as f64 - x).abs() <= d,
                "{what}: logit {e} is {gl}, exact {x}, bound {d}"
            );
        }
        let own: Vec<u32> = got[0]
            .chunks(len)
            .flat_map(|row| topk::cpu::top_indices(row, keep))
            .collect();
        assert_eq!(
            gidx, own,
            "{what}: picks differ from the selection on the GPU logits"
        );
        let glog: Vec<f64> = got[0].iter().map(|&v| v as f64).collect();
        let want = topk::cpu::topk_attend(&glog, &gidx, cv(&x, 2), heads, hd, len, keep);
        assert_close(
            &format!("{what} weights"),
            &got[2],
            &want.weights,
            1e-7,
            1e-5,
        );
        assert_close(&format!("{what} out"), &got[1], &want.out, 4e-5, 0.0);
    }
}

/// conv2d (stride 2, asymmetric padding, bias, residual, ReLU) on every implementation. Bound
/// (tests/ops/conv.rs): 2·(K + 3)·2⁻²⁴·Σ|terms| per element, Σ|terms| the reference on |inputs|.
#[wasm_bindgen_test]
async fn conv2d_matches_reference() {
    let g = gpu().await;
    let (xs, ws) = ([2usize, 3, 11, 9], [5usize, 3, 3, 3]);
    let (stride, pad) = ((2, 1), [1, 0, 2, 1]);
    let x = rand_vec(31, xs.iter().product(), -1.0, 1.0);
    let w = rand_vec(32, ws.iter().product(), -1.0, 1.0);
    let b = rand_vec(33, ws[0], -1.0, 1.0);
    let args = conv::cpu::ConvArgs {
        stride,
        pad,
        ..Default::default()
    };
    let os = conv::cpu::out_shape(xs, ws, &args);
    let r = rand_vec(34, os.iter().product(), -1.0, 1.0);
    let want = conv::cpu::conv2d(
        &x,
        xs,
        &w,
        ws,
        &conv::cpu::ConvArgs {
            bias: Some(&b),
            residual: Some(&r),
            relu: true,
            ..args
        },
    );
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
    let (xa, wa, ba, ra) = (abs(&x), abs(&w), abs(&b), abs(&r));
    let magnitude = conv::cpu::conv2d(
        &xa,
        xs,
        &wa,
        ws,
        &conv::cpu::ConvArgs {
            bias: Some(&ba),
            residual: Some(&ra),
            ..args
        },
    );
    let k = (ws[1] * ws[2] * ws[3]) as f64;
    let u = 2f64.powi(-24);
    let xt = g.upload(&xs, &x).unwrap();
    let wt = g.upload(&ws, &w).unwrap();
    let bt = g.upload(&[ws[0]], &b).unwrap();
    let rt = g.upload(&os, &r).unwrap();
    let opts = Conv2dOpts {
        stride,
        pad,
        bias: Some(&bt),
        relu: true,
        residual: Some(&rt),
    };
    let mut kernels = vec!["register-plain", "tiled"];
    if RegisterKernel::for_gpu(&g) == RegisterKernel::Subgroup {
        kernels.push("register-subgroup");
    }
    for kernel in kernels {
        let mut enc = g.encoder();
        let y = match kernel {
            "register-plain" => {
                conv::conv2d_register(&mut enc, &xt, &wt, &opts, RegisterKernel::Plain)
            }
            "register-subgroup" => {
                conv::conv2d_register(&mut enc, &xt, &wt, &opts, RegisterKernel::Subgroup)
            }
            _ => conv::conv2d_with(&mut enc, &xt, &wt, &opts, Variant::Tiled),
        }
        .unwrap();
        assert_eq!(y.shape(), os.as_slice());
        let got = read(enc, &[&y]).await.remove(0);
        for (i, ((&gv, &wv), &m)) in got.iter().zip(&want).zip(&magnitude).enumerate() {
            let bound = 2.0 * (k + 3.0) * u * m as f64 + 1e-30;
            let d = (gv as f64 - wv as f64).abs();
            assert!(
                d <= bound,
                "conv2d {kernel}: element {i} is {gv}, expected {wv} (|diff| {d:e} > {bound:e})"
            );
        }
    }
}

/// The tracker's crop (OpenCV warpAffine + normalisation) is bit-exact against its reference on
/// a random frame, with the window partly outside the frame (border colour) and a fractional
/// scale; normalisation with the model's mean/std is the reference's bytes mapped through
/// `(u8 − mean) / std` in f32.
#[wasm_bindgen_test]
async fn crop_matches_reference_exactly() {
    let g = gpu().await;
    let (w, h) = (37usize, 23usize);
    let mut rng = SplitMix64::new(5);
    let rgb: Vec<u8> = (0..w * h * 3)
        .map(|_| (rng.next_u64() % 256) as u8)
        .collect();
    let frame = crop::upload_frame(&g, &rgb, w, h).unwrap();
    let out = 19;
    let specs = [
        CropSpec {
            m: crop::subwindow_matrix([30.5, 4.25], 26.0, out),
            border_rgb: [12, 200, 77],
        },
        CropSpec {
            m: crop::subwindow_matrix([18.0, 11.0], 13.0, out),
            border_rgb: [0, 0, 255],
        },
    ];
    let (mean, std) = (sparsett::tracker::MEAN, sparsett::tracker::STD);
    let mut enc = g.encoder();
    let raw = crop::crop(&mut enc, &frame, &specs, out, [0.0; 3], [1.0; 3]).unwrap();
    let normed = crop::crop(&mut enc, &frame, &specs, out, mean, std).unwrap();
    let got = read(enc, &[&raw, &normed]).await;
    let plane = out * out;
    for (s, spec) in specs.iter().enumerate() {
        let hwc = crop::cpu::warp_affine(&rgb, w, h, spec, out);
        for (i, px) in hwc.chunks(3).enumerate() {
            for c in 0..3 {
                let at = (s * 3 + c) * plane + i;
                let (y, x) = (i / out, i % out);
                assert_eq!(
                    got[0][at].to_bits(),
                    (px[c] as f32).to_bits(),
                    "crop {s} channel {c} at ({x}, {y})"
                );
                let n = (px[c] as f32 - mean[c]) / std[c];
                assert_eq!(
                    got[1][at].to_bits(),
                    n.to_bits(),
                    "normalised crop {s} channel {c} at ({x}, {y})"
                );
            }
        }
    }
}
