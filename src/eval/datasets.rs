//! Benchmark datasets in the folder layouts the public toolkits (got10k-toolkit, pytracking, the
//! LaSOT / OTB MATLAB toolkits) read.
//!
//! [`open_dataset`] returns an outer error when the root itself is unusable (missing folder, no
//! sequence list) and one inner result per sequence, so that an evaluation can report a broken
//! sequence and go on with the others. Every error names the file, and the line where one is at fault.
//!
//! Sequence names are the ones result files carry: GOT-10k and LaSOT folder names, TrackingNet and
//! UAV123 annotation file stems (`bike1`, `bird1_1`; pytracking prefixes `uav_`), OTB folder names
//! with `_1` / `_2` for the two-target sequences (`Jogging_1`, as pytracking). Known departures
//! from some toolkit: OTB frame ranges are applied only for the five sequences whose folders hold
//! extra images (David, Football1, Freeman3, Freeman4, Diving); pytracking's skipping of Tiger1's
//! first 5 frames (`initOmit`) is not applied.

use std::cmp::Ordering;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{parse_boxes, parse_labels, read_text};
use crate::{Error, Result};

/// The benchmarks `sparsett eval` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    Got10k,
    Lasot,
    TrackingNet,
    Otb,
    Uav123,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::Got10k,
        DatasetKind::Lasot,
        DatasetKind::TrackingNet,
        DatasetKind::Otb,
        DatasetKind::Uav123,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Got10k => "got10k",
            DatasetKind::Lasot => "lasot",
            DatasetKind::TrackingNet => "trackingnet",
            DatasetKind::Otb => "otb",
            DatasetKind::Uav123 => "uav123",
        }
    }

    /// The name papers use, for titles.
    pub fn title(self) -> &'static str {
        match self {
            DatasetKind::Got10k => "GOT-10k",
            DatasetKind::Lasot => "LaSOT",
            DatasetKind::TrackingNet => "TrackingNet",
            DatasetKind::Otb => "OTB",
            DatasetKind::Uav123 => "UAV123",
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let k = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        Ok(match k.as_str() {
            "got10k" => DatasetKind::Got10k,
            "lasot" => DatasetKind::Lasot,
            "trackingnet" => DatasetKind::TrackingNet,
            "otb" | "otb100" | "otb2015" => DatasetKind::Otb,
            "uav123" | "uav" => DatasetKind::Uav123,
            _ => {
                let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
                return Err(Error::Other(format!(
                    "unknown dataset '{s}': expected one of {}",
                    names.join(", ")
                )));
            }
        })
    }
}

/// One annotated video.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequence {
    /// The name result files are written under (`SEQ.txt`, `SEQ/SEQ_001.txt`).
    pub name: String,
    /// Frame files in playback order.
    pub frames: Vec<PathBuf>,
    /// Ground truth `x, y, w, h` (0-based pixels as the files give them), one row per frame; NaN rows
    /// where the dataset has no box. Test splits without public annotations (GOT-10k test,
    /// TrackingNet TEST) hold only the first frame's box.
    pub gt: Vec<[f64; 4]>,
    /// Frames where the target is not visible (LaSOT: full occlusion or out of view; GOT-10k:
    /// `absence.label`), when the dataset says so.
    pub absent: Option<Vec<bool>>,
    /// GOT-10k's `cover.label` (0 = invisible … 8 = fully visible), when present.
    pub cover: Option<Vec<u8>>,
}

impl Sequence {
    /// The box the tracker is initialised with.
    pub fn init_box(&self) -> [f64; 4] {
        self.gt[0]
    }

    /// Whether every frame has ground truth (false on test splits that give only the first box).
    pub fn fully_annotated(&self) -> bool {
        self.gt.len() == self.frames.len()
    }
}

/// `(width, height)` of the sequence's first frame, read from the file header only.
pub fn frame_size(seq: &Sequence) -> Result<(u32, u32)> {
    let first = seq
        .frames
        .first()
        .ok_or_else(|| Error::Other(format!("{}: no frames", seq.name)))?;
    image::image_dimensions(first).map_err(|e| Error::Other(format!("{}: {e}", first.display())))
}

