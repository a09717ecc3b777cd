// 2-D convolution as a GEMM (M = Co, N = batch·Ho·Wo, K = Ci·kh·kw) with a fused epilogue
// y = relu?(acc + bias[co] + residual), and inference batch norm.
//
// This file holds two WGSL modules separated by the SUBGROUP MODULE marker line below: the first
// needs no optional feature; the second uses subgroup operations and is compiled only on adapters
// that have them (a module that mentions subgroup builtins is rejected everywhere else).
//
// Register variant (CPU adapters, no barriers): `gemm_subgroup` gathers the B matrix
// (im2col) from the input as it goes; the fallback `gemm_register` reads it from a zero-padded
// [Kpad, Npad] copy (Kpad a multiple of 4, Npad of 8) that `im2col` writes, as aligned vec4s.
// lavapipe executes every storage-buffer load as a loop over the 8 SIMD lanes with a branch per
// component (~25 cycles per float per lane) while arithmetic runs 8 lanes wide, so the GEMMs are
// designed around loads per FMA:
// - `gemm_subgroup` (second module, subgroups of 8): one workgroup = one subgroup computes a
//   64 × 64 tile; per k each lane loads 8 weights and 8 input taps, and the weights reach the
//   other lanes by subgroupBroadcast (a register shuffle), so every value is loaded once per
//   tile: 16 loads per 512 FMAs per lane. Bigger tiles ran up to 25% faster but took LLVM
//   15-40 s to compile; 4 k per iteration compiled 2-3× slower for no gain.
// - `gemm_register` (fallback without subgroups): 8 × 8 outputs per invocation with weight rows
//   padded to Kpad by `pack_weights`, 16 loads per 64 FMAs.
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
    flags: u32, _p0: u32, _p1: u32, _p2: u32,
}

const HAS_BIAS: u32 = 1u;
const HAS_RES: u32 = 2u;
const RELU: u32 = 4u;
const INVALID: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Conv;

// ---------------------------------------------------------------------------------------------
// im2col: B[k][j] = x[n][ci][oh·sh + ky − pt][ow·sw + kx − pl] (0 outside the input, and for the
// padding rows k ≥ K and columns j ≥ N·Ho·Wo). One invocation writes 4 columns of one row.

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read_write> b_out: array<vec4<f32>>;

@compute @workgroup_size(256)
fn im2col(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= p.kq * 4u * p.nq) {
        return;
    }
    let k = i / p.nq;
    let j0 = (i % p.nq) * 4u;
    var v = vec4<f32>(0.0);
    if (k < p.k) {
        // Integer division is scalar on CPU adapters: decode k and the first column once, then
        // step (image, row, column) for the other three.
        let khw = p.kh * p.kw;
        let c = k / khw;
        let ky = (k % khw) / p.kw;
        let kx = k % p.kw;
        var n = j0 / p.pix;
        let q = j0 % p.pix;
        var oh = q / p.wo;
        var ow = q % p.wo;
        for (var t = 0u; t < 4u; t++) {
            // Unsigned wrap-around sends rows/columns above or left of the input past the < test.
            let iy = oh * p.sh + ky - p.pt;
            let ix = ow * p.sw + kx - p.pl;
            if (j0 + t < p.ncols && iy < p.h && ix < p.w) {
                v[t] = xs[((n * p.ci + c) * p.h + iy) * p.w + ix];
            }
            ow += 1u;
            if (ow == p.wo) {
                ow = 0u;
                oh += 1u;
                if (oh == p.ho) {
                    oh = 0u;
                    n += 1u;
                }
            }
        }
    }
    b_out[i] = v;
}

// ---------------------------------------------------------------------------------------------
// pack_weights: [Co, K] → [Co, Kpad] with zero columns, as vec4s.

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
// Epilogue: GEMM column j is pixel j mod (Ho·Wo) of image j / (Ho·Wo); `base` is the column's
// offset in y for channel 0, or INVALID past the last column. The flags are uniform, so the
// branches cost nothing next to the GEMM and one pipeline serves every bias/residual/ReLU mix.

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
    if ((p.flags & HAS_RES) != 0u) {
        r += res[i];
    }
    if ((p.flags & RELU) != 0u) {
        r = max(r, 0.0);
    }
    y[i] = r;
}

fn store4(co: u32, v: vec4<f32>, base: vec4<u32>) {
    if (co >= p.co) {
        return;
    }
    var s = v;
    if ((p.flags & HAS_BIAS) != 0u) {
        s += vec4<f32>(bias[co]);
    }
    let off = co * p.pix;
    store1(base.x, off, s.x);
    store1(base.y, off, s.y);
    store1(base.z, off, s.z);
    store1(base.w, off, s.w);
}

// ---------------------------------------------------------------------------------------------
// gemm_register: Y[co][j] = Σ_k W[co][k] · B[k][j], 8 channels × 8 columns per invocation.
// W is [Co, Kpad] (row stride kq vec4s), B is [Kpad, Npad] (row stride nq vec4s). Blocks past
// the edges re-read the last block (always in bounds) and store nothing.

@group(0) @binding(1) var<storage, read> wv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bv: array<vec4<f32>>;

