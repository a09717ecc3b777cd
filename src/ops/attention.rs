//! Dense multi-head attention, fused into one dispatch: per batch item and head,
//! `out = softmax(scale·q·kᵀ + bias + mask)·v` with the softmax over keys (max-subtracted).
//! Covers Swin window attention (49×49 per window, relative-position bias, shifted-window mask)
//! and the neck's encoder self-attention and decoder cross-attention. [`attention_backward`]
//! gives the gradients of q, k, v and the bias (batched GEMMs around row softmax kernels).
//! Shader: `shaders/attention.wgsl`.

use crate::gpu::{DType, Encoder, Shader, ShaderNeeds, Tensor, Variant};
use crate::ops::matmul::{gemm, Epilogue, Gemm};
use crate::ops::reduce::{reduce_to, Axes, Dest, Reduce};
use crate::ops::softmax::{softmax, softmax_backward};
use crate::ops::HeadsView;
use crate::{Error, Result};

const SOURCE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/shaders/attention.wgsl"
));
const SUBGROUP_MARKER: &str = "// ---- subgroup kernels";

/// The part of `attention.wgsl` above the subgroup marker: a module that validates on devices
/// without the subgroup feature.
const fn before_marker(src: &'static str, marker: &str) -> &'static str {
    let (s, m) = (src.as_bytes(), marker.as_bytes());
    let mut i = 0;
    while i + m.len() <= s.len() {
        let mut j = 0;
        while j < m.len() && s[i + j] == m[j] {
            j += 1;
        }
        if j == m.len() {
            let (head, _) = s.split_at(i);
            return match std::str::from_utf8(head) {
                Ok(h) => h,
                Err(_) => panic!("attention.wgsl: marker splits a character"),
            };
        }
        i += 1;
    }
    panic!("attention.wgsl: subgroup marker not found")
}

static ATTENTION: Shader = Shader {
    name: "attention.wgsl",
    source: before_marker(SOURCE, SUBGROUP_MARKER),
    needs: ShaderNeeds {
        f16: false,
        subgroups: false,
    },
};
static ATTENTION_SUBGROUP: Shader = Shader {
    name: "attention.wgsl+subgroups",
    source: SOURCE,
    needs: ShaderNeeds {
        f16: false,
        subgroups: true,
    },
};

const OP: &str = "attention";
/// Widest head the tiled kernel's private arrays hold (`MAXD`).
pub const MAX_HEAD_DIM: usize = 64;
/// Widest head of the register kernels (a row is two 4×4 matrices).
pub const MAX_REGISTER_HEAD_DIM: usize = 32;
/// Query rows per workgroup of the tiled kernel (`TQ`).
const TILED_ROWS: usize = 64;
/// Lanes per workgroup of the register kernels (`LANES`); each lane owns up to 8 query rows.
const REGISTER_LANES: usize = 8;
const MAX_ROWS_PER_LANE: usize = 8;

/// The shader entry point that runs. [`attention_with`] picks it from the variant, the device and
/// the shapes; [`attention_kernel`] forces one (tests use it to cover every kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Workgroup-memory key/value tiles with barriers; any head width up to 64, any alignment.
    Tiled,
    /// Barrier-free, 8 query rows per lane, key/value rows loaded by every lane.
    Register,
    /// Barrier-free, key/value rows loaded once per subgroup and shared with subgroupBroadcast.
    RegisterSubgroup,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Tiled => "tiled",
            Kernel::Register => "register",
            Kernel::RegisterSubgroup => "register-subgroup",
        }
    }
}

/// Options of [`attention`].
#[derive(Clone, Copy, Debug)]
pub struct AttnOpts<'a> {
    pub heads: usize,
    /// Multiplies q·kᵀ (usually `1/√head_dim`).
    pub scale: f32,
    /// `[heads, Lq, Lk]`, added to the logits of every batch item (Swin's relative-position bias).
    pub bias: Option<&'a Tensor>,
    /// `[nW, Lq, Lk]`; batch item `b` adds `mask[b % nW]` (Swin's shifted-window mask: the batch
    /// is `B·nW` windows in window order, so the batch must be a multiple of `nW`).
    pub mask: Option<&'a Tensor>,
    /// Write the output in Swin's window-reversed layout (see [`Scatter`]).
    pub scatter: Option<Scatter>,
}

/// Swin's window reverse fused into the attention output. The batch is `B·nW` windows of
/// `window²` tokens of a `h × w` map (padded to whole windows, rolled by `−shift`, as
/// `window::window_partition` cuts it); each output row goes straight to its place in the
/// `[B, h·w, width]` map, un-rolled and with the pad tokens dropped, exactly as
/// `window::window_reverse` would put it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scatter {
    pub h: usize,
    pub w: usize,
    pub window: usize,
    pub shift: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    lq: u32,
    lk: u32,
    heads: u32,
    nw: u32,
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    row_tiles: u32,
    groups: u32,
    scale: f32,
    sc_shift: u32,
    sc_nww: u32,
    sc_nwi: u32,
    sc_h: u32,
    sc_w: u32,
    sc_hp: u32,
    sc_wp: u32,
    _pad: [u32; 4],
}

/// The width shared by q, k and v: views carry no width, so it is the narrowest
/// `stride − offset` of the three (the column block that ends its row; in every packed layout at
/// least one of q, k, v is the last block of its tensor).
pub fn view_width(q: &HeadsView, k: &HeadsView, v: &HeadsView) -> Result<usize> {
    let mut w = usize::MAX;
    for (name, x) in [("q", q), ("k", k), ("v", v)] {
        if x.offset >= x.stride {
            return Err(Error::shape(
                OP,
                format!(
                    "{name} view offset {} is not inside its rows of stride {} ({:?})",
                    x.offset,
                    x.stride,
                    x.t.shape()
                ),
            ));
        }
        w = w.min(x.stride - x.offset);
    }
    Ok(w)
}

