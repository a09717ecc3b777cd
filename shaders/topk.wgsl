// Top-K selection and top-K sparse attention.
//
// Order used by every kernel: entry a comes before entry b iff a.value > b.value, or the values are
// equal and a.index < b.index. On NaN-free rows this is a strict total order of (value, index), so
// the top K of a row, and their order, are unique: all kernels and the CPU reference agree exactly.
//
// Entry points (the host binds exactly the tensors each one uses, from binding 1):
//   select_register / select_tiled    rows of `src` -> top_val, top_idx            [rows, K]
//   logits_register / logits_tiled    q (`src`), k views -> logits                 [B, H, Lq, Lk]
//   attend_register / attend_tiled    logits (`src`), v view -> att_out [B, Lq, H·D],
//                                     att_idx, att_w [B, H, Lq, K]
//   tk_bw_rows / tk_bw_dq / tk_bw_dkv the backward, from the forward's indices and weights (see
//                                     the section before the SUBGROUP KERNELS marker)
//   dense_weights                     att_idx, att_w -> dense weights [B, H, Lq, Lk]
//   attend_subgroup / logits_subgroup (after the SUBGROUP KERNELS marker; the host compiles that
//                                     part only on devices with subgroups) fused logits,
//                                     selection, softmax and w·v for D = 32, subgroups of 8.
//
// Linear workgroup id: the host splits large counts over a 2-D grid
// (wg.x + wg.y * num_workgroups.x).
//
// Why the register kernels look the way they do (Mesa lavapipe, the CPU adapter they are for):
// every storage-buffer load or store costs a loop over the SIMD lanes (tens of cycles per lane and
// component), divergent branches are executed masked rather than skipped, and private arrays
// indexed in loops are not promoted to registers. So the kernels keep state in structs of vectors
// with constant member access (registers), replace branches by selects, and reuse each loaded
// value as often as possible.

struct Params {
    rows: u32,       // select/attend: rows of the logits; logits: B·H
    n: u32,          // row length (Lk)
    keep: u32,       // K
    p2: u32,         // n rounded up to a power of two (tiled selection)
    heads: u32,
    lq: u32,
    hd: u32,         // head width D
    group_rows: u32, // tiled selection: rows sorted together by one workgroup
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    scale: f32,
    tiles_j: u32,    // logits: key tiles per row tile
}

@group(0) @binding(0) var<uniform> p: Params;

// ---------------------------------------------------------------------------------------------
// Sorted top-32 "network" kept in registers: slot t is component t % 4 of k{t/4} (order key) and
// x{t/4} (index). Inserting (s, j) moves every slot that s beats one place down; elements arrive
// in index order, so an equal value never beats an earlier one and a strict compare gives the tie
// rule.

const KEY_MIN: i32 = -2147483647i - 1i; // below the key of every float but NaN: empty slots
const NO_INDEX: u32 = 0xffffffffu;

// An i32 whose signed order is the f32 order. −0 is folded onto +0 first so that the two tie (and
// fall back to index order) as equal floats do. `key_value` inverts it (returning +0 for ±0).
fn order_key(v: f32) -> i32 {
    let b = bitcast<i32>(v);
    let c = select(b, 0i, b == KEY_MIN);
    return c ^ ((c >> 31u) & 0x7fffffffi);
}

fn key_value(k: i32) -> f32 {
    return bitcast<f32>(k ^ ((k >> 31u) & 0x7fffffffi));
}

struct Net {
    k0: vec4<i32>, k1: vec4<i32>, k2: vec4<i32>, k3: vec4<i32>,
    k4: vec4<i32>, k5: vec4<i32>, k6: vec4<i32>, k7: vec4<i32>,
    x0: vec4<u32>, x1: vec4<u32>, x2: vec4<u32>, x3: vec4<u32>,
    x4: vec4<u32>, x5: vec4<u32>, x6: vec4<u32>, x7: vec4<u32>,
}

fn net_new() -> Net {
    let k = vec4<i32>(KEY_MIN);
    let x = vec4<u32>(NO_INDEX);
    return Net(k, k, k, k, k, k, k, k, x, x, x, x, x, x, x, x);
}

// One chunk of 4 slots; (pk, px) is the old entry of the slot above the chunk and pc whether s
// beat it. Scalar compares: lavapipe handles vectors of bools poorly.
fn upd_k(o: vec4<i32>, s: i32, pk: i32, pc: bool) -> vec4<i32> {
    let cx = s > o.x;
    let cy = s > o.y;
    let cz = s > o.z;
    let cw = s > o.w;
    return vec4<i32>(select(select(o.x, s, cx), pk, pc), select(select(o.y, s, cy), o.x, cx),
                     select(select(o.z, s, cz), o.y, cy), select(select(o.w, s, cw), o.z, cz));
}

fn upd_x(o: vec4<u32>, ok: vec4<i32>, s: i32, j: u32, px: u32, pc: bool) -> vec4<u32> {
    let cx = s > ok.x;
    let cy = s > ok.y;
    let cz = s > ok.z;
    let cw = s > ok.w;
    return vec4<u32>(select(select(o.x, j, cx), px, pc), select(select(o.y, j, cy), o.x, cx),
                     select(select(o.z, j, cz), o.y, cy), select(select(o.w, j, cw), o.z, cz));
}

