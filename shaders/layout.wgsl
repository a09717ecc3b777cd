// Data movement: pad, slice, concat, permute and the learned 2-D positional embedding.
// Elements move as u32 bit patterns, so every 4-byte type is copied exactly (NaN payloads too).
//
// Each invocation copies a run of up to R consecutive output elements along the innermost
// dimension: the index arithmetic (integer divisions, which CPU adapters scalarise per lane) is
// paid once per run instead of once per element. The host splits large counts over a 2-D grid.

const WG: u32 = 64u;
const R: u32 = 16u;

fn linear_id(wg: vec3<u32>, nw: vec3<u32>, li: u32) -> u32 {
    return (wg.x + wg.y * nw.x) * WG + li;
}

@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

// ---- pad: shapes right-aligned to 4-D with leading ones ----------------------------------------

struct PadParams {
    out_shape: vec4<u32>,
    in_shape: vec4<u32>,
    before: vec4<u32>,
    n: u32,       // invocations: rows of the output × runs per row
    runs: u32,    // runs per output row (of out_shape.w elements)
    value: u32,
}

@group(0) @binding(0) var<uniform> pp: PadParams;

@compute @workgroup_size(WG)
fn pad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let t = linear_id(wg, nw, li);
    if (t >= pp.n) {
        return;
    }
    let os = pp.out_shape;
    let ins = pp.in_shape;
    let row = t / pp.runs;
    let c2 = row % os.z;
    let c1 = (row / os.z) % os.y;
    let c0 = row / (os.z * os.y);
    // Coordinates left of the input wrap around to huge values, so one comparison covers both sides.
    let ic = vec3<u32>(c0, c1, c2) - pp.before.xyz;
    let inside = all(ic < ins.xyz);
    let ibase = ((ic.x * ins.y + ic.y) * ins.z + ic.z) * ins.w;
    let obase = row * os.w;
    let start = (t % pp.runs) * R;
    let end = min(start + R, os.w);
    for (var j = start; j < end; j++) {
        let jj = j - pp.before.w;
        var v = pp.value;
        if (inside && jj < ins.w) {
            v = src[ibase + jj];
        }
        dst[obase + j] = v;
    }
}

// ---- permute: out[c] = in[Σ c_k · in_stride[perm[k]]] -------------------------------------------

struct PermuteParams {
    out_shape: vec4<u32>,
    // Input strides in output-dimension order.
    strides: vec4<u32>,
    n: u32,
    runs: u32,
}

@group(0) @binding(0) var<uniform> qp: PermuteParams;

@compute @workgroup_size(WG)
fn permute(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let t = linear_id(wg, nw, li);
    if (t >= qp.n) {
        return;
    }
    let os = qp.out_shape;
    let st = qp.strides;
    let row = t / qp.runs;
    let c2 = row % os.z;
    let c1 = (row / os.z) % os.y;
    let c0 = row / (os.z * os.y);
    let ibase = c0 * st.x + c1 * st.y + c2 * st.z;
    let obase = row * os.w;
    let start = (t % qp.runs) * R;
    let end = min(start + R, os.w);
    for (var j = start; j < end; j++) {
        dst[obase + j] = src[ibase + j * st.w];
    }
}

// ---- slice: `outer` rows, each a contiguous span taken at a fixed offset of a longer row --------

struct SliceParams {
    n: u32,
    runs: u32,
    span: u32,      // output row length: len · inner
    in_row: u32,    // input row length: dim · inner
    in_off: u32,    // start · inner
}

@group(0) @binding(0) var<uniform> sp: SliceParams;

@compute @workgroup_size(WG)
fn slice(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let t = linear_id(wg, nw, li);
    if (t >= sp.n) {
        return;
    }
    let row = t / sp.runs;
    let start = (t % sp.runs) * R;
    let end = min(start + R, sp.span);
    let ibase = row * sp.in_row + sp.in_off;
    let obase = row * sp.span;
    for (var j = start; j < end; j++) {
        dst[obase + j] = src[ibase + j];
    }
}

// ---- concat: each output row (one per outer index) is the inputs' row spans side by side --------

