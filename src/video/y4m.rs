//! YUV4MPEG2 (`.y4m`) read and written natively: the uncompressed format ffmpeg and most codec tools
//! exchange, so raw clips need no external program.
//!
//! Colour conversion is BT.601 with limited ("TV") range, ffmpeg's default for untagged YUV:
//!
//! ```text
//! Kr = 0.299, Kb = 0.114, Kg = 1 − Kr − Kb = 0.587
//! Y' = (Y − 16)·255/219        Cb = (U − 128)·255/224        Cr = (V − 128)·255/224
//! R = Y' + 2(1 − Kr)·Cr                                  = Y' + 1.402·Cr
//! G = Y' − 2Kb(1 − Kb)/Kg·Cb − 2Kr(1 − Kr)/Kg·Cr         = Y' − 0.344136·Cb − 0.714136·Cr
//! B = Y' + 2(1 − Kb)·Cb                                  = Y' + 1.772·Cb
//! ```
//!
//! each rounded to the nearest integer and clamped to 0..=255. ffmpeg's 4:4:4 conversion gives the same
//! values; its fast 4:2:0 path works in lower fixed-point precision and truncates, so its values there
//! can be one or two levels lower. Chroma is upsampled by nearest neighbour (each chroma sample covers
//! its 2×2 block in 4:2:0, its 2×1 pair in 4:2:2), as ffmpeg's unscaled converter does; the chroma
//! siting variants (`420jpeg`, `420mpeg2`, `420paldv`) therefore read alike. `mono` frames are grey
//! with R = G = B = Y, unexpanded, as ffmpeg reads them.
//!
//! The writer inverts the same matrix (`E = Kr·R + Kg·G + Kb·B`, `Y = 16 + E·219/255`,
//! `U = 128 + (B − E)/1.772·224/255`, `V = 128 + (R − E)/1.402·224/255`, rounded); for 4:2:0 the chroma
//! of each 2×2 block is the mean of its pixels' chroma (the pixels inside the frame, at odd edges).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::{VideoSink, VideoSource};
use crate::{Error, Result};

const KR: f64 = 0.299;
const KB: f64 = 0.114;
const KG: f64 = 1.0 - KR - KB;
const Y_SCALE: f32 = (255.0 / 219.0) as f32;
const C_SCALE: f64 = 255.0 / 224.0;
const R_CR: f32 = (2.0 * (1.0 - KR) * C_SCALE) as f32;
const G_CB: f32 = (2.0 * KB * (1.0 - KB) / KG * C_SCALE) as f32;
const G_CR: f32 = (2.0 * KR * (1.0 - KR) / KG * C_SCALE) as f32;
const B_CB: f32 = (2.0 * (1.0 - KB) * C_SCALE) as f32;

/// Longest header line accepted: real headers are under 100 bytes; the bound keeps a file that is not
/// Y4M from being read whole in search of a newline.
const MAX_LINE: usize = 4096;
/// 16384 × 16384: larger frames are a damaged header, not a video.
const MAX_PIXELS: u64 = 1 << 28;

/// One pixel, BT.601 limited range → RGB (the formula in the module documentation).
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let yp = (y as f32 - 16.0) * Y_SCALE;
    let (cb, cr) = (u as f32 - 128.0, v as f32 - 128.0);
    [yp + R_CR * cr, yp - G_CB * cb - G_CR * cr, yp + B_CB * cb].map(to_u8)
}

/// One pixel, RGB → BT.601 limited range, unrounded (4:2:0 chroma averages these before rounding).
pub fn rgb_to_yuv(rgb: [u8; 3]) -> [f32; 3] {
    let [r, g, b] = rgb.map(|c| c as f64);
    let e = KR * r + KG * g + KB * b;
    [
        16.0 + e * 219.0 / 255.0,
        128.0 + (b - e) / (2.0 * (1.0 - KB)) / C_SCALE,
        128.0 + (r - e) / (2.0 * (1.0 - KR)) / C_SCALE,
    ]
    .map(|c| c as f32)
}

fn to_u8(x: f32) -> u8 {
    x.round().clamp(0.0, 255.0) as u8
}

