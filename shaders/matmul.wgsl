// Matrix products with a fused epilogue: out = act(A·B + bias[col] + row_bias[row]) + residual.
//
// A is row-major [batch?, M, K]. B element (k, n) of batch bi lives at
// bi·b_bs + k·ldb_k + n·ldb_n, so B [K, N] (ldb_k = N, ldb_n = 1) and the PyTorch weight layout
// W [N, K] (ldb_k = 1, ldb_n = K) share every kernel. A batch stride of 0 broadcasts an operand.
// The output is contiguous [batch, M, N]. Every kernel covers a 64×64 output tile per workgroup;
// the host splits the tile count over a 2-D grid (linear id wg.x + wg.y·num_workgroups.x).
//
// Three kernels:
//  - mm_tiled: 16×16 invocations, shared-memory tiles of A and B (GPUs, where barriers are cheap).
//  - mm_register: 64 invocations, 8×8 outputs each, no workgroup memory (CPU adapters).
//  - mm_subgroup (below the marker, compiled as its own module because it needs subgroups): one
//    subgroup of 8 lanes per 64×64 tile. On lavapipe every buffer load costs a scalar loop over
//    the 8 SIMD lanes (~25 cycles per lane and component) while arithmetic is cheap, so what
//    matters is FMAs per loaded component: here each lane loads one A value per row it owns and
//    one B value per 8 columns, and subgroupBroadcast (a register shuffle there) shares the B
//    values among the lanes: 16 loads feed 512 FMAs per lane and k, against 16 loads for 64 FMAs
//    in mm_register.
// Out-of-range rows and columns load clamped (valid) addresses and are never stored, so the hot
// loops carry no bounds branches.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    tiles_m: u32,
    tiles_n: u32,
    a_bs: u32,   // A batch stride (0 = broadcast)
    b_bs: u32,   // B batch stride (0 = broadcast)
    ldb_k: u32,
    ldb_n: u32,
    _pad0: u32,
    _pad1: u32,
}

// Epilogue switches: pipeline constants, so disabled parts cost nothing in the kernels.
override HAS_BIAS: bool = false;
override HAS_ROW_BIAS: bool = false;
override HAS_RES: bool = false;
override ACT: u32 = 0u; // 0 none, 1 relu, 2 gelu (exact erf)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> row_bias: array<f32>;
@group(0) @binding(5) var<storage, read> res: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

// erf with |error| < 1.2e-7 (Numerical Recipes erfc, Chebyshev fit), enough for exact-erf GELU in f32.
fn erf_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

// v is the raw dot product; bias_v and row_v are only read when enabled; o indexes the output.
fn epilogue(v: f32, bias_v: f32, row_v: f32, o: u32) -> f32 {
    var x = v;
    if (HAS_BIAS) {
        x += bias_v;
    }
    if (HAS_ROW_BIAS) {
        x += row_v;
    }
    if (ACT == 1u) {
        x = max(x, 0.0);
    } else if (ACT == 2u) {
        x = 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752));
    }
    if (HAS_RES) {
        x += res[o];
    }
    return x;
}

struct Tile {
    valid: bool, // false for the padding workgroups of a 2-D grid
    bi: u32,
    m0: u32,
    n0: u32,
}

fn tile_of(wg: vec3<u32>, nw: vec3<u32>) -> Tile {
    let id = wg.x + wg.y * nw.x;
    let per_batch = p.tiles_m * p.tiles_n;
    var t: Tile;
    t.valid = id < per_batch * p.batch;
    let i = min(id, per_batch * p.batch - 1u);
    t.bi = i / per_batch;
    let r = i % per_batch;
    t.m0 = (r / p.tiles_n) * 64u;
    t.n0 = (r % p.tiles_n) * 64u;
    return t;
}

// Guarded store of one output element; loads of bias and row bias are clamped into range.
fn store_one(v: f32, row: u32, col: u32, t: Tile) {
    if (t.valid && row < p.m && col < p.n) {
        var bv = 0.0;
        if (HAS_BIAS) {
            bv = bias[col];
        }
        var rv = 0.0;
        if (HAS_ROW_BIAS) {
            rv = row_bias[row];
        }
        let o = (t.bi * p.m + row) * p.n + col;
        out[o] = epilogue(v, bv, rv, o);
    }
}

// ---------------------------------------------------------------------------------------------
// mm_tiled: 16×16 invocations; invocation (tx, ty) owns rows ty + 16i and columns tx + 16j of the
// tile (strided so that neighbouring invocations read neighbouring shared-memory words).

const BK: u32 = 16u;
var<workgroup> sa: array<f32, 1024>; // [BK][64], k-major
var<workgroup> sb: array<f32, 1024>; // [BK][64], k-major

