//! Training data: dataset readers for the layouts trackers train on, an index cache so a large
//! dataset is scanned once, the official pair sampler and search-crop augmentation, and
//! background loading threads that decode JPEGs ahead of the GPU.
//!
//! Every dataset becomes a list of [`TrainSequence`]s (frames, one `x, y, w, h` box per frame, an
//! absence flag per frame). Video datasets give one sequence per video (GOT-10k, LaSOT,
//! TrackingNet) or per object track (ImageNet VID); image datasets (COCO, ImageNet DET) give one
//! single-frame "sequence" per object, which the sampler pairs with itself (template and search
//! from the same image, as the official code does for static images).

pub mod augment;
pub mod coco;
pub mod index;
pub mod loader;
pub mod sampler;
pub mod vid;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::eval::{open_dataset, DatasetKind};
use crate::{Error, Result};

pub use augment::{search_crop, template_crop, Augment, PairGeometry, SearchCrop};
pub use index::{load_indexed, CacheStatus};
pub use loader::{crop_batch, Batch, Loader, ReadyPair};
pub use sampler::{FrameRef, Pair, Sampler, SamplerConfig};

/// The training datasets of the official full-data recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrainKind {
    Got10k,
    Lasot,
    TrackingNet,
    /// ImageNet VID (`Annotations/VID/…/*.xml`, one sequence per track id).
    Vid,
    /// ImageNet DET (`Annotations/DET/…/*.xml`, one static sequence per object).
    Det,
    /// COCO (instances JSON, one static sequence per object).
    Coco,
}

impl TrainKind {
    pub const ALL: [TrainKind; 6] = [
        TrainKind::Got10k,
        TrainKind::Lasot,
        TrainKind::TrackingNet,
        TrainKind::Vid,
        TrainKind::Det,
        TrainKind::Coco,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TrainKind::Got10k => "got10k",
            TrainKind::Lasot => "lasot",
            TrainKind::TrackingNet => "trackingnet",
            TrainKind::Vid => "vid",
            TrainKind::Det => "det",
            TrainKind::Coco => "coco",
        }
    }

    /// The dataset's weight in the official full-data mix (TrackingNet 0.65, LaSOT 0.3, GOT-10k
    /// 0.2, VID 0.2, DET 0.08, COCO 0.07); the sampler normalises the weights it is given.
    pub fn full_data_ratio(self) -> f64 {
        match self {
            TrainKind::TrackingNet => 0.65,
            TrainKind::Lasot => 0.3,
            TrainKind::Got10k => 0.2,
            TrainKind::Vid => 0.2,
            TrainKind::Det => 0.08,
            TrainKind::Coco => 0.07,
        }
    }
}

