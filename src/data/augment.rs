//! Crop geometry of a training pair, in the form [`crate::ops::crop`] takes.
//!
//! Template: the tracker's own init crop (context 0.5: `p = (w + h)/2`, `s_z = √((w + p)(h + p))`,
//! a square of side `round(s_z)` centred on the box, resized to 127).
//! Search (the only augmented crop): from the search frame's box, `s_x = s_z · 289/127`; the crop
//! side is `s_x · scale` and its centre the box centre plus `shift · side / 2` per axis, with
//! `scale ~ U(1/1.3, 1.3)` and `shift ~ U(−0.4, 0.4)` drawn by the sampler. The side is not rounded
//! (the tracker rounds because OpenCV's crop takes whole sizes; the GPU crop takes any). The target
//! box is then mapped into the 289 crop through the same f32 matrix the crop uses, with the
//! tracker's box convention (`x2 = x + w − 1`, centre `x + (w − 1)/2`).

use crate::model::{X_SIZE, Z_SIZE};
use crate::ops::crop::{subwindow_matrix, CropSpec};
use crate::tracker::TargetState;

/// The sampler's augmentation draw for one search crop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// Crop side factor, in `[1/max_scale, max_scale]`.
    pub scale: f64,
    /// Crop centre shift per axis in units of half the crop side, in `[−max_shift, max_shift]`.
    pub shift: [f64; 2],
}

impl Augment {
    /// No augmentation: the tracker's own search crop (without its rounding).
    pub const NONE: Augment = Augment {
        scale: 1.0,
        shift: [0.0, 0.0],
    };
}

/// The augmented search crop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchCrop {
    pub spec: CropSpec,
    /// Crop centre in frame pixels.
    pub centre: [f32; 2],
    /// Side of the frame square resampled to 289 pixels.
    pub side: f32,
    /// The target box in crop pixels, `x1, y1, x2, y2` (inclusive corners).
    pub box_xyxy: [f32; 4],
}

/// Both crops of a pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairGeometry {
    pub template: CropSpec,
    pub search: SearchCrop,
}

fn state(bbox: [f64; 4]) -> TargetState {
    TargetState::from_rect(bbox.map(|v| v as f32))
}

/// The tracker's template crop of `bbox` (`x, y, w, h`) to 127 pixels.
pub fn template_crop(bbox: [f64; 4], border_rgb: [u8; 3]) -> CropSpec {
    let t = state(bbox);
    let g = t.crop(Z_SIZE, Z_SIZE);
    CropSpec {
        m: subwindow_matrix(t.pos, g.side, Z_SIZE),
        border_rgb,
    }
}

/// The augmented search crop around `bbox` (`x, y, w, h`) to 289 pixels.
pub fn search_crop(bbox: [f64; 4], aug: Augment, border_rgb: [u8; 3]) -> SearchCrop {
    let t = state(bbox);
    // s_x = out / scale with scale = 127 / s_z, before the tracker's rounding.
    let scale = t.crop(Z_SIZE, X_SIZE).scale;
    let side = (X_SIZE as f64 / scale as f64 * aug.scale) as f32;
    let centre = [
        (t.pos[0] as f64 + aug.shift[0] * side as f64 / 2.0) as f32,
        (t.pos[1] as f64 + aug.shift[1] * side as f64 / 2.0) as f32,
    ];
    let m = subwindow_matrix(centre, side, X_SIZE);
    let [x, y, w, h] = bbox;
    let to_crop = |v: f64, origin: f64, step: f64| ((v - origin) / step) as f32;
    let box_xyxy = [
        to_crop(x, m[2], m[0]),
        to_crop(y, m[5], m[4]),
        to_crop(x + w - 1.0, m[2], m[0]),
        to_crop(y + h - 1.0, m[5], m[4]),
    ];
    SearchCrop {
        spec: CropSpec { m, border_rgb },
        centre,
        side,
        box_xyxy,
    }
}

/// Both crops of a pair: the template around the template box, the augmented search crop around
/// the search frame's box (for a negative pair, another object's box).
pub fn pair_geometry(
    template_box: [f64; 4],
    template_border: [u8; 3],
    search_box: [f64; 4],
    search_border: [u8; 3],
    aug: Augment,
) -> PairGeometry {
    PairGeometry {
        template: template_crop(template_box, template_border),
        search: search_crop(search_box, aug, search_border),
    }
}
