//! ImageNet VID and DET (ILSVRC layout): `ROOT/Annotations/{VID,DET}/SPLIT/…/NAME.xml`, one
//! PASCAL-VOC style file per image, beside `ROOT/Data/{VID,DET}/SPLIT/…/NAME.JPEG`.
//!
//! VID: each folder of XML files is a snippet; each `trackid` in it becomes one sequence over all
//! the snippet's frames, with no box (absent) where that track is not annotated. DET: each object
//! of each image becomes a one-frame sequence. Boxes are `xmin, ymin, xmax − xmin, ymax − ymin`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::{io_err, TrainSequence};
use crate::eval::datasets::natural_cmp;
use crate::{Error, Result};

/// One `<object>` of an annotation file.
#[derive(Clone, Debug, PartialEq)]
pub struct VocObject {
    /// `trackid` (VID); DET files have none.
    pub track: Option<u64>,
    /// `xmin, ymin, xmax, ymax`.
    pub bndbox: [f64; 4],
}

/// Parses one annotation file's objects; errors name the file.
pub fn parse_voc(path: &Path, text: &str) -> Result<Vec<VocObject>> {
    let bad = |msg: String| Error::Other(format!("{}: {msg}", path.display()));
    let doc = roxmltree::Document::parse(text).map_err(|e| bad(format!("malformed XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "annotation" {
        return Err(bad(format!(
            "root element is <{}>, expected <annotation>",
            root.tag_name().name()
        )));
    }
    let mut out = Vec::new();
    for (k, obj) in root
        .children()
        .filter(|c| c.has_tag_name("object"))
        .enumerate()
    {
        let track =
            match child_text(obj, "trackid") {
                Some(t) => Some(t.parse::<u64>().map_err(|_| {
                    bad(format!("object {}: trackid '{t}' is not an integer", k + 1))
                })?),
                None => None,
            };
        let bb = obj
            .children()
            .find(|c| c.has_tag_name("bndbox"))
            .ok_or_else(|| bad(format!("object {} has no <bndbox>", k + 1)))?;
        let mut v = [0.0; 4];
        for (slot, tag) in v.iter_mut().zip(["xmin", "ymin", "xmax", "ymax"]) {
            let s = child_text(bb, tag)
                .ok_or_else(|| bad(format!("object {}: <bndbox> has no <{tag}>", k + 1)))?;
            *slot = s
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(format!("object {}: <{tag}> '{s}' is not a number", k + 1)))?;
        }
        out.push(VocObject { track, bndbox: v });
    }
    Ok(out)
}

fn child_text<'a>(n: roxmltree::Node<'a, 'a>, tag: &str) -> Option<&'a str> {
    n.children()
        .find(|c| c.has_tag_name(tag))
        .and_then(|c| c.text())
        .map(str::trim)
}

fn xywh(b: [f64; 4]) -> [f64; 4] {
    [b[0], b[1], b[2] - b[0], b[3] - b[1]]
}

/// Every folder under `dir` (itself included) that directly holds `.xml` files, with those file
/// names in natural order; folders in natural order too.
fn xml_folders(dir: &Path) -> Result<Vec<(PathBuf, Vec<String>)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut subdirs = Vec::new();
        let mut xml = Vec::new();
        for e in std::fs::read_dir(&d).map_err(io_err(&d))? {
            let e = e.map_err(io_err(&d))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().map_err(io_err(&d))?;
            if ft.is_dir() {
                subdirs.push(name);
            } else if name.to_ascii_lowercase().ends_with(".xml") {
                xml.push(name);
            }
        }
        if !xml.is_empty() {
            xml.sort_by(|a, b| natural_cmp(a, b));
            out.push((d.clone(), xml));
        }
        subdirs.sort_by(|a, b| natural_cmp(b, a));
        stack.extend(subdirs.into_iter().map(|s| d.join(s)));
    }
    out.sort_by(|a, b| natural_cmp(&a.0.to_string_lossy(), &b.0.to_string_lossy()));
    Ok(out)
}

