//! 2-D convolution (groups = 1) with a fused bias / residual / ReLU epilogue, inference batch
//! norm, and the host-side folding of batch norm into the preceding convolution; for training,
//! the convolution's backward (input, weight, bias), batch norm with batch statistics and
//! running-stat update, and the batch-norm backward (training and frozen).
//! Shader: `shaders/conv.wgsl` (two modules in one file, see [`CONV_SUBGROUP`]).
//!
//! The convolution is a GEMM with M = Co, N = batch·Ho·Wo, K = Ci·kh·kw:
//! `Variant::Register` materialises the zero-padded K × N matrix (im2col) so that a barrier-free
//! register-blocked GEMM can read it as aligned vec4s (with subgroups of 8 lanes, one subgroup
//! shares a 64 × 64 tile through subgroupBroadcast; otherwise 8 × 8 per invocation);
//! `Variant::Tiled` gathers the same matrix tile by tile into workgroup memory (implicit GEMM,
//! no temporary).

use crate::gpu::{DType, Encoder, Gpu, Shader, ShaderNeeds, Tensor, Variant};
use crate::{Error, Result};

const SOURCE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/conv.wgsl"));
const MARKER: &[u8] = b"\n// ==== SUBGROUP MODULE ====";

/// Byte offset of `needle` in `hay` (compile-time; a missing marker fails the build).
const fn find(hay: &[u8], needle: &[u8]) -> usize {
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let mut j = 0;
        while j < needle.len() && hay[i + j] == needle[j] {
            j += 1;
        }
        if j == needle.len() {
            return i;
        }
        i += 1;
    }
    panic!("shaders/conv.wgsl lacks the SUBGROUP MODULE marker")
}

const fn part(first: bool) -> &'static str {
    let (a, b) = SOURCE.as_bytes().split_at(find(SOURCE.as_bytes(), MARKER));
    match std::str::from_utf8(if first { a } else { b }) {
        Ok(s) => s,
        Err(_) => panic!("the marker splits a UTF-8 character"),
    }
}

/// The feature-free kernels of `conv.wgsl` (everything above its marker line).
pub static CONV: Shader = Shader {
    name: "conv.wgsl",
    source: part(true),
    needs: ShaderNeeds {
        f16: false,
        subgroups: false,
    },
};

/// The subgroup GEMM of `conv.wgsl` (below its marker line): a separate module because a module
/// that uses subgroup builtins is rejected on adapters without them.
pub static CONV_SUBGROUP: Shader = Shader {
    name: "conv.wgsl#subgroup",
    source: part(false),
    needs: ShaderNeeds {
        f16: false,
        subgroups: true,
    },
};

/// Options of [`conv2d`]. `Conv2dOpts::default()` is stride 1, no padding, no bias, no
/// residual, no ReLU.
#[derive(Clone, Copy, Debug)]
pub struct Conv2dOpts<'a> {
    /// (vertical, horizontal) stride; both must be ≥ 1.
    pub stride: (usize, usize),
    /// Zero padding [top, left, bottom, right]. Bottom/right-only padding is how Swin's
    /// PatchEmbed pads 127 → 128.
    pub pad: [usize; 4],
    /// `[Co]`, added to every output pixel of its channel.
    pub bias: Option<&'a Tensor>,
    /// Apply `max(·, 0)` last.
    pub relu: bool,
    /// Same shape as the output, added before the ReLU (the identity path of a ResNet block).
    pub residual: Option<&'a Tensor>,
}

impl Default for Conv2dOpts<'_> {
    fn default() -> Self {
        Conv2dOpts {
            stride: (1, 1),
            pad: [0; 4],
            bias: None,
            relu: false,
            residual: None,
        }
    }
}

/// Inference batch-norm parameters, each `[C]`.
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub mean: &'a Tensor,
    pub var: &'a Tensor,
    pub eps: f32,
}

/// Uniform block shared by every conv entry point (mirrors `struct Conv` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    ci: u32,
    h: u32,
    w: u32,
    co: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    pt: u32,
    pl: u32,
    k: u32,
    kq: u32,
    ncols: u32,
    nq: u32,
    pix: u32,
    col_blocks: u32,
    co_blocks: u32,
    flags: u32,
    _pad: [u32; 3],
}

const HAS_BIAS: u32 = 1;
const HAS_RES: u32 = 2;
const RELU: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BnParams {
    total: u32,
    c: u32,
    hw: u32,
    eps: f32,
}

/// Output channels × columns computed by one invocation of `gemm_register`.
const REG_BLOCK: usize = 8;
/// Output tile edge of `gemm_subgroup` (per subgroup of 8) and of `conv_tiled` (per workgroup).
const TILE: usize = 64;

/// Which GEMM the Register variant runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterKernel {
    /// 64 × 64 tiles shared by a subgroup of 8 lanes (needs subgroups of exactly 8 lanes).
    Subgroup,
    /// 8 × 8 per invocation, no optional features.
    Plain,
}

impl RegisterKernel {
    /// `Subgroup` where the adapter's subgroups are exactly 8 lanes wide (lavapipe), else `Plain`.
    pub fn for_gpu(gpu: &Gpu) -> RegisterKernel {
        if subgroups_of_8(gpu) {
            RegisterKernel::Subgroup
        } else {
            RegisterKernel::Plain
        }
    }
}

fn subgroups_of_8(gpu: &Gpu) -> bool {
    gpu.has_subgroups() && gpu.info.subgroup_min_size == 8 && gpu.info.subgroup_max_size == 8
}

fn check_f32(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::shape(op, format!("{what} must be f32, got {t:?}")));
    }
    Ok(())
}

fn to_u32(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(op, format!("{what} = {v} exceeds u32 indexing")))
}

/// Output size along one axis, or `None` if the kernel does not fit the padded input.
fn out_len(input: usize, k: usize, stride: usize, pad0: usize, pad1: usize) -> Option<usize> {
    let padded = input + pad0 + pad1;
    (k >= 1 && k <= padded).then(|| (padded - k) / stride + 1)
}

/// Checks all operands and returns the uniform block with `kq`, `nq`, `col_blocks` and
/// `co_blocks` left for the variant to fill.
fn geometry(x: &Tensor, w: &Tensor, o: &Conv2dOpts) -> Result<Params> {
    const OP: &str = "conv2d";
    check_f32(OP, "input", x)?;
    check_f32(OP, "weight", w)?;
    shape_geometry(OP, x.shape(), w.shape(), o)
}

