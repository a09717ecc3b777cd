// AdamW as torch.optim.AdamW (amsgrad off, maximize off), one invocation per element of a parameter
// tensor, and the pieces of clip_grad_norm_ (global L2 norm → clip coefficient → scaled gradients).
//
// Per element, in PyTorch's order of f32 operations (the host computes the step's scalars in f64,
// as Python does, and rounds them to f32 as PyTorch does when it applies them to f32 tensors):
//   p ← p · (1 − lr·wd)                      decoupled weight decay, before the Adam update
//   m ← m + (1 − β1)·(g − m)                 exp_avg.lerp_(g, 1 − β1)
//   v ← v·β2 + (1 − β2)·g·g                  exp_avg_sq.mul_(β2).addcmul_(g, g, value = 1 − β2)
//   denom = sqrt(v) / sqrt(1 − β2^t) + eps
//   p ← p + (−lr / (1 − β1^t))·m / denom      param.addcdiv_(m, denom, value = −step_size)

// Multiplies the gradient by clip[1] (the clip coefficient from clip_coef) on the fly.
override CLIP: bool = false;

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    decay: f32,       // 1 − lr·wd
    lerp_w: f32,      // 1 − β1
    beta2: f32,
    one_m_beta2: f32, // 1 − β2
    bc2_sqrt: f32,    // sqrt(1 − β2^t)
    neg_step: f32,    // −lr / (1 − β1^t)
    eps: f32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
// Read only when CLIP; the host binds grad a second time otherwise.
@group(0) @binding(2) var<storage, read> clip: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    var g = grad[i];
    if (CLIP) {
        g = g * clip[1];
    }
    let w = param[i] * p.decay;
    let mi = m[i] + p.lerp_w * (g - m[i]);
    let vi = v[i] * p.beta2 + p.one_m_beta2 * g * g;
    let denom = sqrt(vi) / p.bc2_sqrt + p.eps;
    m[i] = mi;
    v[i] = vi;
    param[i] = w + p.neg_step * mi / denom;
}

// clip_grad_norm_: from the per-tensor sums of squares sq[0..count] (reduce.wgsl, MODE 1),
// out[0] = total L2 norm, out[1] = min(max_norm / (total + 1e-6), 1). One invocation: count is
// the number of parameter tensors (hundreds), and a fixed order keeps the result deterministic.
struct ClipParams {
    count: u32,
    max_norm: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> cp: ClipParams;
@group(0) @binding(1) var<storage, read> sq: array<f32>;
@group(0) @binding(2) var<storage, read_write> coef_out: array<f32>;

@compute @workgroup_size(1)
fn clip_coef() {
    var s = 0.0;
    for (var i = 0u; i < cp.count; i++) {
        s += sq[i];
    }
    let total = sqrt(s);
    coef_out[0] = total;
    coef_out[1] = min(cp.max_norm / (total + 1e-6), 1.0);
}

// g ← g · coef[1] in place (clip_grad_norm_ multiplies every gradient by the clamped
// coefficient, 1 included).
struct ScaleParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> sp: ScaleParams;
@group(0) @binding(1) var<storage, read> coef: array<f32>;
@group(0) @binding(2) var<storage, read_write> g_inout: array<f32>;

@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= sp.n) {
        return;
    }
    g_inout[i] = g_inout[i] * coef[1];
}
