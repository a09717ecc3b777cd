//! Top-K selection and top-K sparse attention against `ops::topk::cpu`, for both variants.
//!
//! Tolerances:
//! - Selection (`topk_select`, and the indices of `topk_attention` against a selection made on the
//!   very logits the GPU produced): exact. The order (value desc, index asc) is a strict total
//!   order, values are copied, never computed: indices equal and values equal bit for bit.
//! - Logits: the GPU sums D rounded products `(scale·q)·k` in f32, so
//!   |gpu − exact| ≤ (D + 2)·2⁻²⁴·Σ_d |scale·q_d·k_d| (=: δ, computed per logit).
//! - Against the exact (f64-logit) selection: f32 rounding may swap keys whose logits are within
//!   2δ, so the check is |ℓ(gpu pick r) − ℓ(ref pick r)| ≤ 2·max δ of the row for every rank r
//!   (the r-th largest of values that are each off by ≤ δ is off by ≤ δ), with ℓ the f64 logits;
//!   rows whose picks differ are counted and must be rare (near-ties in random data).
//! - Weights and `out` against the f64 softmax on the GPU's own logits and picks: the GPU exp is
//!   good to 3 + 2|x| ulp (WGSL), x = logit − max ≥ −46 here (|logit| ≤ D·2·2·scale ≈ 23), so
//!   ≤ 95 ulp ≈ 5.7e-6 relative, and the K-term f32 sum adds ≤ K·2⁻²⁴ ≈ 2e-6 (K ≤ 32 in these
//!   cases): weights within 1e-5 relative + 1e-7 absolute; out = Σ w·v with |v| ≤ 2 and Σ w = 1
//!   within 2·1e-5 + K·2⁻²⁴·2 < 4e-5 absolute.
//! - `out` against the exact reference on rows where the picks agree: a logit error ≤ δ moves
//!   each weight by ≤ 2δ·w (softmax), so out moves by ≤ 2δ·Σ w·|v| ≤ 4δ: atol 4e-5 + 4·max δ.

use sparsett::ops::topk::{self, cpu};
use sparsett::ops::HeadsView;
use sparsett::{Gpu, Tensor, Variant};

use crate::common::{assert_close, gpu, rand_vec};

fn read_u32(g: &Gpu, t: &Tensor) -> Vec<u32> {
    g.read_u32(t).unwrap()
}

fn select(x: &[f32], n: usize, k: usize, variant: Variant) -> (Vec<f32>, Vec<u32>) {
    let g = gpu();
    let t = g.upload(&[x.len() / n, n], x).unwrap();
    let mut enc = g.encoder();
    let (v, i) = topk::topk_select_with(&mut enc, &t, k, variant).unwrap();
    assert_eq!(v.shape(), [x.len() / n, k]);
    assert_eq!(i.shape(), [x.len() / n, k]);
    let vals = enc.submit_read(&[&v]).unwrap().pop().unwrap();
    (vals, read_u32(g, &i))
}

#[track_caller]
fn assert_select_exact(what: &str, x: &[f32], n: usize, k: usize, variant: Variant) {
    let (gv, gi) = select(x, n, k, variant);
    let (wv, wi) = cpu::topk_select(x, n, k);
    for (p, (a, b)) in gi.iter().zip(&wi).enumerate() {
        assert_eq!(
            a,
            b,
            "{what} {variant:?} n {n} K {k}: index at row {} rank {}",
            p / k,
            p % k
        );
    }
    for (p, (a, b)) in gv.iter().zip(&wv).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "{what} {variant:?} n {n} K {k}: value at {p}"
        );
    }
}

/// Rows that stress the order: random, few distinct integers (±0 included), all equal, −inf
/// entries (more than n − K of them when possible), all −inf, descending, ascending.
fn tricky_rows(seed: u64, n: usize) -> Vec<f32> {
    let ninf = f32::NEG_INFINITY;
    let mut x = rand_vec(seed, n, -3.0, 3.0);
    let ints = rand_vec(seed + 1, n, 0.0, 5.0);
    x.extend(ints.iter().map(|v| match v.floor() as i32 {
        0 => -0.0,
        2 => 0.0,
        i => (i - 2) as f32,
    }));
    x.extend(std::iter::repeat_n(1.5, n));
    let r = rand_vec(seed + 2, n, 0.0, 1.0);
    x.extend(r.iter().map(|&u| if u < 0.9 { ninf } else { u }));
    x.extend(std::iter::repeat_n(ninf, n));
    x.extend((0..n).map(|i| (n - i) as f32));
    x.extend((0..n).map(|i| i as f32 * 0.25));
    x
}

#[test]
fn select_matches_reference_exactly() {
    for variant in Variant::ALL {
        for (s, n) in [1usize, 2, 31, 32, 33, 361, 1000, 1024]
            .into_iter()
            .enumerate()
        {
            let x = tricky_rows(100 + s as u64, n);
            let mut ks: Vec<usize> = [1, 32, 64].into_iter().filter(|&k| k <= n).collect();
            if n <= 64 && !ks.contains(&n) {
                ks.push(n);
            }
            for k in ks {
                assert_select_exact("tricky rows", &x, n, k, variant);
            }
        }
    }
}

#[test]
fn select_many_rows() {
    // More rows than one workgroup holds in either variant (64 register rows, 1024/64 tiled).
    for variant in Variant::ALL {
        let n = 45;
        let mut x = rand_vec(7, 131 * n, -1.0, 1.0);
        for v in x.iter_mut().skip(3).step_by(4) {
            *v = (*v * 4.0).round();
        }
        for k in [3, 17, 45] {
            assert_select_exact("131 rows", &x, n, k, variant);
        }
    }
}

