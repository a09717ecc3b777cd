//! `sparsett track`: one video, one or several targets, boxes to a file, a rendered video, and a
//! summary of where the time went.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sparsett::model::SparseTT;
use sparsett::render::{draw_box, draw_label, palette};
use sparsett::tracker::{Preset, Tracker, Update};
use sparsett::video::{self, prefetch::Prefetch, VideoSink, VideoSource};
use sparsett::{Error, Gpu, Result};

use super::show::Viewer;

pub struct TrackArgs {
    pub video: String,
    pub init: Vec<[f32; 4]>,
    pub weights: Option<PathBuf>,
    /// `None`: the weights' stored preset, else got10k.
    pub preset: Option<Preset>,
    pub out: Option<PathBuf>,
    pub render: Option<String>,
    pub show: bool,
    pub frames: Option<usize>,
    pub quiet: bool,
}

/// `x,y,w,h` (commas or spaces).
pub fn parse_rect(s: &str) -> std::result::Result<[f32; 4], String> {
    let v: Vec<f32> = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<f32>()
                .map_err(|_| format!("{p:?} is not a number"))
        })
        .collect::<std::result::Result<_, _>>()?;
    v.try_into()
        .map_err(|v: Vec<f32>| format!("expected x,y,w,h (4 numbers), got {} in {s:?}", v.len()))
}

/// One results file per target: `boxes.txt` for one target, `boxes.1.txt`, `boxes.2.txt`… for several.
fn out_paths(out: &Path, n: usize) -> Vec<PathBuf> {
    if n == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    let ext = out
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (1..=n)
        .map(|i| out.with_file_name(format!("{stem}.{i}{ext}")))
        .collect()
}

