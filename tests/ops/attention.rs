//! Fused multi-head attention against `ops::attention::cpu` (f64 logits, softmax and sums), with
//! every kernel that can run the shapes here (tiled, register, register-subgroup), plus the
//! variant-to-kernel choice and the errors.
//!
//! Tolerances (eps = 6e-8, f32 unit roundoff). A GPU logit is a D = 32-term dot product of
//! q·scale (|q| ≤ 1.5) and k (|k| ≤ 1): error ≤ D·eps·Σ|q_d·k_d|·scale, at most 1.6e-5 with
//! scale 1/√32; bias and mask add one rounding each (the −100 entries round by up to 4e-6 but
//! carry weight e^−100 ≈ 0). A logit error δ scales a softmax weight by e^±2δ, and Vulkan's exp
//! is allowed 3 + 2|x| ulp (≤ 3e-6 relative for the |x| ≲ 20 that carry weight); the output is a
//! convex combination of |v| ≤ 1, summed over Lk terms (Lk·eps more). Worst case, with every
//! rounding in the same direction, ≈ 7e-5 for Lk ≤ 64; the roundings are independent, so the
//! expected error is ~√D smaller (~1e-5), and the observed maximum is 4e-7. TOL uses atol 3e-5
//! with rtol 1e-4. The 700-key test runs scale 1 (logit bound 3× larger) and 700-term sums:
//! TOL_LONG is atol 5e-5. Any real indexing bug (a key, row, head or mask entry out of place)
//! moves outputs by 1e-2 or more. The large-logit test uses small integers, so every logit is
//! exact in f32 (|logit| ≤ 512, where a missing max-subtraction overflows exp): only exp and
//! summation rounding remain, atol 1e-5.

use sparsett::ops::attention::{self, cpu, AttnOpts, Kernel};
use sparsett::ops::HeadsView;
use sparsett::{Tensor, Variant};

use crate::common::{assert_close, gpu, rand_vec};

const TOL: (f32, f32) = (3e-5, 1e-4);
const TOL_LONG: (f32, f32) = (5e-5, 1e-4);

/// Which column block of which host array a view takes.
#[derive(Clone, Copy)]
struct Block {
    batch: usize,
    len: usize,
    parts: usize,
    index: usize,
    /// Extra leading columns of every row (misaligns the views when not a multiple of 4).
    pad: usize,
}

struct Case<'a> {
    name: &'a str,
    heads: usize,
    hd: usize,
    /// q from its own tensor (cross-attention) or from the k/v tensor (packed qkv).
    q: Option<(usize, usize)>, // (batch, len) of a dense q tensor
    kv: Block, // packed tensor holding k and v (and q when `q` is None)
    scale: f32,
    bias: bool,
    mask: Option<Vec<f32>>, // [nW, Lq, Lk]
    tol: (f32, f32),
}

fn host_view(data: &[f32], b: Block, width: usize) -> cpu::View<'_> {
    cpu::View {
        data,
        batch: b.batch,
        len: b.len,
        stride: b.parts * width + b.pad,
        offset: b.index * width + b.pad,
    }
}

fn gpu_view(t: &Tensor, b: Block, width: usize) -> HeadsView<'_> {
    HeadsView {
        t,
        batch: b.batch,
        len: b.len,
        stride: b.parts * width + b.pad,
        offset: b.index * width + b.pad,
    }
}

/// Every kernel that can run these views here: the register kernels need a head width that is
/// a multiple of 4 up to 32 and aligned views (else `Variant::Register` falls back to tiled).
fn kernels(hd: usize, aligned: bool) -> Vec<Kernel> {
    let mut ks = vec![Kernel::Tiled];
    if hd.is_multiple_of(4) && hd <= 32 && aligned {
        ks.push(Kernel::Register);
        if attention::subgroup_kernel_available(gpu()) {
            ks.push(Kernel::RegisterSubgroup);
        }
    }
    ks
}

fn run_case(c: &Case, seed: u64) {
    let g = gpu();
    let width = c.heads * c.hd;
    let kvb = c.kv;
    let kv_cols = kvb.parts * width + kvb.pad;
    let kv_data = rand_vec(seed, kvb.batch * kvb.len * kv_cols, -1.0, 1.0);
    let kv_t = g.upload(&[kvb.batch, kvb.len, kv_cols], &kv_data).unwrap();
    let q_data;
    let q_t;
    let (qv_cpu, q_view);
    let (ki, vi) = if c.q.is_some() { (0, 1) } else { (1, 2) };
    match c.q {
        Some((batch, len)) => {
            q_data = rand_vec(seed + 1, batch * len * width, -1.5, 1.5);
            q_t = g.upload(&[batch, len, width], &q_data).unwrap();
            qv_cpu = cpu::View::dense(&q_data, batch, len, width);
            q_view = HeadsView::dense(&q_t).unwrap();
        }
        None => {
            qv_cpu = host_view(&kv_data, Block { index: 0, ..kvb }, width);
            q_view = gpu_view(&kv_t, Block { index: 0, ..kvb }, width);
        }
    }
    let lq = q_view.len;
    let lk = kvb.len;
    let bias_data = c
        .bias
        .then(|| rand_vec(seed + 2, c.heads * lq * lk, -2.0, 2.0));
    let bias_t: Option<Tensor> = bias_data
        .as_ref()
        .map(|b| g.upload(&[c.heads, lq, lk], b).unwrap());
    let mask_t: Option<Tensor> = c
        .mask
        .as_ref()
        .map(|m| g.upload(&[m.len() / (lq * lk), lq, lk], m).unwrap());
    let want = cpu::attention(
        qv_cpu,
        host_view(&kv_data, Block { index: ki, ..kvb }, width),
        host_view(&kv_data, Block { index: vi, ..kvb }, width),
        width,
        c.heads,
        c.scale,
        bias_data.as_deref(),
        c.mask.as_deref(),
    );
    let opts = AttnOpts {
        heads: c.heads,
        scale: c.scale,
        bias: bias_t.as_ref(),
        mask: mask_t.as_ref(),
        scatter: None,
    };
    let kview = gpu_view(&kv_t, Block { index: ki, ..kvb }, width);
    let vview = gpu_view(&kv_t, Block { index: vi, ..kvb }, width);
    for kernel in kernels(c.hd, kvb.pad.is_multiple_of(4)) {
        let mut enc = g.encoder();
        let y = attention::attention_kernel(&mut enc, q_view, kview, vview, &opts, kernel).unwrap();
        assert_eq!(enc.dispatch_count(), 1, "{}: one fused dispatch", c.name);
        assert_eq!(y.shape(), [kvb.batch, lq, width]);
        let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
        assert_close(
            &format!("{} [{}]", c.name, kernel.name()),
            &got,
            &want,
            c.tol.0,
            c.tol.1,
        );
    }
}

