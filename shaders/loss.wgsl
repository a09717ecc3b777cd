// SparseTT's training losses: sigmoid focal loss on logits and the IoU loss on xyxy boxes, with
// their gradients. Labels per cell: 1 positive, 0 negative, −1 ignored.
//
// Forward entry points run as ONE workgroup: invocation l sums cells l, l + 256, … and a fixed
// tree adds the 256 partial sums, so results are deterministic (no float atomics) and the loss
// stays on the GPU as one scalar. Backward entry points run one invocation per cell and add
// their gradient into the output (gradient accumulation).

struct Params {
    n: u32,          // cells over the whole batch
    out_off: u32,    // forward: slot of the loss in `out`
    extra_off: u32,  // forward (IoU): slot of the mean IoU
    cells: u32,      // backward (focal): cells per batch item
    ostride: u32,    // backward (focal): elements per batch item of the gradient tensor
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    alpha: f32,
    gamma: f32,
    weight: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;
var<workgroup> ra: array<f32, 256>;
var<workgroup> rb: array<f32, 256>;
var<workgroup> rc: array<f32, 256>;

fn tree(l: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (l < s) {
            ra[l] = ra[l] + ra[l + s];
            rb[l] = rb[l] + rb[l + s];
            rc[l] = rc[l] + rc[l + s];
        }
        workgroupBarrier();
    }
}

fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// log(1 + e^z), without overflow.
fn softplus(z: f32) -> f32 {
    return max(z, 0.0) + log(1.0 + exp(-abs(z)));
}

// x^γ for x ≥ 0, γ > 0; exact squaring for the usual γ = 2 (WGSL's pow is exp2(γ·log2 x)).
fn powg(x: f32, g: f32) -> f32 {
    if (g == 2.0) {
        return x * x;
    }
    if (x <= 0.0) {
        return 0.0;
    }
    return pow(x, g);
}

// The focal loss of one cell with target t ∈ {0, 1}, written in z = x (t = 0) or −x (t = 1):
// q = σ(z) is the probability of the wrong class, ce = softplus(z), FL = α_t·q^γ·ce.
fn focal(x: f32, t: bool) -> f32 {
    let z = select(x, -x, t);
    let at = select(1.0 - p.alpha, p.alpha, t);
    return at * powg(sigmoid(z), p.gamma) * softplus(z);
}

// Focal forward; bindings: logits [n], labels [n], out.
@group(0) @binding(1) var<storage, read> f_logits: array<f32>;
@group(0) @binding(2) var<storage, read> f_labels: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_out: array<f32>;

@compute @workgroup_size(256)
fn focal_fwd(@builtin(local_invocation_index) l: u32) {
    var sum = 0.0;
    var pos = 0.0;
    for (var i = l; i < p.n; i += WG) {
        let lab = f_labels[i];
        if (lab != -1.0) {
            sum += focal(f_logits[i], lab > 0.0);
        }
        pos += select(0.0, 1.0, lab > 0.0);
    }
    ra[l] = sum;
    rb[l] = pos;
    rc[l] = 0.0;
    tree(l);
    if (l == 0u) {
        f_out[p.out_off] = ra[0] / max(rb[0], 1.0) * p.weight;
    }
}

// max(#positives, 1) into cnt[0], for the backward passes; bindings: labels [n], cnt [1].
@group(0) @binding(1) var<storage, read> c_labels: array<f32>;
@group(0) @binding(2) var<storage, read_write> c_out: array<f32>;

@compute @workgroup_size(256)
fn count_pos(@builtin(local_invocation_index) l: u32) {
    var pos = 0.0;
    for (var i = l; i < p.n; i += WG) {
        pos += select(0.0, 1.0, c_labels[i] > 0.0);
    }
    ra[l] = pos;
    rb[l] = 0.0;
    rc[l] = 0.0;
    tree(l);
    if (l == 0u) {
        c_out[0] = max(ra[0], 1.0);
    }
}

// Focal backward: dx += dloss·weight/npos · dFL/dx with dFL/dz = α_t·q^γ·(γ(1 − q)·ce + q) and
// dz/dx = ±1. Bindings: logits, labels, cnt [1], dloss [1], dx (cell (b, c) at b·ostride + c).
@group(0) @binding(1) var<storage, read> fb_logits: array<f32>;
@group(0) @binding(2) var<storage, read> fb_labels: array<f32>;
@group(0) @binding(3) var<storage, read> fb_cnt: array<f32>;
@group(0) @binding(4) var<storage, read> fb_dloss: array<f32>;
@group(0) @binding(5) var<storage, read_write> fb_dx: array<f32>;

@compute @workgroup_size(64)
fn focal_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + li;
    if (i >= p.n) {
        return;
    }
    let lab = fb_labels[i];
    if (lab == -1.0) {
        return;
    }
    let t = lab > 0.0;
    let x = fb_logits[i];
    let z = select(x, -x, t);
    let at = select(1.0 - p.alpha, p.alpha, t);
    let q = sigmoid(z);
    let dz = at * powg(q, p.gamma) * (p.gamma * sigmoid(-z) * softplus(z) + q);
    let g = select(dz, -dz, t) * (fb_dloss[0] * p.weight / fb_cnt[0]);
    let o = (i / p.cells) * p.ostride + i % p.cells;
    fb_dx[o] = fb_dx[o] + g;
}

