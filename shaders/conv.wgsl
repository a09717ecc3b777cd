// 2-D convolution as a GEMM (M = Co, N = batch·Ho·Wo, K = Ci·kh·kw) with a fused epilogue
// y = relu?(acc + bias[co] + residual), and inference batch norm.
//
// Register variant (CPU adapters, no barriers): `im2col` writes the zero-padded B matrix
// [Kpad, Npad] (Kpad, Npad multiples of 4 and 8) so that the GEMM reads it as aligned vec4s,
// `pack_weights` pads weight rows to Kpad when K is not a multiple of 4, and `gemm_register`
// computes 8 output channels × 8 columns per invocation. lavapipe runs one SSBO access per lane
// per load instruction, so vec4 loads and a 64-accumulator block are what make it fast.
// Tiled variant (GPUs): `conv_tiled` is an implicit GEMM that gathers 64×16 / 16×64 tiles of the
// weights and of the (virtually padded) input into workgroup memory.
//
// Workgroup ids are linearised as wg.x + wg.y · num_workgroups.x (the host splits big grids).

struct Conv {
    n: u32, ci: u32, h: u32, w: u32,
    co: u32, ho: u32, wo: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, pt: u32,
    pl: u32, k: u32, kq: u32, ncols: u32,
    nq: u32, pix: u32, col_blocks: u32, co_blocks: u32,
}

override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override RELU: bool = false;
// Invocations per workgroup of gemm_register; all of them share one block of output channels so
// that the weight loads are uniform across the workgroup.
override WG: u32 = 64u;

const INVALID: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Conv;

// ---------------------------------------------------------------------------------------------
// im2col: B[k][j] = x[n][ci][oh·sh + ky − pt][ow·sw + kx − pl] (0 outside the input, and for the
// padding rows k ≥ K and columns j ≥ N·Ho·Wo). One invocation writes 4 columns of one row.

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read_write> b_out: array<vec4<f32>>;

fn x_at(k: u32, j: u32) -> f32 {
    if (k >= p.k || j >= p.ncols) {
        return 0.0;
    }
    let khw = p.kh * p.kw;
    let c = k / khw;
    let r = k % khw;
    let ky = r / p.kw;
    let kx = r % p.kw;
    let n = j / p.pix;
    let q = j % p.pix;
    let oh = q / p.wo;
    let ow = q % p.wo;
    // Unsigned wrap-around makes rows/columns above or left of the input fail the < test.
    let iy = oh * p.sh + ky - p.pt;
    let ix = ow * p.sw + kx - p.pl;
    if (iy >= p.h || ix >= p.w) {
        return 0.0;
    }
    return xs[((n * p.ci + c) * p.h + iy) * p.w + ix];
}

@compute @workgroup_size(256)
fn im2col(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    let rows = p.kq * 4u;
    if (i >= rows * p.nq) {
        return;
    }
    let k = i / p.nq;
    let j = (i % p.nq) * 4u;
    b_out[i] = vec4<f32>(x_at(k, j), x_at(k, j + 1u), x_at(k, j + 2u), x_at(k, j + 3u));
}

// ---------------------------------------------------------------------------------------------
// pack_weights: [Co, K] → [Co, Kpad] with zero columns, viewed as vec4s.

@group(0) @binding(1) var<storage, read> w_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> w_out: array<vec4<f32>>;

fn w_at(co: u32, k: u32) -> f32 {
    if (k >= p.k) {
        return 0.0;
    }
    return w_src[co * p.k + k];
}

@compute @workgroup_size(256)
fn pack_weights(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= p.co * p.kq) {
        return;
    }
    let co = i / p.kq;
    let k = (i % p.kq) * 4u;
    w_out[i] = vec4<f32>(w_at(co, k), w_at(co, k + 1u), w_at(co, k + 2u), w_at(co, k + 3u));
}

// ---------------------------------------------------------------------------------------------
// Epilogue shared by both GEMMs: column j of the GEMM is pixel j mod (Ho·Wo) of image
// j / (Ho·Wo); `base` is that column's offset in y with co = 0, or INVALID past the last column.

@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

fn col_base(j: u32) -> u32 {
    if (j >= p.ncols) {
        return INVALID;
    }
    return (j / p.pix) * p.co * p.pix + j % p.pix;
}

fn store1(base: u32, off: u32, v: f32) {
    if (base == INVALID) {
        return;
    }
    let i = base + off;
    var r = v;
    if (HAS_RES) {
        r += res[i];
    }
    if (RELU) {
        r = max(r, 0.0);
    }
    y[i] = r;
}

fn store4(co: u32, v: vec4<f32>, base: vec4<u32>) {
    if (co >= p.co) {
        return;
    }
    var bv4 = v;
    if (HAS_BIAS) {
        bv4 += vec4<f32>(bias[co]);
    }
    let off = co * p.pix;
    store1(base.x, off, bv4.x);
    store1(base.y, off, bv4.y);
    store1(base.z, off, bv4.z);
    store1(base.w, off, bv4.w);
}