/// mmdet's shifted-window mask for a `hp × wp` padded map: regions cut at −window and −shift on
/// each axis, window-partitioned, −100 between tokens of different regions.
fn swin_mask(hp: usize, wp: usize, win: usize, shift: usize) -> Vec<f32> {
    let region = |x: usize, n: usize| {
        if x < n - win {
            0
        } else if x < n - shift {
            1
        } else {
            2
        }
    };
    let (nh, nw) = (hp / win, wp / win);
    let mut m = Vec::with_capacity(nh * nw * win.pow(4));
    for wy in 0..nh {
        for wx in 0..nw {
            let id = |t: usize| {
                let (y, x) = (wy * win + t / win, wx * win + t % win);
                region(y, hp) * 3 + region(x, wp)
            };
            for i in 0..win * win {
                for j in 0..win * win {
                    m.push(if id(i) == id(j) { 0.0 } else { -100.0 });
                }
            }
        }
    }
    m
}

#[test]
fn swin_window_attention_with_bias_and_shift_mask() {
    // A 21×21 padded map (the search map's last stage) has 3×3 windows: one image is a batch of
    // 9 windows; two images make 18 = 2·nW, where the second image reuses the mask (b mod nW).
    let mask = swin_mask(21, 21, 7, 3);
    assert!(mask.contains(&-100.0) && mask.contains(&0.0));
    for batch in [9, 18] {
        run_case(
            &Case {
                name: &format!("swin {batch} windows"),
                heads: 3,
                hd: 32,
                q: None,
                kv: Block {
                    batch,
                    len: 49,
                    parts: 3,
                    index: 0,
                    pad: 0,
                },
                scale: 32f32.powf(-0.5),
                bias: true,
                mask: Some(mask.clone()),
                tol: TOL,
            },
            batch as u64,
        );
    }
}

/// Scatter mode equals attention over the windows followed by the CPU window reverse (the values
/// are the same attention outputs, only moved: tolerance TOL), for every kernel, with and
/// without shift, on maps that need padding and with two images.
#[test]
fn swin_attention_scatters_into_the_map() {
    use sparsett::ops::attention::Scatter;
    use sparsett::ops::window::{cpu as wcpu, WindowGrid};
    let g = gpu();
    let (heads, hd, win) = (2, 8, 3);
    let width = heads * hd;
    for (imgs, h, w, shift) in [(1, 6, 6, 0), (2, 7, 5, 1), (1, 8, 10, 2), (2, 3, 3, 0)] {
        let grid = WindowGrid::new(h, w, win).unwrap();
        let nw = grid.count();
        let batch = imgs * nw;
        let lq = win * win;
        let qkv = rand_vec(
            (h * 100 + w * 10 + shift) as u64,
            batch * lq * 3 * width,
            -1.0,
            1.0,
        );
        let bias = rand_vec(7, heads * lq * lq, -2.0, 2.0);
        let mask = (shift > 0).then(|| swin_mask(grid.hp, grid.wp, win, shift));
        let view = |i| cpu::View {
            data: &qkv,
            batch,
            len: lq,
            stride: 3 * width,
            offset: i * width,
        };
        let windows = cpu::attention(
            view(0),
            view(1),
            view(2),
            width,
            heads,
            0.3,
            Some(&bias),
            mask.as_deref(),
        );
        let want = wcpu::window_reverse(&windows, [imgs, h, w, width], win, shift);
        let qkv_t = g.upload(&[batch, lq, 3 * width], &qkv).unwrap();
        let bias_t = g.upload(&[heads, lq, lq], &bias).unwrap();
        let mask_t = mask.as_ref().map(|m| g.upload(&[nw, lq, lq], m).unwrap());
        let opts = AttnOpts {
            heads,
            scale: 0.3,
            bias: Some(&bias_t),
            mask: mask_t.as_ref(),
            scatter: Some(Scatter {
                h,
                w,
                window: win,
                shift,
            }),
        };
        for kernel in kernels(hd, true) {
            let mut enc = g.encoder();
            let pv = |i| HeadsView::packed(&qkv_t, 3, i).unwrap();
            let y =
                attention::attention_kernel(&mut enc, pv(0), pv(1), pv(2), &opts, kernel).unwrap();
            assert_eq!(y.shape(), [imgs, h * w, width]);
            let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
            let what = format!("scatter {imgs}×{h}×{w} shift {shift} [{}]", kernel.name());
            assert_close(&what, &got, &want, TOL.0, TOL.1);
        }
    }
    // A batch that is not whole images, or queries that are not a window, is refused.
    let t = g.zeros(&[5, 9, 48]).unwrap();
    let pv = |i| HeadsView::packed(&t, 3, i).unwrap();
    let mut enc = g.encoder();
    let e = attention::attention(
        &mut enc,
        pv(0),
        pv(1),
        pv(2),
        &AttnOpts {
            heads: 2,
            scale: 1.0,
            bias: None,
            mask: None,
            scatter: Some(Scatter {
                h: 6,
                w: 6,
                window: 3,
                shift: 0,
            }),
        },
    )
    .expect_err("5 windows are not whole 6×6 images")
    .to_string();
    assert!(e.contains("multiple of the 4 windows"), "{e}");
}

