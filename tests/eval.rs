//! `sparsett::eval`: the toolkits' metrics against values computed by hand from their definitions
//! (`/work/shared/spec/metrics.md`; the arithmetic is in the comments), the dataset readers on tiny
//! fixture datasets written here (every layout, and broken ones), result files, and plots.
//!
//! Tolerances: a value that is an exact binary fraction of integer-coordinate boxes (0.5, 0.25,
//! 0.125, 1) is compared with `==`, because the threshold tests depend on it landing exactly on
//! the threshold. Other values (1/7, 1/19, square roots) take a few roundings of numbers below
//! 1e4, so they are compared within 1e-12 (f64 rounding is ~1e-16 relative).

use std::fs;
use std::path::{Path, PathBuf};

use sparsett::eval::datasets::{frame_size, open_dataset, DatasetKind, Sequence};
use sparsett::eval::metrics::{
    centre, centre_error, clip_to_image, format_table, iou_continuous, iou_pixel, mean,
    norm_centre_error, norm_centre_error_got10k, repair_predictions, score, score_sequence,
    success_curve, Protocol, Report,
};
use sparsett::eval::{plot, results};
use sparsett::Error;

const TOL: f64 = 1e-12;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOL
}

/// A sequence with `gt.len()` (fictitious) frames.
fn seq(name: &str, gt: Vec<[f64; 4]>) -> Sequence {
    Sequence {
        name: name.into(),
        frames: (0..gt.len())
            .map(|i| PathBuf::from(format!("{i}.jpg")))
            .collect(),
        gt,
        absent: None,
        cover: None,
    }
}

/// A fresh, empty folder under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sparsett-eval-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// `n` frame files named by `name(i)`, i = 1..=n; the first one a real 8×6 JPEG (for
/// `frame_size`), the others empty (the readers only list them).
fn frames(dir: &Path, n: usize, name: impl Fn(usize) -> String) {
    fs::create_dir_all(dir).unwrap();
    for i in 1..=n {
        let p = dir.join(name(i));
        if i == 1 {
            image::RgbImage::from_pixel(8, 6, image::Rgb([200, 10, 10]))
                .save(&p)
                .unwrap();
        } else {
            fs::write(&p, b"").unwrap();
        }
    }
}

fn rows(n: usize, b: &str) -> String {
    (0..n).map(|_| format!("{b}\n")).collect()
}

fn err_text<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    r.expect_err("expected an error").to_string()
}

// ---------------------------------------------------------------------------------------------
// Box measures

#[test]
fn iou_both_conventions() {
    let a = [0.0, 0.0, 10.0, 10.0];
    // Partial overlap: intersection 5×5 = 25, union 100 + 100 − 25 = 175 → 1/7. Pixel-inclusive:
    // right = min(0+10−1, 5+10−1) = 9, left = 5, width 9 − 5 + 1 = 5: the same 25.
    let b = [5.0, 5.0, 10.0, 10.0];
    assert!(close(iou_continuous(a, b), 1.0 / 7.0));
    assert!(close(iou_pixel(a, b), 1.0 / 7.0));
    // Disjoint: 0 in both.
    let far = [20.0, 20.0, 5.0, 5.0];
    assert_eq!(iou_continuous(a, far), 0.0);
    assert_eq!(iou_pixel(a, far), 0.0);
    // Touching edges: continuous x2 = min(10, 20) = 10 = x1 → width 0; pixel-inclusive: last pixel
    // of a is 9, first of b is 10 → 9 − 10 + 1 = 0. No overlap in either.
    let touch = [10.0, 0.0, 10.0, 10.0];
    assert_eq!(iou_continuous(a, touch), 0.0);
    assert_eq!(iou_pixel(a, touch), 0.0);
    // One shared pixel column: 1×10 = 10 over 100 + 100 − 10 = 190 → 1/19 in both.
    let col = [9.0, 0.0, 10.0, 10.0];
    assert!(close(iou_continuous(a, col), 1.0 / 19.0));
    assert!(close(iou_pixel(a, col), 1.0 / 19.0));
    // Fractional boxes: [0.5, 2.5] ∩ [1.5, 3.5] = 1 per axis → 1 / (4 + 4 − 1) = 1/7.
    let (c, d) = ([0.5, 0.5, 2.0, 2.0], [1.5, 1.5, 2.0, 2.0]);
    assert!(close(iou_continuous(c, d), 1.0 / 7.0));
    assert!(close(iou_pixel(c, d), 1.0 / 7.0));
    // Identical boxes: 100 / (100 + eps) rounds to exactly 1; pixel-inclusive 100/100.
    assert_eq!(iou_continuous(a, a), 1.0);
    assert_eq!(iou_pixel(a, a), 1.0);
    // Where they part: two empty boxes. got10k-toolkit: 0 / (0 + eps) = 0; pixel-inclusive:
    // width −1 − 0 + 1 = 0, union 0 → 0/0.
    let z = [0.0, 0.0, 0.0, 0.0];
    assert_eq!(iou_continuous(z, z), 0.0);
    assert!(iou_pixel(z, z).is_nan());
}

