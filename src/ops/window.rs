//! Swin window kernels, as the mmdet-2.x port used by SparseTT does them: window partition with
//! zero padding and cyclic shift, its reverse (optionally fused with the residual add), the
//! shifted-window region mask, the relative position bias gather, and PatchMerging's 2×2 gather.
//! All are pure data movement, so GPU and CPU results are bitwise equal.
//! Shader: `shaders/window.wgsl`.
//!
//! Token maps are `[B, H, W, C]` row-major (the `(B, H·W, C)` token layout viewed as a map).

use crate::gpu::{DType, Encoder, Tensor, Variant};
use crate::{shader, Error, Result};

shader!(WINDOW, "window.wgsl");

const WG: usize = 64;

/// How many channels one invocation moves. All forms give identical results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// One channel: any C.
    Scalar,
    /// One vec4: C % 4 == 0 (all of Swin-Tiny's widths). Neighbouring invocations touch
    /// neighbouring vec4s, which GPUs want.
    Vec4,
    /// Four consecutive vec4s of one token: C % 16 == 0. Fewer invocations, which CPU adapters
    /// want (about 15% less lavapipe time than `Vec4` on the 73×73×96 partition).
    Vec4x4,
}

impl Width {
    pub const ALL: [Width; 3] = [Width::Scalar, Width::Vec4, Width::Vec4x4];

    /// The fastest form `c` channels allow on a device running `variant` kernels.
    pub fn for_channels(c: usize, variant: Variant) -> Width {
        if c.is_multiple_of(16) && variant == Variant::Register {
            Width::Vec4x4
        } else if c.is_multiple_of(4) {
            Width::Vec4
        } else {
            Width::Scalar
        }
    }

    /// Channels one invocation moves.
    pub fn channels(self) -> usize {
        match self {
            Width::Scalar => 1,
            Width::Vec4 => 4,
            Width::Vec4x4 => 16,
        }
    }

    /// Entry point and override constants for `c` channels.
    fn kernel(
        self,
        base: &'static str,
        window: usize,
        c: usize,
    ) -> (&'static str, Vec<(&'static str, f64)>) {
        let v4 = match base {
            "win_partition" => "win_partition_v4",
            "reverse" => "reverse_v4",
            "reverse_add" => "reverse_add_v4",
            "merge_bw" => "merge_bw_v4",
            _ => "merge_v4",
        };
        let mut consts = vec![("WIN", window as f64)];
        if base == "merge" || base == "merge_bw" {
            consts.clear(); // the window plays no part in patch merging
        }
        match self {
            Width::Scalar => {
                consts.push(("CV", c as f64));
                (base, consts)
            }
            Width::Vec4 | Width::Vec4x4 => {
                let k = self.channels() / 4;
                consts.push(("CV", (c / 4) as f64));
                consts.push(("K", k as f64));
                (v4, consts)
            }
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    h: u32,
    w: u32,
    hp: u32,
    wp: u32,
    shift: u32,
    nww: u32,
    nw: u32,
    n: u32,
    eps: f32,
    _pad: [u32; 3],
}

/// Sizes of the padded, windowed map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGrid {
    /// Rows and columns after zero-padding bottom/right to multiples of the window.
    pub hp: usize,
    pub wp: usize,
    /// Windows per column and per row.
    pub nwh: usize,
    pub nww: usize,
}

impl WindowGrid {
    /// The grid of an H × W map in `window` × `window` windows (`window` ≥ 1).
    pub fn new(h: usize, w: usize, window: usize) -> Result<WindowGrid> {
        check_window("window_grid", window, 0)?;
        let hp = h.div_ceil(window) * window;
        let wp = w.div_ceil(window) * window;
        Ok(WindowGrid {
            hp,
            wp,
            nwh: hp / window,
            nww: wp / window,
        })
    }

    /// Windows per image.
    pub fn count(&self) -> usize {
        self.nwh * self.nww
    }
}

fn check_window(op: &'static str, window: usize, shift: usize) -> Result<()> {
    if window == 0 || shift >= window {
        return Err(Error::shape(
            op,
            format!("window {window} with shift {shift}: need window ≥ 1 and shift < window"),
        ));
    }
    Ok(())
}

fn check_map(op: &'static str, x: &Tensor) -> Result<[usize; 4]> {
    let s = x.shape();
    if x.dtype() != DType::F32 || s.len() != 4 || s.contains(&0) {
        return Err(Error::shape(
            op,
            format!("expects a non-empty f32 [B, H, W, C] map, got {x:?}"),
        ));
    }
    Ok([s[0], s[1], s[2], s[3]])
}

fn check_width(op: &'static str, width: Width, c: usize) -> Result<()> {
    let n = width.channels();
    if !c.is_multiple_of(n) {
        return Err(Error::shape(
            op,
            format!("{width:?} access needs C % {n} == 0, got C = {c}"),
        ));
    }
    Ok(())
}

fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(op, format!("{what} = {v} exceeds u32 indexing")))
}

/// A 3-D grid, checked here so the error names the op rather than the dispatch.
fn grid(enc: &Encoder, op: &'static str, g: [usize; 3]) -> Result<[u32; 3]> {
    let max = enc.gpu().limits.max_compute_workgroups_per_dimension as usize;
    if let Some(&v) = g.iter().find(|&&v| v > max) {
        return Err(Error::TooLarge {
            op,
            what: format!("workgroup grid {g:?}"),
            value: v as u64,
            limit_name: "max_compute_workgroups_per_dimension",
            limit: max as u64,
        });
    }
    Ok([g[0].max(1) as u32, g[1].max(1) as u32, g[2].max(1) as u32])
}

/// mmdet's `ShiftWindowMSA` windowing: zero-pad `x` (`[B, H, W, C]`) bottom/right to multiples of
/// `window` (Hp × Wp), roll the padded map by (−shift, −shift) (`torch.roll(x, (-s, -s), (1, 2))`),
/// and cut it into windows in row-major window order:
/// `out[b·nW + wy·nWw + wx, ty·window + tx, c] = padded[b, (wy·window + ty + s) mod Hp, (wx·window + tx + s) mod Wp, c]`.
/// Returns `[B·nW, window², C]`. One dispatch.
pub fn window_partition(
    enc: &mut Encoder,
    x: &Tensor,
    window: usize,
    shift: usize,
) -> Result<Tensor> {
    let c = x.shape().last().copied().unwrap_or(0);
    let width = Width::for_channels(c, enc.gpu().variant());
    window_partition_with(enc, x, window, shift, width)
}

