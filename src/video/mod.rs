//! Video input and output for the tracker: frames are `image::RgbImage` everywhere.
//!
//! Inputs ([`open`]): an image folder (the benchmark layouts: frames directly in the folder as in GOT-10k
//! and UAV123, or in an `img/` subfolder as in OTB and LaSOT), a YUV4MPEG2 file (read natively), or anything
//! the `ffmpeg` program can decode (files, `/dev/video0`, URLs). Outputs ([`create_sink`]): a folder of
//! numbered JPEGs, a Y4M file (written natively), or any container ffmpeg can write.
//!
//! Decoding can overlap GPU work through [`Prefetch`], which runs a source on a background thread.

pub mod ffmpeg;
pub mod folder;
pub mod prefetch;
pub mod y4m;

use std::path::Path;

use image::RgbImage;

pub use prefetch::Prefetch;

use crate::{Error, Result};

/// A stream of equally sized RGB frames.
pub trait VideoSource: Send {
    /// The next frame, `None` once the video has ended.
    fn next_frame(&mut self) -> Result<Option<RgbImage>>;
    /// The number of frames when the container says so (a hint: a stream may end earlier or later).
    fn len_hint(&self) -> Option<usize>;
    /// Frames per second when the source records it (image folders do not).
    fn fps(&self) -> Option<f64>;
    /// One line for logs: what is read and how.
    fn describe(&self) -> String;
}

/// A consumer of equally sized RGB frames. `finish` flushes and reports the last errors; a sink
/// dropped without `finish` still closes its output, but its errors are lost.
pub trait VideoSink: Send {
    fn write(&mut self, frame: &RgbImage) -> Result<()>;
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Opens `spec`: a directory → [`folder::FolderSource`]; `*.y4m` → [`y4m::Y4mSource`]; anything else
/// (mp4, avi, webm, `/dev/video0`, URLs) → [`ffmpeg::FfmpegSource`]. A video with no frames opens fine
/// and yields `None` at once; [`first_frame`] turns that into an error.
pub fn open(spec: &str) -> Result<Box<dyn VideoSource>> {
    if spec.is_empty() {
        return Err(Error::Other("empty video path".into()));
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(Box::new(folder::FolderSource::open(path)?));
    }
    if has_extension(path, "y4m") {
        return Ok(Box::new(y4m::Y4mSource::open(path)?));
    }
    Ok(Box::new(ffmpeg::FfmpegSource::open(spec)?))
}

/// The first frame of `src`, or an error naming the video when it has none.
pub fn first_frame(src: &mut dyn VideoSource) -> Result<RgbImage> {
    src.next_frame()?
        .ok_or_else(|| Error::Other(format!("{} has no frames", src.describe())))
}

/// Creates an output for frames shown at `fps`: a path ending in `/`, an existing directory or a path
/// without extension → a folder of `00000001.jpg`, …; `*.y4m` → [`y4m::Y4mSink`] (4:2:0); any other
/// extension (mp4, webm, avi, gif, mkv, …) → [`ffmpeg::FfmpegSink`]. Missing parent folders are created.
pub fn create_sink(spec: &str, fps: f64) -> Result<Box<dyn VideoSink>> {
    if spec.is_empty() {
        return Err(Error::Other("empty output path".into()));
    }
    // Validated here so that every kind of sink rejects it, even a folder that ignores the rate.
    fps_rational(fps)?;
    let path = Path::new(spec);
    if spec.ends_with('/') || path.is_dir() || path.extension().is_none() {
        return Ok(Box::new(folder::FolderSink::create(
            path,
            folder::FrameFormat::Jpeg,
        )?));
    }
    if has_extension(path, "y4m") {
        return Ok(Box::new(y4m::Y4mSink::create(
            path,
            fps,
            y4m::Chroma::C420,
        )?));
    }
    Ok(Box::new(ffmpeg::FfmpegSink::create(spec, fps)?))
}

pub(crate) fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// `fps` as a reduced fraction `num/den`, the form Y4M headers and ffmpeg's `-r` take. NTSC rates
/// (30000/1001 …) come out exact; anything else is rounded to 1/1000 frame per second.
pub(crate) fn fps_rational(fps: f64) -> Result<(u32, u32)> {
    if !fps.is_finite() || fps <= 0.0 || fps > 1e6 {
        return Err(Error::Other(format!(
            "frame rate {fps} is not a positive number of frames per second"
        )));
    }
    let (mut num, mut den) = [1u64, 1001, 1000]
        .into_iter()
        .map(|d| ((fps * d as f64).round() as u64, d))
        .find(|&(n, d)| n > 0 && (n as f64 / d as f64 - fps).abs() <= 1e-6 * fps)
        .unwrap_or(((fps * 1000.0).round().max(1.0) as u64, 1000));
    let g = gcd(num, den);
    (num, den) = (num / g, den / g);
    Ok((num as u32, den as u32))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