fn store8(co: u32, lo: vec4<f32>, hi: vec4<f32>, base0: vec4<u32>, base1: vec4<u32>) {
    store4(co, lo, base0);
    store4(co, hi, base1);
}

// ---------------------------------------------------------------------------------------------
// gemm_register: Y[co][j] = Σ_k W[co][k] · B[k][j] for an 8 × 8 block per invocation.
// W is [Co, Kpad] (row stride kq vec4s), B is [Kpad, Npad] (row stride nq vec4s).

@group(0) @binding(1) var<storage, read> wv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bv: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn gemm_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let g = wg.x + wg.y * nw.x;
    let co0 = (g % p.co_blocks) * 8u;
    // Columns past the last block re-read the last block (in bounds) and store nothing.
    let cb_raw = (g / p.co_blocks) * WG + li;
    let cb = min(cb_raw, p.col_blocks - 1u);
    var base0 = vec4<u32>(INVALID);
    var base1 = vec4<u32>(INVALID);
    if (cb_raw < p.col_blocks) {
        let j = cb * 8u;
        base0 = vec4<u32>(col_base(j), col_base(j + 1u), col_base(j + 2u), col_base(j + 3u));
        base1 = vec4<u32>(col_base(j + 4u), col_base(j + 5u), col_base(j + 6u), col_base(j + 7u));
    }
    let ra0 = min(co0 + 0u, p.co - 1u) * p.kq;
    let ra1 = min(co0 + 1u, p.co - 1u) * p.kq;
    let ra2 = min(co0 + 2u, p.co - 1u) * p.kq;
    let ra3 = min(co0 + 3u, p.co - 1u) * p.kq;
    let ra4 = min(co0 + 4u, p.co - 1u) * p.kq;
    let ra5 = min(co0 + 5u, p.co - 1u) * p.kq;
    let ra6 = min(co0 + 6u, p.co - 1u) * p.kq;
    let ra7 = min(co0 + 7u, p.co - 1u) * p.kq;
    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);
    var bo = cb * 2u;
    for (var kq = 0u; kq < p.kq; kq++) {
        let a0 = wv[ra0 + kq];
        let a1 = wv[ra1 + kq];
        let a2 = wv[ra2 + kq];
        let a3 = wv[ra3 + kq];
        let a4 = wv[ra4 + kq];
        let a5 = wv[ra5 + kq];
        let a6 = wv[ra6 + kq];
        let a7 = wv[ra7 + kq];
        let b00 = bv[bo];
        let b01 = bv[bo + 1u];
        bo += p.nq;
        let b10 = bv[bo];
        let b11 = bv[bo + 1u];
        bo += p.nq;
        let b20 = bv[bo];
        let b21 = bv[bo + 1u];
        bo += p.nq;
        let b30 = bv[bo];
        let b31 = bv[bo + 1u];
        bo += p.nq;
        c00 += a0.x * b00;
        c01 += a0.x * b01;
        c10 += a1.x * b00;
        c11 += a1.x * b01;
        c20 += a2.x * b00;
        c21 += a2.x * b01;
        c30 += a3.x * b00;
        c31 += a3.x * b01;
        c40 += a4.x * b00;
        c41 += a4.x * b01;
        c50 += a5.x * b00;
        c51 += a5.x * b01;
        c60 += a6.x * b00;
        c61 += a6.x * b01;
        c70 += a7.x * b00;
        c71 += a7.x * b01;
        c00 += a0.y * b10;
        c01 += a0.y * b11;
        c10 += a1.y * b10;
        c11 += a1.y * b11;
        c20 += a2.y * b10;
        c21 += a2.y * b11;
        c30 += a3.y * b10;
        c31 += a3.y * b11;
        c40 += a4.y * b10;
        c41 += a4.y * b11;
        c50 += a5.y * b10;
        c51 += a5.y * b11;
        c60 += a6.y * b10;
        c61 += a6.y * b11;
        c70 += a7.y * b10;
        c71 += a7.y * b11;
        c00 += a0.z * b20;
        c01 += a0.z * b21;
        c10 += a1.z * b20;
        c11 += a1.z * b21;
        c20 += a2.z * b20;
        c21 += a2.z * b21;
        c30 += a3.z * b20;
        c31 += a3.z * b21;
        c40 += a4.z * b20;
        c41 += a4.z * b21;
        c50 += a5.z * b20;
        c51 += a5.z * b21;
        c60 += a6.z * b20;
        c61 += a6.z * b21;
        c70 += a7.z * b20;
        c71 += a7.z * b21;
        c00 += a0.w * b30;
        c01 += a0.w * b31;
        c10 += a1.w * b30;
        c11 += a1.w * b31;
        c20 += a2.w * b30;
        c21 += a2.w * b31;
        c30 += a3.w * b30;
        c31 += a3.w * b31;
        c40 += a4.w * b30;
        c41 += a4.w * b31;
        c50 += a5.w * b30;
        c51 += a5.w * b31;
        c60 += a6.w * b30;
        c61 += a6.w * b31;
        c70 += a7.w * b30;
        c71 += a7.w * b31;
    }
    store8(co0 + 0u, c00, c01, base0, base1);
    store8(co0 + 1u, c10, c11, base0, base1);
    store8(co0 + 2u, c20, c21, base0, base1);
    store8(co0 + 3u, c30, c31, base0, base1);
    store8(co0 + 4u, c40, c41, base0, base1);
    store8(co0 + 5u, c50, c51, base0, base1);
    store8(co0 + 6u, c60, c61, base0, base1);
    store8(co0 + 7u, c70, c71, base0, base1);
}