/// [`window_partition`] with an explicit access width.
pub fn window_partition_with(
    enc: &mut Encoder,
    x: &Tensor,
    window: usize,
    shift: usize,
    width: Width,
) -> Result<Tensor> {
    partition_impl(enc, "window_partition", x, window, shift, width, None)
}

/// The partition kernel; with `into` (`[B·nW, window², C]`) it adds into that tensor instead.
fn partition_impl(
    enc: &mut Encoder,
    op: &'static str,
    x: &Tensor,
    window: usize,
    shift: usize,
    width: Width,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    check_window(op, window, shift)?;
    let [b, h, w, c] = check_map(op, x)?;
    check_width(op, width, c)?;
    let g = WindowGrid::new(h, w, window)?;
    let nw = g.count();
    let shape = [b * nw, window * window, c];
    let out = match into {
        Some(t) => {
            check_into(op, t, &shape, &[x])?;
            t.clone()
        }
        None => enc.gpu().empty(op, &shape, DType::F32)?,
    };
    let (entry, mut consts) = width.kernel("win_partition", window, c);
    if into.is_some() {
        consts.push(("ACCUM", 1.0));
    }
    let p = Params {
        h: u32_of(op, "H", h)?,
        w: u32_of(op, "W", w)?,
        hp: u32_of(op, "Hp", g.hp)?,
        wp: u32_of(op, "Wp", g.wp)?,
        shift: shift as u32,
        nww: g.nww as u32,
        nw: u32_of(op, "windows", nw)?,
        n: 0,
        ..bytemuck::Zeroable::zeroed()
    };
    let per_window = window * window * c / width.channels();
    let groups = grid(enc, op, [per_window.div_ceil(WG), nw, b])?;
    enc.dispatch(
        &WINDOW,
        entry,
        &consts,
        bytemuck::bytes_of(&p),
        &[x, &out],
        groups,
    )?;
    Ok(out)
}

/// `window_partition(layer_norm(x))` in one dispatch (Swin's norm1 before the windows): every
/// token of `x` (`[B, H, W, C]`) normalised over C with `gamma`, `beta`, `eps`, then padded with
/// zeros, rolled and cut as [`window_partition`] does. Pad tokens stay zero, as mmdet pads after
/// the norm.
pub fn window_partition_ln(
    enc: &mut Encoder,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    window: usize,
    shift: usize,
) -> Result<Tensor> {
    const OP: &str = "window_partition_ln";
    check_window(OP, window, shift)?;
    let [b, h, w, c] = check_map(OP, x)?;
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.shape() != [c] || t.dtype() != DType::F32 {
            return Err(Error::shape(
                OP,
                format!("{name} must be [{c}] f32, got {:?}", t.shape()),
            ));
        }
    }
    let g = WindowGrid::new(h, w, window)?;
    let nw = g.count();
    let tokens = b * nw * window * window;
    let out = enc
        .gpu()
        .empty(OP, &[b * nw, window * window, c], DType::F32)?;
    let p = Params {
        h: u32_of(OP, "H", h)?,
        w: u32_of(OP, "W", w)?,
        hp: u32_of(OP, "Hp", g.hp)?,
        wp: u32_of(OP, "Wp", g.wp)?,
        shift: shift as u32,
        nww: g.nww as u32,
        nw: u32_of(OP, "windows", nw)?,
        n: u32_of(OP, "batch", b)?,
        eps,
        _pad: [0; 3],
    };
    let groups = enc.gpu().grid(tokens.div_ceil(WG) as u64);
    enc.dispatch(
        &WINDOW,
        "win_partition_ln",
        &[("WIN", window as f64), ("CV", c as f64)],
        bytemuck::bytes_of(&p),
        &[x, &out, gamma, beta],
        groups,
    )?;
    Ok(out)
}

/// The inverse of [`window_partition`] for a `[B, H, W, C]` map: merges `windows`
/// (`[B·nW, window², C]`) into the padded Hp × Wp map, rolls it by (+shift, +shift) and crops it to
/// H × W: `out[b, y, x, c] = merged[b, (y − s) mod Hp, (x − s) mod Wp, c]`. One dispatch.
pub fn window_reverse(
    enc: &mut Encoder,
    windows: &Tensor,
    b: usize,
    h: usize,
    w: usize,
    window: usize,
    shift: usize,
) -> Result<Tensor> {
    let c = windows.shape().last().copied().unwrap_or(0);
    window_reverse_with(
        enc,
        windows,
        [b, h, w],
        window,
        shift,
        None,
        Width::for_channels(c, enc.gpu().variant()),
    )
}

/// `residual + window_reverse(windows, ..)`, the block's `x = x + attn(x)` in the same pass; B, H
/// and W are those of `residual` (`[B, H, W, C]`).
pub fn window_reverse_add(
    enc: &mut Encoder,
    windows: &Tensor,
    residual: &Tensor,
    window: usize,
    shift: usize,
) -> Result<Tensor> {
    let [b, h, w, _] = check_map("window_reverse", residual)?;
    let c = windows.shape().last().copied().unwrap_or(0);
    window_reverse_with(
        enc,
        windows,
        [b, h, w],
        window,
        shift,
        Some(residual),
        Width::for_channels(c, enc.gpu().variant()),
    )
}

/// [`window_reverse`] (or, with `residual`, [`window_reverse_add`]) with an explicit access
/// width; `bhw` = [B, H, W] of the output map.
pub fn window_reverse_with(
    enc: &mut Encoder,
    windows: &Tensor,
    [b, h, w]: [usize; 3],
    window: usize,
    shift: usize,
    residual: Option<&Tensor>,
    width: Width,
) -> Result<Tensor> {
    reverse_impl(
        enc,
        "window_reverse",
        windows,
        [b, h, w],
        window,
        shift,
        residual,
        width,
        None,
    )
}

