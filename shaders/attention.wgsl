// Dense multi-head attention, fused into one dispatch: per (batch b, head h, query row i)
//   out[i] = Σ_j softmax_j(scale·q_i·k_j + bias[h, i, j] + mask[b mod nW, i, j]) · v_j,
// with an online softmax (running max m, running sum l, accumulator rescaled when m grows), so
// any number of keys streams through bounded state.
//
// Three forward entry points:
// - attn_tiled (GPUs; the generic fallback): a workgroup of TQ query rows of one (b, h) stages
//   TK keys and values at a time in workgroup memory.
// - attn_register / attn_register_sg (CPU adapters): no barriers. On lavapipe a storage load
//   whose address differs between lanes, or that sits in a loop, runs as a scalar loop over the
//   lanes and costs far more than the arithmetic it feeds, so these kernels minimise loads per
//   FLOP: each lane owns R query rows (query, accumulator and softmax state in registers) and
//   uses every key/value row it loads for all R of them. In attn_register_sg the 8 lanes of a
//   workgroup (one subgroup, one (b, h)) each load one vec4 chunk of a 32-wide key or value row
//   and subgroupBroadcast hands all 8 chunks to every lane: one load per lane per row instead of
//   eight. attn_register (devices without subgroups) loads whole rows in every lane. Both need
//   D ≤ 32, D % 4 == 0 and 16-byte-aligned rows (the host checks).
//
// The backward (attn_bw_* entry points, further down) is batched GEMMs and softmax kernels from
// other files; the kernels here only gather the views into dense per-head operands, scatter the
// gradients back and build the combined bias + mask logit term.
//
// The file is compiled as two modules: everything above the "subgroup kernels" marker line
// (usable on every device), and the whole file (devices with subgroups).

override D: u32 = 32u;           // head width
override HAS_BIAS: bool = false;
override HAS_MASK: bool = false;
override R: u32 = 8u;            // query rows per lane in the register kernels, 1..=8
// Scatter mode (Swin): batch item b is window b mod nW of image b / nW, and each output row is
// written where Swin's window reverse would put it (un-roll by the shift, crop the padding), so
// no separate reverse pass is needed. WIN is the window side.
override SCATTER: bool = false;
override WIN: u32 = 7u;

const NEG: f32 = -1.0e30;        // finite "minus infinity": exp(NEG - x) is 0 without inf arithmetic
const LANES: u32 = 8u;           // register kernels: one subgroup of 8 lanes per workgroup

struct Params {
    lq: u32,
    lk: u32,
    heads: u32,
    nw: u32,          // mask windows (1 without a mask)
    q_stride: u32,    // element strides and offsets of the q/k/v views
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    row_tiles: u32,   // workgroups per (b, h)
    groups: u32,      // batch·heads·row_tiles
    scale: f32,
    sc_shift: u32,    // scatter mode: shift, windows per row and per image, map and padded sizes
    sc_nww: u32,
    sc_nwi: u32,
    sc_h: u32,
    sc_w: u32,
    sc_hp: u32,
    sc_wp: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
    _p3: u32,
}

const DROP: u32 = 0xffffffffu;

// The output token of query `row` of batch item `b`, or DROP for a pad token in scatter mode.
fn out_row(b: u32, row: u32) -> u32 {
    if (!SCATTER) {
        return b * p.lq + row;
    }
    let img = b / p.sc_nwi;
    let win = b - img * p.sc_nwi;
    let wy = win / p.sc_nww;
    let wx = win - wy * p.sc_nww;
    let ty = row / WIN;
    let tx = row - ty * WIN;
    // roll by +shift: out[y] = merged[(y − shift) mod Hp], i.e. merged row r lands at r + shift.
    var y = wy * WIN + ty + p.sc_shift;
    if (y >= p.sc_hp) { y -= p.sc_hp; }
    var x = wx * WIN + tx + p.sc_shift;
    if (x >= p.sc_wp) { x -= p.sc_wp; }
    if (y >= p.sc_h || x >= p.sc_w) {
        return DROP;
    }
    return (img * p.sc_h + y) * p.sc_w + x;
}