#[test]
fn centres_and_centre_errors() {
    // x + (w − 1)/2 = 10 + 29/2 = 24.5, y + (h − 1)/2 = 20 + 39/2 = 39.5.
    assert_eq!(centre([10.0, 20.0, 30.0, 40.0]), [24.5, 39.5]);
    // Same size, shifted by (3, 4): error 5.
    assert_eq!(
        centre_error([3.0, 4.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]),
        5.0
    );
    // Normalised by the ground truth (10, 20): (3/10, 4/20) = (0.3, 0.2) → √0.13, in both toolkits.
    let (p, g) = ([3.0, 4.0, 10.0, 20.0], [0.0, 0.0, 10.0, 20.0]);
    assert!(close(norm_centre_error(p, g), 0.13f64.sqrt()));
    assert!(close(norm_centre_error_got10k(p, g), 0.13f64.sqrt()));
    // A ground truth narrower than 1 px: pytracking divides by 0.5 (offset 1 → 2), got10k-toolkit
    // by max(1, 0.5) = 1 (offset 1 → 1).
    let (p, g) = ([1.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]);
    assert_eq!(norm_centre_error(p, g), 2.0);
    assert_eq!(norm_centre_error_got10k(p, g), 1.0);
}

#[test]
fn got10k_clipping_to_the_image() {
    // Image 100×80. A box past the right edge: x = 90, w = min(20, 100 − 90) = 10.
    assert_eq!(
        clip_to_image([90.0, 60.0, 20.0, 20.0], (100, 80)),
        [90.0, 60.0, 10.0, 20.0]
    );
    // Past the left edge the toolkit moves x to 0 but keeps w = 20 (only clipped at W − 0 = 100):
    // [-10, 0, 20, 10] → [0, 0, 20, 10], not the geometric [0, 0, 10, 10].
    assert_eq!(
        clip_to_image([-10.0, 0.0, 20.0, 10.0], (100, 80)),
        [0.0, 0.0, 20.0, 10.0]
    );
    // Past the bottom: h = min(100, 80 − 0) = 80.
    assert_eq!(
        clip_to_image([0.0, 0.0, 10.0, 100.0], (100, 80)),
        [0.0, 0.0, 10.0, 80.0]
    );
}

// ---------------------------------------------------------------------------------------------
// Curves and one-pass protocols

#[test]
fn success_is_strict_precision_inclusive() {
    // IoUs {1, 0.5, 0.25, 0} over 4 frames; success(t) = #{IoU > t} / 4.
    let ious = [1.0, 0.5, 0.25, 0.0];
    let thr: Vec<f64> = (0..=20).map(|i| i as f64 * 0.05).collect();
    let curve = success_curve(&ious, &thr, 4);
    // t = 0 … 0.20 (5 values): 1, 0.5, 0.25 → 3/4. (0 is not > 0.)
    // t = 0.25 … 0.45 (5): 1, 0.5 → 2/4. (0.25 is not > 0.25.)
    // t = 0.50 … 0.95 (10): 1 → 1/4. (0.5 is not > 0.5.)
    // t = 1: none → 0.
    let mut want = vec![0.75; 5];
    want.extend([0.5; 5]);
    want.extend([0.25; 10]);
    want.push(0.0);
    assert_eq!(curve, want);
    // AUC = (5·0.75 + 5·0.5 + 10·0.25 + 0) / 21 = 8.75 / 21 = 5/12.
    assert!(close(mean(&curve), 5.0 / 12.0));
}

#[test]
fn pytracking_sequence_with_known_auc_and_precision() {
    // Boxes away from the image origin: the MATLAB rule makes a ground truth with any coordinate
    // ≤ 0 invalid (see `absent_and_unannotated_frames_per_toolkit`).
    let gt = [10.0, 10.0, 10.0, 10.0];
    let s = seq("known", vec![gt; 4]);
    // Frame 0 becomes the ground truth (IoU 1) whatever the tracker wrote there.
    // [10,10,5,10]: 50 / (100 + 50 − 50) = 0.5. [10,10,2.5,10]: pixel width
    // min(11.5, 19) − 10 + 1 = 2.5, 25 / 100 = 0.25. [60,60,10,10]: disjoint, 0. Same IoUs as the
    // curve test: AUC 5/12.
    let pred = vec![
        [100.0, 100.0, 5.0, 5.0],
        [10.0, 10.0, 5.0, 10.0],
        [10.0, 10.0, 2.5, 10.0],
        [60.0, 60.0, 10.0, 10.0],
    ];
    let (sc, _) = score_sequence(Protocol::Pytracking, &s, &[pred], None).unwrap();
    assert!(close(sc.auc, 5.0 / 12.0));
    assert_eq!(sc.success[10], 0.25); // only frame 0 has IoU > 0.5
    assert_eq!(sc.sr50, 0.25);
    // Centre errors (ground-truth centre (14.5, 14.5)): frame 0: 0; [10,10,5,10]: centre x 12 →
    // 2.5; [10,10,2.5,10]: 10.75 → 3.75; [60,60,10,10]: offset (50, 50) → 50√2 ≈ 70.7.
    // At 20 px: 3 of 4.
    assert_eq!(sc.prec20, Some(0.75));
    assert_eq!(sc.precision[2], 0.25); // 2.5 > 2
    assert_eq!(sc.precision[3], 0.5); // 2.5 ≤ 3 < 3.75
                                      // Mean IoU over the 4 valid frames: (1 + 0.5 + 0.25 + 0)/4.
    assert_eq!(sc.ao, 0.4375);
}