/// The reverse kernel; with `into` (`[B, H, W, C]`, no residual) it adds into that tensor.
#[allow(clippy::too_many_arguments)]
fn reverse_impl(
    enc: &mut Encoder,
    op: &'static str,
    windows: &Tensor,
    [b, h, w]: [usize; 3],
    window: usize,
    shift: usize,
    residual: Option<&Tensor>,
    width: Width,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    check_window(op, window, shift)?;
    let s = windows.shape();
    if b == 0 || h == 0 || w == 0 {
        return Err(Error::shape(
            op,
            format!("map size B {b}, H {h}, W {w} must be non-zero"),
        ));
    }
    let g = WindowGrid::new(h, w, window)?;
    let nw = g.count();
    if windows.dtype() != DType::F32
        || s.len() != 3
        || s[0] != b * nw
        || s[1] != window * window
        || s[2] == 0
    {
        return Err(Error::shape(
            op,
            format!(
                "a {b}×{h}×{w} map in {window}×{window} windows ({nw} per image) needs f32 \
                 windows [{}, {}, C], got {windows:?}",
                b * nw,
                window * window
            ),
        ));
    }
    let c = s[2];
    if let Some(r) = residual {
        if r.dtype() != DType::F32 || r.shape() != [b, h, w, c] {
            return Err(Error::shape(
                op,
                format!("residual must be f32 [{b}, {h}, {w}, {c}], got {r:?}"),
            ));
        }
    }
    check_width(op, width, c)?;
    let out = match into {
        Some(t) => {
            check_into(op, t, &[b, h, w, c], &[windows])?;
            t.clone()
        }
        None => enc.gpu().empty(op, &[b, h, w, c], DType::F32)?,
    };
    let p = Params {
        h: u32_of(op, "H", h)?,
        w: u32_of(op, "W", w)?,
        hp: u32_of(op, "Hp", g.hp)?,
        wp: u32_of(op, "Wp", g.wp)?,
        shift: shift as u32,
        nww: g.nww as u32,
        nw: u32_of(op, "windows", nw)?,
        n: 0,
        ..bytemuck::Zeroable::zeroed()
    };
    let groups = grid(enc, op, [(w * c / width.channels()).div_ceil(WG), h, b])?;
    let base = if residual.is_some() {
        "reverse_add"
    } else {
        "reverse"
    };
    let (entry, mut consts) = width.kernel(base, window, c);
    if into.is_some() {
        consts.push(("ACCUM", 1.0));
    }
    match residual {
        None => enc.dispatch(
            &WINDOW,
            entry,
            &consts,
            bytemuck::bytes_of(&p),
            &[windows, &out],
            groups,
        )?,
        Some(r) => enc.dispatch(
            &WINDOW,
            entry,
            &consts,
            bytemuck::bytes_of(&p),
            &[windows, r, &out],
            groups,
        )?,
    }
    Ok(out)
}

/// The shifted-window attention mask of mmdet's `ShiftWindowMSA` for a padded `hp × wp` map
/// (both multiples of `window`): each axis is split into the regions `[0, −window)`,
/// `[−window, −shift)`, `[−shift, ∞)` (Python slices on the padded map), region ids are
/// window-partitioned, and `mask[n, i, j] = 0` if tokens i and j of window n share a region,
/// else −100.0. Returns `[nW, window², window²]`. With shift 0 the mask is all zeros (as the
/// slices evaluate; mmdet passes no mask then). One dispatch; the result depends only on the
/// arguments, so callers compute it once per map size.
pub fn region_mask(
    enc: &mut Encoder,
    hp: usize,
    wp: usize,
    window: usize,
    shift: usize,
) -> Result<Tensor> {
    const OP: &str = "region_mask";
    check_window(OP, window, shift)?;
    if hp == 0 || wp == 0 || !hp.is_multiple_of(window) || !wp.is_multiple_of(window) {
        return Err(Error::shape(
            OP,
            format!(
                "padded map {hp}×{wp} must be a non-empty multiple of the window {window} \
                 (pad H and W up first)"
            ),
        ));
    }
    let g = WindowGrid::new(hp, wp, window)?;
    let n = window * window;
    let out = enc.gpu().empty(OP, &[g.count(), n, n], DType::F32)?;
    let p = Params {
        hp: u32_of(OP, "Hp", hp)?,
        wp: u32_of(OP, "Wp", wp)?,
        shift: shift as u32,
        nww: g.nww as u32,
        nw: u32_of(OP, "windows", g.count())?,
        ..Default::default()
    };
    let groups = grid(enc, OP, [(n * n).div_ceil(WG), g.count(), 1])?;
    enc.dispatch(
        &WINDOW,
        "region_mask",
        &[("WIN", window as f64)],
        bytemuck::bytes_of(&p),
        &[&out],
        groups,
    )?;
    Ok(out)
}

/// Swin's relative position bias: `out[h, i, j] = table[idx(i, j), h]` with, for
/// i = hi·w + wi and j = hj·w + wj, `idx = (hi − hj + w − 1)·(2w − 1) + (wi − wj + w − 1)`.
/// `table` is `[(2w − 1)², heads]`; returns `[heads, w², w²]`. One dispatch.
pub fn relative_position_bias(enc: &mut Encoder, table: &Tensor, window: usize) -> Result<Tensor> {
    const OP: &str = "relative_position_bias";
    check_window(OP, window, 0)?;
    let rows = (2 * window - 1) * (2 * window - 1);
    let s = table.shape();
    if table.dtype() != DType::F32 || s.len() != 2 || s[0] != rows || s[1] == 0 {
        return Err(Error::shape(
            OP,
            format!(
                "window {window} needs an f32 table [{rows}, heads] ((2·{window} − 1)² rows), \
                 got {table:?}"
            ),
        ));
    }
    let heads = s[1];
    let n = window * window;
    let out = enc.gpu().empty(OP, &[heads, n, n], DType::F32)?;
    let p = Params {
        n: u32_of(OP, "heads", heads)?,
        ..Default::default()
    };
    let groups = grid(enc, OP, [(n * n).div_ceil(WG), heads, 1])?;
    enc.dispatch(
        &WINDOW,
        "rel_bias",
        &[("WIN", window as f64)],
        bytemuck::bytes_of(&p),
        &[table, &out],
        groups,
    )?;
    Ok(out)
}

