// Swin window kernels (mmdet-2.x ShiftWindowMSA / PatchMerging): pure data movement, no barriers.
//
// One invocation moves one channel vector (a scalar), or K consecutive vec4s of one token in the
// `_v4` entries (C % 4K == 0): K = 4 cuts lavapipe's per-invocation cost ~15%; GPUs use K = 1 so
// neighbouring invocations touch neighbouring vec4s.
// The grid is 3-D so that the window / row / image index comes from the workgroup id: only the
// position inside a window or a row is divided per invocation, and that division is by the
// override constants WIN and CV, which the compiler turns into multiplies (lavapipe has no vector
// integer division and would otherwise run one scalar `div` per lane).

override WIN: u32 = 7u; // window side
override CV: u32 = 1u;  // channel vectors per token: C (scalar entries) or C / 4 (vec4 entries)
override K: u32 = 1u;   // vec4s per invocation in the `_v4` entries; divides CV
// Partition and reverse add into their output instead of overwriting it: each is the other's
// backward, and gradients accumulate into the caller's tensor.
override ACCUM: bool = false;

struct Params {
    h: u32,     // unpadded rows (patch merge: input rows)
    w: u32,     // unpadded columns (patch merge: input columns)
    hp: u32,    // padded rows (patch merge: output rows)
    wp: u32,    // padded columns (patch merge: output columns)
    shift: u32,
    nww: u32,   // windows per row of the padded map
    nw: u32,    // windows per image
    n: u32,     // heads (relative position bias); batch (win_partition_ln)
    eps: f32,   // LayerNorm epsilon (win_partition_ln)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;

// Entry points share binding slots with different types; each uses exactly one variable per slot.
@group(0) @binding(1) var<storage, read> src_s: array<f32>;
@group(0) @binding(1) var<storage, read> src_v: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> mask_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst_s: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst_v: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> res_s: array<f32>;
@group(0) @binding(2) var<storage, read> res_v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out_s: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> ln_w: array<f32>;
@group(0) @binding(4) var<storage, read> ln_b: array<f32>;

// ---- window partition: pad → roll(−shift) → cut windows -------------------------------------
// Grid: (ceil(WIN²·CV / 64), windows per image, batch).

// Source offset (in channel vectors) of item `f` (token-major, channel-minor) of window `win` of
// image `b`, or NONE where the padded, rolled map holds a pad zero.
fn partition_src(b: u32, win: u32, f: u32) -> u32 {
    let t = f / CV;
    let c = f - t * CV;
    let ty = t / WIN;
    let tx = t - ty * WIN;
    let wy = win / p.nww;
    let wx = win - wy * p.nww;
    // roll by −shift: rolled[i] = padded[(i + shift) mod Hp]; shift < WIN ≤ Hp, so one wrap at most.
    var sy = wy * WIN + ty + p.shift;
    if (sy >= p.hp) { sy -= p.hp; }
    var sx = wx * WIN + tx + p.shift;
    if (sx >= p.wp) { sx -= p.wp; }
    if (sy >= p.h || sx >= p.w) { return NONE; }
    return ((b * p.h + sy) * p.w + sx) * CV + c;
}

@compute @workgroup_size(64)
fn win_partition(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let f = wg.x * 64u + li;
    if (f >= WIN * WIN * CV) { return; }
    let s = partition_src(wg.z, wg.y, f);
    var v = 0.0;
    if (s != NONE) { v = src_s[s]; }
    let o = (wg.z * p.nw + wg.y) * (WIN * WIN * CV) + f;
    if (ACCUM) { v += dst_s[o]; }
    dst_s[o] = v;
}

@compute @workgroup_size(64)
fn win_partition_v4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let f = (wg.x * 64u + li) * K;
    if (f >= WIN * WIN * CV) { return; }
    let s = partition_src(wg.z, wg.y, f);
    let o = (wg.z * p.nw + wg.y) * (WIN * WIN * CV) + f;
    if (ACCUM) {
        if (s != NONE) {
            for (var k = 0u; k < K; k++) { dst_v[o + k] += src_v[s + k]; }
        }
    } else if (s == NONE) {
        for (var k = 0u; k < K; k++) { dst_v[o + k] = vec4<f32>(0.0); }
    } else {
        for (var k = 0u; k < K; k++) { dst_v[o + k] = src_v[s + k]; }
    }
}