#[test]
fn neck_shapes_reduced() {
    let scale = 32f32.powf(-0.5);
    // Cross-attention: 37 decoder queries over 23 memory tokens, k and v packed [B, Lk, 2d].
    run_case(
        &Case {
            name: "cross 37x23x8x32",
            heads: 8,
            hd: 32,
            q: Some((2, 37)),
            kv: Block {
                batch: 2,
                len: 23,
                parts: 2,
                index: 0,
                pad: 0,
            },
            scale,
            bias: false,
            mask: None,
            tol: TOL,
        },
        30,
    );
    // Self-attention from PyTorch's packed in_proj output [B, L, 3d].
    run_case(
        &Case {
            name: "self 23x23x8x32",
            heads: 8,
            hd: 32,
            q: None,
            kv: Block {
                batch: 1,
                len: 23,
                parts: 3,
                index: 0,
                pad: 0,
            },
            scale,
            bias: false,
            mask: None,
            tol: TOL,
        },
        31,
    );
}

#[test]
fn awkward_sizes() {
    // (name, batch, lq, lk, heads, head width, bias, mask, pad): Lk = 1 (softmax of one key is
    // 1: out = v); Lq = 1; Lq over several register tiles (8 lanes × 8 rows) and two tiled
    // tiles (64 rows); head widths below 32 and not multiples of 4 (tiled fallback); views
    // misaligned by 2 columns (tiled fallback); mask without bias.
    type Awkward = (
        &'static str,
        usize,
        usize,
        usize,
        usize,
        usize,
        bool,
        bool,
        usize,
    );
    let cases: [Awkward; 8] = [
        ("lk 1", 3, 5, 1, 2, 8, false, false, 0),
        ("lq 1", 2, 1, 9, 3, 4, true, false, 0),
        (
            "lq 130 over several tiles",
            1,
            130,
            33,
            2,
            16,
            true,
            false,
            0,
        ),
        ("head width 12", 2, 17, 11, 3, 12, false, false, 0),
        ("head width 5", 2, 13, 11, 2, 5, true, false, 0),
        ("head width 3", 1, 7, 6, 1, 3, false, false, 0),
        ("misaligned views", 2, 9, 10, 2, 8, false, false, 2),
        ("mask only", 4, 6, 6, 2, 28, false, true, 0),
    ];
    for (ci, &(name, batch, lq, lk, heads, hd, bias, masked, pad)) in cases.iter().enumerate() {
        // Graded values as well as −100, so a mask that is added wrongly cannot hide behind
        // weights that are 0 either way.
        let mask = masked.then(|| {
            let m = rand_vec(40 + ci as u64, 2 * lq * lk, 0.0, 1.0);
            m.into_iter()
                .map(|x| if x < 0.2 { -100.0 } else { (x - 0.6) * 5.0 })
                .collect()
        });
        run_case(
            &Case {
                name,
                heads,
                hd,
                q: Some((batch, lq)),
                kv: Block {
                    batch,
                    len: lk,
                    parts: 2,
                    index: 0,
                    pad,
                },
                scale: 0.7,
                bias,
                mask,
                tol: TOL,
            },
            50 + ci as u64,
        );
    }
}

#[test]
fn register_variant_picks_a_kernel_that_fits() {
    let g = gpu();
    let aligned = g.zeros(&[1, 3, 64]).unwrap();
    let odd = g.zeros(&[1, 3, 66]).unwrap();
    let a = HeadsView::dense(&aligned).unwrap();
    let pick = |v: HeadsView, heads, variant| {
        attention::kernel_for(g, variant, &v, &v, &v, heads).unwrap()
    };
    let register = if attention::subgroup_kernel_available(g) {
        Kernel::RegisterSubgroup
    } else {
        Kernel::Register
    };
    assert_eq!(pick(a, 2, Variant::Register), register);
    assert_eq!(pick(a, 2, Variant::Tiled), Kernel::Tiled);
    // Head width 64 and 6, and a view offset by 2 columns, need the tiled kernel.
    assert_eq!(pick(a, 1, Variant::Register), Kernel::Tiled);
    let o = HeadsView::dense(&odd).unwrap();
    assert_eq!(pick(o, 11, Variant::Register), Kernel::Tiled);
    let shifted = HeadsView { offset: 2, ..o };
    assert_eq!(pick(shifted, 2, Variant::Register), Kernel::Tiled);
    // Forcing a register kernel on such views is an error that says why.
    let opts = AttnOpts {
        heads: 2,
        scale: 1.0,
        bias: None,
        mask: None,
        scatter: None,
    };
    let mut enc = g.encoder();
    let e =
        attention::attention_kernel(&mut enc, shifted, shifted, shifted, &opts, Kernel::Register)
            .unwrap_err()
            .to_string();
    assert!(
        e.starts_with("attention:") && e.contains("register") && e.contains("66/2"),
        "{e}"
    );
    // Both variants through the public entry point agree with each other on a model shape.
    let qkv = g
        .upload(&[2, 49, 96], &rand_vec(90, 2 * 49 * 96, -1.0, 1.0))
        .unwrap();
    let (q, k, v) = (
        HeadsView::packed(&qkv, 3, 0).unwrap(),
        HeadsView::packed(&qkv, 3, 1).unwrap(),
        HeadsView::packed(&qkv, 3, 2).unwrap(),
    );
    let opts = AttnOpts {
        heads: 1,
        scale: 0.2,
        bias: None,
        mask: None,
        scatter: None,
    };
    let mut outs = Vec::new();
    for variant in Variant::ALL {
        let mut enc = g.encoder();
        let y = attention::attention_with(&mut enc, q, k, v, &opts, variant).unwrap();
        outs.push(enc.submit_read(&[&y]).unwrap().pop().unwrap());
    }
    assert_close("register vs tiled", &outs[0], &outs[1], 2e-6, 1e-5);
}

