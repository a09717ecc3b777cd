//! Everything else goes through the `ffmpeg` program: containers and codecs (mp4, avi, webm, …), cameras
//! (`/dev/video0`) and network streams, read and written as raw RGB over a pipe.
//!
//! The programs are `ffmpeg` and `ffprobe` from `PATH` unless `SPARSETT_FFMPEG` / `SPARSETT_FFPROBE`
//! name others; [`Tools`] carries that choice explicitly so callers (and tests) can pass their own.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image::RgbImage;

use super::{VideoSink, VideoSource};
use crate::{Error, Result};

/// The external programs used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    /// `None`: do not use ffprobe; the size and rate are read from `ffmpeg -i`'s report instead.
    pub ffprobe: Option<PathBuf>,
}

impl Tools {
    /// From `SPARSETT_FFMPEG` and `SPARSETT_FFPROBE` (see [`Tools::from_vars`]).
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var_os("SPARSETT_FFMPEG"),
            std::env::var_os("SPARSETT_FFPROBE"),
        )
    }

    /// `ffmpeg` is the given program or `ffmpeg` from `PATH`. `ffprobe` is the given program (an empty
    /// value: none), else the `ffprobe` beside a given ffmpeg (a custom build ships both), else `ffprobe`
    /// from `PATH`.
    pub fn from_vars(ffmpeg: Option<OsString>, ffprobe: Option<OsString>) -> Self {
        let ffmpeg = ffmpeg.filter(|s| !s.is_empty()).map(PathBuf::from);
        let ffprobe = match ffprobe {
            Some(p) if p.is_empty() => None,
            Some(p) => Some(PathBuf::from(p)),
            None => Some(
                ffmpeg
                    .as_deref()
                    .and_then(Path::parent)
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("ffprobe"), |d| d.join("ffprobe")),
            ),
        };
        Self {
            ffmpeg: ffmpeg.unwrap_or_else(|| PathBuf::from("ffmpeg")),
            ffprobe,
        }
    }
}

/// The ffmpeg program that would be run (`SPARSETT_FFMPEG`, else `ffmpeg` from `PATH`).
pub fn program() -> PathBuf {
    Tools::from_env().ffmpeg
}

/// Whether the ffmpeg of `tools` runs.
pub fn available(tools: &Tools) -> bool {
    version(tools).is_ok()
}

fn missing(verb: &str, spec: &str, tools: &Tools) -> Error {
    let which = if tools.ffmpeg == Path::new("ffmpeg") {
        String::new()
    } else {
        format!("; {} was not found", tools.ffmpeg.display())
    };
    Error::Other(format!(
        "{verb} {spec} needs the ffmpeg program (Debian: apt-get install ffmpeg){which}"
    ))
}

/// Spawns `program`; a missing program is reported as `Ok(None)` so callers can word it themselves.
fn spawn(cmd: &mut Command, what: &str) -> Result<Option<Child>> {
    match cmd.spawn() {
        Ok(child) => Ok(Some(child)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: what.to_string(),
            source,
        }),
    }
}

/// See [`parse_version`].
fn version(tools: &Tools) -> std::io::Result<Option<(u32, u32)>> {
    let out = Command::new(&tools.ffmpeg)
        .arg("-version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_version(&text))
}

/// `(major, minor)` from `ffmpeg -version`'s first line (`ffmpeg version 5.1.9-0+deb12u1 …`, `… n4.4.2 …`);
/// `None` for builds from git (`N-112345-g…`).
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().nth(2)?;
    let v = v.strip_prefix('n').unwrap_or(v);
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// ffmpeg's argument for a local path: `file:` keeps a name with a colon from reading as a protocol.
fn input_arg(spec: &str, is_url: bool) -> OsString {
    if !is_url && spec.contains(':') {
        OsString::from(format!("file:{spec}"))
    } else {
        OsString::from(spec)
    }
}

/// What the probe learned about the first video stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// As decoded frames come out, i.e. after ffmpeg's automatic rotation.
    pub width: u32,
    pub height: u32,
    pub fps: Option<f64>,
    pub frames: Option<usize>,
}

/// Parses `ffprobe -of default=noprint_wrappers=1` output (`width=640`, `rotation=-90`, …).
pub fn parse_ffprobe(text: &str) -> Option<Probe> {
    let (mut w, mut h, mut rotation) = (None, None, 0.0);
    let (mut avg, mut real, mut frames) = (None, None, None);
    for line in text.lines() {
        let Some((key, val)) = line.trim().split_once('=') else {
            continue;
        };
        match key {
            "width" => w = w.or(val.parse::<u32>().ok()),
            "height" => h = h.or(val.parse::<u32>().ok()),
            "avg_frame_rate" => avg = avg.or(parse_rate(val)),
            "r_frame_rate" => real = real.or(parse_rate(val)),
            "nb_frames" => frames = frames.or(val.parse::<usize>().ok()),
            "rotation" | "TAG:rotate" => rotation = val.parse::<f64>().unwrap_or(rotation),
            _ => {}
        }
    }
    let (w, h) = (w.filter(|&v| v > 0)?, h.filter(|&v| v > 0)?);
    let (width, height) = rotate(w, h, rotation);
    Some(Probe {
        width,
        height,
        fps: avg.or(real),
        frames,
    })
}