/// Open a dataset under `root`.
///
/// `split`: GOT-10k `val` (default) / `test` / `train` (or `root` itself when it holds `list.txt`);
/// LaSOT `test` (the sequences of `root/testing_set.txt`; the default when that file exists) or
/// `all`; TrackingNet `TEST` (default) or `TRAIN_0` … `TRAIN_11`; OTB and UAV123 have no split.
pub fn open_dataset(
    kind: DatasetKind,
    root: &Path,
    split: Option<&str>,
) -> Result<Vec<Result<Sequence>>> {
    if !root.is_dir() {
        return Err(Error::Other(format!(
            "{}: the {} root folder does not exist",
            root.display(),
            kind.title()
        )));
    }
    let seqs = match kind {
        DatasetKind::Got10k => open_got10k(root, split)?,
        DatasetKind::Lasot => open_lasot(root, split)?,
        DatasetKind::TrackingNet => open_trackingnet(root, split)?,
        DatasetKind::Otb => {
            no_split(kind, split)?;
            open_otb(root)?
        }
        DatasetKind::Uav123 => {
            no_split(kind, split)?;
            open_uav123(root)?
        }
    };
    if seqs.is_empty() {
        return Err(Error::Other(format!(
            "{}: no {} sequences found",
            root.display(),
            kind.title()
        )));
    }
    Ok(seqs)
}