// IoU loss pieces of one cell (official IOULoss, "+1" pixel areas).
struct Iou {
    aop: f32,
    aog: f32,
    iw: f32,
    ih: f32,
    inter: f32,
    uni: f32,
    iou: f32,
}

fn iou_of(pr: vec4<f32>, gt: vec4<f32>) -> Iou {
    var r: Iou;
    r.aog = abs(gt.z - gt.x + 1.0) * abs(gt.w - gt.y + 1.0);
    r.aop = abs(pr.z - pr.x + 1.0) * abs(pr.w - pr.y + 1.0);
    r.iw = min(pr.z, gt.z) - max(pr.x, gt.x) + 1.0;
    r.ih = min(pr.w, gt.w) - max(pr.y, gt.y) + 1.0;
    r.inter = max(r.iw, 0.0) * max(r.ih, 0.0);
    r.uni = r.aog + r.aop - r.inter;
    r.iou = max(r.inter / r.uni, 0.0);
    return r;
}

// f32's smallest normal number: the official safelog's floor.
const TINY: f32 = 1.17549435e-38;

// IoU forward; bindings: pred [n, 4], gt [n, 4], labels [n], out. Positive cells are label > 0.
@group(0) @binding(1) var<storage, read> i_pred: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> i_gt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> i_labels: array<f32>;
@group(0) @binding(4) var<storage, read_write> i_out: array<f32>;

@compute @workgroup_size(256)
fn iou_fwd(@builtin(local_invocation_index) l: u32) {
    var sum = 0.0;
    var isum = 0.0;
    var pos = 0.0;
    for (var i = l; i < p.n; i += WG) {
        if (i_labels[i] > 0.0) {
            let r = iou_of(i_pred[i], i_gt[i]);
            sum += -log(max(r.iou, TINY));
            isum += r.iou;
            pos += 1.0;
        }
    }
    ra[l] = sum;
    rb[l] = isum;
    rc[l] = pos;
    tree(l);
    if (l == 0u) {
        let d = max(rc[0], 1.0);
        i_out[p.out_off] = ra[0] / d * p.weight;
        i_out[p.extra_off] = rb[0] / d;
    }
}

// ∂min(a, b)/∂a as PyTorch's minimum: 1 if a < b, ½ on a tie, 0 otherwise.
fn takes_min(a: f32, b: f32) -> f32 {
    return select(select(0.0, 0.5, a == b), 1.0, a < b);
}

fn sgn(x: f32) -> f32 {
    return select(select(0.0, -1.0, x < 0.0), 1.0, x > 0.0);
}

// IoU backward w.r.t. the predicted box; bindings: pred, gt, labels, cnt [1], dloss [1], dpred.
// loss = −log(iou) (zero gradient where the floor or the clamp at 0 is active).
@group(0) @binding(1) var<storage, read> ib_pred: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> ib_gt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> ib_labels: array<f32>;
@group(0) @binding(4) var<storage, read> ib_cnt: array<f32>;
@group(0) @binding(5) var<storage, read> ib_dloss: array<f32>;
@group(0) @binding(6) var<storage, read_write> ib_dpred: array<vec4<f32>>;

@compute @workgroup_size(64)
fn iou_bwd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + li;
    if (i >= p.n || !(ib_labels[i] > 0.0)) {
        return;
    }
    let pr = ib_pred[i];
    let gt = ib_gt[i];
    let r = iou_of(pr, gt);
    if (!(r.iou > TINY)) {
        return;
    }
    // d loss / d iou, then iou = inter / union with union = aog + aop − inter.
    let diou = -(ib_dloss[0] * p.weight / ib_cnt[0]) / r.iou;
    let dinter = diou * (r.uni + r.inter) / (r.uni * r.uni);
    let daop = -diou * r.inter / (r.uni * r.uni);
    let w = pr.z - pr.x + 1.0;
    let h = pr.w - pr.y + 1.0;
    let dw = daop * sgn(w) * abs(h);
    let dh = daop * abs(w) * sgn(h);
    // inter = max(iw, 0)·max(ih, 0); ties of max(·, 0) take half, as PyTorch's maximum.
    let diw = dinter * max(r.ih, 0.0) * takes_min(0.0, r.iw) ;
    let dih = dinter * max(r.iw, 0.0) * takes_min(0.0, r.ih);
    var g: vec4<f32>;
    // iw = min(x2, gx2) − max(x1, gx1) + 1: max(a, b) w.r.t. a is min(−a, −b) w.r.t. −a.
    g.x = -dw - diw * takes_min(-pr.x, -gt.x);
    g.y = -dh - dih * takes_min(-pr.y, -gt.y);
    g.z = dw + diw * takes_min(pr.z, gt.z);
    g.w = dh + dih * takes_min(pr.w, gt.w);
    ib_dpred[i] = ib_dpred[i] + g;
}

// Sum of out[out_off .. out_off + n) into out[extra_off], in order (the weighted total).
@group(0) @binding(1) var<storage, read_write> t_out: array<f32>;

@compute @workgroup_size(1)
fn total() {
    var s = 0.0;
    for (var k = 0u; k < p.n; k++) {
        s += t_out[p.out_off + k];
    }
    t_out[p.extra_off] = s;
}