@compute @workgroup_size(16, 16)
fn mm_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let t = tile_of(wg, nw);
    let abase = t.bi * p.a_bs;
    let bbase = t.bi * p.b_bs;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var q = 0u; q < 4u; q++) {
            // A: consecutive invocations walk k (contiguous in memory).
            let ia = li + q * 256u;
            let am = ia / BK;
            let ak = ia % BK;
            let row = t.m0 + am;
            let ka = k0 + ak;
            var av = 0.0;
            if (row < p.m && ka < p.k) {
                av = a[abase + row * p.k + ka];
            }
            sa[ak * 64u + am] = av;
            // B: consecutive invocations walk n, or k when B is stored transposed.
            let ib = li + q * 256u;
            var bk: u32;
            var bn: u32;
            if (p.ldb_n == 1u) {
                bk = ib / 64u;
                bn = ib % 64u;
            } else {
                bn = ib / BK;
                bk = ib % BK;
            }
            let col = t.n0 + bn;
            let kb = k0 + bk;
            var bv = 0.0;
            if (col < p.n && kb < p.k) {
                bv = b[bbase + kb * p.ldb_k + col * p.ldb_n];
            }
            sb[bk * 64u + bn] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let av = vec4(sa[kk * 64u + lid.y], sa[kk * 64u + lid.y + 16u],
                          sa[kk * 64u + lid.y + 32u], sa[kk * 64u + lid.y + 48u]);
            let bv = vec4(sb[kk * 64u + lid.x], sb[kk * 64u + lid.x + 16u],
                          sb[kk * 64u + lid.x + 32u], sb[kk * 64u + lid.x + 48u]);
            acc[0] = fma(vec4(av.x), bv, acc[0]);
            acc[1] = fma(vec4(av.y), bv, acc[1]);
            acc[2] = fma(vec4(av.z), bv, acc[2]);
            acc[3] = fma(vec4(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = t.m0 + lid.y + 16u * i;
        let v = acc[i];
        store_one(v.x, row, t.n0 + lid.x, t);
        store_one(v.y, row, t.n0 + lid.x + 16u, t);
        store_one(v.z, row, t.n0 + lid.x + 32u, t);
        store_one(v.w, row, t.n0 + lid.x + 48u, t);
    }
}

// ---------------------------------------------------------------------------------------------
// mm_register: 64 invocations; invocation (lx, ly) = (li % 8, li / 8) owns rows ly + 8i and
// columns lx + 8j of the tile (i, j < 8). Per k: 8 + 8 loads, 64 FMAs.

@compute @workgroup_size(64)
fn mm_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let t = tile_of(wg, nw);
    let lx = li % 8u;
    let ly = li / 8u;
    let abase = t.bi * p.a_bs;
    let bbase = t.bi * p.b_bs;
    let mmax = p.m - 1u;
    let nmax = p.n - 1u;
    let ar0 = abase + min(t.m0 + ly + 0u, mmax) * p.k;
    let ar1 = abase + min(t.m0 + ly + 8u, mmax) * p.k;
    let ar2 = abase + min(t.m0 + ly + 16u, mmax) * p.k;
    let ar3 = abase + min(t.m0 + ly + 24u, mmax) * p.k;
    let ar4 = abase + min(t.m0 + ly + 32u, mmax) * p.k;
    let ar5 = abase + min(t.m0 + ly + 40u, mmax) * p.k;
    let ar6 = abase + min(t.m0 + ly + 48u, mmax) * p.k;
    let ar7 = abase + min(t.m0 + ly + 56u, mmax) * p.k;
    let bc0 = bbase + min(t.n0 + lx + 0u, nmax) * p.ldb_n;
    let bc1 = bbase + min(t.n0 + lx + 8u, nmax) * p.ldb_n;
    let bc2 = bbase + min(t.n0 + lx + 16u, nmax) * p.ldb_n;
    let bc3 = bbase + min(t.n0 + lx + 24u, nmax) * p.ldb_n;
    let bc4 = bbase + min(t.n0 + lx + 32u, nmax) * p.ldb_n;
    let bc5 = bbase + min(t.n0 + lx + 40u, nmax) * p.ldb_n;
    let bc6 = bbase + min(t.n0 + lx + 48u, nmax) * p.ldb_n;
    let bc7 = bbase + min(t.n0 + lx + 56u, nmax) * p.ldb_n;
    var c0l = vec4<f32>(0.0);
    var c0h = vec4<f32>(0.0);
    var c1l = vec4<f32>(0.0);
    var c1h = vec4<f32>(0.0);
    var c2l = vec4<f32>(0.0);
    var c2h = vec4<f32>(0.0);
    var c3l = vec4<f32>(0.0);
    var c3h = vec4<f32>(0.0);
    var c4l = vec4<f32>(0.0);
    var c4h = vec4<f32>(0.0);
    var c5l = vec4<f32>(0.0);
    var c5h = vec4<f32>(0.0);
    var c6l = vec4<f32>(0.0);
    var c6h = vec4<f32>(0.0);
    var c7l = vec4<f32>(0.0);
    var c7h = vec4<f32>(0.0);
    var kb = 0u;
    for (var k = 0u; k < p.k; k++) {
        let b0 = b[kb + bc0];
        let b1 = b[kb + bc1];
        let b2 = b[kb + bc2];
        let b3 = b[kb + bc3];
        let b4 = b[kb + bc4];
        let b5 = b[kb + bc5];
        let b6 = b[kb + bc6];
        let b7 = b[kb + bc7];
        let bl = vec4(b0, b1, b2, b3);
        let bh = vec4(b4, b5, b6, b7);
        let a0 = vec4(a[ar0 + k]);
        c0l = fma(a0, bl, c0l);
        c0h = fma(a0, bh, c0h);
        let a1 = vec4(a[ar1 + k]);
        c1l = fma(a1, bl, c1l);
        c1h = fma(a1, bh, c1h);
        let a2 = vec4(a[ar2 + k]);
        c2l = fma(a2, bl, c2l);
        c2h = fma(a2, bh, c2h);
        let a3 = vec4(a[ar3 + k]);
        c3l = fma(a3, bl, c3l);
        c3h = fma(a3, bh, c3h);
        let a4 = vec4(a[ar4 + k]);
        c4l = fma(a4, bl, c4l);
        c4h = fma(a4, bh, c4h);
        let a5 = vec4(a[ar5 + k]);
        c5l = fma(a5, bl, c5l);
        c5h = fma(a5, bh, c5h);
        let a6 = vec4(a[ar6 + k]);
        c6l = fma(a6, bl, c6l);
        c6h = fma(a6, bh, c6h);
        let a7 = vec4(a[ar7 + k]);
        c7l = fma(a7, bl, c7l);
        c7h = fma(a7, bh, c7h);
        kb += p.ldb_k;
    }
    store8(c0l, c0h, t.m0 + ly + 0u, t.n0 + lx, 8u, t);
    store8(c1l, c1h, t.m0 + ly + 8u, t.n0 + lx, 8u, t);
    store8(c2l, c2h, t.m0 + ly + 16u, t.n0 + lx, 8u, t);
    store8(c3l, c3h, t.m0 + ly + 24u, t.n0 + lx, 8u, t);
    store8(c4l, c4h, t.m0 + ly + 32u, t.n0 + lx, 8u, t);
    store8(c5l, c5h, t.m0 + ly + 40u, t.n0 + lx, 8u, t);
    store8(c6l, c6h, t.m0 + ly + 48u, t.n0 + lx, 8u, t);
    store8(c7l, c7h, t.m0 + ly + 56u, t.n0 + lx, 8u, t);
}