/// [`geometry`] from the shapes alone (the backward passes lack one of the two tensors).
fn shape_geometry(op: &'static str, xs: &[usize], ws: &[usize], o: &Conv2dOpts) -> Result<Params> {
    if xs.len() != 4 || ws.len() != 4 {
        return Err(Error::shape(
            op,
            format!(
                "expects input [N, Ci, H, W] and weight [Co, Ci, kh, kw], got {xs:?} and {ws:?}"
            ),
        ));
    }
    let (n, ci, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (co, kh, kw) = (ws[0], ws[2], ws[3]);
    if ws[1] != ci {
        return Err(Error::shape(
            op,
            format!(
                "input {xs:?} has {ci} channels but weight {ws:?} expects {}",
                ws[1]
            ),
        ));
    }
    if ci == 0 || kh == 0 || kw == 0 {
        return Err(Error::shape(
            op,
            format!("weight {ws:?} has an empty kernel"),
        ));
    }
    let (sh, sw) = o.stride;
    if sh == 0 || sw == 0 {
        return Err(Error::shape(
            op,
            format!("stride {:?} must be at least 1", o.stride),
        ));
    }
    let [pt, pl, pb, pr] = o.pad;
    let (Some(ho), Some(wo)) = (out_len(h, kh, sh, pt, pb), out_len(wd, kw, sw, pl, pr)) else {
        return Err(Error::shape(
            op,
            format!(
                "kernel {kh}×{kw} of weight {ws:?} is larger than input {xs:?} padded by \
                 [top, left, bottom, right] = {:?}",
                o.pad
            ),
        ));
    };
    let out_shape = [n, co, ho, wo];
    if let Some(b) = o.bias {
        check_f32(op, "bias", b)?;
        if b.shape() != [co] {
            return Err(Error::shape(
                op,
                format!("bias {:?} must be [{co}] for weight {ws:?}", b.shape()),
            ));
        }
    }
    if let Some(r) = o.residual {
        check_f32(op, "residual", r)?;
        if r.shape() != out_shape {
            return Err(Error::shape(
                op,
                format!(
                    "residual {:?} must match the output {out_shape:?} of input {xs:?} and weight {ws:?}",
                    r.shape()
                ),
            ));
        }
    }
    // Padding larger than the input is legal but its offsets must survive u32 wrap-around.
    for (what, v) in [
        ("padding", pt.max(pl)),
        ("input size", h.max(wd)),
        ("stride", sh.max(sw)),
    ] {
        if v > 1 << 24 {
            return Err(Error::shape(
                op,
                format!("{what} {v} is over the supported 2^24"),
            ));
        }
    }
    let k = ci * kh * kw;
    let pix = ho * wo;
    let u = |what, v| to_u32(op, what, v);
    Ok(Params {
        n: u("batch", n)?,
        ci: u("channels", ci)?,
        h: u("height", h)?,
        w: u("width", wd)?,
        co: u("output channels", co)?,
        ho: u("output height", ho)?,
        wo: u("output width", wo)?,
        kh: kh as u32,
        kw: kw as u32,
        sh: sh as u32,
        sw: sw as u32,
        pt: pt as u32,
        pl: pl as u32,
        k: u("K = Ci·kh·kw", k)?,
        kq: 0,
        ncols: u("N·Ho·Wo", n * pix)?,
        nq: 0,
        pix: u("Ho·Wo", pix)?,
        col_blocks: 0,
        co_blocks: 0,
        flags: if o.bias.is_some() { HAS_BIAS } else { 0 }
            | if o.residual.is_some() { HAS_RES } else { 0 }
            | if o.relu { RELU } else { 0 },
        _pad: [0; 3],
    })
}

/// `y = relu?(conv(x, w) + bias + residual)` with the default kernel variant of the device.
///
/// `x` is `[N, Ci, H, W]`, `w` is `[Co, Ci, kh, kw]`, the result `[N, Co, Ho, Wo]` with
/// `Ho = (H + pad_top + pad_bottom − kh) / stride_h + 1` (likewise `Wo`) and
/// `conv(x, w)[n, o, i, j] = Σ_{c, a, b} w[o, c, a, b] · x̂[n, c, i·sh + a − pad_top, j·sw + b − pad_left]`
/// where `x̂` is zero outside `x`.
pub fn conv2d(enc: &mut Encoder, x: &Tensor, w: &Tensor, opts: &Conv2dOpts) -> Result<Tensor> {
    let v = enc.gpu().variant();
    conv2d_with(enc, x, w, opts, v)
}

/// [`conv2d`] with an explicit kernel variant (for `Register`, the GEMM that
/// [`RegisterKernel::for_gpu`] picks).
pub fn conv2d_with(
    enc: &mut Encoder,
    x: &Tensor,
    w: &Tensor,
    opts: &Conv2dOpts,
    variant: Variant,
) -> Result<Tensor> {
    match variant {
        Variant::Register => {
            let k = RegisterKernel::for_gpu(enc.gpu());
            conv2d_register(enc, x, w, opts, k)
        }
        Variant::Tiled => {
            let mut p = geometry(x, w, opts)?;
            let y = output(enc, &p)?;
            if y.numel() == 0 {
                return Ok(y);
            }
            let (bias, res) = (opts.bias.unwrap_or(w), opts.residual.unwrap_or(w));
            p.co_blocks = (p.co as usize).div_ceil(TILE) as u32;
            let groups = p.co_blocks as u64 * (p.ncols as u64).div_ceil(TILE as u64);
            let gpu = enc.gpu();
            enc.dispatch(
                &CONV,
                "conv_tiled",
                &[],
                bytemuck::bytes_of(&p),
                &[x, w, bias, res, &y],
                gpu.grid(groups),
            )?;
            Ok(y)
        }
    }
}

fn output(enc: &Encoder, p: &Params) -> Result<Tensor> {
    let shape = [p.n as usize, p.co as usize, p.ho as usize, p.wo as usize];
    enc.gpu().empty("conv2d", &shape, DType::F32)
}

/// The Register variant of [`conv2d`] with an explicit GEMM kernel. `Subgroup` on an adapter
/// without subgroups of exactly 8 lanes is an error.
pub fn conv2d_register(
    enc: &mut Encoder,
    x: &Tensor,
    w: &Tensor,
    opts: &Conv2dOpts,
    kernel: RegisterKernel,
) -> Result<Tensor> {
    let mut p = geometry(x, w, opts)?;
    let gpu = enc.gpu();
    if kernel == RegisterKernel::Subgroup && !subgroups_of_8(gpu) {
        return Err(Error::Other(format!(
            "conv2d: the subgroup kernel needs subgroups of exactly 8 lanes; '{}' has {}",
            gpu.info.name,
            if gpu.has_subgroups() {
                format!(
                    "{}..{} lanes",
                    gpu.info.subgroup_min_size, gpu.info.subgroup_max_size
                )
            } else {
                "no subgroups".to_string()
            }
        )));
    }
    let y = output(enc, &p)?;
    if y.numel() == 0 {
        return Ok(y);
    }
    // Absent operands are bound to a tensor the entry point reads anyway (read-only aliasing is
    // allowed); the flags keep the shader from touching them.
    let (bias, res) = (opts.bias.unwrap_or(w), opts.residual.unwrap_or(w));
    let k = p.k as usize;
    let kpad = k.next_multiple_of(4);
    let npad = (p.ncols as usize).next_multiple_of(REG_BLOCK);
    p.kq = (kpad / 4) as u32;
    p.nq = (npad / 4) as u32;
    p.col_blocks = (npad / REG_BLOCK) as u32;

    match kernel {
        RegisterKernel::Subgroup => {
            // Implicit im2col: the GEMM gathers its B operand from `x` (one dispatch).
            p.co_blocks = (p.co as usize).div_ceil(TILE) as u32;
            let groups = p.co_blocks as u64 * (npad as u64).div_ceil(TILE as u64);
            enc.dispatch(
                &CONV_SUBGROUP,
                "gemm_subgroup",
                &[],
                bytemuck::bytes_of(&p),
                &[w, x, bias, res, &y],
                gpu.grid(groups),
            )?;
        }
        RegisterKernel::Plain => {
            let b = gpu.empty("conv2d", &[kpad, npad], DType::F32)?;
            let quads = (kpad * npad / 4) as u64;
            enc.dispatch(
                &CONV,
                "im2col",
                &[],
                bytemuck::bytes_of(&p),
                &[x, &b],
                gpu.grid(quads.div_ceil(256)),
            )?;
            // This GEMM reads weight rows as vec4s: pad them to Kpad when needed.
            let packed;
            let wm = if k == kpad {
                w
            } else {
                packed = gpu.empty("conv2d", &[p.co as usize, kpad], DType::F32)?;
                let quads = (p.co as usize * kpad / 4) as u64;
                enc.dispatch(
                    &CONV,
                    "pack_weights",
                    &[],
                    bytemuck::bytes_of(&p),
                    &[w, &packed],
                    gpu.grid(quads.div_ceil(256)),
                )?;
                &packed
            };
            p.co_blocks = (p.co as usize).div_ceil(REG_BLOCK) as u32;
            let invocations = p.co_blocks as u64 * p.col_blocks as u64;
            enc.dispatch(
                &CONV,
                "gemm_register",
                &[],
                bytemuck::bytes_of(&p),
                &[wm, &b, bias, res, &y],
                gpu.grid(invocations.div_ceil(64)),
            )?;
        }
    }
    Ok(y)
}

/// Stride and padding of a convolution, as in [`Conv2dOpts`]. The backward passes take no
/// epilogue: the gradients of the fused ReLU and residual are elementwise ops of their own, and
/// the bias gradient is [`conv2d_backward_bias`].
#[derive(Clone, Copy, Debug)]
pub struct ConvGeometry {
    pub stride: (usize, usize),
    pub pad: [usize; 4],
}

impl Default for ConvGeometry {
    fn default() -> Self {
        ConvGeometry {
            stride: (1, 1),
            pad: [0; 4],
        }
    }
}

impl From<&Conv2dOpts<'_>> for ConvGeometry {
    fn from(o: &Conv2dOpts) -> Self {
        ConvGeometry {
            stride: o.stride,
            pad: o.pad,
        }
    }
}

