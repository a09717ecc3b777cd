//! The `sparsett` command line end to end, as a subprocess, on generated sequences: a real photo
//! patch (a cat, from the golden negative pair) moving over a real background (the golden frame).
//! They run the built-in demo model and check the pipeline and the files it writes; its tracking
//! quality is tests/demo_model.rs's business.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sparsett::synth::{generate, write_got10k, SynthSpec};
use sparsett::tracker::Preset;

#[path = "support/golden.rs"]
mod golden;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sparsett-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sequence(dir: &Path, frames: usize, seed: u64) -> Vec<[u32; 4]> {
    let (bg, obj) = golden::photos();
    let s = generate(
        &bg,
        &obj,
        &SynthSpec {
            frames,
            object_size: (56, 48),
            seed,
            ..Default::default()
        },
    )
    .unwrap();
    write_got10k(dir, &s, true).unwrap();
    s.boxes
}

fn sparsett(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsett"))
        .args(args)
        .env(
            "WGPU_BACKEND",
            std::env::var("WGPU_BACKEND").unwrap_or("vulkan".into()),
        )
        .output()
        .expect("the sparsett binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn boxes(path: &Path) -> Vec<[f32; 4]> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Vec<f32> = l.split(',').map(|s| s.parse().unwrap()).collect();
            v.try_into().unwrap()
        })
        .collect()
}

#[test]
fn track_writes_boxes_and_rendered_frames() {
    let d = scratch("track");
    let seq = d.join("seq");
    let gt = sequence(&seq, 3, 7);
    let init = gt[0].map(|v| v.to_string()).join(",");
    let out = d.join("boxes.txt");
    let render = d.join("render/");
    let o = sparsett(&[
        "track",
        "--video",
        seq.to_str().unwrap(),
        "--init",
        &init,
        "--out",
        out.to_str().unwrap(),
        "--render",
        &format!("{}/", render.display()),
        "--quiet",
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "stdout {so}\nstderr {se}");
    let b = boxes(&out);
    assert_eq!(b.len(), 3, "one line per frame");
    assert_eq!(
        b[0],
        gt[0].map(|v| v as f32),
        "the first line is the init box"
    );
    // The tracker clamps the centre into the frame and the size into [10, frame side].
    for r in &b[1..] {
        let (cx, cy) = (r[0] + (r[2] - 1.0) / 2.0, r[1] + (r[3] - 1.0) / 2.0);
        assert!(
            (0.0..=400.0).contains(&cx) && (0.0..=320.0).contains(&cy),
            "{r:?}"
        );
        assert!(
            (10.0..=400.0).contains(&r[2]) && (10.0..=320.0).contains(&r[3]),
            "{r:?}"
        );
    }
    let frames: Vec<_> = std::fs::read_dir(&render).unwrap().collect();
    assert_eq!(frames.len(), 3, "one rendered frame per input frame");
    // The first rendered frame shows the init box outline in the first palette colour.
    let first = image::open(render.join("00000001.jpg"))
        .unwrap()
        .into_rgb8();
    assert_eq!(first.dimensions(), (400, 320));
    let src = image::open(seq.join("00000001.png")).unwrap().into_rgb8();
    let [x, y, _, h] = gt[0];
    let diff = |a: &image::Rgb<u8>, b: &image::Rgb<u8>| {
        a.0.iter()
            .zip(b.0)
            .map(|(p, q)| p.abs_diff(q) as u32)
            .sum::<u32>()
    };
    let on_edge = diff(first.get_pixel(x, y + h / 2), src.get_pixel(x, y + h / 2));
    assert!(
        on_edge > 60,
        "box outline not drawn (colour change {on_edge})"
    );
}

#[test]
fn eval_tracks_skips_broken_scores_and_resumes() {
    let d = scratch("eval");
    let root = d.join("got10k");
    let mut gts = Vec::new();
    for (name, seed) in [("seq_a", 1u64), ("seq_b", 2)] {
        gts.push((name, sequence(&root.join(name), 3, seed)));
    }
    // A broken sequence: frames without ground truth.
    sequence(&root.join("seq_broken"), 3, 3);
    std::fs::remove_file(root.join("seq_broken/groundtruth.txt")).unwrap();
    std::fs::write(root.join("list.txt"), "seq_a\nseq_b\nseq_broken\n").unwrap();
    let ours = d.join("results/ours");
    let args = [
        "eval",
        "--dataset",
        "got10k",
        "--root",
        root.to_str().unwrap(),
        "--results",
        ours.to_str().unwrap(),
    ];
    let o = sparsett(&args);
    let (so, se) = text(&o);
    assert!(o.status.success(), "stdout {so}\nstderr {se}");
    assert!(
        se.contains("seq_broken") && se.contains("groundtruth.txt"),
        "{se}"
    );
    for (name, gt) in &gts {
        let r = boxes(&ours.join(name).join(format!("{name}_001.txt")));
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], gt[0].map(|v| v as f32));
    }
    assert!(ours.join("success.png").is_file());

    // A perfect "tracker" (the ground truth as results) scores AO = 1 next to ours.
    let perfect = d.join("results/perfect");
    for (name, gt) in &gts {
        let dir = perfect.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let t: String = gt
            .iter()
            .map(|b| format!("{},{},{},{}\n", b[0], b[1], b[2], b[3]))
            .collect();
        std::fs::write(dir.join(format!("{name}_001.txt")), t).unwrap();
    }
    // Scored together with the static baseline, which the same run writes: every frame gets the
    // first ground-truth box, scored in its own row.
    let stay = d.join("results/static");
    let o = sparsett(&[
        "eval",
        "--dataset",
        "got10k",
        "--root",
        root.to_str().unwrap(),
        "--results",
        ours.to_str().unwrap(),
        "--results",
        perfect.to_str().unwrap(),
        "--score-only",
        "--static-baseline",
        stay.to_str().unwrap(),
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "stdout {so}\nstderr {se}");
    let row = so
        .lines()
        .find(|l| l.trim_start().starts_with("perfect"))
        .unwrap_or_else(|| panic!("no row for 'perfect' in\n{so}"));
    // The table is in percent: AO, SR0.5 and SR0.75 all 100.
    assert!(
        row.contains("100.00  100.00  100.00"),
        "perfect AO must be 1: {row}"
    );
    assert!(
        so.lines().any(|l| l.trim_start().starts_with("ours")),
        "{so}"
    );

    for (name, gt) in &gts {
        let r = boxes(&stay.join(name).join(format!("{name}_001.txt")));
        assert_eq!(r.len(), gt.len(), "one box per frame");
        let first = gt[0].map(|v| v as f32);
        assert!(r.iter().all(|b| *b == first), "{name}: {r:?}");
    }
    assert!(
        so.lines().any(|l| l.trim_start().starts_with("static")),
        "no row for the static baseline in\n{so}"
    );

    // Resuming: every good sequence already has results, so nothing is tracked again.
    let o = sparsett(&args);
    let (so, se) = text(&o);
    assert!(o.status.success(), "stdout {so}\nstderr {se}");
    assert!(se.contains("2 already have results"), "{se}");
}