// LayerNorm statistics as ln_register (norm.wgsl) gathers them: running (mean, M2, count) of
// values shifted by the row's first element, merged one 4-element chunk at a time (Chan et al.).
fn ln_chunk(st: vec3<f32>, v: vec4<f32>) -> vec3<f32> {
    let cm = ((v.x + v.y) + (v.z + v.w)) * 0.25;
    let d = v - cm;
    let delta = cm - st.x;
    let n = st.z + 4.0;
    let f = 4.0 / n;
    return vec3<f32>(st.x + delta * f, st.y + (dot(d, d) + delta * delta * (n - 4.0) * f), n);
}

// ---- LayerNorm fused into the partition (Swin's norm1 → pad → roll → windows) --------------
// One invocation per window token, all C = CV channels (scalar access); grid: 1-D over the
// B·nW·WIN² tokens (split by Gpu::grid). Pad tokens stay zero: mmdet pads after the norm. The
// statistics are ln_register's (norm.wgsl): Chan et al.'s merge of 4-element chunks on values
// shifted by the token's first channel, so both paths round alike.
@compute @workgroup_size(64)
fn win_partition_ln(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let tok = (wg.x + wg.y * nwg.x) * 64u + li;
    let per_img = p.nw * (WIN * WIN);
    if (tok >= p.n * per_img) { return; }
    let b = tok / per_img;
    let r = tok - b * per_img;
    let win = r / (WIN * WIN);
    let t = r - win * (WIN * WIN);
    let base = partition_src(b, win, t * CV);
    let o = tok * CV;
    if (base == NONE) {
        for (var i = 0u; i < CV; i++) { dst_s[o + i] = 0.0; }
        return;
    }
    let c4 = CV & ~3u;
    let k = src_s[base];
    var st = vec3<f32>(0.0);
    for (var i = 0u; i < c4; i += 4u) {
        st = ln_chunk(st, vec4<f32>(src_s[base + i], src_s[base + i + 1u], src_s[base + i + 2u],
                                    src_s[base + i + 3u]) - k);
    }
    for (var i = c4; i < CV; i++) {
        let v = src_s[base + i] - k;
        st.z += 1.0;
        let delta = v - st.x;
        st.x += delta / st.z;
        st.y += delta * (v - st.x);
    }
    let mean = st.x;
    let rs = 1.0 / sqrt(st.y / f32(CV) + p.eps);
    for (var i = 0u; i < CV; i++) {
        dst_s[o + i] = (src_s[base + i] - k - mean) * rs * ln_w[i] + ln_b[i];
    }
}

// ---- window reverse: merge windows → roll(+shift) → crop (optionally + residual) ------------
// Grid: (ceil(W·CV / 64), H, batch); item `f` of output row `y` is (column, channel vector).

fn reverse_src(b: u32, y: u32, f: u32) -> u32 {
    let x = f / CV;
    let c = f - x * CV;
    // roll by +shift: out[i] = merged[(i − shift) mod Hp].
    var py = y + p.hp - p.shift;
    if (py >= p.hp) { py -= p.hp; }
    var px = x + p.wp - p.shift;
    if (px >= p.wp) { px -= p.wp; }
    let wy = py / WIN;
    let wx = px / WIN;
    let t = (py - wy * WIN) * WIN + (px - wx * WIN);
    return ((b * p.nw + wy * p.nww + wx) * (WIN * WIN) + t) * CV + c;
}

@compute @workgroup_size(64)
fn reverse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let f = wg.x * 64u + li;
    if (f >= p.w * CV) { return; }
    let o = (wg.z * p.h + wg.y) * p.w * CV + f;
    var v = src_s[reverse_src(wg.z, wg.y, f)];
    if (ACCUM) { v += dst_s[o]; }
    dst_s[o] = v;
}

@compute @workgroup_size(64)
fn reverse_v4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let f = (wg.x * 64u + li) * K;
    if (f >= p.w * CV) { return; }
    let s = reverse_src(wg.z, wg.y, f);
    let o = (wg.z * p.h + wg.y) * p.w * CV + f;
    if (ACCUM) {
        for (var k = 0u; k < K; k++) { dst_v[o + k] += src_v[s + k]; }
    } else {
        for (var k = 0u; k < K; k++) { dst_v[o + k] = src_v[s + k]; }
    }
}

