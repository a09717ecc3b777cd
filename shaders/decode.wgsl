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