fn no_split(kind: DatasetKind, split: Option<&str>) -> Result<()> {
    match split {
        None => Ok(()),
        Some(s) => Err(Error::Other(format!(
            "{} has no splits (got '{s}')",
            kind.title()
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// GOT-10k: SPLIT/list.txt, SPLIT/SEQ/{00000001.jpg…, groundtruth.txt, absence.label, cover.label}

fn open_got10k(root: &Path, split: Option<&str>) -> Result<Vec<Result<Sequence>>> {
    let dir = match split {
        Some(s) => {
            if !["val", "test", "train"].contains(&s) {
                return Err(Error::Other(format!(
                    "GOT-10k split '{s}': expected val, test or train"
                )));
            }
            root.join(s)
        }
        None if root.join("list.txt").is_file() => root.to_path_buf(),
        None => root.join("val"),
    };
    let list = dir.join("list.txt");
    if !list.is_file() {
        return Err(Error::Other(format!(
            "{}: missing (GOT-10k expects ROOT/val/list.txt, ROOT/test/list.txt or ROOT/list.txt)",
            list.display()
        )));
    }
    let names = read_list(&list)?;
    Ok(names
        .into_iter()
        .map(|name| {
            let d = dir.join(&name);
            got10k_sequence(name, &d)
        })
        .collect())
}

fn got10k_sequence(name: String, dir: &Path) -> Result<Sequence> {
    let frames = list_images(dir)?;
    let gt_path = dir.join("groundtruth.txt");
    let gt = parse_boxes(&gt_path, &read_text(&gt_path)?)?;
    let absent = read_labels(&dir.join("absence.label"), 1)?
        .map(|v| v.into_iter().map(|l| l != 0).collect());
    let cover =
        read_labels(&dir.join("cover.label"), 8)?.map(|v| v.into_iter().map(|l| l as u8).collect());
    // The test split gives only the first box (the rest is kept on the evaluation server).
    finish(name, frames, gt, &gt_path, true, absent, cover)
}

// ---------------------------------------------------------------------------------------------
// LaSOT: CLASS/CLASS-N/{img/*.jpg, groundtruth.txt, full_occlusion.txt, out_of_view.txt}

fn open_lasot(root: &Path, split: Option<&str>) -> Result<Vec<Result<Sequence>>> {
    let list = root.join("testing_set.txt");
    let use_list = match split {
        None => list.is_file(),
        Some("test") => {
            if !list.is_file() {
                return Err(Error::Other(format!(
                    "{}: missing (the LaSOT test split is the 280 sequences this file lists)",
                    list.display()
                )));
            }
            true
        }
        Some("all") => false,
        Some(s) => {
            return Err(Error::Other(format!(
                "LaSOT split '{s}': expected test or all"
            )))
        }
    };
    let dirs: Vec<(String, PathBuf)> = if use_list {
        read_list(&list)?
            .into_iter()
            .map(|name| {
                // "airplane-1" lives in "airplane/airplane-1"; the test-only download keeps the
                // sequence folders directly under the root.
                let class = name.rsplit_once('-').map_or(name.as_str(), |(c, _)| c);
                let nested = root.join(class).join(&name);
                let d = if nested.is_dir() || !root.join(&name).is_dir() {
                    nested
                } else {
                    root.join(&name)
                };
                (name, d)
            })
            .collect()
    } else {
        let mut out = Vec::new();
        for class in subdirs(root)? {
            let cdir = root.join(&class);
            for seq in subdirs(&cdir)? {
                if seq.starts_with(&format!("{class}-")) {
                    out.push((seq.clone(), cdir.join(&seq)));
                }
            }
        }
        out
    };
    Ok(dirs
        .into_iter()
        .map(|(name, d)| lasot_sequence(name, &d))
        .collect())
}

fn lasot_sequence(name: String, dir: &Path) -> Result<Sequence> {
    let frames = list_images(&dir.join("img"))?;
    let gt_path = dir.join("groundtruth.txt");
    let gt = parse_boxes(&gt_path, &read_text(&gt_path)?)?;
    let occ = read_labels(&dir.join("full_occlusion.txt"), 1)?;
    let oov = read_labels(&dir.join("out_of_view.txt"), 1)?;
    // The toolkits treat a frame as absent when it is fully occluded or out of view; the lengths are
    // checked against the frame count in `finish`.
    let absent = match (occ, oov) {
        (None, None) => None,
        (Some(a), None) | (None, Some(a)) => Some(a.into_iter().map(|v| v != 0).collect()),
        (Some(a), Some(b)) => {
            if a.len() != b.len() {
                return Err(Error::Other(format!(
                    "{name}: full_occlusion.txt has {} values but out_of_view.txt has {}",
                    a.len(),
                    b.len()
                )));
            }
            Some(a.iter().zip(&b).map(|(x, y)| *x != 0 || *y != 0).collect())
        }
    };
    finish(name, frames, gt, &gt_path, false, absent, None)
}

// ---------------------------------------------------------------------------------------------
// TrackingNet: SPLIT/frames/SEQ/N.jpg, SPLIT/anno/SEQ.txt

fn open_trackingnet(root: &Path, split: Option<&str>) -> Result<Vec<Result<Sequence>>> {
    let split = split.unwrap_or("TEST");
    let base = root.join(split);
    let anno = base.join("anno");
    if !anno.is_dir() {
        return Err(Error::Other(format!(
            "{}: missing (TrackingNet expects ROOT/{split}/anno/SEQ.txt and ROOT/{split}/frames/SEQ/)",
            anno.display()
        )));
    }
    let mut files = files_with_ext(&anno, "txt")?;
    files.sort_by(|a, b| natural_cmp(a, b));
    Ok(files
        .into_iter()
        .map(|f| {
            let name = f.trim_end_matches(".txt").to_string();
            let gt_path = anno.join(&f);
            let frames_dir = base.join("frames").join(&name);
            (|| {
                let frames = list_images(&frames_dir)?;
                let gt = parse_boxes(&gt_path, &read_text(&gt_path)?)?;
                // TEST annotations hold only the first box.
                finish(name.clone(), frames, gt, &gt_path, true, None, None)
            })()
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// OTB: SEQ/{img/*.jpg, groundtruth_rect.txt}

/// OTB sequences whose image folder holds more frames than the ground truth: the benchmark's
/// configuration evaluates only this 1-based inclusive frame range (as got10k-toolkit and pytracking do).
const OTB_RANGES: [(&str, usize, usize); 5] = [
    ("David", 300, 770),
    ("Football1", 1, 74),
    ("Freeman3", 1, 460),
    ("Freeman4", 1, 283),
    ("Diving", 1, 215),
];

fn open_otb(root: &Path) -> Result<Vec<Result<Sequence>>> {
    let mut out = Vec::new();
    for dir_name in subdirs(root)? {
        let dir = root.join(&dir_name);
        let mut annos: Vec<String> = files_with_ext(&dir, "txt")?
            .into_iter()
            .filter(|f| f.starts_with("groundtruth_rect"))
            .collect();
        annos.sort_by(|a, b| natural_cmp(a, b));
        for anno in annos {
            let gt_path = dir.join(&anno);
            // Two-target sequences (Jogging, Skating2) have groundtruth_rect.1.txt and .2.txt;
            // pytracking names them Jogging_1, Jogging_2.
            let name = match anno
                .strip_prefix("groundtruth_rect.")
                .and_then(|s| s.strip_suffix(".txt"))
            {
                Some(n) => format!("{dir_name}_{n}"),
                None => dir_name.clone(),
            };
            let text = match read_text(&gt_path) {
                Ok(t) => t,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            // OTB ships some empty annotation files (Human4's groundtruth_rect.1.txt); the toolkits
            // skip them.
            if text.trim().is_empty() {
                continue;
            }
            out.push((|| {
                let mut frames = list_images(&dir.join("img"))?;
                let gt = parse_boxes(&gt_path, &text)?;
                if frames.len() > gt.len() {
                    if let Some(&(_, a, b)) = OTB_RANGES.iter().find(|r| r.0 == dir_name) {
                        if frames.len() >= b {
                            frames = frames[a - 1..b].to_vec();
                        }
                    }
                }
                finish(name.clone(), frames, gt, &gt_path, false, None, None)
            })());
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// UAV123: data_seq/UAV123/SEQ/*.jpg, anno/UAV123/SEQ.txt

/// UAV123 annotation files that cover only part of a shared image folder: (annotation name, folder,
/// first frame, last frame), 1-based inclusive, from the benchmark's `configSeqs` (the same numbers
/// pytracking's `uavdataset.py` uses). Every other annotation file `SEQ.txt` covers all of `SEQ/`.
const UAV123_SUBSEQS: &[(&str, &str, usize, usize)] = &[
    ("bird1_1", "bird1", 1, 253),
    ("bird1_2", "bird1", 775, 1477),
    ("bird1_3", "bird1", 1573, 2437),
    ("car1_1", "car1", 1, 751),
    ("car1_2", "car1", 751, 1627),
    ("car1_3", "car1", 1627, 2629),
    ("car16_1", "car16", 1, 415),
    ("car16_2", "car16", 415, 1993),
    ("car6_1", "car6", 1, 487),
    ("car6_2", "car6", 487, 1807),
    ("car6_3", "car6", 1807, 2953),
    ("car6_4", "car6", 2953, 3925),
    ("car6_5", "car6", 3925, 4861),
    ("car8_1", "car8", 1, 1357),
    ("car8_2", "car8", 1357, 2575),
    ("group1_1", "group1", 1, 1333),
    ("group1_2", "group1", 1333, 2515),
    ("group1_3", "group1", 2515, 3925),
    ("group1_4", "group1", 3925, 4873),
    ("group2_1", "group2", 1, 907),
    ("group2_2", "group2", 907, 1771),
    ("group2_3", "group2", 1771, 2683),
    ("group3_1", "group3", 1, 1567),
    ("group3_2", "group3", 1567, 2827),
    ("group3_3", "group3", 2827, 4369),
    ("group3_4", "group3", 4369, 5527),
    ("person12_1", "person12", 1, 601),
    ("person12_2", "person12", 601, 1621),
    ("person14_1", "person14", 1, 847),
    ("person14_2", "person14", 847, 1813),
    ("person14_3", "person14", 1813, 2923),
    ("person17_1", "person17", 1, 1501),
    ("person17_2", "person17", 1501, 2347),
    ("person19_1", "person19", 1, 1243),
    ("person19_2", "person19", 1243, 2791),
    ("person19_3", "person19", 2791, 4357),
    ("person2_1", "person2", 1, 1189),
    ("person2_2", "person2", 1189, 2623),
    ("person4_1", "person4", 1, 1501),
    ("person4_2", "person4", 1501, 2743),
    ("person5_1", "person5", 1, 877),
    ("person5_2", "person5", 877, 2101),
    ("person7_1", "person7", 1, 1249),
    ("person7_2", "person7", 1249, 2065),
    ("person8_1", "person8", 1, 1075),
    ("person8_2", "person8", 1075, 1525),
    ("truck4_1", "truck4", 1, 577),
    ("truck4_2", "truck4", 577, 1261),
    ("uav1_1", "uav1", 1, 1555),
    ("uav1_2", "uav1", 1555, 2377),
    ("uav1_3", "uav1", 2473, 3469),
];

fn open_uav123(root: &Path) -> Result<Vec<Result<Sequence>>> {
    let anno = root.join("anno").join("UAV123");
    let data = root.join("data_seq").join("UAV123");
    for d in [&anno, &data] {
        if !d.is_dir() {
            return Err(Error::Other(format!(
                "{}: missing (UAV123 expects ROOT/data_seq/UAV123/SEQ/*.jpg and ROOT/anno/UAV123/SEQ.txt)",
                d.display()
            )));
        }
    }
    let mut files = files_with_ext(&anno, "txt")?;
    files.sort_by(|a, b| natural_cmp(a, b));
    Ok(files
        .into_iter()
        .map(|f| {
            let name = f.trim_end_matches(".txt").to_string();
            let gt_path = anno.join(&f);
            (|| {
                let gt = parse_boxes(&gt_path, &read_text(&gt_path)?)?;
                let frames = match UAV123_SUBSEQS.iter().find(|s| s.0 == name) {
                    Some(&(_, folder, first, last)) => {
                        uav_range(&data.join(folder), first, last, &name)?
                    }
                    None => list_images(&data.join(&name))?,
                };
                finish(name.clone(), frames, gt, &gt_path, false, None, None)
            })()
        })
        .collect())
}

/// Frames `first..=last` of a shared UAV123 folder, whose files are numbered `000001.jpg` onwards.
fn uav_range(dir: &Path, first: usize, last: usize, name: &str) -> Result<Vec<PathBuf>> {
    let all = list_images(dir)?;
    let numbered = |p: &PathBuf| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<usize>().ok())
    };
    let frames: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| numbered(p).is_some_and(|n| (first..=last).contains(&n)))
        .collect();
    if frames.len() != last + 1 - first {
        return Err(Error::Other(format!(
            "{name}: frames {first}..={last} of {} expected ({} files), found {} of them",
            dir.display(),
            last + 1 - first,
            frames.len()
        )));
    }
    Ok(frames)
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Checks shared by every layout: frames and ground truth present and of one length (or a single
/// initial box where the split withholds the rest), labels one per frame.
fn finish(
    name: String,
    frames: Vec<PathBuf>,
    gt: Vec<[f64; 4]>,
    gt_path: &Path,
    init_only_ok: bool,
    absent: Option<Vec<bool>>,
    cover: Option<Vec<u8>>,
) -> Result<Sequence> {
    if gt.is_empty() {
        return Err(Error::Other(format!(
            "{}: no ground-truth boxes",
            gt_path.display()
        )));
    }
    let n = frames.len();
    if gt.len() != n && !(init_only_ok && gt.len() == 1) {
        return Err(Error::Other(format!(
            "{name}: {n} frames but {} ground-truth rows in {}",
            gt.len(),
            gt_path.display()
        )));
    }
    if gt[0].iter().any(|v| !v.is_finite()) || gt[0][2] <= 0.0 || gt[0][3] <= 0.0 {
        return Err(Error::Other(format!(
            "{} line 1: the initial box {:?} is not a valid box",
            gt_path.display(),
            gt[0]
        )));
    }
    let dir = gt_path.parent().unwrap_or(Path::new("."));
    if let Some(a) = &absent {
        if a.len() != n {
            return Err(Error::Other(format!(
                "{name}: {n} frames but {} absence labels in {}",
                a.len(),
                dir.display()
            )));
        }
    }
    if let Some(c) = &cover {
        if c.len() != n {
            return Err(Error::Other(format!(
                "{name}: {n} frames but {} cover labels in {}",
                c.len(),
                dir.join("cover.label").display()
            )));
        }
    }
    Ok(Sequence {
        name,
        frames,
        gt,
        absent,
        cover,
    })
}

/// Labels of an optional file, each checked to lie in `0..=max`.
fn read_labels(path: &Path, max: i64) -> Result<Option<Vec<i64>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let v = parse_labels(path, &read_text(path)?)?;
    if let Some((i, bad)) = v.iter().enumerate().find(|(_, l)| !(0..=max).contains(*l)) {
        return Err(Error::Other(format!(
            "{}: value {} ({bad}) is outside 0..={max}",
            path.display(),
            i + 1
        )));
    }
    Ok(Some(v))
}

/// Non-empty, trimmed lines of a sequence list.
fn read_list(path: &Path) -> Result<Vec<String>> {
    Ok(read_text(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    fs::read_dir(dir)
        .map_err(io)?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io)
}

/// Sub-folder names in natural order.
fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut v: Vec<String> = read_dir(dir)?
        .into_iter()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    v.sort_by(|a, b| natural_cmp(a, b));
    Ok(v)
}

/// File names in `dir` ending in `.ext` (case-insensitive).
fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<String>> {
    Ok(read_dir(dir)?
        .into_iter()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| {
            n.rsplit_once('.')
                .is_some_and(|(_, e)| e.eq_ignore_ascii_case(ext))
        })
        .collect())
}

/// The JPEG / PNG frames of a folder in natural order (`2.jpg` before `10.jpg`, as TrackingNet's
/// unpadded numbers need).
pub(crate) fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::Other(format!(
            "{}: frame folder missing",
            dir.display()
        )));
    }
    let mut names: Vec<String> = ["jpg", "jpeg", "png"]
        .iter()
        .map(|e| files_with_ext(dir, e))
        .collect::<Result<Vec<_>>>()?
        .concat();
    if names.is_empty() {
        return Err(Error::Other(format!(
            "{}: no JPEG or PNG frames",
            dir.display()
        )));
    }
    names.sort_by(|a, b| natural_cmp(a, b));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// Natural order: digit runs compare by value, the rest byte-wise.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let trim = |s: &[u8]| {
                let z = s.iter().take_while(|c| **c == b'0').count();
                s[z..].to_vec()
            };
            let (na, nb) = (trim(&a[si..i]), trim(&b[sj..j]));
            let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(&nb));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j)).then_with(|| a.cmp(b))
}
