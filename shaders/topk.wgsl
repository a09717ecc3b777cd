// Top-K selection and top-K sparse attention.
//
// Order used by every kernel: entry a comes before entry b iff a.value > b.value, or the values are
// equal and a.index < b.index. On NaN-free rows this is a strict total order of (value, index), so
// the top K of a row, and their order, are unique: both variants and the CPU reference must agree
// bit for bit.
//
// Entry points (the host binds exactly the tensors each one uses, from binding 1):
//   select_register / select_tiled   rows of `src` -> top_val, top_idx             [rows, keep]
//   logits_register / logits_tiled   q, k views    -> logits                       [B, H, Lq, Lk]
//   attend_register / attend_tiled   logits, v view -> out [B, Lq, H·D], indices, weights [B, H, Lq, keep]
//
// Linear workgroup id: the host splits large counts over a 2-D grid (wg.x + wg.y * num_workgroups.x).

struct Params {
    rows: u32,      // select/attend: rows of the logits; logits: B·H
    n: u32,         // row length (Lk)
    keep: u32,      // K
    p2: u32,        // n rounded up to a power of two (tiled selection)
    heads: u32,
    lq: u32,
    hd: u32,        // head width D
    group_rows: u32, // tiled selection: rows sorted together by one workgroup
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    scale: f32,
    tiles_j: u32,   // logits: key tiles per row tile
}

@group(0) @binding(0) var<uniform> p: Params;

// Logits rows for select_* and attend_*; the q buffer for logits_*.
@group(0) @binding(1) var<storage, read> src: array<f32>;

// select_*
@group(0) @binding(2) var<storage, read_write> top_val: array<f32>;
@group(0) @binding(3) var<storage, read_write> top_idx: array<u32>;

// logits_*
@group(0) @binding(2) var<storage, read> kbuf: array<f32>;
@group(0) @binding(3) var<storage, read_write> logits: array<f32>;

// attend_*
@group(0) @binding(2) var<storage, read> vbuf: array<f32>;
@group(0) @binding(3) var<storage, read_write> att_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> att_idx: array<u32>;
@group(0) @binding(5) var<storage, read_write> att_w: array<f32>;

const MAXK: u32 = 64u;

fn neg_inf() -> f32 {
    // Built at run time: a constant infinity is a shader-creation error in WGSL.
    return -bitcast<f32>(0x7f800000u | p.n * 0u);
}

fn before(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
    return av > bv || (av == bv && ai < bi);
}

// ---------------------------------------------------------------------------------------------
// Register variant: one invocation per row, no barriers.

var<private> tv: array<f32, MAXK>;
var<private> ti: array<u32, MAXK>;

// Leaves the top `keep` of the row starting at src[base] in tv/ti, sorted. Elements arrive in index
// order, so an equal value never displaces an earlier one: the shift stops at values >= v.
fn top_row_register(base: u32) {
    let n = p.n;
    let kk = p.keep;
    var cnt = 0u;
    for (var j = 0u; j < n; j++) {
        let v = src[base + j];
        if (cnt < kk || v > tv[kk - 1u]) {
            var q = min(cnt, kk - 1u);
            while (q > 0u && tv[q - 1u] < v) {
                tv[q] = tv[q - 1u];
                ti[q] = ti[q - 1u];
                q--;
            }
            tv[q] = v;
            ti[q] = j;
            cnt = min(cnt + 1u, kk);
        }
    }
}

@compute @workgroup_size(64)
fn select_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nw.x) * 64u + li;
    if (row >= p.rows) {
        return;
    }
    top_row_register(row * p.n);
    let o = row * p.keep;
    for (var t = 0u; t < p.keep; t++) {
        top_val[o + t] = tv[t];
        top_idx[o + t] = ti[t];
    }
}