@compute @workgroup_size(64)
fn reverse_add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let f = wg.x * 64u + li;
    if (f >= p.w * CV) { return; }
    let o = (wg.z * p.h + wg.y) * p.w * CV + f;
    out_s[o] = res_s[o] + src_s[reverse_src(wg.z, wg.y, f)];
}

@compute @workgroup_size(64)
fn reverse_add_v4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let f = (wg.x * 64u + li) * K;
    if (f >= p.w * CV) { return; }
    let s = reverse_src(wg.z, wg.y, f);
    let o = (wg.z * p.h + wg.y) * p.w * CV + f;
    for (var k = 0u; k < K; k++) { out_v[o + k] = res_v[o + k] + src_v[s + k]; }
}

// ---- patch merging: zero-pad to even, 2×2 neighbourhoods in nn.Unfold order (c·4 + kh·2 + kw) --
// Grid: (ceil(W2·CV / 64), H2, batch). The output row of a pixel is 4C floats = C vec4s, one vec4
// (the four neighbours) per input channel.

fn merge_at(b: u32, y: u32, x: u32, c: u32) -> u32 {
    if (y >= p.h || x >= p.w) { return NONE; }
    return ((b * p.h + y) * p.w + x) * CV + c;
}

fn load_s(i: u32) -> f32 {
    var v = 0.0;
    if (i != NONE) { v = src_s[i]; }
    return v;
}

fn load_v(i: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (i != NONE) { v = src_v[i]; }
    return v;
}

// ---- PatchMerging's gather fused with its LayerNorm(4C) ------------------------------------
// One invocation per output token over all 4·C values (scalar access, CV = C); grid: 1-D over
// B·hp·wp tokens. Each channel's 2×2 quad is exactly one 4-element chunk of the merged row, so
// the statistics are ln_register's chunk merge on the same values in the same order.
fn merge_quad(b: u32, y0: u32, x0: u32, c: u32) -> vec4<f32> {
    return vec4<f32>(
        load_s(merge_at(b, y0, x0, c)),
        load_s(merge_at(b, y0, x0 + 1u, c)),
        load_s(merge_at(b, y0 + 1u, x0, c)),
        load_s(merge_at(b, y0 + 1u, x0 + 1u, c)));
}

@compute @workgroup_size(64)
fn merge_ln(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let tok = (wg.x + wg.y * nwg.x) * 64u + li;
    let per_img = p.hp * p.wp;
    if (tok >= p.n * per_img) { return; }
    let b = tok / per_img;
    let r = tok - b * per_img;
    let oy = r / p.wp;
    let ox = r - oy * p.wp;
    let y0 = 2u * oy;
    let x0 = 2u * ox;
    let k = load_s(merge_at(b, y0, x0, 0u));
    var st = vec3<f32>(0.0);
    for (var c = 0u; c < CV; c++) {
        st = ln_chunk(st, merge_quad(b, y0, x0, c) - k);
    }
    let mean = st.x;
    let rs = 1.0 / sqrt(st.y / f32(4u * CV) + p.eps);
    let o = tok * 4u * CV;
    for (var c = 0u; c < CV; c++) {
        let v = merge_quad(b, y0, x0, c);
        for (var q = 0u; q < 4u; q++) {
            let i = 4u * c + q;
            dst_s[o + i] = (v[q] - k - mean) * rs * ln_w[i] + ln_b[i];
        }
    }
}

@compute @workgroup_size(64)
fn merge(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let f = wg.x * 64u + li;
    if (f >= p.wp * CV) { return; }
    let ox = f / CV;
    let c = f - ox * CV;
    let y0 = 2u * wg.y;
    let x0 = 2u * ox;
    let v = vec4<f32>(
        load_s(merge_at(wg.z, y0, x0, c)),
        load_s(merge_at(wg.z, y0, x0 + 1u, c)),
        load_s(merge_at(wg.z, y0 + 1u, x0, c)),
        load_s(merge_at(wg.z, y0 + 1u, x0 + 1u, c)));
    dst_v[(wg.z * p.hp + wg.y) * p.wp * CV + f] = v;
}

