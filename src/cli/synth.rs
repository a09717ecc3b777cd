//! `sparsett synth`: a generated GOT-10k-layout dataset from your own photos or video frames.

use std::path::{Path, PathBuf};

use image::RgbImage;
use sparsett::synth::{write_dataset, DatasetSpec};
use sparsett::{Error, Result};

/// Photos from image files, and every `stride`-th frame of videos (anything `--video` takes).
pub fn photos(images: &[PathBuf], videos: &[String], stride: usize) -> Result<Vec<RgbImage>> {
    let mut out = Vec::new();
    for p in images {
        let img = image::open(p)
            .map_err(|e| Error::Other(format!("{}: cannot read the photo: {e}", p.display())))?;
        out.push(img.to_rgb8());
    }
    for v in videos {
        let mut src = sparsett::video::open(v)?;
        let mut i = 0usize;
        while let Some(f) = src.next_frame()? {
            if i.is_multiple_of(stride.max(1)) {
                out.push(f);
            }
            i += 1;
        }
    }
    if out.is_empty() {
        return Err(Error::Other(
            "synth: give photos (--image) or videos (--video) to cut objects and backgrounds from"
                .into(),
        ));
    }
    Ok(out)
}

pub fn run(images: &[PathBuf], videos: &[String], out: &Path, spec: &DatasetSpec) -> Result<()> {
    let ph = photos(images, videos, 10)?;
    let names = write_dataset(&ph, out, spec)?;
    println!(
        "wrote {} sequences of {} frames (GOT-10k layout) to {}",
        names.len(),
        spec.frames,
        out.display()
    );
    Ok(())
}