@group(0) @binding(0) var<uniform> p: Params;
// [heads, lq, lk] and [nw, lq, lk]. Bound to a dummy when the HAS_ flag is off: auto layouts are
// derived before override constants apply, so the bindings exist either way.
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;

struct Item {
    b: u32,
    h: u32,
    tile: u32,
}

fn item(g: u32) -> Item {
    let bh = g / p.row_tiles;
    return Item(bh / p.heads, bh % p.heads, g % p.row_tiles);
}

// ---------------------------------------------------------------------------------------------
// Register kernels (views as vec4 arrays: the host guarantees 16-byte alignment).

@group(0) @binding(1) var<storage, read> q4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out4: array<vec4<f32>>;

// A head row of up to 32 values as two 4×4 matrices (columns = consecutive vec4 chunks), so row
// arithmetic is one expression per half; columns at or past D/4 hold zeros or ignored values.
struct Row {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
}

fn rdot(a: Row, b: Row) -> f32 {
    return dot(a.lo[0], b.lo[0]) + dot(a.lo[1], b.lo[1]) + dot(a.lo[2], b.lo[2]) + dot(a.lo[3], b.lo[3])
         + dot(a.hi[0], b.hi[0]) + dot(a.hi[1], b.hi[1]) + dot(a.hi[2], b.hi[2]) + dot(a.hi[3], b.hi[3]);
}

// Chunk c (a compile-time constant after inlining) of the row at vec4 index `at`, zero past D.
fn chunk_q(at: u32, c: u32) -> vec4<f32> {
    if (c < D / 4u) {
        return q4[at + c];
    }
    return vec4(0.0);
}

fn chunk_k(at: u32, c: u32) -> vec4<f32> {
    if (c < D / 4u) {
        return k4[at + c];
    }
    return vec4(0.0);
}

fn chunk_v(at: u32, c: u32) -> vec4<f32> {
    if (c < D / 4u) {
        return v4[at + c];
    }
    return vec4(0.0);
}

// Two consecutive keys (j1 = j0 + 1, clamped to the last key; `has1` false when it is a copy).
struct Keys {
    k0: Row,
    k1: Row,
    v0: Row,
    v1: Row,
    j0: u32,
    j1: u32,
    has1: bool,
}

// Per query row: the pre-scaled query, the unnormalised output, the running max and sum, and
// where the row's bias and mask entries start.
struct RowState {
    q: Row,
    acc: Row,
    m: f32,
    l: f32,
    bias_at: u32,
    mask_at: u32,
}

fn row_init(it: Item, row: u32) -> RowState {
    let i = min(row, p.lq - 1u); // rows past the end compute a copy and are not stored
    let at = ((it.b * p.lq + i) * p.q_stride + p.q_off + it.h * D) / 4u;
    var s: RowState;
    s.q = Row(
        mat4x4(chunk_q(at, 0u), chunk_q(at, 1u), chunk_q(at, 2u), chunk_q(at, 3u)) * p.scale,
        mat4x4(chunk_q(at, 4u), chunk_q(at, 5u), chunk_q(at, 6u), chunk_q(at, 7u)) * p.scale,
    );
    s.m = NEG;
    s.bias_at = (it.h * p.lq + i) * p.lk;
    s.mask_at = ((it.b % p.nw) * p.lq + i) * p.lk;
    return s;
}

fn logit(s: RowState, k: Row, j: u32) -> f32 {
    var x = rdot(s.q, k);
    if (HAS_BIAS) {
        x += bias[s.bias_at + j];
    }
    if (HAS_MASK) {
        x += mask[s.mask_at + j];
    }
    return x;
}

// Folds two keys into a row's online softmax.
fn fold(s: RowState, kv: Keys) -> RowState {
    let x0 = logit(s, kv.k0, kv.j0);
    let x1 = select(NEG, logit(s, kv.k1, kv.j1), kv.has1);
    let m = max(s.m, max(x0, x1));
    let corr = exp(s.m - m);
    let w0 = exp(x0 - m);
    let w1 = exp(x1 - m);
    var o = s;
    o.m = m;
    o.l = s.l * corr + w0 + w1;
    o.acc = Row(
        s.acc.lo * corr + kv.v0.lo * w0 + kv.v1.lo * w1,
        s.acc.hi * corr + kv.v0.hi * w0 + kv.v1.hi * w1,
    );
    return o;
}