// Inserts key s of element j below the entry (pk, px) (pc: s beat it), which lets a second net
// continue a first one for 64 slots. A lone net passes pc = false.
fn net_insert_below(n: Net, s: i32, j: u32, pk: i32, px: u32, pc: bool) -> Net {
    let c0 = s > n.k0.w;
    let c1 = s > n.k1.w;
    let c2 = s > n.k2.w;
    let c3 = s > n.k3.w;
    let c4 = s > n.k4.w;
    let c5 = s > n.k5.w;
    let c6 = s > n.k6.w;
    return Net(upd_k(n.k0, s, pk, pc), upd_k(n.k1, s, n.k0.w, c0), upd_k(n.k2, s, n.k1.w, c1),
               upd_k(n.k3, s, n.k2.w, c2), upd_k(n.k4, s, n.k3.w, c3), upd_k(n.k5, s, n.k4.w, c4),
               upd_k(n.k6, s, n.k5.w, c5), upd_k(n.k7, s, n.k6.w, c6),
               upd_x(n.x0, n.k0, s, j, px, pc), upd_x(n.x1, n.k1, s, j, n.x0.w, c0),
               upd_x(n.x2, n.k2, s, j, n.x1.w, c1), upd_x(n.x3, n.k3, s, j, n.x2.w, c2),
               upd_x(n.x4, n.k4, s, j, n.x3.w, c3), upd_x(n.x5, n.k5, s, j, n.x4.w, c4),
               upd_x(n.x6, n.k6, s, j, n.x5.w, c5), upd_x(n.x7, n.k7, s, j, n.x6.w, c6));
}

fn net_insert(n: Net, s: i32, j: u32) -> Net {
    return net_insert_below(n, s, j, 0i, 0u, false);
}

// Softmax weights of 32 slots, slot numbers from t0; slots ≥ keep get 0.
struct Wts {
    w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>,
    w4: vec4<f32>, w5: vec4<f32>, w6: vec4<f32>, w7: vec4<f32>,
}

fn exp4(k: vec4<i32>, m: f32, t: u32, keep: u32) -> vec4<f32> {
    return vec4<f32>(select(0.0, exp(key_value(k.x) - m), t < keep),
                     select(0.0, exp(key_value(k.y) - m), t + 1u < keep),
                     select(0.0, exp(key_value(k.z) - m), t + 2u < keep),
                     select(0.0, exp(key_value(k.w) - m), t + 3u < keep));
}

fn net_exp(n: Net, m: f32, t0: u32, keep: u32) -> Wts {
    return Wts(exp4(n.k0, m, t0, keep), exp4(n.k1, m, t0 + 4u, keep), exp4(n.k2, m, t0 + 8u, keep),
               exp4(n.k3, m, t0 + 12u, keep), exp4(n.k4, m, t0 + 16u, keep),
               exp4(n.k5, m, t0 + 20u, keep), exp4(n.k6, m, t0 + 24u, keep),
               exp4(n.k7, m, t0 + 28u, keep));
}

fn sum4(s: f32, v: vec4<f32>) -> f32 {
    return s + v.x + v.y + v.z + v.w;
}

// Adds the weights to s in slot order.
fn wts_sum(s: f32, w: Wts) -> f32 {
    return sum4(sum4(sum4(sum4(sum4(sum4(sum4(sum4(s, w.w0), w.w1), w.w2), w.w3), w.w4), w.w5),
                w.w6), w.w7);
}

fn wts_div(w: Wts, s: f32) -> Wts {
    return Wts(w.w0 / s, w.w1 / s, w.w2 / s, w.w3 / s, w.w4 / s, w.w5 / s, w.w6 / s, w.w7 / s);
}

// ---------------------------------------------------------------------------------------------
// Register variant without subgroups: one invocation per row.

// select_*
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> top_val: array<f32>;
@group(0) @binding(3) var<storage, read_write> top_idx: array<u32>;

// logits_*
@group(0) @binding(2) var<storage, read> kbuf: array<f32>;
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;

// attend_register / attend_tiled
@group(0) @binding(2) var<storage, read> vbuf: array<f32>;
@group(0) @binding(3) var<storage, read_write> att_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> att_idx: array<u32>;
@group(0) @binding(5) var<storage, read_write> att_w: array<f32>;

// 64 slots (a second net below the first) instead of 32.
override WIDE: bool = false;

// Slots t.. of a selection: indices, and the values re-read from the row (bit-exact, −0 kept).
fn put_sel(o: u32, t: u32, x: vec4<u32>, base: u32) {
    let keep = p.keep;
    if (t < keep) {
        top_idx[o + t] = x.x;
        top_val[o + t] = src[base + x.x];
    }
    if (t + 1u < keep) {
        top_idx[o + t + 1u] = x.y;
        top_val[o + t + 1u] = src[base + x.y];
    }
    if (t + 2u < keep) {
        top_idx[o + t + 2u] = x.z;
        top_val[o + t + 2u] = src[base + x.z];
    }
    if (t + 3u < keep) {
        top_idx[o + t + 3u] = x.w;
        top_val[o + t + 3u] = src[base + x.w];
    }
}

fn put_sel_net(o: u32, t0: u32, n: Net, base: u32) {
    put_sel(o, t0, n.x0, base);
    put_sel(o, t0 + 4u, n.x1, base);
    put_sel(o, t0 + 8u, n.x2, base);
    put_sel(o, t0 + 12u, n.x3, base);
    put_sel(o, t0 + 16u, n.x4, base);
    put_sel(o, t0 + 20u, n.x5, base);
    put_sel(o, t0 + 24u, n.x6, base);
    put_sel(o, t0 + 28u, n.x7, base);
}

// The top 32 (or 64 if WIDE) of the row at src[base..base + n]: a, then b.
struct Top {
    a: Net,
    b: Net,
}

fn top_of_row(base: u32) -> Top {
    var a = net_new();
    var b = net_new();
    for (var j = 0u; j < p.n; j++) {
        let s = order_key(src[base + j]);
        if (WIDE) {
            let lk = a.k7.w;
            b = net_insert_below(b, s, j, lk, a.x7.w, s > lk);
        }
        a = net_insert(a, s, j);
    }
    return Top(a, b);
}

@compute @workgroup_size(64)
fn select_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nw.x) * 64u + li;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.n;
    let top = top_of_row(base);
    let o = row * p.keep;
    put_sel_net(o, 0u, top.a, base);
    if (WIDE) {
        put_sel_net(o, 32u, top.b, base);
    }
}