// Stores 8 columns col0 + s·q (q < 8) of one row.
fn store8(lo: vec4<f32>, hi: vec4<f32>, row: u32, col0: u32, s: u32, t: Tile) {
    store_one(lo.x, row, col0, t);
    store_one(lo.y, row, col0 + s, t);
    store_one(lo.z, row, col0 + 2u * s, t);
    store_one(lo.w, row, col0 + 3u * s, t);
    store_one(hi.x, row, col0 + 4u * s, t);
    store_one(hi.y, row, col0 + 5u * s, t);
    store_one(hi.z, row, col0 + 6u * s, t);
    store_one(hi.w, row, col0 + 7u * s, t);
}

// @@subgroup: everything below needs subgroups; the host compiles the file a second time with
// them enabled and only then uses these entry points.
// ---------------------------------------------------------------------------------------------
// mm_subgroup: one subgroup of exactly 8 lanes per workgroup (the host checks the adapter's
// subgroup size). Lane l owns rows l + 8i (i < 8) and all 64 columns of the tile. Per k it loads
// its 8 A values and B values for columns 8j + l (j < 8); broadcasting lane q's B value j gives
// every lane column 8j + q.

@compute @workgroup_size(8)
fn mm_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
               @builtin(subgroup_invocation_id) l: u32) {
    let t = tile_of(wg, nw);
    let abase = t.bi * p.a_bs;
    let bbase = t.bi * p.b_bs;
    let mmax = p.m - 1u;
    let nmax = p.n - 1u;
    let ar0 = abase + min(t.m0 + l + 0u, mmax) * p.k;
    let ar1 = abase + min(t.m0 + l + 8u, mmax) * p.k;
    let ar2 = abase + min(t.m0 + l + 16u, mmax) * p.k;
    let ar3 = abase + min(t.m0 + l + 24u, mmax) * p.k;
    let ar4 = abase + min(t.m0 + l + 32u, mmax) * p.k;
    let ar5 = abase + min(t.m0 + l + 40u, mmax) * p.k;
    let ar6 = abase + min(t.m0 + l + 48u, mmax) * p.k;
    let ar7 = abase + min(t.m0 + l + 56u, mmax) * p.k;
    let bc0 = bbase + min(t.n0 + 0u + l, nmax) * p.ldb_n;
    let bc1 = bbase + min(t.n0 + 8u + l, nmax) * p.ldb_n;
    let bc2 = bbase + min(t.n0 + 16u + l, nmax) * p.ldb_n;
    let bc3 = bbase + min(t.n0 + 24u + l, nmax) * p.ldb_n;
    let bc4 = bbase + min(t.n0 + 32u + l, nmax) * p.ldb_n;
    let bc5 = bbase + min(t.n0 + 40u + l, nmax) * p.ldb_n;
    let bc6 = bbase + min(t.n0 + 48u + l, nmax) * p.ldb_n;
    let bc7 = bbase + min(t.n0 + 56u + l, nmax) * p.ldb_n;
    var c0_0l = vec4<f32>(0.0);
    var c0_0h = vec4<f32>(0.0);
    var c0_1l = vec4<f32>(0.0);
    var c0_1h = vec4<f32>(0.0);
    var c0_2l = vec4<f32>(0.0);
    var c0_2h = vec4<f32>(0.0);
    var c0_3l = vec4<f32>(0.0);
    var c0_3h = vec4<f32>(0.0);
    var c0_4l = vec4<f32>(0.0);
    var c0_4h = vec4<f32>(0.0);
    var c0_5l = vec4<f32>(0.0);
    var c0_5h = vec4<f32>(0.0);
    var c0_6l = vec4<f32>(0.0);
    var c0_6h = vec4<f32>(0.0);
    var c0_7l = vec4<f32>(0.0);
    var c0_7h = vec4<f32>(0.0);
    var c1_0l = vec4<f32>(0.0);
    var c1_0h = vec4<f32>(0.0);
    var c1_1l = vec4<f32>(0.0);
    var c1_1h = vec4<f32>(0.0);
    var c1_2l = vec4<f32>(0.0);
    var c1_2h = vec4<f32>(0.0);
    var c1_3l = vec4<f32>(0.0);
    var c1_3h = vec4<f32>(0.0);
    var c1_4l = vec4<f32>(0.0);
    var c1_4h = vec4<f32>(0.0);
    var c1_5l = vec4<f32>(0.0);
    var c1_5h = vec4<f32>(0.0);
    var c1_6l = vec4<f32>(0.0);
    var c1_6h = vec4<f32>(0.0);
    var c1_7l = vec4<f32>(0.0);
    var c1_7h = vec4<f32>(0.0);
    var c2_0l = vec4<f32>(0.0);
    var c2_0h = vec4<f32>(0.0);
    var c2_1l = vec4<f32>(0.0);
    var c2_1h = vec4<f32>(0.0);
    var c2_2l = vec4<f32>(0.0);
    var c2_2h = vec4<f32>(0.0);
    var c2_3l = vec4<f32>(0.0);
    var c2_3h = vec4<f32>(0.0);
    var c2_4l = vec4<f32>(0.0);
    var c2_4h = vec4<f32>(0.0);
    var c2_5l = vec4<f32>(0.0);
    var c2_5h = vec4<f32>(0.0);
    var c2_6l = vec4<f32>(0.0);
    var c2_6h = vec4<f32>(0.0);
    var c2_7l = vec4<f32>(0.0);
    var c2_7h = vec4<f32>(0.0);
    var c3_0l = vec4<f32>(0.0);
    var c3_0h = vec4<f32>(0.0);
    var c3_1l = vec4<f32>(0.0);
    var c3_1h = vec4<f32>(0.0);
    var c3_2l = vec4<f32>(0.0);
    var c3_2h = vec4<f32>(0.0);
    var c3_3l = vec4<f32>(0.0);
    var c3_3h = vec4<f32>(0.0);
    var c3_4l = vec4<f32>(0.0);
    var c3_4h = vec4<f32>(0.0);
    var c3_5l = vec4<f32>(0.0);
    var c3_5h = vec4<f32>(0.0);
    var c3_6l = vec4<f32>(0.0);
    var c3_6h = vec4<f32>(0.0);
    var c3_7l = vec4<f32>(0.0);
    var c3_7h = vec4<f32>(0.0);
    var c4_0l = vec4<f32>(0.0);
    var c4_0h = vec4<f32>(0.0);
    var c4_1l = vec4<f32>(0.0);
    var c4_1h = vec4<f32>(0.0);
    var c4_2l = vec4<f32>(0.0);
    var c4_2h = vec4<f32>(0.0);
    var c4_3l = vec4<f32>(0.0);
    var c4_3h = vec4<f32>(0.0);
    var c4_4l = vec4<f32>(0.0);
    var c4_4h = vec4<f32>(0.0);
    var c4_5l = vec4<f32>(0.0);
    var c4_5h = vec4<f32>(0.0);
    var c4_6l = vec4<f32>(0.0);
    var c4_6h = vec4<f32>(0.0);
    var c4_7l = vec4<f32>(0.0);
    var c4_7h = vec4<f32>(0.0);
    var c5_0l = vec4<f32>(0.0);
    var c5_0h = vec4<f32>(0.0);
    var c5_1l = vec4<f32>(0.0);
    var c5_1h = vec4<f32>(0.0);
    var c5_2l = vec4<f32>(0.0);
    var c5_2h = vec4<f32>(0.0);
    var c5_3l = vec4<f32>(0.0);
    var c5_3h = vec4<f32>(0.0);
    var c5_4l = vec4<f32>(0.0);
    var c5_4h = vec4<f32>(0.0);
    var c5_5l = vec4<f32>(0.0);
    var c5_5h = vec4<f32>(0.0);
    var c5_6l = vec4<f32>(0.0);
    var c5_6h = vec4<f32>(0.0);
    var c5_7l = vec4<f32>(0.0);
    var c5_7h = vec4<f32>(0.0);
    var c6_0l = vec4<f32>(0.0);
    var c6_0h = vec4<f32>(0.0);
    var c6_1l = vec4<f32>(0.0);
    var c6_1h = vec4<f32>(0.0);
    var c6_2l = vec4<f32>(0.0);
    var c6_2h = vec4<f32>(0.0);
    var c6_3l = vec4<f32>(0.0);
    var c6_3h = vec4<f32>(0.0);
    var c6_4l = vec4<f32>(0.0);
    var c6_4h = vec4<f32>(0.0);
    var c6_5l = vec4<f32>(0.0);
    var c6_5h = vec4<f32>(0.0);
    var c6_6l = vec4<f32>(0.0);
    var c6_6h = vec4<f32>(0.0);
    var c6_7l = vec4<f32>(0.0);
    var c6_7h = vec4<f32>(0.0);
    var c7_0l = vec4<f32>(0.0);
    var c7_0h = vec4<f32>(0.0);
    var c7_1l = vec4<f32>(0.0);
    var c7_1h = vec4<f32>(0.0);
    var c7_2l = vec4<f32>(0.0);
    var c7_2h = vec4<f32>(0.0);
    var c7_3l = vec4<f32>(0.0);
    var c7_3h = vec4<f32>(0.0);
    var c7_4l = vec4<f32>(0.0);
    var c7_4h = vec4<f32>(0.0);
    var c7_5l = vec4<f32>(0.0);
    var c7_5h = vec4<f32>(0.0);
    var c7_6l = vec4<f32>(0.0);
    var c7_6h = vec4<f32>(0.0);
    var c7_7l = vec4<f32>(0.0);
    var c7_7h = vec4<f32>(0.0);
    var kb = 0u;
    for (var k = 0u; k < p.k; k++) {
        let a0 = vec4(a[ar0 + k]);
        let a1 = vec4(a[ar1 + k]);
        let a2 = vec4(a[ar2 + k]);
        let a3 = vec4(a[ar3 + k]);
        let a4 = vec4(a[ar4 + k]);
        let a5 = vec4(a[ar5 + k]);
        let a6 = vec4(a[ar6 + k]);
        let a7 = vec4(a[ar7 + k]);
        let b0 = b[kb + bc0];
        let b1 = b[kb + bc1];
        let b2 = b[kb + bc2];
        let b3 = b[kb + bc3];
        let b4 = b[kb + bc4];
        let b5 = b[kb + bc5];
        let b6 = b[kb + bc6];
        let b7 = b[kb + bc7];
        let b0l = vec4(subgroupBroadcast(b0, 0u), subgroupBroadcast(b0, 1u), subgroupBroadcast(b0, 2u), subgroupBroadcast(b0, 3u));
        let b0h = vec4(subgroupBroadcast(b0, 4u), subgroupBroadcast(b0, 5u), subgroupBroadcast(b0, 6u), subgroupBroadcast(b0, 7u));
        c0_0l = fma(a0, b0l, c0_0l);
        c0_0h = fma(a0, b0h, c0_0h);
        c1_0l = fma(a1, b0l, c1_0l);
        c1_0h = fma(a1, b0h, c1_0h);
        c2_0l = fma(a2, b0l, c2_0l);
        c2_0h = fma(a2, b0h, c2_0h);
        c3_0l = fma(a3, b0l, c3_0l);
        c3_0h = fma(a3, b0h, c3_0h);
        c4_0l = fma(a4, b0l, c4_0l);
        c4_0h = fma(a4, b0h, c4_0h);
        c5_0l = fma(a5, b0l, c5_0l);
        c5_0h = fma(a5, b0h, c5_0h);
        c6_0l = fma(a6, b0l, c6_0l);
        c6_0h = fma(a6, b0h, c6_0h);
        c7_0l = fma(a7, b0l, c7_0l);
        c7_0h = fma(a7, b0h, c7_0h);
        let b1l = vec4(subgroupBroadcast(b1, 0u), subgroupBroadcast(b1, 1u), subgroupBroadcast(b1, 2u), subgroupBroadcast(b1, 3u));
        let b1h = vec4(subgroupBroadcast(b1, 4u), subgroupBroadcast(b1, 5u), subgroupBroadcast(b1, 6u), subgroupBroadcast(b1, 7u));
        c0_1l = fma(a0, b1l, c0_1l);
        c0_1h = fma(a0, b1h, c0_1h);
        c1_1l = fma(a1, b1l, c1_1l);
        c1_1h = fma(a1, b1h, c1_1h);
        c2_1l = fma(a2, b1l, c2_1l);
        c2_1h = fma(a2, b1h, c2_1h);
        c3_1l = fma(a3, b1l, c3_1l);
        c3_1h = fma(a3, b1h, c3_1h);
        c4_1l = fma(a4, b1l, c4_1l);
        c4_1h = fma(a4, b1h, c4_1h);
        c5_1l = fma(a5, b1l, c5_1l);
        c5_1h = fma(a5, b1h, c5_1h);
        c6_1l = fma(a6, b1l, c6_1l);
        c6_1h = fma(a6, b1h, c6_1h);
        c7_1l = fma(a7, b1l, c7_1l);
        c7_1h = fma(a7, b1h, c7_1h);
        let b2l = vec4(subgroupBroadcast(b2, 0u), subgroupBroadcast(b2, 1u), subgroupBroadcast(b2, 2u), subgroupBroadcast(b2, 3u));
        let b2h = vec4(subgroupBroadcast(b2, 4u), subgroupBroadcast(b2, 5u), subgroupBroadcast(b2, 6u), subgroupBroadcast(b2, 7u));
        c0_2l = fma(a0, b2l, c0_2l);
        c0_2h = fma(a0, b2h, c0_2h);
        c1_2l = fma(a1, b2l, c1_2l);
        c1_2h = fma(a1, b2h, c1_2h);
        c2_2l = fma(a2, b2l, c2_2l);
        c2_2h = fma(a2, b2h, c2_2h);
        c3_2l = fma(a3, b2l, c3_2l);
        c3_2h = fma(a3, b2h, c3_2h);
        c4_2l = fma(a4, b2l, c4_2l);
        c4_2h = fma(a4, b2h, c4_2h);
        c5_2l = fma(a5, b2l, c5_2l);
        c5_2h = fma(a5, b2h, c5_2h);
        c6_2l = fma(a6, b2l, c6_2l);
        c6_2h = fma(a6, b2h, c6_2h);
        c7_2l = fma(a7, b2l, c7_2l);
        c7_2h = fma(a7, b2h, c7_2h);
        let b3l = vec4(subgroupBroadcast(b3, 0u), subgroupBroadcast(b3, 1u), subgroupBroadcast(b3, 2u), subgroupBroadcast(b3, 3u));
        let b3h = vec4(subgroupBroadcast(b3, 4u), subgroupBroadcast(b3, 5u), subgroupBroadcast(b3, 6u), subgroupBroadcast(b3, 7u));
        c0_3l = fma(a0, b3l, c0_3l);
        c0_3h = fma(a0, b3h, c0_3h);
        c1_3l = fma(a1, b3l, c1_3l);
        c1_3h = fma(a1, b3h, c1_3h);
        c2_3l = fma(a2, b3l, c2_3l);
        c2_3h = fma(a2, b3h, c2_3h);
        c3_3l = fma(a3, b3l, c3_3l);
        c3_3h = fma(a3, b3h, c3_3h);
        c4_3l = fma(a4, b3l, c4_3l);
        c4_3h = fma(a4, b3h, c4_3h);
        c5_3l = fma(a5, b3l, c5_3l);
        c5_3h = fma(a5, b3h, c5_3h);
        c6_3l = fma(a6, b3l, c6_3l);
        c6_3h = fma(a6, b3h, c6_3h);
        c7_3l = fma(a7, b3l, c7_3l);
        c7_3h = fma(a7, b3h, c7_3h);
        let b4l = vec4(subgroupBroadcast(b4, 0u), subgroupBroadcast(b4, 1u), subgroupBroadcast(b4, 2u), subgroupBroadcast(b4, 3u));
        let b4h = vec4(subgroupBroadcast(b4, 4u), subgroupBroadcast(b4, 5u), subgroupBroadcast(b4, 6u), subgroupBroadcast(b4, 7u));
        c0_4l = fma(a0, b4l, c0_4l);
        c0_4h = fma(a0, b4h, c0_4h);
        c1_4l = fma(a1, b4l, c1_4l);
        c1_4h = fma(a1, b4h, c1_4h);
        c2_4l = fma(a2, b4l, c2_4l);
        c2_4h = fma(a2, b4h, c2_4h);
        c3_4l = fma(a3, b4l, c3_4l);
        c3_4h = fma(a3, b4h, c3_4h);
        c4_4l = fma(a4, b4l, c4_4l);
        c4_4h = fma(a4, b4h, c4_4h);
        c5_4l = fma(a5, b4l, c5_4l);
        c5_4h = fma(a5, b4h, c5_4h);
        c6_4l = fma(a6, b4l, c6_4l);
        c6_4h = fma(a6, b4h, c6_4h);
        c7_4l = fma(a7, b4l, c7_4l);
        c7_4h = fma(a7, b4h, c7_4h);
        let b5l = vec4(subgroupBroadcast(b5, 0u), subgroupBroadcast(b5, 1u), subgroupBroadcast(b5, 2u), subgroupBroadcast(b5, 3u));
        let b5h = vec4(subgroupBroadcast(b5, 4u), subgroupBroadcast(b5, 5u), subgroupBroadcast(b5, 6u), subgroupBroadcast(b5, 7u));
        c0_5l = fma(a0, b5l, c0_5l);
        c0_5h = fma(a0, b5h, c0_5h);
        c1_5l = fma(a1, b5l, c1_5l);
        c1_5h = fma(a1, b5h, c1_5h);
        c2_5l = fma(a2, b5l, c2_5l);
        c2_5h = fma(a2, b5h, c2_5h);
        c3_5l = fma(a3, b5l, c3_5l);
        c3_5h = fma(a3, b5h, c3_5h);
        c4_5l = fma(a4, b5l, c4_5l);
        c4_5h = fma(a4, b5h, c4_5h);
        c5_5l = fma(a5, b5l, c5_5l);
        c5_5h = fma(a5, b5h, c5_5h);
        c6_5l = fma(a6, b5l, c6_5l);
        c6_5h = fma(a6, b5h, c6_5h);
        c7_5l = fma(a7, b5l, c7_5l);
        c7_5h = fma(a7, b5h, c7_5h);
        let b6l = vec4(subgroupBroadcast(b6, 0u), subgroupBroadcast(b6, 1u), subgroupBroadcast(b6, 2u), subgroupBroadcast(b6, 3u));
        let b6h = vec4(subgroupBroadcast(b6, 4u), subgroupBroadcast(b6, 5u), subgroupBroadcast(b6, 6u), subgroupBroadcast(b6, 7u));
        c0_6l = fma(a0, b6l, c0_6l);
        c0_6h = fma(a0, b6h, c0_6h);
        c1_6l = fma(a1, b6l, c1_6l);
        c1_6h = fma(a1, b6h, c1_6h);
        c2_6l = fma(a2, b6l, c2_6l);
        c2_6h = fma(a2, b6h, c2_6h);
        c3_6l = fma(a3, b6l, c3_6l);
        c3_6h = fma(a3, b6h, c3_6h);
        c4_6l = fma(a4, b6l, c4_6l);
        c4_6h = fma(a4, b6h, c4_6h);
        c5_6l = fma(a5, b6l, c5_6l);
        c5_6h = fma(a5, b6h, c5_6h);
        c6_6l = fma(a6, b6l, c6_6l);
        c6_6h = fma(a6, b6h, c6_6h);
        c7_6l = fma(a7, b6l, c7_6l);
        c7_6h = fma(a7, b6h, c7_6h);
        let b7l = vec4(subgroupBroadcast(b7, 0u), subgroupBroadcast(b7, 1u), subgroupBroadcast(b7, 2u), subgroupBroadcast(b7, 3u));
        let b7h = vec4(subgroupBroadcast(b7, 4u), subgroupBroadcast(b7, 5u), subgroupBroadcast(b7, 6u), subgroupBroadcast(b7, 7u));
        c0_7l = fma(a0, b7l, c0_7l);
        c0_7h = fma(a0, b7h, c0_7h);
        c1_7l = fma(a1, b7l, c1_7l);
        c1_7h = fma(a1, b7h, c1_7h);
        c2_7l = fma(a2, b7l, c2_7l);
        c2_7h = fma(a2, b7h, c2_7h);
        c3_7l = fma(a3, b7l, c3_7l);
        c3_7h = fma(a3, b7h, c3_7h);
        c4_7l = fma(a4, b7l, c4_7l);
        c4_7h = fma(a4, b7h, c4_7h);
        c5_7l = fma(a5, b7l, c5_7l);
        c5_7h = fma(a5, b7h, c5_7h);
        c6_7l = fma(a6, b7l, c6_7l);
        c6_7h = fma(a6, b7h, c6_7h);
        c7_7l = fma(a7, b7l, c7_7l);
        c7_7h = fma(a7, b7h, c7_7h);
        kb += p.ldb_k;
    }
    // One copy of the epilogue in a loop instead of 512 inlined ones keeps compile times short.
    var tile: array<vec4<f32>, 128>;
    tile[0] = c0_0l;
    tile[1] = c0_0h;
    tile[2] = c0_1l;
    tile[3] = c0_1h;
    tile[4] = c0_2l;
    tile[5] = c0_2h;
    tile[6] = c0_3l;
    tile[7] = c0_3h;
    tile[8] = c0_4l;
    tile[9] = c0_4h;
    tile[10] = c0_5l;
    tile[11] = c0_5h;
    tile[12] = c0_6l;
    tile[13] = c0_6h;
    tile[14] = c0_7l;
    tile[15] = c0_7h;
    tile[16] = c1_0l;
    tile[17] = c1_0h;
    tile[18] = c1_1l;
    tile[19] = c1_1h;
    tile[20] = c1_2l;
    tile[21] = c1_2h;
    tile[22] = c1_3l;
    tile[23] = c1_3h;
    tile[24] = c1_4l;
    tile[25] = c1_4h;
    tile[26] = c1_5l;
    tile[27] = c1_5h;
    tile[28] = c1_6l;
    tile[29] = c1_6h;
    tile[30] = c1_7l;
    tile[31] = c1_7h;
    tile[32] = c2_0l;
    tile[33] = c2_0h;
    tile[34] = c2_1l;
    tile[35] = c2_1h;
    tile[36] = c2_2l;
    tile[37] = c2_2h;
    tile[38] = c2_3l;
    tile[39] = c2_3h;
    tile[40] = c2_4l;
    tile[41] = c2_4h;
    tile[42] = c2_5l;
    tile[43] = c2_5h;
    tile[44] = c2_6l;
    tile[45] = c2_6h;
    tile[46] = c2_7l;
    tile[47] = c2_7h;
    tile[48] = c3_0l;
    tile[49] = c3_0h;
    tile[50] = c3_1l;
    tile[51] = c3_1h;
    tile[52] = c3_2l;
    tile[53] = c3_2h;
    tile[54] = c3_3l;
    tile[55] = c3_3h;
    tile[56] = c3_4l;
    tile[57] = c3_4h;
    tile[58] = c3_5l;
    tile[59] = c3_5h;
    tile[60] = c3_6l;
    tile[61] = c3_6h;
    tile[62] = c3_7l;
    tile[63] = c3_7h;
    tile[64] = c4_0l;
    tile[65] = c4_0h;
    tile[66] = c4_1l;
    tile[67] = c4_1h;
    tile[68] = c4_2l;
    tile[69] = c4_2h;
    tile[70] = c4_3l;
    tile[71] = c4_3h;
    tile[72] = c4_4l;
    tile[73] = c4_4h;
    tile[74] = c4_5l;
    tile[75] = c4_5h;
    tile[76] = c4_6l;
    tile[77] = c4_6h;
    tile[78] = c4_7l;
    tile[79] = c4_7h;
    tile[80] = c5_0l;
    tile[81] = c5_0h;
    tile[82] = c5_1l;
    tile[83] = c5_1h;
    tile[84] = c5_2l;
    tile[85] = c5_2h;
    tile[86] = c5_3l;
    tile[87] = c5_3h;
    tile[88] = c5_4l;
    tile[89] = c5_4h;
    tile[90] = c5_5l;
    tile[91] = c5_5h;
    tile[92] = c5_6l;
    tile[93] = c5_6h;
    tile[94] = c5_7l;
    tile[95] = c5_7h;
    tile[96] = c6_0l;
    tile[97] = c6_0h;
    tile[98] = c6_1l;
    tile[99] = c6_1h;
    tile[100] = c6_2l;
    tile[101] = c6_2h;
    tile[102] = c6_3l;
    tile[103] = c6_3h;
    tile[104] = c6_4l;
    tile[105] = c6_4h;
    tile[106] = c6_5l;
    tile[107] = c6_5h;
    tile[108] = c6_6l;
    tile[109] = c6_6h;
    tile[110] = c6_7l;
    tile[111] = c6_7h;
    tile[112] = c7_0l;
    tile[113] = c7_0h;
    tile[114] = c7_1l;
    tile[115] = c7_1h;
    tile[116] = c7_2l;
    tile[117] = c7_2h;
    tile[118] = c7_3l;
    tile[119] = c7_3h;
    tile[120] = c7_4l;
    tile[121] = c7_4h;
    tile[122] = c7_5l;
    tile[123] = c7_5h;
    tile[124] = c7_6l;
    tile[125] = c7_6h;
    tile[126] = c7_7l;
    tile[127] = c7_7h;
    // Bias for the tile's 64 columns: 8 loads per lane, shared by broadcast.
    var bias4: array<vec4<f32>, 16>;
    if (HAS_BIAS) {
        let bb0 = bias[min(t.n0 + 0u + l, nmax)];
        bias4[0] = vec4(subgroupBroadcast(bb0, 0u), subgroupBroadcast(bb0, 1u), subgroupBroadcast(bb0, 2u), subgroupBroadcast(bb0, 3u));
        bias4[1] = vec4(subgroupBroadcast(bb0, 4u), subgroupBroadcast(bb0, 5u), subgroupBroadcast(bb0, 6u), subgroupBroadcast(bb0, 7u));
        let bb1 = bias[min(t.n0 + 8u + l, nmax)];
        bias4[2] = vec4(subgroupBroadcast(bb1, 0u), subgroupBroadcast(bb1, 1u), subgroupBroadcast(bb1, 2u), subgroupBroadcast(bb1, 3u));
        bias4[3] = vec4(subgroupBroadcast(bb1, 4u), subgroupBroadcast(bb1, 5u), subgroupBroadcast(bb1, 6u), subgroupBroadcast(bb1, 7u));
        let bb2 = bias[min(t.n0 + 16u + l, nmax)];
        bias4[4] = vec4(subgroupBroadcast(bb2, 0u), subgroupBroadcast(bb2, 1u), subgroupBroadcast(bb2, 2u), subgroupBroadcast(bb2, 3u));
        bias4[5] = vec4(subgroupBroadcast(bb2, 4u), subgroupBroadcast(bb2, 5u), subgroupBroadcast(bb2, 6u), subgroupBroadcast(bb2, 7u));
        let bb3 = bias[min(t.n0 + 24u + l, nmax)];
        bias4[6] = vec4(subgroupBroadcast(bb3, 0u), subgroupBroadcast(bb3, 1u), subgroupBroadcast(bb3, 2u), subgroupBroadcast(bb3, 3u));
        bias4[7] = vec4(subgroupBroadcast(bb3, 4u), subgroupBroadcast(bb3, 5u), subgroupBroadcast(bb3, 6u), subgroupBroadcast(bb3, 7u));
        let bb4 = bias[min(t.n0 + 32u + l, nmax)];
        bias4[8] = vec4(subgroupBroadcast(bb4, 0u), subgroupBroadcast(bb4, 1u), subgroupBroadcast(bb4, 2u), subgroupBroadcast(bb4, 3u));
        bias4[9] = vec4(subgroupBroadcast(bb4, 4u), subgroupBroadcast(bb4, 5u), subgroupBroadcast(bb4, 6u), subgroupBroadcast(bb4, 7u));
        let bb5 = bias[min(t.n0 + 40u + l, nmax)];
        bias4[10] = vec4(subgroupBroadcast(bb5, 0u), subgroupBroadcast(bb5, 1u), subgroupBroadcast(bb5, 2u), subgroupBroadcast(bb5, 3u));
        bias4[11] = vec4(subgroupBroadcast(bb5, 4u), subgroupBroadcast(bb5, 5u), subgroupBroadcast(bb5, 6u), subgroupBroadcast(bb5, 7u));
        let bb6 = bias[min(t.n0 + 48u + l, nmax)];
        bias4[12] = vec4(subgroupBroadcast(bb6, 0u), subgroupBroadcast(bb6, 1u), subgroupBroadcast(bb6, 2u), subgroupBroadcast(bb6, 3u));
        bias4[13] = vec4(subgroupBroadcast(bb6, 4u), subgroupBroadcast(bb6, 5u), subgroupBroadcast(bb6, 6u), subgroupBroadcast(bb6, 7u));
        let bb7 = bias[min(t.n0 + 56u + l, nmax)];
        bias4[14] = vec4(subgroupBroadcast(bb7, 0u), subgroupBroadcast(bb7, 1u), subgroupBroadcast(bb7, 2u), subgroupBroadcast(bb7, 3u));
        bias4[15] = vec4(subgroupBroadcast(bb7, 4u), subgroupBroadcast(bb7, 5u), subgroupBroadcast(bb7, 6u), subgroupBroadcast(bb7, 7u));
    }
    for (var i = 0u; i < 8u; i++) {
        let row = t.m0 + l + 8u * i;
        var rv = 0.0;
        if (HAS_ROW_BIAS) {
            rv = row_bias[min(row, mmax)];
        }
        let row_ok = t.valid && row < p.m;
        for (var q = 0u; q < 16u; q++) {
            let v = tile[16u * i + q];
            let bv = bias4[q];
            let col = t.n0 + 4u * q;
            let o = (t.bi * p.m + row) * p.n + col;
            if (row_ok && col < p.n) {
                out[o] = epilogue(v.x, bv.x, rv, o);
            }
            if (row_ok && col + 1u < p.n) {
                out[o + 1u] = epilogue(v.y, bv.y, rv, o + 1u);
            }
            if (row_ok && col + 2u < p.n) {
                out[o + 2u] = epilogue(v.z, bv.z, rv, o + 2u);
            }
            if (row_ok && col + 3u < p.n) {
                out[o + 3u] = epilogue(v.w, bv.w, rv, o + 3u);
            }
        }
    }
}