fn row_store(it: Item, row: u32, s: RowState) {
    if (row >= p.lq) {
        return;
    }
    let r = out_row(it.b, row);
    if (r == DROP) {
        return;
    }
    let at = (r * (p.heads * D) + it.h * D) / 4u;
    let lo = s.acc.lo * (1.0 / s.l);
    let hi = s.acc.hi * (1.0 / s.l);
    let n = D / 4u;
    out4[at] = lo[0];
    if (n > 1u) { out4[at + 1u] = lo[1]; }
    if (n > 2u) { out4[at + 2u] = lo[2]; }
    if (n > 3u) { out4[at + 3u] = lo[3]; }
    if (n > 4u) { out4[at + 4u] = hi[0]; }
    if (n > 5u) { out4[at + 5u] = hi[1]; }
    if (n > 6u) { out4[at + 6u] = hi[2]; }
    if (n > 7u) { out4[at + 7u] = hi[3]; }
}

fn load_row_k(at: u32) -> Row {
    return Row(mat4x4(chunk_k(at, 0u), chunk_k(at, 1u), chunk_k(at, 2u), chunk_k(at, 3u)),
               mat4x4(chunk_k(at, 4u), chunk_k(at, 5u), chunk_k(at, 6u), chunk_k(at, 7u)));
}

fn load_row_v(at: u32) -> Row {
    return Row(mat4x4(chunk_v(at, 0u), chunk_v(at, 1u), chunk_v(at, 2u), chunk_v(at, 3u)),
               mat4x4(chunk_v(at, 4u), chunk_v(at, 5u), chunk_v(at, 6u), chunk_v(at, 7u)));
}

// Rows of lane `li` in workgroup tile t: t·8R + n·8 + li for n < R. The R row slots are written
// out (s0..s7 behind compile-time `R > n` guards): state in loops or arrays indexed by a loop
// counter is not unrolled by lavapipe's compiler and ends up in per-lane scratch memory.
@compute @workgroup_size(8)
fn attn_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let g = wg.x + wg.y * nwg.x;
    if (g >= p.groups) {
        return;
    }
    let it = item(g);
    let row0 = it.tile * LANES * R + li;
    var s0 = row_init(it, row0);
    var s1: RowState;
    var s2: RowState;
    var s3: RowState;
    var s4: RowState;
    var s5: RowState;
    var s6: RowState;
    var s7: RowState;
    if (R > 1u) { s1 = row_init(it, row0 + 1u * LANES); }
    if (R > 2u) { s2 = row_init(it, row0 + 2u * LANES); }
    if (R > 3u) { s3 = row_init(it, row0 + 3u * LANES); }
    if (R > 4u) { s4 = row_init(it, row0 + 4u * LANES); }
    if (R > 5u) { s5 = row_init(it, row0 + 5u * LANES); }
    if (R > 6u) { s6 = row_init(it, row0 + 6u * LANES); }
    if (R > 7u) { s7 = row_init(it, row0 + 7u * LANES); }

    let kb = (it.b * p.lk * p.k_stride + p.k_off + it.h * D) / 4u;
    let vb = (it.b * p.lk * p.v_stride + p.v_off + it.h * D) / 4u;
    let ks = p.k_stride / 4u;
    let vs = p.v_stride / 4u;
    for (var j0 = 0u; j0 < p.lk; j0 += 2u) {
        let j1 = min(j0 + 1u, p.lk - 1u);
        let kv = Keys(load_row_k(kb + j0 * ks), load_row_k(kb + j1 * ks),
                      load_row_v(vb + j0 * vs), load_row_v(vb + j1 * vs), j0, j1, j0 + 1u < p.lk);
        s0 = fold(s0, kv);
        if (R > 1u) { s1 = fold(s1, kv); }
        if (R > 2u) { s2 = fold(s2, kv); }
        if (R > 3u) { s3 = fold(s3, kv); }
        if (R > 4u) { s4 = fold(s4, kv); }
        if (R > 5u) { s5 = fold(s5, kv); }
        if (R > 6u) { s6 = fold(s6, kv); }
        if (R > 7u) { s7 = fold(s7, kv); }
    }

    row_store(it, row0, s0);
    if (R > 1u) { row_store(it, row0 + 1u * LANES, s1); }
    if (R > 2u) { row_store(it, row0 + 2u * LANES, s2); }
    if (R > 3u) { row_store(it, row0 + 3u * LANES, s3); }
    if (R > 4u) { row_store(it, row0 + 4u * LANES, s4); }
    if (R > 5u) { row_store(it, row0 + 5u * LANES, s5); }
    if (R > 6u) { row_store(it, row0 + 6u * LANES, s6); }
    if (R > 7u) { row_store(it, row0 + 7u * LANES, s7); }
}

