// Row softmax over the last dimension, max-subtracted: out = exp(x − max) / Σ exp(x − max).
// The exponentials are written to out on the way to the sum and rescaled in place by the thread
// that wrote them, so exp runs once per element.

// Threads per row in the tiled entry point: a power of two, at most 256.
override TW: u32 = 256u;

// Rows per workgroup in the register entry point (one invocation owns one row).
const RW: u32 = 64u;

struct Params {
    rows: u32,
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(RW)
fn softmax_register(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nw.x) * RW + li;
    if (row >= p.rows) {
        return;
    }
    let n = p.n;
    let base = row * n;
    let n4 = n & ~3u;

    var m4 = vec4<f32>(x[base]);
    for (var i = 0u; i < n4; i += 4u) {
        m4 = max(m4, vec4<f32>(x[base + i], x[base + i + 1u], x[base + i + 2u], x[base + i + 3u]));
    }
    var m = max(max(m4.x, m4.y), max(m4.z, m4.w));
    for (var i = n4; i < n; i++) {
        m = max(m, x[base + i]);
    }

    // Four accumulators: shorter dependency chains, and a quarter of the rounding drift.
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < n4; i += 4u) {
        let e = exp(vec4<f32>(x[base + i], x[base + i + 1u], x[base + i + 2u], x[base + i + 3u]) - m);
        out[base + i] = e.x;
        out[base + i + 1u] = e.y;
        out[base + i + 2u] = e.z;
        out[base + i + 3u] = e.w;
        s += e;
    }
    for (var i = n4; i < n; i++) {
        let e = exp(x[base + i] - m);
        out[base + i] = e;
        s.x += e;
    }
    let total = (s.x + s.y) + (s.z + s.w);

    for (var i = 0u; i < n; i++) {
        out[base + i] = out[base + i] / total;
    }
}

var<workgroup> red: array<f32, 256>;

// Tree reductions over the TW threads of the workgroup; every thread gets the result.
fn wg_max(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = TW / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] = max(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
    let t = red[0];
    // The next reduction overwrites red.
    workgroupBarrier();
    return t;
}

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
    workgroupBarrier();
    return t;
}

// One workgroup of TW threads per row; each thread takes every TW-th element.
@compute @workgroup_size(TW)
fn softmax_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nw.x;
    if (row >= p.rows) {
        return;
    }
    let n = p.n;
    let base = row * n;

    // x[base] is a member of the row, so threads without elements do not disturb the max.
    var m = x[base];
    for (var i = li; i < n; i += TW) {
        m = max(m, x[base + i]);
    }
    m = wg_max(li, m);

    var s = 0.0;
    for (var i = li; i < n; i += TW) {
        let e = exp(x[base + i] - m);
        out[base + i] = e;
        s += e;
    }
    let total = wg_sum(li, s);

    for (var i = li; i < n; i += TW) {
        out[base + i] = out[base + i] / total;
    }
}