#[test]
fn bad_input_gives_one_clear_line() {
    let d = scratch("bad");
    let seq = d.join("seq");
    sequence(&seq, 2, 5);
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let junk = d.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint at all").unwrap();
    let missing = d.join("nope.mp4");
    let s = seq.to_str().unwrap();
    for (args, words) in [
        (
            vec![
                "track",
                "--video",
                missing.to_str().unwrap(),
                "--init",
                "1,1,5,5",
            ],
            "nope.mp4",
        ),
        (
            vec![
                "track",
                "--video",
                empty.to_str().unwrap(),
                "--init",
                "1,1,5,5",
            ],
            "no JPEG or PNG",
        ),
        (
            vec!["track", "--video", s, "--init", "500,10,20,20"],
            "outside the 400×320 frame",
        ),
        (vec!["track", "--video", s, "--init", "10,10,0,20"], "empty"),
        (vec!["track", "--video", s, "--init", "10,10,20"], "x,y,w,h"),
        (
            vec![
                "track",
                "--video",
                s,
                "--init",
                "10,10,20,20",
                "--weights",
                junk.to_str().unwrap(),
            ],
            "junk.safetensors",
        ),
        (
            vec![
                "track",
                "--video",
                s,
                "--init",
                "10,10,20,20",
                "--preset",
                "vot",
            ],
            "got10k",
        ),
        (
            vec!["eval", "--dataset", "vot", "--root", s, "--results", s],
            "got10k",
        ),
        (
            vec![
                "eval",
                "--dataset",
                "otb",
                "--root",
                missing.to_str().unwrap(),
                "--results",
                s,
            ],
            "nope.mp4",
        ),
    ] {
        let o = sparsett(&args);
        let (_, se) = text(&o);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(se.contains(words), "{args:?}: expected {words:?} in\n{se}");
        assert!(!se.contains("panicked"), "{args:?} panicked:\n{se}");
    }
}