// Per channel vector, four input vec4s (channels 4c..4c+3 of the four neighbours) become four
// output vec4s: a 4×4 transpose in registers.
@compute @workgroup_size(64)
fn merge_v4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let f0 = (wg.x * 64u + li) * K;
    if (f0 >= p.wp * CV) { return; }
    let ox = f0 / CV;
    let c0 = f0 - ox * CV;
    let y0 = 2u * wg.y;
    let x0 = 2u * ox;
    let ia = merge_at(wg.z, y0, x0, c0);
    let ib = merge_at(wg.z, y0, x0 + 1u, c0);
    let id = merge_at(wg.z, y0 + 1u, x0, c0);
    let ie = merge_at(wg.z, y0 + 1u, x0 + 1u, c0);
    let o0 = ((wg.z * p.hp + wg.y) * p.wp * CV + f0) * 4u;
    for (var k = 0u; k < K; k++) {
        let a = load_v(select(ia + k, NONE, ia == NONE));
        let b = load_v(select(ib + k, NONE, ib == NONE));
        let d = load_v(select(id + k, NONE, id == NONE));
        let e = load_v(select(ie + k, NONE, ie == NONE));
        let o = o0 + 4u * k;
        dst_v[o] = vec4<f32>(a.x, b.x, d.x, e.x);
        dst_v[o + 1u] = vec4<f32>(a.y, b.y, d.y, e.y);
        dst_v[o + 2u] = vec4<f32>(a.z, b.z, d.z, e.z);
        dst_v[o + 3u] = vec4<f32>(a.w, b.w, d.w, e.w);
    }
}

// ---- shifted-window region mask ---------------------------------------------------------------
// Grid: (ceil(WIN⁴ / 64), windows, 1). Output [nW, WIN², WIN²]: 0 where tokens i and j of a window
// lie in the same region of the padded map, −100 elsewhere.

// Region along one axis, as mmdet's slices (0, −WIN), (−WIN, −shift), (−shift, None) assign it;
// later slices overwrite earlier ones. With shift 0 the last slice is (0, None): one region.
fn region(pos: u32, size: u32) -> u32 {
    if (p.shift == 0u || pos >= size - p.shift) { return 2u; }
    if (pos >= size - WIN) { return 1u; }
    return 0u;
}

fn region_id(win: u32, t: u32) -> u32 {
    let wy = win / p.nww;
    let wx = win - wy * p.nww;
    let ty = t / WIN;
    let tx = t - ty * WIN;
    return region(wy * WIN + ty, p.hp) * 3u + region(wx * WIN + tx, p.wp);
}

@compute @workgroup_size(64)
fn region_mask(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let n = WIN * WIN;
    let f = wg.x * 64u + li;
    if (f >= n * n) { return; }
    let i = f / n;
    let j = f - i * n;
    mask_out[wg.y * n * n + f] = select(0.0, -100.0, region_id(wg.y, i) != region_id(wg.y, j));
}

// ---- relative position bias ---------------------------------------------------------------------
// Grid: (ceil(WIN⁴ / 64), heads, 1). out[h, i, j] = table[idx(i, j), h] with
// idx = (hi − hj + WIN − 1)·(2·WIN − 1) + (wi − wj + WIN − 1).

@compute @workgroup_size(64)
fn rel_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let n = WIN * WIN;
    let f = wg.x * 64u + li;
    if (f >= n * n) { return; }
    let i = f / n;
    let j = f - i * n;
    let hi = i / WIN;
    let hj = j / WIN;
    let idx = (hi + WIN - 1u - hj) * (2u * WIN - 1u) + (i - hi * WIN) + WIN - 1u - (j - hj * WIN);
    dst_s[wg.y * n * n + f] = src_s[idx * p.n + wg.y];
}


// ==== backward ==================================================================================
// Partition and reverse are each other's adjoint (pad tokens are dropped one way and zero the
// other), so their backward passes are the `win_partition*` / `reverse*` entries above with ACCUM
// where the gradient accumulates. Below: patch merging's and the relative bias gather's.

// ---- patch merging backward: the 2×2 gather's adjoint --------------------------------------
// Grid as `merge`: (ceil(W2·CV / 64), H2, batch). Every map pixel belongs to exactly one 2×2
// neighbourhood, so each input gradient element is written by one invocation (no races); the
// neighbours that fall on the even-size zero pad are dropped.

