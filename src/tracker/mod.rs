//! The tracker: the official SparseTT test-time pipeline around the model, for one or several
//! targets in one video. Per frame: one upload of the frame, one batched crop dispatch for all
//! targets, the track step, and one read-back of the 361 scores and boxes per target; the
//! candidate choice and box update ([`post`]) run on the host exactly as the official NumPy code.

pub mod post;
pub mod preset;

use std::sync::Arc;

use image::RgbImage;

use crate::model::taps::Taps;
use crate::model::{SparseTT, TemplateFeatures, SCORE_SIDE, X_SIZE, Z_SIZE};
use crate::ops::crop::{self, CropSpec};
use crate::{Error, Gpu, Result};
pub use post::{hann_window, Post, TargetState};
pub use preset::Preset;

/// Input normalisation of the official model (RGB order, 0–255 pixels).
pub const MEAN: [f32; 3] = [123.675, 116.28, 103.53];
pub const STD: [f32; 3] = [58.395, 57.12, 57.375];

/// One target's result for a frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update {
    /// `x, y, w, h` in frame pixels.
    pub rect: [f32; 4],
    /// The network's fused score of the chosen candidate, in [0, 1].
    pub score: f32,
}

struct Session {
    template: TemplateFeatures,
    targets: Vec<TargetState>,
    size: (usize, usize),
    /// int(per-channel mean of the first frame): the colour outside the frame in every crop.
    border: [u8; 3],
}

/// Owns shared handles so it can live in long-running hosts (a window, a browser page).
pub struct Tracker {
    gpu: Arc<Gpu>,
    model: Arc<SparseTT>,
    preset: Preset,
    window: Vec<f64>,
    session: Option<Session>,
}

impl Tracker {
    pub fn new(gpu: Arc<Gpu>, model: Arc<SparseTT>, preset: Preset) -> Self {
        Tracker {
            gpu,
            model,
            preset,
            window: hann_window(SCORE_SIDE),
            session: None,
        }
    }

    pub fn preset(&self) -> &Preset {
        &self.preset
    }

    /// The current state of every target (empty before `init`).
    pub fn targets(&self) -> &[TargetState] {
        self.session.as_ref().map_or(&[], |s| &s.targets)
    }

    /// Starts tracking one target given as `x, y, w, h` in `frame`.
    pub fn init(&mut self, frame: &RgbImage, rect: [f32; 4]) -> Result<()> {
        self.init_many(frame, &[rect])
    }

    /// Starts tracking several targets in the same video; they are encoded and tracked batched.
    pub fn init_many(&mut self, frame: &RgbImage, rects: &[[f32; 4]]) -> Result<()> {
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        if w == 0 || h == 0 {
            return Err(Error::Other("the first frame is empty (0 pixels)".into()));
        }
        if rects.is_empty() {
            return Err(Error::Other(
                "no target to track: give at least one box".into(),
            ));
        }
        for (i, r) in rects.iter().enumerate() {
            check_rect(i, rects.len(), r, w, h)?;
        }
        let border = mean_colour(frame);
        let targets: Vec<TargetState> = rects.iter().map(|&r| TargetState::from_rect(r)).collect();
        let gframe = crop::upload_frame(&self.gpu, frame.as_raw(), w, h)?;
        let specs: Vec<CropSpec> = targets
            .iter()
            .map(|t| {
                let g = t.crop(Z_SIZE, Z_SIZE);
                CropSpec {
                    m: crop::subwindow_matrix(t.pos, g.side, Z_SIZE),
                    border_rgb: border,
                }
            })
            .collect();
        let mut enc = self.gpu.encoder();
        let z = crop::crop(&mut enc, &gframe, &specs, Z_SIZE, MEAN, STD)?;
        let template = self.model.template(&mut enc, &z, &mut Taps::off())?;
        enc.submit()?;
        self.session = Some(Session {
            template,
            targets,
            size: (w, h),
            border,
        });
        Ok(())
    }