#[test]
fn synth_writes_a_dataset_the_readers_accept() {
    let dir = scratch("synth");
    let (bg, obj) = golden::photos();
    let (a, b) = (dir.join("bg.png"), dir.join("obj.png"));
    bg.save(&a).unwrap();
    obj.save(&b).unwrap();
    let out = dir.join("train");
    let o = sparsett(&[
        "synth",
        "--image",
        a.to_str().unwrap(),
        "--image",
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--sequences",
        "3",
        "--frames",
        "5",
        "--seed",
        "7",
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}{se}");
    let list = std::fs::read_to_string(out.join("list.txt")).unwrap();
    let names: Vec<&str> = list.lines().collect();
    assert_eq!(names.len(), 3);
    for n in &names {
        let gt = std::fs::read_to_string(out.join(n).join("groundtruth.txt")).unwrap();
        assert_eq!(gt.lines().count(), 5, "{n}");
        assert!(out.join(n).join("00000005.jpg").is_file(), "{n}");
    }
    // The training reader takes it as the GOT-10k train split.
    let ds = sparsett::data::scan(sparsett::data::TrainKind::Got10k, &dir, Some("train")).unwrap();
    assert_eq!(ds.frame_count(), 15);

    // No photo at all: one clear line.
    let o = sparsett(&["synth", "--out", out.to_str().unwrap()]);
    let (_, se) = text(&o);
    assert!(!o.status.success());
    assert!(se.contains("--image"), "{se}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench train` on the tiny configuration with the official neck dropout: the step runs (the
/// neck's attentions on the dense path) and prints its three timings; a probability outside
/// [0, 1) is one clear line.
#[test]
fn bench_train_with_neck_dropout() {
    let d = scratch("bench-train");
    let w = d.join("tiny.safetensors");
    let o = sparsett(&[
        "init-weights",
        "--config",
        "tiny",
        "--out",
        w.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let ws = w.to_str().unwrap();
    let o = sparsett(&[
        "bench",
        "train",
        "--weights",
        ws,
        "--batch",
        "2",
        "--iters",
        "1",
        "--neck-dropout",
        "0.1",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("neck dropout 0.1"), "{out}");
    for part in ["forward + losses", "backward", "optimizer"] {
        assert!(out.contains(part), "{part} missing:\n{out}");
    }
    let o = sparsett(&["bench", "train", "--weights", ws, "--neck-dropout", "1.5"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("--neck-dropout") && err.contains("[0, 1)"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// `convert --preset` stores tracker hyper-parameters with the weights; `track` then uses them
/// unless `--preset` asks for another; a bad preset is one clear line.
#[test]
fn convert_stores_a_preset_that_track_uses() {
    let d = scratch("preset");
    let seq = d.join("seq");
    let gt = sequence(&seq, 2, 3);
    let init = gt[0].map(|v| v.to_string()).join(",");
    let raw = d.join("tiny.safetensors");
    let o = sparsett(&[
        "init-weights",
        "--config",
        "tiny",
        "--out",
        raw.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let tuned = d.join("tuned.safetensors");
    let o = sparsett(&[
        "convert",
        raw.to_str().unwrap(),
        tuned.to_str().unwrap(),
        "--preset",
        "otb,window_influence=0.55",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("window_influence=0.55"), "{out}");
    let track = |weights: &Path, preset: Option<&str>| {
        let mut args = vec![
            "track",
            "--video",
            seq.to_str().unwrap(),
            "--init",
            &init,
            "--weights",
            weights.to_str().unwrap(),
        ];
        if let Some(p) = preset {
            args.extend(["--preset", p]);
        }
        let o = sparsett(&args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        err.lines()
            .find(|l| l.starts_with("preset:"))
            .unwrap_or_else(|| panic!("no preset line in\n{err}"))
            .to_string()
    };
    let line = track(&tuned, None);
    assert!(
        line.contains("weights") && line.contains("window_influence 0.55"),
        "{line}"
    );
    assert!(
        line.contains(&format!("test_lr {}", Preset::OTB.test_lr)),
        "{line}"
    );
    assert!(track(&tuned, Some("uav")).contains("uav"), "--preset wins");
    assert!(
        track(&raw, None).contains("got10k"),
        "no stored preset: got10k"
    );
    let o = sparsett(&[
        "convert",
        raw.to_str().unwrap(),
        tuned.to_str().unwrap(),
        "--preset",
        "test_lr=9",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("test_lr") && err.contains("outside"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
