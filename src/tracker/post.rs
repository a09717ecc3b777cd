//! The official test-time arithmetic around the network: crop geometry, Hann window, scale/ratio
//! penalty, candidate choice and the box update. Plain host code on 361 candidates per target.
//!
//! The official tracker runs this in NumPy 2 with float32 state (the init rectangle and the
//! network outputs are float32, and NEP 50 keeps Python scalars from widening them); only the
//! window and the final candidate score are float64. Every step below keeps that precision,
//! because the tracker's choice hinges on ulp-level ties in long videos.

use super::Preset;

/// Context margin around the target (fraction of (w + h)).
pub const CONTEXT_AMOUNT: f32 = 0.5;
/// Smallest target side the update may produce (pixels).
pub const MIN_SIZE: f32 = 10.0;

/// Where a target is: centre and size in frame pixels (the official `target_pos`, `target_sz`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TargetState {
    pub pos: [f32; 2],
    pub size: [f32; 2],
}

/// The crops around a target for the current state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropGeometry {
    /// Crop pixels per frame pixel (`scale_x` in the official code).
    pub scale: f32,
    /// Side of the frame square resampled to the crop: `round(out / scale)`, half to even.
    pub side: f32,
}

impl TargetState {
    /// From a rectangle `x, y, w, h` with the pixel-inclusive centre `x + (w − 1)/2`.
    pub fn from_rect(r: [f32; 4]) -> Self {
        TargetState {
            pos: [r[0] + (r[2] - 1.0) / 2.0, r[1] + (r[3] - 1.0) / 2.0],
            size: [r[2], r[3]],
        }
    }

    /// The rectangle `x, y, w, h` reported for this state.
    pub fn rect(&self) -> [f32; 4] {
        [
            self.pos[0] - (self.size[0] - 1.0) / 2.0,
            self.pos[1] - (self.size[1] - 1.0) / 2.0,
            self.size[0],
            self.size[1],
        ]
    }

    /// The official `get_crop`: `scale = z_size / √(wc·hc)`, then the square side for an
    /// `out`-pixel crop is `round(out / scale)`.
    pub fn crop(&self, z_size: usize, out: usize) -> CropGeometry {
        let [w, h] = self.size;
        // Python's sum() starts from the integer 0; adding it is exact.
        let sum = w + h;
        let wc = w + CONTEXT_AMOUNT * sum;
        let hc = h + CONTEXT_AMOUNT * sum;
        let scale = z_size as f32 / (wc * hc).sqrt();
        let side = (out as f32 / scale).round_ties_even();
        CropGeometry { scale, side }
    }
}

/// `np.outer(np.hanning(n), np.hanning(n))` flattened row-major.
pub fn hann_window(n: usize) -> Vec<f64> {
    let h: Vec<f64> = if n == 1 {
        vec![1.0]
    } else {
        (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos())
            .collect()
    };
    h.iter()
        .flat_map(|a| h.iter().map(move |b| a * b))
        .collect()
}

/// Everything one update step computes for one target (the golden file's `tracker.*` entries).
#[derive(Clone, Debug)]
pub struct Post {
    /// Candidates as (cx, cy, w, h) in crop pixels, `w = x2 − x1 + 1`.
    pub boxes_cxywh: Vec<[f32; 4]>,
    pub penalty: Vec<f32>,
    pub pscore: Vec<f64>,
    /// First argmax of `pscore`.
    pub best: usize,
    /// The network's fused score at `best` (the confidence we report).
    pub score: f32,
    pub lr: f32,
    /// The chosen candidate divided by the scale.
    pub pred: [f32; 4],
    /// The new state before clamping to the frame.
    pub unclamped: TargetState,
    pub state: TargetState,
}

fn change(r: f32) -> f32 {
    r.max(1.0 / r)
}

fn sz(w: f32, h: f32) -> f32 {
    let pad = (w + h) * 0.5;
    ((w + pad) * (h + pad)).sqrt()
}

/// One update: `score` `[cells]`, `boxes` `[cells·4]` (x1, y1, x2, y2 in search-crop pixels),
/// for a target that was at `prev` when the crop of scale `scale` and `x_size` pixels was made.
#[allow(clippy::too_many_arguments)]
pub fn postprocess(
    score: &[f32],
    boxes: &[f32],
    prev: &TargetState,
    scale: f32,
    x_size: usize,
    window: &[f64],
    preset: &Preset,
    frame: (usize, usize),
) -> Post {
    let cells = score.len();
    debug_assert_eq!(boxes.len(), cells * 4);
    debug_assert_eq!(window.len(), cells);
    let boxes_cxywh: Vec<[f32; 4]> = boxes
        .chunks_exact(4)
        .map(|b| {
            [
                (b[0] + b[2]) / 2.0,
                (b[1] + b[3]) / 2.0,
                b[2] - b[0] + 1.0,
                b[3] - b[1] + 1.0,
            ]
        })
        .collect();
    let (tw, th) = (prev.size[0] * scale, prev.size[1] * scale);
    let target_sz = sz(tw, th);
    let penalty: Vec<f32> = boxes_cxywh
        .iter()
        .map(|b| {
            let s_c = change(sz(b[2], b[3]) / target_sz);
            let r_c = change((tw / th) / (b[2] / b[3]));
            (-(r_c * s_c - 1.0) * preset.penalty_k).exp()
        })
        .collect();
    // NumPy: f32 (penalty·score)·f32(1 − wi), widened to f64 by the f64 window term.
    let keep = (1.0 - preset.window_influence) as f32;
    let pscore: Vec<f64> = (0..cells)
        .map(|i| (penalty[i] * score[i] * keep) as f64 + window[i] * preset.window_influence)
        .collect();
    let best = first_argmax(&pscore);
    let b = boxes_cxywh[best];
    let pred = b.map(|v| v / scale);
    let lr = penalty[best] * score[best] * preset.test_lr;
    let half = (x_size / 2) as f32 / scale;
    let unclamped = TargetState {
        pos: [pred[0] + prev.pos[0] - half, pred[1] + prev.pos[1] - half],
        size: [
            prev.size[0] * (1.0 - lr) + pred[2] * lr,
            prev.size[1] * (1.0 - lr) + pred[3] * lr,
        ],
    };
    let (fw, fh) = (frame.0 as f32, frame.1 as f32);
    // Python's max(lo, min(hi, v)): min keeps `hi` unless v < hi, max keeps `lo` unless the
    // result > lo, so a NaN coordinate becomes `hi` exactly as in the official tracker.
    let clamp = |v: f32, lo: f32, hi: f32| {
        let m = if v < hi { v } else { hi };
        if m > lo {
            m
        } else {
            lo
        }
    };
    let state = TargetState {
        pos: [
            clamp(unclamped.pos[0], 0.0, fw),
            clamp(unclamped.pos[1], 0.0, fh),
        ],
        size: [
            clamp(unclamped.size[0], MIN_SIZE, fw),
            clamp(unclamped.size[1], MIN_SIZE, fh),
        ],
    };
    Post {
        boxes_cxywh,
        penalty,
        pscore,
        best,
        score: score[best],
        lr,
        pred,
        unclamped,
        state,
    }
}

/// `np.argmax`: the first maximum; a NaN counts as the maximum (NumPy returns the first NaN).
pub fn first_argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x.is_nan() {
            return i;
        }
        if x > v[best] {
            best = i;
        }
    }
    best
}