    /// Tracks the (first) target into `frame`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn update(&mut self, frame: &RgbImage) -> Result<Update> {
        pollster::block_on(self.update_async(frame))
    }

    /// Tracks every target into `frame` in one batched pass.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn update_many(&mut self, frame: &RgbImage) -> Result<Vec<Update>> {
        pollster::block_on(self.update_many_async(frame))
    }

    /// [`update_many`](Self::update_many) with every intermediate of the post-processing.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn update_detailed(&mut self, frame: &RgbImage) -> Result<Vec<Post>> {
        pollster::block_on(self.update_detailed_async(frame))
    }

    /// [`update`](Self::update) for hosts that cannot block (the browser).
    pub async fn update_async(&mut self, frame: &RgbImage) -> Result<Update> {
        Ok(self.update_many_async(frame).await?[0])
    }

    /// [`update_many`](Self::update_many) for hosts that cannot block (the browser).
    pub async fn update_many_async(&mut self, frame: &RgbImage) -> Result<Vec<Update>> {
        Ok(self
            .update_detailed_async(frame)
            .await?
            .iter()
            .map(|p| Update {
                rect: p.state.rect(),
                score: p.score,
            })
            .collect())
    }

    /// [`update_detailed`](Self::update_detailed) for hosts that cannot block: the frame's one
    /// read-back is awaited instead of waited for.
    pub async fn update_detailed_async(&mut self, frame: &RgbImage) -> Result<Vec<Post>> {
        let s = self
            .session
            .as_mut()
            .ok_or_else(|| Error::Other("update before init: call init first".into()))?;
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        if (w, h) != s.size {
            return Err(Error::Other(format!(
                "frame is {w}×{h} but the video started at {}×{}",
                s.size.0, s.size.1
            )));
        }
        let geometry: Vec<_> = s.targets.iter().map(|t| t.crop(Z_SIZE, X_SIZE)).collect();
        let specs: Vec<CropSpec> = s
            .targets
            .iter()
            .zip(&geometry)
            .map(|(t, g)| CropSpec {
                m: crop::subwindow_matrix(t.pos, g.side, X_SIZE),
                border_rgb: s.border,
            })
            .collect();
        let gframe = crop::upload_frame(&self.gpu, frame.as_raw(), w, h)?;
        let mut enc = self.gpu.encoder();
        let x = crop::crop(&mut enc, &gframe, &specs, X_SIZE, MEAN, STD)?;
        let out = self
            .model
            .track(&mut enc, &s.template, &x, &mut Taps::off())?;
        let [score, boxes]: [Vec<f32>; 2] = enc
            .submit_read_async(&[&out.score, &out.boxes])
            .await?
            .try_into()
            .expect("two tensors read");
        let cells = SCORE_SIDE * SCORE_SIDE;
        let posts: Vec<Post> = (0..s.targets.len())
            .map(|i| {
                post::postprocess(
                    &score[i * cells..(i + 1) * cells],
                    &boxes[i * cells * 4..(i + 1) * cells * 4],
                    &s.targets[i],
                    geometry[i].scale,
                    X_SIZE,
                    &self.window,
                    &self.preset,
                    s.size,
                )
            })
            .collect();
        for (t, p) in s.targets.iter_mut().zip(&posts) {
            *t = p.state;
        }
        Ok(posts)
    }
}

/// `int(np.mean(frame, axis=(0, 1)))` per channel: the sums are exact integers, so the float64
/// mean and its truncation equal the integer quotient.
pub fn mean_colour(frame: &RgbImage) -> [u8; 3] {
    let mut sum = [0u64; 3];
    for p in frame.pixels() {
        for (s, &v) in sum.iter_mut().zip(&p.0) {
            *s += v as u64;
        }
    }
    let n = (frame.width() as u64 * frame.height() as u64).max(1);
    sum.map(|s| (s / n) as u8)
}

fn check_rect(i: usize, n: usize, r: &[f32; 4], w: usize, h: usize) -> Result<()> {
    let which = if n == 1 {
        "the init box".to_string()
    } else {
        format!("init box {}", i + 1)
    };
    let [x, y, bw, bh] = *r;
    if !r.iter().all(|v| v.is_finite()) {
        return Err(Error::Other(format!(
            "{which} {x},{y},{bw},{bh} has a non-finite value"
        )));
    }
    if bw < 1.0 || bh < 1.0 {
        return Err(Error::Other(format!(
            "{which} {x},{y},{bw},{bh} is empty: width and height must be at least 1 pixel"
        )));
    }
    if x >= w as f32 || y >= h as f32 || x + bw <= 0.0 || y + bh <= 0.0 {
        return Err(Error::Other(format!(
            "{which} {x},{y},{bw},{bh} lies outside the {w}×{h} frame"
        )));
    }
    Ok(())
}