#[test]
fn long_key_sets_stream_through_online_softmax() {
    // 700 keys: 22 tiles of the tiled kernel, 350 key pairs of the register kernels; 70 queries
    // over two tiled and two register tiles. Scale 1 makes the softmax peaked (logit spread ≈ 3),
    // so the output is not just the mean of v.
    run_case(
        &Case {
            name: "700 keys",
            heads: 2,
            hd: 32,
            q: Some((1, 70)),
            kv: Block {
                batch: 1,
                len: 700,
                parts: 2,
                index: 0,
                pad: 0,
            },
            scale: 1.0,
            bias: false,
            mask: None,
            tol: TOL_LONG,
        },
        60,
    );
}

#[test]
fn large_logits_are_max_subtracted() {
    // Integers in [-4, 4]: every dot product is exact, logits reach ±512 (exp would overflow).
    let g = gpu();
    let (batch, lq, lk, heads, hd) = (2, 9, 40, 2, 32);
    let width = heads * hd;
    let ints = |seed, n| -> Vec<f32> {
        rand_vec(seed, n, -4.0, 5.0)
            .into_iter()
            .map(f32::floor)
            .collect()
    };
    let qd = ints(70, batch * lq * width);
    let kvd = ints(71, batch * lk * 2 * width);
    let qt = g.upload(&[batch, lq, width], &qd).unwrap();
    let kvt = g.upload(&[batch, lk, 2 * width], &kvd).unwrap();
    let want = cpu::attention(
        cpu::View::dense(&qd, batch, lq, width),
        cpu::View {
            data: &kvd,
            batch,
            len: lk,
            stride: 2 * width,
            offset: 0,
        },
        cpu::View {
            data: &kvd,
            batch,
            len: lk,
            stride: 2 * width,
            offset: width,
        },
        width,
        heads,
        1.0,
        None,
        None,
    );
    assert!(want.iter().all(|x| x.is_finite()));
    let opts = AttnOpts {
        heads,
        scale: 1.0,
        bias: None,
        mask: None,
        scatter: None,
    };
    for kernel in kernels(hd, true) {
        let mut enc = g.encoder();
        let y = attention::attention_kernel(
            &mut enc,
            HeadsView::dense(&qt).unwrap(),
            HeadsView::packed(&kvt, 2, 0).unwrap(),
            HeadsView::packed(&kvt, 2, 1).unwrap(),
            &opts,
            kernel,
        )
        .unwrap();
        let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
        assert_close(
            &format!("large logits [{}]", kernel.name()),
            &got,
            &want,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn bad_shapes_are_errors_naming_the_op() {
    let g = gpu();
    let q = g.zeros(&[2, 5, 64]).unwrap();
    let kv = g.zeros(&[2, 7, 128]).unwrap();
    let kv1 = g.zeros(&[1, 7, 128]).unwrap();
    let kv_wide = g.zeros(&[2, 7, 256]).unwrap();
    let qw = g.zeros(&[2, 5, 130]).unwrap();
    let bias_bad = g.zeros(&[2, 5, 6]).unwrap();
    let mask_bad = g.zeros(&[3, 5, 7]).unwrap();
    let qv = HeadsView::dense(&q).unwrap();
    let kv_k = HeadsView::packed(&kv, 2, 0).unwrap();
    let kv_v = HeadsView::packed(&kv, 2, 1).unwrap();
    let opts = |heads| AttnOpts {
        heads,
        scale: 1.0,
        bias: None,
        mask: None,
        scatter: None,
    };
    let mut enc = g.encoder();
    let mut err = |q: HeadsView, k: HeadsView, v: HeadsView, o: AttnOpts, want: &[&str]| {
        let e = attention::attention_with(&mut enc, q, k, v, &o, Variant::Register)
            .expect_err("bad shapes must fail")
            .to_string();
        assert!(e.starts_with("attention:"), "{e}");
        for w in want {
            assert!(e.contains(w), "'{e}' should mention '{w}'");
        }
    };
    // 64 columns over 3 heads.
    err(qv, kv_k, kv_v, opts(3), &["64", "3 heads"]);
    // Batch mismatch between q and k/v.
    let k1 = HeadsView::packed(&kv1, 2, 0).unwrap();
    let v1 = HeadsView::packed(&kv1, 2, 1).unwrap();
    err(qv, k1, v1, opts(2), &["batch 2", "batch 1"]);
    // k and v lengths differ.
    let v_short = HeadsView { len: 6, ..kv_v };
    err(qv, kv_k, v_short, opts(2), &["len 7", "len 6"]);
    // Bias and mask shapes.
    let b = AttnOpts {
        bias: Some(&bias_bad),
        ..opts(2)
    };
    err(qv, kv_k, kv_v, b, &["bias", "[2, 5, 7]", "[2, 5, 6]"]);
    let m = AttnOpts {
        mask: Some(&mask_bad),
        scatter: None,
        ..opts(2)
    };
    err(qv, kv_k, kv_v, m, &["mask", "[3, 5, 7]", "batch 2"]);
    // A view longer than its tensor.
    let k_long = HeadsView { len: 9, ..kv_k };
    let v_long = HeadsView { len: 9, ..kv_v };
    err(qv, k_long, v_long, opts(2), &["len 9", "[2, 7, 128]"]);
    // Offset outside the row.
    let v_out = HeadsView {
        offset: 128,
        ..kv_v
    };
    err(qv, kv_k, v_out, opts(2), &["offset 128", "stride 128"]);
    // Head wider than the kernel's registers: 130 columns as 1 head.
    let kvw = HeadsView::packed(&kv_wide, 2, 0).unwrap();
    let kvw1 = HeadsView::packed(&kv_wide, 2, 1).unwrap();
    err(
        HeadsView::dense(&qw).unwrap(),
        kvw,
        kvw1,
        opts(1),
        &["head width 128", "64"],
    );
    // Zero keys.
    let k0 = HeadsView { len: 0, ..kv_k };
    let v0 = HeadsView { len: 0, ..kv_v };
    err(qv, k0, v0, opts(2), &["zero keys"]);
}

#[test]
fn view_width_is_the_block_that_ends_its_row() {
    let g = gpu();
    let qkv = g.zeros(&[1, 4, 96]).unwrap();
    let q = HeadsView::packed(&qkv, 3, 0).unwrap();
    let k = HeadsView::packed(&qkv, 3, 1).unwrap();
    let v = HeadsView::packed(&qkv, 3, 2).unwrap();
    assert_eq!(attention::view_width(&q, &k, &v).unwrap(), 32);
    assert_eq!(attention::view_width(&v, &q, &k).unwrap(), 32);
}

/// `cargo test --test ops attention::bench -- --ignored --nocapture` prints the model-shaped timings.
#[test]
#[ignore]
fn bench() {
    let g = gpu();
    let mut rows = Vec::new();
    attention::bench(g, &mut rows).unwrap();
    println!("{}\n{}", g.adapter_line(), sparsett::bench::table(&rows));
}

// ---------------------------------------------------------------------------------------------
// Backward. `cpu::attention_backward` (f64, full softmax Jacobian) is checked against central
// differences of `cpu::attention_f64` to 1e-7 (see `reduce::numeric_grad`). GPU vs CPU: the GPU
// recomputes the forward's logits and softmax (the error budget of TOL above, ≲ 1e-5 for
// D ≤ 32) and adds one more sum of at most max(D, L) ≤ 67 products of O(1) values (dP, dq, dk,
// dv, dbias: ≤ 67·eps = 4e-6 relative each, ~√67 smaller in expectation); we keep
// TOL = (3e-5, 1e-4). A gradient term in the wrong
// place or a missing softmax correction moves elements by 1e-2 or more.

use sparsett::ops::attention::AttnInto;

use crate::reduce::{assert_fd, numeric_grad, to32, to64};

/// A backward problem: dims = [B, Lq, Lk, heads, head_dim], nW of the mask (0: none), bias.
#[derive(Clone, Copy)]
struct BwCase {
    dims: [usize; 5],
    nw: usize,
    bias: bool,
    /// q, k and v are blocks 0, 1, 2 of one packed [B, L, 3·width] tensor (needs Lq = Lk).
    packed: bool,
    scale: f32,
}

const BW_CASES: [BwCase; 6] = [
    BwCase {
        dims: [2, 3, 4, 2, 3],
        nw: 2,
        bias: true,
        packed: false,
        scale: 0.6,
    },
    BwCase {
        dims: [3, 5, 5, 1, 4],
        nw: 0,
        bias: false,
        packed: true,
        scale: 0.5,
    },
    BwCase {
        dims: [1, 7, 9, 3, 5],
        nw: 0,
        bias: true,
        packed: false,
        scale: 0.45,
    },
    BwCase {
        dims: [4, 4, 4, 2, 8],
        nw: 2,
        bias: false,
        packed: true,
        scale: 0.35,
    },
    // Swin's window shape (49 tokens, head width 32) with bias and mask, batch 2·nW.
    BwCase {
        dims: [4, 49, 49, 2, 32],
        nw: 2,
        bias: true,
        packed: true,
        scale: 0.17677669,
    },
    // Lq ≠ Lk, both past one 64-wide GEMM tile.
    BwCase {
        dims: [2, 67, 65, 1, 6],
        nw: 0,
        bias: true,
        packed: false,
        scale: 0.4,
    },
];

/// Host data of a case: (q, k, v dense, bias, mask, dout).
#[allow(clippy::type_complexity)]
fn bw_data(c: &BwCase, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let [b, lq, lk, h, d] = c.dims;
    let w = h * d;
    let q = rand_vec(seed, b * lq * w, -1.5, 1.5);
    let k = rand_vec(seed + 1, b * lk * w, -1.0, 1.0);
    let v = rand_vec(seed + 2, b * lk * w, -1.0, 1.0);
    let bias = rand_vec(seed + 3, h * lq * lk, -1.0, 1.0);
    // Masks like Swin's: 0 or −100 (never a whole row masked: column 0 stays open).
    let mask: Vec<f32> = rand_vec(seed + 4, c.nw * lq * lk, 0.0, 1.0)
        .iter()
        .enumerate()
        .map(|(i, &r)| if i % lk != 0 && r < 0.3 { -100.0 } else { 0.0 })
        .collect();
    let dout = rand_vec(seed + 5, b * lq * w, -1.0, 1.0);
    (q, k, v, bias, mask, dout)
}

#[test]
fn cpu_attention_backward_matches_finite_differences() {
    let c = BW_CASES[0];
    let (q, k, v, bias, mask, dout) = bw_data(&c, 50);
    let (q, k, v, bias, dout) = (to64(&q), to64(&k), to64(&v), to64(&bias), to64(&dout));
    let s = c.scale as f64;
    let m = Some(&mask[..]);
    let (dq, dk, dv, db) = cpu::attention_backward(&q, &k, &v, c.dims, s, Some(&bias), m, &dout);
    let f = |q: &[f64], k: &[f64], v: &[f64], b: &[f64]| {
        cpu::attention_f64(q, k, v, c.dims, s, Some(b), m)
    };
    assert_fd(
        "dq",
        &dq,
        &numeric_grad(|x| f(x, &k, &v, &bias), &q, &dout),
        1e-7,
    );
    assert_fd(
        "dk",
        &dk,
        &numeric_grad(|x| f(&q, x, &v, &bias), &k, &dout),
        1e-7,
    );
    assert_fd(
        "dv",
        &dv,
        &numeric_grad(|x| f(&q, &k, x, &bias), &v, &dout),
        1e-7,
    );
    assert_fd(
        "dbias",
        &db,
        &numeric_grad(|x| f(&q, &k, &v, x), &bias, &dout),
        1e-7,
    );
    // The f64 forward agrees with the existing f32-output reference.
    let (qf, kf, vf) = (to32(&q), to32(&k), to32(&v));
    let w = c.dims[3] * c.dims[4];
    let want = cpu::attention(
        cpu::View::dense(&qf, c.dims[0], c.dims[1], w),
        cpu::View::dense(&kf, c.dims[0], c.dims[2], w),
        cpu::View::dense(&vf, c.dims[0], c.dims[2], w),
        w,
        c.dims[3],
        c.scale,
        Some(&to32(&bias)),
        m,
    );
    assert_close("forward", &to32(&f(&q, &k, &v, &bias)), &want, 1e-6, 1e-6);
}

/// Runs the GPU backward of a case (optionally accumulating into `init` = (dq, dk, dv, dbias));
/// returns (dq, dk, dv, dbias or empty).
fn gpu_attention_backward(c: &BwCase, seed: u64, init: Option<[&[f32]; 4]>) -> Vec<Vec<f32>> {
    let g = gpu();
    let [b, lq, lk, h, d] = c.dims;
    let w = h * d;
    let (q, k, v, bias, mask, dout) = bw_data(c, seed);
    let packed_t;
    let (qt, kt, vt);
    let views = if c.packed {
        assert_eq!(lq, lk);
        let mut p = Vec::with_capacity(3 * q.len());
        for r in 0..b * lq {
            for src in [&q, &k, &v] {
                p.extend_from_slice(&src[r * w..(r + 1) * w]);
            }
        }
        packed_t = g.upload(&[b, lq, 3 * w], &p).unwrap();
        [0, 1, 2].map(|i| HeadsView::packed(&packed_t, 3, i).unwrap())
    } else {
        qt = g.upload(&[b, lq, w], &q).unwrap();
        kt = g.upload(&[b, lk, w], &k).unwrap();
        vt = g.upload(&[b, lk, w], &v).unwrap();
        [&qt, &kt, &vt].map(|t| HeadsView::dense(t).unwrap())
    };
    let bias_t = g.upload(&[h, lq, lk], &bias).unwrap();
    let mask_t = (c.nw > 0).then(|| g.upload(&[c.nw, lq, lk], &mask).unwrap());
    let dout_t = g.upload(&[b, lq, w], &dout).unwrap();
    let opts = AttnOpts {
        heads: h,
        scale: c.scale,
        bias: c.bias.then_some(&bias_t),
        mask: mask_t.as_ref(),
        scatter: None,
    };
    let init_t: Option<Vec<Tensor>> = init.map(|i| {
        let shapes: [&[usize]; 4] = [&[b, lq, w], &[b, lk, w], &[b, lk, w], &[h, lq, lk]];
        (0..4).map(|n| g.upload(shapes[n], i[n]).unwrap()).collect()
    });
    let into = match &init_t {
        Some(t) => AttnInto {
            dq: Some(&t[0]),
            dk: Some(&t[1]),
            dv: Some(&t[2]),
            dbias: c.bias.then_some(&t[3]),
        },
        None => AttnInto::default(),
    };
    let mut enc = g.encoder();
    let gr = attention::attention_backward(
        &mut enc, views[0], views[1], views[2], &opts, &dout_t, &into,
    )
    .unwrap();
    assert_eq!(gr.dq.shape(), [b, lq, w]);
    assert_eq!(gr.dk.shape(), [b, lk, w]);
    assert_eq!(gr.dv.shape(), [b, lk, w]);
    assert_eq!(gr.dbias.is_some(), c.bias);
    let mut outs = vec![&gr.dq, &gr.dk, &gr.dv];
    outs.extend(gr.dbias.as_ref());
    let mut got = enc.submit_read(&outs).unwrap();
    got.resize(4, Vec::new());
    got
}

fn cpu_attention_grads(c: &BwCase, seed: u64) -> [Vec<f64>; 4] {
    let (q, k, v, bias, mask, dout) = bw_data(c, seed);
    let (dq, dk, dv, db) = cpu::attention_backward(
        &to64(&q),
        &to64(&k),
        &to64(&v),
        c.dims,
        c.scale as f64,
        c.bias.then(|| to64(&bias)).as_deref(),
        (c.nw > 0).then_some(&mask[..]),
        &to64(&dout),
    );
    [dq, dk, dv, if c.bias { db } else { Vec::new() }]
}

#[test]
fn attention_backward_matches_cpu() {
    for (n, c) in BW_CASES.iter().enumerate() {
        let seed = 700 + 10 * n as u64;
        let want = cpu_attention_grads(c, seed);
        let got = gpu_attention_backward(c, seed, None);
        for (i, name) in ["dq", "dk", "dv", "dbias"].iter().enumerate() {
            let what = format!("case {n} {:?} {name}", c.dims);
            assert_close(&what, &got[i], &to32(&want[i]), TOL.0, TOL.1);
        }
    }
}

#[test]
fn attention_backward_accumulates() {
    let c = BW_CASES[2];
    let seed = 7070;
    let [b, lq, lk, h, d] = c.dims;
    let w = h * d;
    let init = [
        rand_vec(1, b * lq * w, -2.0, 2.0),
        rand_vec(2, b * lk * w, -2.0, 2.0),
        rand_vec(3, b * lk * w, -2.0, 2.0),
        rand_vec(4, h * lq * lk, -2.0, 2.0),
    ];
    let want = cpu_attention_grads(&c, seed);
    let got = gpu_attention_backward(&c, seed, Some([&init[0], &init[1], &init[2], &init[3]]));
    for (i, name) in ["dq", "dk", "dv", "dbias"].iter().enumerate() {
        let sum: Vec<f32> = init[i]
            .iter()
            .zip(&want[i])
            .map(|(&a, &g)| (a as f64 + g) as f32)
            .collect();
        // One more rounding of values ≤ ~3: inside atol.
        assert_close(&format!("{name} into"), &got[i], &sum, TOL.0, TOL.1);
    }
}

#[test]
fn attention_backward_rejects_bad_operands() {
    let g = gpu();
    let q = g.upload(&[1, 2, 4], &[0.1; 8]).unwrap();
    let k = g.upload(&[1, 3, 4], &[0.1; 12]).unwrap();
    let (qv, kv) = (HeadsView::dense(&q).unwrap(), HeadsView::dense(&k).unwrap());
    let opts = AttnOpts {
        heads: 2,
        scale: 0.5,
        bias: None,
        mask: None,
        scatter: None,
    };
    let bad = g.upload(&[1, 3, 4], &[0.0; 12]).unwrap();
    let mut enc = g.encoder();
    let e = attention::attention_backward(&mut enc, qv, kv, kv, &opts, &bad, &AttnInto::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("dout"), "{e}");
    let dout = g.upload(&[1, 2, 4], &[0.0; 8]).unwrap();
    let into = AttnInto {
        dq: Some(&q),
        ..Default::default()
    };
    let e = attention::attention_backward(&mut enc, qv, kv, kv, &opts, &dout, &into)
        .unwrap_err()
        .to_string();
    assert!(e.contains("shares its buffer"), "{e}");
    let odd = AttnOpts { heads: 3, ..opts };
    let e = attention::attention_backward(&mut enc, qv, kv, kv, &odd, &dout, &AttnInto::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("heads"), "{e}");
}

// ---- Attention-weight dropout (training): the dense GEMM path with the dropout mask on the
// weights, against the f64 reference fed the same mask bits (cpu::dropout_factors). The
// tolerances are the backward's (TOL): the dropped weights are scaled by 1/(1 − p) ≤ 1.43.

const DROP: f32 = 0.3;

fn dview(t: &Tensor) -> HeadsView<'_> {
    HeadsView::dense(t).unwrap()
}

/// Forward and backward of one case with dropout, (out, dq, dk, dv, dbias or empty) from the GPU
/// and the reference.
fn dropout_case(c: &BwCase, seed: u64, drop_seed: u64) -> [(Vec<f32>, Vec<f32>); 5] {
    let g = gpu();
    let [b, lq, lk, h, d] = c.dims;
    let w = h * d;
    let (q, k, v, bias, mask, dout) = bw_data(c, seed);
    let qt = g.upload(&[b, lq, w], &q).unwrap();
    let kt = g.upload(&[b, lk, w], &k).unwrap();
    let vt = g.upload(&[b, lk, w], &v).unwrap();
    let bt = g.upload(&[h, lq, lk], &bias).unwrap();
    let mt = (c.nw > 0).then(|| g.upload(&[c.nw, lq, lk], &mask).unwrap());
    let dt = g.upload(&[b, lq, w], &dout).unwrap();
    let opts = AttnOpts {
        heads: h,
        scale: c.scale,
        bias: c.bias.then_some(&bt),
        mask: mt.as_ref(),
        scatter: None,
    };
    let drop = attention::Dropout {
        p: DROP,
        seed: drop_seed,
    };
    let mut enc = g.encoder();
    let out =
        attention::attention_dropout(&mut enc, dview(&qt), dview(&kt), dview(&vt), &opts, drop)
            .unwrap();
    let gr = attention::attention_dropout_backward(
        &mut enc,
        dview(&qt),
        dview(&kt),
        dview(&vt),
        &opts,
        drop,
        &dt,
        &AttnInto::default(),
    )
    .unwrap();
    let mut reads = vec![&out, &gr.dq, &gr.dk, &gr.dv];
    reads.extend(gr.dbias.as_ref());
    let mut got = enc.submit_read(&reads).unwrap();
    got.resize(5, Vec::new());

    let (q, k, v, dout) = (to64(&q), to64(&k), to64(&v), to64(&dout));
    let bias = to64(&bias);
    let bias = c.bias.then_some(&bias[..]);
    let mask = (c.nw > 0).then_some(&mask[..]);
    let s = c.scale as f64;
    let p = cpu::probs_f64(&q, &k, c.dims, s, bias, mask);
    let f = cpu::dropout_factors(p.len(), DROP, drop_seed);
    let want_out = cpu::attend_f64(&p, &v, c.dims, Some(&f));
    let (dq, dk, dv, db) = cpu::attend_backward_f64(&p, &q, &k, &v, c.dims, s, Some(&f), &dout);
    let db = if c.bias { to32(&db) } else { Vec::new() };
    let want = [to32(&want_out), to32(&dq), to32(&dk), to32(&dv), db];
    let mut pairs = got.into_iter().zip(want);
    std::array::from_fn(|_| pairs.next().unwrap())
}

#[test]
fn attention_dropout_matches_reference() {
    for (i, c) in BW_CASES.iter().enumerate() {
        for (name, (got, want)) in ["out", "dq", "dk", "dv", "dbias"].iter().zip(dropout_case(
            c,
            600 + i as u64,
            90 + i as u64,
        )) {
            assert_eq!(got.len(), want.len(), "case {i} {name}");
            assert_close(
                &format!("dropout case {i} {name}"),
                &got,
                &want,
                TOL.0,
                TOL.1,
            );
        }
    }
}

/// The mask is drawn from the seed: another seed gives another output, and without dropout the
/// dense path gives the fused kernels' result.
#[test]
fn attention_dropout_depends_on_its_seed_only() {
    let c = &BW_CASES[0];
    let a = dropout_case(c, 610, 1);
    let b = dropout_case(c, 610, 2);
    let again = dropout_case(c, 610, 1);
    assert_eq!(a[0].0, again[0].0, "same seed, same output");
    let diff = a[0]
        .0
        .iter()
        .zip(&b[0].0)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff > 1e-2, "two seeds differ by only {diff}");

    let g = gpu();
    let [bsz, lq, lk, h, d] = c.dims;
    let w = h * d;
    let (q, k, v, bias, _, _) = bw_data(c, 611);
    let qt = g.upload(&[bsz, lq, w], &q).unwrap();
    let kt = g.upload(&[bsz, lk, w], &k).unwrap();
    let vt = g.upload(&[bsz, lk, w], &v).unwrap();
    let bt = g.upload(&[h, lq, lk], &bias).unwrap();
    let opts = AttnOpts {
        heads: h,
        scale: c.scale,
        bias: Some(&bt),
        mask: None,
        scatter: None,
    };
    let off = attention::Dropout { p: 0.0, seed: 5 };
    let mut enc = g.encoder();
    let dense =
        attention::attention_dropout(&mut enc, dview(&qt), dview(&kt), dview(&vt), &opts, off)
            .unwrap();
    let fused = attention::attention(&mut enc, dview(&qt), dview(&kt), dview(&vt), &opts).unwrap();
    let got = enc.submit_read(&[&dense, &fused]).unwrap();
    assert_close("p = 0 vs fused", &got[0], &got[1], TOL.0, TOL.1);
    let bad = attention::Dropout { p: 1.0, seed: 5 };
    let mut enc = g.encoder();
    let e = attention::attention_dropout(&mut enc, dview(&qt), dview(&kt), dview(&vt), &opts, bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("attention_dropout") && e.contains("[0, 1)"),
        "{e}"
    );
}

#[test]
fn cpu_attention_dropout_backward_matches_finite_differences() {
    let c = BW_CASES[0];
    let (q, k, v, bias, mask, dout) = bw_data(&c, 620);
    let (q, k, v, bias, dout) = (to64(&q), to64(&k), to64(&v), to64(&bias), to64(&dout));
    let s = c.scale as f64;
    let m = (c.nw > 0).then_some(&mask[..]);
    let [b, lq, lk, h, _] = c.dims;
    let f = cpu::dropout_factors(b * h * lq * lk, DROP, 3);
    assert!(f.contains(&0.0), "the mask drops something");
    let fwd = |q: &[f64], k: &[f64], v: &[f64], bias: &[f64]| {
        let p = cpu::probs_f64(q, k, c.dims, s, Some(bias), m);
        cpu::attend_f64(&p, v, c.dims, Some(&f))
    };
    let p = cpu::probs_f64(&q, &k, c.dims, s, Some(&bias), m);
    let (dq, dk, dv, db) = cpu::attend_backward_f64(&p, &q, &k, &v, c.dims, s, Some(&f), &dout);
    assert_fd(
        "dq",
        &dq,
        &numeric_grad(|x| fwd(x, &k, &v, &bias), &q, &dout),
        1e-7,
    );
    assert_fd(
        "dk",
        &dk,
        &numeric_grad(|x| fwd(&q, x, &v, &bias), &k, &dout),
        1e-7,
    );
    assert_fd(
        "dv",
        &dv,
        &numeric_grad(|x| fwd(&q, &k, x, &bias), &v, &dout),
        1e-7,
    );
    assert_fd(
        "dbias",
        &db,
        &numeric_grad(|x| fwd(&q, &k, &v, x), &bias, &dout),
        1e-7,
    );
}