#[test]
fn select_rejects_bad_shapes() {
    let g = gpu();
    let mut enc = g.encoder();
    let t = g.zeros(&[3, 4]).unwrap();
    for variant in Variant::ALL {
        let e = topk::topk_select_with(&mut enc, &t, 5, variant)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("topk_select") && e.contains("K = 5") && e.contains("n = 4"),
            "{e}"
        );
        let e = topk::topk_select_with(&mut enc, &t, 0, variant)
            .unwrap_err()
            .to_string();
        assert!(e.contains("topk_select") && e.contains("K = 0"), "{e}");
    }
    let wide = g.zeros(&[2, 100]).unwrap();
    let e = topk::topk_select(&mut enc, &wide, 65)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("topk_select") && e.contains("K = 65") && e.contains("64"),
        "{e}"
    );
    let long = g.zeros(&[1, 1025]).unwrap();
    let e = topk::topk_select(&mut enc, &long, 8)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("topk_select") && e.contains("1025") && e.contains("1024"),
        "{e}"
    );
    let ints = g.upload_u32(&[2, 8], &[0; 16]).unwrap();
    let e = topk::topk_select(&mut enc, &ints, 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("topk_select") && e.contains("f32"), "{e}");
}

struct Case {
    batch: usize,
    lq: usize,
    lk: usize,
    heads: usize,
    hd: usize,
    keep: usize,
    /// q, k, v as blocks of one packed [B, L, 3C] tensor (needs lq == lk).
    packed: bool,
    /// Key rows repeat with this period (exact logit ties), 0 for none.
    tie_period: usize,
    /// Rows whose exact and GPU picks may differ (near-ties under f32 rounding).
    max_differing_rows: usize,
}

/// The exact logits' per-element rounding bound δ of the module comment.
fn logit_bounds(q: &cpu::View, k: &cpu::View, heads: usize, hd: usize, scale: f32) -> Vec<f64> {
    let qa: Vec<f32> = q.data.iter().map(|x| x.abs()).collect();
    let ka: Vec<f32> = k.data.iter().map(|x| x.abs()).collect();
    let (qv, kv) = (cpu::View { data: &qa, ..*q }, cpu::View { data: &ka, ..*k });
    let u = (hd as f64 + 2.0) * 2f64.powi(-24);
    cpu::topk_logits(qv, kv, heads, hd, scale)
        .into_iter()
        .map(|s| s * u)
        .collect()
}

