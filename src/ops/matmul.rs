//! Matrix products with a fused epilogue: `out = act(A·B + bias + row_bias) + residual`, batched
//! and with either operand broadcast over the batch; [`linear`] is the `nn.Linear` form
//! `y = x·Wᵀ + b` and a 1×1 convolution on NCHW is `matmul(W[Co, Ci], X[N, Ci, H·W])` with the
//! conv bias as `row_bias`. Shader: `shaders/matmul.wgsl`.
//!
//! Three kernels ([`Kernel`]): shared-memory tiles for GPUs ([`Variant::Tiled`]), and for CPU
//! adapters ([`Variant::Register`]) a barrier-free register-blocked kernel, replaced by a
//! subgroup-broadcast kernel where the adapter has subgroups of exactly 8 lanes (lavapipe).

use std::sync::LazyLock;

use crate::gpu::{DType, Encoder, Gpu, Shader, ShaderNeeds, Tensor, Variant};
use crate::{Error, Result};

static SOURCE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/matmul.wgsl"));
const SUBGROUP_MARKER: &str = "// @@subgroup";

/// The part of the file before the subgroup marker: valid WGSL everywhere.
static MATMUL: LazyLock<Shader> = LazyLock::new(|| {
    let end = SOURCE.find(SUBGROUP_MARKER).unwrap_or(SOURCE.len());
    Shader {
        name: "matmul.wgsl",
        source: &SOURCE[..end],
        needs: ShaderNeeds::default(),
    }
});

/// The whole file, compiled with subgroups enabled (a separate module: browsers refuse subgroup
/// builtins without the `enable` directive, and adapters without subgroups refuse the directive).
static MATMUL_SUBGROUP: LazyLock<Shader> = LazyLock::new(|| Shader {
    name: "matmul.wgsl#subgroup",
    source: SOURCE,
    needs: ShaderNeeds {
        f16: false,
        subgroups: true,
    },
});

/// Output tile edge shared by every kernel (rows and columns per workgroup).
const TILE: usize = 64;

/// Activation applied after the bias, before the residual.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    #[default]
    None,
    Relu,
    /// Exact-erf GELU, `0.5 x (1 + erf(x / √2))`.
    Gelu,
}

impl Activation {
    fn code(self) -> f64 {
        match self {
            Activation::None => 0.0,
            Activation::Relu => 1.0,
            Activation::Gelu => 2.0,
        }
    }
}

/// What happens to each output element after the dot product, fused into the kernel:
/// `act(acc + bias[col] + row_bias[row]) + residual[row, col]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// `[N]`, added per output column.
    pub bias: Option<&'a Tensor>,
    /// `[M]`, added per output row (the bias of a 1×1 convolution written as `W·X`).
    pub row_bias: Option<&'a Tensor>,
    pub act: Activation,
    /// Same shape as the output; added after the activation.
    pub residual: Option<&'a Tensor>,
}

/// A matmul kernel. [`matmul_with`] picks one from the variant; tests and benchmarks name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Shared-memory tiles with barriers (GPUs).
    Tiled,
    /// 8×8 outputs per invocation, no workgroup memory (CPU adapters without usable subgroups).
    Register,
    /// One 8-lane subgroup per 64×64 tile sharing loads by broadcast (lavapipe).
    Subgroup,
}

impl Kernel {
    pub const ALL: [Kernel; 3] = [Kernel::Tiled, Kernel::Register, Kernel::Subgroup];

    /// The kernel a variant runs on this adapter.
    pub fn for_variant(gpu: &Gpu, variant: Variant) -> Kernel {
        match variant {
            Variant::Tiled => Kernel::Tiled,
            Variant::Register if Kernel::Subgroup.supported(gpu) => Kernel::Subgroup,
            Variant::Register => Kernel::Register,
        }
    }

    /// Whether the adapter can run this kernel. The subgroup kernel assumes one workgroup of 8
    /// invocations is one subgroup, so it needs a fixed subgroup size of 8.
    pub fn supported(self, gpu: &Gpu) -> bool {
        match self {
            Kernel::Subgroup => {
                gpu.has_subgroups()
                    && gpu.info.subgroup_min_size == 8
                    && gpu.info.subgroup_max_size == 8
            }
            _ => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Tiled => "tiled",
            Kernel::Register => "register",
            Kernel::Subgroup => "subgroup",
        }
    }