/// The chroma layouts the reader accepts (8-bit only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colorspace {
    /// `420jpeg`, `420paldv`, `420mpeg2`, `420`, or no `C` tag.
    C420,
    C422,
    C444,
    Mono,
}

impl Colorspace {
    /// Chroma plane size for a `w`×`h` frame (zero for mono).
    fn chroma_size(self, w: usize, h: usize) -> (usize, usize) {
        match self {
            Colorspace::C420 => (w.div_ceil(2), h.div_ceil(2)),
            Colorspace::C422 => (w.div_ceil(2), h),
            Colorspace::C444 => (w, h),
            Colorspace::Mono => (0, 0),
        }
    }
}

/// The parts of a stream header the reader uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Y4mHeader {
    pub width: u32,
    pub height: u32,
    /// `F` as numerator, denominator; `None` when absent or `0:0` (unknown).
    pub rate: Option<(u32, u32)>,
    pub colorspace: Colorspace,
    /// The `C` tag as written (`420jpeg` when absent), for messages.
    pub colorspace_tag: String,
}

impl Y4mHeader {
    /// Bytes of one frame's planes.
    pub fn frame_bytes(&self) -> usize {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = self.colorspace.chroma_size(w, h);
        w * h + 2 * cw * ch
    }

    /// Parses the first line (without its newline); `name` labels errors.
    pub fn parse(name: &str, line: &[u8]) -> Result<Self> {
        let bad = |msg: String| Error::Other(format!("{name}: {msg}"));
        let text = std::str::from_utf8(line)
            .map_err(|_| bad("not a YUV4MPEG2 file (header is not text)".into()))?;
        let mut tokens = text.split(' ').filter(|t| !t.is_empty());
        if tokens.next() != Some("YUV4MPEG2") {
            return Err(bad(
                "not a YUV4MPEG2 file (it does not start with 'YUV4MPEG2 ')".into(),
            ));
        }
        let (mut width, mut height, mut rate) = (None, None, None);
        let mut tag = "420jpeg".to_string();
        for t in tokens {
            let (key, val) = t.split_at(1);
            match key {
                "W" | "H" => {
                    let n: u32 = val
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad(format!("bad frame size '{t}' in the header")))?;
                    *(if key == "W" { &mut width } else { &mut height }) = Some(n);
                }
                "F" => {
                    let parsed = val
                        .split_once(':')
                        .and_then(|(n, d)| Some((n.parse::<u32>().ok()?, d.parse::<u32>().ok()?)));
                    rate = match parsed {
                        Some((n, d)) if n > 0 && d > 0 => Some((n, d)),
                        Some(_) => None,
                        None => return Err(bad(format!("bad frame rate '{t}' in the header"))),
                    };
                }
                "C" => tag = val.to_string(),
                // Interlacing, pixel aspect and extensions do not change how frames are read.
                _ => {}
            }
        }
        let colorspace = match tag.as_str() {
            "420jpeg" | "420paldv" | "420mpeg2" | "420" => Colorspace::C420,
            "422" => Colorspace::C422,
            "444" => Colorspace::C444,
            "mono" => Colorspace::Mono,
            _ => {
                return Err(bad(format!(
                    "colourspace C{tag} is not supported (8-bit 420jpeg, 420paldv, 420mpeg2, 420, 422, \
                     444 and mono are)"
                )))
            }
        };
        let (width, height) = match (width, height) {
            (Some(w), Some(h)) => (w, h),
            _ => return Err(bad("the header lacks the frame size (W and H)".into())),
        };
        if width as u64 * height as u64 > MAX_PIXELS {
            return Err(bad(format!(
                "frame size {width}x{height} is implausibly large"
            )));
        }
        Ok(Self {
            width,
            height,
            rate,
            colorspace,
            colorspace_tag: tag,
        })
    }
}

/// A Y4M stream from a file or any reader.
pub struct Y4mSource {
    name: String,
    reader: Box<dyn BufRead + Send>,
    header: Y4mHeader,
    header_line_len: usize,
    index: usize,
    len_hint: Option<usize>,
    planes: Vec<u8>,
}