/// Validates a backward pass: the forward geometry of input shape `xs` and weight shape `ws`
/// (as [`conv2d`] checks it), `dy` its f32 output, and `into` (if any) of shape `out` and not
/// aliasing `operands`.
fn backward_geometry(
    op: &'static str,
    xs: &[usize],
    ws: &[usize],
    dy: &Tensor,
    g: &ConvGeometry,
    into: Option<(&Tensor, &[usize], [&Tensor; 2])>,
) -> Result<Params> {
    let o = Conv2dOpts {
        stride: g.stride,
        pad: g.pad,
        ..Default::default()
    };
    let p = shape_geometry(op, xs, ws, &o)?;
    check_f32(op, "dy", dy)?;
    let out = [p.n as usize, p.co as usize, p.ho as usize, p.wo as usize];
    if dy.shape() != out {
        return Err(Error::shape(
            op,
            format!(
                "dy {:?} must be the output {out:?} of input {xs:?} and weight {ws:?}",
                dy.shape()
            ),
        ));
    }
    if let Some((t, shape, operands)) = into {
        check_f32(op, "into", t)?;
        if t.shape() != shape {
            return Err(Error::shape(
                op,
                format!(
                    "into {:?} must have the gradient's shape {shape:?}",
                    t.shape()
                ),
            ));
        }
        if operands
            .iter()
            .any(|o| std::sync::Arc::ptr_eq(o.pooled(), t.pooled()))
        {
            return Err(Error::shape(
                op,
                format!("into {t:?} shares its buffer with an operand"),
            ));
        }
    }
    Ok(p)
}

/// Shape `[N, Ci, H, W]` of a convolution input, checked to be 4-D.
fn shape4(op: &'static str, what: &str, s: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(s).map_err(|_| Error::shape(op, format!("{what} {s:?} must be 4-D")))
}

/// Whether the convolution reads each input pixel once, in place: then `col` is `x` itself and
/// `dcol` is `dx` (a 1×1 kernel, stride 1, no padding).
fn is_pointwise(p: &Params) -> bool {
    p.kh == 1
        && p.kw == 1
        && p.sh == 1
        && p.sw == 1
        && p.pt == 0
        && p.pl == 0
        && p.ho == p.h
        && p.wo == p.w
}

/// Runs `unfold` or `fold` of `conv.wgsl` over `count` outputs.
fn dispatch_movement(
    enc: &mut Encoder,
    entry: &str,
    p: &Params,
    src: &Tensor,
    out: &Tensor,
    accumulate: bool,
    count: usize,
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    let gpu = enc.gpu();
    enc.dispatch(
        &CONV,
        entry,
        &[("ACCUM", accumulate as u8 as f64)],
        bytemuck::bytes_of(p),
        &[src, out],
        gpu.grid((count as u64).div_ceil(64)),
    )
}