fn merge_put_s(i: u32, v: f32) {
    if (i == NONE) { return; }
    var s = v;
    if (ACCUM) { s += dst_s[i]; }
    dst_s[i] = s;
}

@compute @workgroup_size(64)
fn merge_bw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let f = wg.x * 64u + li;
    if (f >= p.wp * CV) { return; }
    let ox = f / CV;
    let c = f - ox * CV;
    let y0 = 2u * wg.y;
    let x0 = 2u * ox;
    let g = src_v[(wg.z * p.hp + wg.y) * p.wp * CV + f];
    merge_put_s(merge_at(wg.z, y0, x0, c), g.x);
    merge_put_s(merge_at(wg.z, y0, x0 + 1u, c), g.y);
    merge_put_s(merge_at(wg.z, y0 + 1u, x0, c), g.z);
    merge_put_s(merge_at(wg.z, y0 + 1u, x0 + 1u, c), g.w);
}

fn merge_put_v(i: u32, v: vec4<f32>) {
    if (i == NONE) { return; }
    var s = v;
    if (ACCUM) { s += dst_v[i]; }
    dst_v[i] = s;
}

// The 4×4 register transpose of `merge_v4`, run the other way.
@compute @workgroup_size(64)
fn merge_bw_v4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let f0 = (wg.x * 64u + li) * K;
    if (f0 >= p.wp * CV) { return; }
    let ox = f0 / CV;
    let c0 = f0 - ox * CV;
    let y0 = 2u * wg.y;
    let x0 = 2u * ox;
    let ia = merge_at(wg.z, y0, x0, c0);
    let ib = merge_at(wg.z, y0, x0 + 1u, c0);
    let id = merge_at(wg.z, y0 + 1u, x0, c0);
    let ie = merge_at(wg.z, y0 + 1u, x0 + 1u, c0);
    let o0 = ((wg.z * p.hp + wg.y) * p.wp * CV + f0) * 4u;
    for (var k = 0u; k < K; k++) {
        let o = o0 + 4u * k;
        let r0 = src_v[o];
        let r1 = src_v[o + 1u];
        let r2 = src_v[o + 2u];
        let r3 = src_v[o + 3u];
        merge_put_v(select(ia + k, NONE, ia == NONE), vec4<f32>(r0.x, r1.x, r2.x, r3.x));
        merge_put_v(select(ib + k, NONE, ib == NONE), vec4<f32>(r0.y, r1.y, r2.y, r3.y));
        merge_put_v(select(id + k, NONE, id == NONE), vec4<f32>(r0.z, r1.z, r2.z, r3.z));
        merge_put_v(select(ie + k, NONE, ie == NONE), vec4<f32>(r0.w, r1.w, r2.w, r3.w));
    }
}

// ---- relative position bias backward: table rows gather their bias gradients ----------------
// One invocation per table entry (row r, head h), 1-D grid over (2·WIN − 1)²·heads. Row
// r = dy·(2·WIN − 1) + dx collects every (i, j) with hi − hj = dy − WIN + 1 and
// wi − wj = dx − WIN + 1, summed in ascending i (the CPU reference's order), so the result is
// deterministic with no atomics.
@compute @workgroup_size(64)
fn rel_bias_bw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let side = 2u * WIN - 1u;
    let t = wg.x * 64u + li;
    if (t >= side * side * p.n) { return; }
    let r = t / p.n;
    let h = t - r * p.n;
    let dy = r / side;
    let dx = r - dy * side;
    let n = WIN * WIN;
    // hj = hi + WIN − 1 − dy must lie in [0, WIN).
    let hi0 = max(dy + 1u, WIN) - WIN;
    let hi1 = min(dy, WIN - 1u);
    let wi0 = max(dx + 1u, WIN) - WIN;
    let wi1 = min(dx, WIN - 1u);
    var acc = 0.0;
    for (var hi = hi0; hi <= hi1; hi++) {
        let hj = hi + WIN - 1u - dy;
        for (var wi = wi0; wi <= wi1; wi++) {
            let wj = wi + WIN - 1u - dx;
            acc += src_s[(h * n + hi * WIN + wi) * n + hj * WIN + wj];
        }
    }
    if (ACCUM) { acc += dst_s[t]; }
    dst_s[t] = acc;
}