fn check_attention(name: &str, c: &Case, variant: Variant) {
    let g = gpu();
    let width = c.heads * c.hd;
    let seed = (c.lq * 131 + c.lk * 7 + c.heads) as u64;
    let (qd, kd, vd, qs, ks) = if c.packed {
        assert_eq!(c.lq, c.lk);
        let mut x = rand_vec(seed, c.batch * c.lq * 3 * width, -2.0, 2.0);
        if c.tie_period > 0 {
            for b in 0..c.batch {
                for j in c.tie_period..c.lk {
                    let src = ((b * c.lk + j % c.tie_period) * 3 + 1) * width;
                    let dst = ((b * c.lk + j) * 3 + 1) * width;
                    x.copy_within(src..src + width, dst);
                }
            }
        }
        (x.clone(), x.clone(), x, 3 * width, 3 * width)
    } else {
        let q = rand_vec(seed, c.batch * c.lq * width, -2.0, 2.0);
        // k carries 5 extra leading columns to exercise an offset view.
        let mut k = rand_vec(seed + 1, c.batch * c.lk * (width + 5), -2.0, 2.0);
        if c.tie_period > 0 {
            for b in 0..c.batch {
                for j in c.tie_period..c.lk {
                    let src = (b * c.lk + j % c.tie_period) * (width + 5);
                    let dst = (b * c.lk + j) * (width + 5);
                    k.copy_within(src..src + width + 5, dst);
                }
            }
        }
        let v = rand_vec(seed + 2, c.batch * c.lk * width, -2.0, 2.0);
        (q, k, v, width, width + 5)
    };
    let (q_off, k_off, v_off) = if c.packed {
        (0, width, 2 * width)
    } else {
        (0, 5, 0)
    };
    let v_stride = if c.packed { 3 * width } else { width };
    let qt = g.upload(&[c.batch, c.lq, qs], &qd).unwrap();
    let (kt, vt) = if c.packed {
        (qt.clone(), qt.clone())
    } else {
        (
            g.upload(&[c.batch, c.lk, ks], &kd).unwrap(),
            g.upload(&[c.batch, c.lk, width], &vd).unwrap(),
        )
    };
    let hv = |t, len, stride, offset| HeadsView {
        t,
        batch: c.batch,
        len,
        stride,
        offset,
    };
    let (q, k, v) = (
        hv(&qt, c.lq, qs, q_off),
        hv(&kt, c.lk, ks, k_off),
        hv(&vt, c.lk, v_stride, v_off),
    );
    let scale = 1.0 / (c.hd as f32).sqrt();

    let mut enc = g.encoder();
    let logits =
        topk::topk_attention_logits(&mut enc, q, k, v, c.heads, c.keep, scale, variant).unwrap();
    let r = topk::topk_attention_with(&mut enc, q, k, v, c.heads, c.keep, scale, variant).unwrap();
    assert_eq!(r.out.shape(), [c.batch, c.lq, width]);
    assert_eq!(r.indices.shape(), [c.batch, c.heads, c.lq, c.keep]);
    assert_eq!(r.weights.shape(), [c.batch, c.heads, c.lq, c.keep]);
    let mut got = enc.submit_read(&[&logits, &r.out, &r.weights]).unwrap();
    let (gw, gout, glog) = (got.pop().unwrap(), got.pop().unwrap(), got.pop().unwrap());
    let gidx = read_u32(g, &r.indices);
    let what = format!("{name} {variant:?}");

    let cv = |data, len, stride, offset| cpu::View {
        data,
        batch: c.batch,
        len,
        stride,
        offset,
    };
    let (cq, ck, cvv) = (
        cv(&qd, c.lq, qs, q_off),
        cv(&kd, c.lk, ks, k_off),
        cv(&vd, c.lk, v_stride, v_off),
    );
    let exact = cpu::topk_logits(cq, ck, c.heads, c.hd, scale);
    let delta = logit_bounds(&cq, &ck, c.heads, c.hd, scale);
    for (e, ((&gl, &x), &dl)) in glog.iter().zip(&exact).zip(&delta).enumerate() {
        assert!(
            (gl as f64 - x).abs() <= dl,
            "{what}: logit {e} is {gl}, exact {x}, bound {dl}"
        );
    }

    // 1. The picks are exactly the selection on the GPU's own logits.
    let own: Vec<u32> = glog
        .chunks(c.lk)
        .flat_map(|row| cpu::top_indices(row, c.keep))
        .collect();
    assert_eq!(
        gidx, own,
        "{what}: indices differ from the selection on the GPU logits"
    );

    // 2. Softmax and w·v on those picks.
    let glog64: Vec<f64> = glog.iter().map(|&x| x as f64).collect();
    let want = cpu::topk_attend(&glog64, &gidx, cvv, c.heads, c.hd, c.lq, c.keep);
    assert_close(&format!("{what} weights"), &gw, &want.weights, 1e-7, 1e-5);
    assert_close(&format!("{what} out"), &gout, &want.out, 4e-5, 0.0);

    // 3. Against the exact reference: picks within 2δ rank by rank, out equal where picks agree.
    let reference = cpu::topk_attention(cq, ck, cvv, c.heads, c.hd, c.keep, scale);
    let mut differing = 0;
    for row in 0..c.batch * c.heads * c.lq {
        let (a, b) = (
            &gidx[row * c.keep..(row + 1) * c.keep],
            &reference.indices[row * c.keep..(row + 1) * c.keep],
        );
        if a == b {
            continue;
        }
        differing += 1;
        let l = &exact[row * c.lk..(row + 1) * c.lk];
        let d = delta[row * c.lk..(row + 1) * c.lk]
            .iter()
            .fold(0.0f64, |a, &x| a.max(x));
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (x as usize, y as usize);
            assert!(
                (l[x] - l[y]).abs() <= 2.0 * d,
                "{what}: row {row} picks key {x} (logit {}) where the exact order has {y} ({})",
                l[x],
                l[y]
            );
        }
    }
    assert!(
        differing <= c.max_differing_rows,
        "{what}: {differing} rows pick differently from the exact logits"
    );
    let (b, i, hd) = (c.batch, c.lq, c.hd);
    let ok: Vec<bool> = gidx
        .chunks(c.keep)
        .zip(reference.indices.chunks(c.keep))
        .map(|(a, b)| a == b)
        .collect();
    let mask = |v: &[f32]| -> Vec<f32> {
        // Zero the out entries of rows whose picks differ (compared separately above).
        let mut v = v.to_vec();
        for bi in 0..b {
            for qi in 0..i {
                for h in 0..c.heads {
                    if !ok[(bi * c.heads + h) * i + qi] {
                        let o = (bi * i + qi) * c.heads * hd + h * hd;
                        v[o..o + hd].iter_mut().for_each(|x| *x = 0.0);
                    }
                }
            }
        }
        v
    };
    let max_delta = delta.iter().fold(0.0f64, |a, &d| a.max(d)) as f32;
    assert_close(
        &format!("{what} out vs exact"),
        &mask(&gout),
        &mask(&reference.out),
        4e-5 + 4.0 * max_delta,
        0.0,
    );
}