    fn entry(self) -> (&'static Shader, &'static str) {
        match self {
            Kernel::Tiled => (&MATMUL, "mm_tiled"),
            Kernel::Register => (&MATMUL, "mm_register"),
            Kernel::Subgroup => (&MATMUL_SUBGROUP, "mm_subgroup"),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    tiles_m: u32,
    tiles_n: u32,
    a_bs: u32,
    b_bs: u32,
    ldb_k: u32,
    ldb_n: u32,
    _pad: [u32; 2],
}

/// A product resolved from tensor shapes: element (k, n) of B's batch `bi` is at
/// `bi·b_bs + k·ldb_k + n·ldb_n`; A is row-major with batch stride `a_bs` (0 = broadcast).
struct Problem {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a_bs: usize,
    b_bs: usize,
    ldb_k: usize,
    ldb_n: usize,
}

fn check_f32(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::shape(op, format!("{what} must be f32, got {t:?}")));
    }
    Ok(())
}

/// `out = act(A·B + bias + row_bias) + residual` on the default kernel for the device's variant.
///
/// `a` is `[M, K]` or `[B, M, K]`; `b` is `[K, N]` (`[N, K]` when `trans_b`) or batched
/// `[B, K, N]` / `[B, N, K]`. A 2-D operand broadcasts over the other's batch. The output is
/// `[B, M, N]`, or `[M, N]` when both operands are 2-D.
pub fn matmul(
    enc: &mut Encoder,
    a: &Tensor,
    b: &Tensor,
    trans_b: bool,
    epi: &Epilogue,
) -> Result<Tensor> {
    let v = enc.gpu().variant();
    matmul_with(enc, a, b, trans_b, epi, v)
}

/// [`matmul`] with an explicit kernel variant.
pub fn matmul_with(
    enc: &mut Encoder,
    a: &Tensor,
    b: &Tensor,
    trans_b: bool,
    epi: &Epilogue,
    variant: Variant,
) -> Result<Tensor> {
    let kernel = Kernel::for_variant(enc.gpu(), variant);
    matmul_kernel(enc, a, b, trans_b, epi, kernel)
}

/// [`matmul`] on a named kernel (fails if the adapter cannot run it).
pub fn matmul_kernel(
    enc: &mut Encoder,
    a: &Tensor,
    b: &Tensor,
    trans_b: bool,
    epi: &Epilogue,
    kernel: Kernel,
) -> Result<Tensor> {
    const OP: &str = "matmul";
    check_f32(OP, "a", a)?;
    check_f32(OP, "b", b)?;
    let (sa, sb) = (a.shape(), b.shape());
    if !(2..=3).contains(&sa.len()) || !(2..=3).contains(&sb.len()) {
        return Err(Error::shape(
            OP,
            format!("a {sa:?} and b {sb:?} must be 2-D or 3-D (batched)"),
        ));
    }
    let (ba, m, ka) = if sa.len() == 3 {
        (Some(sa[0]), sa[1], sa[2])
    } else {
        (None, sa[0], sa[1])
    };
    let (bb, r, c) = if sb.len() == 3 {
        (Some(sb[0]), sb[1], sb[2])
    } else {
        (None, sb[0], sb[1])
    };
    let (kb, n) = if trans_b { (c, r) } else { (r, c) };
    if ka != kb {
        let layout = if trans_b { "[N, K]" } else { "[K, N]" };
        return Err(Error::shape(
            OP,
            format!("inner dimensions differ: a {sa:?} has K = {ka}, b {sb:?} (as {layout}) has K = {kb}"),
        ));
    }
    let batch = match (ba, bb) {
        (Some(x), Some(y)) if x != y => {
            return Err(Error::shape(
                OP,
                format!("batch sizes differ: a {sa:?} has {x}, b {sb:?} has {y}"),
            ))
        }
        (Some(x), _) | (None, Some(x)) => x,
        (None, None) => 1,
    };
    let out_shape = if ba.is_none() && bb.is_none() {
        vec![m, n]
    } else {
        vec![batch, m, n]
    };
    let (ldb_k, ldb_n) = if trans_b { (1, ka) } else { (n, 1) };
    let prob = Problem {
        batch,
        m,
        n,
        k: ka,
        a_bs: if ba.is_some() { m * ka } else { 0 },
        b_bs: if bb.is_some() { ka * n } else { 0 },
        ldb_k,
        ldb_n,
    };
    run(enc, OP, a, b, &prob, &out_shape, epi, kernel)
}