impl Y4mSource {
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut src = Self::from_reader(&path.display().to_string(), file)?;
        // Exact when FRAME lines carry no parameters, which is what every common writer emits.
        let header_len = src.header_line_len as u64;
        let per_frame = (src.header.frame_bytes() + "FRAME\n".len()) as u64;
        src.len_hint = Some((file_len.saturating_sub(header_len) / per_frame) as usize);
        Ok(src)
    }

    /// Reads the stream header from `r`; `name` labels errors.
    pub fn from_reader(name: &str, r: impl Read + Send + 'static) -> Result<Self> {
        let mut reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 16, r));
        let io = |source| Error::Io {
            path: name.to_string(),
            source,
        };
        let line = match read_line(&mut reader).map_err(io)? {
            Line::Full(line) => line,
            Line::Eof => {
                return Err(Error::Other(format!(
                    "{name}: empty file, not a YUV4MPEG2 stream"
                )))
            }
            Line::Cut | Line::TooLong => {
                return Err(Error::Other(format!(
                    "{name}: not a YUV4MPEG2 stream (no header line)"
                )))
            }
        };
        let header = Y4mHeader::parse(name, &line)?;
        let planes = vec![0; header.frame_bytes()];
        Ok(Self {
            name: name.to_string(),
            reader,
            header,
            header_line_len: line.len() + 1,
            index: 0,
            len_hint: None,
            planes,
        })
    }

    pub fn header(&self) -> &Y4mHeader {
        &self.header
    }

    fn truncated(&self, detail: &str) -> Error {
        Error::Other(format!(
            "{}: frame {} (counting from 0) is truncated: {detail}",
            self.name, self.index
        ))
    }

    fn to_rgb(&self) -> RgbImage {
        let (w, h) = (self.header.width as usize, self.header.height as usize);
        let (cw, ch) = self.header.colorspace.chroma_size(w, h);
        let (luma, chroma) = self.planes.split_at(w * h);
        let (u_plane, v_plane) = chroma.split_at(cw * ch);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let l = luma[y * w + x];
                let px = match self.header.colorspace {
                    Colorspace::Mono => [l; 3],
                    cs => {
                        let (sx, sy) = match cs {
                            Colorspace::C420 => (x / 2, y / 2),
                            Colorspace::C422 => (x / 2, y),
                            _ => (x, y),
                        };
                        yuv_to_rgb(l, u_plane[sy * cw + sx], v_plane[sy * cw + sx])
                    }
                };
                rgb.extend_from_slice(&px);
            }
        }
        RgbImage::from_raw(w as u32, h as u32, rgb).expect("buffer sized from the header")
    }
}

impl VideoSource for Y4mSource {
    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let read = read_line(&mut self.reader).map_err(|source| Error::Io {
            path: self.name.clone(),
            source,
        })?;
        let line = match read {
            Line::Eof => return Ok(None),
            Line::Full(line) => line,
            Line::Cut => return Err(self.truncated("the file ends inside its FRAME line")),
            Line::TooLong => Vec::new(),
        };
        if !(line.starts_with(b"FRAME") && matches!(line.get(5), None | Some(b' '))) {
            return Err(Error::Other(format!(
                "{}: frame {} (counting from 0) does not start with a FRAME line; the file is damaged \
                 or its header's size is wrong",
                self.name, self.index
            )));
        }
        let mut planes = std::mem::take(&mut self.planes);
        let got = read_full(&mut self.reader, &mut planes).map_err(|source| Error::Io {
            path: self.name.clone(),
            source,
        });
        self.planes = planes;
        let got = got?;
        if got < self.planes.len() {
            let detail = format!(
                "the file ends after {got} of its {} bytes of pixels",
                self.planes.len()
            );
            return Err(self.truncated(&detail));
        }
        let img = self.to_rgb();
        self.index += 1;
        Ok(Some(img))
    }

    fn len_hint(&self) -> Option<usize> {
        self.len_hint
    }

    fn fps(&self) -> Option<f64> {
        self.header.rate.map(|(n, d)| n as f64 / d as f64)
    }

    fn describe(&self) -> String {
        let rate = match self.fps() {
            Some(f) => format!(", {f:.3} fps"),
            None => String::new(),
        };
        format!(
            "{} (Y4M {}x{} C{}{rate})",
            self.name, self.header.width, self.header.height, self.header.colorspace_tag
        )
    }
}