#[test]
fn attention_reduced_model_shapes() {
    let cases = [
        // The decoder's self-attention, fewer rows and heads: packed qkv, D = 32, K = 32.
        Case {
            batch: 2,
            lq: 45,
            lk: 45,
            heads: 2,
            hd: 32,
            keep: 32,
            packed: true,
            tie_period: 0,
            max_differing_rows: 1,
        },
        // Exact logit ties everywhere (7 distinct key rows): ties resolve to the lower index.
        Case {
            batch: 1,
            lq: 40,
            lk: 40,
            heads: 3,
            hd: 32,
            keep: 32,
            packed: true,
            tie_period: 7,
            max_differing_rows: 0,
        },
        // Cross-attention: separate q / offset k / v, odd head width, Lq ≠ Lk.
        Case {
            batch: 2,
            lq: 7,
            lk: 100,
            heads: 4,
            hd: 20,
            keep: 13,
            packed: false,
            tie_period: 0,
            max_differing_rows: 1,
        },
        // K = Lk (plain softmax attention) and Lk = K = 1.
        Case {
            batch: 1,
            lq: 9,
            lk: 33,
            heads: 1,
            hd: 8,
            keep: 33,
            packed: false,
            tie_period: 0,
            max_differing_rows: 0,
        },
        Case {
            batch: 3,
            lq: 5,
            lk: 1,
            heads: 2,
            hd: 4,
            keep: 1,
            packed: false,
            tie_period: 0,
            max_differing_rows: 0,
        },
        // Fused register path with K < 32, batch 2, Lq not a multiple of 32.
        Case {
            batch: 2,
            lq: 37,
            lk: 37,
            heads: 3,
            hd: 32,
            keep: 5,
            packed: true,
            tie_period: 0,
            max_differing_rows: 1,
        },
        // Head width 32 but K > 32 (64-slot register network), unaligned k view.
        Case {
            batch: 1,
            lq: 33,
            lk: 50,
            heads: 2,
            hd: 32,
            keep: 40,
            packed: false,
            tie_period: 4,
            max_differing_rows: 0,
        },
        // K = 64 from rows longer than one power of two.
        Case {
            batch: 1,
            lq: 6,
            lk: 700,
            heads: 2,
            hd: 16,
            keep: 64,
            packed: false,
            tie_period: 3,
            max_differing_rows: 0,
        },
    ];
    for variant in Variant::ALL {
        for (ci, c) in cases.iter().enumerate() {
            check_attention(&format!("case {ci}"), c, variant);
        }
    }
}

#[test]
fn attention_full_decoder_shape() {
    let c = Case {
        batch: 1,
        lq: 361,
        lk: 361,
        heads: 8,
        hd: 32,
        keep: 32,
        packed: true,
        tie_period: 0,
        max_differing_rows: 8,
    };
    for variant in Variant::ALL {
        check_attention("361x361 h8 d32", &c, variant);
    }
}

#[test]
fn attention_rejects_bad_inputs() {
    let g = gpu();
    let mut enc = g.encoder();
    let qkv = g.zeros(&[2, 10, 3 * 64]).unwrap();
    let q = HeadsView::packed(&qkv, 3, 0).unwrap();
    let k = HeadsView::packed(&qkv, 3, 1).unwrap();
    let v = HeadsView::packed(&qkv, 3, 2).unwrap();
    let err = |r: sparsett::Result<topk::TopK>| r.unwrap_err().to_string();
    for variant in Variant::ALL {
        let e = err(topk::topk_attention_with(
            &mut enc, q, k, v, 2, 11, 1.0, variant,
        ));
        assert!(
            e.contains("topk_attention") && e.contains("K = 11") && e.contains("n = 10"),
            "{e}"
        );
    }
    let e = err(topk::topk_attention(&mut enc, q, k, v, 3, 4, 1.0));
    assert!(
        e.contains("topk_attention") && e.contains("64") && e.contains("3 heads"),
        "{e}"
    );
    let e = err(topk::topk_attention(&mut enc, q, k, v, 2, 0, 1.0));
    assert!(e.contains("topk_attention") && e.contains("K = 0"), "{e}");
    let long = g.zeros(&[1, 1100, 3 * 64]).unwrap();
    let (lq, lk, lv) = (
        HeadsView::packed(&long, 3, 0).unwrap(),
        HeadsView::packed(&long, 3, 1).unwrap(),
        HeadsView::packed(&long, 3, 2).unwrap(),
    );
    let e = err(topk::topk_attention(&mut enc, lq, lk, lv, 2, 65, 1.0));
    assert!(
        e.contains("topk_attention") && e.contains("1100") && e.contains("1024"),
        "{e}"
    );
    // Batch mismatch, k/v length mismatch, a view that runs past its tensor, offset outside rows.
    let e = err(topk::topk_attention(&mut enc, lq, k, v, 2, 4, 1.0));
    assert!(e.contains("topk_attention") && e.contains("batch"), "{e}");
    let v9 = HeadsView { len: 9, ..v };
    let e = err(topk::topk_attention(&mut enc, q, k, v9, 2, 4, 1.0));
    assert!(e.contains("topk_attention") && e.contains("len 9"), "{e}");
    let past = HeadsView { batch: 3, ..q };
    let kp = HeadsView { batch: 3, ..k };
    let vp = HeadsView { batch: 3, ..v };
    let e = err(topk::topk_attention(&mut enc, past, kp, vp, 2, 4, 1.0));
    assert!(
        e.contains("topk_attention") && e.contains("does not fit"),
        "{e}"
    );
    let outside = HeadsView { offset: 192, ..v };
    let e = err(topk::topk_attention(&mut enc, q, k, outside, 2, 4, 1.0));
    assert!(
        e.contains("topk_attention") && e.contains("offset 192"),
        "{e}"
    );
    let e = topk::topk_attention_logits(&mut enc, q, k, v, 2, 11, 1.0, Variant::Register)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("topk_attention_logits") && e.contains("K = 11") && e.contains("n = 10"),
        "{e}"
    );
}

#[test]
fn register_variant_fuses_with_subgroups_of_eight() {
    // The model shape runs as one dispatch where the adapter has subgroups of exactly 8 (lavapipe),
    // as logits + selection otherwise; odd head widths, K > 32 and unaligned views never fuse.
    let g = gpu();
    let fused = g.has_subgroups() && g.info.subgroup_min_size == 8 && g.info.subgroup_max_size == 8;
    let qkv = g.zeros(&[1, 40, 3 * 64]).unwrap();
    let view = |i| HeadsView::packed(&qkv, 3, i).unwrap();
    let dispatches = |heads, keep, variant| {
        let mut enc = g.encoder();
        topk::topk_attention_with(
            &mut enc,
            view(0),
            view(1),
            view(2),
            heads,
            keep,
            1.0,
            variant,
        )
        .unwrap();
        enc.dispatch_count()
    };
    assert_eq!(
        dispatches(2, 32, Variant::Register),
        if fused { 1 } else { 2 }
    );
    assert_eq!(dispatches(2, 33, Variant::Register), 2);
    assert_eq!(dispatches(4, 8, Variant::Register), 2);
    assert_eq!(dispatches(2, 32, Variant::Tiled), 2);
}