/// mmdet's `PatchMerging` gather: zero-pad `x` (`[B, H, W, C]`) bottom/right to even H and W,
/// then take 2×2 neighbourhoods in `nn.Unfold(2, stride 2)` order:
/// `out[b, oy·W2 + ox, c·4 + kh·2 + kw] = padded[b, 2·oy + kh, 2·ox + kw, c]`.
/// Returns `[B, ⌈H/2⌉·⌈W/2⌉, 4C]`. One dispatch.
pub fn patch_merge(enc: &mut Encoder, x: &Tensor) -> Result<Tensor> {
    let c = x.shape().last().copied().unwrap_or(0);
    let width = Width::for_channels(c, enc.gpu().variant());
    patch_merge_with(enc, x, width)
}

/// [`patch_merge`] with an explicit access width.
pub fn patch_merge_with(enc: &mut Encoder, x: &Tensor, width: Width) -> Result<Tensor> {
    const OP: &str = "patch_merge";
    let [b, h, w, c] = check_map(OP, x)?;
    check_width(OP, width, c)?;
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let out = enc.gpu().empty(OP, &[b, h2 * w2, 4 * c], DType::F32)?;
    let (entry, consts) = width.kernel("merge", 0, c);
    let p = Params {
        h: u32_of(OP, "H", h)?,
        w: u32_of(OP, "W", w)?,
        hp: h2 as u32,
        wp: w2 as u32,
        ..Default::default()
    };
    let groups = grid(enc, OP, [(w2 * c / width.channels()).div_ceil(WG), h2, b])?;
    enc.dispatch(
        &WINDOW,
        entry,
        &consts,
        bytemuck::bytes_of(&p),
        &[x, &out],
        groups,
    )?;
    Ok(out)
}

/// `layer_norm(patch_merge(x))` in one dispatch (Swin's PatchMerging before its reduction):
/// `x` `[B, H, W, C]` → `[B, ⌈H/2⌉·⌈W/2⌉, 4C]`, normalised over the 4C merged channels with
/// `gamma`, `beta` (`[4C]`) and `eps`.
pub fn patch_merge_ln(
    enc: &mut Encoder,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    const OP: &str = "patch_merge_ln";
    let [b, h, w, c] = check_map(OP, x)?;
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.shape() != [4 * c] || t.dtype() != DType::F32 {
            return Err(Error::shape(
                OP,
                format!("{name} must be [{}] f32, got {:?}", 4 * c, t.shape()),
            ));
        }
    }
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let out = enc.gpu().empty(OP, &[b, h2 * w2, 4 * c], DType::F32)?;
    let p = Params {
        h: u32_of(OP, "H", h)?,
        w: u32_of(OP, "W", w)?,
        hp: h2 as u32,
        wp: w2 as u32,
        n: u32_of(OP, "batch", b)?,
        eps,
        ..Default::default()
    };
    let groups = enc.gpu().grid((b * h2 * w2).div_ceil(WG) as u64);
    enc.dispatch(
        &WINDOW,
        "merge_ln",
        &[("CV", c as f64)],
        bytemuck::bytes_of(&p),
        &[x, &out, gamma, beta],
        groups,
    )?;
    Ok(out)
}

// ---- backward ------------------------------------------------------------------------------
// Every op here except the LayerNorms is linear data movement, so each backward is the adjoint
// map: partition and reverse are each other's adjoint (pad tokens are zeros one way and are
// dropped the other way), patch merging scatters back, the bias gather sums into its table.
// Gradients named in `into` are added into that tensor (the backward ops' convention).

/// A tensor a gradient is added into: f32, of `shape`, no buffer shared with an input.
fn check_into(op: &'static str, t: &Tensor, shape: &[usize], inputs: &[&Tensor]) -> Result<()> {
    let shared = inputs
        .iter()
        .any(|i| std::sync::Arc::ptr_eq(i.pooled(), t.pooled()));
    if t.dtype() != DType::F32 || t.shape() != shape || shared {
        return Err(Error::shape(
            op,
            format!("into {t:?} must be an f32 {shape:?} tensor apart from the inputs"),
        ));
    }
    Ok(())
}

/// Backward of [`window_partition`] for the window-layout gradient `dwin` (`[B·nW, window², C]`)
/// of a `[B, H, W, C]` map (`bhw` = [B, H, W]): `dx[b, y, x, c] = dwin[b·nW + wy·nWw + wx,
/// ty·window + tx, c]` where the partition took (y, x) from, i.e. [`window_reverse`]; the
/// gradients of pad tokens are dropped. With `into` (`[B, H, W, C]`) it is added into that.
pub fn window_partition_backward(
    enc: &mut Encoder,
    dwin: &Tensor,
    bhw: [usize; 3],
    window: usize,
    shift: usize,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    let c = dwin.shape().last().copied().unwrap_or(0);
    let width = Width::for_channels(c, enc.gpu().variant());
    window_partition_backward_with(enc, dwin, bhw, window, shift, into, width)
}

/// [`window_partition_backward`] with an explicit access width.
pub fn window_partition_backward_with(
    enc: &mut Encoder,
    dwin: &Tensor,
    bhw: [usize; 3],
    window: usize,
    shift: usize,
    into: Option<&Tensor>,
    width: Width,
) -> Result<Tensor> {
    reverse_impl(
        enc,
        "window_partition_backward",
        dwin,
        bhw,
        window,
        shift,
        None,
        width,
        into,
    )
}

/// Backward of [`window_reverse`] (and of the attention's fused window scatter, whose
/// `[B, h·w, C]` output gradient is this `[B, H, W, C]` map reshaped) for the map gradient
/// `dmap`: `dwin = window_partition(dmap)`, zero on pad tokens (the reverse dropped them). For
/// [`window_reverse_add`] the residual's gradient is `dmap` itself. With `into`
/// (`[B·nW, window², C]`) the result is added into that tensor.
pub fn window_reverse_backward(
    enc: &mut Encoder,
    dmap: &Tensor,
    window: usize,
    shift: usize,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    let c = dmap.shape().last().copied().unwrap_or(0);
    let width = Width::for_channels(c, enc.gpu().variant());
    window_reverse_backward_with(enc, dmap, window, shift, into, width)
}