struct ConcatParams {
    // Per input j of this dispatch (up to 7): its row span (len_j · inner), where that span starts
    // in the output row, and the index of its first run among the runs of one output row
    // (first_run[count] = runs per row). More than 7 inputs take several dispatches.
    span: array<vec4<u32>, 2>,
    at: array<vec4<u32>, 2>,
    first_run: array<vec4<u32>, 2>,
    n: u32,
    count: u32,
    out_row: u32,
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

fn first_run(j: u32) -> u32 {
    return cp.first_run[j / 4u][j % 4u];
}

fn read_input(j: u32, i: u32) -> u32 {
    switch j {
        case 0u: { return in0[i]; }
        case 1u: { return in1[i]; }
        case 2u: { return in2[i]; }
        case 3u: { return in3[i]; }
        case 4u: { return in4[i]; }
        case 5u: { return in5[i]; }
        default: { return in6[i]; }
    }
}

@compute @workgroup_size(WG)
fn concat(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let t = linear_id(wg, nw, li);
    if (t >= cp.n) {
        return;
    }
    let runs = first_run(cp.count);
    let row = t / runs;
    let k = t % runs;
    var j = 0u;
    for (var q = 1u; q < cp.count; q++) {
        if (k >= first_run(q)) {
            j = q;
        }
    }
    let span = cp.span[j / 4u][j % 4u];
    let start = (k - first_run(j)) * R;
    let end = min(start + R, span);
    let ibase = row * span;
    let obase = row * cp.out_row + cp.at[j / 4u][j % 4u];
    for (var e = start; e < end; e++) {
        cat_out[obase + e] = read_input(j, ibase + e);
    }
}

// ---- learned 2-D positional embedding -----------------------------------------------------------

struct EmbedParams {
    n: u32,
    runs: u32,
    w: u32,
    half: u32,
}

@group(0) @binding(0) var<uniform> ep: EmbedParams;
@group(0) @binding(1) var<storage, read> row_embed: array<u32>;
@group(0) @binding(2) var<storage, read> col_embed: array<u32>;
@group(0) @binding(3) var<storage, read_write> pos: array<u32>;

// Token (i, j) of an h × w map: channel c < half is col_embed[j, c], the rest row_embed[i, c − half].
// Output row q = 2·token + part holds one half: part 0 from col_embed, part 1 from row_embed.
@compute @workgroup_size(WG)
fn embed_2d(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let t = linear_id(wg, nw, li);
    if (t >= ep.n) {
        return;
    }
    let q = t / ep.runs;
    let start = (t % ep.runs) * R;
    let end = min(start + R, ep.half);
    let token = q / 2u;
    let obase = q * ep.half;
    if (q % 2u == 0u) {
        let ibase = (token % ep.w) * ep.half;
        for (var c = start; c < end; c++) {
            pos[obase + c] = col_embed[ibase + c];
        }
    } else {
        let ibase = (token / ep.w) * ep.half;
        for (var c = start; c < end; c++) {
            pos[obase + c] = row_embed[ibase + c];
        }
    }
}

// ==== backward ==================================================================================
// The layout ops are linear, so their backward passes are data movement too: permute's is the
// inverse permutation, pad's a crop, concat's a slice per input, slice's a zero pad (or, adding
// into an existing gradient, a strided add). All but the embedding's are one strided copy.
// Gradients are f32: where BW_ACCUM is set the copy adds to the destination instead.

override BW_ACCUM: bool = false;

struct StridedParams {
    shape: vec4<u32>,    // iteration shape, right-aligned to 4-D
    src_st: vec4<u32>,   // source stride of each iteration dimension
    dst_st: vec4<u32>,   // destination stride of each iteration dimension
    n: u32,              // invocations: rows of the iteration shape × runs per row
    runs: u32,           // runs per row (of shape.w elements)
    src_off: u32,
    dst_off: u32,
}

@group(0) @binding(0) var<uniform> tp: StridedParams;

// dst[dst_off + Σ c_k·dst_st_k] (+)= src[src_off + Σ c_k·src_st_k] for every coordinate c of
// the iteration shape. The destinations are distinct, so no two invocations touch one element.
@compute @workgroup_size(WG)
fn strided_bw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let t = linear_id(wg, nw, li);
    if (t >= tp.n) {
        return;
    }
    let s = tp.shape;
    let row = t / tp.runs;
    let c2 = row % s.z;
    let c1 = (row / s.z) % s.y;
    let c0 = row / (s.z * s.y);
    let sbase = tp.src_off + c0 * tp.src_st.x + c1 * tp.src_st.y + c2 * tp.src_st.z;
    let dbase = tp.dst_off + c0 * tp.dst_st.x + c1 * tp.dst_st.y + c2 * tp.dst_st.z;
    let start = (t % tp.runs) * R;
    let end = min(start + R, s.w);
    for (var j = start; j < end; j++) {
        let o = dbase + j * tp.dst_st.w;
        var v = src[sbase + j * tp.src_st.w];
        if (BW_ACCUM) {
            v = bitcast<u32>(bitcast<f32>(dst[o]) + bitcast<f32>(v));
        }
        dst[o] = v;
    }
}