/// `y = x·Wᵀ (+ bias …)`, the `nn.Linear` form on the default kernel: `x` is `[..., K]` with any
/// leading dimensions, `w` is `[N, K]` (PyTorch layout); the output is `[..., N]`.
pub fn linear(enc: &mut Encoder, x: &Tensor, w: &Tensor, epi: &Epilogue) -> Result<Tensor> {
    let v = enc.gpu().variant();
    linear_with(enc, x, w, epi, v)
}

/// [`linear`] with an explicit kernel variant.
pub fn linear_with(
    enc: &mut Encoder,
    x: &Tensor,
    w: &Tensor,
    epi: &Epilogue,
    variant: Variant,
) -> Result<Tensor> {
    let kernel = Kernel::for_variant(enc.gpu(), variant);
    linear_kernel(enc, x, w, epi, kernel)
}

/// [`linear`] on a named kernel.
pub fn linear_kernel(
    enc: &mut Encoder,
    x: &Tensor,
    w: &Tensor,
    epi: &Epilogue,
    kernel: Kernel,
) -> Result<Tensor> {
    const OP: &str = "linear";
    check_f32(OP, "x", x)?;
    check_f32(OP, "w", w)?;
    let (sx, sw) = (x.shape(), w.shape());
    if sx.is_empty() || sw.len() != 2 {
        return Err(Error::shape(
            OP,
            format!("x {sx:?} must have at least 1 dimension and w {sw:?} must be [N, K]"),
        ));
    }
    let k = sx[sx.len() - 1];
    let n = sw[0];
    if sw[1] != k {
        return Err(Error::shape(
            OP,
            format!(
                "inner dimensions differ: x {sx:?} has K = {k}, w {sw:?} (as [N, K]) has K = {}",
                sw[1]
            ),
        ));
    }
    let rows: usize = sx[..sx.len() - 1].iter().product();
    let mut out_shape = sx.to_vec();
    *out_shape.last_mut().unwrap() = n;
    let prob = Problem {
        batch: 1,
        m: rows,
        n,
        k,
        a_bs: 0,
        b_bs: 0,
        ldb_k: 1,
        ldb_n: k,
    };
    run(enc, OP, x, w, &prob, &out_shape, epi, kernel)
}

