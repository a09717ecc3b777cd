//! Tracking sequences with exact ground truth, made from real photographs: an object patch moves
//! (and changes size) over a background along a smooth random path, optionally passed over by an
//! occluder and accompanied by distractors (look-alike patches circling nearby). Used by the tests
//! and by anyone who wants to try the tracker, the evaluator or training without downloading a
//! benchmark.
//!
//! Images: this module ships none; callers pass them in. The project's tests use the golden data's
//! photographs, scikit-image's `astronaut` (Eileen Collins, NASA: public domain) and `chelsea` (the
//! cat, by Stefan van der Walt: CC0), both redistributable; use only images whose licence allows
//! redistribution when sequences are shipped.
//!
//! Ground truth is exact by construction: the box is the pasted object patch (integer pixels),
//! distractors are drawn beneath the object, and the occluder over it, so the box always stays the
//! full object box, whether partly covered or not. GOT-10k's labels are written to match: `cover`
//! is the visible fraction `v` of the box in eighths (8 when fully visible, `⌊8v⌋` but at least 1
//! when partly visible, 0 when fully covered) and `absence` is 1 exactly when `v = 0`.

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
    /// An occluder patch (half the object's width, 1.5 × its height) crosses the object once over
    /// the sequence, from left to right.
    pub occlusion: bool,
    /// Look-alike patches (the object mirrored, or the given patches) circling the object at about
    /// 1.3 object sizes, drawn beneath it.
    pub distractors: usize,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            frames: 20,
            object_size: (48, 48),
            max_step: 6.0,
            max_scale: 1.3,
            seed: 0,
            occlusion: false,
            distractors: 0,
        }
    }
}

/// A generated sequence: frames and one `x, y, w, h` box per frame (integer pixels, so the box
/// is exactly the pasted patch), with what covers it.
pub struct Synth {
    pub frames: Vec<RgbImage>,
    pub boxes: Vec<[u32; 4]>,
    /// The occluder's `x, y, w, h` per frame (clipped to the frame), when there is one.
    pub occluders: Vec<Option<[u32; 4]>>,
    /// Each distractor's `x, y, w, h` per frame.
    pub distractors: Vec<Vec<[u32; 4]>>,
    /// GOT-10k cover label per frame (see the module doc).
    pub cover: Vec<u8>,
    /// Per frame: the object is fully covered.
    pub absent: Vec<bool>,
}

/// Pixels of box `a` covered by box `b` (both `x, y, w, h`).
pub fn overlap_area(a: [u32; 4], b: [u32; 4]) -> u64 {
    let ix = (a[0] + a[2])
        .min(b[0] + b[2])
        .saturating_sub(a[0].max(b[0]));
    let iy = (a[1] + a[3])
        .min(b[1] + b[3])
        .saturating_sub(a[1].max(b[1]));
    ix as u64 * iy as u64
}

/// GOT-10k's cover level of a box of `area` pixels with `covered` of them hidden.
pub fn cover_level(covered: u64, area: u64) -> u8 {
    if covered == 0 {
        8
    } else if covered >= area {
        0
    } else {
        ((8 * (area - covered)) / area).max(1) as u8
    }
}

/// Nearest-neighbour resize (keeps the patch's own pixel values, so boxes stay exact).
pub fn resize(src: &RgbImage, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let sx = (x as u64 * src.width() as u64 / w as u64) as u32;
        let sy = (y as u64 * src.height() as u64 / h as u64) as u32;
        *src.get_pixel(sx, sy)
    })
}

/// Moves `object` over `background`. The path is a random walk with momentum that bounces off
/// the frame edges, so the object always stays fully inside the frame.
pub fn generate(background: &RgbImage, object: &RgbImage, spec: &SynthSpec) -> Result<Synth> {
    generate_scene(background, object, &[], spec)
}

