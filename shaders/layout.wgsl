// Data movement: pad, slice, concat, permute and the learned 2-D positional embedding.
// Elements move as u32 bit patterns, so every 4-byte type is copied exactly (NaN payloads too).
// One invocation per output element; the host splits large counts over a 2-D grid.

const WG: u32 = 256u;

fn linear_id(wg: vec3<u32>, nw: vec3<u32>, li: u32) -> u32 {
    return (wg.x + wg.y * nw.x) * WG + li;
}

// Row-major coordinates of linear index i in a 4-D shape.
fn coords4(i: u32, shape: vec4<u32>) -> vec4<u32> {
    var r = i;
    let c3 = r % shape.w;
    r /= shape.w;
    let c2 = r % shape.z;
    r /= shape.z;
    let c1 = r % shape.y;
    return vec4<u32>(r / shape.y, c1, c2, c3);
}

@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

// ---- pad: shapes right-aligned to 4-D with leading ones -----------------------------------------

struct PadParams {
    out_shape: vec4<u32>,
    in_shape: vec4<u32>,
    before: vec4<u32>,
    n: u32,
    value: u32,
}

@group(0) @binding(0) var<uniform> pp: PadParams;

@compute @workgroup_size(WG)
fn pad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let o = linear_id(wg, nw, li);
    if (o >= pp.n) {
        return;
    }
    // Coordinates left of the input wrap around to huge values, so one comparison covers both sides.
    let c = coords4(o, pp.out_shape) - pp.before;
    var v = pp.value;
    if (all(c < pp.in_shape)) {
        let s = pp.in_shape;
        v = src[((c.x * s.y + c.y) * s.z + c.z) * s.w + c.w];
    }
    dst[o] = v;
}

// ---- permute: out[c] = in[Σ c_k · in_stride[perm[k]]] -------------------------------------------

struct PermuteParams {
    out_shape: vec4<u32>,
    // Input strides in output-dimension order.
    strides: vec4<u32>,
    n: u32,
}

@group(0) @binding(0) var<uniform> qp: PermuteParams;

@compute @workgroup_size(WG)
fn permute(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let o = linear_id(wg, nw, li);
    if (o >= qp.n) {
        return;
    }
    let c = coords4(o, qp.out_shape);
    dst[o] = src[dot(c, qp.strides)];
}

// ---- slice along one axis of an [outer, dim, inner] view ----------------------------------------

struct SliceParams {
    n: u32,
    dim: u32,
    len: u32,
    start: u32,
    inner: u32,
}

@group(0) @binding(0) var<uniform> sp: SliceParams;

@compute @workgroup_size(WG)
fn slice(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let o = linear_id(wg, nw, li);
    if (o >= sp.n) {
        return;
    }
    let k = o % sp.inner;
    let t = o / sp.inner;
    let i = t % sp.len;
    let outer = t / sp.len;
    dst[o] = src[(outer * sp.dim + sp.start + i) * sp.inner + k];
}

// ---- concat along one axis of [outer, axis, inner] views, up to 7 inputs per dispatch -----------

struct ConcatParams {
    // Input j of this dispatch covers [offs[j], offs[j + 1]) of the output axis; more than 7 inputs
    // take several dispatches, each writing its own range [offs[0], offs[count]).
    offs: array<vec4<u32>, 2>,
    n: u32,      // outer · (offs[count] − offs[0]) · inner
    inner: u32,
    count: u32,
    total: u32,  // length of the output axis
}

@group(0) @binding(0) var<uniform> cp: ConcatParams;
// The host binds the first input again in the slots of missing inputs.
@group(0) @binding(1) var<storage, read> in0: array<u32>;
@group(0) @binding(2) var<storage, read> in1: array<u32>;
@group(0) @binding(3) var<storage, read> in2: array<u32>;
@group(0) @binding(4) var<storage, read> in3: array<u32>;
@group(0) @binding(5) var<storage, read> in4: array<u32>;
@group(0) @binding(6) var<storage, read> in5: array<u32>;
@group(0) @binding(7) var<storage, read> in6: array<u32>;
@group(0) @binding(8) var<storage, read_write> cat_out: array<u32>;

fn off(j: u32) -> u32 {
    return cp.offs[j / 4u][j % 4u];
}

@compute @workgroup_size(WG)
fn concat(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let id = linear_id(wg, nw, li);
    if (id >= cp.n) {
        return;
    }
    let first = off(0u);
    let span = off(cp.count) - first;
    let k = id % cp.inner;
    let t = id / cp.inner;
    let a = first + t % span;
    let outer = t / span;
    var j = 0u;
    for (var q = 1u; q < cp.count; q++) {
        if (a >= off(q)) {
            j = q;
        }
    }
    let start = off(j);
    let i = (outer * (off(j + 1u) - start) + a - start) * cp.inner + k;
    var v: u32;
    switch j {
        case 0u: { v = in0[i]; }
        case 1u: { v = in1[i]; }
        case 2u: { v = in2[i]; }
        case 3u: { v = in3[i]; }
        case 4u: { v = in4[i]; }
        case 5u: { v = in5[i]; }
        default: { v = in6[i]; }
    }
    cat_out[(outer * cp.total + a) * cp.inner + k] = v;
}

// ---- learned 2-D positional embedding -----------------------------------------------------------

struct EmbedParams {
    n: u32,
    w: u32,
    half: u32,
}

@group(0) @binding(0) var<uniform> ep: EmbedParams;
@group(0) @binding(1) var<storage, read> row_embed: array<u32>;
@group(0) @binding(2) var<storage, read> col_embed: array<u32>;
@group(0) @binding(3) var<storage, read_write> pos: array<u32>;

// Token (i, j) of an h × w map: channel c < half is col_embed[j, c], the rest row_embed[i, c − half].
@compute @workgroup_size(WG)
fn embed_2d(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let o = linear_id(wg, nw, li);
    if (o >= ep.n) {
        return;
    }
    let c = o % (2u * ep.half);
    let t = o / (2u * ep.half);
    let j = t % ep.w;
    let i = t / ep.w;
    if (c < ep.half) {
        pos[o] = col_embed[j * ep.half + c];
    } else {
        pos[o] = row_embed[i * ep.half + c - ep.half];
    }
}