/// [`window_reverse_backward`] with an explicit access width.
pub fn window_reverse_backward_with(
    enc: &mut Encoder,
    dmap: &Tensor,
    window: usize,
    shift: usize,
    into: Option<&Tensor>,
    width: Width,
) -> Result<Tensor> {
    partition_impl(
        enc,
        "window_reverse_backward",
        dmap,
        window,
        shift,
        width,
        into,
    )
}

/// Backward of [`window_partition_ln`] for `dwin` (`[B·nW, window², C]`), run as two steps: the
/// partition's backward gathers `dwin` to the token map (pad tokens dropped), then
/// [`layer_norm_backward`](crate::ops::norm::layer_norm_backward) on `x` (statistics recomputed)
/// gives `dx`, `dgamma = Σ dln·x̂`, `dbeta = Σ dln`, added into `into`'s tensors where named.
#[allow(clippy::too_many_arguments)]
pub fn window_partition_ln_backward(
    enc: &mut Encoder,
    x: &Tensor,
    gamma: &Tensor,
    dwin: &Tensor,
    eps: f32,
    window: usize,
    shift: usize,
    into: &crate::ops::norm::LayerNormInto,
) -> Result<crate::ops::norm::LayerNormGrads> {
    const OP: &str = "window_partition_ln_backward";
    let [b, h, w, c] = check_map(OP, x)?;
    if gamma.shape() != [c] || gamma.dtype() != DType::F32 {
        return Err(Error::shape(
            OP,
            format!("gamma must be [{c}] f32, got {gamma:?}"),
        ));
    }
    let dln = reverse_impl(
        enc,
        OP,
        dwin,
        [b, h, w],
        window,
        shift,
        None,
        Width::for_channels(c, enc.gpu().variant()),
        None,
    )?;
    crate::ops::norm::layer_norm_backward(enc, x, gamma, &dln, eps, into)
}

/// Backward of [`patch_merge`] for `dy` (`[B, ⌈H/2⌉·⌈W/2⌉, 4C]`) of a `[B, H, W, C]` map
/// (`dims`): `dx[b, 2·oy + kh, 2·ox + kw, c] = dy[b, oy·W2 + ox, c·4 + kh·2 + kw]`; gradients of
/// the even-size zero pad are dropped. With `into` (`[B, H, W, C]`) it is added into that.
pub fn patch_merge_backward(
    enc: &mut Encoder,
    dy: &Tensor,
    dims: [usize; 4],
    into: Option<&Tensor>,
) -> Result<Tensor> {
    let width = Width::for_channels(dims[3], enc.gpu().variant());
    patch_merge_backward_with(enc, dy, dims, into, width)
}

/// [`patch_merge_backward`] with an explicit access width.
pub fn patch_merge_backward_with(
    enc: &mut Encoder,
    dy: &Tensor,
    [b, h, w, c]: [usize; 4],
    into: Option<&Tensor>,
    width: Width,
) -> Result<Tensor> {
    const OP: &str = "patch_merge_backward";
    if [b, h, w, c].contains(&0) {
        return Err(Error::shape(
            OP,
            format!("map [{b}, {h}, {w}, {c}] must be non-empty"),
        ));
    }
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    if dy.dtype() != DType::F32 || dy.shape() != [b, h2 * w2, 4 * c] {
        return Err(Error::shape(
            OP,
            format!(
                "a [{b}, {h}, {w}, {c}] map needs f32 dy [{b}, {}, {}], got {dy:?}",
                h2 * w2,
                4 * c
            ),
        ));
    }
    check_width(OP, width, c)?;
    let out = match into {
        Some(t) => {
            check_into(OP, t, &[b, h, w, c], &[dy])?;
            t.clone()
        }
        None => enc.gpu().empty(OP, &[b, h, w, c], DType::F32)?,
    };
    let (entry, mut consts) = width.kernel("merge_bw", 0, c);
    if into.is_some() {
        consts.push(("ACCUM", 1.0));
    }
    let p = Params {
        h: u32_of(OP, "H", h)?,
        w: u32_of(OP, "W", w)?,
        hp: h2 as u32,
        wp: w2 as u32,
        ..Default::default()
    };
    u32_of(OP, "elements", b * h2 * w2 * 4 * c)?;
    let groups = grid(enc, OP, [(w2 * c / width.channels()).div_ceil(WG), h2, b])?;
    enc.dispatch(
        &WINDOW,
        entry,
        &consts,
        bytemuck::bytes_of(&p),
        &[dy, &out],
        groups,
    )?;
    Ok(out)
}

/// Backward of [`patch_merge_ln`] for `dy` (`[B, ⌈H/2⌉·⌈W/2⌉, 4C]`), in three steps: the merge is
/// recomputed from `x`, [`layer_norm_backward`](crate::ops::norm::layer_norm_backward) over its
/// 4C channels gives the merged gradient and `dgamma`, `dbeta` (`[4C]`), and
/// [`patch_merge_backward`] scatters the merged gradient to `dx` (`[B, H, W, C]`). Gradients
/// named in `into` are added into those tensors.
pub fn patch_merge_ln_backward(
    enc: &mut Encoder,
    x: &Tensor,
    gamma: &Tensor,
    dy: &Tensor,
    eps: f32,
    into: &crate::ops::norm::LayerNormInto,
) -> Result<crate::ops::norm::LayerNormGrads> {
    const OP: &str = "patch_merge_ln_backward";
    let dims = check_map(OP, x)?;
    let c = dims[3];
    if gamma.shape() != [4 * c] || gamma.dtype() != DType::F32 {
        return Err(Error::shape(
            OP,
            format!("gamma must be [{}] f32, got {gamma:?}", 4 * c),
        ));
    }
    let (h2, w2) = (dims[1].div_ceil(2), dims[2].div_ceil(2));
    if dy.dtype() != DType::F32 || dy.shape() != [dims[0], h2 * w2, 4 * c] {
        return Err(Error::shape(
            OP,
            format!(
                "x {x:?} needs f32 dy [{}, {}, {}], got {dy:?}",
                dims[0],
                h2 * w2,
                4 * c
            ),
        ));
    }
    if let Some(t) = into.dx {
        check_into(OP, t, &dims, &[x, gamma, dy])?;
    }
    let merged = patch_merge(enc, x)?;
    let params_only = crate::ops::norm::LayerNormInto {
        dx: None,
        dweight: into.dweight,
        dbias: into.dbias,
    };
    let g = crate::ops::norm::layer_norm_backward(enc, &merged, gamma, dy, eps, &params_only)?;
    let dx = patch_merge_backward(enc, &g.dx, dims, into.dx)?;
    Ok(crate::ops::norm::LayerNormGrads {
        dx,
        dweight: g.dweight,
        dbias: g.dbias,
    })
}

