//! Image folders: the layout every tracking benchmark ships (one JPEG or PNG per frame).

use std::cmp::Ordering;
use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ImageReader, RgbImage};

use super::{VideoSink, VideoSource};
use crate::{Error, Result};

/// Frames of a folder in natural name order. The list is taken at `open`; each frame is decoded
/// when asked for, so a file deleted or damaged meanwhile is reported then, by name.
pub struct FolderSource {
    dir: PathBuf,
    frames: Vec<PathBuf>,
    next: usize,
    first: Option<(PathBuf, u32, u32)>,
}

impl FolderSource {
    /// `dir` holds the frames directly (GOT-10k, UAV123, TrackingNet) or in `dir/img/` (OTB, LaSOT).
    pub fn open(dir: &Path) -> Result<Self> {
        let mut frames = list_images(dir)?;
        let sub = dir.join("img");
        if frames.is_empty() && sub.is_dir() {
            frames = list_images(&sub)?;
        }
        if frames.is_empty() {
            return Err(Error::Other(format!(
                "{}: no JPEG or PNG frames in this folder (nor in its img/ subfolder)",
                dir.display()
            )));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            frames,
            next: 0,
            first: None,
        })
    }

    /// Frames given as a list (a dataset reader already knows them); `name` labels the source.
    pub fn from_paths(name: &str, frames: Vec<PathBuf>) -> Result<Self> {
        if frames.is_empty() {
            return Err(Error::Other(format!("{name}: the sequence has no frames")));
        }
        Ok(Self {
            dir: PathBuf::from(name),
            frames,
            next: 0,
            first: None,
        })
    }

    /// The frame files in the order they are read.
    pub fn paths(&self) -> &[PathBuf] {
        &self.frames
    }
}

impl VideoSource for FolderSource {
    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let Some(path) = self.frames.get(self.next) else {
            return Ok(None);
        };
        let img = read_image(path)?;
        match &self.first {
            None => self.first = Some((path.clone(), img.width(), img.height())),
            Some((p0, w, h)) if (img.width(), img.height()) != (*w, *h) => {
                return Err(Error::Other(format!(
                    "{}: frame is {}x{}, but the first frame {} is {w}x{h}; all frames must have one size",
                    path.display(),
                    img.width(),
                    img.height(),
                    p0.display()
                )))
            }
            Some(_) => {}
        }
        self.next += 1;
        Ok(Some(img))
    }

    fn len_hint(&self) -> Option<usize> {
        Some(self.frames.len())
    }

    fn fps(&self) -> Option<f64> {
        None
    }

    fn describe(&self) -> String {
        format!(
            "image folder {} ({} frames)",
            self.dir.display(),
            self.frames.len()
        )
    }
}

/// Decodes one frame; the format is taken from the file's content, so a PNG named `.jpg` still reads.
fn read_image(path: &Path) -> Result<RgbImage> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let img = ImageReader::open(path)
        .map_err(io)?
        .with_guessed_format()
        .map_err(io)?
        .decode()
        .map_err(|e| Error::Other(format!("{}: cannot decode image: {e}", path.display())))?;
    Ok(img.into_rgb8())
}

/// JPEG and PNG files (extension in any case) of `dir`, hidden files excepted (macOS leaves `._0001.jpg`
/// companions that are not images), in natural order.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut named = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_image = ["jpg", "jpeg", "png"]
            .iter()
            .any(|e| super::has_extension(&path, e));
        if is_image && !name.starts_with('.') && path.is_file() {
            named.push((name, path));
        }
    }
    named.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    Ok(named.into_iter().map(|(_, p)| p).collect())
}

/// Name order where digit runs compare as numbers (`2.jpg` < `10.jpg`), the rest byte-wise. Equal
/// numbers written with different zero padding fall back to the plain comparison so the order is total.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let (nx, rx) = split_digits(x);
                let (ny, ry) = split_digits(y);
                let (tx, ty) = (trim_zeros(nx), trim_zeros(ny));
                let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if ord != Ordering::Equal {
                    return ord;
                }
                (x, y) = (rx, ry);
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n..]
}

/// The image format a [`FolderSink`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFormat {
    /// Quality 95: visually lossless for drawn boxes and labels, a third of PNG's size.
    Jpeg,
    /// Lossless.
    Png,
}

/// Writes `00000001.jpg`, `00000002.jpg`, … (the GOT-10k / LaSOT numbering) into a folder.
pub struct FolderSink {
    dir: PathBuf,
    format: FrameFormat,
    count: usize,
}

impl FolderSink {
    /// Creates `dir` (and its parents) when missing; existing frames of the same names are overwritten.
    pub fn create(dir: &Path, format: FrameFormat) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            format,
            count: 0,
        })
    }
}

impl VideoSink for FolderSink {
    fn write(&mut self, frame: &RgbImage) -> Result<()> {
        let ext = match self.format {
            FrameFormat::Jpeg => "jpg",
            FrameFormat::Png => "png",
        };
        let path = self.dir.join(format!("{:08}.{ext}", self.count + 1));
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let file = fs::File::create(&path).map_err(io)?;
        let mut w = BufWriter::new(file);
        let encoded = match self.format {
            FrameFormat::Jpeg => {
                frame.write_with_encoder(JpegEncoder::new_with_quality(&mut w, 95))
            }
            FrameFormat::Png => frame.write_with_encoder(PngEncoder::new(&mut w)),
        };
        encoded
            .map_err(|e| Error::Other(format!("{}: cannot write image: {e}", path.display())))?;
        std::io::Write::flush(&mut w).map_err(io)?;
        self.count += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