/// Gradient of [`conv2d`] with respect to its input: `dx[n, c, y, x] = Σ dy[n, o, i, j] ·
/// w[o, c, a, b]` over the taps that read `x[n, c, y, x]` (a transposed convolution). Computed
/// as the batched GEMM `dcol[n] = Wᵀ·dy[n]` (`[Ci·kh·kw, Ho·Wo]` per image) and a gather
/// (`fold`) of each input element's at most kh·kw taps, in a fixed order (no atomics); a
/// pointwise convolution needs no fold. `x_shape` is the forward input's `[N, Ci, H, W]`; `dy`
/// is `[N, Co, Ho, Wo]`. With `into` (shape `x_shape`) the gradient is added into that tensor,
/// which is returned.
pub fn conv2d_backward_input(
    enc: &mut Encoder,
    dy: &Tensor,
    w: &Tensor,
    x_shape: &[usize],
    geom: &ConvGeometry,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_input";
    check_f32(OP, "weight", w)?;
    let xs = shape4(OP, "input shape", x_shape)?;
    let p = backward_geometry(
        OP,
        &xs,
        w.shape(),
        dy,
        geom,
        into.map(|t| (t, &xs[..], [dy, w])),
    )?;
    let count: usize = xs.iter().product();
    to_u32(OP, "input element count", count)?;
    let (n, co, k, pix) = (p.n as usize, p.co as usize, p.k as usize, p.pix as usize);
    if count == 0 || co * pix == 0 {
        // Nothing flows back: a fresh gradient is zero, an accumulated one unchanged.
        return match into {
            Some(t) => Ok(t.clone()),
            None => enc.gpu().zeros(&xs),
        };
    }
    to_u32(OP, "N·K·Ho·Wo (the unfolded gradient)", n * k * pix)?;
    let wm = w.reshape(&[co, k])?;
    let dym = dy.reshape(&[n, co, pix])?;
    let gemm = |enc: &mut Encoder, into: Option<&Tensor>| {
        crate::ops::matmul::gemm(
            enc,
            &wm,
            &dym,
            &crate::ops::matmul::Gemm {
                trans_a: true,
                into,
                ..Default::default()
            },
            &Default::default(),
        )
    };
    if is_pointwise(&p) {
        let into = into.map(|t| t.reshape(&[n, k, pix])).transpose()?;
        return gemm(enc, into.as_ref())?.reshape(&xs);
    }
    let dcol = gemm(enc, None)?;
    let out = match into {
        Some(t) => t.clone(),
        None => enc.gpu().empty(OP, &xs, DType::F32)?,
    };
    dispatch_movement(enc, "fold", &p, &dcol, &out, into.is_some(), count)?;
    Ok(out)
}

/// Gradient of [`conv2d`] with respect to its weight: `dw[o, c, a, b] = Σ_{n, i, j}
/// dy[n, o, i, j] · x̂[n, c, i·sh + a − pad_top, j·sw + b − pad_left]`. Computed as
/// `col = unfold(x)` (`[N, Ci·kh·kw, Ho·Wo]`; `x` itself for a pointwise convolution), the
/// batched GEMM `dy[n]·col[n]ᵀ` and, for a batch, a deterministic chunked sum over the images.
/// `w_shape` is `[Co, Ci, kh, kw]`. With `into` (shape `w_shape`) the gradient is added into
/// that tensor.
pub fn conv2d_backward_weight(
    enc: &mut Encoder,
    dy: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
    geom: &ConvGeometry,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_weight";
    check_f32(OP, "input", x)?;
    let ws = shape4(OP, "weight shape", w_shape)?;
    let p = backward_geometry(
        OP,
        x.shape(),
        &ws,
        dy,
        geom,
        into.map(|t| (t, &ws[..], [dy, x])),
    )?;
    let (n, co, k, pix) = (p.n as usize, p.co as usize, p.k as usize, p.pix as usize);
    if co * k == 0 || n * pix == 0 {
        return match into {
            Some(t) => Ok(t.clone()),
            None => enc.gpu().zeros(&ws),
        };
    }
    to_u32(OP, "N·K·Ho·Wo (the unfolded input)", n * k * pix)?;
    let col = if is_pointwise(&p) {
        x.reshape(&[n, k, pix])?
    } else {
        let col = enc.gpu().empty(OP, &[n, k, pix], DType::F32)?;
        dispatch_movement(enc, "unfold", &p, x, &col, false, n * k * pix)?;
        col
    };
    let dym = dy.reshape(&[n, co, pix])?;
    let gemm = |enc: &mut Encoder, a: &Tensor, b: &Tensor, into: Option<&Tensor>| {
        crate::ops::matmul::gemm(
            enc,
            a,
            b,
            &crate::ops::matmul::Gemm {
                trans_b: true,
                into,
                ..Default::default()
            },
            &Default::default(),
        )
    };
    if n == 1 {
        let into = into.map(|t| t.reshape(&[co, k])).transpose()?;
        let a = dym.reshape(&[co, pix])?;
        let b = col.reshape(&[k, pix])?;
        return gemm(enc, &a, &b, into.as_ref())?.reshape(&ws);
    }
    // Per-image products summed afterwards: the batch gives the GEMM parallel work even when
    // Co·K is a single tile, and the sum stays deterministic.
    let per_image = gemm(enc, &dym, &col, None)?;
    let axes = crate::ops::reduce::Axes::keep(&[n, co * k], 1..2);
    let out = crate::ops::reduce::reduce(
        enc,
        crate::ops::reduce::Reduce::Sum,
        &per_image,
        None,
        axes,
        into,
    )?;
    out.reshape(&ws)
}

/// Gradient of the bias of [`conv2d`]: `db[o] = Σ_{n, i, j} dy[n, o, i, j]` (`dy` `[N, Co, Ho,
/// Wo]` → `[Co]`), a deterministic chunked sum; with `into` (`[Co]`) added into it.
pub fn conv2d_backward_bias(
    enc: &mut Encoder,
    dy: &Tensor,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_bias";
    check_f32(OP, "dy", dy)?;
    if dy.shape().len() != 4 {
        return Err(Error::shape(
            OP,
            format!("dy {:?} must be [N, Co, Ho, Wo]", dy.shape()),
        ));
    }
    let axes = crate::ops::reduce::Axes::keep(dy.shape(), 1..2);
    crate::ops::reduce::reduce(enc, crate::ops::reduce::Reduce::Sum, dy, None, axes, into)
}

