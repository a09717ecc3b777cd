//! Video input/output (`sparsett::video`) and drawing (`sparsett::render`).
//!
//! Expected values come from outside the code under test: frames generated here, pixel values of the
//! hand-written Y4M files worked out from the BT.601 formula in `src/video/y4m.rs` (arithmetic shown
//! beside them), outlines drawn as ASCII art. Tests that need the ffmpeg program print that they are
//! skipped when it is not on PATH.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use image::{Rgb, RgbImage};
use sparsett::render::{self, draw_box, draw_label, label_size, palette};
use sparsett::video::ffmpeg::{self, FfmpegSink, FfmpegSource, Tools};
use sparsett::video::folder::{natural_cmp, FolderSink, FrameFormat};
use sparsett::video::y4m::{Chroma, Y4mSink, Y4mSource};
use sparsett::video::{self, Prefetch, VideoSink, VideoSource};
use sparsett::Result;

// ---------------------------------------------------------------- helpers

/// A fresh, empty folder for one test, removed when the test ends (also when it fails).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("sparsett-video-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// xorshift64*: deterministic noise without a dependency.
struct Rng(u64);
impl Rng {
    fn byte(&mut self) -> u8 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    }
}

/// Gradient plus noise: every pixel differs, so any reordering or shift shows.
fn noisy_frame(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = Rng(seed * 7919 + 1);
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 255 / w.max(2)) as u8 ^ rng.byte() >> 3,
            (y * 255 / h.max(2)) as u8 ^ rng.byte() >> 3,
            rng.byte(),
        ])
    })
}

/// A smooth gradient (JPEG and video codecs reproduce it closely) shifted per frame.
fn smooth_frame(w: u32, h: u32, k: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (40 + x * 160 / w + 10 * k) as u8,
            (60 + y * 120 / h) as u8,
            (200 - 20 * k) as u8,
        ])
    })
}

/// Random colours, constant on each 2×2 block, so 4:2:0 chroma subsampling loses nothing.
fn block_frame(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = Rng(seed + 99);
    let (bw, bh) = (w.div_ceil(2), h.div_ceil(2));
    let blocks: Vec<[u8; 3]> = (0..bw * bh)
        .map(|_| [rng.byte(), rng.byte(), rng.byte()])
        .collect();
    RgbImage::from_fn(w, h, |x, y| Rgb(blocks[((y / 2) * bw + x / 2) as usize]))
}

fn read_all(src: &mut dyn VideoSource) -> Vec<RgbImage> {
    let mut frames = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        frames.push(f);
    }
    frames
}

fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y) as u64)
        .sum();
    total as f64 / a.as_raw().len() as f64
}

fn mean_colour(img: &RgbImage) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for p in img.pixels() {
        for (s, v) in sum.iter_mut().zip(p.0) {
            *s += v as f64;
        }
    }
    sum.map(|s| s / (img.width() * img.height()) as f64)
}

fn err_text<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn write_png(path: &Path, img: &RgbImage) {
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

fn ffmpeg_on_path() -> bool {
    let found = ffmpeg::available(&Tools::from_env());
    if !found {
        eprintln!("skipped: the ffmpeg program is not on PATH");
    }
    found
}

/// A source from a list, ending with an optional error: for prefetch tests.
struct ListSource {
    frames: Vec<RgbImage>,
    fail_at_end: bool,
    dropped: Arc<AtomicBool>,
}

impl VideoSource for ListSource {
    fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        if self.frames.is_empty() {
            if self.fail_at_end {
                self.fail_at_end = false;
                return Err(sparsett::Error::Other("list: broken frame 3".into()));
            }
            return Ok(None);
        }
        Ok(Some(self.frames.remove(0)))
    }
    fn len_hint(&self) -> Option<usize> {
        Some(self.frames.len())
    }
    fn fps(&self) -> Option<f64> {
        Some(12.5)
    }
    fn describe(&self) -> String {
        "list".into()
    }
}