// ---------------------------------------------------------------------------------------------
// conv_tiled: implicit GEMM, 64 × 64 outputs per workgroup of 16 × 16 invocations (4 × 4 each),
// K in steps of 16 through workgroup memory (2 × 4 KiB).

@group(0) @binding(2) var<storage, read> wt: array<f32>;

var<workgroup> ta: array<f32, 1024>; // [16 k][64 co]
var<workgroup> tb: array<f32, 1024>; // [16 k][64 j]

@compute @workgroup_size(256)
fn conv_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let g = wg.x + wg.y * nw.x;
    let co0 = (g % p.co_blocks) * 64u;
    let j0 = (g / p.co_blocks) * 64u;
    let tx = li % 16u;
    let ty = li / 16u;

    // This invocation always loads column jl of the B tile: decode its pixel once.
    let jl = li % 64u;
    let j = j0 + jl;
    let jn = j / p.pix;
    let q = j % p.pix;
    let iy0 = (q / p.wo) * p.sh - p.pt;
    let ix0 = (q % p.wo) * p.sw - p.pl;
    let xbase = jn * p.ci * p.h * p.w;
    let khw = p.kh * p.kw;
    let ka = li % 16u;

    var acc: array<vec4<f32>, 4>;
    for (var r = 0u; r < 4u; r++) {
        acc[r] = vec4<f32>(0.0);
    }
    for (var k0 = 0u; k0 < p.k; k0 += 16u) {
        for (var i = 0u; i < 4u; i++) {
            let row = li / 16u + 16u * i;
            let co = co0 + row;
            let k = k0 + ka;
            var v = 0.0;
            if (co < p.co && k < p.k) {
                v = wt[co * p.k + k];
            }
            ta[ka * 64u + row] = v;
        }
        for (var i = 0u; i < 4u; i++) {
            let kk = li / 64u + 4u * i;
            let k = k0 + kk;
            var v = 0.0;
            if (j < p.ncols && k < p.k) {
                let c = k / khw;
                let r = k % khw;
                let iy = iy0 + r / p.kw;
                let ix = ix0 + r % p.kw;
                if (iy < p.h && ix < p.w) {
                    v = xs[xbase + (c * p.h + iy) * p.w + ix];
                }
            }
            tb[kk * 64u + jl] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            let a = vec4<f32>(ta[kk * 64u + ty * 4u], ta[kk * 64u + ty * 4u + 1u],
                              ta[kk * 64u + ty * 4u + 2u], ta[kk * 64u + ty * 4u + 3u]);
            let b = vec4<f32>(tb[kk * 64u + tx * 4u], tb[kk * 64u + tx * 4u + 1u],
                              tb[kk * 64u + tx * 4u + 2u], tb[kk * 64u + tx * 4u + 3u]);
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }
    let jt = j0 + tx * 4u;
    let base = vec4<u32>(col_base(jt), col_base(jt + 1u), col_base(jt + 2u), col_base(jt + 3u));
    for (var r = 0u; r < 4u; r++) {
        store4(co0 + ty * 4u + r, acc[r], base);
    }
}

// ---------------------------------------------------------------------------------------------
// batch_norm (inference): y = (x − mean[c]) / sqrt(var[c] + eps) · weight[c] + bias[c].

struct Bn {
    total: u32,
    c: u32,
    hw: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> bp: Bn;
@group(0) @binding(1) var<storage, read> bn_x: array<f32>;
@group(0) @binding(2) var<storage, read> bn_w: array<f32>;
@group(0) @binding(3) var<storage, read> bn_b: array<f32>;
@group(0) @binding(4) var<storage, read> bn_mean: array<f32>;
@group(0) @binding(5) var<storage, read> bn_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> bn_y: array<f32>;

@compute @workgroup_size(256)
fn batch_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= bp.total) {
        return;
    }
    let c = (i / bp.hw) % bp.c;
    let scale = bn_w[c] / sqrt(bn_var[c] + bp.eps);
    bn_y[i] = (bn_x[i] - bn_mean[c]) * scale + bn_b[c];
}