@compute @workgroup_size(64)
fn gemm_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let gid = (wg.x + wg.y * nw.x) * 64u + li;
    let cb = gid % p.col_blocks;
    let rb = gid / p.col_blocks;
    let valid = rb < p.co_blocks;
    let co0 = min(rb, p.co_blocks - 1u) * 8u;
    let j = cb * 8u;
    let base0 = vec4<u32>(col_base(j), col_base(j + 1u), col_base(j + 2u), col_base(j + 3u));
    let base1 = vec4<u32>(col_base(j + 4u), col_base(j + 5u), col_base(j + 6u), col_base(j + 7u));
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
        c00 += a0.x * b00 + a0.y * b10 + a0.z * b20 + a0.w * b30;
        c01 += a0.x * b01 + a0.y * b11 + a0.z * b21 + a0.w * b31;
        c10 += a1.x * b00 + a1.y * b10 + a1.z * b20 + a1.w * b30;
        c11 += a1.x * b01 + a1.y * b11 + a1.z * b21 + a1.w * b31;
        c20 += a2.x * b00 + a2.y * b10 + a2.z * b20 + a2.w * b30;
        c21 += a2.x * b01 + a2.y * b11 + a2.z * b21 + a2.w * b31;
        c30 += a3.x * b00 + a3.y * b10 + a3.z * b20 + a3.w * b30;
        c31 += a3.x * b01 + a3.y * b11 + a3.z * b21 + a3.w * b31;
        c40 += a4.x * b00 + a4.y * b10 + a4.z * b20 + a4.w * b30;
        c41 += a4.x * b01 + a4.y * b11 + a4.z * b21 + a4.w * b31;
        c50 += a5.x * b00 + a5.y * b10 + a5.z * b20 + a5.w * b30;
        c51 += a5.x * b01 + a5.y * b11 + a5.z * b21 + a5.w * b31;
        c60 += a6.x * b00 + a6.y * b10 + a6.z * b20 + a6.w * b30;
        c61 += a6.x * b01 + a6.y * b11 + a6.z * b21 + a6.w * b31;
        c70 += a7.x * b00 + a7.y * b10 + a7.z * b20 + a7.w * b30;
        c71 += a7.x * b01 + a7.y * b11 + a7.z * b21 + a7.w * b31;
    }
    if (valid) {
        store4(co0 + 0u, c00, base0);
        store4(co0 + 0u, c01, base1);
        store4(co0 + 1u, c10, base0);
        store4(co0 + 1u, c11, base1);
        store4(co0 + 2u, c20, base0);
        store4(co0 + 2u, c21, base1);
        store4(co0 + 3u, c30, base0);
        store4(co0 + 3u, c31, base1);
        store4(co0 + 4u, c40, base0);
        store4(co0 + 4u, c41, base1);
        store4(co0 + 5u, c50, base0);
        store4(co0 + 5u, c51, base1);
        store4(co0 + 6u, c60, base0);
        store4(co0 + 6u, c61, base1);
        store4(co0 + 7u, c70, base0);
        store4(co0 + 7u, c71, base1);
    }
}

// ---------------------------------------------------------------------------------------------
// conv_tiled: implicit GEMM, 64 × 64 outputs per workgroup of 16 × 16 invocations (4 × 4 each),
// K in steps of 16 through workgroup memory (about 8 KiB).

@group(0) @binding(2) var<storage, read> wt: array<f32>;