// out[b, i, h·D + d] = Σ_t w_t · v[b, idx_t, h, d] over the kept keys of logits row (b, h, i).
@compute @workgroup_size(64)
fn attend_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nw.x) * 64u + li;
    if (row >= p.rows) {
        return;
    }
    top_row_register(row * p.n);
    let kk = p.keep;
    let m = tv[0];
    var s = 0.0;
    for (var t = 0u; t < kk; t++) {
        let e = exp(tv[t] - m);
        tv[t] = e;
        s += e;
    }
    let o = row * kk;
    for (var t = 0u; t < kk; t++) {
        let w = tv[t] / s;
        tv[t] = w;
        att_w[o + t] = w;
        att_idx[o + t] = ti[t];
    }
    let i = row % p.lq;
    let bh = row / p.lq;
    let h = bh % p.heads;
    let b = bh / p.heads;
    let vbase = b * p.n * p.v_stride + p.v_off + h * p.hd;
    let obase = (b * p.lq + i) * p.heads * p.hd + h * p.hd;
    for (var d = 0u; d < p.hd; d++) {
        var acc = 0.0;
        for (var t = 0u; t < kk; t++) {
            acc += tv[t] * vbuf[vbase + ti[t] * p.v_stride + d];
        }
        att_out[obase + d] = acc;
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
    var qb: array<u32, 4>;
    var kb: array<u32, 4>;
    for (var r = 0u; r < 4u; r++) {
        let i = min(i0 + r, p.lq - 1u);
        let j = min(j0 + r, p.n - 1u);
        qb[r] = (b * p.lq + i) * p.q_stride + p.q_off + h * p.hd;
        kb[r] = (b * p.n + j) * p.k_stride + p.k_off + h * p.hd;
    }
    var acc: array<vec4<f32>, 4>;
    for (var d = 0u; d < p.hd; d++) {
        let kv = vec4<f32>(kbuf[kb[0] + d], kbuf[kb[1] + d], kbuf[kb[2] + d], kbuf[kb[3] + d]);
        for (var r = 0u; r < 4u; r++) {
            acc[r] += (src[qb[r] + d] * p.scale) * kv;
        }
    }
    for (var r = 0u; r < 4u; r++) {
        let i = i0 + r;
        if (i < p.lq) {
            let o = (bh * p.lq + i) * p.n;
            for (var c = 0u; c < 4u; c++) {
                if (j0 + c < p.n) {
                    logits[o + j0 + c] = acc[r][c];
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiled variant: workgroup memory and barriers.

const WG: u32 = 256u;
const SORT_N: u32 = 1024u;

var<workgroup> sv: array<f32, SORT_N>;
var<workgroup> si: array<u32, SORT_N>;
var<workgroup> ew: array<f32, SORT_N>;

// Loads `nrows` rows from row0 into sv/si, each padded to p2 entries with (−inf, index ≥ n)
// sentinels, which sort after every real entry, −inf ones included.
fn bitonic_load(row0: u32, nrows: u32, lid: u32) {
    let total = nrows * p.p2;
    let ninf = neg_inf();
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

// Sorts each p2-long segment of sv/si into the order above (a bitonic network on the segment-local
// index, so all segments end descending).
fn bitonic_sort(nrows: u32, lid: u32) {
    let pp = p.p2;
    let half = nrows * pp / 2u;
    for (var kk = 2u; kk <= pp; kk <<= 1u) {
        for (var j = kk >> 1u; j > 0u; j >>= 1u) {
            for (var t = lid; t < half; t += WG) {
                let lo = 2u * t - (t & (j - 1u));
                let hi = lo + j;
                let desc = ((lo & (pp - 1u)) & kk) == 0u;
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
            workgroupBarrier();
        }
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
    // Row sums, summed in the same order as the register variant; sv is free to hold them now.
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
        let vbase = b * p.n * p.v_stride + p.v_off + h * p.hd + d;
        var acc = 0.0;
        for (var t = 0u; t < kk; t++) {
            acc += ew[r * kk + t] * vbuf[vbase + si[r * pp + t] * p.v_stride];
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
