// Sums over axes. The input is viewed as [outer, mid, inner]; the result has one value per mid
// index j: Σ over (o, i) of f(x[o, j, i]) with f = x (MODE 0), x² (MODE 1) or x·y (MODE 2, y of
// the same shape). Used for bias gradients (sum over rows), the gradient of a broadcast operand
// (sum over the axes it was repeated along) and the squared L2 norms of gradient clipping.
//
// No float atomics: invocation (j, c) sums chunk c of the outer·inner range for column j and
// writes out[offset + c·mid + j]. With one chunk that is the result; with several, the host runs
// the same entry point a second time over the [chunks, mid, 1] partials. Either way each output
// element has one writer and a fixed summation order, so results are deterministic.

override MODE: u32 = 0u;
// Adds the sums to what out already holds (gradient accumulation) instead of overwriting it.
override ACCUM: bool = false;

struct Params {
    outer: u32,
    mid: u32,
    inner: u32,
    chunk: u32,   // elements of the outer·inner range per invocation
    chunks: u32,
    offset: u32,  // first output element written
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// Read only when MODE = 2; the host binds x a second time otherwise.
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn term(idx: u32) -> f32 {
    let v = x[idx];
    if (MODE == 1u) {
        return v * v;
    }
    if (MODE == 2u) {
        return v * y[idx];
    }
    return v;
}

@compute @workgroup_size(64)
fn reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let id = (wg.x + wg.y * nw.x) * 64u + li;
    if (id >= p.mid * p.chunks) {
        return;
    }
    let j = id % p.mid;
    let c = id / p.mid;
    let count = p.outer * p.inner;
    let t0 = c * p.chunk;
    let t1 = min(t0 + p.chunk, count);
    // Walk (o, i) with counters: no division inside the loop.
    var o = t0 / p.inner;
    var i = t0 % p.inner;
    // Two accumulators halve the length of the rounding chain.
    var s0 = 0.0;
    var s1 = 0.0;
    var t = t0;
    for (; t + 1u < t1; t += 2u) {
        s0 += term((o * p.mid + j) * p.inner + i);
        i += 1u;
        if (i == p.inner) {
            i = 0u;
            o += 1u;
        }
        s1 += term((o * p.mid + j) * p.inner + i);
        i += 1u;
        if (i == p.inner) {
            i = 0u;
            o += 1u;
        }
    }
    if (t < t1) {
        s0 += term((o * p.mid + j) * p.inner + i);
    }
    var s = s0 + s1;
    let dst = p.offset + id;
    if (ACCUM) {
        s += out[dst];
    }
    out[dst] = s;
}