// ta rows are padded to 65 so that the 16 invocations storing one co (consecutive k) hit
// different banks.
var<workgroup> ta: array<f32, 1040>; // [16 k][65: 64 co + pad]
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
    let q = j % p.pix;
    let iy0 = (q / p.wo) * p.sh - p.pt;
    let ix0 = (q % p.wo) * p.sw - p.pl;
    let xbase = (j / p.pix) * p.ci * p.h * p.w;
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
            ta[ka * 65u + row] = v;
        }
        for (var i = 0u; i < 4u; i++) {
            let kk = li / 64u + 4u * i;
            let k = k0 + kk;
            var v = 0.0;
            if (j < p.ncols && k < p.k) {
                let r = k % khw;
                let iy = iy0 + r / p.kw;
                let ix = ix0 + r % p.kw;
                if (iy < p.h && ix < p.w) {
                    v = xs[xbase + ((k / khw) * p.h + iy) * p.w + ix];
                }
            }
            tb[kk * 64u + jl] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            let a = vec4<f32>(ta[kk * 65u + ty * 4u], ta[kk * 65u + ty * 4u + 1u],
                              ta[kk * 65u + ty * 4u + 2u], ta[kk * 65u + ty * 4u + 3u]);
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
// Backward of the convolution as GEMMs around two data-movement kernels (the GEMMs are the matmul
// kernels, which run ~50× faster on lavapipe than per-element gathers over Co·kh·kw terms):
//   dcol[n] = Wᵀ·dy[n]  ([K, P] per image),  dx = fold(dcol)
//   col = unfold(x),  dW = Σ_n dy[n]·col[n]ᵀ
// with col[n, k, p] = x̂[n, c, oh·sh + ky − pt, ow·sw + kx − pl] for k = (c, ky, kx) and
// p = (oh, ow) (x̂ zero outside x). Both kernels write every output element once in a fixed
// order (deterministic, no atomics). They use the uniform `p` (flags unused).

// fold adds into its output instead of overwriting it.
override ACCUM: bool = false;

@group(0) @binding(1) var<storage, read> uf_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> uf_col: array<f32>;

// One invocation per element of col ([N, K, Ho·Wo]).
@compute @workgroup_size(64)
fn unfold(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let idx = (wg.x + wg.y * nw.x) * 64u + li;
    if (idx >= p.ncols * p.k) {
        return;
    }
    let q = idx % p.pix;
    let k = (idx / p.pix) % p.k;
    let n = idx / (p.pix * p.k);
    let khw = p.kh * p.kw;
    let c = k / khw;
    let ky = (k % khw) / p.kw;
    let kx = k % p.kw;
    // Unsigned wrap-around sends rows/columns above or left of the input past the < test.
    let iy = (q / p.wo) * p.sh + ky - p.pt;
    let ix = (q % p.wo) * p.sw + kx - p.pl;
    var v = 0.0;
    if (iy < p.h && ix < p.w) {
        v = uf_x[((n * p.ci + c) * p.h + iy) * p.w + ix];
    }
    uf_col[idx] = v;
}

@group(0) @binding(1) var<storage, read> fd_col: array<f32>;
@group(0) @binding(2) var<storage, read_write> fd_dx: array<f32>;

// One invocation per input element: dx[n, c, y, x] = Σ dcol[n, (c, a, b), (i, j)] over the taps
// with i·sh + a − pt = y and j·sw + b − pl = x (at most kh·kw terms).
@compute @workgroup_size(64)
fn fold(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let idx = (wg.x + wg.y * nw.x) * 64u + li;
    if (idx >= p.n * p.ci * p.h * p.w) {
        return;
    }
    let xx = i32(idx % p.w);
    let yy = i32((idx / p.w) % p.h);
    let c = (idx / (p.w * p.h)) % p.ci;
    let n = idx / (p.w * p.h * p.ci);
    let sh = i32(p.sh);
    let sw = i32(p.sw);
    let base = (n * p.k + c * p.kh * p.kw) * p.pix;
    var acc = 0.0;
    for (var a = 0u; a < p.kh; a++) {
        let ty = yy + i32(p.pt) - i32(a);
        // Only taps landing on an output row: non-negative, on the stride grid, in range.
        if (ty < 0 || ty % sh != 0 || ty / sh >= i32(p.ho)) {
            continue;
        }
        let i = u32(ty / sh);
        for (var b = 0u; b < p.kw; b++) {
            let tx = xx + i32(p.pl) - i32(b);
            if (tx < 0 || tx % sw != 0 || tx / sw >= i32(p.wo)) {
                continue;
            }
            let j = u32(tx / sw);
            acc += fd_col[base + (a * p.kw + b) * p.pix + i * p.wo + j];
        }
    }
    if (ACCUM) {
        fd_dx[idx] = fd_dx[idx] + acc;
    } else {
        fd_dx[idx] = acc;
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

// ---------------------------------------------------------------------------------------------
// Batch norm in training mode and the batch-norm backward (training and frozen).
// `stats` is [C, 2]: (mean, r = 1/sqrt(var + eps)) per channel, from the batch (training; biased
// variance) or from the running statistics (frozen). Per-channel sums run in one invocation per
// channel in a fixed order (deterministic, no atomics); the mean is subtracted before squaring
// (two passes) so large offsets do not cancel.
//   training forward:  y = (x − μ)·r·γ + β;  running ← (1 − m)·running + m·(μ, var·cnt/(cnt − 1))
//   backward:          dβ = Σ dy,  dγ = Σ dy·x̂  (x̂ = (x − μ)·r)
//                      dx = γ·r·(dy − dβ/cnt − x̂·dγ/cnt)  (training: μ and r depend on x)
//                      dx = γ·r·dy                          (frozen)

struct BnT {
    count: u32,   // N·HW: values per channel
    c: u32,
    hw: u32,
    total: u32,   // N·C·HW
    eps: f32,
    momentum: f32,
    _p0: u32,
    _p1: u32,
}

// Frozen backward: dx does not see the batch statistics.
override FROZEN: bool = false;

@group(0) @binding(0) var<uniform> bt: BnT;
@group(0) @binding(1) var<storage, read> bt_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> bt_stats_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> bt_rmean: array<f32>;
@group(0) @binding(4) var<storage, read_write> bt_rvar: array<f32>;

fn bt_at(c: u32, t: u32) -> u32 {
    // t runs over (n, s) of channel c.
    return ((t / bt.hw) * bt.c + c) * bt.hw + t % bt.hw;
}

@compute @workgroup_size(64)
fn bn_train_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let c = (wg.x + wg.y * nw.x) * 64u + li;
    if (c >= bt.c) {
        return;
    }
    var s = 0.0;
    for (var t = 0u; t < bt.count; t++) {
        s += bt_x[bt_at(c, t)];
    }
    let cnt = f32(bt.count);
    let mean = s / cnt;
    var q = 0.0;
    for (var t = 0u; t < bt.count; t++) {
        let d = bt_x[bt_at(c, t)] - mean;
        q += d * d;
    }
    let var_b = q / cnt;
    bt_stats_out[2u * c] = mean;
    bt_stats_out[2u * c + 1u] = 1.0 / sqrt(var_b + bt.eps);
    let m = bt.momentum;
    bt_rmean[c] = (1.0 - m) * bt_rmean[c] + m * mean;
    bt_rvar[c] = (1.0 - m) * bt_rvar[c] + m * (q / (cnt - 1.0));
}

@group(0) @binding(1) var<storage, read> bf_mean: array<f32>;
// Bindings: running mean, stats (out), running var.
@group(0) @binding(3) var<storage, read> bf_var: array<f32>;

@compute @workgroup_size(64)
fn bn_frozen_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let c = (wg.x + wg.y * nw.x) * 64u + li;
    if (c >= bt.c) {
        return;
    }
    bt_stats_out[2u * c] = bf_mean[c];
    bt_stats_out[2u * c + 1u] = 1.0 / sqrt(bf_var[c] + bt.eps);
}

@group(0) @binding(2) var<storage, read> bt_stats: array<f32>;
@group(0) @binding(3) var<storage, read> bt_w: array<f32>;
@group(0) @binding(4) var<storage, read> bt_b: array<f32>;
@group(0) @binding(5) var<storage, read_write> bt_y: array<f32>;

@compute @workgroup_size(256)
fn bn_train_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= bt.total) {
        return;
    }
    let c = (i / bt.hw) % bt.c;
    bt_y[i] = (bt_x[i] - bt_stats[2u * c]) * bt_stats[2u * c + 1u] * bt_w[c] + bt_b[c];
}

@group(0) @binding(3) var<storage, read> bb_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> bb_sums: array<f32>;
@group(0) @binding(5) var<storage, read_write> bb_dw: array<f32>;
@group(0) @binding(6) var<storage, read_write> bb_db: array<f32>;