/// `cargo test --release --test ops topk::bench -- --ignored --nocapture` prints the kernel table.
#[test]
#[ignore]
fn bench() {
    let mut rows = Vec::new();
    topk::bench(gpu(), &mut rows).unwrap();
    println!("{}", gpu().adapter_line());
    print!("{}", sparsett::bench::table(&rows));
}

// ---- Backward ------------------------------------------------------------------------------
//
// Tolerances of `topk_attention_backward` against `cpu::topk_attention_backward` (f64, full
// softmax Jacobian, on the GPU forward's own kept indices so the kept sets are the same):
// the GPU works from the forward's f32 weights P (within 1e-5 relative, see above) and sums at
// most max(K, D, Lq) ≤ 32 rounded f32 terms per output (≤ 32·2⁻²⁴ ≈ 2e-6 relative to the sum
// of magnitudes). dS = P·(dP − Σ P·dP) cancels, so errors are bounded against the magnitudes
// involved, not the result: with |q|, |k|, |v|, |dO| ≤ 1 and D ≤ 32, every dS term and every
// gradient term is at most D·K in size, and the gradients themselves are of the same order as
// their largest entries. So each tensor is checked with atol = 1e-4·max|want| (≈ 5× the 2e-5
// relative error above) and rtol 1e-4.
//
// The CPU reference against central finite differences in f64 (h = 1e-6): the kept set must not
// change under the perturbation. A step h in one input moves a logit by ≤ h·scale·max|x| ≤ h, so
// the kept set is stable when the gap between every row's K-th and (K+1)-th logit exceeds 2h;
// the test asserts a gap ≥ 1e-4 on its data and also asserts that the perturbed selection equals
// the base one. The function is then smooth in the step, and central differences are good to
// O(h²)·|f'''| + rounding ε·|f|/h ≈ 1e-10: atol 1e-7, rtol 1e-6.

struct BwCase {
    batch: usize,
    lq: usize,
    lk: usize,
    heads: usize,
    hd: usize,
    keep: usize,
    packed: bool,
}

/// Dense f64 copy of a view's `[batch, len, width]` block.
fn dense_f64(
    data: &[f32],
    batch: usize,
    len: usize,
    stride: usize,
    offset: usize,
    width: usize,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(batch * len * width);
    for r in 0..batch * len {
        out.extend(
            data[r * stride + offset..][..width]
                .iter()
                .map(|&x| x as f64),
        );
    }
    out
}

fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