/// Backward of [`relative_position_bias`] for `dbias` (`[heads, w², w²]`): every table entry
/// sums the bias gradients that read it, `dtable[r, h] = Σ_{(i, j): idx(i, j) = r} dbias[h, i, j]`
/// (ascending i, one invocation per entry: deterministic, no atomics). Returns
/// `[(2w − 1)², heads]`, or adds into `into` of that shape.
pub fn relative_position_bias_backward(
    enc: &mut Encoder,
    dbias: &Tensor,
    window: usize,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "relative_position_bias_backward";
    check_window(OP, window, 0)?;
    let n = window * window;
    let s = dbias.shape();
    if dbias.dtype() != DType::F32 || s.len() != 3 || s[0] == 0 || s[1] != n || s[2] != n {
        return Err(Error::shape(
            OP,
            format!("window {window} needs an f32 dbias [heads, {n}, {n}], got {dbias:?}"),
        ));
    }
    let heads = s[0];
    let rows = (2 * window - 1) * (2 * window - 1);
    let out = match into {
        Some(t) => {
            check_into(OP, t, &[rows, heads], &[dbias])?;
            t.clone()
        }
        None => enc.gpu().empty(OP, &[rows, heads], DType::F32)?,
    };
    u32_of(OP, "dbias elements", dbias.numel())?;
    let p = Params {
        n: u32_of(OP, "heads", heads)?,
        ..Default::default()
    };
    let mut consts = vec![("WIN", window as f64)];
    if into.is_some() {
        consts.push(("ACCUM", 1.0));
    }
    let groups = grid(enc, OP, [(rows * heads).div_ceil(WG), 1, 1])?;
    enc.dispatch(
        &WINDOW,
        "rel_bias_bw",
        &consts,
        bytemuck::bytes_of(&p),
        &[dbias, &out],
        groups,
    )?;
    Ok(out)
}

/// Partition and reverse (plain and fused with the residual) of the search image's stage-1 map
/// (73×73×96, shift 3), and its patch merge. Each timed batch records `REPS` dispatches so that
/// the submit-and-wait overhead does not swamp kernels this short; rows report one dispatch.
/// Bytes count each element read or written once (pad zeros are written, not read).
#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &crate::Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
    use crate::bench::{median_ms, Row};
    const REPS: usize = 10;
    let (h, w, c, win, shift) = (73, 73, 96, 7, 3);
    let x = gpu.upload(&[1, h, w, c], &vec![0.5; h * w * c])?;
    let g = WindowGrid::new(h, w, win)?;
    let map = (h * w * c * 4) as f64;
    let padded = (g.hp * g.wp * c * 4) as f64;
    let wins = {
        let mut enc = gpu.encoder();
        let t = window_partition(&mut enc, &x, win, shift)?;
        enc.submit()?;
        t
    };
    let shape = format!("1x{h}x{w}x{c} w{win} s{shift}");
    for width in Width::ALL {
        let ms = median_ms(gpu, 2, 9, |enc| {
            for _ in 0..REPS {
                window_partition_with(enc, &x, win, shift, width)?;
            }
            Ok(())
        })? / REPS as f64;
        rows.push(Row {
            kernel: format!("window_partition {width:?}").to_lowercase(),
            shape: shape.clone(),
            median_ms: ms,
            flops: None,
            bytes: Some(map + padded),
        });
        for residual in [None, Some(&x)] {
            let ms = median_ms(gpu, 2, 9, |enc| {
                for _ in 0..REPS {
                    window_reverse_with(enc, &wins, [1, h, w], win, shift, residual, width)?;
                }
                Ok(())
            })? / REPS as f64;
            let name = if residual.is_some() {
                "window_reverse_add"
            } else {
                "window_reverse"
            };
            rows.push(Row {
                kernel: format!("{name} {width:?}").to_lowercase(),
                shape: shape.clone(),
                median_ms: ms,
                flops: residual.map(|_| (h * w * c) as f64),
                bytes: Some(map * if residual.is_some() { 3.0 } else { 2.0 }),
            });
        }
        let ms = median_ms(gpu, 2, 9, |enc| {
            for _ in 0..REPS {
                patch_merge_with(enc, &x, width)?;
            }
            Ok(())
        })? / REPS as f64;
        let merged = (h.div_ceil(2) * w.div_ceil(2) * 4 * c * 4) as f64;
        rows.push(Row {
            kernel: format!("patch_merge {width:?}").to_lowercase(),
            shape: format!("1x{h}x{w}x{c}"),
            median_ms: ms,
            flops: None,
            bytes: Some(map + merged),
        });
    }
    Ok(())
}

/// Plain-loop references, written as the PyTorch code reads: pad, roll, reshape.
pub mod cpu {
    /// Zero-pads `[B, H, W, C]` bottom/right to `[B, hp, wp, C]`.
    pub fn pad<T: Copy + Default>(
        x: &[T],
        [b, h, w, c]: [usize; 4],
        hp: usize,
        wp: usize,
    ) -> Vec<T> {
        let mut out = vec![T::default(); b * hp * wp * c];
        for bi in 0..b {
            for y in 0..h {
                for xx in 0..w {
                    let src = ((bi * h + y) * w + xx) * c;
                    let dst = ((bi * hp + y) * wp + xx) * c;
                    out[dst..dst + c].copy_from_slice(&x[src..src + c]);
                }
            }
        }
        out
    }

    /// `torch.roll(x, (sy, sx), dims=(1, 2))` on `[B, H, W, C]`: `out[i] = x[(i − shift) mod n]`.
    pub fn roll<T: Copy + Default>(
        x: &[T],
        [b, h, w, c]: [usize; 4],
        sy: isize,
        sx: isize,
    ) -> Vec<T> {
        let mut out = vec![T::default(); x.len()];
        for bi in 0..b {
            for y in 0..h {
                for xx in 0..w {
                    let fy = (y as isize - sy).rem_euclid(h as isize) as usize;
                    let fx = (xx as isize - sx).rem_euclid(w as isize) as usize;
                    let src = ((bi * h + fy) * w + fx) * c;
                    let dst = ((bi * h + y) * w + xx) * c;
                    out[dst..dst + c].copy_from_slice(&x[src..src + c]);
                }
            }
        }
        out
    }