enum Line {
    /// End of stream before any byte.
    Eof,
    /// A line, without its newline.
    Full(Vec<u8>),
    /// The stream ended inside the line.
    Cut,
    /// No newline within [`MAX_LINE`] bytes.
    TooLong,
}

fn read_line(r: &mut dyn BufRead) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    Ok(if n == 0 {
        Line::Eof
    } else if line.last() == Some(&b'\n') {
        line.pop();
        Line::Full(line)
    } else if n > MAX_LINE {
        Line::TooLong
    } else {
        Line::Cut
    })
}

/// Fills `buf` as far as the stream allows; returns the bytes read (short only at end of stream).
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The chroma layout the writer produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chroma {
    /// `C420jpeg`: what players and encoders expect.
    C420,
    /// `C444`: no chroma loss.
    C444,
}

/// Writes a Y4M file; the header goes out with the first frame, whose size every later frame must have.
pub struct Y4mSink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    rate: (u32, u32),
    chroma: Chroma,
    size: Option<(u32, u32)>,
    planes: Vec<u8>,
}

impl Y4mSink {
    /// Creates the file (and its parent folders) at once, so an unwritable path fails before any work.
    pub fn create(path: &Path, fps: f64, chroma: Chroma) -> Result<Self> {
        let rate = super::fps_rational(fps)?;
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = File::create(path).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            out: Some(BufWriter::with_capacity(1 << 16, file)),
            rate,
            chroma,
            size: None,
            planes: Vec::new(),
        })
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn fill_planes(&mut self, frame: &RgbImage) {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let yuv: Vec<[f32; 3]> = frame.pixels().map(|p| rgb_to_yuv(p.0)).collect();
        self.planes.clear();
        self.planes.extend(yuv.iter().map(|p| to_u8(p[0])));
        match self.chroma {
            Chroma::C444 => {
                for c in 1..3 {
                    self.planes.extend(yuv.iter().map(|p| to_u8(p[c])));
                }
            }
            Chroma::C420 => {
                let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
                for c in 1..3 {
                    for sy in 0..ch {
                        for sx in 0..cw {
                            let (mut sum, mut n) = (0.0f32, 0.0f32);
                            for row in yuv.chunks(w).skip(2 * sy).take(2) {
                                for p in row.iter().skip(2 * sx).take(2) {
                                    sum += p[c];
                                    n += 1.0;
                                }
                            }
                            self.planes.push(to_u8(sum / n));
                        }
                    }
                }
            }
        }
    }
}

impl VideoSink for Y4mSink {
    fn write(&mut self, frame: &RgbImage) -> Result<()> {
        let size = (frame.width(), frame.height());
        if size.0 == 0 || size.1 == 0 {
            return Err(Error::Other(format!(
                "{}: cannot write an empty {}x{} frame",
                self.path.display(),
                size.0,
                size.1
            )));
        }
        let header = match self.size {
            None => {
                self.size = Some(size);
                let c = match self.chroma {
                    Chroma::C420 => "420jpeg",
                    Chroma::C444 => "444",
                };
                Some(format!(
                    "YUV4MPEG2 W{} H{} F{}:{} Ip A1:1 C{c}\n",
                    size.0, size.1, self.rate.0, self.rate.1
                ))
            }
            Some(first) if first != size => {
                return Err(Error::Other(format!(
                    "{}: frame is {}x{}, but the video is {}x{}; all frames must have one size",
                    self.path.display(),
                    size.0,
                    size.1,
                    first.0,
                    first.1
                )))
            }
            Some(_) => None,
        };
        self.fill_planes(frame);
        let out = self.out.as_mut().expect("present until finish");
        let written = header
            .map_or(Ok(()), |h| out.write_all(h.as_bytes()))
            .and_then(|_| out.write_all(b"FRAME\n"))
            .and_then(|_| out.write_all(&self.planes));
        written.map_err(|e| self.io(e))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let mut out = self.out.take().expect("present until finish");
        out.flush().map_err(|e| self.io(e))?;
        out.get_ref().sync_all().map_err(|e| self.io(e))
    }
}