fn check_backward(name: &str, c: &BwCase, variant: Variant) {
    let g = gpu();
    let width = c.heads * c.hd;
    let seed = (c.lq * 31 + c.lk * 17 + c.hd * 3 + c.keep) as u64;
    // Separate tensors: k carries 3 extra leading columns (an offset view), v is dense.
    let (qd, kd, vd, qs, ks, vs, offs) = if c.packed {
        assert_eq!(c.lq, c.lk);
        let x = rand_vec(seed, c.batch * c.lq * 3 * width, -1.0, 1.0);
        (
            x.clone(),
            x.clone(),
            x,
            3 * width,
            3 * width,
            3 * width,
            (0, width, 2 * width),
        )
    } else {
        (
            rand_vec(seed, c.batch * c.lq * width, -1.0, 1.0),
            rand_vec(seed + 1, c.batch * c.lk * (width + 3), -1.0, 1.0),
            rand_vec(seed + 2, c.batch * c.lk * width, -1.0, 1.0),
            width,
            width + 3,
            width,
            (0, 3, 0),
        )
    };
    let qt = g.upload(&[c.batch, c.lq, qs], &qd).unwrap();
    let (kt, vt) = if c.packed {
        (qt.clone(), qt.clone())
    } else {
        (
            g.upload(&[c.batch, c.lk, ks], &kd).unwrap(),
            g.upload(&[c.batch, c.lk, vs], &vd).unwrap(),
        )
    };
    let hv = |t, len, stride, offset| HeadsView {
        t,
        batch: c.batch,
        len,
        stride,
        offset,
    };
    let (q, k, v) = (
        hv(&qt, c.lq, qs, offs.0),
        hv(&kt, c.lk, ks, offs.1),
        hv(&vt, c.lk, vs, offs.2),
    );
    let scale = 1.0 / (c.hd as f32).sqrt();
    let dout = rand_vec(seed + 3, c.batch * c.lq * width, -1.0, 1.0);
    let dout_t = g.upload(&[c.batch, c.lq, width], &dout).unwrap();
    // Gradients already present, for the accumulating call.
    let pre_q = rand_vec(seed + 4, c.batch * c.lq * width, -1.0, 1.0);
    let pre_kv = rand_vec(seed + 5, c.batch * c.lk * width, -1.0, 1.0);
    let acc_q = g.upload(&[c.batch, c.lq, width], &pre_q).unwrap();
    let acc_k = g.upload(&[c.batch, c.lk, width], &pre_kv).unwrap();
    let acc_v = g.upload(&[c.batch, c.lk, width], &pre_kv).unwrap();

    let mut enc = g.encoder();
    let fwd =
        topk::topk_attention_with(&mut enc, q, k, v, c.heads, c.keep, scale, variant).unwrap();
    let bw = |enc: &mut sparsett::Encoder, into: &topk::TopKInto| {
        topk::topk_attention_backward(
            enc,
            q,
            k,
            v,
            c.heads,
            scale,
            &fwd.indices,
            &fwd.weights,
            &dout_t,
            into,
        )
        .unwrap()
    };
    let fresh = bw(&mut enc, &topk::TopKInto::default());
    let into = topk::TopKInto {
        dq: Some(&acc_q),
        dk: Some(&acc_k),
        dv: Some(&acc_v),
    };
    let acc = bw(&mut enc, &into);
    assert_eq!(fresh.dq.shape(), [c.batch, c.lq, width]);
    assert_eq!(fresh.dk.shape(), [c.batch, c.lk, width]);
    assert_eq!(fresh.dv.shape(), [c.batch, c.lk, width]);
    let got = enc
        .submit_read(&[&fresh.dq, &fresh.dk, &fresh.dv, &acc.dq, &acc.dk, &acc.dv])
        .unwrap();
    let idx = read_u32(g, &fwd.indices);

    let dims = [c.batch, c.lq, c.lk, c.heads, c.hd];
    let (wq, wk, wv) = cpu::topk_attention_backward(
        &dense_f64(&qd, c.batch, c.lq, qs, offs.0, width),
        &dense_f64(&kd, c.batch, c.lk, ks, offs.1, width),
        &dense_f64(&vd, c.batch, c.lk, vs, offs.2, width),
        dims,
        c.keep,
        scale as f64,
        &idx,
        &dout.iter().map(|&x| x as f64).collect::<Vec<_>>(),
    );
    let what = format!("{name} {variant:?}");
    for (i, (label, want, pre)) in [
        ("dq", &wq, &pre_q),
        ("dk", &wk, &pre_kv),
        ("dv", &wv, &pre_kv),
    ]
    .into_iter()
    .enumerate()
    {
        let want: Vec<f32> = want.iter().map(|&x| x as f32).collect();
        let atol = 1e-4 * max_abs(&want).max(1e-3);
        assert_close(&format!("{what} {label}"), &got[i], &want, atol, 1e-4);
        let want_acc: Vec<f32> = want.iter().zip(pre).map(|(w, p)| w + p).collect();
        assert_close(
            &format!("{what} {label} accumulated"),
            &got[3 + i],
            &want_acc,
            atol,
            1e-4,
        );
    }
}

#[test]
fn backward_matches_reference() {
    let cases = [
        // Odd everything, batch 2, an offset k view, K well below n.
        BwCase {
            batch: 2,
            lq: 7,
            lk: 11,
            heads: 2,
            hd: 5,
            keep: 4,
            packed: false,
        },
        // K = n (every key kept: the dense attention's gradient), packed qkv.
        BwCase {
            batch: 1,
            lq: 13,
            lk: 13,
            heads: 3,
            hd: 4,
            keep: 13,
            packed: true,
        },
        // The model's head width (the fused forward where subgroups allow), batch 2, packed.
        BwCase {
            batch: 2,
            lq: 19,
            lk: 19,
            heads: 2,
            hd: 32,
            keep: 8,
            packed: true,
        },
        // K = 1 and more queries than keys; D = 3 leaves a partial column chunk.
        BwCase {
            batch: 1,
            lq: 6,
            lk: 3,
            heads: 1,
            hd: 3,
            keep: 1,
            packed: false,
        },
        // K > 32 (the forward's second register net), n not a multiple of 4.
        BwCase {
            batch: 1,
            lq: 5,
            lk: 41,
            heads: 1,
            hd: 6,
            keep: 37,
            packed: false,
        },
    ];
    for (n, c) in cases.iter().enumerate() {
        for variant in Variant::ALL {
            check_backward(&format!("case {n}"), c, variant);
        }
    }
}

/// Smallest gap between the K-th and (K+1)-th largest logit over all rows (∞ when K = Lk).
fn min_gap(q: &[f64], k: &[f64], dims: [usize; 5], keep: usize, scale: f64) -> f64 {
    let [batch, lq, lk, heads, hd] = dims;
    let width = heads * hd;
    let mut gap = f64::INFINITY;
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..lq {
                let mut l: Vec<f64> = (0..lk)
                    .map(|j| {
                        (0..hd)
                            .map(|d| {
                                q[(b * lq + i) * width + h * hd + d]
                                    * k[(b * lk + j) * width + h * hd + d]
                            })
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                l.sort_by(|a, b| b.partial_cmp(a).unwrap());
                if keep < lk {
                    gap = gap.min(l[keep - 1] - l[keep]);
                }
            }
        }
    }
    gap
}