#[test]
fn precision_counts_exactly_20_px() {
    // [22,26,10,10] vs [10,10,10,10]: offset (12, 16), error √(144 + 256) = 20 exactly.
    let gt = [10.0, 10.0, 10.0, 10.0];
    let s = seq("p20", vec![gt; 2]);
    let pred = vec![gt, [22.0, 26.0, 10.0, 10.0]];
    let (sc, _) = score_sequence(Protocol::Pytracking, &s, &[pred], None).unwrap();
    assert_eq!(sc.precision[20], 1.0); // 20 ≤ 20 counts
    assert_eq!(sc.precision[19], 0.5); // 20 > 19 does not
    assert_eq!(sc.prec20, Some(1.0));
}

#[test]
fn iou_exactly_at_thresholds_is_not_a_success() {
    // One-pass: frames 0 (IoU 1, the ground truth) and 1 ([10,10,5,10]: IoU 0.5 exactly).
    let gt = [10.0, 10.0, 10.0, 10.0];
    let s = seq("half", vec![gt; 2]);
    let pred = vec![gt, [10.0, 10.0, 5.0, 10.0]];
    let (sc, _) =
        score_sequence(Protocol::Pytracking, &s, std::slice::from_ref(&pred), None).unwrap();
    assert_eq!(sc.success[9], 1.0); // 0.5 > 0.45
    assert_eq!(sc.success[10], 0.5); // 0.5 is not > 0.5
                                     // GOT-10k: frame 0 is excluded, so only IoU 0.5 is counted; metrics.md: SR0.5 counts IoU > 0.5
                                     // strictly, so it is 0 while AO is 0.5. Same for 0.75 with [10,10,7.5,10]: 75/100.
    let (g, _) = score_sequence(Protocol::Got10k, &s, &[pred], Some((100, 100))).unwrap();
    assert_eq!(g.ao, 0.5);
    assert_eq!(g.sr50, 0.0);
    let (g, _) = score_sequence(
        Protocol::Got10k,
        &s,
        &[vec![gt, [10.0, 10.0, 7.5, 10.0]]],
        Some((100, 100)),
    )
    .unwrap();
    assert_eq!(g.ao, 0.75);
    assert_eq!((g.sr50, g.sr75), (1.0, 0.0));
}

#[test]
fn absent_and_unannotated_frames_per_toolkit() {
    // Five frames, the tracker exact everywhere. Frame 2: target absent. Frame 3: ground truth with
    // x = 0. Frame 4: a NaN ground-truth row.
    let b = [10.0, 10.0, 10.0, 10.0];
    let gt = vec![b, b, b, [0.0, 5.0, 10.0, 10.0], [f64::NAN; 4]];
    let mut s = seq("absent", gt.clone());
    s.absent = Some(vec![false, false, true, false, false]);
    let pred = vec![b, b, b, [0.0, 5.0, 10.0, 10.0], b];

    // LaSOT toolkit / pytracking (metrics.md): frames 2 (absent), 3 (a coordinate ≤ 0) and 4 (NaN)
    // are failures and the denominator is all 5 frames: success(t < 1) = 2/5, success(1) = 0 →
    // AUC = 20·0.4/21 = 8/21. Centre errors of the invalid frames are +∞: P@20 = 2/5.
    let (p, _) =
        score_sequence(Protocol::Pytracking, &s, std::slice::from_ref(&pred), None).unwrap();
    assert_eq!(p.frames, 5);
    assert_eq!(p.success[0], 0.4);
    assert_eq!(p.success[20], 0.0);
    assert!(close(p.auc, 8.0 / 21.0));
    assert_eq!(p.prec20, Some(0.4));
    assert_eq!(p.norm_prec20, Some(0.4));
    assert_eq!(p.ao, 1.0); // mean IoU over the 2 valid frames

    // got10k-toolkit OPE: no absence flags, x = 0 is a box; only the NaN row is dropped: 4 frames,
    // all IoU 1 → success(t < 1) = 1, AUC = 20/21.
    let (g, _) = score_sequence(Protocol::Got10kOpe, &s, &[pred], None).unwrap();
    assert_eq!(g.frames, 4);
    assert_eq!(g.success[0], 1.0);
    assert!(close(g.auc, 20.0 / 21.0));
    assert_eq!(g.prec20, Some(1.0));
}

