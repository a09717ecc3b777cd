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
