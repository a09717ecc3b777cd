//! Tracking sequences with exact ground truth, made from real photographs: an object patch moves
//! (and changes size) over a background along a smooth random path. Used by the tests and by
//! anyone who wants to try the tracker or the evaluator without downloading a benchmark.

use std::path::Path;

use image::RgbImage;

use crate::prng::SplitMix64;
use crate::{Error, Result};

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    pub frames: usize,
    /// Object size in the first frame (pixels).
    pub object_size: (u32, u32),
    /// Largest per-frame displacement of the object centre (pixels).
    pub max_step: f32,
    /// Size varies by up to this factor over the sequence (1 = constant).
    pub max_scale: f32,
    pub seed: u64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            frames: 20,
            object_size: (48, 48),
            max_step: 6.0,
            max_scale: 1.3,
            seed: 0,
        }
    }
}

/// A generated sequence: frames and one `x, y, w, h` box per frame (integer pixels, so the box
/// is exactly the pasted patch).
pub struct Synth {
    pub frames: Vec<RgbImage>,
    pub boxes: Vec<[u32; 4]>,
}

/// Nearest-neighbour resize (keeps the patch's own pixel values, so boxes stay exact).
fn resize(src: &RgbImage, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let sx = (x as u64 * src.width() as u64 / w as u64) as u32;
        let sy = (y as u64 * src.height() as u64 / h as u64) as u32;
        *src.get_pixel(sx, sy)
    })
}

/// Moves `object` over `background`. The path is a random walk with momentum that bounces off
/// the frame edges, so the object always stays fully inside the frame.
pub fn generate(background: &RgbImage, object: &RgbImage, spec: &SynthSpec) -> Result<Synth> {
    let (bw, bh) = background.dimensions();
    let (ow, oh) = spec.object_size;
    let big = (spec.max_scale.max(1.0) * ow.max(oh) as f32).ceil() as u32;
    if ow == 0 || oh == 0 || big + 2 >= bw.min(bh) || object.width() == 0 || object.height() == 0 {
        return Err(Error::Other(format!(
            "synth: a {ow}×{oh} object scaled up to ×{} does not fit a {bw}×{bh} background",
            spec.max_scale
        )));
    }
    let mut rng = SplitMix64::new(spec.seed);
    let mut u = move || rng.next_unit() as f32;
    let (mut cx, mut cy) = (bw as f32 / 2.0, bh as f32 / 2.0);
    let (mut vx, mut vy) = ((u() - 0.5) * spec.max_step, (u() - 0.5) * spec.max_step);
    let phase = u() * std::f32::consts::TAU;
    let mut frames = Vec::with_capacity(spec.frames);
    let mut boxes = Vec::with_capacity(spec.frames);
    for i in 0..spec.frames {
        let t = i as f32 / spec.frames.max(2) as f32;
        let s = 1.0 + (spec.max_scale - 1.0) * 0.5 * (1.0 - (phase + t * 6.0).cos());
        let (w, h) = (
            ((ow as f32 * s).round() as u32).max(1),
            ((oh as f32 * s).round() as u32).max(1),
        );
        let x = ((cx - w as f32 / 2.0).round().max(0.0) as u32).min(bw - w);
        let y = ((cy - h as f32 / 2.0).round().max(0.0) as u32).min(bh - h);
        let mut f = background.clone();
        image::imageops::replace(&mut f, &resize(object, w, h), x as i64, y as i64);
        frames.push(f);
        boxes.push([x, y, w, h]);
        vx = (0.8 * vx + (u() - 0.5) * spec.max_step).clamp(-spec.max_step, spec.max_step);
        vy = (0.8 * vy + (u() - 0.5) * spec.max_step).clamp(-spec.max_step, spec.max_step);
        let margin = big as f32 / 2.0 + 1.0;
        if cx + vx < margin || cx + vx > bw as f32 - margin {
            vx = -vx;
        }
        if cy + vy < margin || cy + vy > bh as f32 - margin {
            vy = -vy;
        }
        cx = (cx + vx).clamp(margin, bw as f32 - margin);
        cy = (cy + vy).clamp(margin, bh as f32 - margin);
    }
    Ok(Synth { frames, boxes })
}

/// Writes the sequence in GOT-10k layout: `dir/00000001.jpg…` (PNG when `png`, lossless) and
/// `dir/groundtruth.txt`.
pub fn write_got10k(dir: &Path, s: &Synth, png: bool) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    for (i, f) in s.frames.iter().enumerate() {
        let p = dir.join(format!("{:08}.{}", i + 1, if png { "png" } else { "jpg" }));
        f.save(&p)
            .map_err(|e| Error::Other(format!("{}: {e}", p.display())))?;
    }
    let gt: String = s
        .boxes
        .iter()
        .map(|b| format!("{},{},{},{}\n", b[0], b[1], b[2], b[3]))
        .collect();
    std::fs::write(dir.join("groundtruth.txt"), gt).map_err(io)
}