// ---------------------------------------------------------------------------------------------
// Tiled kernel: any D ≤ 64, any alignment (scalar views).

const TQ: u32 = 64u;             // query rows (threads) per workgroup
const TK: u32 = 32u;             // keys per shared tile
const MAXD: u32 = 64u;

@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

var<workgroup> k_tile: array<f32, TK * D>;
var<workgroup> v_tile: array<f32, TK * D>;

@compute @workgroup_size(TQ)
fn attn_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let g = wg.x + wg.y * nwg.x;
    if (g >= p.groups) {
        return;
    }
    let it = item(g);
    let row = it.tile * TQ + li;
    let i = min(row, p.lq - 1u);

    var qr: array<f32, MAXD>;
    var acc: array<f32, MAXD>;
    let qb = (it.b * p.lq + i) * p.q_stride + p.q_off + it.h * D;
    for (var d = 0u; d < D; d++) {
        qr[d] = q[qb + d] * p.scale;
        acc[d] = 0.0;
    }
    let bias_at = (it.h * p.lq + i) * p.lk;
    let mask_at = ((it.b % p.nw) * p.lq + i) * p.lk;
    let kb = it.b * p.lk * p.k_stride + p.k_off + it.h * D;
    let vb = it.b * p.lk * p.v_stride + p.v_off + it.h * D;

    var m = NEG;
    var l = 0.0;
    for (var t0 = 0u; t0 < p.lk; t0 += TK) {
        let n = min(TK, p.lk - t0);
        // Consecutive threads copy consecutive elements of a key row: coalesced reads.
        for (var e = li; e < n * D; e += TQ) {
            let j = t0 + e / D;
            let d = e % D;
            k_tile[e] = k[kb + j * p.k_stride + d];
            v_tile[e] = v[vb + j * p.v_stride + d];
        }
        workgroupBarrier();
        for (var jj = 0u; jj < n; jj++) {
            var x = 0.0;
            for (var d = 0u; d < D; d++) {
                x += qr[d] * k_tile[jj * D + d];
            }
            if (HAS_BIAS) {
                x += bias[bias_at + t0 + jj];
            }
            if (HAS_MASK) {
                x += mask[mask_at + t0 + jj];
            }
            let mn = max(m, x);
            let corr = exp(m - mn);
            let w = exp(x - mn);
            l = l * corr + w;
            m = mn;
            for (var d = 0u; d < D; d++) {
                acc[d] = acc[d] * corr + w * v_tile[jj * D + d];
            }
        }
        // The next tile overwrites k_tile and v_tile.
        workgroupBarrier();
    }
    let orow = out_row(it.b, row);
    if (row < p.lq && orow != DROP) {
        let ob = orow * (p.heads * D) + it.h * D;
        let inv = 1.0 / l;
        for (var d = 0u; d < D; d++) {
            out[ob + d] = acc[d] * inv;
        }
    }
}

// ---- backward: layout kernels around batched GEMMs ----
// attention_backward (src/ops/attention.rs) runs the backward as matrix products over dense
// per-(b, h) operands [B·heads, L, D]: S = (scale·Q)·Kᵀ + bias + mask, P = softmax(S),
// dP = dO·Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)), dV = Pᵀ·dO, dQ = scale·dS·K, dK = dSᵀ·(scale·Q),
// dbias = Σ_b dS. Strided per-element loops ran far slower on lavapipe than the tiled GEMMs, so
// the kernels here only move data between the views' [B, L, ·] rows and those dense operands.
// One invocation per output element; every output written once (deterministic).

