//! Swin window kernels against `ops::window::cpu`.
//!
//! Tolerances: none. Partition, reverse, the region mask, the bias gather and patch merging only
//! move (or select) values, so results must be bitwise equal to the reference; the fused residual
//! add is one f32 addition per element, rounded identically on both sides. The CPU references
//! themselves are checked against hand-worked cases and against Swin's original index formula.
//! Every access width (`Width::ALL`) the channel count allows is run; the kernels have no
//! Register/Tiled split (data movement gains nothing from workgroup memory).

use sparsett::ops::window::{self, cpu, Width, WindowGrid};
use sparsett::Tensor;

use crate::common::{gpu, rand_vec};

#[track_caller]
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: element {i} is {}, expected {}", got[i], want[i]);
    }
}

/// (B, H, W, C, window): the model's token maps (stage 1-3 of z and x) and odd synthetic ones.
const MAPS: [(usize, usize, usize, usize, usize); 11] = [
    (1, 32, 32, 96, 7),
    (1, 16, 16, 192, 7),
    (1, 8, 8, 384, 7),
    (1, 73, 73, 96, 7),
    (1, 37, 37, 192, 7),
    (1, 19, 19, 384, 7),
    (2, 5, 9, 5, 3),
    (2, 5, 9, 8, 3),
    (2, 5, 9, 16, 3),
    (3, 2, 3, 4, 7),
    (2, 4, 4, 1, 4),
];

fn shifts(window: usize) -> Vec<usize> {
    let mut s = vec![0, 1, window / 2, window - 1];
    if window == 7 {
        s = vec![0, 3];
    }
    s.dedup();
    s
}

fn widths(c: usize) -> Vec<Width> {
    Width::ALL
        .into_iter()
        .filter(|w| c.is_multiple_of(w.channels()))
        .collect()
}

#[test]
fn partition_and_reverse_match_reference() {
    let g = gpu();
    for (mi, &(b, h, w, c, win)) in MAPS.iter().enumerate() {
        let dims = [b, h, w, c];
        let x = rand_vec(100 + mi as u64, b * h * w * c, -1.0, 1.0);
        let xt = g.upload(&dims, &x).unwrap();
        let nw = WindowGrid::new(h, w, win).unwrap().count();
        let wshape = [b * nw, win * win, c];
        // Arbitrary window contents, pad tokens included, which reverse must drop.
        let wv = rand_vec(200 + mi as u64, b * nw * win * win * c, -1.0, 1.0);
        let wt = g.upload(&wshape, &wv).unwrap();
        for shift in shifts(win) {
            let want_p = cpu::window_partition(&x, dims, win, shift);
            let want_r = cpu::window_reverse(&wv, dims, win, shift);
            let want_a: Vec<f32> = x.iter().zip(&want_r).map(|(a, r)| a + r).collect();
            for width in widths(c) {
                let what = format!("{dims:?} window {win} shift {shift} {width:?}");
                let mut enc = g.encoder();
                let p = window::window_partition_with(&mut enc, &xt, win, shift, width).unwrap();
                let back =
                    window::window_reverse_with(&mut enc, &p, [b, h, w], win, shift, None, width)
                        .unwrap();
                let r =
                    window::window_reverse_with(&mut enc, &wt, [b, h, w], win, shift, None, width)
                        .unwrap();
                let a = window::window_reverse_with(
                    &mut enc,
                    &wt,
                    [b, h, w],
                    win,
                    shift,
                    Some(&xt),
                    width,
                )
                .unwrap();
                assert_eq!(p.shape(), wshape);
                assert_eq!(r.shape(), dims);
                let got = enc.submit_read(&[&p, &back, &r, &a]).unwrap();
                assert_bits(&format!("partition {what}"), &got[0], &want_p);
                assert_bits(&format!("round trip {what}"), &got[1], &x);
                assert_bits(&format!("reverse {what}"), &got[2], &want_r);
                assert_bits(&format!("reverse + residual {what}"), &got[3], &want_a);
            }
        }
    }
}

