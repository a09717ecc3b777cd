//! Training data (src/data) and the sequence generator's occlusion and distractors (src/synth.rs).
//!
//! Tolerances and bounds:
//! * Readers, the index cache and ground truth: exact (boxes are parsed numbers; synth boxes are
//!   integer pixels by construction).
//! * Sampler statistics over N = 20 000 draws: a frequency p̂ of a Bernoulli(p) is within
//!   4.5 σ = 4.5 √(p(1 − p)/N) of p except with probability below 1e-5, so e.g. the negative
//!   ratio must lie in 0.33 ± 0.015. Bounds that hold for every draw (gap ≤ 100, the aspect filter,
//!   the augmentation ranges) are checked on every draw.
//! * Augmentation geometry: the crop matrix is built in f32 (as the tracker builds it), so mapped
//!   coordinates are compared with an f64 derivation within 1e-3 crop pixels (f32 rounding of
//!   values below 2000 is under 1.2e-4 per operation, a handful of operations).
//! * GPU batch crop vs the CPU reference: none, bit for bit (the crop kernel is exact integer
//!   emulation of OpenCV's arithmetic, see tests/ops/crop.rs; normalisation is the same f32 table).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{Rgb, RgbImage};
use sparsett::data::{
    self, augment, index, load_indexed, loader, sampler, CacheStatus, Loader, Sampler,
    SamplerConfig, TrainDataset, TrainKind, TrainSequence,
};
use sparsett::prng::SplitMix64;
use sparsett::synth::{self, generate, generate_scene, SynthSpec};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sparsett-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A noise image (seeded), so crops of different places differ.
fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut r = SplitMix64::new(seed);
    RgbImage::from_fn(w, h, |_, _| {
        let v = r.next_u64();
        Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    })
}