/// `[B, Lq, heads·D]`: per batch item b and head h,
/// `out[b, i, h·D + d] = Σ_j softmax_j(scale·q_bh[i]·k_bh[j] + bias[h, i, j] + mask[b mod nW, i, j])·v_bh[j, d]`,
/// with the variant the device prefers. q is `[B, Lq, ·]`, k and v `[B, Lk, ·]` views of width
/// `heads·D` (see [`view_width`]).
pub fn attention(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    opts: &AttnOpts,
) -> Result<Tensor> {
    let variant = enc.gpu().variant();
    attention_with(enc, q, k, v, opts, variant)
}

/// [`attention`] with an explicit kernel variant. `Variant::Register` runs the subgroup kernel
/// where the device has subgroups of at least 8 lanes, else the plain register kernel; shapes the
/// register kernels cannot take (head width over 32 or not a multiple of 4, views not 16-byte
/// aligned) run the tiled kernel.
pub fn attention_with(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    opts: &AttnOpts,
    variant: Variant,
) -> Result<Tensor> {
    let kernel = kernel_for(enc.gpu(), variant, &q, &k, &v, opts.heads)?;
    attention_kernel(enc, q, k, v, opts, kernel)
}

/// The kernel [`attention_with`] runs for these views on this device.
pub fn kernel_for(
    gpu: &crate::gpu::Gpu,
    variant: Variant,
    q: &HeadsView,
    k: &HeadsView,
    v: &HeadsView,
    heads: usize,
) -> Result<Kernel> {
    let width = view_width(q, k, v)?;
    let hd = width.checked_div(heads).unwrap_or(0);
    Ok(match variant {
        Variant::Tiled => Kernel::Tiled,
        Variant::Register if !register_fits(hd, &[q, k, v]) => Kernel::Tiled,
        Variant::Register if subgroup_kernel_available(gpu) => Kernel::RegisterSubgroup,
        Variant::Register => Kernel::Register,
    })
}

/// Whether the device can run [`Kernel::RegisterSubgroup`] (subgroups of at least 8 lanes).
pub fn subgroup_kernel_available(gpu: &crate::gpu::Gpu) -> bool {
    gpu.has_subgroups() && gpu.info.subgroup_min_size >= REGISTER_LANES as u32
}

fn register_fits(hd: usize, views: &[&HeadsView]) -> bool {
    hd > 0
        && hd.is_multiple_of(4)
        && hd <= MAX_REGISTER_HEAD_DIM
        && views
            .iter()
            .all(|x| x.stride.is_multiple_of(4) && x.offset.is_multiple_of(4))
}

/// [`attention`] with a forced kernel; fails (naming the op) where that kernel cannot run the
/// shapes or the device lacks what it needs.
pub fn attention_kernel(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    opts: &AttnOpts,
    kernel: Kernel,
) -> Result<Tensor> {
    let width = view_width(&q, &k, &v)?;
    validate(OP, &q, &k, &v, opts, width)?;
    let heads = opts.heads;
    let hd = width / heads;
    if hd > MAX_HEAD_DIM {
        return Err(Error::shape(
            OP,
            format!(
                "head width {hd} ({width} / {heads} heads) exceeds the supported {MAX_HEAD_DIM}"
            ),
        ));
    }
    let (batch, lq, lk) = (q.batch, q.len, k.len);
    let nw = opts.mask.map_or(1, |m| m.shape()[0]);

    let gpu = enc.gpu();
    if kernel != Kernel::Tiled && !register_fits(hd, &[&q, &k, &v]) {
        return Err(Error::shape(
            OP,
            format!(
                "the {} kernel needs a head width that is a multiple of 4 and at most \
                 {MAX_REGISTER_HEAD_DIM} (got {hd}) and view strides and offsets that are \
                 multiples of 4 (q {}/{}, k {}/{}, v {}/{})",
                kernel.name(),
                q.stride,
                q.offset,
                k.stride,
                k.offset,
                v.stride,
                v.offset
            ),
        ));
    }
    if kernel == Kernel::RegisterSubgroup && !subgroup_kernel_available(gpu) {
        return Err(Error::Other(format!(
            "{OP}: the {} kernel needs subgroups of at least {REGISTER_LANES} lanes; '{}' has \
             {}",
            kernel.name(),
            gpu.info.name,
            if gpu.has_subgroups() {
                format!("subgroups of {} lanes", gpu.info.subgroup_min_size)
            } else {
                "no subgroups".to_string()
            }
        )));
    }
    let mut geo = None;
    if let Some(sc) = opts.scatter {
        let g = crate::ops::window::WindowGrid::new(sc.h, sc.w, sc.window)?;
        let nwi = g.count();
        if sc.window == 0
            || sc.shift >= sc.window
            || lq != sc.window * sc.window
            || !batch.is_multiple_of(nwi)
        {
            return Err(Error::shape(
                OP,
                format!(
                    "scatter into a {}×{} map needs windows of {}² = Lq (got {lq}) queries, a                      shift below the window and a batch that is a multiple of the {nwi} windows                      per image (got {batch})",
                    sc.h, sc.w, sc.window
                ),
            ));
        }
        geo = Some((sc, g, nwi));
    }
    let out = match geo {
        Some((sc, _, nwi)) => gpu.empty(OP, &[batch / nwi, sc.h * sc.w, width], DType::F32)?,
        None => gpu.empty(OP, &[batch, lq, width], DType::F32)?,
    };
    if batch * lq == 0 {
        return Ok(out);
    }
    // Register kernels: a workgroup is 8 lanes with `rows_per_lane` query rows each, as many as
    // fill Lq (up to 8), so short sequences (Swin's 49 tokens: 7 per lane) waste few lanes.
    let rows_per_lane = lq.div_ceil(REGISTER_LANES).min(MAX_ROWS_PER_LANE);
    let rows_per_group = match kernel {
        Kernel::Tiled => TILED_ROWS,
        _ => REGISTER_LANES * rows_per_lane,
    };
    let row_tiles = lq.div_ceil(rows_per_group);
    let groups = batch * heads * row_tiles;
    let to_u32 = |what: &str, n: usize| {
        u32::try_from(n).map_err(|_| Error::shape(OP, format!("{what} {n} exceeds u32 indexing")))
    };
    let p = Params {
        lq: lq as u32,
        lk: lk as u32,
        heads: heads as u32,
        nw: nw as u32,
        q_stride: q.stride as u32,
        q_off: q.offset as u32,
        k_stride: k.stride as u32,
        k_off: k.offset as u32,
        v_stride: v.stride as u32,
        v_off: v.offset as u32,
        row_tiles: row_tiles as u32,
        groups: to_u32("workgroup count", groups)?,
        scale: opts.scale,
        sc_shift: geo.map_or(0, |(sc, _, _)| sc.shift as u32),
        sc_nww: geo.map_or(0, |(_, g, _)| g.nww as u32),
        sc_nwi: geo.map_or(1, |(_, _, n)| n as u32),
        sc_h: geo.map_or(0, |(sc, _, _)| sc.h as u32),
        sc_w: geo.map_or(0, |(sc, _, _)| sc.w as u32),
        sc_hp: geo.map_or(0, |(_, g, _)| g.hp as u32),
        sc_wp: geo.map_or(0, |(_, g, _)| g.wp as u32),
        _pad: [0; 4],
    };
    let (shader, entry) = match kernel {
        Kernel::Tiled => (&ATTENTION, "attn_tiled"),
        Kernel::Register => (&ATTENTION, "attn_register"),
        Kernel::RegisterSubgroup => (&ATTENTION_SUBGROUP, "attn_register_sg"),
    };
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let mut constants = vec![
        ("D", hd as f64),
        ("HAS_BIAS", flag(opts.bias.is_some())),
        ("HAS_MASK", flag(opts.mask.is_some())),
    ];
    if kernel != Kernel::Tiled {
        constants.push(("R", rows_per_lane as f64));
    }
    if let Some(sc) = opts.scatter {
        constants.push(("SCATTER", 1.0));
        constants.push(("WIN", sc.window as f64));
    }
    // Absent bias/mask bindings still exist in the layout: bind q there (read-only, never read).
    let bias = opts.bias.unwrap_or(q.t);
    let mask = opts.mask.unwrap_or(q.t);
    enc.dispatch(
        shader,
        entry,
        &constants,
        bytemuck::bytes_of(&p),
        &[q.t, k.t, v.t, bias, mask, &out],
        gpu.grid(groups as u64),
    )?;
    Ok(out)
}