struct Bw {
    n: u32,         // output elements
    len: u32,       // L of the view (attn_bw_gather, attn_bw_scatter); Lq·Lk (attn_bw_logit_bias)
    heads: u32,
    hd: u32,
    stride: u32,    // view row stride and column offset (gather); destination row width (scatter)
    off: u32,
    nw: u32,        // mask windows (attn_bw_logit_bias)
    scale: f32,
}

// attn_bw_scatter adds into its destination instead of overwriting it.
override ACCUM: bool = false;

@group(0) @binding(0) var<uniform> bw: Bw;

fn bw_index(wg: vec3<u32>, nw: vec3<u32>, li: u32) -> u32 {
    return (wg.x + wg.y * nw.x) * 64u + li;
}

@group(0) @binding(1) var<storage, read> ga_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> ga_out: array<f32>;

// out[b·heads + h, i, d] = scale·x[(b·L + i)·stride + off + h·D + d].
@compute @workgroup_size(64)
fn attn_bw_gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let t = bw_index(wg, nw, li);
    if (t >= bw.n) {
        return;
    }
    let d = t % bw.hd;
    let r = t / bw.hd;
    let i = r % bw.len;
    let bh = r / bw.len;
    let h = bh % bw.heads;
    let b = bh / bw.heads;
    ga_out[t] = bw.scale * ga_x[(b * bw.len + i) * bw.stride + bw.off + h * bw.hd + d];
}

@group(0) @binding(1) var<storage, read> sc_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sc_out: array<f32>;

// out[b, i, h·D + d] (+)= scale·x[b·heads + h, i, d], out dense [B, L, heads·D] (stride = width).
@compute @workgroup_size(64)
fn attn_bw_scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let t = bw_index(wg, nw, li);
    if (t >= bw.n) {
        return;
    }
    let c = t % bw.stride;
    let r = t / bw.stride;
    let i = r % bw.len;
    let b = r / bw.len;
    let h = c / bw.hd;
    let d = c % bw.hd;
    let x = bw.scale * sc_x[((b * bw.heads + h) * bw.len + i) * bw.hd + d];
    if (ACCUM) {
        sc_out[t] = sc_out[t] + x;
    } else {
        sc_out[t] = x;
    }
}

// attn_bw_gather and attn_bw_scatter on vec4 column chunks, for D, view strides and offsets that
// are multiples of 4 (the host passes D, stride, offset and n in vec4 units): a quarter of the
// invocations and loads, which is what these kernels cost on lavapipe.
@group(0) @binding(1) var<storage, read> ga_x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> ga_out4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn attn_bw_gather4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let t = bw_index(wg, nw, li);
    if (t >= bw.n) {
        return;
    }
    let d = t % bw.hd;
    let r = t / bw.hd;
    let i = r % bw.len;
    let bh = r / bw.len;
    let h = bh % bw.heads;
    let b = bh / bw.heads;
    ga_out4[t] = bw.scale * ga_x4[(b * bw.len + i) * bw.stride + bw.off + h * bw.hd + d];
}

@group(0) @binding(1) var<storage, read> sc_x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> sc_out4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn attn_bw_scatter4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let t = bw_index(wg, nw, li);
    if (t >= bw.n) {
        return;
    }
    let c = t % bw.stride;
    let r = t / bw.stride;
    let i = r % bw.len;
    let b = r / bw.len;
    let h = c / bw.hd;
    let d = c % bw.hd;
    let x = bw.scale * sc_x4[((b * bw.heads + h) * bw.len + i) * bw.hd + d];
    if (ACCUM) {
        sc_out4[t] = sc_out4[t] + x;
    } else {
        sc_out4[t] = x;
    }
}

@group(0) @binding(1) var<storage, read> lb_bias: array<f32>;
@group(0) @binding(2) var<storage, read> lb_mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> lb_out: array<f32>;

// out[b·heads + h, i, j] = bias[h, i, j] + mask[b mod nW, i, j] (each term where its HAS_ flag
// is set): the additive logit terms of every (b, h), which the S product then accumulates onto.
@compute @workgroup_size(64)
fn attn_bw_logit_bias(@builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nw: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let t = bw_index(wg, nw, li);
    if (t >= bw.n) {
        return;
    }
    let r = t % bw.len;
    let bh = t / bw.len;
    var x = 0.0;
    if (HAS_BIAS) {
        x += lb_bias[(bh % bw.heads) * bw.len + r];
    }
    if (HAS_MASK) {
        x += lb_mask[((bh / bw.heads) % bw.nw) * bw.len + r];
    }
    lb_out[t] = x;
}

