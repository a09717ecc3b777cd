//! COCO for training: `ROOT/annotations/instances_SPLIT.json` and the images in `ROOT/SPLIT/` (or
//! `ROOT/images/SPLIT/`). Every object annotation becomes a one-frame sequence; crowd regions
//! (`iscrowd = 1`, a blob of many objects) and tiny boxes are skipped, as trackers' COCO loaders do.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::{io_err, TrainSequence};
use crate::{Error, Result};

/// Boxes with a side below this (pixels) are skipped: a crop around them is mostly context and
/// the box a few pixels of the 289 search crop.
pub const MIN_SIDE: f64 = 4.0;

pub fn scan_coco(root: &Path, split: &str) -> Result<Vec<TrainSequence>> {
    let json = root
        .join("annotations")
        .join(format!("instances_{split}.json"));
    let images_dir = [root.join(split), root.join("images").join(split)]
        .into_iter()
        .find(|d| d.is_dir())
        .ok_or_else(|| {
            Error::Other(format!(
                "{}: missing image folder (COCO expects ROOT/{split}/ or ROOT/images/{split}/)",
                root.join(split).display()
            ))
        })?;
    let bytes = std::fs::read(&json).map_err(io_err(&json))?;
    let seqs = parse_instances(&json, &bytes, &images_dir)?;
    // One listing of the image folder, so a missing image is reported now, naming both files,
    // rather than by a loader thread mid-training.
    let present: std::collections::HashSet<std::ffi::OsString> = std::fs::read_dir(&images_dir)
        .map_err(io_err(&images_dir))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    if let Some(s) = seqs
        .iter()
        .find(|s| s.frames[0].file_name().is_none_or(|n| !present.contains(n)))
    {
        return Err(Error::Other(format!(
            "{}: {} ({}) is missing",
            json.display(),
            s.frames[0].display(),
            s.name
        )));
    }
    Ok(seqs)
}

/// Parses an instances file; `images_dir` holds the files its `file_name`s name.
pub fn parse_instances(json: &Path, bytes: &[u8], images_dir: &Path) -> Result<Vec<TrainSequence>> {
    let bad = |msg: String| Error::Other(format!("{}: {msg}", json.display()));
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("malformed JSON: {e}")))?;
    let images = v
        .get("images")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"images\" array".into()))?;
    let annos = v
        .get("annotations")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"annotations\" array".into()))?;
    let mut files: HashMap<u64, &str> = HashMap::with_capacity(images.len());
    for (i, im) in images.iter().enumerate() {
        let id = im.get("id").and_then(Value::as_u64);
        let name = im.get("file_name").and_then(Value::as_str);
        match (id, name) {
            (Some(id), Some(name)) => {
                files.insert(id, name);
            }
            _ => {
                return Err(bad(format!(
                    "images[{i}] lacks an integer id or a file_name"
                )))
            }
        }
    }
    let mut out = Vec::new();
    for (i, a) in annos.iter().enumerate() {
        if a.get("iscrowd").and_then(Value::as_u64).unwrap_or(0) != 0 {
            continue;
        }
        let image_id = a
            .get("image_id")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("annotations[{i}] lacks an integer image_id")))?;
        let bbox: Vec<f64> = a
            .get("bbox")
            .and_then(Value::as_array)
            .map(|b| b.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let bbox: [f64; 4] = bbox.try_into().map_err(|_| {
            bad(format!(
                "annotations[{i}]: bbox is not 4 numbers [x, y, w, h]"
            ))
        })?;
        let file = files.get(&image_id).ok_or_else(|| {
            bad(format!(
                "annotations[{i}] refers to image {image_id}, which \"images\" does not list"
            ))
        })?;
        if !(bbox[2] >= MIN_SIDE && bbox[3] >= MIN_SIDE) {
            continue;
        }
        let ann_id = a.get("id").and_then(Value::as_u64).unwrap_or(i as u64);
        out.push(TrainSequence::new(
            format!("coco-{ann_id}"),
            vec![images_dir.join(file)],
            vec![bbox],
            None,
        )?);
    }
    Ok(out)
}