    /// Swin's `window_partition` on an already padded `[B, hp, wp, C]` map.
    pub fn partition_padded<T: Copy + Default>(
        x: &[T],
        [b, hp, wp, c]: [usize; 4],
        window: usize,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(x.len());
        for bi in 0..b {
            for wy in 0..hp / window {
                for wx in 0..wp / window {
                    for ty in 0..window {
                        for tx in 0..window {
                            let src = ((bi * hp + wy * window + ty) * wp + wx * window + tx) * c;
                            out.extend_from_slice(&x[src..src + c]);
                        }
                    }
                }
            }
        }
        out
    }

    /// Swin's `window_reverse` into a padded `[B, hp, wp, C]` map.
    pub fn reverse_padded<T: Copy + Default>(
        win: &[T],
        [b, hp, wp, c]: [usize; 4],
        window: usize,
    ) -> Vec<T> {
        let mut out = vec![T::default(); b * hp * wp * c];
        let mut src = 0;
        for bi in 0..b {
            for wy in 0..hp / window {
                for wx in 0..wp / window {
                    for ty in 0..window {
                        for tx in 0..window {
                            let dst = ((bi * hp + wy * window + ty) * wp + wx * window + tx) * c;
                            out[dst..dst + c].copy_from_slice(&win[src..src + c]);
                            src += c;
                        }
                    }
                }
            }
        }
        out
    }

    fn padded(h: usize, w: usize, window: usize) -> (usize, usize) {
        (h.div_ceil(window) * window, w.div_ceil(window) * window)
    }

    /// pad → roll(−shift) → window_partition. `[B, H, W, C]` → `[B·nW, window², C]`.
    pub fn window_partition<T: Copy + Default>(
        x: &[T],
        [b, h, w, c]: [usize; 4],
        window: usize,
        shift: usize,
    ) -> Vec<T> {
        let (hp, wp) = padded(h, w, window);
        let p = pad(x, [b, h, w, c], hp, wp);
        let s = shift as isize;
        let r = roll(&p, [b, hp, wp, c], -s, -s);
        partition_padded(&r, [b, hp, wp, c], window)
    }

    /// window_reverse → roll(+shift) → crop. `[B·nW, window², C]` → `[B, H, W, C]`.
    pub fn window_reverse<T: Copy + Default>(
        win: &[T],
        [b, h, w, c]: [usize; 4],
        window: usize,
        shift: usize,
    ) -> Vec<T> {
        let (hp, wp) = padded(h, w, window);
        let m = reverse_padded(win, [b, hp, wp, c], window);
        let s = shift as isize;
        let r = roll(&m, [b, hp, wp, c], s, s);
        let mut out = Vec::with_capacity(b * h * w * c);
        for bi in 0..b {
            for y in 0..h {
                let src = (bi * hp + y) * wp * c;
                out.extend_from_slice(&r[src..src + w * c]);
            }
        }
        out
    }

    /// Python's `range(n)[start:stop]` for possibly negative bounds (`None` = open end).
    fn py_slice(start: Option<isize>, stop: Option<isize>, n: usize) -> std::ops::Range<usize> {
        let n = n as isize;
        let norm = |v: isize| if v < 0 { (v + n).max(0) } else { v.min(n) };
        let a = start.map_or(0, norm);
        let b = stop.map_or(n, norm);
        a as usize..(b.max(a)) as usize
    }

    /// mmdet's img_mask / mask_windows / attn_mask construction, literally. `[nW, w², w²]`.
    pub fn region_mask(hp: usize, wp: usize, window: usize, shift: usize) -> Vec<f32> {
        let (ws, s) = (window as isize, shift as isize);
        let slices = [
            (Some(0), Some(-ws)),
            (Some(-ws), Some(-s)),
            (Some(-s), None),
        ];
        let mut img = vec![0.0f32; hp * wp];
        let mut cnt = 0.0;
        for &(h0, h1) in &slices {
            for &(w0, w1) in &slices {
                for y in py_slice(h0, h1, hp) {
                    for x in py_slice(w0, w1, wp) {
                        img[y * wp + x] = cnt;
                    }
                }
                cnt += 1.0;
            }
        }
        let m = partition_padded(&img, [1, hp, wp, 1], window);
        let n = window * window;
        let mut out = Vec::with_capacity(m.len() * n);
        for win in m.chunks(n) {
            for i in 0..n {
                for j in 0..n {
                    // mask_windows.unsqueeze(1) − mask_windows.unsqueeze(2): [i, j] = m[j] − m[i]
                    out.push(if win[j] - win[i] != 0.0 { -100.0 } else { 0.0 });
                }
            }
        }
        out
    }

    /// mmdet's `relative_position_index` (`double_step_seq`, `+ .T`, `flip(1)`): `[w², w²]`.
    pub fn relative_position_index(window: usize) -> Vec<usize> {
        let n = window * window;
        // double_step_seq(2w − 1, w, 1, w): seq[kh·w + kw] = (2w − 1)·kh + kw
        let seq: Vec<usize> = (0..window)
            .flat_map(|kh| (0..window).map(move |kw| (2 * window - 1) * kh + kw))
            .collect();
        let mut out = vec![0; n * n];
        for i in 0..n {
            for j in 0..n {
                // (seq + seq.T)[i, j'] = seq[j'] + seq[i], then flip along dim 1: j' = n − 1 − j.
                out[i * n + j] = seq[n - 1 - j] + seq[i];
            }
        }
        out
    }

    /// `table[index.view(-1)].view(w², w², heads).permute(2, 0, 1)`: `[heads, w², w²]`.
    pub fn relative_position_bias<T: Copy + Default>(
        table: &[T],
        heads: usize,
        window: usize,
    ) -> Vec<T> {
        let idx = relative_position_index(window);
        let n2 = idx.len();
        let mut out = vec![T::default(); heads * n2];
        for h in 0..heads {
            for (k, &r) in idx.iter().enumerate() {
                out[h * n2 + k] = table[r * heads + h];
            }
        }
        out
    }