/// LayerNorm fused into the partition equals the CPU LayerNorm then partition (tolerance of
/// tests/ops/norm.rs: 1e-5 + 1e-5·|want|, the same arithmetic as the register LayerNorm), equals
/// the unfused register path within a few ulp (same statistics code; the channel count is a
/// compile-time constant here, so the compiler may turn one division into a reciprocal
/// multiply), and keeps pad tokens zero (the reference pads after the norm).
#[test]
fn partition_with_layer_norm_matches_reference() {
    use sparsett::ops::norm::{self, cpu as ncpu};
    use sparsett::Variant;
    let g = gpu();
    for (mi, &(b, h, w, c, win)) in MAPS.iter().enumerate() {
        let dims = [b, h, w, c];
        // An offset row mean, as Swin activations have, exercises the shifted statistics.
        let x: Vec<f32> = rand_vec(300 + mi as u64, b * h * w * c, -2.0, 2.0)
            .iter()
            .map(|v| v + 7.0)
            .collect();
        let gam = rand_vec(400 + mi as u64, c, 0.5, 1.5);
        let bet = rand_vec(500 + mi as u64, c, -1.0, 1.0);
        let (xt, gt, bt) = (
            g.upload(&dims, &x).unwrap(),
            g.upload(&[c], &gam).unwrap(),
            g.upload(&[c], &bet).unwrap(),
        );
        let normed = ncpu::layer_norm(&x, c, &gam, &bet, 1e-5);
        for shift in shifts(win) {
            let what = format!("{dims:?} window {win} shift {shift}");
            let want = cpu::window_partition(&normed, dims, win, shift);
            let mut enc = g.encoder();
            let fused =
                window::window_partition_ln(&mut enc, &xt, &gt, &bt, 1e-5, win, shift).unwrap();
            let ln =
                norm::layer_norm_with(&mut enc, &xt, &gt, &bt, 1e-5, Variant::Register).unwrap();
            let two =
                window::window_partition_with(&mut enc, &ln, win, shift, Width::Scalar).unwrap();
            let got = enc.submit_read(&[&fused, &two]).unwrap();
            crate::common::assert_close(&what, &got[0], &want, 1e-5, 1e-5);
            crate::common::assert_close(
                &format!("fused vs unfused {what}"),
                &got[0],
                &got[1],
                1e-6,
                1e-6,
            );
        }
    }
    let mut enc = g.encoder();
    let x = g.zeros(&[1, 4, 4, 8]).unwrap();
    let bad = g.zeros(&[7]).unwrap();
    let e = window::window_partition_ln(&mut enc, &x, &bad, &bad, 1e-5, 3, 0)
        .expect_err("gamma of the wrong length")
        .to_string();
    assert!(e.contains("gamma") && e.contains("[8]"), "{e}");
}

/// PatchMerging + LayerNorm in one dispatch equals the CPU merge then CPU LayerNorm (norm
/// tolerance, as above), odd map sizes included (the missing row/column merges zeros).
#[test]
fn patch_merge_with_layer_norm_matches_reference() {
    use sparsett::ops::norm::cpu as ncpu;
    let g = gpu();
    for (mi, &(b, h, w, c, _)) in MAPS.iter().enumerate() {
        let dims = [b, h, w, c];
        let x: Vec<f32> = rand_vec(600 + mi as u64, b * h * w * c, -2.0, 2.0)
            .iter()
            .map(|v| v - 3.0)
            .collect();
        let gam = rand_vec(700 + mi as u64, 4 * c, 0.5, 1.5);
        let bet = rand_vec(800 + mi as u64, 4 * c, -1.0, 1.0);
        let want = ncpu::layer_norm(&cpu::patch_merge(&x, dims), 4 * c, &gam, &bet, 1e-5);
        let mut enc = g.encoder();
        let y = window::patch_merge_ln(
            &mut enc,
            &g.upload(&dims, &x).unwrap(),
            &g.upload(&[4 * c], &gam).unwrap(),
            &g.upload(&[4 * c], &bet).unwrap(),
            1e-5,
        )
        .unwrap();
        assert_eq!(y.shape(), [b, h.div_ceil(2) * w.div_ceil(2), 4 * c]);
        let got = enc.submit_read(&[&y]).unwrap().pop().unwrap();
        crate::common::assert_close(&format!("merge+LN {dims:?}"), &got, &want, 1e-5, 1e-5);
    }
}

#[test]
fn default_entry_points_pick_a_width() {
    let g = gpu();
    for (b, h, w, c) in [(1, 19, 19, 384), (2, 5, 9, 5)] {
        let dims = [b, h, w, c];
        let x = rand_vec(7, b * h * w * c, -1.0, 1.0);
        let xt = g.upload(&dims, &x).unwrap();
        let mut enc = g.encoder();
        let p = window::window_partition(&mut enc, &xt, 3, 1).unwrap();
        let r = window::window_reverse(&mut enc, &p, b, h, w, 3, 1).unwrap();
        let a = window::window_reverse_add(&mut enc, &p, &xt, 3, 1).unwrap();
        let m = window::patch_merge(&mut enc, &xt).unwrap();
        let got = enc.submit_read(&[&p, &r, &a, &m]).unwrap();
        assert_bits("partition", &got[0], &cpu::window_partition(&x, dims, 3, 1));
        assert_bits("reverse", &got[1], &x);
        let twice: Vec<f32> = x.iter().map(|v| v + v).collect();
        assert_bits("reverse_add", &got[2], &twice);
        assert_bits("patch_merge", &got[3], &cpu::patch_merge(&x, dims));
    }
}

#[test]
fn cpu_partition_by_hand() {
    // 3×3 map 1..9, window 2, shift 1: padded to 4×4, rolled by (−1, −1) (row i takes padded row
    // i + 1), then cut into four 2×2 windows.
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let want = [
        5.0, 6.0, 8.0, 9.0, //
        0.0, 4.0, 0.0, 7.0, //
        0.0, 0.0, 2.0, 3.0, //
        0.0, 0.0, 0.0, 1.0,
    ];
    assert_eq!(cpu::window_partition(&x, [1, 3, 3, 1], 2, 1), want);
    assert_eq!(cpu::window_reverse(&want, [1, 3, 3, 1], 2, 1), x);
    let g = gpu();
    let t = g.upload(&[1, 3, 3, 1], &x).unwrap();
    let mut enc = g.encoder();
    let p = window::window_partition(&mut enc, &t, 2, 1).unwrap();
    assert_eq!(enc.submit_read(&[&p]).unwrap()[0], want);
}