/// [`generate`] with the occluder and distractor patches chosen: `patches[0]` is the occluder
/// and the distractors cycle through the rest. With no patches the occluder is cut from the
/// background (a real-photo patch, moved) and the distractors are the object mirrored.
pub fn generate_scene(
    background: &RgbImage,
    object: &RgbImage,
    patches: &[RgbImage],
    spec: &SynthSpec,
) -> Result<Synth> {
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
    if patches.iter().any(|p| p.width() == 0 || p.height() == 0) {
        return Err(Error::Other(
            "synth: an occluder or distractor patch is empty".into(),
        ));
    }
    // Occluders and distractors draw from their own stream, so the object's path for a seed is
    // the same with or without them.
    let mut rng2 = SplitMix64::new(spec.seed ^ 0x5eed_0cc1_d15c_0a57);
    let occ_src = match patches.first() {
        Some(p) => p.clone(),
        None => {
            let (w, h) = ((ow / 2).max(2).min(bw), (oh * 3 / 2).max(2).min(bh));
            let x = (rng2.next_unit() * (bw - w) as f64) as u32;
            let y = (rng2.next_unit() * (bh - h) as f64) as u32;
            image::imageops::crop_imm(background, x, y, w, h).to_image()
        }
    };
    let mirrored = image::imageops::flip_horizontal(object);
    let distractor_src: Vec<&RgbImage> = (0..spec.distractors)
        .map(|k| match patches.len() {
            0 | 1 => &mirrored,
            n => &patches[1 + k % (n - 1)],
        })
        .collect();
    let phases: Vec<(f32, f32)> = (0..spec.distractors)
        .map(|_| {
            let p = rng2.next_unit() as f32 * std::f32::consts::TAU;
            let dir = if rng2.next_unit() < 0.5 { -1.0 } else { 1.0 };
            (p, dir)
        })
        .collect();
    let mut frames = Vec::with_capacity(spec.frames);
    let mut boxes = Vec::with_capacity(spec.frames);
    let mut occluders = Vec::with_capacity(spec.frames);
    let mut distractors = Vec::with_capacity(spec.frames);
    let mut cover = Vec::with_capacity(spec.frames);
    let mut absent = Vec::with_capacity(spec.frames);
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
        let mut drects = Vec::with_capacity(spec.distractors);
        for (src, &(phase_k, dir)) in distractor_src.iter().zip(&phases) {
            // Circles the object at 1.3 object sizes, a quarter turn over ten frames.
            let a = phase_k + dir * i as f32 * std::f32::consts::FRAC_PI_2 / 10.0;
            let r = 1.3 * w.max(h) as f32;
            let dx = cx + r * a.cos() - w as f32 / 2.0;
            let dy = cy + r * a.sin() - h as f32 / 2.0;
            let dxu = (dx.round().max(0.0) as u32).min(bw - w);
            let dyu = (dy.round().max(0.0) as u32).min(bh - h);
            image::imageops::replace(&mut f, &resize(src, w, h), dxu as i64, dyu as i64);
            drects.push([dxu, dyu, w, h]);
        }
        image::imageops::replace(&mut f, &resize(object, w, h), x as i64, y as i64);
        let target = [x, y, w, h];
        let occ = if spec.occlusion {
            // Crosses from well left of the object to well right of it, following its row.
            let (qw, qh) = ((ow / 2).max(2), (oh * 3 / 2).max(2));
            let travel = (w + qw) as f32 * 1.5;
            let t01 = i as f32 / (spec.frames.max(2) - 1) as f32;
            let qx = cx - qw as f32 / 2.0 + (2.0 * t01 - 1.0) * travel;
            let qy = cy - qh as f32 / 2.0;
            let (qx, qy) = (qx.round() as i64, qy.round() as i64);
            image::imageops::replace(&mut f, &resize(&occ_src, qw, qh), qx, qy);
            // The occluder clipped to the frame, as it appears.
            let x0 = qx.clamp(0, bw as i64) as u32;
            let y0 = qy.clamp(0, bh as i64) as u32;
            let x1 = (qx + qw as i64).clamp(0, bw as i64) as u32;
            let y1 = (qy + qh as i64).clamp(0, bh as i64) as u32;
            Some([x0, y0, x1 - x0, y1 - y0])
        } else {
            None
        };
        let covered = occ.map_or(0, |o| overlap_area(target, o));
        let c = cover_level(covered, w as u64 * h as u64);
        frames.push(f);
        boxes.push(target);
        occluders.push(occ);
        distractors.push(drects);
        cover.push(c);
        absent.push(c == 0);
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
    Ok(Synth {
        frames,
        boxes,
        occluders,
        distractors,
        cover,
        absent,
    })
}

