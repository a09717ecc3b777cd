// Element-wise ops: unary activations (one pipeline per op through the OP override constant, so the
// hot loop has no branch) and binary ops with a broadcast second operand; their backward passes
// (unary_backward; the broadcast gradients of binary ops are sums, in reduce.wgsl) and
// accumulate (dst += src), which adds a gradient into an existing one.
//
// Linear index of an invocation: the host splits large counts over a 2-D grid of workgroups.

override OP: u32 = 0u;
// Backward and binary entry points: add the result to what out holds instead of overwriting it.
override ACCUM: bool = false;

const OP_RELU: u32 = 0u;
const OP_GELU: u32 = 1u;
const OP_SIGMOID: u32 = 2u;
const OP_EXP: u32 = 3u;
const OP_AFFINE: u32 = 4u; // alpha * x + beta
const OP_ADD: u32 = 10u;
const OP_MUL: u32 = 11u;

struct Params {
    n: u32,
    nb: u32,      // element count of the broadcast operand b (binary ops)
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// erf with |error| < 1.2e-7 (Numerical Recipes erfc, Chebyshev fit), enough for exact-erf GELU in f32.
fn erf_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752));
}

fn sigmoid(x: f32) -> f32 {
    // Written so that neither branch overflows exp.
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

fn apply_unary(x: f32) -> f32 {
    switch OP {
        case 0u: { return max(x, 0.0); }
        case 1u: { return gelu(x); }
        case 2u: { return sigmoid(x); }
        case 3u: { return exp(x); }
        default: { return p.alpha * x + p.beta; }
    }
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    y[i] = apply_unary(a[i]);
}

@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

// out = a (op) b[i mod nb]: b broadcasts over the leading dimensions of a.
@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    let bv = b[i % p.nb];
    var r: f32;
    if (OP == OP_MUL) {
        r = a[i] * bv;
    } else {
        r = a[i] + bv;
    }
    if (ACCUM) {
        r += out[i];
    }
    out[i] = r;
}

// d/dx of exact GELU: Φ(x) + x·φ(x), in PyTorch's order (GeluBackward, approximate='none').
fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_approx(x * 0.70710678118654752));
    let pdf = 0.39894228040143268 * exp(-0.5 * x * x);
    return cdf + x * pdf;
}

// out = dy · f'(x), with a = the saved tensor (x for ReLU and GELU, y = f(x) for sigmoid and exp,
// ignored by affine) and b = dy. ReLU passes dy where the saved value is > 0, which is the same
// for x and for relu(x) (PyTorch's threshold_backward on the result).
@compute @workgroup_size(256)
fn unary_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    let s = a[i];
    let g = b[i];
    var d: f32;
    switch OP {
        case 0u: { d = select(0.0, g, s > 0.0); }
        case 1u: { d = g * gelu_grad(s); }
        // PyTorch's sigmoid_backward: dy · (1 − y) · y.
        case 2u: { d = g * (1.0 - s) * s; }
        case 3u: { d = g * s; }
        default: { d = p.alpha * g; }
    }
    if (ACCUM) {
        d += out[i];
    }
    out[i] = d;
}

// y += a over n elements (a gradient added into an existing one).
@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nw.x) * 256u + li;
    if (i >= p.n) {
        return;
    }
    y[i] = y[i] + a[i];
}