fn put_att(o: u32, t: u32, w: vec4<f32>, x: vec4<u32>) {
    let keep = p.keep;
    if (t < keep) {
        att_w[o + t] = w.x;
        att_idx[o + t] = x.x;
    }
    if (t + 1u < keep) {
        att_w[o + t + 1u] = w.y;
        att_idx[o + t + 1u] = x.y;
    }
    if (t + 2u < keep) {
        att_w[o + t + 2u] = w.z;
        att_idx[o + t + 2u] = x.z;
    }
    if (t + 3u < keep) {
        att_w[o + t + 3u] = w.w;
        att_idx[o + t + 3u] = x.w;
    }
}

fn put_att_net(o: u32, t0: u32, w: Wts, n: Net) {
    put_att(o, t0, w.w0, n.x0);
    put_att(o, t0 + 4u, w.w1, n.x1);
    put_att(o, t0 + 8u, w.w2, n.x2);
    put_att(o, t0 + 12u, w.w3, n.x3);
    put_att(o, t0 + 16u, w.w4, n.x4);
    put_att(o, t0 + 20u, w.w5, n.x5);
    put_att(o, t0 + 24u, w.w6, n.x6);
    put_att(o, t0 + 28u, w.w7, n.x7);
}

// acc + Σ w·v[x, d] over 4 slots; empty slots (weight 0) read a clamped, valid row.
fn av4(acc: f32, w: vec4<f32>, x: vec4<u32>, vb: u32) -> f32 {
    let last = p.n - 1u;
    var a = acc;
    a += w.x * vbuf[vb + min(x.x, last) * p.v_stride];
    a += w.y * vbuf[vb + min(x.y, last) * p.v_stride];
    a += w.z * vbuf[vb + min(x.z, last) * p.v_stride];
    a += w.w * vbuf[vb + min(x.w, last) * p.v_stride];
    return a;
}

fn av_net(acc: f32, w: Wts, n: Net, vb: u32) -> f32 {
    var a = av4(acc, w.w0, n.x0, vb);
    a = av4(a, w.w1, n.x1, vb);
    a = av4(a, w.w2, n.x2, vb);
    a = av4(a, w.w3, n.x3, vb);
    a = av4(a, w.w4, n.x4, vb);
    a = av4(a, w.w5, n.x5, vb);
    a = av4(a, w.w6, n.x6, vb);
    return av4(a, w.w7, n.x7, vb);
}

// out[b, i, h·D + d] = Σ_t w_t · v[b, idx_t, h, d] over the kept keys of logits row (b, h, i).
@compute @workgroup_size(64)
fn attend_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nw.x) * 64u + li;
    if (row >= p.rows) {
        return;
    }
    let keep = p.keep;
    let top = top_of_row(row * p.n);
    let m = key_value(top.a.k0.x);
    var wa = net_exp(top.a, m, 0u, keep);
    var wb = net_exp(top.b, m, 32u, keep);
    var s = wts_sum(0.0, wa);
    if (WIDE) {
        s = wts_sum(s, wb);
    }
    wa = wts_div(wa, s);
    wb = wts_div(wb, s);
    let o = row * keep;
    put_att_net(o, 0u, wa, top.a);
    if (WIDE) {
        put_att_net(o, 32u, wb, top.b);
    }
    let i = row % p.lq;
    let bh = row / p.lq;
    let h = bh % p.heads;
    let b = bh / p.heads;
    let vb = b * p.n * p.v_stride + p.v_off + h * p.hd;
    let ob = (b * p.lq + i) * p.heads * p.hd + h * p.hd;
    for (var d = 0u; d < p.hd; d++) {
        var acc = av_net(0.0, wa, top.a, vb + d);
        if (WIDE) {
            acc = av_net(acc, wb, top.b, vb + d);
        }
        att_out[ob + d] = acc;
    }
}

// logits[bh, i, j] = Σ_d (scale·q[b, i, h, d]) · k[b, j, h, d]  (q scaled first, as PyTorch does).
// One invocation per 4 query rows × 4 keys.
@compute @workgroup_size(64)
fn logits_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let id = (wg.x + wg.y * nw.x) * 64u + li;
    let tiles_i = (p.lq + 3u) / 4u;
    let per_bh = tiles_i * p.tiles_j;
    let bh = id / per_bh;
    if (bh >= p.rows) {
        return;
    }
    let rem = id - bh * per_bh;
    let i0 = (rem / p.tiles_j) * 4u;
    let j0 = (rem % p.tiles_j) * 4u;
    let h = bh % p.heads;
    let b = bh / p.heads;
    let qrow = p.q_off + h * p.hd;
    let q0 = (b * p.lq + min(i0, p.lq - 1u)) * p.q_stride + qrow;
    let q1 = (b * p.lq + min(i0 + 1u, p.lq - 1u)) * p.q_stride + qrow;
    let q2 = (b * p.lq + min(i0 + 2u, p.lq - 1u)) * p.q_stride + qrow;
    let q3 = (b * p.lq + min(i0 + 3u, p.lq - 1u)) * p.q_stride + qrow;
    let krow = p.k_off + h * p.hd;
    let kb = vec4<u32>((b * p.n + min(j0, p.n - 1u)) * p.k_stride + krow,
                       (b * p.n + min(j0 + 1u, p.n - 1u)) * p.k_stride + krow,
                       (b * p.n + min(j0 + 2u, p.n - 1u)) * p.k_stride + krow,
                       (b * p.n + min(j0 + 3u, p.n - 1u)) * p.k_stride + krow);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var d = 0u; d < p.hd; d++) {
        let kv = vec4<f32>(kbuf[kb.x + d], kbuf[kb.y + d], kbuf[kb.z + d], kbuf[kb.w + d]);
        a0 += (src[q0 + d] * p.scale) * kv;
        a1 += (src[q1 + d] * p.scale) * kv;
        a2 += (src[q2 + d] * p.scale) * kv;
        a3 += (src[q3 + d] * p.scale) * kv;
    }
    store_logits4(bh, i0, j0, a0);
    store_logits4(bh, i0 + 1u, j0, a1);
    store_logits4(bh, i0 + 2u, j0, a2);
    store_logits4(bh, i0 + 3u, j0, a3);
}