#[test]
fn nan_and_zero_size_predictions_take_the_previous_box() {
    let b = [10.0, 10.0, 10.0, 10.0];
    // Frame 2 NaN → frame 1's box; frame 3 w = 0 → frame 2's repaired box; frame 4 h < 0 → frame 3's.
    let pred = vec![
        [0.0, 0.0, 1.0, 1.0],
        b,
        [f64::NAN; 4],
        [12.0, 10.0, 0.0, 10.0],
        [12.0, 10.0, 10.0, -3.0],
    ];
    let gt = vec![b; 5];
    assert_eq!(repair_predictions(&pred, &gt), vec![b; 5]);
    let (sc, _) = score_sequence(Protocol::Pytracking, &seq("nan", gt), &[pred], None).unwrap();
    assert_eq!(sc.success[19], 1.0); // every IoU is 1 after repair

    // The toolkits repair before putting the ground truth in frame 0, so a bad frame 1 copies the
    // tracker's own frame-0 box ([50,50,10,10]), not the ground truth.
    let pred = vec![[50.0, 50.0, 10.0, 10.0], [f64::NAN; 4]];
    let rep = repair_predictions(&pred, &[b, b]);
    assert_eq!(rep, vec![b, [50.0, 50.0, 10.0, 10.0]]);

    // No repair where the ground-truth row is NaN.
    let rep = repair_predictions(&[b, [f64::NAN; 4]], &[b, [f64::NAN; 4]]);
    assert!(rep[1][0].is_nan());
}

#[test]
fn first_frame_is_replaced_by_the_ground_truth() {
    let b = [10.0, 10.0, 10.0, 10.0];
    let s = seq("first", vec![b; 2]);
    let pred = vec![[300.0, 300.0, 5.0, 5.0], b];
    for p in [Protocol::Pytracking, Protocol::Got10kOpe] {
        let (sc, _) = score_sequence(p, &s, std::slice::from_ref(&pred), None).unwrap();
        assert_eq!(sc.success[19], 1.0, "{p:?}"); // frame 0 IoU 1, not 0
        assert_eq!(sc.precision[0], 1.0, "{p:?}"); // frame 0 centre error 0, not ≈ 300
    }
}

#[test]
fn got10k_ao_with_cover_labels_and_clipping() {
    // Image 100×80, five frames.
    //   frame 0: excluded by the protocol.
    //   frame 1: cover 0 → not counted (the prediction is wildly off and would pull AO down).
    //   frame 2: gt [80,60,20,20], pred [90,60,20,20] clipped to [90,60,10,20]: intersection 10×20
    //            = 200, union 400 + 200 − 200 = 400 → 0.5 (unclipped it would be 200/600 = 1/3).
    //   frame 3: gt [0,0,10,10], pred [0,0,10,100] clipped to [0,0,10,80]: 100 / 800 = 0.125
    //            (unclipped 100/1000).
    //   frame 4: exact → 1.
    // AO = (0.5 + 0.125 + 1)/3 = 1.625/3; SR0.5 = 1/3 (0.5 is not > 0.5); SR0.75 = 1/3.
    let mut a = seq(
        "a",
        vec![
            [10.0, 10.0, 20.0, 20.0],
            [0.0, 0.0, 10.0, 10.0],
            [80.0, 60.0, 20.0, 20.0],
            [0.0, 0.0, 10.0, 10.0],
            [20.0, 20.0, 10.0, 10.0],
        ],
    );
    a.cover = Some(vec![8, 0, 5, 3, 8]);
    let pa = vec![
        [0.0, 0.0, 1.0, 1.0],
        [70.0, 70.0, 5.0, 5.0],
        [90.0, 60.0, 20.0, 20.0],
        [0.0, 0.0, 10.0, 100.0],
        [20.0, 20.0, 10.0, 10.0],
    ];
    let (sa, ious) = score_sequence(
        Protocol::Got10k,
        &a,
        std::slice::from_ref(&pa),
        Some((100, 80)),
    )
    .unwrap();
    assert_eq!(ious, vec![0.5, 0.125, 1.0]);
    assert!(close(sa.ao, 1.625 / 3.0));
    assert!(close(sa.sr50, 1.0 / 3.0));
    assert!(close(sa.sr75, 1.0 / 3.0));
    assert_eq!(sa.success.len(), 101);

    // Sequence b: two frames, frame 1 (cover 1) missed entirely → IoUs [0].
    let mut b = seq("b", vec![[0.0, 0.0, 10.0, 10.0]; 2]);
    b.cover = Some(vec![8, 1]);
    let pb = vec![[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 10.0, 10.0]];

    // Overall AO is frame-weighted over the concatenated IoUs: (1.625 + 0)/4 = 0.40625, not the
    // mean of the per-sequence AOs ((0.5417 + 0)/2 ≈ 0.2708).
    let seqs = vec![a, b];
    let report = score(
        Protocol::Got10k,
        "t",
        &seqs,
        &|s: &Sequence| {
            Ok(vec![if s.name == "a" {
                pa.clone()
            } else {
                pb.clone()
            }])
        },
        &|_: &Sequence| Ok((100, 80)),
    );
    assert!(report.skipped.is_empty());
    assert_eq!(report.mean.ao, 0.40625);
    assert_eq!(report.mean.sr50, 0.25);
    assert_eq!(report.mean.frames, 4);

    // Repetitions are concatenated too: sequence b run 1 exact (IoU 1), run 2 missed (0) → AO 0.5.
    let (sb, ious) = score_sequence(
        Protocol::Got10k,
        &seqs[1],
        &[seqs[1].gt.clone(), pb],
        Some((100, 80)),
    )
    .unwrap();
    assert_eq!(ious, vec![1.0, 0.0]);
    assert_eq!(sb.ao, 0.5);
}