/// Uniform block of the backward layout kernels (mirrors `struct Bw` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct BwParams {
    n: u32,
    len: u32,
    heads: u32,
    hd: u32,
    stride: u32,
    off: u32,
    nw: u32,
    scale: f32,
}

/// Existing tensors the gradients of [`attention_backward`] are added into (`None`: fresh).
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnInto<'a> {
    pub dq: Option<&'a Tensor>,
    pub dk: Option<&'a Tensor>,
    pub dv: Option<&'a Tensor>,
    pub dbias: Option<&'a Tensor>,
}

/// Gradients of [`attention`]: `dq` is `[B, Lq, width]`, `dk` and `dv` `[B, Lk, width]` (dense,
/// whatever the layout of the views), `dbias` `[heads, Lq, Lk]` where the forward had a bias.
#[derive(Debug)]
pub struct AttnGrads {
    pub dq: Tensor,
    pub dk: Tensor,
    pub dv: Tensor,
    pub dbias: Option<Tensor>,
}

/// Dropout on the attention weights, as `nn.MultiheadAttention`'s `dropout` does it in training:
/// the softmax weights are multiplied by a mask drawn from `seed` (one bit per weight, as
/// [`crate::ops::random::dropout`]) and scaled by `1/(1 − p)` before they weigh v.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
}

/// Attention with [`Dropout`] on its weights (training):
/// `dropout(softmax(scale·q·kᵀ + bias + mask))·v`. Runs densely on the GEMM kernels (the weights
/// are materialised, `[B·heads, Lq, Lk]`); `drop.p = 0` gives [`attention`]'s result up to
/// rounding. No fused window scatter.
pub fn attention_dropout(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    opts: &AttnOpts,
    drop: Dropout,
) -> Result<Tensor> {
    const DR: &str = "attention_dropout";
    if opts.scatter.is_some() {
        return Err(Error::shape(DR, "no fused window scatter with dropout"));
    }
    let width = view_width(&q, &k, &v)?;
    validate(DR, &q, &k, &v, opts, width)?;
    check_drop(DR, drop)?;
    let (batch, lq, lk) = (q.batch, q.len, k.len);
    let heads = opts.heads;
    let hd = width / heads;
    let out = enc.gpu().empty(DR, &[batch, lq, width], DType::F32)?;
    if batch * lq * width == 0 {
        return Ok(out);
    }
    let qs = gather_heads(enc, &q, heads, hd, opts.scale)?;
    let kd = gather_heads(enc, &k, heads, hd, 1.0)?;
    let vd = gather_heads(enc, &v, heads, hd, 1.0)?;
    let probs = dense_probs(enc, &qs, &kd, opts, batch, lq, lk, q.t)?;
    attend_dense_into(enc, &probs, &vd, Some(drop), heads, &out)?;
    Ok(out)
}

