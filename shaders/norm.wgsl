// LayerNorm over the last dimension, optionally of a residual sum: out = LN(x (+ y)) · w + b.
//
// Statistics never form E[x²] − E[x]² (which cancels when |mean| ≫ σ). Everything works on
// x − x[row, 0]: the mean of the shifted values is near σ in size, so neither its rounding nor that
// of x − mean grows with a large common offset (x − x[row, 0] itself is exact for nearby values).
//
// Every entry point binds y. With ADD = false it is never read (the host binds x a second time),
// which keeps one code path for both LayerNorm and the fused post-norm add.

override ADD: bool = false;
// Threads per row in the tiled entry point: a power of two, at most 256.
override TW: u32 = 256u;

// Rows per workgroup in the register entry point (one invocation owns one row).
override RW: u32 = 64u;

struct Params {
    rows: u32,
    c: u32,
    eps: f32,
    hw: u32,    // NCHW input: pixels per channel plane
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// The forward entry points read x either as contiguous rows or (NCHW) as the pixels of an
// [N, C, H, W] map normalised over C, row = n·HW + pixel: the patch embedding's transpose to
// tokens fused into its LayerNorm. The output is always contiguous rows (tokens).
override NCHW: bool = false;

fn in_base(row: u32) -> u32 {
    if (NCHW) {
        let n = row / p.hw;
        return n * p.c * p.hw + (row - n * p.hw);
    }
    return row * p.c;
}

fn in_stride() -> u32 {
    if (NCHW) {
        return p.hw;
    }
    return 1u;
}

fn ld(i: u32) -> f32 {
    if (ADD) {
        return x[i] + y[i];
    }
    return x[i];
}

// One invocation per row, no barriers. Lanes of a SIMD group own different rows, so every pass
// over the row is a gather; the statistics therefore take one pass instead of two: Chan et al.'s
// merge of 4-element chunks (mean and M2 of the chunk, then the pairwise update), on values
// shifted by x[row, 0] so the running mean stays near σ in size and its rounding stays small.
@compute @workgroup_size(RW)
fn ln_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nw.x) * RW + li;
    if (row >= p.rows) {
        return;
    }
    let c = p.c;
    let base = in_base(row);
    let st = in_stride();
    let ob = row * c;
    let c4 = c & ~3u;
    let k = ld(base);

    var mean = 0.0;
    var m2 = 0.0;
    var n = 0.0;
    for (var i = 0u; i < c4; i += 4u) {
        let v = vec4<f32>(ld(base + i * st), ld(base + (i + 1u) * st), ld(base + (i + 2u) * st), ld(base + (i + 3u) * st)) - k;
        let cm = ((v.x + v.y) + (v.z + v.w)) * 0.25;
        let d = v - cm;
        let delta = cm - mean;
        n += 4.0;
        let f = 4.0 / n;
        mean += delta * f;
        m2 += dot(d, d) + delta * delta * (n - 4.0) * f;
    }
    for (var i = c4; i < c; i++) {
        let v = ld(base + i * st) - k;
        n += 1.0;
        let delta = v - mean;
        mean += delta / n;
        m2 += delta * (v - mean);
    }
    let r = 1.0 / sqrt(m2 / f32(c) + p.eps);

    for (var i = 0u; i < c; i++) {
        out[ob + i] = (ld(base + i * st) - k - mean) * r * w[i] + b[i];
    }
}

var<workgroup> red: array<f32, 256>;

// Tree sum over the TW threads of the workgroup; every thread gets the total.
fn wg_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = TW / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let t = red[0];
    // The next reduction overwrites red.
    workgroupBarrier();
    return t;
}

// One workgroup of TW threads per row; each thread takes every TW-th element.
@compute @workgroup_size(TW)
fn ln_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nw.x;
    if (row >= p.rows) {
        return;
    }
    let c = p.c;
    let base = in_base(row);
    let st = in_stride();
    let ob = row * c;
    let k = ld(base);

    var s = 0.0;
    for (var i = li; i < c; i += TW) {
        s += ld(base + i * st) - k;
    }
    let mean = wg_sum(li, s) / f32(c);

    var q = 0.0;
    for (var i = li; i < c; i += TW) {
        let d = ld(base + i * st) - k - mean;
        q += d * d;
    }
    let r = 1.0 / sqrt(wg_sum(li, q) / f32(c) + p.eps);

    for (var i = li; i < c; i += TW) {
        out[ob + i] = (ld(base + i * st) - k - mean) * r * w[i] + b[i];
    }
}

// ---------------------------------------------------------------------------------------------
// Backward of out = x̂·w + b with x̂ = (s − μ)·r, s = x (+ y), r = 1/sqrt(var + eps):
//   g = dy·w,  dx = r·(g − mean(g) − x̂·mean(g·x̂))   (the gradient of s: of x and of y alike)
//   dw = Σ_rows dy·x̂,  db = Σ_rows dy.
// The row kernels recompute the statistics exactly as the forward does (on s − s[row, 0]) and
// leave them in `stats` ([rows, 3]: s[row, 0], mean of the shifted row, r) for ln_backward_params,
// which sums dw and db over chunks of rows per column: no two invocations write one element.