#[test]
fn region_mask_matches_reference() {
    let g = gpu();
    let cases = [
        (35, 35, 7),
        (21, 21, 7),
        (14, 14, 7),
        (77, 77, 7),
        (42, 42, 7),
        (7, 14, 7),
        (6, 9, 3),
        (4, 4, 4),
    ];
    for (hp, wp, win) in cases {
        for shift in shifts(win) {
            let mut enc = g.encoder();
            let m = window::region_mask(&mut enc, hp, wp, win, shift).unwrap();
            let nw = (hp / win) * (wp / win);
            assert_eq!(m.shape(), [nw, win * win, win * win]);
            let got = enc.submit_read(&[&m]).unwrap().pop().unwrap();
            let want = cpu::region_mask(hp, wp, win, shift);
            assert_bits(
                &format!("mask {hp}×{wp} window {win} shift {shift}"),
                &got,
                &want,
            );
        }
    }
}

#[test]
fn cpu_region_mask_by_hand() {
    // 14×14, window 7, shift 3: rows and columns split 0..7 | 7..11 | 11..14. The top-left window
    // is one region; the top-right and bottom-left ones hold two (28 and 21 tokens); the
    // bottom-right one holds four of 4×4, 4×3, 3×4 and 3×3 tokens, so 49² − (16² + 12² + 12² + 9²)
    // = 1776 of its pairs are masked.
    let m = cpu::region_mask(14, 14, 7, 3);
    let per = 49 * 49;
    let masked = |w: usize| {
        m[w * per..(w + 1) * per]
            .iter()
            .filter(|&&v| v == -100.0)
            .count()
    };
    assert!(m.iter().all(|&v| v == 0.0 || v == -100.0));
    assert_eq!(masked(0), 0);
    assert_eq!(masked(1), 2 * 28 * 21); // columns 7..11 vs 11..14, 7 rows each
    assert_eq!(masked(2), 2 * 28 * 21);
    assert_eq!(masked(3), 1776);
    assert!(cpu::region_mask(14, 14, 7, 0).iter().all(|&v| v == 0.0));
}

#[test]
fn relative_position_bias_matches_reference() {
    let g = gpu();
    for (win, heads) in [(7, 3), (7, 6), (7, 12), (3, 5), (1, 2), (2, 1)] {
        let rows = (2 * win - 1) * (2 * win - 1);
        let table = rand_vec(
            300 + win as u64 * 31 + heads as u64,
            rows * heads,
            -1.0,
            1.0,
        );
        let t = g.upload(&[rows, heads], &table).unwrap();
        let mut enc = g.encoder();
        let out = window::relative_position_bias(&mut enc, &t, win).unwrap();
        assert_eq!(out.shape(), [heads, win * win, win * win]);
        let got = enc.submit_read(&[&out]).unwrap().pop().unwrap();
        let want = cpu::relative_position_bias(&table, heads, win);
        assert_bits(&format!("bias window {win} heads {heads}"), &got, &want);
    }
}

#[test]
fn cpu_relative_index_is_swins() {
    // mmdet's double_step_seq/flip construction against Swin's original coordinate formula.
    for win in [1, 2, 3, 7] {
        let idx = cpu::relative_position_index(win);
        let n = win * win;
        for i in 0..n {
            for j in 0..n {
                let (hi, wi, hj, wj) = (i / win, i % win, j / win, j % win);
                let want = (hi + win - 1 - hj) * (2 * win - 1) + (wi + win - 1 - wj);
                assert_eq!(idx[i * n + j], want, "window {win} ({i}, {j})");
            }
        }
    }
    let idx = cpu::relative_position_index(7);
    assert_eq!(
        (idx[0], idx[48], idx[48 * 49], idx[48 * 49 + 48]),
        (84, 0, 168, 84)
    );
}

#[test]
fn patch_merge_matches_reference() {
    let g = gpu();
    let maps: [[usize; 4]; 9] = [
        [1, 73, 73, 96],
        [1, 37, 37, 192],
        [1, 32, 32, 96],
        [1, 16, 16, 192],
        [2, 5, 9, 5],
        [2, 3, 2, 8],
        [2, 3, 5, 16],
        [1, 1, 1, 3],
        [3, 1, 4, 4],
    ];
    for (mi, dims) in maps.iter().enumerate() {
        let [b, h, w, c] = *dims;
        let x = rand_vec(400 + mi as u64, b * h * w * c, -1.0, 1.0);
        let xt = g.upload(dims, &x).unwrap();
        let want = cpu::patch_merge(&x, *dims);
        for width in widths(c) {
            let mut enc = g.encoder();
            let m = window::patch_merge_with(&mut enc, &xt, width).unwrap();
            assert_eq!(m.shape(), [b, h.div_ceil(2) * w.div_ceil(2), 4 * c]);
            let got = enc.submit_read(&[&m]).unwrap().pop().unwrap();
            assert_bits(&format!("patch_merge {dims:?} {width:?}"), &got, &want);
        }
    }
}