/// The image beside annotation `stem`: `NAME.JPEG` (any case of the extension).
fn image_for(
    data_dir: &Path,
    listing: &HashSet<String>,
    stem: &str,
    xml: &Path,
) -> Result<PathBuf> {
    ["JPEG", "jpeg", "jpg", "JPG", "png"]
        .iter()
        .map(|e| format!("{stem}.{e}"))
        .find(|n| listing.contains(n))
        .map(|n| data_dir.join(n))
        .ok_or_else(|| {
            Error::Other(format!(
                "{}: its image {}/{stem}.JPEG is missing",
                xml.display(),
                data_dir.display()
            ))
        })
}

fn listing(dir: &Path) -> Result<HashSet<String>> {
    std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(io_err(dir))
        })
        .collect()
}

fn dirs(root: &Path, which: &str, split: &str) -> Result<(PathBuf, PathBuf)> {
    let anno = root.join("Annotations").join(which).join(split);
    let data = root.join("Data").join(which).join(split);
    for d in [&anno, &data] {
        if !d.is_dir() {
            return Err(Error::Other(format!(
                "{}: missing (ImageNet {which} expects ROOT/Annotations/{which}/{split}/…/*.xml \
                 and ROOT/Data/{which}/{split}/…/*.JPEG)",
                d.display()
            )));
        }
    }
    Ok((anno, data))
}

pub fn scan_vid(root: &Path, split: &str) -> Result<Vec<TrainSequence>> {
    let (anno, data) = dirs(root, "VID", split)?;
    let mut out = Vec::new();
    for (dir, files) in xml_folders(&anno)? {
        let rel = dir.strip_prefix(&anno).unwrap_or(&dir);
        let data_dir = data.join(rel);
        let present = listing(&data_dir)?;
        let mut frames = Vec::with_capacity(files.len());
        // track id → (frame index → box)
        let mut tracks: BTreeMap<u64, Vec<(usize, [f64; 4])>> = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            let path = dir.join(f);
            let text = crate::eval::read_text(&path)?;
            let stem = &f[..f.len() - 4];
            frames.push(image_for(&data_dir, &present, stem, &path)?);
            for o in parse_voc(&path, &text)? {
                let id = o.track.ok_or_else(|| {
                    Error::Other(format!(
                        "{}: a VID object without <trackid>",
                        path.display()
                    ))
                })?;
                tracks.entry(id).or_default().push((i, xywh(o.bndbox)));
            }
        }
        let snippet = rel.to_string_lossy().replace(['/', '\\'], "-");
        for (id, boxes) in tracks {
            let mut b = vec![[f64::NAN; 4]; frames.len()];
            let mut absent = vec![true; frames.len()];
            for (i, bx) in boxes {
                b[i] = bx;
                absent[i] = false;
            }
            out.push(TrainSequence::new(
                format!("{snippet}-{id}"),
                frames.clone(),
                b,
                Some(absent),
            )?);
        }
    }
    Ok(out)
}

pub fn scan_det(root: &Path, split: &str) -> Result<Vec<TrainSequence>> {
    let (anno, data) = dirs(root, "DET", split)?;
    let mut out = Vec::new();
    for (dir, files) in xml_folders(&anno)? {
        let rel = dir.strip_prefix(&anno).unwrap_or(&dir);
        let data_dir = data.join(rel);
        let present = listing(&data_dir)?;
        for f in files {
            let path = dir.join(&f);
            let text = crate::eval::read_text(&path)?;
            let stem = &f[..f.len() - 4];
            let objs = parse_voc(&path, &text)?;
            if objs.is_empty() {
                continue;
            }
            let image = image_for(&data_dir, &present, stem, &path)?;
            for (k, o) in objs.into_iter().enumerate() {
                out.push(TrainSequence::new(
                    format!("{stem}-{k}"),
                    vec![image.clone()],
                    vec![xywh(o.bndbox)],
                    None,
                )?);
            }
        }
    }
    Ok(out)
}