#[test]
fn unscorable_sequences_are_reported_not_averaged() {
    let b = [10.0, 10.0, 10.0, 10.0];
    let good = seq("good", vec![b; 3]);
    let short = seq("short", vec![b; 3]);
    let mut test_split = seq("test", vec![b; 3]);
    test_split.gt.truncate(1); // first box only, as GOT-10k test gives
    let missing = seq("missing", vec![b; 3]);
    let seqs = vec![good, short, test_split, missing];
    let report = score(
        Protocol::Pytracking,
        "mine",
        &seqs,
        &|s: &Sequence| match s.name.as_str() {
            "short" => Ok(vec![vec![b; 2]]),
            "missing" => Err(Error::Other("nope".into())),
            _ => Ok(vec![vec![b; 3]]),
        },
        &|_: &Sequence| unreachable!("one-pass protocols need no image size"),
    );
    assert_eq!(report.sequences.len(), 1);
    assert_eq!(report.skipped.len(), 3);
    assert!(report.skipped[0].1.contains("2 result boxes for 3 frames"));
    assert!(report.skipped[1]
        .1
        .contains("only 1 of 3 frames are annotated"));
    assert_eq!(report.skipped[2], ("missing".into(), "nope".into()));
    assert_eq!(report.mean.success[19], 1.0);
    let table = format_table("Demo", &[report]);
    assert!(table.contains("protocol pytracking"), "{table}");
    assert!(table.contains("mine"), "{table}");
    assert!(table.contains("1/4"), "{table}");
    assert!(table.contains("short: "), "{table}");
}

#[test]
fn table_compares_trackers() {
    let b = [10.0, 10.0, 10.0, 10.0];
    let s = vec![seq("s", vec![b; 2])];
    let mk = |name: &str, second: [f64; 4]| {
        score(
            Protocol::Pytracking,
            name,
            &s,
            &|_: &Sequence| Ok(vec![vec![b, second]]),
            &|_: &Sequence| Ok((1, 1)),
        )
    };
    // "exact": both IoUs 1 → success(t < 1) = 1, AUC = 20/21 = 95.24 %.
    // "half": IoUs 1 and 0.5 → 1 for t < 0.5 (10 values), 0.5 for 0.5 … 0.95 (10), 0 at 1 →
    // AUC = (10 + 5)/21 = 71.43 %.
    let reports: Vec<Report> = vec![mk("exact", b), mk("half", [10.0, 10.0, 5.0, 10.0])];
    let t = format_table("OTB", &reports);
    let exact = t.lines().find(|l| l.starts_with("exact")).unwrap();
    let half = t.lines().find(|l| l.starts_with("half")).unwrap();
    assert!(exact.contains("95.24"), "{t}");
    assert!(half.contains("71.43"), "{t}");
    assert!(!t.contains("warning"), "{t}");
}

#[test]
fn protocol_and_dataset_names() {
    assert_eq!(
        "GOT-10k".parse::<DatasetKind>().unwrap(),
        DatasetKind::Got10k
    );
    assert_eq!(
        "uav123".parse::<DatasetKind>().unwrap(),
        DatasetKind::Uav123
    );
    let e = err_text("vot2018".parse::<DatasetKind>());
    assert!(e.contains("got10k, lasot, trackingnet, otb, uav123"), "{e}");
    assert_eq!(
        "got10k-ope".parse::<Protocol>().unwrap(),
        Protocol::Got10kOpe
    );
    assert!(err_text("vot".parse::<Protocol>()).contains("pytracking"));
    assert_eq!(
        Protocol::default_for(DatasetKind::Lasot),
        Protocol::Pytracking
    );
    assert_eq!(Protocol::default_for(DatasetKind::Got10k), Protocol::Got10k);
}

// ---------------------------------------------------------------------------------------------
// Dataset readers

fn ok_seqs(v: Vec<Result<Sequence, Error>>) -> Vec<Sequence> {
    v.into_iter().map(|r| r.unwrap()).collect()
}