// ---- learned 2-D positional embedding backward -------------------------------------------------

struct EmbedBwParams {
    n: u32,          // (Hmax + Wmax)·half: one invocation per table element
    h: u32,
    w: u32,
    half: u32,
    row_elems: u32,  // Hmax·half: invocations below this fill drow, the rest dcol
}

@group(0) @binding(0) var<uniform> eb: EmbedBwParams;

// drow[i, c] = Σ_j dpos[i·w + j, half + c] and dcol[j, c] = Σ_i dpos[i·w + j, c], summed in
// ascending order (one invocation per table element: deterministic, no atomics); table rows
// beyond the map (i ≥ h, j ≥ w) get zero. Bindings: dpos = `src`, drow = `dst`, dcol = `pos`.
@compute @workgroup_size(WG)
fn embed_2d_bw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let t = linear_id(wg, nw, li);
    if (t >= eb.n) {
        return;
    }
    let stride = 2u * eb.half;
    var acc = 0.0;
    if (t < eb.row_elems) {
        let i = t / eb.half;
        let c = t - i * eb.half;
        if (i < eb.h) {
            for (var j = 0u; j < eb.w; j++) {
                acc += bitcast<f32>(src[(i * eb.w + j) * stride + eb.half + c]);
            }
        }
        if (BW_ACCUM) {
            acc += bitcast<f32>(dst[t]);
        }
        dst[t] = bitcast<u32>(acc);
    } else {
        let u = t - eb.row_elems;
        let j = u / eb.half;
        let c = u - j * eb.half;
        if (j < eb.w) {
            for (var i = 0u; i < eb.h; i++) {
                acc += bitcast<f32>(src[(i * eb.w + j) * stride + c]);
            }
        }
        if (BW_ACCUM) {
            acc += bitcast<f32>(pos[u]);
        }
        pos[u] = bitcast<u32>(acc);
    }
}

// ---- concat_transpose: two token tensors side by side per token, as a channel-major map ---------
// out[b, c, l] = a[b, l, c] for c < ca, else x[b, l, c − ca] (a: [B, L, ca], x: [B, L, cb]).

struct ConcatTParams {
    n: u32,     // invocations: output rows (B·(ca + cb)) × runs per row
    runs: u32,  // runs per output row of l elements
    l: u32,
    ca: u32,
    cb: u32,
}

@group(0) @binding(0) var<uniform> ctp: ConcatTParams;
// Bindings 1 and 2 are in0 and in1 of concat (the two inputs).
@group(0) @binding(3) var<storage, read_write> ct_out: array<u32>;

@compute @workgroup_size(WG)
fn concat_transpose(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let t = linear_id(wg, nw, li);
    if (t >= ctp.n) {
        return;
    }
    let c_all = ctp.ca + ctp.cb;
    let row = t / ctp.runs;
    let bi = row / c_all;
    let c = row % c_all;
    let start = (t % ctp.runs) * R;
    let end = min(start + R, ctp.l);
    let obase = row * ctp.l;
    if (c < ctp.ca) {
        for (var e = start; e < end; e++) {
            ct_out[obase + e] = in0[(bi * ctp.l + e) * ctp.ca + c];
        }
    } else {
        let cc = c - ctp.ca;
        for (var e = start; e < end; e++) {
            ct_out[obase + e] = in1[(bi * ctp.l + e) * ctp.cb + cc];
        }
    }
}