/// Parses the stream report of `ffmpeg -i` (`Stream #0:0…: Video: h264 …, 640x480 [SAR 1:1 DAR 4:3],
/// …, 30 fps, …` and `displaymatrix: rotation of -90.00 degrees`), for systems without ffprobe.
pub fn parse_ffmpeg_report(text: &str) -> Option<Probe> {
    let mut lines = text.lines().skip_while(|l| !is_video_stream(l));
    let stream = lines.next()?;
    let mut size = None;
    let mut fps = None;
    for part in stream.split(',') {
        let part = part.trim();
        let word = part.split_whitespace().next().unwrap_or("");
        // The codec tag `(avc1 / 0x31637661)` also has an `x`; a zero width rules it out.
        if let Some((a, b)) = word.split_once('x') {
            if let (Ok(w), Ok(h)) = (a.parse::<u32>(), b.parse::<u32>()) {
                if w > 0 && h > 0 && size.is_none() {
                    size = Some((w, h));
                }
            }
        }
        if let Some(v) = part.strip_suffix(" fps") {
            fps = v.trim().parse::<f64>().ok().filter(|f| *f > 0.0);
        }
    }
    // The rotation belongs to this stream if it comes before the next stream's line.
    let rotation = lines
        .take_while(|l| !l.trim_start().starts_with("Stream #"))
        .find_map(|l| {
            let rest = l.split("rotation of ").nth(1)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or(0.0);
    let (w, h) = size?;
    let (width, height) = rotate(w, h, rotation);
    Some(Probe {
        width,
        height,
        fps,
        frames: None,
    })
}

fn is_video_stream(line: &str) -> bool {
    line.trim_start().starts_with("Stream #") && line.contains(": Video: ")
}

/// ffmpeg rotates decoded frames by the stream's display matrix; a quarter turn swaps the sides.
fn rotate(w: u32, h: u32, degrees: f64) -> (u32, u32) {
    let quarter = (degrees / 90.0).round() as i64;
    if quarter.rem_euclid(2) == 1 {
        (h, w)
    } else {
        (w, h)
    }
}

fn parse_rate(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
    Some(n / d).filter(|f| f.is_finite() && *f > 0.0)
}

/// Collects a child's stderr on a thread, so a chatty ffmpeg never blocks on a full pipe, and keeps the
/// last lines for error messages.
struct StderrTail {
    lines: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl StderrTail {
    const KEEP: usize = 20;

    fn start(child: &mut Child) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let thread = child.stderr.take().map(|err| {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let mut l = lines.lock().unwrap_or_else(|p| p.into_inner());
                    if l.len() == Self::KEEP {
                        l.remove(0);
                    }
                    l.push(line);
                }
            })
        });
        Self { lines, thread }
    }

    /// The last non-empty line, after the child has closed its stderr (call after `wait`).
    fn last_line(&mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        last_meaningful(lines.iter().map(String::as_str))
    }
}

/// The last non-empty line other than ffmpeg's "At least one output file must be specified" (which a
/// bare `ffmpeg -i` always ends with).
fn last_meaningful<'a>(lines: impl DoubleEndedIterator<Item = &'a str>) -> String {
    lines
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("At least one output file"))
        .unwrap_or("(no message)")
        .to_string()
}

/// A video decoded by ffmpeg into raw RGB frames.
pub struct FfmpegSource {
    spec: String,
    probe: Probe,
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    stderr: StderrTail,
    index: usize,
}

impl FfmpegSource {
    pub fn open(spec: &str) -> Result<Self> {
        Self::open_with(spec, &Tools::from_env())
    }