    /// permute to `[B, C, H, W]` → zero-pad to even → `nn.Unfold(2, stride 2)` → transpose:
    /// `[B, H, W, C]` → `[B, ⌈H/2⌉·⌈W/2⌉, 4C]`.
    pub fn patch_merge<T: Copy + Default>(x: &[T], [b, h, w, c]: [usize; 4]) -> Vec<T> {
        let (hp, wp) = (h.div_ceil(2) * 2, w.div_ceil(2) * 2);
        // NCHW padded copy
        let mut nchw = vec![T::default(); b * c * hp * wp];
        for bi in 0..b {
            for y in 0..h {
                for xx in 0..w {
                    for ci in 0..c {
                        nchw[((bi * c + ci) * hp + y) * wp + xx] =
                            x[((bi * h + y) * w + xx) * c + ci];
                    }
                }
            }
        }
        // Unfold: [B, C·2·2, L] with row index ci·4 + kh·2 + kw and L = oy·W2 + ox; then transpose.
        let (h2, w2) = (hp / 2, wp / 2);
        let l = h2 * w2;
        let mut unfold = vec![T::default(); b * 4 * c * l];
        for bi in 0..b {
            for ci in 0..c {
                for kh in 0..2 {
                    for kw in 0..2 {
                        let row = ci * 4 + kh * 2 + kw;
                        for oy in 0..h2 {
                            for ox in 0..w2 {
                                unfold[(bi * 4 * c + row) * l + oy * w2 + ox] =
                                    nchw[((bi * c + ci) * hp + 2 * oy + kh) * wp + 2 * ox + kw];
                            }
                        }
                    }
                }
            }
        }
        let mut out = vec![T::default(); b * l * 4 * c];
        for bi in 0..b {
            for row in 0..4 * c {
                for li in 0..l {
                    out[(bi * l + li) * 4 * c + row] = unfold[(bi * 4 * c + row) * l + li];
                }
            }
        }
        out
    }

    // ---- backward references: the forward loops with each copy turned into an add ----------

    /// Adjoint of [`window_partition`]: `[B·nW, window², C]` → `[B, H, W, C]`, each map element
    /// gets the window element the partition copied it to; pad tokens' gradients are dropped.
    pub fn window_partition_backward<T: Copy + Default + std::ops::AddAssign>(
        dwin: &[T],
        [b, h, w, c]: [usize; 4],
        window: usize,
        shift: usize,
    ) -> Vec<T> {
        let (hp, wp) = padded(h, w, window);
        let (nwh, nww) = (hp / window, wp / window);
        let mut dx = vec![T::default(); b * h * w * c];
        let mut src = 0;
        for bi in 0..b {
            for wy in 0..nwh {
                for wx in 0..nww {
                    for ty in 0..window {
                        for tx in 0..window {
                            // rolled[i] = padded[(i + shift) mod Hp]
                            let y = (wy * window + ty + shift) % hp;
                            let xx = (wx * window + tx + shift) % wp;
                            if y < h && xx < w {
                                let dst = ((bi * h + y) * w + xx) * c;
                                for ci in 0..c {
                                    dx[dst + ci] += dwin[src + ci];
                                }
                            }
                            src += c;
                        }
                    }
                }
            }
        }
        dx
    }

    /// Adjoint of [`window_reverse`]: `[B, H, W, C]` → `[B·nW, window², C]`, zero on pad tokens.
    pub fn window_reverse_backward<T: Copy + Default + std::ops::AddAssign>(
        dmap: &[T],
        [b, h, w, c]: [usize; 4],
        window: usize,
        shift: usize,
    ) -> Vec<T> {
        let (hp, wp) = padded(h, w, window);
        let (nwh, nww) = (hp / window, wp / window);
        let mut dwin = vec![T::default(); b * nwh * nww * window * window * c];
        for bi in 0..b {
            for y in 0..h {
                for xx in 0..w {
                    // out[y] = merged[(y − shift) mod Hp]
                    let py = (y + hp - shift) % hp;
                    let px = (xx + wp - shift) % wp;
                    let win = (bi * nwh + py / window) * nww + px / window;
                    let t = (py % window) * window + px % window;
                    let dst = (win * window * window + t) * c;
                    let src = ((bi * h + y) * w + xx) * c;
                    for ci in 0..c {
                        dwin[dst + ci] += dmap[src + ci];
                    }
                }
            }
        }
        dwin
    }

    /// Adjoint of [`patch_merge`]: `[B, ⌈H/2⌉·⌈W/2⌉, 4C]` → `[B, H, W, C]`.
    pub fn patch_merge_backward<T: Copy + Default + std::ops::AddAssign>(
        dy: &[T],
        [b, h, w, c]: [usize; 4],
    ) -> Vec<T> {
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let mut dx = vec![T::default(); b * h * w * c];
        for bi in 0..b {
            for oy in 0..h2 {
                for ox in 0..w2 {
                    for ci in 0..c {
                        for kh in 0..2 {
                            for kw in 0..2 {
                                let (y, xx) = (2 * oy + kh, 2 * ox + kw);
                                if y < h && xx < w {
                                    dx[((bi * h + y) * w + xx) * c + ci] += dy
                                        [((bi * h2 + oy) * w2 + ox) * 4 * c + ci * 4 + kh * 2 + kw];
                                }
                            }
                        }
                    }
                }
            }
        }
        dx
    }

    /// Adjoint of [`relative_position_bias`]: `[heads, w², w²]` → `[(2w − 1)², heads]`, each
    /// table entry the sum (ascending i, then j) of the bias gradients that read it.
    pub fn relative_position_bias_backward<T: Copy + Default + std::ops::AddAssign>(
        dbias: &[T],
        heads: usize,
        window: usize,
    ) -> Vec<T> {
        let idx = relative_position_index(window);
        let n2 = idx.len();
        let rows = (2 * window - 1) * (2 * window - 1);
        let mut dt = vec![T::default(); rows * heads];
        for h in 0..heads {
            for (k, &r) in idx.iter().enumerate() {
                dt[r * heads + h] += dbias[h * n2 + k];
            }
        }
        dt
    }
}