fn store_logits4(bh: u32, i: u32, j0: u32, v: vec4<f32>) {
    if (i < p.lq) {
        let o = (bh * p.lq + i) * p.n + j0;
        if (j0 < p.n) {
            logits[o] = v.x;
        }
        if (j0 + 1u < p.n) {
            logits[o + 1u] = v.y;
        }
        if (j0 + 2u < p.n) {
            logits[o + 2u] = v.z;
        }
        if (j0 + 3u < p.n) {
            logits[o + 3u] = v.w;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiled variant (GPUs): bitonic sort in workgroup memory, barriers between stages.

const WG: u32 = 256u;
const SORT_N: u32 = 1024u; // entries per workgroup; WG invocations own 4 consecutive entries each

var<workgroup> sv: array<f32, SORT_N>;
var<workgroup> si: array<u32, SORT_N>;
var<workgroup> ew: array<f32, SORT_N>;

fn before(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
    return av > bv || (av == bv && ai < bi);
}

// Loads `nrows` rows from row0 into sv/si, each padded to p2 entries with (−inf, index ≥ n)
// sentinels, which sort after every real entry, −inf ones included.
fn bitonic_load(row0: u32, nrows: u32, lid: u32) {
    let total = nrows * p.p2;
    // −inf built at run time: a constant infinity is a shader-creation error.
    let ninf = -bitcast<f32>(0x7f800000u | (p.n & 0u));
    for (var e = lid; e < total; e += WG) {
        let r = e / p.p2;
        let c = e - r * p.p2;
        var v = ninf;
        if (c < p.n) {
            v = src[(row0 + r) * p.n + c];
        }
        sv[e] = v;
        si[e] = c;
    }
    workgroupBarrier();
}

// Compare-exchange of entries lo < hi of the network for merge size kk (descending where bit kk of
// the segment-local index is clear, so every segment ends descending).
fn cmpx(lo: u32, hi: u32, kk: u32) {
    let desc = ((lo & (p.p2 - 1u)) & kk) == 0u;
    let av = sv[lo];
    let ai = si[lo];
    let bv = sv[hi];
    let bi = si[hi];
    if (before(bv, bi, av, ai) == desc) {
        sv[lo] = bv;
        si[lo] = bi;
        sv[hi] = av;
        si[hi] = ai;
    }
}

// Sorts each p2-long segment of sv/si into the order above. Stages with distance ≥ 4 pair entries
// across invocations (a barrier each); the distance-2 and -1 stages of each merge stay within an
// invocation's own 4 entries and share one barrier.
fn bitonic_sort(nrows: u32, lid: u32) {
    let total = nrows * p.p2;
    for (var kk = 2u; kk <= p.p2; kk <<= 1u) {
        for (var j = kk >> 1u; j >= 4u; j >>= 1u) {
            for (var t = lid; t < total / 2u; t += WG) {
                let lo = 2u * t - (t & (j - 1u));
                cmpx(lo, lo + j, kk);
            }
            workgroupBarrier();
        }
        let e = 4u * lid;
        if (e < total) {
            if (kk >= 4u) {
                cmpx(e, e + 2u, kk);
                cmpx(e + 1u, e + 3u, kk);
            }
            cmpx(e, e + 1u, kk);
            cmpx(e + 2u, e + 3u, kk);
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn select_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row0 = (wg.x + wg.y * nw.x) * p.group_rows;
    if (row0 >= p.rows) {
        return;
    }
    let nrows = min(p.group_rows, p.rows - row0);
    bitonic_load(row0, nrows, lid);
    bitonic_sort(nrows, lid);
    let kk = p.keep;
    for (var e = lid; e < nrows * kk; e += WG) {
        let r = e / kk;
        let t = e - r * kk;
        top_val[row0 * kk + e] = sv[r * p.p2 + t];
        top_idx[row0 * kk + e] = si[r * p.p2 + t];
    }
}

@compute @workgroup_size(256)
fn attend_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row0 = (wg.x + wg.y * nw.x) * p.group_rows;
    if (row0 >= p.rows) {
        return;
    }
    let nrows = min(p.group_rows, p.rows - row0);
    bitonic_load(row0, nrows, lid);
    bitonic_sort(nrows, lid);
    let kk = p.keep;
    let pp = p.p2;
    // Unnormalised weights exp(x − max); the max is each row's first entry.
    for (var e = lid; e < nrows * kk; e += WG) {
        let r = e / kk;
        let t = e - r * kk;
        ew[e] = exp(sv[r * pp + t] - sv[r * pp]);
    }
    workgroupBarrier();
    // Row sums in slot order; sv is free to hold them now.
    for (var r = lid; r < nrows; r += WG) {
        var s = 0.0;
        for (var t = 0u; t < kk; t++) {
            s += ew[r * kk + t];
        }
        sv[r * pp] = s;
    }
    workgroupBarrier();
    for (var e = lid; e < nrows * kk; e += WG) {
        let r = e / kk;
        let t = e - r * kk;
        let w = ew[e] / sv[r * pp];
        ew[e] = w;
        att_w[row0 * kk + e] = w;
        att_idx[row0 * kk + e] = si[r * pp + t];
    }
    workgroupBarrier();
    for (var e = lid; e < nrows * p.hd; e += WG) {
        let r = e / p.hd;
        let d = e - r * p.hd;
        let row = row0 + r;
        let i = row % p.lq;
        let bh = row / p.lq;
        let h = bh % p.heads;
        let b = bh / p.heads;
        let vb = b * p.n * p.v_stride + p.v_off + h * p.hd + d;
        var acc = 0.0;
        for (var t = 0u; t < kk; t++) {
            acc += ew[r * kk + t] * vbuf[vb + si[r * pp + t] * p.v_stride];
        }
        att_out[(b * p.lq + i) * p.heads * p.hd + h * p.hd + d] = acc;
    }
}

// 16 query rows × 16 keys per workgroup; q and k tiles of 16 along d go through workgroup memory.
var<workgroup> tq: array<f32, 256>;
var<workgroup> tk: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn logits_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                @builtin(local_invocation_id) l: vec3<u32>) {
    let gid = wg.x + wg.y * nw.x;
    let tiles_i = (p.lq + 15u) / 16u;
    let per_bh = tiles_i * p.tiles_j;
    let bh = gid / per_bh;
    if (bh >= p.rows) {
        return;
    }
    let rem = gid - bh * per_bh;
    let i0 = (rem / p.tiles_j) * 16u;
    let j0 = (rem % p.tiles_j) * 16u;
    let h = bh % p.heads;
    let b = bh / p.heads;
    let lx = l.x;
    let ly = l.y;
    // Loader rows: query i0 + ly and key j0 + ly, clamped (clamped rows are never stored).
    let qrow = (b * p.lq + min(i0 + ly, p.lq - 1u)) * p.q_stride + p.q_off + h * p.hd;
    let krow = (b * p.n + min(j0 + ly, p.n - 1u)) * p.k_stride + p.k_off + h * p.hd;
    var acc = 0.0;
    for (var d0 = 0u; d0 < p.hd; d0 += 16u) {
        let d = d0 + lx;
        var qv = 0.0;
        var kv = 0.0;
        if (d < p.hd) {
            qv = src[qrow + d] * p.scale;
            kv = kbuf[krow + d];
        }
        tq[ly * 16u + lx] = qv;
        tk[ly * 16u + lx] = kv;
        workgroupBarrier();
        for (var dd = 0u; dd < 16u; dd++) {
            acc += tq[ly * 16u + dd] * tk[lx * 16u + dd];
        }
        workgroupBarrier();
    }
    let i = i0 + ly;
    let j = j0 + lx;
    if (i < p.lq && j < p.n) {
        logits[(bh * p.lq + i) * p.n + j] = acc;
    }
}

// ---------------------------------------------------------------------------------------------
// Backward of the top-K attention, from the forward's kept indices and softmax weights P
// ([B, H, Lq, K]; the logits are not recomputed). Only kept entries carry gradient:
//   dP_t = dO_i·v[idx_t],  dS_t = P_t·(dP_t − Σ_u P_u·dP_u)
//   dq[i] = scale·Σ_t dS_t·k[idx_t]
//   dk[j] = scale·Σ_{(i,t): idx_it = j} dS_it·q[i],  dv[j] = Σ_{(i,t): idx_it = j} P_it·dO[i]
// The key-side sums are gathers, not scatters: tk_bw_rows also writes a slot map, byte j of row
// i holding t + 1 when key j is row i's slot t (0: not kept), so tk_bw_dkv walks the rows of
// each key in ascending order and adds up a fixed sequence (deterministic, no atomics).
//   tk_bw_rows  per (b, h, i): dS, slot map           tk_bw_dq   per element of dq
//   tk_bw_dkv   per (b, h, 4 keys, 4 columns): dk, dv

struct TkBw {
    batch: u32, heads: u32, lq: u32, lk: u32,
    hd: u32, keep: u32, width: u32, map_words: u32,
    q_stride: u32, q_off: u32, k_stride: u32, k_off: u32,
    v_stride: u32, v_off: u32, scale: f32, col_chunks: u32,
}

@group(0) @binding(0) var<uniform> tb: TkBw;

// Add into the destination instead of overwriting it (dk and dv have one switch each).
override ACCUM: bool = false;
override ACCUM_V: bool = false;

fn tb_index(wg: vec3<u32>, nw: vec3<u32>, li: u32) -> u32 {
    return (wg.x + wg.y * nw.x) * 64u + li;
}

@group(0) @binding(1) var<storage, read> br_v: array<f32>;
@group(0) @binding(2) var<storage, read> br_do: array<f32>;
@group(0) @binding(3) var<storage, read> br_idx: array<u32>;
@group(0) @binding(4) var<storage, read> br_w: array<f32>;
@group(0) @binding(5) var<storage, read_write> br_ds: array<f32>;
@group(0) @binding(6) var<storage, read_write> br_map: array<u32>;

@compute @workgroup_size(64)
fn tk_bw_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let r = tb_index(wg, nw, li);
    if (r >= tb.batch * tb.heads * tb.lq) {
        return;
    }
    let i = r % tb.lq;
    let bh = r / tb.lq;
    let h = bh % tb.heads;
    let b = bh / tb.heads;
    let o0 = (b * tb.lq + i) * tb.width + h * tb.hd;
    let vrow = b * tb.lk * tb.v_stride + tb.v_off + h * tb.hd;
    let base = r * tb.keep;
    let last = tb.lk - 1u;
    var delta = 0.0;
    for (var t = 0u; t < tb.keep; t++) {
        let vb = vrow + min(br_idx[base + t], last) * tb.v_stride;
        var dp = 0.0;
        for (var d = 0u; d < tb.hd; d++) {
            dp += br_do[o0 + d] * br_v[vb + d];
        }
        br_ds[base + t] = dp;
        delta += br_w[base + t] * dp;
    }
    for (var t = 0u; t < tb.keep; t++) {
        br_ds[base + t] = br_w[base + t] * (br_ds[base + t] - delta);
    }
    let mb = r * tb.map_words;
    for (var m = 0u; m < tb.map_words; m++) {
        br_map[mb + m] = 0u;
    }
    // This invocation owns the row's words, so read-modify-write is race-free. Indices ≥ Lk
    // (never produced by the forward) are left out of the map.
    for (var t = 0u; t < tb.keep; t++) {
        let j = br_idx[base + t];
        if (j < tb.lk) {
            let sh = 8u * (j % 4u);
            let a = mb + j / 4u;
            br_map[a] = (br_map[a] & ~(0xffu << sh)) | ((t + 1u) << sh);
        }
    }
}

@group(0) @binding(1) var<storage, read> bq_k: array<f32>;
@group(0) @binding(2) var<storage, read> bq_idx: array<u32>;
@group(0) @binding(3) var<storage, read> bq_ds: array<f32>;
@group(0) @binding(4) var<storage, read_write> bq_dq: array<f32>;

// One invocation per element (b, i, h·D + d) of dq (dense [B, Lq, width]).
@compute @workgroup_size(64)
fn tk_bw_dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let e = tb_index(wg, nw, li);
    if (e >= tb.batch * tb.lq * tb.width) {
        return;
    }
    let c = e % tb.width;
    let i = (e / tb.width) % tb.lq;
    let b = e / (tb.width * tb.lq);
    let h = c / tb.hd;
    let base = ((b * tb.heads + h) * tb.lq + i) * tb.keep;
    let kcol = b * tb.lk * tb.k_stride + tb.k_off + c;
    let last = tb.lk - 1u;
    var acc = 0.0;
    for (var t = 0u; t < tb.keep; t++) {
        acc += bq_ds[base + t] * bq_k[kcol + min(bq_idx[base + t], last) * tb.k_stride];
    }
    acc *= tb.scale;
    if (ACCUM) {
        bq_dq[e] = bq_dq[e] + acc;
    } else {
        bq_dq[e] = acc;
    }
}

@group(0) @binding(1) var<storage, read> bk_q: array<f32>;
@group(0) @binding(2) var<storage, read> bk_do: array<f32>;
@group(0) @binding(3) var<storage, read> bk_w: array<f32>;
@group(0) @binding(4) var<storage, read> bk_ds: array<f32>;
@group(0) @binding(5) var<storage, read> bk_map: array<u32>;
@group(0) @binding(6) var<storage, read_write> bk_dk: array<f32>;
@group(0) @binding(7) var<storage, read_write> bk_dv: array<f32>;

fn put_dkv(o: u32, n: u32, ak: vec4<f32>, av: vec4<f32>) {
    let a = array<f32, 4>(ak.x, ak.y, ak.z, ak.w);
    let v = array<f32, 4>(av.x, av.y, av.z, av.w);
    for (var u = 0u; u < n; u++) {
        if (ACCUM) {
            bk_dk[o + u] = bk_dk[o + u] + a[u];
        } else {
            bk_dk[o + u] = a[u];
        }
        if (ACCUM_V) {
            bk_dv[o + u] = bk_dv[o + u] + v[u];
        } else {
            bk_dv[o + u] = v[u];
        }
    }
}

// Terms of one key of the map word: slot byte `sl` (0: row not kept by this key).
struct KeyAcc {
    k: vec4<f32>,
    v: vec4<f32>,
}

fn key_acc(a: KeyAcc, sl: u32, r: u32, qv: vec4<f32>, dov: vec4<f32>) -> KeyAcc {
    if (sl == 0u) {
        return a;
    }
    let s = r * tb.keep + sl - 1u;
    return KeyAcc(a.k + bk_ds[s] * qv, a.v + bk_w[s] * dov);
}

fn put_key(b: u32, j: u32, h: u32, d0: u32, a: KeyAcc) {
    if (j < tb.lk) {
        put_dkv((b * tb.lk + j) * tb.width + h * tb.hd + d0, min(4u, tb.hd - d0), a.k * tb.scale,
                a.v);
    }
}

// One invocation per (b, h, keys 4g .. 4g + 3, columns 4c .. 4c + 3 of the head): walks the Lq
// rows of (b, h) in order and adds the kept ones' terms. One map word holds the 4 keys' slots and
// one q / dO load serves all 4 keys (on lavapipe the map walk, not the arithmetic, is the cost).
@compute @workgroup_size(64)
fn tk_bw_dkv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let e = tb_index(wg, nw, li);
    let per_h = tb.map_words * tb.col_chunks;
    if (e >= tb.batch * tb.heads * per_h) {
        return;
    }
    let cc = e % tb.col_chunks;
    let g = (e / tb.col_chunks) % tb.map_words;
    let bh = e / per_h;
    let h = bh % tb.heads;
    let b = bh / tb.heads;
    let d0 = 4u * cc;
    let dl = tb.hd - 1u;
    let c = vec4<u32>(d0, min(d0 + 1u, dl), min(d0 + 2u, dl), min(d0 + 3u, dl)) + h * tb.hd;
    let z = vec4<f32>(0.0);
    var a0 = KeyAcc(z, z);
    var a1 = a0;
    var a2 = a0;
    var a3 = a0;
    for (var i = 0u; i < tb.lq; i++) {
        let r = bh * tb.lq + i;
        let word = bk_map[r * tb.map_words + g];
        if (word != 0u) {
            let qb = (b * tb.lq + i) * tb.q_stride + tb.q_off;
            let ob = (b * tb.lq + i) * tb.width;
            let qv = vec4<f32>(bk_q[qb + c.x], bk_q[qb + c.y], bk_q[qb + c.z], bk_q[qb + c.w]);
            let dov = vec4<f32>(bk_do[ob + c.x], bk_do[ob + c.y], bk_do[ob + c.z], bk_do[ob + c.w]);
            a0 = key_acc(a0, word & 0xffu, r, qv, dov);
            a1 = key_acc(a1, (word >> 8u) & 0xffu, r, qv, dov);
            a2 = key_acc(a2, (word >> 16u) & 0xffu, r, qv, dov);
            a3 = key_acc(a3, word >> 24u, r, qv, dov);
        }
    }
    let j0 = 4u * g;
    put_key(b, j0, h, d0, a0);
    put_key(b, j0 + 1u, h, d0, a1);
    put_key(b, j0 + 2u, h, d0, a2);
    put_key(b, j0 + 3u, h, d0, a3);
}