// Adds dx (or the dw / db sums) to what the output holds instead of overwriting it.
override ACCUM: bool = false;

@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> aux: array<f32>;

fn put(i: u32, v: f32) {
    if (ACCUM) {
        out[i] = out[i] + v;
    } else {
        out[i] = v;
    }
}

// One invocation per row: statistics (one pass, as ln_register), the two means, then dx.
@compute @workgroup_size(RW)
fn ln_backward_register(@builtin(workgroup_id) wg: vec3<u32>,
                        @builtin(num_workgroups) nw: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nw.x) * RW + li;
    if (row >= p.rows) {
        return;
    }
    let c = p.c;
    let base = row * c;
    let c4 = c & ~3u;
    let k = ld(base);

    var mean = 0.0;
    var m2 = 0.0;
    var n = 0.0;
    for (var i = 0u; i < c4; i += 4u) {
        let v = vec4<f32>(ld(base + i), ld(base + i + 1u), ld(base + i + 2u), ld(base + i + 3u)) - k;
        let cm = ((v.x + v.y) + (v.z + v.w)) * 0.25;
        let d = v - cm;
        let delta = cm - mean;
        n += 4.0;
        let f = 4.0 / n;
        mean += delta * f;
        m2 += dot(d, d) + delta * delta * (n - 4.0) * f;
    }
    for (var i = c4; i < c; i++) {
        let v = ld(base + i) - k;
        n += 1.0;
        let delta = v - mean;
        mean += delta / n;
        m2 += delta * (v - mean);
    }
    let r = 1.0 / sqrt(m2 / f32(c) + p.eps);
    aux[row * 3u] = k;
    aux[row * 3u + 1u] = mean;
    aux[row * 3u + 2u] = r;

    var sg = 0.0;
    var sgx = 0.0;
    for (var i = 0u; i < c; i++) {
        let g = dy[base + i] * w[i];
        sg += g;
        sgx += g * (ld(base + i) - k - mean) * r;
    }
    let mg = sg / f32(c);
    let mgx = sgx / f32(c);
    for (var i = 0u; i < c; i++) {
        let xh = (ld(base + i) - k - mean) * r;
        put(base + i, r * (dy[base + i] * w[i] - mg - xh * mgx));
    }
}

// One workgroup of TW threads per row (as ln_tiled).
@compute @workgroup_size(TW)
fn ln_backward_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nw.x;
    if (row >= p.rows) {
        return;
    }
    let c = p.c;
    let base = row * c;
    let k = ld(base);

    var s = 0.0;
    for (var i = li; i < c; i += TW) {
        s += ld(base + i) - k;
    }
    let mean = wg_sum(li, s) / f32(c);
    var q = 0.0;
    for (var i = li; i < c; i += TW) {
        let d = ld(base + i) - k - mean;
        q += d * d;
    }
    let r = 1.0 / sqrt(wg_sum(li, q) / f32(c) + p.eps);
    if (li == 0u) {
        aux[row * 3u] = k;
        aux[row * 3u + 1u] = mean;
        aux[row * 3u + 2u] = r;
    }

    var sg = 0.0;
    var sgx = 0.0;
    for (var i = li; i < c; i += TW) {
        let g = dy[base + i] * w[i];
        sg += g;
        sgx += g * (ld(base + i) - k - mean) * r;
    }
    let mg = wg_sum(li, sg) / f32(c);
    let mgx = wg_sum(li, sgx) / f32(c);
    for (var i = li; i < c; i += TW) {
        let xh = (ld(base + i) - k - mean) * r;
        put(base + i, r * (dy[base + i] * w[i] - mg - xh * mgx));
    }
}

// dw and db: invocation (j, chunk) sums rows [chunk·rows_per, …) of column j. out receives the dw
// sums and aux the db sums, at [chunk, C] (the host sums the chunks in a second pass when there
// are several; only a single-chunk pass may use ACCUM).
struct ParamsBw {
    rows: u32,
    c: u32,
    chunk: u32,   // rows per invocation
    chunks: u32,
}

@group(0) @binding(0) var<uniform> q: ParamsBw;
@group(0) @binding(3) var<storage, read> stats: array<f32>;

fn put_aux(i: u32, v: f32) {
    if (ACCUM) {
        aux[i] = aux[i] + v;
    } else {
        aux[i] = v;
    }
}

@compute @workgroup_size(64)
fn ln_backward_params(@builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nw: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let id = (wg.x + wg.y * nw.x) * 64u + li;
    if (id >= q.c * q.chunks) {
        return;
    }
    let c = q.c;
    let j = id % c;
    let r0 = (id / c) * q.chunk;
    let r1 = min(r0 + q.chunk, q.rows);
    var sw = 0.0;
    var sb = 0.0;
    for (var row = r0; row < r1; row++) {
        let i = row * c + j;
        let xh = (ld(i) - stats[row * 3u] - stats[row * 3u + 1u]) * stats[row * 3u + 2u];
        let g = dy[i];
        sw += g * xh;
        sb += g;
    }
    put(id, sw);
    put_aux(id, sb);
}