    /// Opens `spec` with the given programs. A local path must exist; URLs (`scheme://…`) are left to ffmpeg.
    pub fn open_with(spec: &str, tools: &Tools) -> Result<Self> {
        let is_url = spec.contains("://");
        if !is_url {
            std::fs::metadata(spec).map_err(|source| Error::Io {
                path: spec.to_string(),
                source,
            })?;
        }
        let version = version(tools).map_err(|e| match e.kind() {
            ErrorKind::NotFound => missing("reading", spec, tools),
            _ => Error::Io {
                path: tools.ffmpeg.display().to_string(),
                source: e,
            },
        })?;
        let input = input_arg(spec, is_url);
        let probe = probe(spec, &input, tools)?;
        // Passthrough: every decoded frame exactly once (the default would duplicate or drop frames of
        // variable-rate videos to fit a constant rate). `-vsync` became `-fps_mode` in 5.1 and is gone in 9.
        let sync = match version {
            Some(v) if v < (5, 1) => "-vsync",
            _ => "-fps_mode",
        };
        let mut cmd = Command::new(&tools.ffmpeg);
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
            .arg(&input)
            .args(["-map", "0:v:0", sync, "passthrough"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(&mut cmd, &tools.ffmpeg.display().to_string())?
            .ok_or_else(|| missing("reading", spec, tools))?;
        let stderr = StderrTail::start(&mut child);
        Ok(Self {
            spec: spec.to_string(),
            probe,
            stdout: child.stdout.take(),
            child: Some(child),
            stderr,
            index: 0,
        })
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Waits for ffmpeg to exit; its failure becomes an error quoting its last message.
    fn finish_child(&mut self) -> Result<()> {
        self.stdout = None;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait().map_err(|source| Error::Io {
            path: self.spec.clone(),
            source,
        })?;
        if status.success() {
            return Ok(());
        }
        Err(Error::Other(format!(
            "ffmpeg could not read {}: {}",
            self.spec,
            self.stderr.last_line()
        )))
    }
}

fn probe(spec: &str, input: &OsStr, tools: &Tools) -> Result<Probe> {
    if let Some(ffprobe) = &tools.ffprobe {
        let mut cmd = Command::new(ffprobe);
        cmd.args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
            .arg(
                "stream=width,height,avg_frame_rate,r_frame_rate,nb_frames\
                 :stream_tags=rotate:stream_side_data=rotation",
            )
            .args(["-of", "default=noprint_wrappers=1"])
            .arg(input)
            .stdin(Stdio::null());
        match cmd.output() {
            Ok(out) => {
                if !out.status.success() {
                    let err = String::from_utf8_lossy(&out.stderr);
                    return Err(Error::Other(format!(
                        "ffprobe could not read {spec}: {}",
                        last_meaningful(err.lines())
                    )));
                }
                return parse_ffprobe(&String::from_utf8_lossy(&out.stdout))
                    .ok_or_else(|| Error::Other(format!("{spec}: no video stream")));
            }
            // No ffprobe: ffmpeg's own report says enough.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    path: ffprobe.display().to_string(),
                    source,
                })
            }
        }
    }
    let out = Command::new(&tools.ffmpeg)
        .args(["-hide_banner", "-nostdin", "-i"])
        .arg(input)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => missing("reading", spec, tools),
            _ => Error::Io {
                path: tools.ffmpeg.display().to_string(),
                source: e,
            },
        })?;
    let report = String::from_utf8_lossy(&out.stderr);
    parse_ffmpeg_report(&report).ok_or_else(|| {
        if report
            .lines()
            .any(|l| l.trim_start().starts_with("Stream #"))
        {
            Error::Other(format!("{spec}: no video stream"))
        } else {
            Error::Other(format!(
                "ffmpeg could not read {spec}: {}",
                last_meaningful(report.lines())
            ))
        }
    })
}

impl VideoSource for FfmpegSource {
    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let Some(out) = self.stdout.as_mut() else {
            return Ok(None);
        };
        let (w, h) = (self.probe.width, self.probe.height);
        let mut buf = vec![0u8; w as usize * h as usize * 3];
        let got = read_full(out, &mut buf).map_err(|source| Error::Io {
            path: self.spec.clone(),
            source,
        })?;
        if got == buf.len() {
            self.index += 1;
            return Ok(RgbImage::from_raw(w, h, buf));
        }
        self.finish_child()?;
        if got == 0 {
            return Ok(None);
        }
        Err(Error::Other(format!(
            "{}: ffmpeg's output ended inside frame {} (counting from 0): {got} of {} bytes; the frames \
             are not the probed {w}x{h}",
            self.spec,
            self.index,
            buf.len()
        )))
    }

    fn len_hint(&self) -> Option<usize> {
        self.probe.frames
    }

    fn fps(&self) -> Option<f64> {
        self.probe.fps
    }

    fn describe(&self) -> String {
        let rate = match self.probe.fps {
            Some(f) => format!(", {f:.3} fps"),
            None => String::new(),
        };
        format!(
            "{} (ffmpeg, {}x{}{rate})",
            self.spec, self.probe.width, self.probe.height
        )
    }
}