fn save_png(path: &Path, img: &RgbImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

fn err(r: sparsett::Result<impl std::fmt::Debug>) -> String {
    r.expect_err("an error was expected").to_string()
}

/// GOT-10k train split: two sequences of `n` frames; seq 1 has its 2nd frame absent.
fn got10k_fixture(root: &Path, n: usize) {
    write(
        &root.join("train/list.txt"),
        "GOT-10k_Train_000001\nGOT-10k_Train_000002\n",
    );
    for (k, name) in ["GOT-10k_Train_000001", "GOT-10k_Train_000002"]
        .iter()
        .enumerate()
    {
        let d = root.join("train").join(name);
        let mut gt = String::new();
        for i in 0..n {
            save_png(
                &d.join(format!("{:08}.png", i + 1)),
                &noise(64, 48, (k * 100 + i) as u64),
            );
            gt += &format!("{},{},{},{}\n", 10 + i, 8 + k, 20, 16);
        }
        write(&d.join("groundtruth.txt"), &gt);
        let absent: String = (0..n)
            .map(|i| if k == 0 && i == 1 { "1\n" } else { "0\n" })
            .collect();
        write(&d.join("absence.label"), &absent);
        let cover: String = (0..n)
            .map(|i| if k == 0 && i == 1 { "0\n" } else { "8\n" })
            .collect();
        write(&d.join("cover.label"), &cover);
    }
}

#[test]
fn video_readers_got10k_lasot_trackingnet() {
    let root = scratch("videos");
    let g = root.join("got10k");
    got10k_fixture(&g, 3);
    let ds = data::scan(TrainKind::Got10k, &g, None).unwrap();
    assert_eq!(ds.sequences.len(), 2);
    let s = &ds.sequences[0];
    assert_eq!(s.name, "GOT-10k_Train_000001");
    assert_eq!(s.frames.len(), 3);
    assert_eq!(s.boxes[2], [12.0, 8.0, 20.0, 16.0]);
    assert_eq!(s.absent, [false, true, false]);
    assert_eq!(ds.sequences[1].boxes[0], [10.0, 9.0, 20.0, 16.0]);

    // LaSOT: the train split is every sequence testing_set.txt does not list.
    let l = root.join("lasot");
    for name in ["cat-1", "cat-2"] {
        let d = l.join("cat").join(name);
        for i in 0..2 {
            write(&d.join(format!("img/{:08}.jpg", i + 1)), "");
        }
        write(&d.join("groundtruth.txt"), "1,2,3,4\n5,6,7,8\n");
        write(&d.join("full_occlusion.txt"), "0,1\n");
        write(&d.join("out_of_view.txt"), "0,0\n");
    }
    write(&l.join("testing_set.txt"), "cat-2\n");
    let ds = data::scan(TrainKind::Lasot, &l, None).unwrap();
    let names: Vec<&str> = ds.sequences.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cat-1"]);
    assert_eq!(ds.sequences[0].absent, [false, true]);
    assert_eq!(ds.sequences[0].boxes[1], [5.0, 6.0, 7.0, 8.0]);
    let all = data::scan(TrainKind::Lasot, &l, Some("all")).unwrap();
    assert_eq!(all.sequences.len(), 2);

    // TrackingNet: every TRAIN_* chunk by default, unpadded frame numbers in natural order.
    let t = root.join("trackingnet");
    for (c, seq) in [("TRAIN_0", "a"), ("TRAIN_1", "b")] {
        for i in [0, 1, 2, 10] {
            write(
                &t.join(c).join("frames").join(seq).join(format!("{i}.jpg")),
                "",
            );
        }
        write(
            &t.join(c).join("anno").join(format!("{seq}.txt")),
            "1,1,5,5\n2,2,5,5\n3,3,5,5\n4,4,5,5\n",
        );
    }
    let ds = data::scan(TrainKind::TrackingNet, &t, None).unwrap();
    let names: Vec<&str> = ds.sequences.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(ds.sequences[0].frames[3].ends_with("10.jpg"));
    let one = data::scan(TrainKind::TrackingNet, &t, Some("TRAIN_1")).unwrap();
    assert_eq!(one.sequences.len(), 1);
}

#[test]
fn video_readers_report_broken_files() {
    let root = scratch("broken-videos");
    let g = root.join("got10k");
    got10k_fixture(&g, 3);
    let gt = g.join("train/GOT-10k_Train_000002/groundtruth.txt");
    write(&gt, "1,2,3,4\n1,2,x,4\n1,2,3,4\n");
    let e = err(data::scan(TrainKind::Got10k, &g, None));
    assert!(
        e.contains("groundtruth.txt line 2") && e.contains("'x' is not a number"),
        "{e}"
    );
    std::fs::remove_file(&gt).unwrap();
    let e = err(data::scan(TrainKind::Got10k, &g, None));
    assert!(e.contains("GOT-10k_Train_000002/groundtruth.txt"), "{e}");
    let e = err(data::scan(TrainKind::Got10k, &root.join("nowhere"), None));
    assert!(e.contains("nowhere") && e.contains("does not exist"), "{e}");
    let e = err(data::scan(TrainKind::TrackingNet, &root, None));
    assert!(e.contains("no TRAIN_* chunk"), "{e}");
}

fn coco_fixture(root: &Path, json: &str) {
    write(&root.join("annotations/instances_train2017.json"), json);
    std::fs::create_dir_all(root.join("train2017")).unwrap();
}

#[test]
fn coco_reader_skips_crowd_and_tiny_boxes() {
    let root = scratch("coco");
    coco_fixture(
        &root,
        r#"{"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.jpg"}],
            "annotations": [
              {"id": 1, "image_id": 7, "bbox": [10.5, 20, 30, 40], "iscrowd": 0},
              {"id": 2, "image_id": 7, "bbox": [0, 0, 100, 100], "iscrowd": 1},
              {"id": 3, "image_id": 9, "bbox": [5, 5, 3, 50], "iscrowd": 0},
              {"id": 4, "image_id": 9, "bbox": [1, 2, 4, 4]}
            ]}"#,
    );
    let e = err(data::scan(TrainKind::Coco, &root, None));
    assert!(
        e.contains("instances_train2017.json") && e.contains("a.jpg (coco-1) is missing"),
        "{e}"
    );
    for f in ["a.jpg", "b.jpg"] {
        write(&root.join("train2017").join(f), "");
    }
    let ds = data::scan(TrainKind::Coco, &root, None).unwrap();
    let got: Vec<(&str, [f64; 4], bool)> = ds
        .sequences
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.boxes[0],
                s.frames[0].ends_with("train2017/a.jpg"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("coco-1", [10.5, 20.0, 30.0, 40.0], true),
            ("coco-4", [1.0, 2.0, 4.0, 4.0], false)
        ]
    );
    assert!(ds.sequences.iter().all(|s| s.frames.len() == 1));

    let bad = scratch("coco-bad");
    let json = bad.join("annotations/instances_train2017.json");
    let e = err(data::scan(TrainKind::Coco, &bad, None));
    assert!(
        e.contains("train2017") && e.contains("missing image folder"),
        "{e}"
    );
    std::fs::create_dir_all(bad.join("train2017")).unwrap();
    let e = err(data::scan(TrainKind::Coco, &bad, None));
    assert!(e.contains(&json.display().to_string()), "{e}");
    coco_fixture(&bad, r#"{"images": [], "annotations": [}"#);
    let e = err(data::scan(TrainKind::Coco, &bad, None));
    assert!(
        e.contains("instances_train2017.json: malformed JSON"),
        "{e}"
    );
    coco_fixture(
        &bad,
        r#"{"images": [], "annotations": [{"image_id": 3, "bbox": [1, 2, 30, 40]}]}"#,
    );
    let e = err(data::scan(TrainKind::Coco, &bad, None));
    assert!(e.contains("refers to image 3"), "{e}");
    coco_fixture(
        &bad,
        r#"{"images": [{"id": 3, "file_name": "c.jpg"}], "annotations": [{"image_id": 3, "bbox": [1, 2, 30]}]}"#,
    );
    let e = err(data::scan(TrainKind::Coco, &bad, None));
    assert!(e.contains("annotations[0]: bbox is not 4 numbers"), "{e}");
}

fn voc(objects: &[(Option<u32>, [i32; 4])]) -> String {
    let mut s = String::from(
        "<annotation><folder>x</folder><size><width>64</width><height>48</height></size>",
    );
    for (track, b) in objects {
        s += "<object>";
        if let Some(t) = track {
            s += &format!("<trackid>{t}</trackid>");
        }
        s += &format!(
            "<name>n01</name><bndbox><xmax>{}</xmax><xmin>{}</xmin><ymax>{}</ymax><ymin>{}</ymin></bndbox><occluded>0</occluded></object>",
            b[2], b[0], b[3], b[1]
        );
    }
    s + "</annotation>"
}