#[test]
fn cpu_patch_merge_by_hand() {
    // 2×3 map, C = 2, value = 10·(y·3 + x) + c. Padded to 2×4: two output pixels; feature
    // c·4 + kh·2 + kw holds pixel (kh, 2·ox + kw), channel c.
    let x: Vec<f32> = (0..6)
        .flat_map(|p| (0..2).map(move |c| (10 * p + c) as f32))
        .collect();
    let want = [
        0.0, 10.0, 30.0, 40.0, 1.0, 11.0, 31.0, 41.0, // ox = 0
        20.0, 0.0, 50.0, 0.0, 21.0, 0.0, 51.0, 0.0, // ox = 1: column 3 is padding
    ];
    assert_eq!(cpu::patch_merge(&x, [1, 2, 3, 2]), want);
}

fn err_of(r: sparsett::Result<Tensor>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn bad_shapes_are_errors() {
    let g = gpu();
    let x = g.zeros(&[1, 5, 9, 5]).unwrap();
    let flat = g.zeros(&[45, 5]).unwrap();
    let mut enc = g.encoder();
    let e = err_of(window::window_partition(&mut enc, &x, 0, 0));
    assert!(
        e.contains("window_partition") && e.contains("window 0"),
        "{e}"
    );
    let e = err_of(window::window_partition(&mut enc, &x, 3, 3));
    assert!(
        e.contains("window_partition") && e.contains("shift 3"),
        "{e}"
    );
    let e = err_of(window::window_partition(&mut enc, &flat, 3, 1));
    assert!(
        e.contains("window_partition") && e.contains("[45, 5]"),
        "{e}"
    );
    let e = err_of(window::window_partition_with(
        &mut enc,
        &x,
        3,
        1,
        Width::Vec4,
    ));
    assert!(e.contains("window_partition") && e.contains("C = 5"), "{e}");

    // 5×9 in 3×3 windows: 2·3 = 6 windows per image.
    let wins = g.zeros(&[6, 9, 5]).unwrap();
    let e = err_of(window::window_reverse(&mut enc, &wins, 2, 5, 9, 3, 1));
    assert!(
        e.contains("window_reverse") && e.contains("[12, 9, C]"),
        "{e}"
    );
    let e = err_of(window::window_reverse(&mut enc, &wins, 1, 5, 9, 2, 1));
    assert!(e.contains("window_reverse"), "{e}");
    let e = err_of(window::window_reverse(&mut enc, &wins, 1, 0, 9, 3, 1));
    assert!(e.contains("window_reverse") && e.contains("H 0"), "{e}");
    let other = g.zeros(&[1, 5, 9, 4]).unwrap();
    let e = err_of(window::window_reverse_add(&mut enc, &wins, &other, 3, 1));
    assert!(
        e.contains("window_reverse") && e.contains("residual"),
        "{e}"
    );

    let e = err_of(window::region_mask(&mut enc, 35, 36, 7, 3));
    assert!(e.contains("region_mask") && e.contains("35×36"), "{e}");
    let e = err_of(window::region_mask(&mut enc, 35, 35, 7, 7));
    assert!(e.contains("region_mask") && e.contains("shift 7"), "{e}");

    let table = g.zeros(&[168, 3]).unwrap();
    let e = err_of(window::relative_position_bias(&mut enc, &table, 7));
    assert!(
        e.contains("relative_position_bias") && e.contains("[169, heads]"),
        "{e}"
    );
    let e = err_of(window::relative_position_bias(&mut enc, &table, 0));
    assert!(e.contains("relative_position_bias"), "{e}");

    let e = err_of(window::patch_merge(&mut enc, &flat));
    assert!(e.contains("patch_merge") && e.contains("[45, 5]"), "{e}");
    let e = err_of(window::patch_merge_with(&mut enc, &x, Width::Vec4));
    assert!(e.contains("patch_merge") && e.contains("C = 5"), "{e}");
    assert_eq!(enc.dispatch_count(), 0);
}

// ---- backward ----------------------------------------------------------------------------------
// Tolerances: the data-movement backward passes (partition, reverse, patch merge) copy each
// gradient element once, and with `into` add it to one existing value: one f32 addition done the
// same way on both sides, so GPU and CPU agree bitwise. The relative bias backward sums each
// table entry's ≤ w² contributions in the same order (ascending i) as the CPU reference, so it is
// bitwise too. The CPU references of these linear maps are checked by the adjoint identity
// ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ in f64 (exact up to f64 summation order, ~1e-15 relative: a wrong index
// changes the sum by O(1)), which is the finite-difference check made exact for a linear map.
// The fused LayerNorm backward passes are checked against the f64 reference (itself checked by
// central differences below) with tests/ops/norm.rs's backward tolerances (derived there):
// dx 3e-5 + 2e-5·|want|, dgamma 1e-5 + 2e-6·R, dbeta 1e-6·R for R normalised rows. They run the
// adapter's LayerNorm variant; tests/ops/norm.rs covers both.

use crate::reduce::{assert_fd, numeric_grad, to32, to64};
use sparsett::ops::norm::{cpu as ncpu, LayerNormInto};

/// (B, H, W, C, window): odd maps with windows 3 and 7 (pad on both sides, shift wrapping into
/// the pad), batch 2, maps smaller than one window, C = 1, 4, 5, 16.
const BW_MAPS: [(usize, usize, usize, usize, usize); 7] = [
    (2, 9, 11, 4, 3),
    (2, 9, 11, 16, 7),
    (1, 9, 11, 5, 7),
    (2, 5, 9, 8, 3),
    (3, 2, 3, 4, 7),
    (2, 4, 4, 1, 4),
    (1, 7, 7, 16, 7),
];

fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[track_caller]
fn assert_adjoint(what: &str, lhs: f64, rhs: f64, scale: f64) {
    assert!(
        (lhs - rhs).abs() <= 1e-12 * scale,
        "{what}: <Ax, y> = {lhs} but <x, A^T y> = {rhs}"
    );
}

#[test]
fn window_backward_references_are_adjoints() {
    for (mi, &(b, h, w, c, win)) in BW_MAPS.iter().enumerate() {
        let dims = [b, h, w, c];
        let seed = 2000 + 10 * mi as u64;
        let x = to64(&rand_vec(seed, b * h * w * c, -1.0, 1.0));
        let nw = WindowGrid::new(h, w, win).unwrap().count();
        let y = to64(&rand_vec(seed + 1, b * nw * win * win * c, -1.0, 1.0));
        let scale = (x.len() + y.len()) as f64;
        for shift in shifts(win) {
            let what = format!("{dims:?} window {win} shift {shift}");
            let ax = cpu::window_partition(&x, dims, win, shift);
            let aty = cpu::window_partition_backward(&y, dims, win, shift);
            assert_adjoint(
                &format!("partition {what}"),
                dot(&ax, &y),
                dot(&x, &aty),
                scale,
            );
            let ry = cpu::window_reverse(&y, dims, win, shift);
            let rtx = cpu::window_reverse_backward(&x, dims, win, shift);
            assert_adjoint(
                &format!("reverse {what}"),
                dot(&ry, &x),
                dot(&y, &rtx),
                scale,
            );
        }
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let m = to64(&rand_vec(seed + 2, b * h2 * w2 * 4 * c, -1.0, 1.0));
        let mx = cpu::patch_merge(&x, dims);
        let mtm = cpu::patch_merge_backward(&m, dims);
        assert_adjoint(
            &format!("patch merge {dims:?}"),
            dot(&mx, &m),
            dot(&x, &mtm),
            scale,
        );
    }
    for (win, heads) in [(1, 2), (2, 1), (3, 3), (7, 4)] {
        let rows = (2 * win - 1) * (2 * win - 1);
        let t = to64(&rand_vec(2100 + win as u64, rows * heads, -1.0, 1.0));
        let d = to64(&rand_vec(2200 + win as u64, heads * win.pow(4), -1.0, 1.0));
        let bt = cpu::relative_position_bias(&t, heads, win);
        let btd = cpu::relative_position_bias_backward(&d, heads, win);
        let scale = (t.len() + d.len()) as f64;
        assert_adjoint(
            &format!("rel bias w{win}"),
            dot(&bt, &d),
            dot(&t, &btd),
            scale,
        );
    }
}

/// `base + grad` in f32, as an accumulating kernel must produce it.
fn plus(base: &[f32], grad: &[f32]) -> Vec<f32> {
    base.iter().zip(grad).map(|(a, b)| a + b).collect()
}

#[test]
fn partition_and_reverse_backward_match_reference() {
    let g = gpu();
    for (mi, &(b, h, w, c, win)) in BW_MAPS.iter().enumerate() {
        let dims = [b, h, w, c];
        let seed = 2300 + 10 * mi as u64;
        let nw = WindowGrid::new(h, w, win).unwrap().count();
        let wshape = [b * nw, win * win, c];
        let dwin = rand_vec(seed, b * nw * win * win * c, -1.0, 1.0);
        let dmap = rand_vec(seed + 1, b * h * w * c, -1.0, 1.0);
        let base_map = rand_vec(seed + 2, dmap.len(), -1.0, 1.0);
        let base_win = rand_vec(seed + 3, dwin.len(), -1.0, 1.0);
        let dwt = g.upload(&wshape, &dwin).unwrap();
        let dmt = g.upload(&dims, &dmap).unwrap();
        for shift in shifts(win) {
            let want_p = cpu::window_partition_backward(&dwin, dims, win, shift);
            let want_r = cpu::window_reverse_backward(&dmap, dims, win, shift);
            for width in widths(c) {
                let what = format!("{dims:?} window {win} shift {shift} {width:?}");
                let acc_map = g.upload(&dims, &base_map).unwrap();
                let acc_win = g.upload(&wshape, &base_win).unwrap();
                let mut enc = g.encoder();
                let bw = [b, h, w];
                let p = window::window_partition_backward_with(
                    &mut enc, &dwt, bw, win, shift, None, width,
                )
                .unwrap();
                window::window_partition_backward_with(
                    &mut enc,
                    &dwt,
                    bw,
                    win,
                    shift,
                    Some(&acc_map),
                    width,
                )
                .unwrap();
                let r =
                    window::window_reverse_backward_with(&mut enc, &dmt, win, shift, None, width)
                        .unwrap();
                window::window_reverse_backward_with(
                    &mut enc,
                    &dmt,
                    win,
                    shift,
                    Some(&acc_win),
                    width,
                )
                .unwrap();
                assert_eq!(p.shape(), dims);
                assert_eq!(r.shape(), wshape);
                let got = enc.submit_read(&[&p, &acc_map, &r, &acc_win]).unwrap();
                assert_bits(&format!("partition bw {what}"), &got[0], &want_p);
                assert_bits(
                    &format!("partition bw into {what}"),
                    &got[1],
                    &plus(&base_map, &want_p),
                );
                assert_bits(&format!("reverse bw {what}"), &got[2], &want_r);
                assert_bits(
                    &format!("reverse bw into {what}"),
                    &got[3],
                    &plus(&base_win, &want_r),
                );
            }
        }
    }
}

#[test]
fn patch_merge_backward_matches_reference() {
    let g = gpu();
    let maps: [[usize; 4]; 5] = [
        [2, 9, 11, 4],
        [1, 5, 7, 16],
        [2, 1, 1, 3],
        [1, 4, 6, 8],
        [2, 3, 2, 1],
    ];
    for (mi, &dims) in maps.iter().enumerate() {
        let [b, h, w, c] = dims;
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let dy = rand_vec(2500 + mi as u64, b * h2 * w2 * 4 * c, -1.0, 1.0);
        let base = rand_vec(2550 + mi as u64, b * h * w * c, -1.0, 1.0);
        let want = cpu::patch_merge_backward(&dy, dims);
        let dyt = g.upload(&[b, h2 * w2, 4 * c], &dy).unwrap();
        for width in widths(c) {
            let what = format!("{dims:?} {width:?}");
            let acc = g.upload(&dims, &base).unwrap();
            let mut enc = g.encoder();
            let dx = window::patch_merge_backward_with(&mut enc, &dyt, dims, None, width).unwrap();
            window::patch_merge_backward_with(&mut enc, &dyt, dims, Some(&acc), width).unwrap();
            let got = enc.submit_read(&[&dx, &acc]).unwrap();
            assert_bits(&format!("merge bw {what}"), &got[0], &want);
            assert_bits(
                &format!("merge bw into {what}"),
                &got[1],
                &plus(&base, &want),
            );
        }
    }
}

#[test]
fn relative_bias_backward_matches_reference() {
    let g = gpu();
    for (win, heads) in [(1, 2), (2, 1), (3, 3), (7, 3), (7, 24)] {
        let n = win * win;
        let rows = (2 * win - 1) * (2 * win - 1);
        let d = rand_vec(2600 + (win * heads) as u64, heads * n * n, -1.0, 1.0);
        let base = rand_vec(2650 + win as u64, rows * heads, -1.0, 1.0);
        let want = cpu::relative_position_bias_backward(&d, heads, win);
        let dt = g.upload(&[heads, n, n], &d).unwrap();
        let acc = g.upload(&[rows, heads], &base).unwrap();
        let mut enc = g.encoder();
        let t = window::relative_position_bias_backward(&mut enc, &dt, win, None).unwrap();
        window::relative_position_bias_backward(&mut enc, &dt, win, Some(&acc)).unwrap();
        assert_eq!(t.shape(), [rows, heads]);
        let got = enc.submit_read(&[&t, &acc]).unwrap();
        let what = format!("window {win} heads {heads}");
        assert_bits(&format!("rel bias bw {what}"), &got[0], &want);
        assert_bits(
            &format!("rel bias bw into {what}"),
            &got[1],
            &plus(&base, &want),
        );
    }
}

/// f64 reference of the fused LayerNorm + partition backward: partition's adjoint, then LN's.
fn partition_ln_bw64(
    x: &[f64],
    dims: [usize; 4],
    gam: &[f64],
    dwin: &[f64],
    win: usize,
    shift: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dln = cpu::window_partition_backward(dwin, dims, win, shift);
    ncpu::layer_norm_backward(x, dims[3], gam, &dln, 1e-5)
}

/// f64 reference of the fused patch merge + LayerNorm backward: LN's over 4C, then the merge's.
fn merge_ln_bw64(
    x: &[f64],
    dims: [usize; 4],
    gam: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let merged = cpu::patch_merge(x, dims);
    let (dm, dg, db) = ncpu::layer_norm_backward(&merged, 4 * dims[3], gam, dy, 1e-5);
    (cpu::patch_merge_backward(&dm, dims), dg, db)
}

#[test]
fn fused_layer_norm_backward_references_are_the_derivative() {
    let (dims, win, shift) = ([2, 4, 5, 3], 3, 1);
    let [b, h, w, c] = dims;
    let x = to64(&rand_vec(2700, b * h * w * c, -2.0, 2.0));
    let gam = to64(&rand_vec(2701, c, 0.5, 1.5));
    let bet = to64(&rand_vec(2702, c, -1.0, 1.0));
    let nw = WindowGrid::new(h, w, win).unwrap().count();
    let dwin = to64(&rand_vec(2703, b * nw * win * win * c, -1.0, 1.0));
    let f = |x: &[f64], gm: &[f64], bt: &[f64]| {
        cpu::window_partition(&ncpu::layer_norm_f64(x, c, gm, bt, 1e-5), dims, win, shift)
    };
    let (dx, dg, db) = partition_ln_bw64(&x, dims, &gam, &dwin, win, shift);
    assert_fd(
        "partition_ln dx",
        &dx,
        &numeric_grad(|v| f(v, &gam, &bet), &x, &dwin),
        1e-7,
    );
    assert_fd(
        "partition_ln dgamma",
        &dg,
        &numeric_grad(|v| f(&x, v, &bet), &gam, &dwin),
        1e-7,
    );
    assert_fd(
        "partition_ln dbeta",
        &db,
        &numeric_grad(|v| f(&x, &gam, v), &bet, &dwin),
        1e-7,
    );

    let dims = [2, 3, 5, 2];
    let [b, h, w, c] = dims;
    let x = to64(&rand_vec(2710, b * h * w * c, -2.0, 2.0));
    let gam = to64(&rand_vec(2711, 4 * c, 0.5, 1.5));
    let bet = to64(&rand_vec(2712, 4 * c, -1.0, 1.0));
    let dy = to64(&rand_vec(2713, b * 2 * 3 * 4 * c, -1.0, 1.0));
    let f = |x: &[f64], gm: &[f64], bt: &[f64]| {
        ncpu::layer_norm_f64(&cpu::patch_merge(x, dims), 4 * c, gm, bt, 1e-5)
    };
    let (dx, dg, db) = merge_ln_bw64(&x, dims, &gam, &dy);
    assert_fd(
        "merge_ln dx",
        &dx,
        &numeric_grad(|v| f(v, &gam, &bet), &x, &dy),
        1e-7,
    );
    assert_fd(
        "merge_ln dgamma",
        &dg,
        &numeric_grad(|v| f(&x, v, &bet), &gam, &dy),
        1e-7,
    );
    assert_fd(
        "merge_ln dbeta",
        &db,
        &numeric_grad(|v| f(&x, &gam, v), &bet, &dy),
        1e-7,
    );
}

#[track_caller]
fn close_ln_grads(
    what: &str,
    got: &[Vec<f32>],
    want: &(Vec<f64>, Vec<f64>, Vec<f64>),
    rows: usize,
) {
    use crate::common::assert_close;
    assert_close(&format!("{what} dx"), &got[0], &to32(&want.0), 3e-5, 2e-5);
    let r = rows as f32;
    assert_close(
        &format!("{what} dgamma"),
        &got[1],
        &to32(&want.1),
        1e-5 + 2e-6 * r,
        0.0,
    );
    assert_close(
        &format!("{what} dbeta"),
        &got[2],
        &to32(&want.2),
        1e-6 * r,
        0.0,
    );
}

#[test]
fn fused_layer_norm_backward_matches_reference() {
    let g = gpu();
    for (mi, &(b, h, w, c, win)) in BW_MAPS.iter().enumerate() {
        let dims = [b, h, w, c];
        let seed = 2800 + 10 * mi as u64;
        let x: Vec<f32> = rand_vec(seed, b * h * w * c, -2.0, 2.0)
            .iter()
            .map(|v| v + 5.0)
            .collect();
        let gam = rand_vec(seed + 1, c, 0.5, 1.5);
        let nw = WindowGrid::new(h, w, win).unwrap().count();
        let dwin = rand_vec(seed + 2, b * nw * win * win * c, -1.0, 1.0);
        let (xt, gt) = (g.upload(&dims, &x).unwrap(), g.upload(&[c], &gam).unwrap());
        let dwt = g.upload(&[b * nw, win * win, c], &dwin).unwrap();
        for shift in shifts(win) {
            let want = partition_ln_bw64(&to64(&x), dims, &to64(&gam), &to64(&dwin), win, shift);
            let mut enc = g.encoder();
            let gr = window::window_partition_ln_backward(
                &mut enc,
                &xt,
                &gt,
                &dwt,
                1e-5,
                win,
                shift,
                &LayerNormInto::default(),
            )
            .unwrap();
            assert_eq!(gr.dx.shape(), dims);
            let got = enc.submit_read(&[&gr.dx, &gr.dweight, &gr.dbias]).unwrap();
            let what = format!("partition_ln bw {dims:?} window {win} shift {shift}");
            close_ln_grads(&what, &got, &want, b * h * w);
        }

        // Patch merge + LN(4C) on the same map, fresh and added into given tensors.
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let gam4 = rand_vec(seed + 3, 4 * c, 0.5, 1.5);
        let dy = rand_vec(seed + 4, b * h2 * w2 * 4 * c, -1.0, 1.0);
        let want = merge_ln_bw64(&to64(&x), dims, &to64(&gam4), &to64(&dy));
        let g4 = g.upload(&[4 * c], &gam4).unwrap();
        let dyt = g.upload(&[b, h2 * w2, 4 * c], &dy).unwrap();
        let base = [
            rand_vec(seed + 5, x.len(), -1.0, 1.0),
            rand_vec(seed + 6, 4 * c, -1.0, 1.0),
            rand_vec(seed + 7, 4 * c, -1.0, 1.0),
        ];
        let acc = [
            g.upload(&dims, &base[0]).unwrap(),
            g.upload(&[4 * c], &base[1]).unwrap(),
            g.upload(&[4 * c], &base[2]).unwrap(),
        ];
        let mut enc = g.encoder();
        let gr = window::patch_merge_ln_backward(
            &mut enc,
            &xt,
            &g4,
            &dyt,
            1e-5,
            &LayerNormInto::default(),
        )
        .unwrap();
        let into = LayerNormInto {
            dx: Some(&acc[0]),
            dweight: Some(&acc[1]),
            dbias: Some(&acc[2]),
        };
        window::patch_merge_ln_backward(&mut enc, &xt, &g4, &dyt, 1e-5, &into).unwrap();
        let got = enc
            .submit_read(&[&gr.dx, &gr.dweight, &gr.dbias, &acc[0], &acc[1], &acc[2]])
            .unwrap();
        let what = format!("merge_ln bw {dims:?}");
        close_ln_grads(&what, &got[..3], &want, b * h2 * w2);
        let added: Vec<Vec<f32>> = (0..3).map(|k| plus(&base[k], &got[k])).collect();
        let accd: Vec<Vec<f32>> = got[3..].to_vec();
        for k in 0..3 {
            crate::common::assert_close(
                &format!("{what} into {k}"),
                &accd[k],
                &added[k],
                1e-6,
                1e-6,
            );
        }
    }
}

#[test]
fn window_backward_bad_inputs_are_errors() {
    let g = gpu();
    let mut enc = g.encoder();
    let dwin = g.zeros(&[4, 9, 4]).unwrap();
    // 5×5 in 3×3 windows is 4 windows per image: batch 2 needs 8.
    let e = window::window_partition_backward(&mut enc, &dwin, [2, 5, 5], 3, 1, None)
        .expect_err("window count")
        .to_string();
    assert!(
        e.contains("window_partition_backward") && e.contains("[8, 9, C]"),
        "{e}"
    );
    let wrong = g.zeros(&[1, 5, 5, 4]).unwrap();
    let e = window::window_partition_backward(&mut enc, &dwin, [1, 5, 5], 3, 1, Some(&wrong))
        .map(|_| ())
        .and(window::window_partition_backward(
            &mut enc,
            &dwin,
            [1, 5, 5],
            3,
            1,
            Some(&g.zeros(&[1, 5, 4, 4]).unwrap()),
        ))
        .expect_err("into of the wrong shape")
        .to_string();
    assert!(e.contains("into"), "{e}");
    let e = window::window_reverse_backward(&mut enc, &wrong, 3, 3, None)
        .expect_err("shift ≥ window")
        .to_string();
    assert!(
        e.contains("window_reverse_backward") && e.contains("shift 3"),
        "{e}"
    );
    let e =
        window::patch_merge_backward(&mut enc, &g.zeros(&[1, 4, 16]).unwrap(), [1, 5, 5, 4], None)
            .expect_err("merged size")
            .to_string();
    assert!(
        e.contains("patch_merge_backward") && e.contains("[1, 9, 16]"),
        "{e}"
    );
    let e =
        window::relative_position_bias_backward(&mut enc, &g.zeros(&[2, 9, 8]).unwrap(), 3, None)
            .expect_err("bias shape")
            .to_string();
    assert!(
        e.contains("relative_position_bias_backward") && e.contains("[heads, 9, 9]"),
        "{e}"
    );
    let e = window::relative_position_bias_backward(
        &mut enc,
        &g.zeros(&[2, 9, 9]).unwrap(),
        3,
        Some(&g.zeros(&[25, 3]).unwrap()),
    )
    .expect_err("table shape")
    .to_string();
    assert!(e.contains("[25, 2]"), "{e}");
    let x = g.zeros(&[1, 4, 4, 8]).unwrap();
    let e = window::patch_merge_ln_backward(
        &mut enc,
        &x,
        &g.zeros(&[8]).unwrap(),
        &g.zeros(&[1, 4, 32]).unwrap(),
        1e-5,
        &LayerNormInto::default(),
    )
    .expect_err("gamma of C instead of 4C")
    .to_string();
    assert!(e.contains("gamma") && e.contains("[32]"), "{e}");
}