/// Writes the sequence in GOT-10k layout: `dir/00000001.jpg…` (PNG when `png`, lossless),
/// `dir/groundtruth.txt`, `dir/cover.label` and `dir/absence.label`.
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
    std::fs::write(dir.join("groundtruth.txt"), gt).map_err(io)?;
    let cover: String = s.cover.iter().map(|c| format!("{c}\n")).collect();
    std::fs::write(dir.join("cover.label"), cover).map_err(io)?;
    let absent: String = s.absent.iter().map(|&a| format!("{}\n", a as u8)).collect();
    std::fs::write(dir.join("absence.label"), absent).map_err(io)
}

/// What [`write_dataset`] makes.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    pub sequences: usize,
    pub frames: usize,
    pub seed: u64,
    /// Probability that a sequence has an occluder.
    pub occlusion: f64,
    /// Each sequence gets 0 ..= this many distractors.
    pub max_distractors: usize,
    /// Side of the square background cut from a source photo (smaller photos are used whole).
    pub background: u32,
}

impl Default for DatasetSpec {
    fn default() -> Self {
        DatasetSpec {
            sequences: 16,
            frames: 30,
            seed: 0,
            occlusion: 0.3,
            max_distractors: 2,
            background: 320,
        }
    }
}

fn random_crop(img: &RgbImage, w: u32, h: u32, u: &mut impl FnMut() -> f64) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let (w, h) = (w.min(iw), h.min(ih));
    let x = ((iw - w) as f64 * u()) as u32;
    let y = ((ih - h) as f64 * u()) as u32;
    image::imageops::crop_imm(img, x, y, w, h).to_image()
}

/// A GOT-10k-layout dataset (`dir/list.txt`, `dir/<name>/…`) of generated sequences: each one a
/// random patch of a random photo moving over a random cut of another, with an occluder and
/// distractors by chance. Deterministic in `spec.seed`.
pub fn write_dataset(photos: &[RgbImage], dir: &Path, spec: &DatasetSpec) -> Result<Vec<String>> {
    let usable: Vec<&RgbImage> = photos
        .iter()
        .filter(|p| p.width() >= 96 && p.height() >= 96)
        .collect();
    if usable.is_empty() {
        return Err(Error::Other(
            "synth: no photo of at least 96×96 pixels to cut backgrounds and objects from".into(),
        ));
    }
    let mut names = Vec::with_capacity(spec.sequences);
    for i in 0..spec.sequences {
        let mut rng = SplitMix64::for_key(&format!("synth/{i}"), spec.seed);
        let mut u = move || rng.next_unit();
        let pick = |x: f64| (x * usable.len() as f64) as usize % usable.len();
        let bg_src = usable[pick(u())];
        let side = spec.background;
        let bg = random_crop(bg_src, side, side * 3 / 4, &mut u);
        let short = bg.width().min(bg.height());
        let obj_src = usable[pick(u())];
        let ow = (short as f64 * (0.15 + 0.2 * u())) as u32;
        let oh = (ow as f64 * (0.6 + 0.8 * u())) as u32;
        let ow = ow.max(12);
        let oh = oh.clamp(12, short / 2);
        let obj = random_crop(obj_src, ow * 2, oh * 2, &mut u);
        let s = SynthSpec {
            frames: spec.frames,
            object_size: (ow, oh),
            max_step: 2.0 + 6.0 * u() as f32,
            max_scale: 1.0 + 0.4 * u() as f32,
            seed: spec.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            occlusion: u() < spec.occlusion,
            distractors: (u() * (spec.max_distractors + 1) as f64) as usize
                % (spec.max_distractors + 1),
        };
        let seq = generate(&bg, &obj, &s)?;
        let name = format!("SYNTH_{:06}", i + 1);
        write_got10k(&dir.join(&name), &seq, false)?;
        names.push(name);
    }
    let list: String = names.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(dir.join("list.txt"), list).map_err(|source| Error::Io {
        path: dir.join("list.txt").display().to_string(),
        source,
    })?;
    Ok(names)
}