#[test]
fn imagenet_vid_and_det_readers() {
    let root = scratch("vid");
    let snip = "ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000";
    let a = root.join("Annotations/VID/train").join(snip);
    let d = root.join("Data/VID/train").join(snip);
    let frames: [&[(Option<u32>, [i32; 4])]; 3] = [
        &[(Some(0), [1, 2, 11, 22]), (Some(3), [30, 5, 40, 15])],
        &[(Some(0), [2, 2, 12, 22])],
        &[(Some(3), [31, 5, 41, 15]), (Some(0), [3, 2, 13, 22])],
    ];
    for (i, objs) in frames.iter().enumerate() {
        write(&a.join(format!("{i:06}.xml")), &voc(objs));
        write(&d.join(format!("{i:06}.JPEG")), "");
    }
    let ds = data::scan(TrainKind::Vid, &root, None).unwrap();
    assert_eq!(ds.sequences.len(), 2);
    let (t0, t3) = (&ds.sequences[0], &ds.sequences[1]);
    assert!(
        t0.name.ends_with("-0") && t3.name.ends_with("-3"),
        "{} {}",
        t0.name,
        t3.name
    );
    assert_eq!(
        t0.boxes,
        [
            [1.0, 2.0, 10.0, 20.0],
            [2.0, 2.0, 10.0, 20.0],
            [3.0, 2.0, 10.0, 20.0]
        ]
    );
    assert_eq!(t3.absent, [false, true, false]);
    assert!(t3.boxes[1][0].is_nan());
    assert!(t3.frames[2].ends_with("000002.JPEG"));

    // DET: one static sequence per object.
    let a = root.join("Annotations/DET/train/n01");
    write(
        &a.join("img_1.xml"),
        &voc(&[(None, [0, 0, 8, 9]), (None, [4, 4, 20, 30])]),
    );
    write(&a.join("img_2.xml"), &voc(&[]));
    write(&root.join("Data/DET/train/n01/img_1.JPEG"), "");
    let det = data::scan(TrainKind::Det, &root, None).unwrap();
    let boxes: Vec<[f64; 4]> = det.sequences.iter().map(|s| s.boxes[0]).collect();
    assert_eq!(boxes, [[0.0, 0.0, 8.0, 9.0], [4.0, 4.0, 16.0, 26.0]]);

    // Broken: malformed XML, a missing coordinate, a missing image; each names the XML file.
    let x = root
        .join("Annotations/VID/train")
        .join(snip)
        .join("000001.xml");
    write(&x, "<annotation><object><trackid>0</trackid>");
    let e = err(data::scan(TrainKind::Vid, &root, None));
    assert!(e.contains("000001.xml: malformed XML"), "{e}");
    write(
        &x,
        &voc(&[(Some(0), [2, 2, 12, 22])]).replace("<xmin>2</xmin>", ""),
    );
    let e = err(data::scan(TrainKind::Vid, &root, None));
    assert!(
        e.contains("000001.xml: object 1: <bndbox> has no <xmin>"),
        "{e}"
    );
    write(
        &x,
        &voc(&[(Some(0), [2, 2, 12, 22])]).replace("<xmin>2</xmin>", "<xmin>two</xmin>"),
    );
    let e = err(data::scan(TrainKind::Vid, &root, None));
    assert!(e.contains("<xmin> 'two' is not a number"), "{e}");
    write(&x, &voc(&[(Some(0), [2, 2, 12, 22])]));
    std::fs::remove_file(d.join("000002.JPEG")).unwrap();
    let e = err(data::scan(TrainKind::Vid, &root, None));
    assert!(
        e.contains("000002.xml: its image") && e.contains("missing"),
        "{e}"
    );
    let e = err(data::scan(TrainKind::Vid, &root, Some("val")));
    assert!(
        e.contains("Annotations/VID/val") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn index_cache_is_reused_and_invalidated() {
    let root = scratch("index");
    got10k_fixture(&root, 3);
    let cache = root.join("cache");
    let load = || load_indexed(TrainKind::Got10k, &root, None, Some(&cache)).unwrap();
    let (first, st) = load();
    assert_eq!(st, CacheStatus::Rebuilt("no index yet".into()));
    let (second, st) = load();
    assert_eq!(st, CacheStatus::Hit);
    assert_eq!(first, second);
    assert_eq!(second, data::scan(TrainKind::Got10k, &root, None).unwrap());

    // Proof that a hit does not rescan: an edit that keeps the listing's fingerprint (same size,
    // same modification time) is not seen.
    let gt = root.join("train/GOT-10k_Train_000001/groundtruth.txt");
    let mtime = std::fs::metadata(&gt).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(&gt).unwrap();
    std::fs::write(&gt, text.replacen("10,8,20,16", "90,8,20,16", 1)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&gt)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (stale, st) = load();
    assert_eq!(st, CacheStatus::Hit);
    assert_eq!(stale.sequences[0].boxes[0], [10.0, 8.0, 20.0, 16.0]);

    // A touched annotation, a new frame, a new sequence: each rebuilds.
    std::fs::File::options()
        .write(true)
        .open(&gt)
        .unwrap()
        .set_modified(mtime + std::time::Duration::from_secs(5))
        .unwrap();
    let (fresh, st) = load();
    assert_eq!(
        st,
        CacheStatus::Rebuilt("the dataset listing changed".into())
    );
    assert_eq!(fresh.sequences[0].boxes[0], [90.0, 8.0, 20.0, 16.0]);
    assert_eq!(load().1, CacheStatus::Hit);
    // A stray frame makes the listing differ: rescanned (and refused, naming the mismatch).
    let d2 = root.join("train/GOT-10k_Train_000002");
    save_png(&d2.join("00000004.png"), &noise(64, 48, 9));
    let e = err(load_indexed(TrainKind::Got10k, &root, None, Some(&cache)));
    assert!(e.contains("4 frames but 3 ground-truth rows"), "{e}");
    std::fs::remove_file(d2.join("00000004.png")).unwrap();
    assert_eq!(load().1, CacheStatus::Hit);
    // A new sequence: rebuilt with it.
    let d3 = root.join("train/GOT-10k_Train_000003");
    save_png(&d3.join("00000001.png"), &noise(64, 48, 10));
    write(&d3.join("groundtruth.txt"), "1,2,3,4\n");
    write(
        &root.join("train/list.txt"),
        "GOT-10k_Train_000001\nGOT-10k_Train_000002\nGOT-10k_Train_000003\n",
    );
    let (grown, st) = load();
    assert!(matches!(st, CacheStatus::Rebuilt(_)));
    assert_eq!(grown.sequences.len(), 3);
    assert_eq!(load().1, CacheStatus::Hit);

    // A corrupt index is rebuilt, not trusted; the default cache folder does not change the
    // fingerprint it sits in.
    let idx: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(idx.len(), 1, "one index file, no temporary left: {idx:?}");
    std::fs::write(&idx[0], b"SPTIDX\x01\x00garbage").unwrap();
    let (_, st) = load();
    assert!(
        matches!(&st, CacheStatus::Rebuilt(r) if r.starts_with("unreadable index")),
        "{st:?}"
    );
    let (_, st) = load_indexed(TrainKind::Got10k, &root, None, None).unwrap();
    assert!(matches!(st, CacheStatus::Rebuilt(_)));
    assert!(root.join(index::CACHE_DIR).is_dir());
    let (_, st) = load_indexed(TrainKind::Got10k, &root, None, None).unwrap();
    assert_eq!(st, CacheStatus::Hit);
}

/// An in-memory dataset: `n` sequences of `len` frames with a valid box except: every 7th frame
/// absent, every 11th frame a 10:1 box, every 13th frame NaN. Frame paths encode their identity.
fn mem_dataset(kind: TrainKind, n: usize, len: usize) -> Arc<TrainDataset> {
    let sequences = (0..n)
        .map(|s| {
            let frames = (0..len)
                .map(|f| PathBuf::from(format!("{kind}/{s}/{f}.jpg")))
                .collect();
            let boxes = (0..len)
                .map(|f| {
                    if f % 13 == 5 {
                        [f64::NAN; 4]
                    } else if f % 11 == 3 {
                        [10.0, 10.0, 100.0, 10.0]
                    } else {
                        [10.0 + f as f64, 20.0, 30.0 + s as f64, 20.0]
                    }
                })
                .collect();
            let absent = (0..len).map(|f| f % 7 == 2).collect();
            TrainSequence::new(format!("{kind}-{s}"), frames, boxes, Some(absent)).unwrap()
        })
        .collect();
    Arc::new(TrainDataset {
        kind,
        root: PathBuf::from(kind.name()),
        sequences,
    })
}

/// 4.5 σ of a frequency over `n` Bernoulli(p) draws.
fn bound(p: f64, n: usize) -> f64 {
    4.5 * (p * (1.0 - p) / n as f64).sqrt()
}

#[test]
fn sampler_statistics() {
    let a = mem_dataset(TrainKind::TrackingNet, 5, 400);
    let b = mem_dataset(TrainKind::Lasot, 3, 50);
    let r = (
        TrainKind::TrackingNet.full_data_ratio(),
        TrainKind::Lasot.full_data_ratio(),
    );
    let s = Sampler::new(vec![(a, r.0), (b, r.1)], SamplerConfig::default(), 1).unwrap();
    let n = 20_000;
    let (mut neg, mut from_a, mut max_gap) = (0usize, 0usize, 0usize);
    for i in 0..n {
        let p = s.pair(i as u64);
        assert_eq!(p.index, i as u64);
        for f in [&p.template, &p.search] {
            let seq = &s.datasets()[f.dataset].sequences[f.sequence];
            assert_eq!(seq.frames[f.frame], f.path);
            assert_eq!(seq.boxes[f.frame], f.bbox);
            assert!(
                sampler::valid_box(&f.bbox, seq.absent[f.frame], 10.0),
                "pair {i} uses an unusable frame {f:?}"
            );
            let (w, h) = (f.bbox[2], f.bbox[3]);
            assert!((w / h).max(h / w) < 10.0);
        }
        let same =
            (p.template.dataset, p.template.sequence) == (p.search.dataset, p.search.sequence);
        if p.negative {
            neg += 1;
            assert!(!same, "pair {i}: a negative pair from one sequence");
        } else {
            assert!(same, "pair {i}: a positive pair from two sequences");
            let gap = p.template.frame.abs_diff(p.search.frame);
            assert!(gap <= 100, "pair {i}: gap {gap}");
            assert!(
                gap > 0,
                "pair {i}: template and search are one frame of a video"
            );
            max_gap = max_gap.max(gap);
        }
        from_a += (p.template.dataset == 0) as usize;
        let aug = p.augment;
        assert!((1.0 / 1.3..=1.3).contains(&aug.scale), "{aug:?}");
        assert!(
            aug.shift.iter().all(|v| (-0.4..=0.4).contains(v)),
            "{aug:?}"
        );
    }
    let ratio = neg as f64 / n as f64;
    assert!(
        (ratio - 0.33).abs() <= bound(0.33, n),
        "negative ratio {ratio}"
    );
    let pa = r.0 / (r.0 + r.1);
    let fa = from_a as f64 / n as f64;
    assert!(
        (fa - pa).abs() <= bound(pa, n),
        "dataset A share {fa}, expected {pa}"
    );
    assert!((s.probabilities()[0] - pa).abs() < 1e-12);
    // The window is used up to its edge (a too-narrow window would fail here).
    assert!(max_gap >= 95, "largest gap {max_gap}");
}

#[test]
fn sampler_edge_cases() {
    // Still images: the template frame is its own search frame.
    let one = |boxes: [f64; 4]| {
        Arc::new(TrainDataset {
            kind: TrainKind::Coco,
            root: "coco".into(),
            sequences: (0..4)
                .map(|k| {
                    TrainSequence::new(
                        format!("c{k}"),
                        vec![format!("{k}.jpg").into()],
                        vec![boxes],
                        None,
                    )
                    .unwrap()
                })
                .collect(),
        })
    };
    let s = Sampler::new(
        vec![(one([1.0, 1.0, 20.0, 30.0]), 1.0)],
        SamplerConfig::default(),
        3,
    )
    .unwrap();
    for i in 0..200 {
        let p = s.pair(i);
        if !p.negative {
            assert_eq!(p.template, p.search);
        }
    }
    // Every box filtered by the aspect rule: refused with a clear error.
    let e = err(Sampler::new(
        vec![(one([1.0, 1.0, 100.0, 10.0]), 1.0)],
        SamplerConfig::default(),
        3,
    )
    .map(|_| ()));
    assert!(
        e.contains("coco") && e.contains("no sequence with a usable box"),
        "{e}"
    );
    let e = err(Sampler::new(
        vec![(one([1.0, 1.0, 20.0, 30.0]), 0.0)],
        SamplerConfig::default(),
        3,
    )
    .map(|_| ()));
    assert!(e.contains("no dataset with a positive weight"), "{e}");
    // Out-of-range knobs, NaN included.
    for cfg in [
        SamplerConfig {
            negative_prob: 1.5,
            ..Default::default()
        },
        SamplerConfig {
            max_scale: f64::NAN,
            ..Default::default()
        },
        SamplerConfig {
            max_aspect: 1.0,
            ..Default::default()
        },
    ] {
        let e = err(Sampler::new(vec![(one([1.0, 1.0, 20.0, 30.0]), 1.0)], cfg, 3).map(|_| ()));
        assert!(e.starts_with("pair sampler:"), "{e}");
    }
    // Negatives need two sequences.
    let single = mem_dataset(TrainKind::Got10k, 1, 20);
    let e = err(Sampler::new(vec![(single.clone(), 1.0)], SamplerConfig::default(), 3).map(|_| ()));
    assert!(e.contains("at least two usable sequences"), "{e}");
    let cfg = SamplerConfig {
        negative_prob: 0.0,
        max_gap: 3,
        ..Default::default()
    };
    let s = Sampler::new(vec![(single, 1.0)], cfg, 3).unwrap();
    for i in 0..500 {
        let p = s.pair(i);
        assert!(!p.negative && p.template.frame.abs_diff(p.search.frame) <= 3);
    }
}

#[test]
fn sampler_is_deterministic() {
    let ds = || {
        vec![
            (mem_dataset(TrainKind::Got10k, 6, 120), 1.0),
            (mem_dataset(TrainKind::Vid, 4, 30), 0.5),
        ]
    };
    let a = Sampler::new(ds(), SamplerConfig::default(), 42).unwrap();
    let b = Sampler::new(ds(), SamplerConfig::default(), 42).unwrap();
    let c = Sampler::new(ds(), SamplerConfig::default(), 43).unwrap();
    let pa: Vec<_> = (0..300).map(|i| a.pair(i)).collect();
    let pb: Vec<_> = (0..300).map(|i| b.pair(i)).collect();
    let pc: Vec<_> = (0..300).map(|i| c.pair(i)).collect();
    assert_eq!(pa, pb);
    let differ = pa.iter().zip(&pc).filter(|(x, y)| x != y).count();
    assert!(
        differ > 290,
        "only {differ} of 300 pairs differ between seeds"
    );
    // Out of order, the same pair.
    assert_eq!(a.pair(7), pa[7]);
}

#[test]
fn augmentation_geometry() {
    let bbox = [100.0, 60.0, 40.0, 20.0];
    let (w, h) = (40.0f64, 20.0f64);
    let p = (w + h) / 2.0;
    let s_z = ((w + p) * (h + p)).sqrt();
    let (cx, cy) = (100.0 + (w - 1.0) / 2.0, 60.0 + (h - 1.0) / 2.0);
    // Template: the tracker's crop, centred, side round(s_z).
    let t = augment::template_crop(bbox, [1, 2, 3]);
    let side = s_z.round();
    assert!((t.m[0] - (side - 1.0) / 126.0).abs() < 1e-6, "{:?}", t.m);
    assert!(((cx - t.m[2]) / t.m[0] - 63.0).abs() < 1e-3);
    assert!(((cy - t.m[5]) / t.m[4] - 63.0).abs() < 1e-3);
    assert_eq!(t.border_rgb, [1, 2, 3]);

    let mut rng = SplitMix64::new(5);
    let mut extremes = vec![
        augment::Augment {
            scale: 1.3,
            shift: [0.4, -0.4],
        },
        augment::Augment {
            scale: 1.0 / 1.3,
            shift: [-0.4, 0.4],
        },
        augment::Augment::NONE,
    ];
    for _ in 0..200 {
        extremes.push(augment::Augment {
            scale: 1.0 / 1.3 + (1.3 - 1.0 / 1.3) * rng.next_unit(),
            shift: [0.8 * rng.next_unit() - 0.4, 0.8 * rng.next_unit() - 0.4],
        });
    }
    for aug in extremes {
        let sc = augment::search_crop(bbox, aug, [0, 0, 0]);
        let side = s_z * 289.0 / 127.0 * aug.scale;
        assert!(
            (sc.side as f64 - side).abs() < 1e-3 * side,
            "{aug:?}: side {}",
            sc.side
        );
        let step = (side - 1.0) / 288.0;
        assert!((sc.spec.m[0] - step).abs() < 1e-5 && (sc.spec.m[4] - step).abs() < 1e-5);
        // The target centre sits at 144 − shift · side/2 / step, inside ±0.4 · 144 · side/(side − 1).
        let [x1, y1, x2, y2] = sc.box_xyxy.map(|v| v as f64);
        let (ux, uy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        assert!(
            (ux - (144.0 - aug.shift[0] * side / 2.0 / step)).abs() < 1e-3,
            "{aug:?} {ux}"
        );
        assert!(
            (uy - (144.0 - aug.shift[1] * side / 2.0 / step)).abs() < 1e-3,
            "{aug:?} {uy}"
        );
        let reach = 0.4 * 144.0 * side / (side - 1.0) + 1e-3;
        assert!((ux - 144.0).abs() <= reach && (uy - 144.0).abs() <= reach);
        // Box size in crop pixels: (w − 1) / step.
        assert!(((x2 - x1) - (w - 1.0) / step).abs() < 1e-3);
        assert!(((y2 - y1) - (h - 1.0) / step).abs() < 1e-3);
        // The crop itself: x1 of the frame square.
        let left = cx + aug.shift[0] * side / 2.0 - (side - 1.0) / 2.0;
        assert!((sc.spec.m[2] - left).abs() < 1e-3, "{aug:?}");
        assert_eq!((sc.spec.m[1], sc.spec.m[3]), (0.0, 0.0));
    }
}

/// Two GOT-10k-layout sequences of noise PNGs and one still image, scanned.
fn image_datasets(root: &Path) -> Vec<(Arc<TrainDataset>, f64)> {
    got10k_fixture(&root.join("got"), 6);
    let got = data::scan(TrainKind::Got10k, &root.join("got"), None).unwrap();
    let c = root.join("coco");
    coco_fixture(
        &c,
        r#"{"images": [{"id": 1, "file_name": "s.png"}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [30, 12, 18, 25]}]}"#,
    );
    save_png(&c.join("train2017/s.png"), &noise(70, 50, 77));
    let coco = data::scan(TrainKind::Coco, &c, None).unwrap();
    vec![(Arc::new(got), 1.0), (Arc::new(coco), 1.0)]
}

#[test]
fn loader_order_is_independent_of_workers_and_reports_bad_frames() {
    let root = scratch("loader");
    let s = Arc::new(Sampler::new(image_datasets(&root), SamplerConfig::default(), 9).unwrap());
    let take = |workers| {
        let mut l = Loader::new(s.clone(), 5, workers, 2).unwrap();
        let v = l.next_batch(12).unwrap();
        assert_eq!(l.position(), 17);
        v
    };
    let (one, three) = (take(1), take(3));
    for (i, (a, b)) in one.iter().zip(&three).enumerate() {
        assert_eq!(a.pair, s.pair(5 + i as u64));
        assert_eq!(a.pair, b.pair);
        assert_eq!(a.geometry, b.geometry);
        assert_eq!(*a.search_image, *b.search_image);
        let want = image::open(&a.pair.search.path).unwrap().to_rgb8();
        assert_eq!(*a.search_image, want);
        assert_eq!(
            a.geometry.search.spec.border_rgb,
            sparsett::tracker::mean_colour(&want)
        );
    }
    assert!(one.iter().any(|p| p.pair.negative) && one.iter().any(|p| !p.pair.negative));
    assert!(Loader::new(s.clone(), 0, 0, 2).is_err());

    // A frame that does not decode: the error names it.
    std::fs::write(root.join("coco/train2017/s.png"), b"not a png").unwrap();
    let mut l = Loader::new(s.clone(), 0, 2, 1).unwrap();
    let e = (0..40)
        .map(|_| l.next_pair())
        .find_map(|r| r.err())
        .expect("the still image is drawn within 40 pairs")
        .to_string();
    assert!(e.contains("s.png: cannot decode the frame"), "{e}");
}

#[test]
fn gpu_batch_crop_equals_cpu_reference() {
    let root = scratch("batch");
    let s = Arc::new(Sampler::new(image_datasets(&root), SamplerConfig::default(), 11).unwrap());
    let gpu = sparsett::Gpu::new().expect("a Vulkan adapter (WGPU_BACKEND=vulkan, lavapipe)");
    let mut l = Loader::new(s, 0, 2, 2).unwrap();
    for b in [1usize, 3] {
        let pairs = l.next_batch(b).unwrap();
        let mut enc = gpu.encoder();
        let batch = loader::crop_batch(&mut enc, &pairs).unwrap();
        assert_eq!(batch.z.shape(), &[b, 3, 127, 127]);
        assert_eq!(batch.x.shape(), &[b, 3, 289, 289]);
        let got = enc.submit_read(&[&batch.z, &batch.x]).unwrap();
        let (z, x) = loader::cpu::crop_batch(&pairs);
        for (name, g, w) in [("z", &got[0], &z), ("x", &got[1], &x)] {
            assert_eq!(g.len(), w.len());
            let bad = g
                .iter()
                .zip(w.iter())
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                bad, 0,
                "batch {b} {name}: {bad} values differ from the CPU crop"
            );
        }
        let want_boxes: Vec<[f32; 4]> = pairs.iter().map(|p| p.geometry.search.box_xyxy).collect();
        assert_eq!(batch.boxes, want_boxes);
        assert_eq!(
            batch.negative,
            pairs.iter().map(|p| p.pair.negative).collect::<Vec<_>>()
        );
    }
    let mut enc = gpu.encoder();
    let e = err(loader::crop_batch(&mut enc, &[]).map(|_| ()));
    assert!(e.contains("crop_batch") && e.contains("no pairs"), "{e}");
}

fn resized(img: &RgbImage, b: [u32; 4]) -> RgbImage {
    synth::resize(img, b[2], b[3])
}

#[test]
fn synth_occlusion_and_distractors_keep_exact_ground_truth() {
    let bg = noise(160, 120, 1);
    let obj = noise(30, 24, 2);
    let occluder = noise(9, 9, 3);
    let spec = SynthSpec {
        frames: 24,
        object_size: (30, 24),
        max_step: 3.0,
        seed: 4,
        occlusion: true,
        distractors: 2,
        ..Default::default()
    };
    let plain = generate(
        &bg,
        &obj,
        &SynthSpec {
            occlusion: false,
            distractors: 0,
            ..spec.clone()
        },
    )
    .unwrap();
    let s = generate_scene(&bg, &obj, std::slice::from_ref(&occluder), &spec).unwrap();
    // The object's path does not depend on what is drawn around it.
    assert_eq!(plain.boxes, s.boxes);
    assert!(plain.occluders.iter().all(Option::is_none));
    assert!(plain.cover.iter().all(|&c| c == 8) && plain.absent.iter().all(|&a| !a));
    let mirrored = image::imageops::flip_horizontal(&obj);
    let (mut partial, mut clear) = (0, 0);
    for i in 0..spec.frames {
        let (f, b) = (&s.frames[i], s.boxes[i]);
        let occ = s.occluders[i].expect("an occluder every frame");
        let obj_px = resized(&obj, b);
        let (qw, qh) = (15u32, 36u32);
        // Every box pixel is the object, except where the occluder lies over it.
        let inside = |r: [u32; 4], x: u32, y: u32| {
            x >= r[0] && x < r[0] + r[2] && y >= r[1] && y < r[1] + r[3]
        };
        let mut covered = 0u64;
        for y in b[1]..b[1] + b[3] {
            for x in b[0]..b[0] + b[2] {
                if inside(occ, x, y) {
                    covered += 1;
                } else {
                    assert_eq!(
                        f.get_pixel(x, y),
                        obj_px.get_pixel(x - b[0], y - b[1]),
                        "frame {i} ({x},{y})"
                    );
                }
            }
        }
        // The occluder is drawn where it says (its un-clipped origin is the clip's, or off-frame).
        let occ_px = synth::resize(&occluder, qw, qh);
        let ox = if occ[0] == 0 {
            occ[2] as i64 - qw as i64
        } else {
            occ[0] as i64
        };
        let oy = if occ[1] == 0 {
            occ[3] as i64 - qh as i64
        } else {
            occ[1] as i64
        };
        for y in occ[1]..occ[1] + occ[3] {
            for x in occ[0]..occ[0] + occ[2] {
                let p = occ_px.get_pixel((x as i64 - ox) as u32, (y as i64 - oy) as u32);
                assert_eq!(f.get_pixel(x, y), p, "frame {i} occluder ({x},{y})");
            }
        }
        let area = b[2] as u64 * b[3] as u64;
        let want_cover = if covered == 0 {
            8
        } else {
            ((8 * (area - covered)) / area).max(1) as u8
        };
        assert_eq!(s.cover[i], want_cover, "frame {i}");
        assert!(
            covered < area,
            "the occluder (15 px wide) never hides a 30 px object"
        );
        assert!(!s.absent[i]);
        if covered > 0 {
            partial += 1;
        } else {
            clear += 1;
        }
        // Distractors: the mirrored object, object-sized, near the object, visible outside it.
        assert_eq!(s.distractors[i].len(), 2);
        for d in &s.distractors[i] {
            assert_eq!((d[2], d[3]), (b[2], b[3]));
            let dist =
                ((d[0] as f64 - b[0] as f64).powi(2) + (d[1] as f64 - b[1] as f64).powi(2)).sqrt();
            assert!(
                dist <= 1.3 * 30.0 * 1.3 + 4.0,
                "frame {i}: distractor {dist} px away"
            );
            let mp = resized(&mirrored, *d);
            for y in d[1]..d[1] + d[3] {
                for x in d[0]..d[0] + d[2] {
                    if !inside(b, x, y)
                        && !inside(occ, x, y)
                        && !s.distractors[i].iter().any(|o| o != d && inside(*o, x, y))
                    {
                        assert_eq!(f.get_pixel(x, y), mp.get_pixel(x - d[0], y - d[1]));
                    }
                }
            }
        }
    }
    assert!(
        partial >= 2 && clear >= 2,
        "partial {partial}, clear {clear}"
    );

    // GOT-10k files: labels read back consistently by the readers.
    let root = scratch("synth");
    let dir = root.join("val/synth-1");
    write(&root.join("val/list.txt"), "synth-1\n");
    synth::write_got10k(&dir, &s, true).unwrap();
    let ds = data::scan(TrainKind::Got10k, &root, Some("val")).unwrap();
    let seq = &ds.sequences[0];
    let want: Vec<[f64; 4]> = s.boxes.iter().map(|b| b.map(f64::from)).collect();
    assert_eq!(seq.boxes, want);
    assert_eq!(seq.absent, s.absent);
    let ev = sparsett::eval::open_dataset(sparsett::eval::DatasetKind::Got10k, &root, Some("val"))
        .unwrap();
    let ev = ev.into_iter().next().unwrap().unwrap();
    assert_eq!(ev.cover.as_deref(), Some(&s.cover[..]));
    let png = image::open(dir.join("00000005.png")).unwrap().to_rgb8();
    assert_eq!(png, s.frames[4]);
}

#[test]
fn synth_cover_levels() {
    assert_eq!(synth::cover_level(0, 100), 8);
    assert_eq!(synth::cover_level(100, 100), 0);
    assert_eq!(synth::cover_level(99, 100), 1);
    assert_eq!(synth::cover_level(13, 100), 6);
    assert_eq!(synth::overlap_area([0, 0, 10, 10], [5, 5, 10, 10]), 25);
    assert_eq!(synth::overlap_area([0, 0, 10, 10], [10, 0, 10, 10]), 0);
}

/// Measurement, not a check (run with `--ignored --nocapture`): pairs per second from the loader
/// on 640×480 JPEG frames with 1 and 2 workers, and the GPU batch crop of 8 pairs.
#[test]
#[ignore]
fn measure_loader_throughput() {
    let root = scratch("measure");
    let d = root.join("train/seq");
    write(&root.join("train/list.txt"), "seq\n");
    std::fs::create_dir_all(&d).unwrap();
    let bg = noise(640, 480, 1);
    let mut gt = String::new();
    for i in 0..30u32 {
        let mut f = bg.clone();
        image::imageops::replace(&mut f, &noise(80, 60, 2), 100 + 5 * i as i64, 150);
        f.save(d.join(format!("{:08}.jpg", i + 1))).unwrap();
        gt += &format!("{},150,80,60\n", 100 + 5 * i);
    }
    write(&d.join("groundtruth.txt"), &gt);
    let ds = Arc::new(data::scan(TrainKind::Got10k, &root, None).unwrap());
    let mut other = (*ds).clone();
    other.sequences[0].name = "copy".into();
    let s = Arc::new(
        Sampler::new(
            vec![(ds, 1.0), (Arc::new(other), 1.0)],
            SamplerConfig::default(),
            0,
        )
        .unwrap(),
    );
    for workers in [1, 2] {
        let mut l = Loader::new(s.clone(), 0, workers, 4).unwrap();
        l.next_batch(4).unwrap();
        let t = std::time::Instant::now();
        let n = 64;
        l.next_batch(n).unwrap();
        let dt = t.elapsed().as_secs_f64();
        println!("loader, {workers} worker(s): {:.1} pairs/s", n as f64 / dt);
    }
    let gpu = sparsett::Gpu::new().unwrap();
    let pairs = Loader::new(s, 0, 2, 4).unwrap().next_batch(8).unwrap();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let mut enc = gpu.encoder();
        let b = loader::crop_batch(&mut enc, &pairs).unwrap();
        enc.submit_read(&[&b.z]).unwrap();
        println!(
            "GPU batch crop of 8 pairs (upload + crop + read back): {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    // The parts: one frame upload; one crop of an uploaded frame.
    let img = &pairs[0].search_image;
    let t = std::time::Instant::now();
    let f = sparsett::ops::crop::upload_frame(&gpu, img.as_raw(), 640, 480).unwrap();
    gpu.read_u32(&f.tensor).unwrap();
    println!(
        "one 640×480 upload: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    for out in [127, 289, 127, 289] {
        let t = std::time::Instant::now();
        let mut enc = gpu.encoder();
        let spec = pairs[0].geometry.search.spec;
        let c = sparsett::ops::crop::crop(&mut enc, &f, &[spec], out, [0.0; 3], [1.0; 3]).unwrap();
        enc.submit_read(&[&c]).unwrap();
        println!(
            "one crop to {out}: {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Measurement, not a check (run with `--ignored --nocapture`): scan vs index-cache load of a
/// GOT-10k-layout folder of 300 sequences × 100 frames (empty frame files).
#[test]
#[ignore]
fn measure_index_cache() {
    let root = scratch("measure-index");
    let mut list = String::new();
    for k in 0..300 {
        let name = format!("GOT-10k_Train_{k:06}");
        list += &format!("{name}\n");
        let d = root.join("train").join(&name);
        std::fs::create_dir_all(&d).unwrap();
        let mut gt = String::new();
        for i in 0..100 {
            std::fs::write(d.join(format!("{:08}.jpg", i + 1)), b"").unwrap();
            gt += &format!("{}.5,{}.25,40.75,30.5\n", i, k);
        }
        write(&d.join("groundtruth.txt"), &gt);
    }
    write(&root.join("train/list.txt"), &list);
    let t = std::time::Instant::now();
    let (a, st) = load_indexed(TrainKind::Got10k, &root, None, None).unwrap();
    println!(
        "first load (scan + index write): {:.1} ms {st:?}",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = std::time::Instant::now();
    let (b, st) = load_indexed(TrainKind::Got10k, &root, None, None).unwrap();
    println!(
        "second load (index): {:.1} ms {st:?}",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(a, b);
    let t = std::time::Instant::now();
    data::scan(TrainKind::Got10k, &root, None).unwrap();
    println!("scan alone: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
}