pub(crate) fn check_drop(op: &'static str, drop: Dropout) -> Result<()> {
    if !(0.0..1.0).contains(&drop.p) {
        return Err(Error::shape(
            op,
            format!("dropout probability {} is outside [0, 1)", drop.p),
        ));
    }
    Ok(())
}

/// Dense `[B·heads, L, D]` copy of a heads view, times `scale`.
pub(crate) fn gather_heads(
    enc: &mut Encoder,
    x: &HeadsView,
    heads: usize,
    hd: usize,
    scale: f32,
) -> Result<Tensor> {
    let gpu = enc.gpu();
    let out = gpu.empty(OP, &[x.batch * heads, x.len, hd], DType::F32)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    // The vec4 kernels take D, strides, offsets and counts in units of 4 columns.
    let (entry, u) = if [hd, x.stride, x.offset].iter().all(|n| n.is_multiple_of(4)) {
        ("attn_bw_gather4", 4)
    } else {
        ("attn_bw_gather", 1)
    };
    let p = BwParams {
        n: (out.numel() / u) as u32,
        len: x.len as u32,
        heads: heads as u32,
        hd: (hd / u) as u32,
        stride: (x.stride / u) as u32,
        off: (x.offset / u) as u32,
        scale,
        ..Default::default()
    };
    let groups = gpu.grid(((out.numel() / u) as u64).div_ceil(64));
    enc.dispatch(
        &ATTENTION,
        entry,
        &[],
        bytemuck::bytes_of(&p),
        &[x.t, &out],
        groups,
    )?;
    Ok(out)
}

/// `to [B, L, heads·D] (+)= scale · x` for a dense `[B·heads, L, D]` x.
fn scatter_heads(
    enc: &mut Encoder,
    x: &Tensor,
    to: &Tensor,
    heads: usize,
    scale: f32,
    acc: bool,
) -> Result<()> {
    let s = to.shape();
    let (width, hd) = (s[2], x.shape()[2]);
    let u = if hd.is_multiple_of(4) { 4 } else { 1 };
    let entry = if u == 4 {
        "attn_bw_scatter4"
    } else {
        "attn_bw_scatter"
    };
    let p = BwParams {
        n: (to.numel() / u) as u32,
        len: s[1] as u32,
        heads: heads as u32,
        hd: (hd / u) as u32,
        stride: (width / u) as u32,
        scale,
        ..Default::default()
    };
    let groups = enc.gpu().grid(((to.numel() / u) as u64).div_ceil(64));
    enc.dispatch(
        &ATTENTION,
        entry,
        &[("ACCUM", acc as u8 as f64)],
        bytemuck::bytes_of(&p),
        &[x, to],
        groups,
    )
}

/// `softmax((scale·Q)·Kᵀ + bias + mask)` for dense `qs` (already scaled) and `kd`:
/// `[B·heads, Lq, Lk]`. `dummy` fills the bindings of absent bias / mask.
#[allow(clippy::too_many_arguments)]
fn dense_probs(
    enc: &mut Encoder,
    qs: &Tensor,
    kd: &Tensor,
    opts: &AttnOpts,
    batch: usize,
    lq: usize,
    lk: usize,
    dummy: &Tensor,
) -> Result<Tensor> {
    let gpu = enc.gpu();
    let heads = opts.heads;
    let scratch_len = batch * heads * lq * lk;
    // S = (scale·Q)·Kᵀ + bias + mask, accumulated onto the combined logit terms.
    let logit_terms = if opts.bias.is_some() || opts.mask.is_some() {
        let t = gpu.empty(OP, &[batch * heads, lq, lk], DType::F32)?;
        let p = BwParams {
            n: scratch_len as u32,
            len: (lq * lk) as u32,
            heads: heads as u32,
            nw: opts.mask.map_or(1, |m| m.shape()[0]) as u32,
            ..Default::default()
        };
        let flag = |b: bool| b as u8 as f64;
        enc.dispatch(
            &ATTENTION,
            "attn_bw_logit_bias",
            &[
                ("HAS_BIAS", flag(opts.bias.is_some())),
                ("HAS_MASK", flag(opts.mask.is_some())),
            ],
            bytemuck::bytes_of(&p),
            &[opts.bias.unwrap_or(dummy), opts.mask.unwrap_or(dummy), &t],
            gpu.grid((scratch_len as u64).div_ceil(64)),
        )?;
        Some(t)
    } else {
        None
    };
    let abt = Gemm {
        trans_b: true,
        into: logit_terms.as_ref(),
        ..Default::default()
    };
    let s = gemm(enc, qs, kd, &abt, &Epilogue::default())?;
    softmax(enc, &s)
}

/// `out [B, Lq, heads·D] = dropout(probs)·vd` for dense weights `probs` `[B·heads, Lq, Lk]`
/// and values `vd` `[B·heads, Lk, D]`.
pub(crate) fn attend_dense_into(
    enc: &mut Encoder,
    probs: &Tensor,
    vd: &Tensor,
    drop: Option<Dropout>,
    heads: usize,
    out: &Tensor,
) -> Result<()> {
    let dropped = match drop {
        Some(d) => crate::ops::random::dropout(enc, probs, d.p, d.seed)?,
        None => probs.clone(),
    };
    let od = gemm(enc, &dropped, vd, &Gemm::default(), &Epilogue::default())?;
    scatter_heads(enc, &od, out, heads, 1.0, false)
}