impl fmt::Display for TrainKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TrainKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let k = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        TrainKind::ALL
            .into_iter()
            .find(|t| t.name() == k)
            .ok_or_else(|| {
                let names: Vec<&str> = TrainKind::ALL.iter().map(|k| k.name()).collect();
                Error::Other(format!(
                    "unknown training dataset '{s}': expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// One annotated video (or one object of a still image).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSequence {
    pub name: String,
    pub frames: Vec<PathBuf>,
    /// `x, y, w, h` per frame (0-based pixels, `w = x2 − x1` as the files give them); NaN where the
    /// dataset has no box.
    pub boxes: Vec<[f64; 4]>,
    /// Per frame: the target is not visible (fully occluded, out of view, or no box).
    pub absent: Vec<bool>,
}

impl TrainSequence {
    /// Builds a sequence, checking that frames, boxes and flags have one length.
    pub fn new(
        name: String,
        frames: Vec<PathBuf>,
        boxes: Vec<[f64; 4]>,
        absent: Option<Vec<bool>>,
    ) -> Result<Self> {
        let absent = absent.unwrap_or_else(|| vec![false; frames.len()]);
        if frames.len() != boxes.len() || frames.len() != absent.len() {
            return Err(Error::Other(format!(
                "{name}: {} frames, {} boxes and {} absence flags (a training sequence needs one \
                 box per frame)",
                frames.len(),
                boxes.len(),
                absent.len()
            )));
        }
        Ok(TrainSequence {
            name,
            frames,
            boxes,
            absent,
        })
    }
}

/// A scanned training dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainDataset {
    pub kind: TrainKind,
    pub root: PathBuf,
    pub sequences: Vec<TrainSequence>,
}

impl TrainDataset {
    pub fn frame_count(&self) -> usize {
        self.sequences.iter().map(|s| s.frames.len()).sum()
    }
}

/// Scans a training dataset under `root` (no cache; see [`load_indexed`]).
///
/// `split`: GOT-10k `train` (default) / `val`; LaSOT `train` (default: every sequence not listed in
/// `testing_set.txt`), `test` or `all`; TrackingNet a comma-separated list of chunks (default: every
/// `TRAIN_*` folder present); VID and DET `train` (default) or `val`; COCO the image set
/// (default `train2017`). A broken sequence is an error that names its file: training should not
/// silently run on a partial dataset.
pub fn scan(kind: TrainKind, root: &Path, split: Option<&str>) -> Result<TrainDataset> {
    if !root.is_dir() {
        return Err(Error::Other(format!(
            "{}: the {kind} root folder does not exist",
            root.display()
        )));
    }
    let sequences = match kind {
        TrainKind::Got10k => from_eval(DatasetKind::Got10k, root, Some(split.unwrap_or("train")))?,
        TrainKind::Lasot => scan_lasot(root, split.unwrap_or("train"))?,
        TrainKind::TrackingNet => {
            let chunks: Vec<String> = match split {
                Some(s) => s.split(',').map(|c| c.trim().to_string()).collect(),
                None => {
                    let mut v: Vec<String> = std::fs::read_dir(root)
                        .map_err(|source| Error::Io {
                            path: root.display().to_string(),
                            source,
                        })?
                        .filter_map(|e| e.ok())
                        .filter(|e| e.path().is_dir())
                        .filter_map(|e| e.file_name().to_str().map(String::from))
                        .filter(|n| n.starts_with("TRAIN_"))
                        .collect();
                    v.sort_by(|a, b| crate::eval::datasets::natural_cmp(a, b));
                    if v.is_empty() {
                        return Err(Error::Other(format!(
                            "{}: no TRAIN_* chunk folders (TrackingNet expects \
                             ROOT/TRAIN_0/anno/SEQ.txt and ROOT/TRAIN_0/frames/SEQ/)",
                            root.display()
                        )));
                    }
                    v
                }
            };
            let mut all = Vec::new();
            for c in chunks {
                all.extend(from_eval(DatasetKind::TrackingNet, root, Some(&c))?);
            }
            all
        }
        TrainKind::Vid => vid::scan_vid(root, split.unwrap_or("train"))?,
        TrainKind::Det => vid::scan_det(root, split.unwrap_or("train"))?,
        TrainKind::Coco => coco::scan_coco(root, split.unwrap_or("train2017"))?,
    };
    if sequences.is_empty() {
        return Err(Error::Other(format!(
            "{}: no {kind} training sequences found",
            root.display()
        )));
    }
    Ok(TrainDataset {
        kind,
        root: root.to_path_buf(),
        sequences,
    })
}

/// The evaluation reader's sequences as training sequences; the first broken one is the error.
fn from_eval(kind: DatasetKind, root: &Path, split: Option<&str>) -> Result<Vec<TrainSequence>> {
    open_dataset(kind, root, split)?
        .into_iter()
        .map(|r| r.and_then(from_eval_sequence))
        .collect()
}

fn from_eval_sequence(s: crate::eval::Sequence) -> Result<TrainSequence> {
    if !s.fully_annotated() {
        return Err(Error::Other(format!(
            "{}: only the first frame is annotated (a test split cannot be trained on)",
            s.name
        )));
    }
    let absent = s
        .absent
        .clone()
        .unwrap_or_else(|| vec![false; s.frames.len()]);
    let absent = match &s.cover {
        // GOT-10k marks invisible frames with cover 0 too; either flag removes the frame.
        Some(c) => absent.iter().zip(c).map(|(&a, &c)| a || c == 0).collect(),
        None => absent,
    };
    TrainSequence::new(s.name, s.frames, s.gt, Some(absent))
}

fn scan_lasot(root: &Path, split: &str) -> Result<Vec<TrainSequence>> {
    match split {
        "test" | "all" => from_eval(DatasetKind::Lasot, root, Some(split)),
        "train" => {
            let list = root.join("testing_set.txt");
            let test: std::collections::HashSet<String> = if list.is_file() {
                crate::eval::read_text(&list)?
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            } else {
                Default::default()
            };
            Ok(from_eval(DatasetKind::Lasot, root, Some("all"))?
                .into_iter()
                .filter(|s| !test.contains(&s.name))
                .collect())
        }
        s => Err(Error::Other(format!(
            "LaSOT split '{s}': expected train, test or all"
        ))),
    }
}

/// An I/O error that names the file.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}