#[test]
fn backward_reference_matches_finite_differences() {
    for (dims, keep) in [
        ([2, 4, 6, 2, 3], 3),
        ([1, 3, 5, 1, 2], 5),
        ([1, 5, 4, 2, 2], 1),
    ] {
        let [batch, lq, lk, heads, hd] = dims;
        let width = heads * hd;
        let f = |seed: u64, n: usize| -> Vec<f64> {
            rand_vec(seed, n, -1.0, 1.0)
                .into_iter()
                .map(|x| x as f64)
                .collect()
        };
        let seed = (lq * 10 + lk + keep) as u64;
        let q = f(seed, batch * lq * width);
        let k = f(seed + 1, batch * lk * width);
        let v = f(seed + 2, batch * lk * width);
        let dout = f(seed + 3, batch * lq * width);
        let scale = 0.8;
        let gap = min_gap(&q, &k, dims, keep, scale);
        assert!(
            gap >= 1e-4,
            "dims {dims:?} K {keep}: logit gap {gap} too small for a stable kept set"
        );
        let (_, idx) = cpu::topk_attention_f64(&q, &k, &v, dims, keep, scale, None);
        let (gq, gk, gv) = cpu::topk_attention_backward(&q, &k, &v, dims, keep, scale, &idx, &dout);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
            let (out, sel) = cpu::topk_attention_f64(q, k, v, dims, keep, scale, None);
            assert_eq!(sel, idx, "the perturbation changed the kept set");
            out.iter().zip(&dout).map(|(o, d)| o * d).sum()
        };
        let h = 1e-6;
        for which in 0..3 {
            let grad = [&gq, &gk, &gv][which];
            for e in 0..grad.len() {
                let mut xs = [q.clone(), k.clone(), v.clone()];
                xs[which][e] += h;
                let up = loss(&xs[0], &xs[1], &xs[2]);
                xs[which][e] -= 2.0 * h;
                let down = loss(&xs[0], &xs[1], &xs[2]);
                let fd = (up - down) / (2.0 * h);
                assert!(
                    (fd - grad[e]).abs() <= 1e-7 + 1e-6 * fd.abs(),
                    "dims {dims:?} K {keep}: d{} [{e}] reference {} vs finite difference {fd}",
                    ["q", "k", "v"][which],
                    grad[e]
                );
            }
        }
        // Unkept keys get nothing: with K < Lk some key gradient entries of dv must be exactly
        // zero only if some key is kept by no row; check the ones that are.
        for b in 0..batch {
            for h in 0..heads {
                for j in 0..lk {
                    let kept = (0..lq).any(|i| {
                        idx[((b * heads + h) * lq + i) * keep..][..keep].contains(&(j as u32))
                    });
                    if !kept {
                        for d in 0..hd {
                            let e = (b * lk + j) * width + h * hd + d;
                            assert_eq!((gk[e], gv[e]), (0.0, 0.0), "unkept key {j} got gradient");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn backward_rejects_bad_inputs() {
    let g = gpu();
    let mut enc = g.encoder();
    let qkv = g.zeros(&[2, 10, 3 * 8]).unwrap();
    let q = HeadsView::packed(&qkv, 3, 0).unwrap();
    let k = HeadsView::packed(&qkv, 3, 1).unwrap();
    let v = HeadsView::packed(&qkv, 3, 2).unwrap();
    let idx = g.upload_u32(&[2, 2, 10, 3], &[0; 120]).unwrap();
    let w = g.zeros(&[2, 2, 10, 3]).unwrap();
    let dout = g.zeros(&[2, 10, 8]).unwrap();
    let none = topk::TopKInto::default();
    let err = |r: sparsett::Result<topk::TopKGrads>| r.unwrap_err().to_string();
    let bw = |enc: &mut sparsett::Encoder, idx, w, dout, into: &topk::TopKInto| {
        err(topk::topk_attention_backward(
            enc, q, k, v, 2, 1.0, idx, w, dout, into,
        ))
    };
    // K > n, as the forward.
    let idx11 = g.upload_u32(&[2, 2, 10, 11], &[0; 440]).unwrap();
    let w11 = g.zeros(&[2, 2, 10, 11]).unwrap();
    let e = bw(&mut enc, &idx11, &w11, &dout, &none);
    assert!(
        e.contains("topk_attention_backward") && e.contains("K = 11") && e.contains("n = 10"),
        "{e}"
    );
    let e = bw(&mut enc, &w, &w, &dout, &none);
    assert!(e.contains("indices must be u32"), "{e}");
    let idx_bad = g.upload_u32(&[2, 3, 10, 3], &[0; 180]).unwrap();
    let e = bw(&mut enc, &idx_bad, &w, &dout, &none);
    assert!(
        e.contains("indices must be") && e.contains("[2, 2, 10, 3]"),
        "{e}"
    );
    let e = bw(&mut enc, &idx, &idx, &dout, &none);
    assert!(e.contains("weights must be f32"), "{e}");
    let dout_bad = g.zeros(&[2, 10, 9]).unwrap();
    let e = bw(&mut enc, &idx, &w, &dout_bad, &none);
    assert!(
        e.contains("dout must be") && e.contains("[2, 10, 8]"),
        "{e}"
    );
    let alias = topk::TopKInto {
        dq: Some(&dout),
        ..none
    };
    let e = bw(&mut enc, &idx, &w, &dout, &alias);
    assert!(e.contains("into.dq") && e.contains("shares"), "{e}");
    let dk = g.zeros(&[2, 10, 8]).unwrap();
    let twice = topk::TopKInto {
        dk: Some(&dk),
        dv: Some(&dk),
        ..none
    };
    let e = bw(&mut enc, &idx, &w, &dout, &twice);
    assert!(e.contains("distinct"), "{e}");
    let wrong = g.zeros(&[2, 9, 8]).unwrap();
    let e = bw(
        &mut enc,
        &idx,
        &w,
        &dout,
        &topk::TopKInto {
            dv: Some(&wrong),
            ..none
        },
    );
    assert!(e.contains("into.dv must be f32 [2, 10, 8]"), "{e}");
}

/// Top-K attention with dropout on the kept weights (training): the GPU's kept set (its own
/// selection, read back) and the f64 reference with the same mask bits; the dense weights it
/// returns equal the reference's top-K softmax. Tolerance as the backward tests here: f32 logits
/// and weights (|q|, |k|, |v| ≤ 1, D ≤ 8), sums over ≤ 40 keys, weights scaled by ≤ 1/(1 − 0.3).
#[test]
fn dropout_on_kept_weights_matches_reference() {
    use sparsett::ops::attention::{cpu as acpu, Dropout};
    let g = gpu();
    // (batch, lq, lk, heads, hd, keep)
    for (ci, &(batch, lq, lk, heads, hd, keep)) in [
        (2, 9, 40, 2, 4, 8),
        (1, 5, 7, 1, 3, 7),
        (1, 33, 33, 2, 8, 32),
    ]
    .iter()
    .enumerate()
    {
        let width = heads * hd;
        let seed = 900 + 10 * ci as u64;
        let q = rand_vec(seed, batch * lq * width, -1.0, 1.0);
        let k = rand_vec(seed + 1, batch * lk * width, -1.0, 1.0);
        let v = rand_vec(seed + 2, batch * lk * width, -1.0, 1.0);
        let dout = rand_vec(seed + 3, batch * lq * width, -1.0, 1.0);
        let qt = g.upload(&[batch, lq, width], &q).unwrap();
        let kt = g.upload(&[batch, lk, width], &k).unwrap();
        let vt = g.upload(&[batch, lk, width], &v).unwrap();
        let dt = g.upload(&[batch, lq, width], &dout).unwrap();
        let view = |t| HeadsView::dense(t).unwrap();
        let scale = 0.7;
        let drop = Dropout {
            p: 0.3,
            seed: 40 + ci as u64,
        };
        let mut enc = g.encoder();
        let sel = topk::topk_attention(
            &mut enc,
            view(&qt),
            view(&kt),
            view(&vt),
            heads,
            keep,
            scale,
        )
        .unwrap();
        let with = |enc: &mut sparsett::Encoder, d: Dropout| {
            let (q, k, v) = (view(&qt), view(&kt), view(&vt));
            topk::topk_attention_dropout(enc, q, k, v, heads, keep, scale, d).unwrap()
        };
        let (out, probs) = with(&mut enc, drop);
        let gr = topk::topk_attention_dropout_backward(
            &mut enc,
            view(&qt),
            view(&kt),
            view(&vt),
            heads,
            scale,
            &probs,
            drop,
            &dt,
        )
        .unwrap();
        let (plain, _) = with(&mut enc, Dropout { p: 0.0, seed: 1 });
        let got = enc
            .submit_read(&[&out, &probs, &gr.dq, &gr.dk, &gr.dv, &plain, &sel.out])
            .unwrap();
        let idx = read_u32(g, &sel.indices);

        let dims = [batch, lq, lk, heads, hd];
        let to64 = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
        let (q64, k64, v64) = (to64(&q), to64(&k), to64(&v));
        let p = cpu::topk_probs_f64(&q64, &k64, dims, keep, scale as f64, &idx);
        let f = acpu::dropout_factors(p.len(), drop.p, drop.seed);
        let want_out = acpu::attend_f64(&p, &v64, dims, Some(&f));
        let (dq, dk, dv, _) = acpu::attend_backward_f64(
            &p,
            &q64,
            &k64,
            &v64,
            dims,
            scale as f64,
            Some(&f),
            &to64(&dout),
        );
        let to32 = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<_>>();
        let what = |s: &str| format!("case {ci} {s}");
        assert_close(&what("out"), &got[0], &to32(&want_out), 3e-5, 1e-4);
        assert_close(&what("weights"), &got[1], &to32(&p), 1e-6, 1e-5);
        assert_close(&what("dq"), &got[2], &to32(&dq), 3e-5, 1e-4);
        assert_close(&what("dk"), &got[3], &to32(&dk), 3e-5, 1e-4);
        assert_close(&what("dv"), &got[4], &to32(&dv), 3e-5, 1e-4);
        // Without dropout the dense path gives the sparse kernel's output.
        assert_close(&what("p = 0 vs sparse"), &got[5], &got[6], 3e-5, 1e-4);
    }
}

#[test]
fn dense_weights_rejects_bad_operands() {
    let g = gpu();
    let idx = g.upload_u32(&[1, 1, 2, 3], &[0, 1, 2, 2, 1, 0]).unwrap();
    let w = g.upload(&[1, 1, 2, 3], &[0.5; 6]).unwrap();
    let wrong = g.upload(&[1, 1, 2, 2], &[0.5; 4]).unwrap();
    let mut enc = g.encoder();
    let e = |r: sparsett::Result<Tensor>| r.unwrap_err().to_string();
    let m = e(topk::dense_weights(&mut enc, &idx, &wrong, 4));
    assert!(
        m.contains("topk_dense_weights") && m.contains("weights"),
        "{m}"
    );
    let m = e(topk::dense_weights(&mut enc, &w, &w, 4));
    assert!(m.contains("u32"), "{m}");
    let m = e(topk::dense_weights(&mut enc, &idx, &w, 2));
    assert!(m.contains("K = 3"), "{m}");
    let ok = topk::dense_weights(&mut enc, &idx, &w, 4).unwrap();
    let got = enc.submit_read(&[&ok]).unwrap().pop().unwrap();
    assert_eq!(got, [0.5, 0.5, 0.5, 0.0, 0.5, 0.5, 0.5, 0.0]);
}