impl Drop for ListSource {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------- image folders

#[test]
fn png_folder_reads_back_exactly() {
    let dir = scratch("png");
    let frames: Vec<RgbImage> = (0..3).map(|k| noisy_frame(7, 5, k)).collect();
    let mut sink = FolderSink::create(&dir, FrameFormat::Png).unwrap();
    for f in &frames {
        sink.write(f).unwrap();
    }
    Box::new(sink).finish().unwrap();
    assert!(dir.join("00000001.png").is_file() && dir.join("00000003.png").is_file());

    let mut src = video::open(dir.to_str().unwrap()).unwrap();
    assert_eq!(src.len_hint(), Some(3));
    assert_eq!(src.fps(), None);
    assert!(src.describe().contains("3 frames"), "{}", src.describe());
    let got = read_all(src.as_mut());
    assert_eq!(got, frames);
    assert!(src.next_frame().unwrap().is_none(), "stays at the end");
}

#[test]
fn jpeg_folder_reads_back_within_jpeg_tolerance() {
    let dir = scratch("jpeg");
    let spec = format!("{}/out/", dir.display());
    let frames: Vec<RgbImage> = (0..2).map(|k| smooth_frame(32, 24, k)).collect();
    let mut sink = video::create_sink(&spec, 25.0).unwrap();
    for f in &frames {
        sink.write(f).unwrap();
    }
    sink.finish().unwrap();
    assert!(dir.join("out/00000001.jpg").is_file());
    assert!(dir.join("out/00000002.jpg").is_file());

    let got = read_all(video::open(&spec).unwrap().as_mut());
    assert_eq!(got.len(), 2);
    for (g, f) in got.iter().zip(&frames) {
        // Quality-95 JPEG of a smooth gradient: quantisation and 4:2:0 chroma leave a mean error well
        // under 2 levels and a worst pixel under 16 (observed: 0.5 and 3).
        let (mean, max) = (mean_abs_diff(g, f), max_diff(g, f));
        assert!(mean < 2.0 && max < 16, "mean {mean}, max {max}");
    }
}

#[test]
fn folder_frames_follow_natural_order() {
    let dir = scratch("natural");
    // Name order would be 1, 10, 2; the frame's red value says which file it came from.
    for n in [10u8, 2, 1] {
        write_png(
            &dir.join(format!("{n}.png")),
            &RgbImage::from_pixel(3, 2, Rgb([n, 0, 0])),
        );
    }
    let got = read_all(video::open(dir.to_str().unwrap()).unwrap().as_mut());
    let order: Vec<u8> = got.iter().map(|f| f.get_pixel(0, 0).0[0]).collect();
    assert_eq!(order, [1, 2, 10]);

    use std::cmp::Ordering::*;
    assert_eq!(natural_cmp("img2.jpg", "img10.jpg"), Less);
    assert_eq!(natural_cmp("0009.jpg", "0010.jpg"), Less);
    assert_eq!(natural_cmp("b1", "a2"), Greater);
    assert_eq!(natural_cmp("a", "a1"), Less);
    // Same number, different padding: still a strict order, never Equal.
    assert_ne!(natural_cmp("01", "1"), Equal);
    assert_eq!(natural_cmp("x7", "x7"), Equal);
}

#[test]
fn folder_accepts_img_subfolder_and_mixed_case_extensions() {
    let dir = scratch("otb");
    let img = dir.join("img");
    fs::create_dir_all(&img).unwrap();
    fs::write(dir.join("groundtruth_rect.txt"), "1,2,3,4\n").unwrap();
    let a = noisy_frame(6, 4, 1);
    let b = noisy_frame(6, 4, 2);
    write_png(&img.join("0001.PNG"), &a);
    write_png(&img.join("0002.Png"), &b);
    // Neither a frame: macOS metadata companion and a text file.
    fs::write(img.join("._0001.png"), b"not an image").unwrap();
    fs::write(img.join("notes.txt"), b"hello").unwrap();
    let got = read_all(video::open(dir.to_str().unwrap()).unwrap().as_mut());
    assert_eq!(got, vec![a, b]);
}

#[test]
fn empty_folder_is_an_error_naming_it() {
    let dir = scratch("empty");
    fs::write(dir.join("readme.txt"), b"no frames here").unwrap();
    let msg = err_text(video::open(dir.to_str().unwrap()));
    assert!(msg.contains(dir.to_str().unwrap()), "{msg}");
    assert!(msg.contains("no JPEG or PNG frames"), "{msg}");
}

#[test]
fn deleted_and_corrupt_frames_are_named() {
    let dir = scratch("broken");
    for k in 1..=3 {
        write_png(&dir.join(format!("{k:04}.png")), &noisy_frame(4, 4, k));
    }
    let mut src = video::open(dir.to_str().unwrap()).unwrap();
    fs::remove_file(dir.join("0002.png")).unwrap();
    fs::write(dir.join("0003.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    assert!(src.next_frame().unwrap().is_some());
    let msg = err_text(src.next_frame());
    assert!(msg.contains("0002.png"), "{msg}");

    let mut src = video::open(dir.to_str().unwrap()).unwrap();
    src.next_frame().unwrap();
    let msg = err_text(src.next_frame());
    assert!(msg.contains("0003.png") && msg.contains("decode"), "{msg}");
}

#[test]
fn frames_of_another_size_are_named() {
    let dir = scratch("sizes");
    write_png(&dir.join("1.png"), &noisy_frame(4, 4, 1));
    write_png(&dir.join("2.png"), &noisy_frame(4, 4, 2));
    write_png(&dir.join("3.png"), &noisy_frame(5, 4, 3));
    let mut src = video::open(dir.to_str().unwrap()).unwrap();
    src.next_frame().unwrap();
    src.next_frame().unwrap();
    let msg = err_text(src.next_frame());
    assert!(
        msg.contains("3.png") && msg.contains("5x4") && msg.contains("1.png"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- Y4M

/// Y' = (Y−16)·255/219, Cb = (U−128)·255/224, Cr = (V−128)·255/224;
/// R = Y' + 1.402·Cr, G = Y' − 0.344136·Cb − 0.714136·Cr, B = Y' + 1.772·Cb; rounded, clamped.
#[test]
fn y4m_420_values_from_the_formula() {
    let dir = scratch("y4m420");
    let path = dir.join("t.y4m");
    let mut bytes = b"YUV4MPEG2 W4 H2 F25:1 Ip A1:1 C420jpeg\nFRAME\n".to_vec();
    bytes.extend([16, 235, 128, 90, 60, 180, 128, 200]); // Y, two rows of four
    bytes.extend([128, 160]); // U: left 2×2 block, right 2×2 block
    bytes.extend([128, 100]); // V
    fs::write(&path, bytes).unwrap();

    let mut src = video::open(path.to_str().unwrap()).unwrap();
    assert_eq!(src.fps(), Some(25.0));
    assert_eq!(src.len_hint(), Some(1));
    let f = src.next_frame().unwrap().unwrap();
    assert!(src.next_frame().unwrap().is_none());
    // Left block is grey (U = V = 128): Y' only. 16 → 0; 235 → 255; 60 → 44·1.164384 = 51.23;
    // 180 → 164·1.164384 = 190.96.
    // Right block: Cb = 32·255/224 = 36.4286, Cr = −28·255/224 = −31.875, so
    // R = Y' − 44.689, G = Y' − 12.536 + 22.763 = Y' + 10.227, B = Y' + 64.551.
    // Y 128: Y' = 130.411 → (85.72, 140.64, 194.96); Y 90: Y' = 86.164 → (41.48, 96.39, 150.72);
    // Y 200: Y' = 214.247 → (169.56, 224.47, 278.80 → 255).
    let want = [
        [[0, 0, 0], [255, 255, 255], [86, 141, 195], [41, 96, 151]],
        [
            [51, 51, 51],
            [191, 191, 191],
            [86, 141, 195],
            [170, 224, 255],
        ],
    ];
    for (y, row) in want.iter().enumerate() {
        for (x, px) in row.iter().enumerate() {
            assert_eq!(f.get_pixel(x as u32, y as u32).0, *px, "pixel ({x}, {y})");
        }
    }
}

#[test]
fn y4m_444_422_and_mono_values_from_the_formula() {
    let dir = scratch("y4m444");
    let y = [16u8, 235, 128, 90, 60, 180, 128, 200];
    // 4:4:4, one chroma sample per pixel.
    let path = dir.join("t444.y4m");
    let mut bytes = b"YUV4MPEG2 W4 H2 F30000:1001 C444 XYSCSS=444\nFRAME\n".to_vec();
    bytes.extend(y);
    bytes.extend([90, 200, 128, 16, 240, 100, 128, 128]);
    bytes.extend([240, 30, 128, 16, 16, 200, 128, 90]);
    fs::write(&path, bytes).unwrap();
    let mut src = video::open(path.to_str().unwrap()).unwrap();
    assert!((src.fps().unwrap() - 29.97003).abs() < 1e-4);
    let f = src.next_frame().unwrap().unwrap();
    // (Y, U, V) → (R, G, B) before rounding and clamping:
    // (16, 90, 240):  Y' 0,       Cb −43.259, Cr 127.5   → (178.76, −76.17, −76.66)
    // (235, 200, 30): Y' 255,     Cb 81.964,  Cr −111.56 → (98.59, 306.46, 400.24)
    // (128, 128, 128): Y' 130.411                         → 130.41 each
    // (90, 16, 16):   Y' 86.164,  Cb −127.5,  Cr −127.5  → (−92.59, 221.09, −139.77)
    // (60, 240, 16):  Y' 51.233,  Cb 127.5,   Cr −127.5  → (−127.52, 98.41, 277.16)
    // (180, 100, 200): Y' 190.959, Cb −31.875, Cr 81.964 → (305.87, 143.40, 134.48)
    // (200, 128, 90): Y' 214.247, Cb 0,       Cr −43.259 → (153.60, 245.14, 214.25)
    let want = [
        [[179, 0, 0], [99, 255, 255], [130, 130, 130], [0, 221, 0]],
        [
            [0, 98, 255],
            [255, 143, 134],
            [130, 130, 130],
            [154, 245, 214],
        ],
    ];
    for (yy, row) in want.iter().enumerate() {
        for (x, px) in row.iter().enumerate() {
            assert_eq!(
                f.get_pixel(x as u32, yy as u32).0,
                *px,
                "444 pixel ({x}, {yy})"
            );
        }
    }

    // 4:2:2: one chroma sample per horizontal pair, every row its own.
    let path = dir.join("t422.y4m");
    let mut bytes = b"YUV4MPEG2 W2 H2 C422\nFRAME\n".to_vec();
    bytes.extend([128, 128, 16, 235]);
    bytes.extend([160, 128]); // U per row
    bytes.extend([100, 128]); // V per row
    fs::write(&path, bytes).unwrap();
    let f = read_all(video::open(path.to_str().unwrap()).unwrap().as_mut()).remove(0);
    // Row 0 as the right block of the 4:2:0 test (Y 128): (86, 141, 195); row 1 grey: 0 and 255.
    assert_eq!(f.get_pixel(0, 0).0, [86, 141, 195]);
    assert_eq!(f.get_pixel(1, 0).0, [86, 141, 195]);
    assert_eq!(f.get_pixel(0, 1).0, [0, 0, 0]);
    assert_eq!(f.get_pixel(1, 1).0, [255, 255, 255]);

    // Mono: grey levels as stored (ffmpeg does not expand mono's range either).
    let path = dir.join("mono.y4m");
    let mut bytes = b"YUV4MPEG2 W3 H1 F0:0 Cmono\nFRAME\n".to_vec();
    bytes.extend([16, 100, 235]);
    fs::write(&path, bytes).unwrap();
    let mut src = video::open(path.to_str().unwrap()).unwrap();
    assert_eq!(src.fps(), None, "F0:0 means unknown");
    let f = src.next_frame().unwrap().unwrap();
    let px: Vec<[u8; 3]> = f.pixels().map(|p| p.0).collect();
    assert_eq!(px, [[16; 3], [100; 3], [235; 3]]);
}

#[test]
fn y4m_bad_headers_are_reported() {
    let dir = scratch("y4mbad");
    let cases: [(&[u8], &str); 5] = [
        (b"RIFF1234", "not a YUV4MPEG2"),
        (b"YUV4MPEG2 W4 H2 C420p10\n", "C420p10 is not supported"),
        (b"YUV4MPEG2 W4 C420\n", "frame size"),
        (b"YUV4MPEG2 W0 H2\n", "bad frame size"),
        (b"", "empty file"),
    ];
    for (i, (bytes, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.y4m"));
        fs::write(&path, bytes).unwrap();
        let msg = err_text(video::open(path.to_str().unwrap()));
        assert!(
            msg.contains(want) && msg.contains(&format!("bad{i}.y4m")),
            "{msg}"
        );
    }
}

#[test]
fn y4m_truncated_frame_names_its_index() {
    let dir = scratch("y4mtrunc");
    let path = dir.join("cut.y4m");
    let mut sink = Y4mSink::create(&path, 25.0, Chroma::C420).unwrap();
    for k in 0..3 {
        sink.write(&noisy_frame(6, 4, k)).unwrap();
    }
    Box::new(sink).finish().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 5);
    fs::write(&path, &bytes).unwrap();

    let mut src = video::open(path.to_str().unwrap()).unwrap();
    src.next_frame().unwrap().unwrap();
    src.next_frame().unwrap().unwrap();
    let msg = err_text(src.next_frame());
    assert!(
        msg.contains("frame 2") && msg.contains("truncated"),
        "{msg}"
    );

    // Cut inside the FRAME line of the second frame.
    let frame_len = 6 + 6 * 4 + 2 * 3 * 2;
    let header_len = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    fs::write(&path, &bytes[..header_len + frame_len + 3]).unwrap();
    let mut src = video::open(path.to_str().unwrap()).unwrap();
    src.next_frame().unwrap().unwrap();
    let msg = err_text(src.next_frame());
    assert!(
        msg.contains("frame 1") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn y4m_writer_reader_round_trip() {
    let dir = scratch("y4mround");
    // The reader inverts the writer's matrix, so only rounding separates them: Y, U, V each within
    // 0.5 of the exact value moves R by ≤ 0.58 + 1.402·0.57, G by ≤ 0.58 + (0.344 + 0.714)·0.57 and
    // B by ≤ 0.58 + 1.772·0.57 before the final rounding: at most 2 levels.
    for (chroma, w, h) in [
        (Chroma::C420, 10, 6),
        (Chroma::C420, 7, 5),
        (Chroma::C444, 7, 5),
    ] {
        let path = dir.join(format!("{chroma:?}-{w}x{h}.y4m"));
        let frames: Vec<RgbImage> = (0..3)
            .map(|k| match chroma {
                // 4:2:0 keeps one chroma per 2×2 block: only block-constant colour survives exactly.
                Chroma::C420 => block_frame(w, h, k),
                Chroma::C444 => noisy_frame(w, h, k),
            })
            .collect();
        let mut sink = Y4mSink::create(&path, 30000.0 / 1001.0, chroma).unwrap();
        for f in &frames {
            sink.write(f).unwrap();
        }
        Box::new(sink).finish().unwrap();
        let bytes = fs::read(&path).unwrap();
        let tag = if chroma == Chroma::C420 {
            "C420jpeg"
        } else {
            "C444"
        };
        let header = format!("YUV4MPEG2 W{w} H{h} F30000:1001 Ip A1:1 {tag}\n");
        assert!(bytes.starts_with(header.as_bytes()), "{:?}", &bytes[..40]);

        let mut src = Y4mSource::open(&path).unwrap();
        assert_eq!(src.len_hint(), Some(3));
        let got = read_all(&mut src);
        assert_eq!(got.len(), 3);
        for (g, f) in got.iter().zip(&frames) {
            assert!(
                max_diff(g, f) <= 2,
                "{chroma:?} {w}x{h}: {}",
                max_diff(g, f)
            );
        }
    }
}

#[test]
fn y4m_sink_rejects_a_size_change_and_sinks_reject_bad_rates() {
    let dir = scratch("y4msize");
    let mut sink = video::create_sink(dir.join("a.y4m").to_str().unwrap(), 25.0).unwrap();
    sink.write(&noisy_frame(4, 4, 0)).unwrap();
    let msg = err_text(sink.write(&noisy_frame(6, 4, 0)));
    assert!(msg.contains("6x4") && msg.contains("4x4"), "{msg}");
    for fps in [0.0, -1.0, f64::NAN] {
        let msg = err_text(video::create_sink(dir.join("b.y4m").to_str().unwrap(), fps));
        assert!(msg.contains("frame rate"), "{msg}");
    }
}

#[test]
fn empty_videos_open_and_first_frame_says_so() {
    let dir = scratch("emptyvid");
    let path = dir.join("none.y4m");
    fs::write(&path, b"YUV4MPEG2 W4 H2 F25:1 C420jpeg\n").unwrap();
    let mut src = video::open(path.to_str().unwrap()).unwrap();
    let msg = err_text(video::first_frame(src.as_mut()));
    assert!(
        msg.contains("none.y4m") && msg.contains("has no frames"),
        "{msg}"
    );

    let mut src = video::open(path.to_str().unwrap()).unwrap();
    assert!(src.next_frame().unwrap().is_none());
}

#[test]
fn sinks_by_spec() {
    let dir = scratch("sinks");
    // No extension and a trailing slash: folders of JPEGs.
    for spec in [dir.join("frames"), dir.join("slash/")] {
        let spec = spec.to_str().unwrap().to_string();
        let mut sink = video::create_sink(&spec, 10.0).unwrap();
        sink.write(&smooth_frame(8, 8, 0)).unwrap();
        sink.finish().unwrap();
        assert!(Path::new(&spec).join("00000001.jpg").is_file(), "{spec}");
    }
    let msg = err_text(video::open(dir.join("missing.mp4").to_str().unwrap()));
    assert!(msg.contains("missing.mp4"), "{msg}");
    let msg = err_text(video::open(dir.join("missing.Y4M").to_str().unwrap()));
    assert!(msg.contains("missing.Y4M"), "{msg}");
}

// ---------------------------------------------------------------- ffmpeg

#[test]
fn ffmpeg_missing_program_message() {
    let dir = scratch("noffmpeg");
    let clip = dir.join("clip.mp4");
    fs::write(&clip, b"whatever").unwrap();
    let tools = Tools {
        ffmpeg: PathBuf::from("/nonexistent/ffmpeg"),
        ffprobe: None,
    };
    let spec = clip.to_str().unwrap();
    let msg = err_text(FfmpegSource::open_with(spec, &tools));
    assert!(
        msg.contains(&format!(
            "reading {spec} needs the ffmpeg program (Debian: apt-get install ffmpeg)"
        )),
        "{msg}"
    );
    let out = dir.join("out.mp4");
    let msg = err_text(FfmpegSink::create_with(out.to_str().unwrap(), 25.0, &tools));
    assert!(
        msg.contains("needs the ffmpeg program") && msg.starts_with("writing"),
        "{msg}"
    );
    // A missing input is named before ffmpeg is looked for.
    let gone = dir.join("gone.mp4");
    let msg = err_text(FfmpegSource::open_with(gone.to_str().unwrap(), &tools));
    assert!(
        msg.contains("gone.mp4") && !msg.contains("needs the ffmpeg"),
        "{msg}"
    );
}

#[test]
fn ffmpeg_tools_from_environment_values() {
    let t = Tools::from_vars(None, None);
    assert_eq!(t.ffmpeg, PathBuf::from("ffmpeg"));
    assert_eq!(t.ffprobe, Some(PathBuf::from("ffprobe")));
    let t = Tools::from_vars(Some("/opt/ff/bin/ffmpeg".into()), None);
    assert_eq!(t.ffmpeg, PathBuf::from("/opt/ff/bin/ffmpeg"));
    assert_eq!(t.ffprobe, Some(PathBuf::from("/opt/ff/bin/ffprobe")));
    let t = Tools::from_vars(Some("ffmpeg6".into()), Some("".into()));
    assert_eq!(t.ffprobe, None);
    assert!(!ffmpeg::program().as_os_str().is_empty());
}

#[test]
fn ffmpeg_probe_parsers() {
    // ffprobe output of a 64×48 clip with a quarter-turn display matrix (recorded with ffmpeg 5.1).
    let p = ffmpeg::parse_ffprobe(
        "width=64\nheight=48\nr_frame_rate=10/1\navg_frame_rate=10/1\nnb_frames=5\nrotation=90\n",
    )
    .unwrap();
    assert_eq!(
        (p.width, p.height, p.fps, p.frames),
        (48, 64, Some(10.0), Some(5))
    );
    let p = ffmpeg::parse_ffprobe(
        "width=640\nheight=480\nr_frame_rate=26777/1000\navg_frame_rate=0/0\nnb_frames=N/A\n",
    )
    .unwrap();
    assert_eq!((p.width, p.height, p.frames), (640, 480, None));
    assert!((p.fps.unwrap() - 26.777).abs() < 1e-9);
    assert!(ffmpeg::parse_ffprobe("").is_none(), "no video stream");

    let report = "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'rot.mp4':\n  Duration: 00:00:00.50\n  \
        Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 64x48 \
        [SAR 1:1 DAR 4:3], 24 kb/s, 29.97 fps, 30 tbr, 10240 tbn (default)\n    Side data:\n      \
        displaymatrix: rotation of -90.00 degrees\nAt least one output file must be specified\n";
    let p = ffmpeg::parse_ffmpeg_report(report).unwrap();
    assert_eq!((p.width, p.height, p.fps), (48, 64, Some(29.97)));
    let plain = report.replace("rotation of -90.00", "rotation of 180.00");
    let p = ffmpeg::parse_ffmpeg_report(&plain).unwrap();
    assert_eq!((p.width, p.height), (64, 48));

    assert_eq!(
        ffmpeg::parse_version("ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2025"),
        Some((5, 1))
    );
    assert_eq!(
        ffmpeg::parse_version("ffmpeg version n4.4.2 Copyright"),
        Some((4, 4))
    );
    assert_eq!(
        ffmpeg::parse_version("ffmpeg version N-112345-gabc Copyright"),
        None
    );
}

#[test]
fn ffmpeg_mp4_round_trip() {
    if !ffmpeg_on_path() {
        return;
    }
    let dir = scratch("mp4");
    // Odd sides: the sink pads to even for yuv420p.
    let (w, h) = (33, 25);
    let frames: Vec<RgbImage> = (0..5).map(|k| smooth_frame(w, h, k)).collect();
    let out = dir.join("clip.mp4");
    let mut sink = video::create_sink(out.to_str().unwrap(), 10.0).unwrap();
    for f in &frames {
        sink.write(f).unwrap();
    }
    sink.finish().unwrap();

    let mut src = video::open(out.to_str().unwrap()).unwrap();
    assert_eq!(src.fps(), Some(10.0));
    assert_eq!(src.len_hint(), Some(5));
    assert!(src.describe().contains("ffmpeg"), "{}", src.describe());
    let got = read_all(src.as_mut());
    assert_eq!(got.len(), 5);
    // Without ffprobe the size and rate come from ffmpeg's own report; the frames are the same.
    let tools = Tools {
        ffprobe: None,
        ..Tools::from_env()
    };
    let mut src = FfmpegSource::open_with(out.to_str().unwrap(), &tools).unwrap();
    assert_eq!(src.fps(), Some(10.0));
    assert_eq!(read_all(&mut src), got);
    for (g, f) in got.iter().zip(&frames) {
        assert_eq!(g.dimensions(), (34, 26));
        let crop = image::imageops::crop_imm(g, 0, 0, w, h).to_image();
        // H.264 at its default quality on a smooth gradient plus two 4:2:0 conversions, the reading one
        // ffmpeg's truncating fast path (1–2 levels low): the mean colour stays within 4 levels
        // (observed: up to 2.3).
        let (a, b) = (mean_colour(&crop), mean_colour(f));
        for c in 0..3 {
            assert!(
                (a[c] - b[c]).abs() < 4.0,
                "channel {c}: {} vs {}",
                a[c],
                b[c]
            );
        }
    }
}

#[test]
fn ffmpeg_agrees_with_the_native_y4m_reader_and_writer() {
    if !ffmpeg_on_path() {
        return;
    }
    let dir = scratch("ffy4m");
    let tools = Tools::from_env();
    let frames: Vec<RgbImage> = (0..3).map(|k| block_frame(10, 6, k)).collect();

    // Our writer → ffmpeg's reader. Same matrix; ffmpeg's 4:2:0 fast path truncates in lower
    // precision (module docs of y4m.rs), so its values may sit up to 2 levels below ours: 2 + 2
    // (observed: 3).
    let ours = dir.join("ours.y4m");
    let mut sink = Y4mSink::create(&ours, 25.0, Chroma::C420).unwrap();
    for f in &frames {
        sink.write(f).unwrap();
    }
    Box::new(sink).finish().unwrap();
    let mut src = FfmpegSource::open_with(ours.to_str().unwrap(), &tools).unwrap();
    assert_eq!(src.fps(), Some(25.0));
    let theirs = read_all(&mut src);
    assert_eq!(theirs.len(), 3);
    for (t, f) in theirs.iter().zip(&frames) {
        assert!(max_diff(t, f) <= 4, "{}", max_diff(t, f));
    }

    // ffmpeg's writer → our reader. ffmpeg's RGB → YUV uses the same BT.601 limited matrix, but its
    // chroma downsampling filter reaches past 2×2 blocks, so solid frames test the matrix alone;
    // rounding on both sides bounds the difference (observed ≤ 1): 3.
    let frames: Vec<RgbImage> = [[200, 30, 40], [20, 180, 90], [30, 60, 220]]
        .into_iter()
        .map(|c| RgbImage::from_pixel(10, 6, Rgb(c)))
        .collect();
    let by_ffmpeg = dir.join("ffmpeg.y4m");
    let mut sink = FfmpegSink::create_with(by_ffmpeg.to_str().unwrap(), 25.0, &tools).unwrap();
    for f in &frames {
        sink.write(f).unwrap();
    }
    Box::new(sink).finish().unwrap();
    let got = read_all(&mut Y4mSource::open(&by_ffmpeg).unwrap());
    assert_eq!(got.len(), 3);
    for (g, f) in got.iter().zip(&frames) {
        assert!(max_diff(g, f) <= 3, "{}", max_diff(g, f));
    }
}

#[test]
fn ffmpeg_failure_quotes_its_message() {
    if !ffmpeg_on_path() {
        return;
    }
    let dir = scratch("fferr");
    let junk = dir.join("junk.mp4");
    fs::write(&junk, vec![0x42u8; 4096]).unwrap();
    let msg = err_text(video::open(junk.to_str().unwrap()));
    assert!(
        msg.contains("junk.mp4") && msg.contains("Invalid data"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- prefetch

#[test]
fn prefetch_yields_the_same_frames_and_forwards_errors() {
    let frames: Vec<RgbImage> = (0..6).map(|k| noisy_frame(5, 3, k)).collect();
    let dropped = Arc::new(AtomicBool::new(false));
    let list = ListSource {
        frames: frames.clone(),
        fail_at_end: false,
        dropped: dropped.clone(),
    };
    let mut pre = Prefetch::with_depth(Box::new(list), 2);
    assert_eq!((pre.len_hint(), pre.fps()), (Some(6), Some(12.5)));
    assert_eq!(read_all(&mut pre), frames);
    assert!(pre.next_frame().unwrap().is_none());
    drop(pre);
    assert!(
        dropped.load(Ordering::SeqCst),
        "source released with the thread"
    );

    let list = ListSource {
        frames: frames[..3].to_vec(),
        fail_at_end: true,
        dropped: Arc::new(AtomicBool::new(false)),
    };
    let mut pre = Prefetch::new(Box::new(list));
    for f in &frames[..3] {
        assert_eq!(&pre.next_frame().unwrap().unwrap(), f);
    }
    let msg = err_text(pre.next_frame());
    assert!(msg.contains("broken frame 3"), "{msg}");
    assert!(pre.next_frame().unwrap().is_none());
}

#[test]
fn prefetch_over_a_folder_and_early_drop() {
    let dir = scratch("prefetch");
    let frames: Vec<RgbImage> = (0..5).map(|k| noisy_frame(4, 3, k)).collect();
    for (k, f) in frames.iter().enumerate() {
        write_png(&dir.join(format!("{k}.png")), f);
    }
    let plain = read_all(video::open(dir.to_str().unwrap()).unwrap().as_mut());
    let mut pre = Prefetch::new(video::open(dir.to_str().unwrap()).unwrap());
    assert_eq!(read_all(&mut pre), plain);

    /// An endless source counting what it decodes.
    struct Endless(Arc<AtomicUsize>, Arc<AtomicBool>);
    impl VideoSource for Endless {
        fn next_frame(&mut self) -> Result<Option<RgbImage>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Some(RgbImage::new(2, 2)))
        }
        fn len_hint(&self) -> Option<usize> {
            None
        }
        fn fps(&self) -> Option<f64> {
            None
        }
        fn describe(&self) -> String {
            "endless".into()
        }
    }
    impl Drop for Endless {
        fn drop(&mut self) {
            self.1.store(true, Ordering::SeqCst);
        }
    }
    let (count, gone) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut pre = Prefetch::with_depth(Box::new(Endless(count.clone(), gone.clone())), 3);
    pre.next_frame().unwrap().unwrap();
    drop(pre);
    assert!(
        gone.load(Ordering::SeqCst),
        "thread ended and dropped the source"
    );
    let decoded = count.load(Ordering::SeqCst);
    // One handed over, three queued, one blocked in send, and one decoded as the stop arrived.
    assert!(
        decoded <= 6,
        "{decoded} frames decoded ahead of a depth-3 queue"
    );
}

// ---------------------------------------------------------------- drawing

/// The image as rows of `#` (pixel == colour) and `.`.
fn art(img: &RgbImage, colour: [u8; 3]) -> Vec<String> {
    (0..img.height())
        .map(|y| {
            (0..img.width())
                .map(|x| {
                    if img.get_pixel(x, y).0 == colour {
                        '#'
                    } else {
                        '.'
                    }
                })
                .collect()
        })
        .collect()
}

const RED: [u8; 3] = [255, 0, 0];

#[test]
fn draw_box_sets_exactly_the_outline() {
    // Columns round(1.2)=1 .. round(5.2)=5 (1..=4), rows round(0.6)=1 .. round(3.6)=4 (1..=3).
    let mut img = RgbImage::new(7, 5);
    draw_box(&mut img, [1.2, 0.6, 4.0, 3.0], RED, 1);
    assert_eq!(
        art(&img, RED),
        [".......", ".####..", ".#..#..", ".####..", "......."]
    );

    // Thickness 2 inside a 6×5 box on 8×7: a one-pixel hole remains.
    let mut img = RgbImage::new(8, 7);
    draw_box(&mut img, [1.0, 1.0, 6.0, 5.0], RED, 2);
    assert_eq!(
        art(&img, RED),
        ["........", ".######.", ".######.", ".##..##.", ".######.", ".######.", "........"]
    );

    // Thicker than half the box: filled.
    let mut img = RgbImage::new(4, 4);
    draw_box(&mut img, [0.0, 0.0, 3.0, 2.0], RED, 5);
    assert_eq!(art(&img, RED), ["###.", "###.", "....", "...."]);
}

#[test]
fn draw_box_clips_and_ignores_degenerate_boxes() {
    // Columns −2..3, rows −2..2: only the right column (x 2) and bottom row (y 1) are visible.
    let mut img = RgbImage::new(5, 4);
    draw_box(&mut img, [-2.0, -2.0, 5.0, 4.0], RED, 1);
    assert_eq!(art(&img, RED), ["..#..", "###..", ".....", "....."]);

    // Right and bottom edges off the image: only the top and left edges, clipped.
    let mut img = RgbImage::new(5, 4);
    draw_box(&mut img, [2.0, 1.0, 10.0, 10.0], RED, 1);
    assert_eq!(art(&img, RED), [".....", "..###", "..#..", "..#.."]);

    let blank = RgbImage::new(5, 4);
    for rect in [
        [10.0, 10.0, 3.0, 3.0],
        [-9.0, -9.0, 3.0, 3.0],
        [f32::NAN, 1.0, 2.0, 2.0],
        [1.0, 1.0, f32::INFINITY, 2.0],
        [1.0, 1.0, 0.0, 2.0],
        [1.0, 1.0, -3.0, 2.0],
        [1.0, 1.0, 0.2, 2.0], // rounds to zero width
        [-1e30, -1e30, 2e30, 2e30],
    ] {
        let mut img = blank.clone();
        draw_box(&mut img, rect, RED, 1);
        // The huge box's edges are all off the image; every other case is empty or outside.
        assert_eq!(img, blank, "{rect:?}");
    }
    let mut img = blank.clone();
    draw_box(&mut img, [1.0, 1.0, 2.0, 2.0], RED, 0);
    assert_eq!(img, blank, "zero thickness");
}

#[test]
fn draw_label_draws_the_font() {
    // 'A' in the public-domain 8×8 font (font8x8's BASIC 0x41), bit 0 the leftmost pixel:
    // 0x0C, 0x1E, 0x33, 0x33, 0x3F, 0x33, 0x33, 0x00.
    let glyph = [
        "..##....", ".####...", "##..##..", "##..##..", "######..", "##..##..", "##..##..",
        "........",
    ];
    let (fg, bg) = ([255, 255, 255], [0, 0, 255]);
    assert_eq!(label_size("A", 1), (10, 10));
    assert_eq!(label_size("AB", 3), (54, 30));
    let mut img = RgbImage::new(12, 11);
    draw_label(&mut img, 1, 0, "A", fg, bg, 1);
    let fgs = art(&img, fg);
    let bgs = art(&img, bg);
    for y in 0..11 {
        for x in 0..12 {
            let in_box = (1..11).contains(&x) && y < 10;
            let ink = in_box
                && (1..9).contains(&y)
                && (2..10).contains(&x)
                && glyph[y - 1].as_bytes()[x - 2] == b'#';
            assert_eq!(fgs[y].as_bytes()[x] == b'#', ink, "fg at ({x}, {y})");
            assert_eq!(
                bgs[y].as_bytes()[x] == b'#',
                in_box && !ink,
                "bg at ({x}, {y})"
            );
        }
    }

    // Scale 2: each font pixel is a 2×2 square; the top row of 'A' has ink at font columns 2, 3.
    let mut img = RgbImage::new(20, 20);
    draw_label(&mut img, 0, 0, "A", fg, bg, 2);
    assert_eq!(&art(&img, fg)[2][..10], "......####");
    assert_eq!(&art(&img, fg)[3][..10], "......####");

    // Clipped, off-image, non-ASCII, empty and scale 0: no panic, only what fits is drawn.
    let mut img = RgbImage::new(6, 6);
    draw_label(&mut img, -5, -3, "Hé✓", fg, bg, 1);
    draw_label(&mut img, 100, 100, "far", fg, bg, 4);
    draw_label(&mut img, i32::MIN, i32::MAX, "x", fg, bg, u32::MAX);
    draw_label(&mut img, 0, 0, "", fg, bg, 1);
    let before = img.clone();
    draw_label(&mut img, 0, 0, "A", fg, bg, 0);
    assert_eq!(img, before);
}

#[test]
fn palette_colours_are_distinct() {
    let colours: Vec<[u8; 3]> = (0..12).map(palette).collect();
    for i in 0..12 {
        for j in 0..i {
            let d: u32 = (0..3)
                .map(|c| colours[i][c].abs_diff(colours[j][c]) as u32)
                .sum();
            assert!(d >= 60, "colours {j} and {i} too close: {d}");
        }
    }
    assert_eq!(palette(12), palette(0));
    assert_eq!(render::contrast([255, 255, 0]), [0, 0, 0]);
    assert_eq!(render::contrast([0, 0, 128]), [255, 255, 255]);
}
