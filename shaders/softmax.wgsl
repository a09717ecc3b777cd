// Row softmax over the last dimension: out = exp(x − m) / Σ exp(x − m) with m the row maximum
// (tiled) or a reference within LAZY of it (register); both are the same function, m only keeps
// exp from overflowing. The backward entry points are at the end of the file.

// Threads per row in the tiled entry point: a power of two, at most 256.
override TW: u32 = 256u;

// Rows per workgroup in the register entry point (one invocation owns one row).
override RW: u32 = 64u;

struct Params {
    rows: u32,
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// One invocation per row, no barriers. Every pass over a row is a gather across the SIMD lanes
// (each lane owns a row), so the register form makes two passes instead of three: the sum of
// exponentials is taken against a running reference m that is raised only when a value exceeds it
// by more than LAZY (then the partial sum is rescaled once). Terms stay ≤ e^LAZY, so nothing
// overflows, and the few rescales add little rounding; the final pass divides exp(x − m) by that
// sum, which is the softmax for any m. Assumes finite inputs (WGSL does not promise infinities).
const LAZY: f32 = 8.0;

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

    var m = x[base];
    // Four accumulators: shorter dependency chains, and a quarter of the rounding drift.
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < n4; i += 4u) {
        let v = vec4<f32>(x[base + i], x[base + i + 1u], x[base + i + 2u], x[base + i + 3u]);
        let cm = max(max(v.x, v.y), max(v.z, v.w));
        if (cm > m + LAZY) {
            s *= exp(m - cm);
            m = cm;
        }
        s += exp(v - m);
    }
    for (var i = n4; i < n; i++) {
        let v = x[base + i];
        if (v > m + LAZY) {
            s *= exp(m - v);
            m = v;
        }
        s.x += exp(v - m);
    }
    let total = (s.x + s.y) + (s.z + s.w);

    for (var i = 0u; i < n; i++) {
        out[base + i] = exp(x[base + i] - m) / total;
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

// One workgroup of TW threads per row; each thread takes every TW-th element. The exponentials go
// to out on the way to the sum and are rescaled in place by the thread that wrote them, so exp runs
// once per element.
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

// ---------------------------------------------------------------------------------------------
// Backward: dx = y ⊙ (dy − Σⱼ dyⱼ·yⱼ) per row (PyTorch's _softmax_backward_data), from the
// forward's output y (bound as x) and the upstream gradient dy. With ACCUM the result is added to
// what dx holds (a gradient accumulated over several uses).

override ACCUM: bool = false;

@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

fn store_dx(i: u32, v: f32) {
    if (ACCUM) {
        dx[i] = dx[i] + v;
    } else {
        dx[i] = v;
    }
}

// One invocation per row, no barriers: a dot product pass and a write pass.
@compute @workgroup_size(RW)
fn softmax_backward_register(@builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(num_workgroups) nw: vec3<u32>,
                             @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nw.x) * RW + li;
    if (row >= p.rows) {
        return;
    }
    let n = p.n;
    let base = row * n;
    let n4 = n & ~3u;
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < n4; i += 4u) {
        let yv = vec4<f32>(x[base + i], x[base + i + 1u], x[base + i + 2u], x[base + i + 3u]);
        let gv = vec4<f32>(dy[base + i], dy[base + i + 1u], dy[base + i + 2u], dy[base + i + 3u]);
        s = fma(yv, gv, s);
    }
    for (var i = n4; i < n; i++) {
        s.x = fma(x[base + i], dy[base + i], s.x);
    }
    let dot = (s.x + s.y) + (s.z + s.w);
    for (var i = 0u; i < n; i++) {
        store_dx(base + i, x[base + i] * (dy[base + i] - dot));
    }
}

// One workgroup of TW threads per row.
@compute @workgroup_size(TW)
fn softmax_backward_tiled(@builtin(workgroup_id) wg: vec3<u32>,
                          @builtin(num_workgroups) nw: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let row = wg.x + wg.y * nw.x;
    if (row >= p.rows) {
        return;
    }
    let n = p.n;
    let base = row * n;
    var s = 0.0;
    for (var i = li; i < n; i += TW) {
        s = fma(x[base + i], dy[base + i], s);
    }
    let dot = wg_sum(li, s);
    for (var i = li; i < n; i += TW) {
        store_dx(base + i, x[base + i] * (dy[base + i] - dot));
    }
}