// Bindings: x, stats, dy, sums [C, 2] (fresh Σdy, Σdy·x̂ for bn_backward_input), dγ, dβ.
@compute @workgroup_size(64)
fn bn_backward_params(@builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nw: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let c = (wg.x + wg.y * nw.x) * 64u + li;
    if (c >= bt.c) {
        return;
    }
    let mean = bt_stats[2u * c];
    let r = bt_stats[2u * c + 1u];
    var sd = 0.0;
    var sdx = 0.0;
    for (var t = 0u; t < bt.count; t++) {
        let i = bt_at(c, t);
        let g = bb_dy[i];
        sd += g;
        sdx += g * ((bt_x[i] - mean) * r);
    }
    bb_sums[2u * c] = sd;
    bb_sums[2u * c + 1u] = sdx;
    if (ACCUM) {
        bb_dw[c] = bb_dw[c] + sdx;
        bb_db[c] = bb_db[c] + sd;
    } else {
        bb_dw[c] = sdx;
        bb_db[c] = sd;
    }
}

@group(0) @binding(4) var<storage, read> bi_sums: array<f32>;
@group(0) @binding(5) var<storage, read> bi_w: array<f32>;
@group(0) @binding(6) var<storage, read_write> bi_dx: array<f32>;

// Bindings: x, stats, dy, sums, γ, dx.
@compute @workgroup_size(256)
fn bn_backward_input(@builtin(workgroup_id) wg: vec3<u32>,
                     @builtin(num_workgroups) nw: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= bt.total) {
        return;
    }
    let c = (i / bt.hw) % bt.c;
    let r = bt_stats[2u * c + 1u];
    var g = bb_dy[i];
    if (!FROZEN) {
        let cnt = f32(bt.count);
        let xh = (bt_x[i] - bt_stats[2u * c]) * r;
        g = g - bi_sums[2u * c] / cnt - xh * (bi_sums[2u * c + 1u] / cnt);
    }
    let v = bi_w[c] * r * g;
    if (ACCUM) {
        bi_dx[i] = bi_dx[i] + v;
    } else {
        bi_dx[i] = v;
    }
}

// ==== SUBGROUP MODULE ====
// Everything below is a separate module (see the top of the file); it repeats the declarations
// it needs.

struct Conv {
    n: u32, ci: u32, h: u32, w: u32,
    co: u32, ho: u32, wo: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, pt: u32,
    pl: u32, k: u32, kq: u32, ncols: u32,
    nq: u32, pix: u32, col_blocks: u32, co_blocks: u32,
    flags: u32, _p0: u32, _p1: u32, _p2: u32,
}

const HAS_BIAS: u32 = 1u;
const HAS_RES: u32 = 2u;
const RELU: u32 = 4u;
const INVALID: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Conv;

@group(0) @binding(1) var<storage, read> ws: array<f32>;
// The input image itself: the GEMM gathers its B operand (implicit im2col).
@group(0) @binding(2) var<storage, read> xi: array<f32>;

// Column j of the implicit B matrix as (image offset, top row, left column) of its receptive
// field; rows and columns wrap below zero (u32), so one unsigned `<` test per tap covers both
// edges. A column past the last one gets a row that never passes the test.
fn col_geo(j: u32) -> vec3<u32> {
    if (j >= p.ncols) {
        return vec3<u32>(0u, 0x40000000u, 0u);
    }
    let n = j / p.pix;
    let q = j - n * p.pix;
    let oh = q / p.wo;
    let ow = q - oh * p.wo;
    return vec3<u32>(n * p.ci * p.h * p.w, oh * p.sh - p.pt, ow * p.sw - p.pl);
}

// B[k][j] for the tap (ky, kx) of channel offset `xo` = c·H·W: the input pixel or the zero pad.
fn xat(g: vec3<u32>, xo: u32, ky: u32, kx: u32) -> f32 {
    let iy = g.y + ky;
    let ix = g.z + kx;
    if (iy < p.h && ix < p.w) {
        return xi[g.x + xo + iy * p.w + ix];
    }
    return 0.0;
}

// Epilogue: GEMM column j is pixel j mod (Ho·Wo) of image j / (Ho·Wo); `base` is the column's
// offset in y for channel 0, or INVALID past the last column. The flags are uniform, so the
// branches cost nothing next to the GEMM and one pipeline serves every bias/residual/ReLU mix.

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
    if ((p.flags & HAS_RES) != 0u) {
        r += res[i];
    }
    if ((p.flags & RELU) != 0u) {
        r = max(r, 0.0);
    }
    y[i] = r;
}

fn store4(co: u32, v: vec4<f32>, base: vec4<u32>) {
    if (co >= p.co) {
        return;
    }
    var s = v;
    if ((p.flags & HAS_BIAS) != 0u) {
        s += vec4<f32>(bias[co]);
    }
    let off = co * p.pix;
    store1(base.x, off, s.x);
    store1(base.y, off, s.y);
    store1(base.z, off, s.z);
    store1(base.w, off, s.w);
}