/// Backward of [`attention`] (without `scatter`) for the upstream `dout` (`[B, Lq, width]`,
/// dense): the softmax rows are recomputed from q and k (the forward saves nothing), then
/// `dv = Pᵀ·dO`, `dS = P ⊙ (dO·vᵀ − rowsum(P ⊙ dO·vᵀ))`, `dq = scale·dS·k`,
/// `dk = scale·dSᵀ·q`, and `dbias = Σ_batch dS` when `opts.bias` is set (the mask has no
/// gradient). Runs as batched GEMMs ([`crate::ops::matmul::gemm`]) and row softmax kernels over
/// dense per-head copies `[B·heads, L, D]` of the views, with `[B·heads, Lq, Lk]` scratch for S,
/// P, dP and dS (about 16 dispatches). Gradients named in `into` (same shapes as
/// [`AttnGrads`]) are added into those tensors.
pub fn attention_backward(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    opts: &AttnOpts,
    dout: &Tensor,
    into: &AttnInto,
) -> Result<AttnGrads> {
    attention_backward_dense(enc, q, k, v, opts, None, None, dout, into)
}

/// Backward of [`attention_dropout`] with the same `drop`: as [`attention_backward`], with
/// `dv = P′ᵀ·dO` for the dropped weights P′ and `dP = mask·(dO·vᵀ)/(1 − p)` into the softmax
/// backward.
#[allow(clippy::too_many_arguments)]
pub fn attention_dropout_backward(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    opts: &AttnOpts,
    drop: Dropout,
    dout: &Tensor,
    into: &AttnInto,
) -> Result<AttnGrads> {
    check_drop("attention_dropout_backward", drop)?;
    attention_backward_dense(enc, q, k, v, opts, Some(drop), None, dout, into)
}

/// The dense backward behind [`attention_backward`] and [`attention_dropout_backward`]. With
/// `given` (`[B·heads, Lq, Lk]`) those weights replace `softmax(S)`: the top-K attention's weights,
/// zero outside the kept keys, whose softmax backward is the same formula (`dS = 0` wherever
/// `P = 0`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward_dense(
    enc: &mut Encoder,
    q: HeadsView,
    k: HeadsView,
    v: HeadsView,
    opts: &AttnOpts,
    drop: Option<Dropout>,
    given: Option<&Tensor>,
    dout: &Tensor,
    into: &AttnInto,
) -> Result<AttnGrads> {
    const BW: &str = "attention_backward";
    if opts.scatter.is_some() {
        return Err(Error::shape(
            BW,
            "the backward does not support the fused window scatter (run window_reverse's \
             backward first and pass a dense dout)",
        ));
    }
    let (batch, lq, lk) = (q.batch, q.len, k.len);
    let width = view_width(&q, &k, &v)?;
    let heads = opts.heads;
    validate(BW, &q, &k, &v, opts, width)?;
    let hd = width / heads;
    if dout.dtype() != DType::F32 || dout.shape() != [batch, lq, width] {
        return Err(Error::shape(
            BW,
            format!("dout must be f32 [B, Lq, width] = [{batch}, {lq}, {width}], got {dout:?}"),
        ));
    }
    if let Some(g) = given {
        if g.dtype() != DType::F32 || g.shape() != [batch * heads, lq, lk] {
            return Err(Error::shape(
                BW,
                format!(
                    "given weights must be f32 [B·heads, Lq, Lk] = [{}, {lq}, {lk}], got {g:?}",
                    batch * heads
                ),
            ));
        }
    }
    let gpu = enc.gpu();
    let operands = [q.t, k.t, v.t, dout];
    let dest = |what: &str, t: Option<&Tensor>, shape: &[usize]| -> Result<Tensor> {
        match t {
            Some(t) => {
                if t.dtype() != DType::F32 || t.shape() != shape {
                    return Err(Error::shape(
                        BW,
                        format!("{what} must be f32 {shape:?}, got {t:?}"),
                    ));
                }
                if operands
                    .iter()
                    .chain(opts.bias.iter())
                    .any(|o| std::sync::Arc::ptr_eq(o.pooled(), t.pooled()))
                {
                    return Err(Error::shape(
                        BW,
                        format!("{what} {t:?} shares its buffer with an operand"),
                    ));
                }
                Ok(t.clone())
            }
            None => gpu.empty(BW, shape, DType::F32),
        }
    };
    let dq = dest("into.dq", into.dq, &[batch, lq, width])?;
    let dk = dest("into.dk", into.dk, &[batch, lk, width])?;
    let dv = dest("into.dv", into.dv, &[batch, lk, width])?;
    let dbias = match opts.bias {
        Some(_) => Some(dest("into.dbias", into.dbias, &[heads, lq, lk])?),
        None => {
            if into.dbias.is_some() {
                return Err(Error::shape(
                    BW,
                    "into.dbias given but the attention has no bias",
                ));
            }
            None
        }
    };
    let scratch_len = batch * heads * lq * lk;
    let to_u32 = |what: &str, n: usize| {
        u32::try_from(n).map_err(|_| Error::shape(BW, format!("{what} {n} exceeds u32 indexing")))
    };
    for (what, n) in [
        ("B·heads·Lq·Lk", scratch_len),
        ("dq element count", batch * lq * width),
        ("dk element count", batch * lk * width),
        ("q view element count", batch * lq * q.stride),
        ("k view element count", batch * lk * k.stride),
        ("v view element count", batch * lk * v.stride),
    ] {
        to_u32(what, n)?;
    }
    if scratch_len == 0 || width == 0 {
        // Nothing flows back (with width 0, dP and so dS are 0); fresh gradients must still be
        // zero.
        for (t, acc) in [
            (Some(&dq), into.dq.is_some()),
            (Some(&dk), into.dk.is_some()),
            (Some(&dv), into.dv.is_some()),
            (dbias.as_ref(), into.dbias.is_some()),
        ] {
            if let (Some(t), false) = (t, acc) {
                enc.clear(t);
            }
        }
        return Ok(AttnGrads { dq, dk, dv, dbias });
    }
    let qs = gather_heads(enc, &q, heads, hd, opts.scale)?;
    let kd = gather_heads(enc, &k, heads, hd, 1.0)?;
    let vd = gather_heads(enc, &v, heads, hd, 1.0)?;
    let dod = gather_heads(enc, &HeadsView::dense(dout)?, heads, hd, 1.0)?;
    let probs = match given {
        Some(g) => g.clone(),
        None => dense_probs(enc, &qs, &kd, opts, batch, lq, lk, q.t)?,
    };
    let none = Epilogue::default();
    let abt = Gemm {
        trans_b: true,
        ..Default::default()
    };
    let atb = Gemm {
        trans_a: true,
        ..Default::default()
    };
    // dP′ = dO·vᵀ; with dropout P′ = mask·P/(1 − p) weighs v, and dP = mask·dP′/(1 − p).
    let dp = gemm(enc, &dod, &vd, &abt, &none)?;
    let (weights, dp) = match drop {
        Some(d) => (
            crate::ops::random::dropout(enc, &probs, d.p, d.seed)?,
            crate::ops::random::dropout_backward(enc, &dp, d.p, d.seed, None)?,
        ),
        None => (probs.clone(), dp),
    };
    let ds = softmax_backward(enc, &probs, &dp, None)?;
    let dvd = gemm(enc, &weights, &dod, &atb, &none)?;
    let dqd = gemm(enc, &ds, &kd, &Gemm::default(), &none)?;
    let dkd = gemm(enc, &ds, &qs, &atb, &none)?;
    scatter_heads(enc, &dqd, &dq, heads, opts.scale, into.dq.is_some())?;
    scatter_heads(enc, &dkd, &dk, heads, 1.0, into.dk.is_some())?;
    scatter_heads(enc, &dvd, &dv, heads, 1.0, into.dv.is_some())?;
    if let Some(db) = &dbias {
        // dbias[h] = Σ_b dS[b, h]: dS seen as [B, heads·Lq·Lk], summed over its rows.
        let flat = ds.reshape(&[batch, heads * lq * lk])?;
        reduce_to(
            enc,
            Reduce::Sum,
            &flat,
            None,
            Axes::columns(flat.shape()),
            Dest {
                out: db,
                offset: 0,
                accumulate: into.dbias.is_some(),
            },
        )?;
    }
    Ok(AttnGrads { dq, dk, dv, dbias })
}