impl Drop for FfmpegSource {
    fn drop(&mut self) {
        self.stdout = None;
        if let Some(mut child) = self.child.take() {
            // Stopped early (or a camera that never ends): ffmpeg need not finish decoding.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(t) = self.stderr.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Frames encoded by ffmpeg; the process starts with the first frame, when the size is known.
pub struct FfmpegSink {
    spec: String,
    tools: Tools,
    rate: (u32, u32),
    size: Option<(u32, u32)>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stderr: Option<StderrTail>,
}

impl FfmpegSink {
    pub fn create(spec: &str, fps: f64) -> Result<Self> {
        Self::create_with(spec, fps, &Tools::from_env())
    }

    /// Checks that ffmpeg runs and creates the parent folders now, so a bad set-up fails before any work.
    pub fn create_with(spec: &str, fps: f64, tools: &Tools) -> Result<Self> {
        let rate = super::fps_rational(fps)?;
        version(tools).map_err(|e| match e.kind() {
            ErrorKind::NotFound => missing("writing", spec, tools),
            _ => Error::Io {
                path: tools.ffmpeg.display().to_string(),
                source: e,
            },
        })?;
        if let Some(parent) = Path::new(spec)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        Ok(Self {
            spec: spec.to_string(),
            tools: tools.clone(),
            rate,
            size: None,
            child: None,
            stdin: None,
            stderr: None,
        })
    }

    /// The encoder arguments for the output's extension.
    fn output_args(&self, w: u32, h: u32) -> Vec<String> {
        let ext = Path::new(&self.spec)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            // One palette for the whole clip: ffmpeg's default GIF dithering to a fixed palette is blotchy.
            "gif" => vec![
                "-filter_complex".into(),
                "[0:v]split[a][b];[a]palettegen[p];[b][p]paletteuse".into(),
            ],
            // 4:2:0 is what players accept, and it needs even sides: pad with one black row or column
            // rather than crop, so no tracked pixel is lost.
            "mp4" | "m4v" | "mov" | "mkv" | "avi" | "webm" => {
                let mut args = Vec::new();
                if w % 2 == 1 || h % 2 == 1 {
                    args.extend(["-vf".into(), "pad=ceil(iw/2)*2:ceil(ih/2)*2".into()]);
                }
                args.extend(["-pix_fmt".into(), "yuv420p".into()]);
                args
            }
            // Written natively unless a caller asks ffmpeg explicitly; its muxer needs planar YUV.
            "y4m" => vec!["-pix_fmt".into(), "yuv420p".into()],
            _ => Vec::new(),
        }
    }

    fn start(&mut self, w: u32, h: u32) -> Result<()> {
        let mut cmd = Command::new(&self.tools.ffmpeg);
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
            .args(["-s", &format!("{w}x{h}")])
            .args(["-r", &format!("{}/{}", self.rate.0, self.rate.1)])
            .args(["-i", "-"])
            .args(self.output_args(w, h))
            .arg(input_arg(&self.spec, false))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn(&mut cmd, &self.tools.ffmpeg.display().to_string())?
            .ok_or_else(|| missing("writing", &self.spec, &self.tools))?;
        self.stderr = Some(StderrTail::start(&mut child));
        self.stdin = child.stdin.take();
        self.child = Some(child);
        Ok(())
    }

    /// Closes ffmpeg's input and waits for it to write the file.
    fn close(&mut self) -> Result<()> {
        self.stdin = None;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait().map_err(|source| Error::Io {
            path: self.spec.clone(),
            source,
        })?;
        let msg = self
            .stderr
            .as_mut()
            .map_or_else(|| "(no message)".into(), StderrTail::last_line);
        if status.success() {
            return Ok(());
        }
        Err(Error::Other(format!(
            "ffmpeg could not write {}: {msg}",
            self.spec
        )))
    }
}

impl VideoSink for FfmpegSink {
    fn write(&mut self, frame: &RgbImage) -> Result<()> {
        let size = (frame.width(), frame.height());
        match self.size {
            None => {
                if size.0 == 0 || size.1 == 0 {
                    return Err(Error::Other(format!(
                        "{}: cannot write an empty {}x{} frame",
                        self.spec, size.0, size.1
                    )));
                }
                self.start(size.0, size.1)?;
                self.size = Some(size);
            }
            Some(first) if first != size => {
                return Err(Error::Other(format!(
                    "{}: frame is {}x{}, but the video is {}x{}; all frames must have one size",
                    self.spec, size.0, size.1, first.0, first.1
                )))
            }
            Some(_) => {}
        }
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(Error::Other(format!(
                "{}: ffmpeg has already stopped",
                self.spec
            )));
        };
        if let Err(e) = stdin.write_all(frame.as_raw()) {
            // A broken pipe means ffmpeg exited: its own message says why.
            self.close()?;
            return Err(Error::Io {
                path: self.spec.clone(),
                source: e,
            });
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.close()
    }
}

impl Drop for FfmpegSink {
    fn drop(&mut self) {
        // Not finished explicitly: still let ffmpeg complete the file (errors have no one to go to).
        let _ = self.close();
    }
}