// gemm_subgroup: a 64 × 64 tile of Y = W · B per workgroup of 8 invocations (one subgroup).
// W is the weight tensor as given ([Co, K], no padding needed: its loads are scalar); B is never
// stored: each lane gathers its columns' taps straight from the input (implicit im2col: the
// same 8 loads per k as the stored matrix cost, and no extra pass over memory). Lane l owns columns 4·(qt + l) .. +3 and 4·(qt + 8 + l) .. +3 of the tile for
// all 64 rows (128 vec4 accumulators), loads weight rows co0 + 8l .. 8l + 7, and receives the
// other rows' weights from their owners by subgroupBroadcast. The host dispatches this only
// where the subgroup size is exactly 8, so lanes 0..7 are the whole workgroup.
// The body is unrolled (it was generated): c{i}_{u} accumulates row co0 + i, column group u;
// a[r] holds this lane's row 8l + r, and s{i} = row i's weight broadcast from lane i / 8.
// Named variables because subgroupBroadcast needs a constant lane and an accumulator array
// with computed indices would live in memory.
@compute @workgroup_size(8)
fn gemm_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                 @builtin(subgroup_invocation_id) l: u32) {
    let g = wg.x + wg.y * nw.x;
    let co0 = (g % p.co_blocks) * 64u;
    let qt = (g / p.co_blocks) * 16u;
    let ra0 = min(co0 + l * 8u + 0u, p.co - 1u) * p.k;
    let ra1 = min(co0 + l * 8u + 1u, p.co - 1u) * p.k;
    let ra2 = min(co0 + l * 8u + 2u, p.co - 1u) * p.k;
    let ra3 = min(co0 + l * 8u + 3u, p.co - 1u) * p.k;
    let ra4 = min(co0 + l * 8u + 4u, p.co - 1u) * p.k;
    let ra5 = min(co0 + l * 8u + 5u, p.co - 1u) * p.k;
    let ra6 = min(co0 + l * 8u + 6u, p.co - 1u) * p.k;
    let ra7 = min(co0 + l * 8u + 7u, p.co - 1u) * p.k;
    let q0 = qt + 0u + l;
    let q1 = qt + 8u + l;
    var c0_0 = vec4<f32>(0.0); var c0_1 = vec4<f32>(0.0);
    var c1_0 = vec4<f32>(0.0); var c1_1 = vec4<f32>(0.0);
    var c2_0 = vec4<f32>(0.0); var c2_1 = vec4<f32>(0.0);
    var c3_0 = vec4<f32>(0.0); var c3_1 = vec4<f32>(0.0);
    var c4_0 = vec4<f32>(0.0); var c4_1 = vec4<f32>(0.0);
    var c5_0 = vec4<f32>(0.0); var c5_1 = vec4<f32>(0.0);
    var c6_0 = vec4<f32>(0.0); var c6_1 = vec4<f32>(0.0);
    var c7_0 = vec4<f32>(0.0); var c7_1 = vec4<f32>(0.0);
    var c8_0 = vec4<f32>(0.0); var c8_1 = vec4<f32>(0.0);
    var c9_0 = vec4<f32>(0.0); var c9_1 = vec4<f32>(0.0);
    var c10_0 = vec4<f32>(0.0); var c10_1 = vec4<f32>(0.0);
    var c11_0 = vec4<f32>(0.0); var c11_1 = vec4<f32>(0.0);
    var c12_0 = vec4<f32>(0.0); var c12_1 = vec4<f32>(0.0);
    var c13_0 = vec4<f32>(0.0); var c13_1 = vec4<f32>(0.0);
    var c14_0 = vec4<f32>(0.0); var c14_1 = vec4<f32>(0.0);
    var c15_0 = vec4<f32>(0.0); var c15_1 = vec4<f32>(0.0);
    var c16_0 = vec4<f32>(0.0); var c16_1 = vec4<f32>(0.0);
    var c17_0 = vec4<f32>(0.0); var c17_1 = vec4<f32>(0.0);
    var c18_0 = vec4<f32>(0.0); var c18_1 = vec4<f32>(0.0);
    var c19_0 = vec4<f32>(0.0); var c19_1 = vec4<f32>(0.0);
    var c20_0 = vec4<f32>(0.0); var c20_1 = vec4<f32>(0.0);
    var c21_0 = vec4<f32>(0.0); var c21_1 = vec4<f32>(0.0);
    var c22_0 = vec4<f32>(0.0); var c22_1 = vec4<f32>(0.0);
    var c23_0 = vec4<f32>(0.0); var c23_1 = vec4<f32>(0.0);
    var c24_0 = vec4<f32>(0.0); var c24_1 = vec4<f32>(0.0);
    var c25_0 = vec4<f32>(0.0); var c25_1 = vec4<f32>(0.0);
    var c26_0 = vec4<f32>(0.0); var c26_1 = vec4<f32>(0.0);
    var c27_0 = vec4<f32>(0.0); var c27_1 = vec4<f32>(0.0);
    var c28_0 = vec4<f32>(0.0); var c28_1 = vec4<f32>(0.0);
    var c29_0 = vec4<f32>(0.0); var c29_1 = vec4<f32>(0.0);
    var c30_0 = vec4<f32>(0.0); var c30_1 = vec4<f32>(0.0);
    var c31_0 = vec4<f32>(0.0); var c31_1 = vec4<f32>(0.0);
    var c32_0 = vec4<f32>(0.0); var c32_1 = vec4<f32>(0.0);
    var c33_0 = vec4<f32>(0.0); var c33_1 = vec4<f32>(0.0);
    var c34_0 = vec4<f32>(0.0); var c34_1 = vec4<f32>(0.0);
    var c35_0 = vec4<f32>(0.0); var c35_1 = vec4<f32>(0.0);
    var c36_0 = vec4<f32>(0.0); var c36_1 = vec4<f32>(0.0);
    var c37_0 = vec4<f32>(0.0); var c37_1 = vec4<f32>(0.0);
    var c38_0 = vec4<f32>(0.0); var c38_1 = vec4<f32>(0.0);
    var c39_0 = vec4<f32>(0.0); var c39_1 = vec4<f32>(0.0);
    var c40_0 = vec4<f32>(0.0); var c40_1 = vec4<f32>(0.0);
    var c41_0 = vec4<f32>(0.0); var c41_1 = vec4<f32>(0.0);
    var c42_0 = vec4<f32>(0.0); var c42_1 = vec4<f32>(0.0);
    var c43_0 = vec4<f32>(0.0); var c43_1 = vec4<f32>(0.0);
    var c44_0 = vec4<f32>(0.0); var c44_1 = vec4<f32>(0.0);
    var c45_0 = vec4<f32>(0.0); var c45_1 = vec4<f32>(0.0);
    var c46_0 = vec4<f32>(0.0); var c46_1 = vec4<f32>(0.0);
    var c47_0 = vec4<f32>(0.0); var c47_1 = vec4<f32>(0.0);
    var c48_0 = vec4<f32>(0.0); var c48_1 = vec4<f32>(0.0);
    var c49_0 = vec4<f32>(0.0); var c49_1 = vec4<f32>(0.0);
    var c50_0 = vec4<f32>(0.0); var c50_1 = vec4<f32>(0.0);
    var c51_0 = vec4<f32>(0.0); var c51_1 = vec4<f32>(0.0);
    var c52_0 = vec4<f32>(0.0); var c52_1 = vec4<f32>(0.0);
    var c53_0 = vec4<f32>(0.0); var c53_1 = vec4<f32>(0.0);
    var c54_0 = vec4<f32>(0.0); var c54_1 = vec4<f32>(0.0);
    var c55_0 = vec4<f32>(0.0); var c55_1 = vec4<f32>(0.0);
    var c56_0 = vec4<f32>(0.0); var c56_1 = vec4<f32>(0.0);
    var c57_0 = vec4<f32>(0.0); var c57_1 = vec4<f32>(0.0);
    var c58_0 = vec4<f32>(0.0); var c58_1 = vec4<f32>(0.0);
    var c59_0 = vec4<f32>(0.0); var c59_1 = vec4<f32>(0.0);
    var c60_0 = vec4<f32>(0.0); var c60_1 = vec4<f32>(0.0);
    var c61_0 = vec4<f32>(0.0); var c61_1 = vec4<f32>(0.0);
    var c62_0 = vec4<f32>(0.0); var c62_1 = vec4<f32>(0.0);
    var c63_0 = vec4<f32>(0.0); var c63_1 = vec4<f32>(0.0);
    let g0 = col_geo(q0 * 4u);
    let g1 = col_geo(q0 * 4u + 1u);
    let g2 = col_geo(q0 * 4u + 2u);
    let g3 = col_geo(q0 * 4u + 3u);
    let g4 = col_geo(q1 * 4u);
    let g5 = col_geo(q1 * 4u + 1u);
    let g6 = col_geo(q1 * 4u + 2u);
    let g7 = col_geo(q1 * 4u + 3u);
    let hw = p.h * p.w;
    var xo = 0u;
    var ky = 0u;
    var kx = 0u;
    for (var k = 0u; k < p.k; k++) {
        let a0 = ws[ra0 + k];
        let a1 = ws[ra1 + k];
        let a2 = ws[ra2 + k];
        let a3 = ws[ra3 + k];
        let a4 = ws[ra4 + k];
        let a5 = ws[ra5 + k];
        let a6 = ws[ra6 + k];
        let a7 = ws[ra7 + k];
        let b0 = vec4<f32>(xat(g0, xo, ky, kx), xat(g1, xo, ky, kx), xat(g2, xo, ky, kx),
                           xat(g3, xo, ky, kx));
        let b1 = vec4<f32>(xat(g4, xo, ky, kx), xat(g5, xo, ky, kx), xat(g6, xo, ky, kx),
                           xat(g7, xo, ky, kx));
        // k = (c·kh + ky)·kw + kx, stepped instead of divided.
        kx += 1u;
        if (kx == p.kw) {
            kx = 0u;
            ky += 1u;
            if (ky == p.kh) {
                ky = 0u;
                xo += hw;
            }
        }
        let s0 = subgroupBroadcast(a0, 0u);
        c0_0 += s0 * b0; c0_1 += s0 * b1;
        let s1 = subgroupBroadcast(a1, 0u);
        c1_0 += s1 * b0; c1_1 += s1 * b1;
        let s2 = subgroupBroadcast(a2, 0u);
        c2_0 += s2 * b0; c2_1 += s2 * b1;
        let s3 = subgroupBroadcast(a3, 0u);
        c3_0 += s3 * b0; c3_1 += s3 * b1;
        let s4 = subgroupBroadcast(a4, 0u);
        c4_0 += s4 * b0; c4_1 += s4 * b1;
        let s5 = subgroupBroadcast(a5, 0u);
        c5_0 += s5 * b0; c5_1 += s5 * b1;
        let s6 = subgroupBroadcast(a6, 0u);
        c6_0 += s6 * b0; c6_1 += s6 * b1;
        let s7 = subgroupBroadcast(a7, 0u);
        c7_0 += s7 * b0; c7_1 += s7 * b1;
        let s8 = subgroupBroadcast(a0, 1u);
        c8_0 += s8 * b0; c8_1 += s8 * b1;
        let s9 = subgroupBroadcast(a1, 1u);
        c9_0 += s9 * b0; c9_1 += s9 * b1;
        let s10 = subgroupBroadcast(a2, 1u);
        c10_0 += s10 * b0; c10_1 += s10 * b1;
        let s11 = subgroupBroadcast(a3, 1u);
        c11_0 += s11 * b0; c11_1 += s11 * b1;
        let s12 = subgroupBroadcast(a4, 1u);
        c12_0 += s12 * b0; c12_1 += s12 * b1;
        let s13 = subgroupBroadcast(a5, 1u);
        c13_0 += s13 * b0; c13_1 += s13 * b1;
        let s14 = subgroupBroadcast(a6, 1u);
        c14_0 += s14 * b0; c14_1 += s14 * b1;
        let s15 = subgroupBroadcast(a7, 1u);
        c15_0 += s15 * b0; c15_1 += s15 * b1;
        let s16 = subgroupBroadcast(a0, 2u);
        c16_0 += s16 * b0; c16_1 += s16 * b1;
        let s17 = subgroupBroadcast(a1, 2u);
        c17_0 += s17 * b0; c17_1 += s17 * b1;
        let s18 = subgroupBroadcast(a2, 2u);
        c18_0 += s18 * b0; c18_1 += s18 * b1;
        let s19 = subgroupBroadcast(a3, 2u);
        c19_0 += s19 * b0; c19_1 += s19 * b1;
        let s20 = subgroupBroadcast(a4, 2u);
        c20_0 += s20 * b0; c20_1 += s20 * b1;
        let s21 = subgroupBroadcast(a5, 2u);
        c21_0 += s21 * b0; c21_1 += s21 * b1;
        let s22 = subgroupBroadcast(a6, 2u);
        c22_0 += s22 * b0; c22_1 += s22 * b1;
        let s23 = subgroupBroadcast(a7, 2u);
        c23_0 += s23 * b0; c23_1 += s23 * b1;
        let s24 = subgroupBroadcast(a0, 3u);
        c24_0 += s24 * b0; c24_1 += s24 * b1;
        let s25 = subgroupBroadcast(a1, 3u);
        c25_0 += s25 * b0; c25_1 += s25 * b1;
        let s26 = subgroupBroadcast(a2, 3u);
        c26_0 += s26 * b0; c26_1 += s26 * b1;
        let s27 = subgroupBroadcast(a3, 3u);
        c27_0 += s27 * b0; c27_1 += s27 * b1;
        let s28 = subgroupBroadcast(a4, 3u);
        c28_0 += s28 * b0; c28_1 += s28 * b1;
        let s29 = subgroupBroadcast(a5, 3u);
        c29_0 += s29 * b0; c29_1 += s29 * b1;
        let s30 = subgroupBroadcast(a6, 3u);
        c30_0 += s30 * b0; c30_1 += s30 * b1;
        let s31 = subgroupBroadcast(a7, 3u);
        c31_0 += s31 * b0; c31_1 += s31 * b1;
        let s32 = subgroupBroadcast(a0, 4u);
        c32_0 += s32 * b0; c32_1 += s32 * b1;
        let s33 = subgroupBroadcast(a1, 4u);
        c33_0 += s33 * b0; c33_1 += s33 * b1;
        let s34 = subgroupBroadcast(a2, 4u);
        c34_0 += s34 * b0; c34_1 += s34 * b1;
        let s35 = subgroupBroadcast(a3, 4u);
        c35_0 += s35 * b0; c35_1 += s35 * b1;
        let s36 = subgroupBroadcast(a4, 4u);
        c36_0 += s36 * b0; c36_1 += s36 * b1;
        let s37 = subgroupBroadcast(a5, 4u);
        c37_0 += s37 * b0; c37_1 += s37 * b1;
        let s38 = subgroupBroadcast(a6, 4u);
        c38_0 += s38 * b0; c38_1 += s38 * b1;
        let s39 = subgroupBroadcast(a7, 4u);
        c39_0 += s39 * b0; c39_1 += s39 * b1;
        let s40 = subgroupBroadcast(a0, 5u);
        c40_0 += s40 * b0; c40_1 += s40 * b1;
        let s41 = subgroupBroadcast(a1, 5u);
        c41_0 += s41 * b0; c41_1 += s41 * b1;
        let s42 = subgroupBroadcast(a2, 5u);
        c42_0 += s42 * b0; c42_1 += s42 * b1;
        let s43 = subgroupBroadcast(a3, 5u);
        c43_0 += s43 * b0; c43_1 += s43 * b1;
        let s44 = subgroupBroadcast(a4, 5u);
        c44_0 += s44 * b0; c44_1 += s44 * b1;
        let s45 = subgroupBroadcast(a5, 5u);
        c45_0 += s45 * b0; c45_1 += s45 * b1;
        let s46 = subgroupBroadcast(a6, 5u);
        c46_0 += s46 * b0; c46_1 += s46 * b1;
        let s47 = subgroupBroadcast(a7, 5u);
        c47_0 += s47 * b0; c47_1 += s47 * b1;
        let s48 = subgroupBroadcast(a0, 6u);
        c48_0 += s48 * b0; c48_1 += s48 * b1;
        let s49 = subgroupBroadcast(a1, 6u);
        c49_0 += s49 * b0; c49_1 += s49 * b1;
        let s50 = subgroupBroadcast(a2, 6u);
        c50_0 += s50 * b0; c50_1 += s50 * b1;
        let s51 = subgroupBroadcast(a3, 6u);
        c51_0 += s51 * b0; c51_1 += s51 * b1;
        let s52 = subgroupBroadcast(a4, 6u);
        c52_0 += s52 * b0; c52_1 += s52 * b1;
        let s53 = subgroupBroadcast(a5, 6u);
        c53_0 += s53 * b0; c53_1 += s53 * b1;
        let s54 = subgroupBroadcast(a6, 6u);
        c54_0 += s54 * b0; c54_1 += s54 * b1;
        let s55 = subgroupBroadcast(a7, 6u);
        c55_0 += s55 * b0; c55_1 += s55 * b1;
        let s56 = subgroupBroadcast(a0, 7u);
        c56_0 += s56 * b0; c56_1 += s56 * b1;
        let s57 = subgroupBroadcast(a1, 7u);
        c57_0 += s57 * b0; c57_1 += s57 * b1;
        let s58 = subgroupBroadcast(a2, 7u);
        c58_0 += s58 * b0; c58_1 += s58 * b1;
        let s59 = subgroupBroadcast(a3, 7u);
        c59_0 += s59 * b0; c59_1 += s59 * b1;
        let s60 = subgroupBroadcast(a4, 7u);
        c60_0 += s60 * b0; c60_1 += s60 * b1;
        let s61 = subgroupBroadcast(a5, 7u);
        c61_0 += s61 * b0; c61_1 += s61 * b1;
        let s62 = subgroupBroadcast(a6, 7u);
        c62_0 += s62 * b0; c62_1 += s62 * b1;
        let s63 = subgroupBroadcast(a7, 7u);
        c63_0 += s63 * b0; c63_1 += s63 * b1;
    }
    if (q0 < p.nq) {
        let j = q0 * 4u;
        let base = vec4<u32>(col_base(j), col_base(j + 1u), col_base(j + 2u), col_base(j + 3u));
        store4(co0 + 0u, c0_0, base);
        store4(co0 + 1u, c1_0, base);
        store4(co0 + 2u, c2_0, base);
        store4(co0 + 3u, c3_0, base);
        store4(co0 + 4u, c4_0, base);
        store4(co0 + 5u, c5_0, base);
        store4(co0 + 6u, c6_0, base);
        store4(co0 + 7u, c7_0, base);
        store4(co0 + 8u, c8_0, base);
        store4(co0 + 9u, c9_0, base);
        store4(co0 + 10u, c10_0, base);
        store4(co0 + 11u, c11_0, base);
        store4(co0 + 12u, c12_0, base);
        store4(co0 + 13u, c13_0, base);
        store4(co0 + 14u, c14_0, base);
        store4(co0 + 15u, c15_0, base);
        store4(co0 + 16u, c16_0, base);
        store4(co0 + 17u, c17_0, base);
        store4(co0 + 18u, c18_0, base);
        store4(co0 + 19u, c19_0, base);
        store4(co0 + 20u, c20_0, base);
        store4(co0 + 21u, c21_0, base);
        store4(co0 + 22u, c22_0, base);
        store4(co0 + 23u, c23_0, base);
        store4(co0 + 24u, c24_0, base);
        store4(co0 + 25u, c25_0, base);
        store4(co0 + 26u, c26_0, base);
        store4(co0 + 27u, c27_0, base);
        store4(co0 + 28u, c28_0, base);
        store4(co0 + 29u, c29_0, base);
        store4(co0 + 30u, c30_0, base);
        store4(co0 + 31u, c31_0, base);
        store4(co0 + 32u, c32_0, base);
        store4(co0 + 33u, c33_0, base);
        store4(co0 + 34u, c34_0, base);
        store4(co0 + 35u, c35_0, base);
        store4(co0 + 36u, c36_0, base);
        store4(co0 + 37u, c37_0, base);
        store4(co0 + 38u, c38_0, base);
        store4(co0 + 39u, c39_0, base);
        store4(co0 + 40u, c40_0, base);
        store4(co0 + 41u, c41_0, base);
        store4(co0 + 42u, c42_0, base);
        store4(co0 + 43u, c43_0, base);
        store4(co0 + 44u, c44_0, base);
        store4(co0 + 45u, c45_0, base);
        store4(co0 + 46u, c46_0, base);
        store4(co0 + 47u, c47_0, base);
        store4(co0 + 48u, c48_0, base);
        store4(co0 + 49u, c49_0, base);
        store4(co0 + 50u, c50_0, base);
        store4(co0 + 51u, c51_0, base);
        store4(co0 + 52u, c52_0, base);
        store4(co0 + 53u, c53_0, base);
        store4(co0 + 54u, c54_0, base);
        store4(co0 + 55u, c55_0, base);
        store4(co0 + 56u, c56_0, base);
        store4(co0 + 57u, c57_0, base);
        store4(co0 + 58u, c58_0, base);
        store4(co0 + 59u, c59_0, base);
        store4(co0 + 60u, c60_0, base);
        store4(co0 + 61u, c61_0, base);
        store4(co0 + 62u, c62_0, base);
        store4(co0 + 63u, c63_0, base);
    }
    if (q1 < p.nq) {
        let j = q1 * 4u;
        let base = vec4<u32>(col_base(j), col_base(j + 1u), col_base(j + 2u), col_base(j + 3u));
        store4(co0 + 0u, c0_1, base);
        store4(co0 + 1u, c1_1, base);
        store4(co0 + 2u, c2_1, base);
        store4(co0 + 3u, c3_1, base);
        store4(co0 + 4u, c4_1, base);
        store4(co0 + 5u, c5_1, base);
        store4(co0 + 6u, c6_1, base);
        store4(co0 + 7u, c7_1, base);
        store4(co0 + 8u, c8_1, base);
        store4(co0 + 9u, c9_1, base);
        store4(co0 + 10u, c10_1, base);
        store4(co0 + 11u, c11_1, base);
        store4(co0 + 12u, c12_1, base);
        store4(co0 + 13u, c13_1, base);
        store4(co0 + 14u, c14_1, base);
        store4(co0 + 15u, c15_1, base);
        store4(co0 + 16u, c16_1, base);
        store4(co0 + 17u, c17_1, base);
        store4(co0 + 18u, c18_1, base);
        store4(co0 + 19u, c19_1, base);
        store4(co0 + 20u, c20_1, base);
        store4(co0 + 21u, c21_1, base);
        store4(co0 + 22u, c22_1, base);
        store4(co0 + 23u, c23_1, base);
        store4(co0 + 24u, c24_1, base);
        store4(co0 + 25u, c25_1, base);
        store4(co0 + 26u, c26_1, base);
        store4(co0 + 27u, c27_1, base);
        store4(co0 + 28u, c28_1, base);
        store4(co0 + 29u, c29_1, base);
        store4(co0 + 30u, c30_1, base);
        store4(co0 + 31u, c31_1, base);
        store4(co0 + 32u, c32_1, base);
        store4(co0 + 33u, c33_1, base);
        store4(co0 + 34u, c34_1, base);
        store4(co0 + 35u, c35_1, base);
        store4(co0 + 36u, c36_1, base);
        store4(co0 + 37u, c37_1, base);
        store4(co0 + 38u, c38_1, base);
        store4(co0 + 39u, c39_1, base);
        store4(co0 + 40u, c40_1, base);
        store4(co0 + 41u, c41_1, base);
        store4(co0 + 42u, c42_1, base);
        store4(co0 + 43u, c43_1, base);
        store4(co0 + 44u, c44_1, base);
        store4(co0 + 45u, c45_1, base);
        store4(co0 + 46u, c46_1, base);
        store4(co0 + 47u, c47_1, base);
        store4(co0 + 48u, c48_1, base);
        store4(co0 + 49u, c49_1, base);
        store4(co0 + 50u, c50_1, base);
        store4(co0 + 51u, c51_1, base);
        store4(co0 + 52u, c52_1, base);
        store4(co0 + 53u, c53_1, base);
        store4(co0 + 54u, c54_1, base);
        store4(co0 + 55u, c55_1, base);
        store4(co0 + 56u, c56_1, base);
        store4(co0 + 57u, c57_1, base);
        store4(co0 + 58u, c58_1, base);
        store4(co0 + 59u, c59_1, base);
        store4(co0 + 60u, c60_1, base);
        store4(co0 + 61u, c61_1, base);
        store4(co0 + 62u, c62_1, base);
        store4(co0 + 63u, c63_1, base);
    }
}