/// Inference batch norm over dimension 1 of `x` (`[N, C, ...]`):
/// `y = (x − mean[c]) / sqrt(var[c] + eps) · weight[c] + bias[c]`.
pub fn batch_norm(enc: &mut Encoder, x: &Tensor, bn: &BatchNorm) -> Result<Tensor> {
    const OP: &str = "batch_norm";
    check_f32(OP, "input", x)?;
    let s = x.shape();
    if s.len() < 2 {
        return Err(Error::shape(OP, format!("expects [N, C, ...], got {s:?}")));
    }
    let c = s[1];
    for (what, t) in [
        ("weight", bn.weight),
        ("bias", bn.bias),
        ("mean", bn.mean),
        ("var", bn.var),
    ] {
        check_f32(OP, what, t)?;
        if t.shape() != [c] {
            return Err(Error::shape(
                OP,
                format!("{what} {:?} must be [{c}] for input {s:?}", t.shape()),
            ));
        }
    }
    if !(bn.eps >= 0.0 && bn.eps.is_finite()) {
        return Err(Error::shape(
            OP,
            format!("eps {} must be finite and ≥ 0", bn.eps),
        ));
    }
    let gpu = enc.gpu();
    let y = gpu.empty(OP, s, DType::F32)?;
    let total = to_u32(OP, "element count", x.numel())?;
    if total == 0 {
        return Ok(y);
    }
    let p = BnParams {
        total,
        c: c as u32,
        hw: s[2..].iter().product::<usize>() as u32,
        eps: bn.eps,
    };
    enc.dispatch(
        &CONV,
        "batch_norm",
        &[],
        bytemuck::bytes_of(&p),
        &[x, bn.weight, bn.bias, bn.mean, bn.var, &y],
        gpu.grid((total as u64).div_ceil(256)),
    )?;
    Ok(y)
}

/// Training-mode batch-norm parameters, each `[C]`. The running statistics are updated in place
/// (PyTorch semantics): `running = (1 − momentum)·running + momentum·batch`, with the unbiased
/// batch variance for `running_var` (the biased one normalises).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormTrain<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    /// PyTorch's default is 0.1.
    pub momentum: f32,
    pub eps: f32,
}

/// Existing tensors the gradients of a batch-norm backward are added into (`None`: fresh).
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchNormInto<'a> {
    pub dx: Option<&'a Tensor>,
    pub dweight: Option<&'a Tensor>,
    pub dbias: Option<&'a Tensor>,
}

/// Gradients of a batch norm: `dx` has the input's shape, `dweight` and `dbias` are `[C]`.
#[derive(Debug)]
pub struct BatchNormGrads {
    pub dx: Tensor,
    pub dweight: Tensor,
    pub dbias: Tensor,
}

/// Uniform block of the training / backward batch-norm kernels (mirrors `struct BnT`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BnTParams {
    count: u32,
    c: u32,
    hw: u32,
    total: u32,
    eps: f32,
    momentum: f32,
    _pad: [u32; 2],
}

/// Checks `x` (`[N, C, ...]`, f32), the `[C]` per-channel tensors and `eps`; returns the uniform
/// block (momentum 0).
fn bn_train_params(
    op: &'static str,
    x: &Tensor,
    per_channel: &[(&str, &Tensor)],
    eps: f32,
) -> Result<BnTParams> {
    check_f32(op, "input", x)?;
    let s = x.shape();
    if s.len() < 2 {
        return Err(Error::shape(op, format!("expects [N, C, ...], got {s:?}")));
    }
    let c = s[1];
    for (what, t) in per_channel {
        check_f32(op, what, t)?;
        if t.shape() != [c] {
            return Err(Error::shape(
                op,
                format!("{what} {:?} must be [{c}] for input {s:?}", t.shape()),
            ));
        }
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::shape(
            op,
            format!("eps {eps} must be finite and ≥ 0"),
        ));
    }
    let total = to_u32(op, "element count", x.numel())?;
    let hw = s[2..].iter().product::<usize>();
    Ok(BnTParams {
        count: s[0] as u32 * hw as u32,
        c: c as u32,
        hw: hw as u32,
        total,
        eps,
        momentum: 0.0,
        _pad: [0; 2],
    })
}

/// Training-mode batch norm over dimension 1 of `x` (`[N, C, ...]`): normalises with the batch
/// mean and biased variance, `y = (x − μ)/sqrt(var + eps)·weight + bias`, and updates the
/// running statistics in place (see [`BatchNormTrain`]). Returns `y` and the saved statistics
/// `[C, 2]` = (μ, 1/sqrt(var + eps)) per channel that [`batch_norm_train_backward`] takes.
/// Errors where a channel has a single value (N·H·W = 1: no variance, as in PyTorch).
pub fn batch_norm_train(
    enc: &mut Encoder,
    x: &Tensor,
    bn: &BatchNormTrain,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "batch_norm_train";
    let mut p = bn_train_params(
        OP,
        x,
        &[
            ("weight", bn.weight),
            ("bias", bn.bias),
            ("running_mean", bn.running_mean),
            ("running_var", bn.running_var),
        ],
        bn.eps,
    )?;
    if !(0.0..=1.0).contains(&bn.momentum) {
        return Err(Error::shape(
            OP,
            format!("momentum {} must be in [0, 1]", bn.momentum),
        ));
    }
    if p.count <= 1 && p.c > 0 {
        return Err(Error::shape(
            OP,
            format!(
                "input {:?} has {} value per channel; training needs more than one",
                x.shape(),
                p.count
            ),
        ));
    }
    for t in [bn.running_mean, bn.running_var] {
        if std::sync::Arc::ptr_eq(t.pooled(), x.pooled()) {
            return Err(Error::shape(
                OP,
                "a running statistic shares its buffer with the input",
            ));
        }
    }
    p.momentum = bn.momentum;
    let gpu = enc.gpu();
    let c = p.c as usize;
    let y = gpu.empty(OP, x.shape(), DType::F32)?;
    let stats = gpu.empty(OP, &[c, 2], DType::F32)?;
    if p.total == 0 {
        return Ok((y, stats));
    }
    enc.dispatch(
        &CONV,
        "bn_train_stats",
        &[],
        bytemuck::bytes_of(&p),
        &[x, &stats, bn.running_mean, bn.running_var],
        gpu.grid((c as u64).div_ceil(64)),
    )?;
    enc.dispatch(
        &CONV,
        "bn_train_apply",
        &[],
        bytemuck::bytes_of(&p),
        &[x, &stats, bn.weight, bn.bias, &y],
        gpu.grid((p.total as u64).div_ceil(256)),
    )?;
    Ok((y, stats))
}

/// Backward of [`batch_norm_train`] for the upstream `dy` (shape of `x`), from the saved
/// statistics: `dbias = Σ dy`, `dweight = Σ dy·x̂`, `dx = weight·r·(dy − mean(dy) −
/// x̂·mean(dy·x̂))` (sums and means per channel over N and the spatial axes). Gradients named in
/// `into` are added into those tensors.
pub fn batch_norm_train_backward(
    enc: &mut Encoder,
    x: &Tensor,
    weight: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    into: &BatchNormInto,
) -> Result<BatchNormGrads> {
    const OP: &str = "batch_norm_train_backward";
    let p = bn_train_params(OP, x, &[("weight", weight)], 0.0)?;
    check_f32(OP, "stats", stats)?;
    if stats.shape() != [p.c as usize, 2] {
        return Err(Error::shape(
            OP,
            format!(
                "stats {:?} must be [{}, 2] (from batch_norm_train)",
                stats.shape(),
                p.c
            ),
        ));
    }
    bn_backward(enc, OP, x, weight, stats, dy, into, p, false)
}