// ---- subgroup kernels: everything below needs the subgroup feature ----

// The row whose chunk c lives in lane c, gathered into every lane.
fn bcast(x: vec4<f32>) -> Row {
    return Row(mat4x4(subgroupBroadcast(x, 0u), subgroupBroadcast(x, 1u),
                      subgroupBroadcast(x, 2u), subgroupBroadcast(x, 3u)),
               mat4x4(subgroupBroadcast(x, 4u), subgroupBroadcast(x, 5u),
                      subgroupBroadcast(x, 6u), subgroupBroadcast(x, 7u)));
}

// attn_register with each key/value row loaded as one vec4 per lane (lane c loads chunk c;
// lanes past D/4 load a duplicate that only meets zero query columns or unstored output
// columns). Needs subgroups of at least 8 lanes so lanes 0..7 share a subgroup.
@compute @workgroup_size(8)
fn attn_register_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32,
                    @builtin(subgroup_invocation_id) sid: u32) {
    let g = wg.x + wg.y * nwg.x;
    if (g >= p.groups) {
        return;
    }
    let it = item(g);
    let row0 = it.tile * LANES * R + li;
    var s0 = row_init(it, row0);
    var s1: RowState;
    var s2: RowState;
    var s3: RowState;
    var s4: RowState;
    var s5: RowState;
    var s6: RowState;
    var s7: RowState;
    if (R > 1u) { s1 = row_init(it, row0 + 1u * LANES); }
    if (R > 2u) { s2 = row_init(it, row0 + 2u * LANES); }
    if (R > 3u) { s3 = row_init(it, row0 + 3u * LANES); }
    if (R > 4u) { s4 = row_init(it, row0 + 4u * LANES); }
    if (R > 5u) { s5 = row_init(it, row0 + 5u * LANES); }
    if (R > 6u) { s6 = row_init(it, row0 + 6u * LANES); }
    if (R > 7u) { s7 = row_init(it, row0 + 7u * LANES); }

    let chunk = min(sid, D / 4u - 1u);
    let kb = (it.b * p.lk * p.k_stride + p.k_off + it.h * D) / 4u + chunk;
    let vb = (it.b * p.lk * p.v_stride + p.v_off + it.h * D) / 4u + chunk;
    let ks = p.k_stride / 4u;
    let vs = p.v_stride / 4u;
    for (var j0 = 0u; j0 < p.lk; j0 += 2u) {
        let j1 = min(j0 + 1u, p.lk - 1u);
        let kv = Keys(bcast(k4[kb + j0 * ks]), bcast(k4[kb + j1 * ks]),
                      bcast(v4[vb + j0 * vs]), bcast(v4[vb + j1 * vs]), j0, j1, j0 + 1u < p.lk);
        s0 = fold(s0, kv);
        if (R > 1u) { s1 = fold(s1, kv); }
        if (R > 2u) { s2 = fold(s2, kv); }
        if (R > 3u) { s3 = fold(s3, kv); }
        if (R > 4u) { s4 = fold(s4, kv); }
        if (R > 5u) { s5 = fold(s5, kv); }
        if (R > 6u) { s6 = fold(s6, kv); }
        if (R > 7u) { s7 = fold(s7, kv); }
    }

    row_store(it, row0, s0);
    if (R > 1u) { row_store(it, row0 + 1u * LANES, s1); }
    if (R > 2u) { row_store(it, row0 + 2u * LANES, s2); }
    if (R > 3u) { row_store(it, row0 + 3u * LANES, s3); }
    if (R > 4u) { row_store(it, row0 + 4u * LANES, s4); }
    if (R > 5u) { row_store(it, row0 + 5u * LANES, s5); }
    if (R > 6u) { row_store(it, row0 + 6u * LANES, s6); }
    if (R > 7u) { row_store(it, row0 + 7u * LANES, s7); }
}