#[allow(clippy::too_many_arguments)]
fn run(
    enc: &mut Encoder,
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    pr: &Problem,
    out_shape: &[usize],
    epi: &Epilogue,
    kernel: Kernel,
) -> Result<Tensor> {
    let gpu = enc.gpu();
    let (sa, sb) = (a.shape(), b.shape());
    if let Some(t) = epi.bias {
        check_f32(op, "bias", t)?;
        if t.shape() != [pr.n] {
            return Err(Error::shape(
                op,
                format!(
                    "bias {:?} must be [{}] (one per output column) for a {sa:?} by {sb:?} product",
                    t.shape(),
                    pr.n
                ),
            ));
        }
    }
    if let Some(t) = epi.row_bias {
        check_f32(op, "row_bias", t)?;
        if t.shape() != [pr.m] {
            return Err(Error::shape(
                op,
                format!(
                    "row_bias {:?} must be [{}] (one per output row) for a {sa:?} by {sb:?} product",
                    t.shape(),
                    pr.m
                ),
            ));
        }
    }
    if let Some(t) = epi.residual {
        check_f32(op, "residual", t)?;
        if t.shape() != out_shape {
            return Err(Error::shape(
                op,
                format!(
                    "residual {:?} must have the output shape {out_shape:?} of a {sa:?} by {sb:?} product",
                    t.shape()
                ),
            ));
        }
    }
    if !kernel.supported(gpu) {
        return Err(Error::Other(format!(
            "{op}: the {} kernel needs subgroups of exactly 8 invocations; '{}' has {}",
            kernel.name(),
            gpu.info.name,
            if gpu.has_subgroups() {
                format!(
                    "sizes {}..{}",
                    gpu.info.subgroup_min_size, gpu.info.subgroup_max_size
                )
            } else {
                "no subgroups".to_string()
            }
        )));
    }
    let out = gpu.empty(op, out_shape, DType::F32)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    // Indices are u32 in the shaders; the binding-size limit keeps every tensor far below 2^32
    // elements, but the operands' own sizes are checked to be sure.
    let too_big = [a.numel(), b.numel(), out.numel()]
        .iter()
        .any(|&n| n > u32::MAX as usize);
    if too_big {
        return Err(Error::shape(
            op,
            format!("a {sa:?} or b {sb:?} has more than 2^32 elements"),
        ));
    }
    let tiles_m = pr.m.div_ceil(TILE);
    let tiles_n = pr.n.div_ceil(TILE);
    let params = Params {
        m: pr.m as u32,
        n: pr.n as u32,
        k: pr.k as u32,
        batch: pr.batch as u32,
        tiles_m: tiles_m as u32,
        tiles_n: tiles_n as u32,
        a_bs: pr.a_bs as u32,
        b_bs: pr.b_bs as u32,
        ldb_k: pr.ldb_k as u32,
        ldb_n: pr.ldb_n as u32,
        _pad: [0; 2],
    };
    let constants = [
        ("HAS_BIAS", epi.bias.is_some() as u8 as f64),
        ("HAS_ROW_BIAS", epi.row_bias.is_some() as u8 as f64),
        ("HAS_RES", epi.residual.is_some() as u8 as f64),
        ("ACT", epi.act.code()),
    ];
    // Absent epilogue operands are bound to `a`: the shader declares them all, and a read-only
    // alias never conflicts.
    let bias = epi.bias.unwrap_or(a);
    let row_bias = epi.row_bias.unwrap_or(a);
    let residual = epi.residual.unwrap_or(a);
    let (shader, entry) = kernel.entry();
    let groups = (pr.batch * tiles_m * tiles_n) as u64;
    enc.dispatch(
        shader,
        entry,
        &constants,
        bytemuck::bytes_of(&params),
        &[a, b, bias, row_bias, residual, &out],
        gpu.grid(groups),
    )?;
    Ok(out)
}

/// Plain-loop references (f64 accumulation), same shapes and options as the GPU ops.
pub mod cpu {
    use super::Activation;

    /// CPU-side epilogue operands (`None` = absent).
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Epilogue<'a> {
        pub bias: Option<&'a [f32]>,
        pub row_bias: Option<&'a [f32]>,
        pub act: Activation,
        pub residual: Option<&'a [f32]>,
    }

    fn act(x: f64, a: Activation) -> f64 {
        match a {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::Gelu => {
                0.5 * x * (1.0 + crate::ops::elementwise::cpu::erf(x / std::f64::consts::SQRT_2))
            }
        }
    }

    /// `out[bi, i, j] = act(Σ_k a[bi, i, k]·b[bi, k, j] + bias[j] + row_bias[i]) + residual`.
    /// `a` is `[batch?, m, k]`, `b` `[batch?, k, n]` (`[batch?, n, k]` when `trans_b`);
    /// `a_batched` / `b_batched` say whether the operand has the batch dimension.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        a: &[f32],
        b: &[f32],
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        a_batched: bool,
        b_batched: bool,
        trans_b: bool,
        epi: &Epilogue,
    ) -> Vec<f32> {
        let mut out = vec![0f32; batch * m * n];
        for bi in 0..batch {
            let ao = if a_batched { bi * m * k } else { 0 };
            let bo = if b_batched { bi * k * n } else { 0 };
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0f64;
                    for kk in 0..k {
                        let bv = if trans_b {
                            b[bo + j * k + kk]
                        } else {
                            b[bo + kk * n + j]
                        };
                        s += a[ao + i * k + kk] as f64 * bv as f64;
                    }
                    if let Some(bias) = epi.bias {
                        s += bias[j] as f64;
                    }
                    if let Some(rb) = epi.row_bias {
                        s += rb[i] as f64;
                    }
                    s = act(s, epi.act);
                    let o = (bi * m + i) * n + j;
                    if let Some(r) = epi.residual {
                        s += r[o] as f64;
                    }
                    out[o] = s as f32;
                }
            }
        }
        out
    }

    /// `y[r, j] = act(Σ_k x[r, k]·w[j, k] + bias[j]) + residual[r, j]` for `rows` rows of `x`.
    pub fn linear(
        x: &[f32],
        w: &[f32],
        rows: usize,
        k: usize,
        n: usize,
        epi: &Epilogue,
    ) -> Vec<f32> {
        matmul(x, w, 1, rows, k, n, false, false, true, epi)
    }
}