/// Backward of the frozen (inference) [`batch_norm`], whose statistics are constants:
/// `dx = dy·weight/sqrt(var + eps)`, `dweight = Σ dy·x̂` with `x̂ = (x − mean)/sqrt(var + eps)`,
/// `dbias = Σ dy`. Gradients named in `into` are added into those tensors.
pub fn batch_norm_frozen_backward(
    enc: &mut Encoder,
    x: &Tensor,
    bn: &BatchNorm,
    dy: &Tensor,
    into: &BatchNormInto,
) -> Result<BatchNormGrads> {
    const OP: &str = "batch_norm_frozen_backward";
    let p = bn_train_params(
        OP,
        x,
        &[("weight", bn.weight), ("mean", bn.mean), ("var", bn.var)],
        bn.eps,
    )?;
    let gpu = enc.gpu();
    let c = p.c as usize;
    let stats = gpu.empty(OP, &[c, 2], DType::F32)?;
    if c > 0 {
        enc.dispatch(
            &CONV,
            "bn_frozen_stats",
            &[],
            bytemuck::bytes_of(&p),
            &[bn.mean, &stats, bn.var],
            gpu.grid((c as u64).div_ceil(64)),
        )?;
    }
    bn_backward(enc, OP, x, bn.weight, &stats, dy, into, p, true)
}

#[allow(clippy::too_many_arguments)]
fn bn_backward(
    enc: &mut Encoder,
    op: &'static str,
    x: &Tensor,
    weight: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    into: &BatchNormInto,
    p: BnTParams,
    frozen: bool,
) -> Result<BatchNormGrads> {
    check_f32(op, "dy", dy)?;
    if dy.shape() != x.shape() {
        return Err(Error::shape(
            op,
            format!(
                "dy {:?} must have the input's shape {:?}",
                dy.shape(),
                x.shape()
            ),
        ));
    }
    let c = p.c as usize;
    let gpu = enc.gpu();
    let mut outs = Vec::with_capacity(3);
    for (what, t, shape) in [
        ("into.dx", into.dx, x.shape()),
        ("into.dweight", into.dweight, &[c][..]),
        ("into.dbias", into.dbias, &[c][..]),
    ] {
        outs.push(match t {
            Some(t) => {
                check_f32(op, what, t)?;
                if t.shape() != shape {
                    return Err(Error::shape(
                        op,
                        format!("{what} {:?} must be {shape:?}", t.shape()),
                    ));
                }
                if [x, weight, stats, dy]
                    .iter()
                    .any(|o| std::sync::Arc::ptr_eq(o.pooled(), t.pooled()))
                {
                    return Err(Error::shape(
                        op,
                        format!("{what} {t:?} shares its buffer with an operand"),
                    ));
                }
                t.clone()
            }
            None => gpu.empty(op, shape, DType::F32)?,
        });
    }
    let dbias = outs.pop().expect("three outputs");
    let dweight = outs.pop().expect("three outputs");
    let dx = outs.pop().expect("three outputs");
    if c == 0 {
        return Ok(BatchNormGrads { dx, dweight, dbias });
    }
    let sums = gpu.empty(op, &[c, 2], DType::F32)?;
    let accum = |b: bool| b as u8 as f64;
    // The parameter kernel has one ACCUM switch for both sums: where only one of them
    // accumulates, each gets its own pass and the other pass writes to a scratch tensor.
    let split = into.dweight.is_some() != into.dbias.is_some();
    let scratch = if split {
        Some(gpu.empty(op, &[c], DType::F32)?)
    } else {
        None
    };
    let passes: [(bool, &Tensor, &Tensor); 2] = match &scratch {
        None => [(into.dweight.is_some(), &dweight, &dbias); 2],
        Some(s) => [
            (into.dweight.is_some(), &dweight, s),
            (into.dbias.is_some(), s, &dbias),
        ],
    };
    for &(acc, dw_t, db_t) in &passes[..1 + split as usize] {
        enc.dispatch(
            &CONV,
            "bn_backward_params",
            &[("ACCUM", accum(acc))],
            bytemuck::bytes_of(&p),
            &[x, stats, dy, &sums, dw_t, db_t],
            gpu.grid((c as u64).div_ceil(64)),
        )?;
    }
    if p.total > 0 {
        enc.dispatch(
            &CONV,
            "bn_backward_input",
            &[
                ("ACCUM", accum(into.dx.is_some())),
                ("FROZEN", frozen as u8 as f64),
            ],
            bytemuck::bytes_of(&p),
            &[x, stats, dy, &sums, weight, &dx],
            gpu.grid((p.total as u64).div_ceil(256)),
        )?;
    }
    Ok(BatchNormGrads { dx, dweight, dbias })
}

/// Folds an inference batch norm that follows a convolution into the convolution:
/// with `s = weight / sqrt(var + eps)` (computed in f64), returns `w' = w · s[co]` (same layout
/// as `w`, `[co, ...]`) and `b' = (b − mean) · s + bias` (`b` = 0 when absent).
///
/// # Panics
/// If `w.len()` is not a multiple of `co` or a per-channel slice is not `co` long: these come
/// from checkpoint shapes, which the loader validates first.
#[allow(clippy::too_many_arguments)]
pub fn fold_batch_norm(
    w: &[f32],
    b: Option<&[f32]>,
    co: usize,
    weight: &[f32],
    bias: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    assert!(
        co > 0 && w.len().is_multiple_of(co),
        "fold_batch_norm: weight of {} values is not [{co}, ...]",
        w.len()
    );
    for (what, len) in [
        ("bn weight", weight.len()),
        ("bn bias", bias.len()),
        ("bn mean", mean.len()),
        ("bn var", var.len()),
        ("conv bias", b.map_or(co, <[f32]>::len)),
    ] {
        assert!(
            len == co,
            "fold_batch_norm: {what} has {len} values, expected {co}"
        );
    }
    let per = w.len() / co;
    let mut wf = Vec::with_capacity(w.len());
    let mut bf = Vec::with_capacity(co);
    for o in 0..co {
        let s = weight[o] as f64 / (var[o] as f64 + eps as f64).sqrt();
        wf.extend(
            w[o * per..(o + 1) * per]
                .iter()
                .map(|&v| (v as f64 * s) as f32),
        );
        let b0 = b.map_or(0.0, |b| b[o] as f64);
        bf.push(((b0 - mean[o] as f64) * s + bias[o] as f64) as f32);
    }
    (wf, bf)
}