fn draw(frame: &mut image::RgbImage, results: &[Update]) {
    let thick = (frame.width().min(frame.height()) / 160).clamp(2, 6);
    let scale = (frame.width() / 320).clamp(1, 4);
    for (i, r) in results.iter().enumerate() {
        let c = palette(i);
        draw_box(frame, r.rect, c, thick);
        let label = if results.len() > 1 {
            format!("{} {:.2}", i + 1, r.score)
        } else {
            format!("{:.2}", r.score)
        };
        let y = (r.rect[1] as i32 - 9 * scale as i32 - thick as i32).max(0);
        // Keep the label on screen when the box leaves the frame.
        let x = (r.rect[0] as i32).min(frame.width() as i32 - 8).max(0);
        draw_label(frame, x, y, &label, [0, 0, 0], c, scale);
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Tracks the video; with `--show`, on a worker thread while the main thread runs the window.
pub fn run(gpu: Arc<Gpu>, a: TrackArgs) -> Result<()> {
    if a.init.is_empty() {
        return Err(Error::Other("give the target with --init x,y,w,h".into()));
    }
    if a.show {
        let title = format!("sparsett — {}", a.video);
        return super::show::run_with_window(gpu.clone(), &title, move |v| track(gpu, &a, Some(v)));
    }
    track(gpu, &a, None)
}

fn track(gpu: Arc<Gpu>, a: &TrackArgs, viewer: Option<&Viewer>) -> Result<()> {
    let mut src: Box<dyn VideoSource> = Box::new(Prefetch::new(video::open(&a.video)?));
    let desc = src.describe();
    let fps_in = src.fps().unwrap_or(25.0);
    let total = match (src.len_hint(), a.frames) {
        (Some(n), Some(m)) => Some(n.min(m)),
        (n, m) => n.or(m),
    };
    let mut first = video::first_frame(&mut *src)?;
    let sd = super::weights::load(a.weights.as_deref(), a.quiet)?;
    let preset = match a.preset {
        Some(p) => p,
        None => Preset::for_weights(&sd)?.unwrap_or_default(),
    };
    let model = Arc::new(SparseTT::load(&gpu, &sd)?);
    drop(sd);
    if !a.quiet {
        eprintln!("{desc}\nadapter: {}\npreset: {preset}", gpu.adapter_line());
    }
    let mut tracker = Tracker::new(gpu, model, preset);
    let t_init = Instant::now();
    tracker.init_many(&first, &a.init)?;

    let mut files = Vec::new();
    if let Some(out) = &a.out {
        for p in out_paths(out, a.init.len()) {
            let f = std::fs::File::create(&p).map_err(|e| io_err(&p, e))?;
            files.push((p, std::io::BufWriter::new(f)));
        }
    }
    let mut sink: Option<Box<dyn VideoSink>> = match &a.render {
        Some(r) => Some(video::create_sink(r, fps_in)?),
        None => None,
    };
    // Set when the window is closed: the run ends early, as if the video had ended.
    let closed = std::cell::Cell::new(false);
    let first_results: Vec<Update> = a
        .init
        .iter()
        .map(|&rect| Update { rect, score: 1.0 })
        .collect();
    let mut emit = |frame: &mut image::RgbImage, res: &[Update]| -> Result<()> {
        for ((p, f), r) in files.iter_mut().zip(res) {
            let [x, y, w, h] = r.rect;
            writeln!(f, "{x:.4},{y:.4},{w:.4},{h:.4}").map_err(|e| io_err(p, e))?;
        }
        if sink.is_some() || viewer.is_some() {
            draw(frame, res);
        }
        if let Some(s) = sink.as_mut() {
            s.write(frame)?;
        }
        if let Some(v) = viewer {
            if !v.send(frame) {
                closed.set(true);
            }
        }
        Ok(())
    };
    emit(&mut first, &first_results)?;
    let init_time = t_init.elapsed();

    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total.map_or(0, |n| n as u64))
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames {msg} (eta {eta})",
        )
        .expect("valid template"),
    );
    bar.inc(1);
    let (mut wait, mut track, mut write) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut n = 1usize;
    let t_loop = Instant::now();
    let mut last = first_results;
    while a.frames.is_none_or(|m| n < m) && !closed.get() {
        let t0 = Instant::now();
        let Some(mut frame) = src.next_frame()? else {
            break;
        };
        let t1 = Instant::now();
        let res = tracker
            .update_many(&frame)
            .map_err(|e| Error::Other(format!("frame {}: {e}", n + 1)))?;
        let t2 = Instant::now();
        emit(&mut frame, &res)?;
        let t3 = Instant::now();
        wait += t1 - t0;
        track += t2 - t1;
        write += t3 - t2;
        n += 1;
        bar.inc(1);
        let fps = (n - 1) as f64 / t_loop.elapsed().as_secs_f64();
        bar.set_message(format!("{fps:.2} frames/s, score {:.2}", res[0].score));
        last = res;
    }
    bar.finish_and_clear();
    for (p, f) in &mut files {
        f.flush().map_err(|e| io_err(p, e))?;
    }
    if let Some(s) = sink {
        s.finish()?;
    }
    if !a.quiet {
        let per = |d: Duration| d.as_secs_f64() * 1e3 / (n - 1).max(1) as f64;
        let secs = t_loop.elapsed().as_secs_f64();
        println!(
            "{n} frames, {} target(s): init {:.0} ms; then {:.2} frames/s ({:.1} ms/frame: waiting \
             for decoded frames {:.1}, tracking {:.1}, drawing and writing {:.1})",
            a.init.len(),
            init_time.as_secs_f64() * 1e3,
            (n - 1) as f64 / secs.max(1e-9),
            secs * 1e3 / (n - 1).max(1) as f64,
            per(wait),
            per(track),
            per(write)
        );
        for (i, r) in last.iter().enumerate() {
            let [x, y, w, h] = r.rect;
            println!(
                "target {}: last box {x:.1},{y:.1},{w:.1},{h:.1} score {:.3}",
                i + 1,
                r.score
            );
        }
        for (p, _) in &files {
            println!("boxes: {}", p.display());
        }
        if let Some(r) = &a.render {
            println!("rendered: {r}");
        }
    }
    Ok(())
}