/// The operand checks shared by [`attention_kernel`] and [`attention_backward`] (they do not
/// depend on the kernel).
fn validate(
    op: &'static str,
    q: &HeadsView,
    k: &HeadsView,
    v: &HeadsView,
    opts: &AttnOpts,
    width: usize,
) -> Result<()> {
    let heads = opts.heads;
    for (name, x) in [("q", q), ("k", k), ("v", v)] {
        if x.t.dtype() != DType::F32 {
            return Err(Error::shape(
                op,
                format!("{name} must be f32, got {:?}", x.t),
            ));
        }
        x.check(op, width).map_err(|e| match e {
            Error::Shape { op, msg } => Error::shape(op, format!("{name}: {msg}")),
            e => e,
        })?;
    }
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(Error::shape(
            op,
            format!("width {width} is not divisible by {heads} heads"),
        ));
    }
    let (batch, lq, lk) = (q.batch, q.len, k.len);
    if k.batch != batch || v.batch != batch || v.len != lk {
        return Err(Error::shape(
            op,
            format!(
                "q (batch {batch}, len {lq}), k (batch {}, len {lk}) and v (batch {}, len {}) must \
                 share the batch, and k and v the length",
                k.batch, v.batch, v.len
            ),
        ));
    }
    if lk == 0 && batch * lq > 0 {
        return Err(Error::shape(
            op,
            "softmax over zero keys (k and v have length 0)",
        ));
    }
    if let Some(b) = opts.bias {
        if b.shape() != [heads, lq, lk] || b.dtype() != DType::F32 {
            return Err(Error::shape(
                op,
                format!("bias must be f32 [heads, Lq, Lk] = [{heads}, {lq}, {lk}], got {b:?}"),
            ));
        }
    }
    if let Some(m) = opts.mask {
        let s = m.shape();
        if s.len() != 3
            || s[1..] != [lq, lk]
            || s[0] == 0
            || !batch.is_multiple_of(s[0])
            || m.dtype() != DType::F32
        {
            return Err(Error::shape(
                op,
                format!(
                    "mask must be f32 [nW, Lq, Lk] = [nW, {lq}, {lk}] with nW dividing the batch \
                     {batch}, got {m:?}"
                ),
            ));
        }
    }
    Ok(())
}