/// Plain-loop references (f64 accumulation).
pub mod cpu {
    /// Host-side options of [`conv2d`], mirroring [`super::Conv2dOpts`].
    #[derive(Clone, Copy, Debug)]
    pub struct ConvArgs<'a> {
        pub stride: (usize, usize),
        pub pad: [usize; 4],
        pub bias: Option<&'a [f32]>,
        pub relu: bool,
        pub residual: Option<&'a [f32]>,
    }

    impl Default for ConvArgs<'_> {
        fn default() -> Self {
            ConvArgs {
                stride: (1, 1),
                pad: [0; 4],
                bias: None,
                relu: false,
                residual: None,
            }
        }
    }

    /// Output `[N, Co, Ho, Wo]` of a convolution of `[N, Ci, H, W]` by `[Co, Ci, kh, kw]`.
    pub fn out_shape(xs: [usize; 4], ws: [usize; 4], a: &ConvArgs) -> [usize; 4] {
        let ho = (xs[2] + a.pad[0] + a.pad[2] - ws[2]) / a.stride.0 + 1;
        let wo = (xs[3] + a.pad[1] + a.pad[3] - ws[3]) / a.stride.1 + 1;
        [xs[0], ws[0], ho, wo]
    }

    /// `y = relu?(conv(x, w) + bias + residual)`, shapes as in [`super::conv2d`].
    pub fn conv2d(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 4], a: &ConvArgs) -> Vec<f32> {
        let [n, ci, h, wd] = xs;
        let [co, _, kh, kw] = ws;
        let [_, _, ho, wo] = out_shape(xs, ws, a);
        let mut y = vec![0f32; n * co * ho * wo];
        for b in 0..n {
            for o in 0..co {
                for i in 0..ho {
                    for j in 0..wo {
                        let mut acc = a.bias.map_or(0.0, |bs| bs[o] as f64);
                        for c in 0..ci {
                            for u in 0..kh {
                                let iy = (i * a.stride.0 + u) as isize - a.pad[0] as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for v in 0..kw {
                                    let ix = (j * a.stride.1 + v) as isize - a.pad[1] as isize;
                                    if ix < 0 || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = x[((b * ci + c) * h + iy as usize) * wd + ix as usize];
                                    let wv = w[((o * ci + c) * kh + u) * kw + v];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        let idx = ((b * co + o) * ho + i) * wo + j;
                        if let Some(r) = a.residual {
                            acc += r[idx] as f64;
                        }
                        if a.relu {
                            acc = acc.max(0.0);
                        }
                        y[idx] = acc as f32;
                    }
                }
            }
        }
        y
    }

    /// The convolution without epilogue in f64 (the function whose derivatives
    /// [`conv2d_backward`] gives): `x` `[N, Ci, H, W]`, `w` `[Co, Ci, kh, kw]`.
    pub fn conv2d_f64(
        x: &[f64],
        xs: [usize; 4],
        w: &[f64],
        ws: [usize; 4],
        stride: (usize, usize),
        pad: [usize; 4],
    ) -> Vec<f64> {
        let a = ConvArgs {
            stride,
            pad,
            ..Default::default()
        };
        let os = out_shape(xs, ws, &a);
        let mut y = vec![0f64; os.iter().product()];
        for_each_tap(xs, ws, stride, pad, |yi, xi, wi| y[yi] += x[xi] * w[wi]);
        y
    }

    /// Calls `f(output index, input index, weight index)` for every product of the convolution
    /// (taps in the padding skipped).
    fn for_each_tap(
        xs: [usize; 4],
        ws: [usize; 4],
        stride: (usize, usize),
        pad: [usize; 4],
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let [n, ci, h, wd] = xs;
        let [co, _, kh, kw] = ws;
        let a = ConvArgs {
            stride,
            pad,
            ..Default::default()
        };
        let [_, _, ho, wo] = out_shape(xs, ws, &a);
        for b in 0..n {
            for o in 0..co {
                for i in 0..ho {
                    for j in 0..wo {
                        let yi = ((b * co + o) * ho + i) * wo + j;
                        for c in 0..ci {
                            for u in 0..kh {
                                let iy = (i * stride.0 + u) as isize - pad[0] as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for v in 0..kw {
                                    let ix = (j * stride.1 + v) as isize - pad[1] as isize;
                                    if ix < 0 || ix >= wd as isize {
                                        continue;
                                    }
                                    let xi = ((b * ci + c) * h + iy as usize) * wd + ix as usize;
                                    f(yi, xi, ((o * ci + c) * kh + u) * kw + v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Gradients `(dx, dw, db)` of [`conv2d_f64`] plus a bias for the upstream `dy`
    /// (`[N, Co, Ho, Wo]`), accumulated by scattering each product's contribution (the GPU
    /// gathers: an independent formulation).
    #[allow(clippy::type_complexity)]
    pub fn conv2d_backward(
        x: &[f64],
        xs: [usize; 4],
        w: &[f64],
        ws: [usize; 4],
        dy: &[f64],
        stride: (usize, usize),
        pad: [usize; 4],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut dx = vec![0f64; x.len()];
        let mut dw = vec![0f64; w.len()];
        for_each_tap(xs, ws, stride, pad, |yi, xi, wi| {
            dx[xi] += dy[yi] * w[wi];
            dw[wi] += dy[yi] * x[xi];
        });
        let co = ws[0];
        let per = dy.len() / (xs[0] * co).max(1);
        let mut db = vec![0f64; co];
        for (i, &g) in dy.iter().enumerate() {
            db[(i / per.max(1)) % co] += g;
        }
        (dx, dw, db)
    }

    /// Per-channel (mean, biased variance) of `x` (`[N, C, ...]`) in f64.
    pub fn channel_stats(x: &[f64], shape: &[usize]) -> Vec<(f64, f64)> {
        let c = shape[1];
        let hw: usize = shape[2..].iter().product();
        let cnt = (x.len() / c.max(1)) as f64;
        let mut sum = vec![0f64; c];
        for (i, &v) in x.iter().enumerate() {
            sum[(i / hw) % c] += v;
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / cnt).collect();
        let mut sq = vec![0f64; c];
        for (i, &v) in x.iter().enumerate() {
            let ch = (i / hw) % c;
            sq[ch] += (v - mean[ch]) * (v - mean[ch]);
        }
        mean.into_iter()
            .zip(sq)
            .map(|(m, q)| (m, q / cnt))
            .collect()
    }

    /// Training-mode batch norm in f64: normalised by the batch statistics of each channel.
    pub fn batch_norm_train_f64(
        x: &[f64],
        shape: &[usize],
        weight: &[f64],
        bias: &[f64],
        eps: f64,
    ) -> Vec<f64> {
        let c = shape[1];
        let hw: usize = shape[2..].iter().product();
        let st = channel_stats(x, shape);
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / hw) % c;
                let (m, var) = st[ch];
                (v - m) / (var + eps).sqrt() * weight[ch] + bias[ch]
            })
            .collect()
    }

    /// Gradients `(dx, dweight, dbias)` of [`batch_norm_train_f64`] for the upstream `dy`,
    /// from the textbook chain rule through the mean and the variance (dvar, dmean), not the
    /// fused form the GPU uses.
    #[allow(clippy::type_complexity)]
    pub fn batch_norm_train_backward(
        x: &[f64],
        shape: &[usize],
        weight: &[f64],
        dy: &[f64],
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let c = shape[1];
        let hw: usize = shape[2..].iter().product();
        let cnt = (x.len() / c.max(1)) as f64;
        let st = channel_stats(x, shape);
        let ch = |i: usize| (i / hw) % c;
        let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
        let (mut dvar, mut dmean) = (vec![0f64; c], vec![0f64; c]);
        for (i, (&v, &g)) in x.iter().zip(dy).enumerate() {
            let k = ch(i);
            let (m, var) = st[k];
            let s = (var + eps).sqrt();
            db[k] += g;
            dw[k] += g * (v - m) / s;
            let dxh = g * weight[k];
            dvar[k] += dxh * (v - m) * -0.5 * s.powi(-3);
            dmean[k] += -dxh / s;
        }
        // dmean also flows through var, whose derivative in the mean is −2·mean(x − μ) = 0.
        let dx = x
            .iter()
            .zip(dy)
            .enumerate()
            .map(|(i, (&v, &g))| {
                let k = ch(i);
                let (m, var) = st[k];
                g * weight[k] / (var + eps).sqrt() + dvar[k] * 2.0 * (v - m) / cnt + dmean[k] / cnt
            })
            .collect();
        (dx, dw, db)
    }

    /// Gradients `(dx, dweight, dbias)` of the frozen batch norm (constant `mean`, `var`).
    #[allow(clippy::type_complexity)]
    pub fn batch_norm_frozen_backward(
        x: &[f64],
        shape: &[usize],
        weight: &[f64],
        mean: &[f64],
        var: &[f64],
        dy: &[f64],
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let c = shape[1];
        let hw: usize = shape[2..].iter().product();
        let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
        let mut dx = vec![0f64; x.len()];
        for (i, (&v, &g)) in x.iter().zip(dy).enumerate() {
            let k = (i / hw) % c;
            let s = (var[k] + eps).sqrt();
            db[k] += g;
            dw[k] += g * (v - mean[k]) / s;
            dx[i] = g * weight[k] / s;
        }
        (dx, dw, db)
    }

    /// Inference batch norm over dimension 1 of `x` with shape `shape` (`[N, C, ...]`).
    pub fn batch_norm(
        x: &[f32],
        shape: &[usize],
        weight: &[f32],
        bias: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f32,
    ) -> Vec<f32> {
        let c = shape[1];
        let hw: usize = shape[2..].iter().product();
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / hw) % c;
                let s = weight[ch] as f64 / (var[ch] as f64 + eps as f64).sqrt();
                ((v as f64 - mean[ch] as f64) * s + bias[ch] as f64) as f32
            })
            .collect()
    }
}

/// Kernel timings for `sparsett bench kernels`: the head's convolutions at 19×19 and the search
/// branch's PatchEmbed, per variant (the Register row names the GEMM it ran; the first shape
/// also times the plain Register GEMM when the subgroup one is the default).
#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
    use crate::prng::SplitMix64;
    // (label, Ci, Co, k, stride, input edge, pad)
    type Case = (&'static str, usize, usize, usize, usize, usize, [usize; 4]);
    let cases: [Case; 6] = [
        ("3x3", 512, 512, 3, 1, 19, [1; 4]),
        ("1x1", 512, 1024, 1, 1, 19, [0; 4]),
        ("1x1", 1024, 256, 1, 1, 19, [0; 4]),
        ("3x3", 256, 256, 3, 1, 19, [1; 4]),
        ("1x1", 256, 1024, 1, 1, 19, [0; 4]),
        ("patch4x4/4", 3, 96, 4, 4, 289, [0, 0, 3, 3]),
    ];
    let cpu_adapter = gpu.info.device_type == wgpu::DeviceType::Cpu;
    let auto = RegisterKernel::for_gpu(gpu);
    let mut rng = SplitMix64::new(7);
    for (idx, (label, ci, co, k, s, e, pad)) in cases.into_iter().enumerate() {
        let x = gpu.upload(&[1, ci, e, e], &rng.vec_f32(ci * e * e, -1.0, 1.0))?;
        let w = gpu.upload(&[co, ci, k, k], &rng.vec_f32(co * ci * k * k, -0.05, 0.05))?;
        let b = gpu.upload(&[co], &rng.vec_f32(co, -0.1, 0.1))?;
        let opts = Conv2dOpts {
            stride: (s, s),
            pad,
            bias: Some(&b),
            relu: true,
            residual: None,
        };
        let ho = (e + pad[0] + pad[2] - k) / s + 1;
        let flops = 2.0 * (co * ci * k * k * ho * ho) as f64;
        let mut runs = vec![(Variant::Register, auto), (Variant::Tiled, auto)];
        if idx == 0 && auto == RegisterKernel::Subgroup {
            runs.push((Variant::Register, RegisterKernel::Plain));
        }
        for (v, rk) in runs {
            // Barriers (Tiled) and the plain GEMM are slow on CPU adapters: fewer iterations.
            let slow = cpu_adapter && (v == Variant::Tiled || rk == RegisterKernel::Plain);
            let (warmup, iters) = if slow { (1, 3) } else { (2, 7) };
            let ms = crate::bench::median_ms(gpu, warmup, iters, |enc| {
                match v {
                    Variant::Register => conv2d_register(enc, &x, &w, &opts, rk),
                    Variant::Tiled => conv2d_with(enc, &x, &w, &opts, v),
                }
                .map(|_| ())
            })?;
            let name = match (v, rk) {
                (Variant::Tiled, _) => "tiled",
                (_, RegisterKernel::Subgroup) => "register/subgroup",
                (_, RegisterKernel::Plain) => "register/plain",
            };
            rows.push(crate::bench::Row {
                kernel: format!("conv2d {label} {name}"),
                shape: format!("{ci}→{co} {e}×{e} s{s} pad{pad:?}"),
                median_ms: ms,
                flops: Some(flops),
                bytes: None,
            });
        }
    }
    Ok(())
}