#[test]
fn got10k_layout() {
    let root = temp_dir("got10k");
    let val = root.join("val");
    write(
        &val.join("list.txt"),
        "GOT-10k_Val_000001\nGOT-10k_Val_000002\n",
    );
    let s1 = val.join("GOT-10k_Val_000001");
    frames(&s1, 3, |i| format!("{i:08}.jpg"));
    write(
        &s1.join("groundtruth.txt"),
        "1,2,3,4\n5.5,6,7,8\n9,10,11,12\n",
    );
    write(&s1.join("absence.label"), "0\n0\n1\n");
    write(&s1.join("cover.label"), "8\n5\n0\n");
    let s2 = val.join("GOT-10k_Val_000002");
    frames(&s2, 3, |i| format!("{i:08}.jpg"));
    write(&s2.join("groundtruth.txt"), "1,2,3,4\n1,2,3\n9,10,11,12\n");

    let v = open_dataset(DatasetKind::Got10k, &root, None).unwrap();
    assert_eq!(v.len(), 2);
    let s = v[0].as_ref().unwrap();
    assert_eq!(s.name, "GOT-10k_Val_000001");
    assert_eq!(s.frames.len(), 3);
    assert!(s.frames[2].ends_with("00000003.jpg"));
    assert_eq!(s.gt[1], [5.5, 6.0, 7.0, 8.0]);
    assert_eq!(s.absent, Some(vec![false, false, true]));
    assert_eq!(s.cover, Some(vec![8, 5, 0]));
    assert_eq!(frame_size(s).unwrap(), (8, 6));
    let e = v[1].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("groundtruth.txt line 2: expected 4 numbers"),
        "{e}"
    );
    assert!(e.contains("GOT-10k_Val_000002"), "{e}");

    // The same folder given directly (it holds list.txt).
    let direct = open_dataset(DatasetKind::Got10k, &val, None).unwrap();
    assert_eq!(direct.len(), 2);

    // Test split: only the first box; labels absent.
    let t = root.join("test");
    write(&t.join("list.txt"), "GOT-10k_Test_000001\n");
    let ts = t.join("GOT-10k_Test_000001");
    frames(&ts, 4, |i| format!("{i:08}.jpg"));
    write(&ts.join("groundtruth.txt"), "1,2,3,4\n");
    let v = ok_seqs(open_dataset(DatasetKind::Got10k, &root, Some("test")).unwrap());
    assert_eq!(v[0].gt.len(), 1);
    assert_eq!(v[0].frames.len(), 4);
    assert!(!v[0].fully_annotated());
    assert_eq!(v[0].init_box(), [1.0, 2.0, 3.0, 4.0]);

    // Unusable roots.
    let e = err_text(open_dataset(DatasetKind::Got10k, &root, Some("train")));
    assert!(e.contains("list.txt: missing"), "{e}");
    let e = err_text(open_dataset(DatasetKind::Got10k, &root.join("nope"), None));
    assert!(e.contains("does not exist"), "{e}");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn lasot_layout() {
    let root = temp_dir("lasot");
    let a1 = root.join("airplane").join("airplane-1");
    frames(&a1.join("img"), 3, |i| format!("{i:08}.jpg"));
    write(&a1.join("groundtruth.txt"), "1,2,3,4\n1,2,3,4\n1,2,3,4\n");
    write(&a1.join("full_occlusion.txt"), "0,1,0");
    write(&a1.join("out_of_view.txt"), "0,0,1\n");
    // A sequence without ground truth.
    let a2 = root.join("airplane").join("airplane-2");
    frames(&a2.join("img"), 2, |i| format!("{i:08}.jpg"));
    // A label file of the wrong length.
    let b10 = root.join("bear").join("bear-10");
    frames(&b10.join("img"), 2, |i| format!("{i:08}.jpg"));
    write(&b10.join("groundtruth.txt"), "1,2,3,4\n1,2,3,4\n");
    write(&b10.join("full_occlusion.txt"), "0,0,0");

    let v = open_dataset(DatasetKind::Lasot, &root, None).unwrap();
    let names: Vec<String> = v
        .iter()
        .map(|r| match r {
            Ok(s) => s.name.clone(),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(v.len(), 3, "{names:?}");
    let s = v[0].as_ref().unwrap();
    assert_eq!(s.name, "airplane-1");
    // absent = full occlusion OR out of view.
    assert_eq!(s.absent, Some(vec![false, true, true]));
    let e = v[1].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("airplane-2") && e.contains("groundtruth.txt"),
        "{e}"
    );
    let e = v[2].as_ref().unwrap_err().to_string();
    assert!(e.contains("2 frames but 3 absence labels"), "{e}");

    // testing_set.txt restricts the default to its sequences.
    write(&root.join("testing_set.txt"), "airplane-1\n");
    let v = ok_seqs(open_dataset(DatasetKind::Lasot, &root, None).unwrap());
    assert_eq!(v.len(), 1);
    assert_eq!(
        open_dataset(DatasetKind::Lasot, &root, Some("all"))
            .unwrap()
            .len(),
        3
    );
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn trackingnet_layout() {
    let root = temp_dir("trackingnet");
    let test = root.join("TEST");
    // 11 unpadded frames: numeric order puts 2.jpg before 10.jpg.
    frames(&test.join("frames").join("abc"), 11, |i| {
        format!("{}.jpg", i - 1)
    });
    write(&test.join("anno").join("abc.txt"), "1,2,3,4\n");
    // Full annotation but one row short.
    frames(&test.join("frames").join("def"), 3, |i| {
        format!("{}.jpg", i - 1)
    });
    write(&test.join("anno").join("def.txt"), "1,2,3,4\n1,2,3,4\n");
    let v = open_dataset(DatasetKind::TrackingNet, &root, None).unwrap();
    let s = v[0].as_ref().unwrap();
    assert_eq!(s.name, "abc");
    assert_eq!(s.frames.len(), 11);
    assert!(s.frames[2].ends_with("2.jpg"));
    assert!(s.frames[10].ends_with("10.jpg"));
    assert_eq!(s.gt.len(), 1);
    let e = v[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("def: 3 frames but 2 ground-truth rows"), "{e}");
    let e = err_text(open_dataset(
        DatasetKind::TrackingNet,
        &root,
        Some("TRAIN_0"),
    ));
    assert!(e.contains("anno"), "{e}");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn otb_layout() {
    let root = temp_dir("otb");
    let bb = root.join("Basketball");
    frames(&bb.join("img"), 3, |i| format!("{i:04}.jpg"));
    write(
        &bb.join("groundtruth_rect.txt"),
        "1\t2\t3\t4\n5\t6\t7\t8\n9\t10\t11\t12\n",
    );
    // Two targets, one space- and one comma-separated file.
    let jog = root.join("Jogging");
    frames(&jog.join("img"), 2, |i| format!("{i:04}.jpg"));
    write(&jog.join("groundtruth_rect.1.txt"), "1 2 3 4\n5 6 7 8\n");
    write(&jog.join("groundtruth_rect.2.txt"), "1,2,3,4\n5,6,7,8\n");
    // An empty annotation file (as Human4's .1) is skipped.
    let h4 = root.join("Human4");
    frames(&h4.join("img"), 2, |i| format!("{i:04}.jpg"));
    write(&h4.join("groundtruth_rect.1.txt"), "\n");
    write(&h4.join("groundtruth_rect.2.txt"), "1,2,3,4\n1,2,3,4\n");
    // A non-number.
    let bad = root.join("Bolt");
    frames(&bad.join("img"), 1, |i| format!("{i:04}.jpg"));
    write(&bad.join("groundtruth_rect.txt"), "1,2,abc,4\n");
    // David: 5 images, ground truth for frames 3..=5 only, as OTB's David has 770 images and
    // ground truth for 300..=770. The reader knows David's real range, so a 5-image folder
    // is a mismatch error naming both counts.
    let david = root.join("David");
    frames(&david.join("img"), 5, |i| format!("{i:04}.jpg"));
    write(&david.join("groundtruth_rect.txt"), &rows(3, "1,2,3,4"));

    let v = open_dataset(DatasetKind::Otb, &root, None).unwrap();
    let names: Vec<String> = v
        .iter()
        .map(|r| {
            r.as_ref()
                .map_or_else(|e| e.to_string(), |s| s.name.clone())
        })
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert_eq!(names[0], "Basketball");
    assert!(
        names[1].contains("groundtruth_rect.txt line 1: 'abc' is not a number"),
        "{names:?}"
    );
    assert!(
        names[2].contains("5 frames but 3 ground-truth rows"),
        "{names:?}"
    );
    assert_eq!(&names[3..], ["Human4_2", "Jogging_1", "Jogging_2"]);
    let s = v[0].as_ref().unwrap();
    assert_eq!(s.gt[2], [9.0, 10.0, 11.0, 12.0]);
    assert_eq!(v[4].as_ref().unwrap().gt[1], [5.0, 6.0, 7.0, 8.0]);
    let e = err_text(open_dataset(DatasetKind::Otb, &root, Some("tb50")));
    assert!(e.contains("no splits"), "{e}");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn otb_known_frame_ranges() {
    // OTB's Football1 has more images than ground truth; frames 1..=74 are the benchmark's.
    let root = temp_dir("otb-range");
    let f = root.join("Football1");
    frames(&f.join("img"), 80, |i| format!("{i:04}.jpg"));
    write(&f.join("groundtruth_rect.txt"), &rows(74, "1,2,3,4"));
    let v = ok_seqs(open_dataset(DatasetKind::Otb, &root, None).unwrap());
    assert_eq!(v[0].frames.len(), 74);
    assert!(v[0].frames[73].ends_with("0074.jpg"));
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn uav123_layout() {
    let root = temp_dir("uav123");
    let anno = root.join("anno").join("UAV123");
    let data = root.join("data_seq").join("UAV123");
    frames(&data.join("bike1"), 3, |i| format!("{i:06}.jpg"));
    write(
        &anno.join("bike1.txt"),
        "1,2,3,4\nNaN,NaN,NaN,NaN\n5,6,7,8\n",
    );
    // bird1_1 is frames 1..=253 of the shared folder bird1; bird1_2 (775..=1477) lacks its frames.
    frames(&data.join("bird1"), 260, |i| format!("{i:06}.jpg"));
    write(&anno.join("bird1_1.txt"), &rows(253, "1,2,3,4"));
    write(&anno.join("bird1_2.txt"), &rows(703, "1,2,3,4"));
    let v = open_dataset(DatasetKind::Uav123, &root, None).unwrap();
    assert_eq!(v.len(), 3);
    let bike = v[0].as_ref().unwrap();
    assert!(bike.gt[1].iter().all(|x| x.is_nan()));
    let b1 = v[1].as_ref().unwrap();
    assert_eq!(b1.name, "bird1_1");
    assert_eq!(b1.frames.len(), 253);
    assert!(b1.frames[252].ends_with("000253.jpg"));
    let e = v[2].as_ref().unwrap_err().to_string();
    assert!(e.contains("bird1_2: frames 775..=1477"), "{e}");
    let e = err_text(open_dataset(DatasetKind::Uav123, &data, None));
    assert!(e.contains("anno"), "{e}");
    fs::remove_dir_all(&root).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Result files

#[test]
fn results_round_trip() {
    let dir = temp_dir("results");
    let boxes = vec![
        [1.5, 2.0, 30.25, 40.0],
        [1.23456789, -0.00001, 100.0, f64::NAN],
    ];
    for kind in [DatasetKind::Got10k, DatasetKind::Lasot] {
        assert!(!results::has_results(kind, &dir, "seq-a"));
        results::write_results(kind, &dir, "seq-a", &boxes, Some(&[0.01, 0.02])).unwrap();
        assert!(results::has_results(kind, &dir, "seq-a"));
        let back = results::read_results(kind, &dir, "seq-a").unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], boxes[0]);
        // 4 decimals are written: 1.23456789 → 1.2346 (error 2.1e-5 < 5e-5), −0.00001 → 0.
        assert!((back[1][0] - 1.23456789).abs() < 5e-5);
        assert_eq!(back[1][1], 0.0);
        assert!(back[1][3].is_nan());
    }
    // Toolkit layouts and text.
    let got = dir.join("seq-a").join("seq-a_001.txt");
    assert_eq!(
        fs::read_to_string(&got).unwrap(),
        "1.5,2,30.25,40\n1.2346,0,100,NaN\n"
    );
    assert!(dir.join("seq-a").join("seq-a_time.txt").is_file());
    assert!(dir.join("seq-a.txt").is_file());
    assert_eq!(
        fs::read_to_string(dir.join("seq-a_time.txt")).unwrap(),
        "0.01000000\n0.02000000\n"
    );
    // No temporary file is left behind.
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
    // A temporary file from an interrupted write does not count as results.
    write(&dir.join("seq-b.txt.999.partial"), "1,2,3");
    assert!(!results::has_results(DatasetKind::Otb, &dir, "seq-b"));

    // Reading accepts tabs and spaces; errors name file and line.
    write(&dir.join("tabs.txt"), "1\t2\t3\t4\n5 6 7 8\n");
    assert_eq!(
        results::read_results(DatasetKind::Otb, &dir, "tabs").unwrap(),
        vec![[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    );
    write(&dir.join("broken.txt"), "1,2,3,4\n\n5,6,7,8\n");
    let e = err_text(results::read_results(DatasetKind::Otb, &dir, "broken"));
    assert!(e.contains("broken.txt line 2"), "{e}");
    let e = err_text(results::read_results(DatasetKind::Otb, &dir, "none"));
    assert!(e.contains("no results for sequence none"), "{e}");

    // GOT-10k repetitions.
    write(
        &dir.join("seq-a").join("seq-a_002.txt"),
        "0,0,1,1\n0,0,1,1\n",
    );
    let runs = results::read_runs(DatasetKind::Got10k, &dir, "seq-a").unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1][0], [0.0, 0.0, 1.0, 1.0]);
    fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Plots

fn check_png(path: &Path, size: (u32, u32)) {
    let bytes = fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let img = image::open(path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), size);
    let total = (size.0 * size.1) as usize;
    let ink = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    // Axes, grid, text and two curves cover well over 1 % of a 640×480 plot; a blank or failed
    // render covers none.
    assert!(
        ink * 100 > total,
        "{}: only {ink} non-white pixels",
        path.display()
    );
    // The first two line colours (tab:blue, tab:orange) are drawn somewhere.
    for c in [[31u8, 119, 180], [255, 127, 14]] {
        assert!(
            img.pixels().any(|p| p.0 == c),
            "{}: no pixel of colour {c:?}",
            path.display()
        );
    }
}

#[test]
fn plots_are_pngs_with_content() {
    let dir = temp_dir("plots");
    let b = [10.0, 10.0, 10.0, 10.0];
    let s = vec![seq("s", vec![b; 3])];
    let mk = |name: &str, last: [f64; 4]| {
        score(
            Protocol::Pytracking,
            name,
            &s,
            &|_: &Sequence| Ok(vec![vec![b, b, last]]),
            &|_: &Sequence| Ok((1, 1)),
        )
    };
    let reports = vec![mk("exact", b), mk("half", [10.0, 10.0, 5.0, 10.0])];
    let size = (640, 480);
    let sp = dir.join("success.png");
    plot::success_plot(&sp, "Success plots of OPE", &reports, size).unwrap();
    check_png(&sp, size);
    let pp = dir.join("precision.png");
    plot::precision_plot(&pp, "Precision plots of OPE", &reports, size).unwrap();
    check_png(&pp, size);
    let np = dir.join("norm.png");
    plot::norm_precision_plot(&np, "Normalized precision", &reports, size).unwrap();
    check_png(&np, size);

    // GOT-10k has no precision measure; mixing protocols is refused.
    let g = vec![score(
        Protocol::Got10k,
        "g",
        &s,
        &|_: &Sequence| Ok(vec![vec![b; 3]]),
        &|_: &Sequence| Ok((100, 100)),
    )];
    let gp = dir.join("got.png");
    plot::success_plot(&gp, "Success plots on GOT-10k", &g, size).unwrap();
    check_png_first_colour(&gp, size);
    assert!(err_text(plot::precision_plot(&gp, "x", &g, size)).contains("no precision"));
    let mixed = vec![reports[0].clone(), g[0].clone()];
    assert!(err_text(plot::success_plot(&gp, "x", &mixed, size)).contains("separately"));
    fs::remove_dir_all(&dir).unwrap();
}

/// A one-tracker plot: a PNG of the size asked with the first line colour on it.
fn check_png_first_colour(path: &Path, size: (u32, u32)) {
    let img = image::open(path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), size);
    assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));
}