/// Plain-loop reference.
pub mod cpu {
    /// A view into a host slice with the semantics of [`crate::ops::HeadsView`]: element
    /// (b, i, c) of the logical `[batch, len, width]` block is `data[(b·len + i)·stride + offset + c]`.
    #[derive(Clone, Copy, Debug)]
    pub struct View<'a> {
        pub data: &'a [f32],
        pub batch: usize,
        pub len: usize,
        pub stride: usize,
        pub offset: usize,
    }

    impl<'a> View<'a> {
        /// A contiguous `[batch, len, width]` slice.
        pub fn dense(data: &'a [f32], batch: usize, len: usize, width: usize) -> Self {
            View {
                data,
                batch,
                len,
                stride: width,
                offset: 0,
            }
        }

        pub(crate) fn at(&self, b: usize, i: usize, c: usize) -> f64 {
            self.data[(b * self.len + i) * self.stride + self.offset + c] as f64
        }
    }

    /// `[batch, Lq, width]` with `width = heads·D`; logits, softmax and the weighted sum in f64.
    /// `bias` is `[heads, Lq, Lk]`, `mask` `[nW, Lq, Lk]` (batch item b uses `mask[b % nW]`).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        q: View,
        k: View,
        v: View,
        width: usize,
        heads: usize,
        scale: f32,
        bias: Option<&[f32]>,
        mask: Option<&[f32]>,
    ) -> Vec<f32> {
        let (batch, lq, lk) = (q.batch, q.len, k.len);
        let hd = width / heads;
        let nw = mask.map_or(1, |m| m.len() / (lq * lk));
        let mut out = vec![0f32; batch * lq * width];
        let mut logits = vec![0f64; lk];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..lq {
                    for (j, s) in logits.iter_mut().enumerate() {
                        let dot: f64 = (0..hd)
                            .map(|d| q.at(b, i, h * hd + d) * k.at(b, j, h * hd + d))
                            .sum();
                        *s = scale as f64 * dot;
                        if let Some(bias) = bias {
                            *s += bias[(h * lq + i) * lk + j] as f64;
                        }
                        if let Some(mask) = mask {
                            *s += mask[((b % nw) * lq + i) * lk + j] as f64;
                        }
                    }
                    let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let mut sum = 0.0;
                    for s in logits.iter_mut() {
                        *s = (*s - mx).exp();
                        sum += *s;
                    }
                    for d in 0..hd {
                        let acc: f64 = (0..lk).map(|j| logits[j] * v.at(b, j, h * hd + d)).sum();
                        out[(b * lq + i) * width + h * hd + d] = (acc / sum) as f32;
                    }
                }
            }
        }
        out
    }

    /// The softmax rows `P[b][h][i][j]` of [`attention_f64`], flattened `[B, heads, Lq, Lk]`.
    #[allow(clippy::too_many_arguments)]
    /// Softmax weights `[B·heads, Lq, Lk]` of dense f64 q, k (`dims = [B, Lq, Lk, heads, hd]`).
    pub fn probs_f64(
        q: &[f64],
        k: &[f64],
        dims: [usize; 5],
        scale: f64,
        bias: Option<&[f64]>,
        mask: Option<&[f32]>,
    ) -> Vec<f64> {
        let [batch, lq, lk, heads, hd] = dims;
        let width = heads * hd;
        let nw = mask.map_or(1, |m| m.len() / (lq * lk));
        let mut p = vec![0f64; batch * heads * lq * lk];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..lq {
                    let row = &mut p[((b * heads + h) * lq + i) * lk..][..lk];
                    for (j, s) in row.iter_mut().enumerate() {
                        let dot: f64 = (0..hd)
                            .map(|d| {
                                q[(b * lq + i) * width + h * hd + d]
                                    * k[(b * lk + j) * width + h * hd + d]
                            })
                            .sum();
                        *s = scale * dot
                            + bias.map_or(0.0, |x| x[(h * lq + i) * lk + j])
                            + mask.map_or(0.0, |m| m[((b % nw) * lq + i) * lk + j] as f64);
                    }
                    let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = row.iter().map(|s| (s - mx).exp()).sum();
                    for s in row.iter_mut() {
                        *s = (*s - mx).exp() / sum;
                    }
                }
            }
        }
        p
    }

    /// Attention in f64 on dense `q` `[B, Lq, width]`, `k`, `v` `[B, Lk, width]`;
    /// `dims` = [B, Lq, Lk, heads, head_dim]; `bias` `[heads, Lq, Lk]`, `mask` `[nW, Lq, Lk]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_f64(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        dims: [usize; 5],
        scale: f64,
        bias: Option<&[f64]>,
        mask: Option<&[f32]>,
    ) -> Vec<f64> {
        let [batch, lq, lk, heads, hd] = dims;
        let width = heads * hd;
        let p = probs_f64(q, k, dims, scale, bias, mask);
        let mut out = vec![0f64; batch * lq * width];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..lq {
                    for d in 0..hd {
                        out[(b * lq + i) * width + h * hd + d] = (0..lk)
                            .map(|j| {
                                p[((b * heads + h) * lq + i) * lk + j]
                                    * v[(b * lk + j) * width + h * hd + d]
                            })
                            .sum();
                    }
                }
            }
        }
        out
    }

    /// f64 backward of attention (see [`super::attention_backward`]) on dense `[B, L, width]`
    /// slices, `dims = [B, Lq, Lk, heads, hd]`: (dq, dk, dv, dbias `[heads, Lq, Lk]`).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        dims: [usize; 5],
        scale: f64,
        bias: Option<&[f64]>,
        mask: Option<&[f32]>,
        dout: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let p = probs_f64(q, k, dims, scale, bias, mask);
        attend_backward_f64(&p, q, k, v, dims, scale, None, dout)
    }

    /// Per-weight factors of attention dropout, `mask/(1 − p)` in the weights' `[B·heads, Lq,
    /// Lk]` order, from the same bits as the GPU's dropout.
    pub fn dropout_factors(n: usize, p: f32, seed: u64) -> Vec<f64> {
        let keep = 1.0 / (1.0 - p as f64);
        crate::ops::random::cpu::dropout_mask(n, p, seed)
            .into_iter()
            .map(|m| if m { keep } else { 0.0 })
            .collect()
    }

    /// `out [B, Lq, width] = (f ⊙ P)·v` for dense weights P `[B·heads, Lq, Lk]` (f: dropout
    /// factors, `None` = 1).
    pub fn attend_f64(p: &[f64], v: &[f64], dims: [usize; 5], f: Option<&[f64]>) -> Vec<f64> {
        let [batch, lq, lk, heads, hd] = dims;
        let width = heads * hd;
        let mut out = vec![0f64; batch * lq * width];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..lq {
                    let r = ((b * heads + h) * lq + i) * lk;
                    for j in 0..lk {
                        let w = p[r + j] * f.map_or(1.0, |f| f[r + j]);
                        for d in 0..hd {
                            let c = h * hd + d;
                            out[(b * lq + i) * width + c] += w * v[(b * lk + j) * width + c];
                        }
                    }
                }
            }
        }
        out
    }

    /// Backward of `(f ⊙ P)·v` with `P = softmax(S)`, `S = scale·q·kᵀ + …`, from the weights P:
    /// `dP = f ⊙ dO·vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dq = scale·dS·k`, `dk = scale·dSᵀ·q`,
    /// `dv = (f ⊙ P)ᵀ·dO`, `dbias = Σ_batch dS`. With P zero outside a kept set (top-K) this is
    /// the top-K backward.
    #[allow(clippy::too_many_arguments)]
    pub fn attend_backward_f64(
        p: &[f64],
        q: &[f64],
        k: &[f64],
        v: &[f64],
        dims: [usize; 5],
        scale: f64,
        f: Option<&[f64]>,
        dout: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let [batch, lq, lk, heads, hd] = dims;
        let width = heads * hd;
        let (mut dq, mut dk, mut dv) = (
            vec![0f64; q.len()],
            vec![0f64; k.len()],
            vec![0f64; v.len()],
        );
        let mut dbias = vec![0f64; heads * lq * lk];
        let qi = |b: usize, i: usize, c: usize| (b * lq + i) * width + c;
        let ki = |b: usize, j: usize, c: usize| (b * lk + j) * width + c;
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..lq {
                    let r = ((b * heads + h) * lq + i) * lk;
                    let row = &p[r..][..lk];
                    let fac = |j: usize| f.map_or(1.0, |f| f[r + j]);
                    let dp: Vec<f64> = (0..lk)
                        .map(|j| {
                            fac(j)
                                * (0..hd)
                                    .map(|d| dout[qi(b, i, h * hd + d)] * v[ki(b, j, h * hd + d)])
                                    .sum::<f64>()
                        })
                        .collect();
                    for l in 0..lk {
                        let ds: f64 = (0..lk)
                            .map(|j| dp[j] * row[j] * (((j == l) as u8 as f64) - row[l]))
                            .sum();
                        dbias[(h * lq + i) * lk + l] += ds;
                        for d in 0..hd {
                            let c = h * hd + d;
                            dq[qi(b, i, c)] += scale * ds * k[ki(b, l, c)];
                            dk[ki(b, l, c)] += scale * ds * q[qi(b, i, c)];
                            dv[ki(b, l, c)] += row[l] * fac(l) * dout[qi(b, i, c)];
                        }
                    }
                }
            }
        }
        (dq, dk, dv, dbias)
    }
}