// ---------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------
// dense_weights: the kept weights att_w [rows, K] written at their key indices into a zeroed
// dense [rows, n] matrix (rows = B·H·Lq). Training with attention dropout runs the top-K weights
// through the dense GEMM path; one invocation per kept entry (indices are distinct per row).

@group(0) @binding(1) var<storage, read> dw_idx: array<u32>;
@group(0) @binding(2) var<storage, read> dw_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw_out: array<f32>;

@compute @workgroup_size(64)
fn dense_weights(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let e = (wg.x + wg.y * nw.x) * 64u + li;
    if (e >= p.rows * p.keep) {
        return;
    }
    dw_out[(e / p.keep) * p.n + dw_idx[e]] = dw_w[e];
}

// ==== SUBGROUP KERNELS ==== (the host compiles everything below only on devices with subgroups)
//
// attend_subgroup fuses logits, selection, softmax and w·v for head width 32, K ≤ 32, 16-byte
// aligned q/k/v rows, one subgroup of 8 per workgroup, 8 query rows per invocation (64 per
// subgroup). Each key (and value) row is loaded once per subgroup as one vec4 per lane and
// broadcast, so every load serves 64 query rows; w·v runs densely over all keys, picking each
// row's weight for the key out of its 32 slots, which costs far fewer loads than gathering the
// kept value rows one by one.