/// Benchmarks: 1024³ on every kernel the adapter runs, and the model's shapes on the default one.
#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
    use crate::bench::{median_ms, Row};
    let fill = |n: usize, seed: u64| -> Vec<f32> {
        crate::prng::SplitMix64::new(seed).vec_f32(n, -1.0, 1.0)
    };
    let square = 1024;
    let a = gpu.upload(&[square, square], &fill(square * square, 1))?;
    let b = gpu.upload(&[square, square], &fill(square * square, 2))?;
    for kernel in Kernel::ALL {
        if !kernel.supported(gpu) {
            continue;
        }
        // Kernels meant for the other kind of adapter are slow here: time them once.
        let iters = if kernel == Kernel::for_variant(gpu, gpu.variant()) {
            3
        } else {
            1
        };
        let ms = median_ms(gpu, 1, iters, |enc| {
            matmul_kernel(enc, &a, &b, false, &Epilogue::default(), kernel).map(|_| ())
        })?;
        rows.push(Row {
            kernel: format!("matmul/{}", kernel.name()),
            shape: format!("{square}x{square}x{square}"),
            median_ms: ms,
            flops: Some(2.0 * (square * square * square) as f64),
            bytes: None,
        });
    }
    drop((a, b));

    let kernel = Kernel::for_variant(gpu, gpu.variant());
    // (rows, K, N): Swin stage-0 qkv on the 73×73 search map, stage-1 and stage-2 MLPs, the neck FFN.
    for (m, k, n, act) in [
        (5329, 96, 288, Activation::None),
        (1369, 192, 768, Activation::Gelu),
        (361, 384, 1536, Activation::Gelu),
        (361, 256, 2048, Activation::Relu),
    ] {
        let x = gpu.upload(&[m, k], &fill(m * k, 3))?;
        let w = gpu.upload(&[n, k], &fill(n * k, 4))?;
        let bias = gpu.upload(&[n], &fill(n, 5))?;
        let epi = Epilogue {
            bias: Some(&bias),
            act,
            ..Default::default()
        };
        let ms = median_ms(gpu, 1, 5, |enc| {
            linear_kernel(enc, &x, &w, &epi, kernel).map(|_| ())
        })?;
        rows.push(Row {
            kernel: format!("linear/{}", kernel.name()),
            shape: format!("{m}x{k}->{n} +bias {act:?}"),
            median_ms: ms,
            flops: Some(2.0 * (m * k * n) as f64),
            bytes: None,
        });
    }
    // A 1×1 convolution 512→1024 on a 19×19 map: W[1024, 512] · X[512, 361] with the conv bias per row.
    let (co, ci, hw) = (1024, 512, 361);
    let w = gpu.upload(&[co, ci], &fill(co * ci, 6))?;
    let x = gpu.upload(&[1, ci, hw], &fill(ci * hw, 7))?;
    let bias = gpu.upload(&[co], &fill(co, 8))?;
    let epi = Epilogue {
        row_bias: Some(&bias),
        act: Activation::Relu,
        ..Default::default()
    };
    let ms = median_ms(gpu, 1, 5, |enc| {
        matmul_kernel(enc, &w, &x, false, &epi, kernel).map(|_| ())
    })?;
    rows.push(Row {
        kernel: format!("conv1x1/{}", kernel.name()),
        shape: format!("{co}x{ci} . {ci}x{hw} +row_bias Relu"),
        median_ms: ms,
        flops: Some(2.0 * (co * ci * hw) as f64),
        bytes: None,
    });
    Ok(())
}