/// Model-shaped benchmarks (GFLOP/s counts 4·Lq·Lk·D·heads·batch: two multiply-adds per
/// (query, key, channel)).
#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &crate::gpu::Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
    use crate::prng::SplitMix64;

    // (name, batch, Lq, Lk, heads, Swin bias + mask); head width 32 throughout.
    let cases: [(&str, usize, usize, usize, usize, bool); 4] = [
        ("swin window (bias+mask)", 121, 49, 49, 3, true),
        ("neck encoder self", 1, 64, 64, 8, false),
        ("neck decoder cross", 1, 361, 64, 8, false),
        ("dense 361x361", 1, 361, 361, 8, false),
    ];
    let hd = 32;
    let mut rng = SplitMix64::new(7);
    for (name, batch, lq, lk, heads, swin) in cases {
        let width = heads * hd;
        // Swin and self-attention read q, k, v from one packed projection; cross-attention
        // takes q from the decoder and k, v from a packed [B, Lk, 2d] projection of the memory.
        let qkv = gpu.upload(
            &[batch, lk, 3 * width],
            &rng.vec_f32(batch * lk * 3 * width, -1.0, 1.0),
        )?;
        let qt = gpu.upload(
            &[batch, lq, width],
            &rng.vec_f32(batch * lq * width, -1.0, 1.0),
        )?;
        let bias = if swin {
            Some(gpu.upload(&[heads, lq, lk], &rng.vec_f32(heads * lq * lk, -2.0, 2.0))?)
        } else {
            None
        };
        // The search map's 11×11 windows; which entries are −100 does not change the timing.
        let mask = if swin {
            let m: Vec<f32> = (0..121 * lq * lk)
                .map(|x: usize| if x.is_multiple_of(5) { -100.0 } else { 0.0 })
                .collect();
            Some(gpu.upload(&[121, lq, lk], &m)?)
        } else {
            None
        };
        let opts = AttnOpts {
            heads,
            scale: 1.0 / (hd as f32).sqrt(),
            bias: bias.as_ref(),
            mask: mask.as_ref(),
            scatter: None,
        };
        let qv = if lq == lk {
            HeadsView::packed(&qkv, 3, 0)?
        } else {
            HeadsView::dense(&qt)?
        };
        let kv = HeadsView::packed(&qkv, 3, 1)?;
        let vv = HeadsView::packed(&qkv, 3, 2)?;
        let flops = 4.0 * (lq * lk * hd * heads * batch) as f64;
        for kernel in [Kernel::RegisterSubgroup, Kernel::Register, Kernel::Tiled] {
            if kernel == Kernel::RegisterSubgroup && !subgroup_kernel_available(gpu) {
                continue;
            }
            let ms = crate::bench::median_ms(gpu, 1, 5, |enc| {
                attention_kernel(enc, qv, kv, vv, &opts, kernel)?;
                Ok(())
            })?;
            rows.push(crate::bench::Row {
                kernel: format!("attention {name} [{}]", kernel.name()),
                shape: format!("{batch}x{lq}x{lk}x{heads}h{hd}"),
                median_ms: ms,
                flops: Some(flops),
                bytes: None,
            });
        }
    }
    Ok(())
}