@group(0) @binding(1) var<storage, read> q4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> sg_idx: array<u32>;
@group(0) @binding(6) var<storage, read_write> sg_w: array<f32>;

// One 32-wide row: component c of field a{m} is element 4m + c.
struct Row32 {
    a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
    a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>,
}

fn load_q(b: u32, i: u32, h: u32) -> Row32 {
    let o = ((b * p.lq + min(i, p.lq - 1u)) * p.q_stride + p.q_off + h * 32u) / 4u;
    let s = p.scale;
    return Row32(q4[o] * s, q4[o + 1u] * s, q4[o + 2u] * s, q4[o + 3u] * s,
                 q4[o + 4u] * s, q4[o + 5u] * s, q4[o + 6u] * s, q4[o + 7u] * s);
}

// The 32-wide row of which lane m holds elements 4m .. 4m + 3.
fn gather_row(v: vec4<f32>) -> Row32 {
    return Row32(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u),
                 subgroupBroadcast(v, 3u), subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
                 subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

fn qk(q: Row32, k: Row32) -> f32 {
    var s = dot(q.a0, k.a0);
    s += dot(q.a1, k.a1);
    s += dot(q.a2, k.a2);
    s += dot(q.a3, k.a3);
    s += dot(q.a4, k.a4);
    s += dot(q.a5, k.a5);
    s += dot(q.a6, k.a6);
    s += dot(q.a7, k.a7);
    return s;
}

fn pick4(a: vec4<f32>, w: vec4<f32>, x: vec4<u32>, j: u32) -> vec4<f32> {
    return vec4<f32>(select(a.x, w.x, x.x == j), select(a.y, w.y, x.y == j),
                     select(a.z, w.z, x.z == j), select(a.w, w.w, x.w == j));
}

// The weight of key j (0 unless kept); at most one slot matches, so the sum is exact.
fn weight_of(n: Net, w: Wts, j: u32) -> f32 {
    var a = pick4(vec4<f32>(0.0), w.w0, n.x0, j);
    a = pick4(a, w.w1, n.x1, j);
    a = pick4(a, w.w2, n.x2, j);
    a = pick4(a, w.w3, n.x3, j);
    a = pick4(a, w.w4, n.x4, j);
    a = pick4(a, w.w5, n.x5, j);
    a = pick4(a, w.w6, n.x6, j);
    a = pick4(a, w.w7, n.x7, j);
    return (a.x + a.y) + (a.z + a.w);
}

fn axpy(a: Row32, w: f32, v: Row32) -> Row32 {
    return Row32(a.a0 + w * v.a0, a.a1 + w * v.a1, a.a2 + w * v.a2, a.a3 + w * v.a3,
                 a.a4 + w * v.a4, a.a5 + w * v.a5, a.a6 + w * v.a6, a.a7 + w * v.a7);
}

fn put_sg(o: u32, t: u32, w: vec4<f32>, x: vec4<u32>) {
    let keep = p.keep;
    if (t < keep) {
        sg_w[o + t] = w.x;
        sg_idx[o + t] = x.x;
    }
    if (t + 1u < keep) {
        sg_w[o + t + 1u] = w.y;
        sg_idx[o + t + 1u] = x.y;
    }
    if (t + 2u < keep) {
        sg_w[o + t + 2u] = w.z;
        sg_idx[o + t + 2u] = x.z;
    }
    if (t + 3u < keep) {
        sg_w[o + t + 3u] = w.w;
        sg_idx[o + t + 3u] = x.w;
    }
}

// Softmax of a finished net; writes weights and indices of row `row` (if it exists).
fn finish_row(n: Net, row: u32, valid: bool) -> Wts {
    let keep = p.keep;
    var w = net_exp(n, key_value(n.k0.x), 0u, keep);
    w = wts_div(w, wts_sum(0.0, w));
    if (valid) {
        let o = row * keep;
        put_sg(o, 0u, w.w0, n.x0);
        put_sg(o, 4u, w.w1, n.x1);
        put_sg(o, 8u, w.w2, n.x2);
        put_sg(o, 12u, w.w3, n.x3);
        put_sg(o, 16u, w.w4, n.x4);
        put_sg(o, 20u, w.w5, n.x5);
        put_sg(o, 24u, w.w6, n.x6);
        put_sg(o, 28u, w.w7, n.x7);
    }
    return w;
}

fn put_out(b: u32, i: u32, h: u32, a: Row32) {
    if (i < p.lq) {
        let o = ((b * p.lq + i) * p.heads * 32u + h * 32u) / 4u;
        out4[o] = a.a0;
        out4[o + 1u] = a.a1;
        out4[o + 2u] = a.a2;
        out4[o + 3u] = a.a3;
        out4[o + 4u] = a.a4;
        out4[o + 5u] = a.a5;
        out4[o + 6u] = a.a6;
        out4[o + 7u] = a.a7;
    }
}

const SG_LANE_ROWS: u32 = 8u;

// Workgroup g covers query rows 64·(g mod blocks) .. of logits row block bh = g / blocks; lane l
// owns rows i0 .. i0 + 7.
struct SgRows {
    bh: u32,
    b: u32,
    h: u32,
    i0: u32,
}

fn sg_rows(g: u32, l: u32) -> SgRows {
    let rows = 8u * SG_LANE_ROWS;
    let blocks = (p.lq + rows - 1u) / rows;
    let bh = g / blocks;
    let i0 = (g - bh * blocks) * rows + l * SG_LANE_ROWS;
    return SgRows(bh, bh / p.heads, bh % p.heads, i0);
}

@compute @workgroup_size(8)
fn attend_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                   @builtin(subgroup_invocation_id) l: u32) {
    let r = sg_rows(wg.x + wg.y * nw.x, l);
    if (r.bh >= p.rows) {
        return;
    }
    let q0 = load_q(r.b, r.i0, r.h);
    let q1 = load_q(r.b, r.i0 + 1u, r.h);
    let q2 = load_q(r.b, r.i0 + 2u, r.h);
    let q3 = load_q(r.b, r.i0 + 3u, r.h);
    let q4 = load_q(r.b, r.i0 + 4u, r.h);
    let q5 = load_q(r.b, r.i0 + 5u, r.h);
    let q6 = load_q(r.b, r.i0 + 6u, r.h);
    let q7 = load_q(r.b, r.i0 + 7u, r.h);
    var n0 = net_new();
    var n1 = net_new();
    var n2 = net_new();
    var n3 = net_new();
    var n4 = net_new();
    var n5 = net_new();
    var n6 = net_new();
    var n7 = net_new();
    let kb = (r.b * p.n * p.k_stride + p.k_off + r.h * 32u) / 4u + l;
    let ks = p.k_stride / 4u;
    for (var j = 0u; j < p.n; j++) {
        let k = gather_row(k4[kb + j * ks]);
        n0 = net_insert(n0, order_key(qk(q0, k)), j);
        n1 = net_insert(n1, order_key(qk(q1, k)), j);
        n2 = net_insert(n2, order_key(qk(q2, k)), j);
        n3 = net_insert(n3, order_key(qk(q3, k)), j);
        n4 = net_insert(n4, order_key(qk(q4, k)), j);
        n5 = net_insert(n5, order_key(qk(q5, k)), j);
        n6 = net_insert(n6, order_key(qk(q6, k)), j);
        n7 = net_insert(n7, order_key(qk(q7, k)), j);
    }
    let row = r.bh * p.lq + r.i0;
    let w0 = finish_row(n0, row, r.i0 < p.lq);
    let w1 = finish_row(n1, row + 1u, r.i0 + 1u < p.lq);
    let w2 = finish_row(n2, row + 2u, r.i0 + 2u < p.lq);
    let w3 = finish_row(n3, row + 3u, r.i0 + 3u < p.lq);
    let w4 = finish_row(n4, row + 4u, r.i0 + 4u < p.lq);
    let w5 = finish_row(n5, row + 5u, r.i0 + 5u < p.lq);
    let w6 = finish_row(n6, row + 6u, r.i0 + 6u < p.lq);
    let w7 = finish_row(n7, row + 7u, r.i0 + 7u < p.lq);
    let z = vec4<f32>(0.0);
    var a0 = Row32(z, z, z, z, z, z, z, z);
    var a1 = a0;
    var a2 = a0;
    var a3 = a0;
    var a4 = a0;
    var a5 = a0;
    var a6 = a0;
    var a7 = a0;
    let vb = (r.b * p.n * p.v_stride + p.v_off + r.h * 32u) / 4u + l;
    let vs = p.v_stride / 4u;
    for (var j = 0u; j < p.n; j++) {
        let v = gather_row(v4[vb + j * vs]);
        a0 = axpy(a0, weight_of(n0, w0, j), v);
        a1 = axpy(a1, weight_of(n1, w1, j), v);
        a2 = axpy(a2, weight_of(n2, w2, j), v);
        a3 = axpy(a3, weight_of(n3, w3, j), v);
        a4 = axpy(a4, weight_of(n4, w4, j), v);
        a5 = axpy(a5, weight_of(n5, w5, j), v);
        a6 = axpy(a6, weight_of(n6, w6, j), v);
        a7 = axpy(a7, weight_of(n7, w7, j), v);
    }
    put_out(r.b, r.i0, r.h, a0);
    put_out(r.b, r.i0 + 1u, r.h, a1);
    put_out(r.b, r.i0 + 2u, r.h, a2);
    put_out(r.b, r.i0 + 3u, r.h, a3);
    put_out(r.b, r.i0 + 4u, r.h, a4);
    put_out(r.b, r.i0 + 5u, r.h, a5);
    put_out(r.b, r.i0 + 6u, r.h, a6);
    put_out(r.b, r.i0 + 7u, r.h, a7);
}

// The logits attend_subgroup selects from, computed by the same code (tests compare selections).
@compute @workgroup_size(8)
fn logits_subgroup(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                   @builtin(subgroup_invocation_id) l: u32) {
    let r = sg_rows(wg.x + wg.y * nw.x, l);
    if (r.bh >= p.rows) {
        return;
    }
    let kb = (r.b * p.n * p.k_stride + p.k_off + r.h * 32u) / 4u + l;
    let ks = p.k_stride / 4u;
    for (var i = r.i0; i < r.i0 + SG_LANE_ROWS; i++) {
        let q = load_q(r.b, i, r.h);
        let o = (r.bh * p.lq + i) * p.n;
        for (var j = 0u; j < p.n; j++) {
            let s = qk(q, gather_row(k4[kb + j * ks]));
            if (i < p.lq) {
                logits[o + j] = s;
            }
        }
    }
}
