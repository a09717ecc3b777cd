//! The official training targets (`DenseboxTarget`, SiamFC++'s `make_densebox_target` as SparseTT
//! runs it with one ground-truth box), computed on the host per training pair.
//!
//! With `score_offset = (x_size − 1 − (score_size − 1)·stride) / 2` (0 for 289 / 19 / 16), cell
//! (i, j) (flat index i·side + j) has the grid point (x, y) = (offset + stride·j, offset + stride·i).
//! In f32, as the official code computes it on float tensors:
//!
//! ```text
//! l = x − x1,  t = y − y1,  r = x2 − x,  b = y2 − y
//! positive  ⇔  l > 0 ∧ t > 0 ∧ r > 0 ∧ b > 0            (strictly inside)
//! cls = 1, box = (x1, y1, x2, y2), ctr = sqrt(|min(l,r)·min(t,b) / (max(l,r)·max(t,b) + 1e-5)|)
//! otherwise cls = 0, box = 0, ctr = 0
//! negative pair: cls 1 → 0, 0 → −1 (ignored); box and ctr unchanged
//! ```
//!
//! The official code also competes the box against a dummy zero box sorted by area; a box of zero
//! area contains no grid point, so with one box that changes nothing.

/// The score-map geometry the targets are made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetConfig {
    pub x_size: usize,
    pub score_size: usize,
    pub total_stride: usize,
}

impl Default for TargetConfig {
    /// SparseTT's: 289 search crop, 19×19 score map, stride 16.
    fn default() -> Self {
        TargetConfig {
            x_size: 289,
            score_size: 19,
            total_stride: 16,
        }
    }
}

impl TargetConfig {
    /// The grid offset the official `DenseboxTarget` derives: `(x_size − 1 − (side − 1)·stride) / 2`
    /// (integer division, floored like Python's `//`).
    pub fn score_offset(&self) -> i64 {
        let v = self.x_size as i64 - 1 - (self.score_size as i64 - 1) * self.total_stride as i64;
        v.div_euclid(2)
    }

    /// Cells of the score map.
    pub fn cells(&self) -> usize {
        self.score_size * self.score_size
    }
}

/// Labels of one training pair, flat over cells (index i·side + j).
#[derive(Clone, Debug, PartialEq)]
pub struct DenseTargets {
    /// `[cells]`: 1 positive, 0 negative, −1 ignored.
    pub cls: Vec<f32>,
    /// `[cells, 4]`: the ground-truth (x1, y1, x2, y2) at positive cells, 0 elsewhere.
    pub box_gt: Vec<f32>,
    /// `[cells]`: centerness (unused by SparseTT's losses, kept for parity).
    pub ctr: Vec<f32>,
}

/// The official targets for the ground-truth box `gt` = (x1, y1, x2, y2) in search-crop pixels.
pub fn dense_targets(cfg: &TargetConfig, gt: [f32; 4], negative_pair: bool) -> DenseTargets {
    let side = cfg.score_size;
    let off = cfg.score_offset();
    let stride = cfg.total_stride as i64;
    let n = cfg.cells();
    let mut out = DenseTargets {
        cls: vec![0.0; n],
        box_gt: vec![0.0; n * 4],
        ctr: vec![0.0; n],
    };
    let [x1, y1, x2, y2] = gt;
    for i in 0..side {
        for j in 0..side {
            let c = i * side + j;
            // Pixel coordinates are integers well inside f32's exact range.
            let x = (off + stride * j as i64) as f32;
            let y = (off + stride * i as i64) as f32;
            let (l, t, r, b) = (x - x1, y - y1, -(x - x2), -(y - y2));
            let inside = l > 0.0 && t > 0.0 && r > 0.0 && b > 0.0;
            if inside {
                out.cls[c] = 1.0;
                out.box_gt[c * 4..c * 4 + 4].copy_from_slice(&gt);
                let num = l.min(r) * t.min(b);
                let den = l.max(r) * t.max(b) + 1e-5f32;
                out.ctr[c] = (num / den).abs().sqrt();
            }
            if negative_pair {
                out.cls[c] = if inside { 0.0 } else { -1.0 };
            }
        }
    }
    out
}

/// Targets of a batch of pairs, concatenated: cls `[B·cells]`, box `[B·cells·4]`, ctr `[B·cells]`.
pub fn batch_targets(cfg: &TargetConfig, pairs: &[([f32; 4], bool)]) -> DenseTargets {
    let mut all = DenseTargets {
        cls: Vec::new(),
        box_gt: Vec::new(),
        ctr: Vec::new(),
    };
    for &(gt, neg) in pairs {
        let t = dense_targets(cfg, gt, neg);
        all.cls.extend(t.cls);
        all.box_gt.extend(t.box_gt);
        all.ctr.extend(t.ctr);
    }
    all
}
