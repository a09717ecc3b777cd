// SparseTT box decoding and score fusion, one invocation per (batch item, score-map cell).
//
// Inputs are the two branches' 1×1 cls/reg convolutions stacked on channels: [B, 5, cells] with
// channel 0 = cls logit, 1..4 = raw l, t, r, b (after BatchNorm). Cell i·side + j has centre
// (stride·j + offset, stride·i + offset).

struct Params {
    batch: u32,
    side: u32,
    stride: f32,
    offset: f32,
    si_fc: f32,
    bi_fc: f32,
    si_conv: f32,
    bi_conv: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> fc: array<f32>;
@group(0) @binding(2) var<storage, read> cv: array<f32>;
@group(0) @binding(3) var<storage, read_write> score: array<f32>;     // [B, cells]
@group(0) @binding(4) var<storage, read_write> box_conv: array<f32>;  // [B, cells, 4] x1 y1 x2 y2
@group(0) @binding(5) var<storage, read_write> box_fc: array<f32>;    // [B, cells, 4]

fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

@compute @workgroup_size(64)
fn decode(@builtin(global_invocation_id) gid: vec3<u32>) {
    let cells = p.side * p.side;
    let idx = gid.x;
    if (idx >= p.batch * cells) {
        return;
    }
    let b = idx / cells;
    let c = idx % cells;
    let base = b * 5u * cells + c;
    let cx = p.stride * f32(c % p.side) + p.offset;
    let cy = p.stride * f32(c / p.side) + p.offset;

    let pf = sigmoid(fc[base]);
    let pc = sigmoid(cv[base]);
    score[idx] = pf + pc * (1.0 - pf);

    var l = exp(p.si_conv * cv[base + cells] + p.bi_conv) * p.stride;
    var t = exp(p.si_conv * cv[base + 2u * cells] + p.bi_conv) * p.stride;
    var r = exp(p.si_conv * cv[base + 3u * cells] + p.bi_conv) * p.stride;
    var bt = exp(p.si_conv * cv[base + 4u * cells] + p.bi_conv) * p.stride;
    box_conv[idx * 4u] = cx - l;
    box_conv[idx * 4u + 1u] = cy - t;
    box_conv[idx * 4u + 2u] = cx + r;
    box_conv[idx * 4u + 3u] = cy + bt;

    l = exp(p.si_fc * fc[base + cells] + p.bi_fc) * p.stride;
    t = exp(p.si_fc * fc[base + 2u * cells] + p.bi_fc) * p.stride;
    r = exp(p.si_fc * fc[base + 3u * cells] + p.bi_fc) * p.stride;
    bt = exp(p.si_fc * fc[base + 4u * cells] + p.bi_fc) * p.stride;
    box_fc[idx * 4u] = cx - l;
    box_fc[idx * 4u + 1u] = cy - t;
    box_fc[idx * 4u + 2u] = cx + r;
    box_fc[idx * 4u + 3u] = cy + bt;
}

// ---- Backward of the box decoding (training). -------------------------------------------------
// With e_k = exp(s·reg_k + b)·stride (k = l, t, r, b) and box = (cx − l, cy − t, cx + r, cy + b):
// de = (−dx1, −dy1, dx2, dy2), d reg_k = de_k·e_k·s, ds = Σ de_k·e_k·reg_k, db = Σ de_k·e_k.
// Gradients are added into the outputs (accumulation).

@group(0) @binding(1) var<storage, read> bw_fc: array<f32>;
@group(0) @binding(2) var<storage, read> bw_cv: array<f32>;
@group(0) @binding(3) var<storage, read> bw_dbox_conv: array<f32>;  // [B, cells, 4]
@group(0) @binding(4) var<storage, read> bw_dbox_fc: array<f32>;    // [B, cells, 4]
@group(0) @binding(5) var<storage, read_write> bw_dfc: array<f32>;  // [B, 5, cells], channels 1..4
@group(0) @binding(6) var<storage, read_write> bw_dcv: array<f32>;

// d e_k / d(s·reg_k + b) times the upstream gradient: de_k·e_k, with de_k's sign from the box side.
fn dpre(x: f32, s: f32, b: f32, k: u32, d: f32) -> f32 {
    let e = exp(s * x + b) * p.stride;
    return select(d, -d, k < 2u) * e;
}

@compute @workgroup_size(64)
fn decode_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let cells = p.side * p.side;
    let idx = (wg.x + wg.y * nwg.x) * 64u + li;
    if (idx >= p.batch * cells) {
        return;
    }
    let b = idx / cells;
    let c = idx % cells;
    for (var k = 0u; k < 4u; k++) {
        let o = (b * 5u + 1u + k) * cells + c;
        let gc = dpre(bw_cv[o], p.si_conv, p.bi_conv, k, bw_dbox_conv[idx * 4u + k]);
        bw_dcv[o] = bw_dcv[o] + gc * p.si_conv;
        let gf = dpre(bw_fc[o], p.si_fc, p.bi_fc, k, bw_dbox_fc[idx * 4u + k]);
        bw_dfc[o] = bw_dfc[o] + gf * p.si_fc;
    }
}

// The scalars' gradients: workgroup w ∈ {0: si_fc, 1: bi_fc, 2: si_conv, 3: bi_conv} sums its
// terms with a fixed per-invocation stride and a fixed tree (deterministic, no atomics) and adds
// the sum into dscal[w].
@group(0) @binding(1) var<storage, read> sc_fc: array<f32>;
@group(0) @binding(2) var<storage, read> sc_cv: array<f32>;
@group(0) @binding(3) var<storage, read> sc_dbox_conv: array<f32>;
@group(0) @binding(4) var<storage, read> sc_dbox_fc: array<f32>;
@group(0) @binding(5) var<storage, read_write> sc_out: array<f32>;  // [4]

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn decode_bwd_scalars(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let w = wg.x;
    let conv = w >= 2u;
    let is_s = (w % 2u) == 0u;
    let s = select(p.si_fc, p.si_conv, conv);
    let bias = select(p.bi_fc, p.bi_conv, conv);
    let cells = p.side * p.side;
    let n = p.batch * cells * 4u;
    var acc = 0.0;
    for (var i = l; i < n; i += 256u) {
        let idx = i / 4u;
        let k = i % 4u;
        let o = ((idx / cells) * 5u + 1u + k) * cells + idx % cells;
        var x: f32;
        var d: f32;
        if (conv) {
            x = sc_cv[o];
            d = sc_dbox_conv[i];
        } else {
            x = sc_fc[o];
            d = sc_dbox_fc[i];
        }
        let g = dpre(x, s, bias, k, d);
        acc += select(g, g * x, is_s);
    }
    red[l] = acc;
    workgroupBarrier();
    for (var h = 128u; h > 0u; h = h >> 1u) {
        if (l < h) {
            red[l] = red[l] + red[l + h];
        }
        workgroupBarrier();
    }
    if (l == 0u) {
        sc_out[w] = sc_out[w] + red[0];
    }
}
