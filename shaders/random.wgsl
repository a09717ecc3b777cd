// Seeded random masks without GPU state: dropout and stochastic depth (drop path).
//
// Every element's random word is a pure function of (seed, stream, counter):
//   bits = pcg(pcg(counter ^ key0) + key1)
// with pcg the PCG-RXS-M-XS 32-bit hash (Jarzynski & Olano, "Hash Functions for GPU Rendering",
// JCGT 2020) and (key0, key1) derived from the 64-bit seed and the stream on the host
// (`ops::random::cpu::keys`). For a fixed key the map counter → bits is a bijection, so distinct
// elements never share a word. The element is kept iff bits ≥ thr (thr = round(p·2³²)), an integer
// compare, so the CPU reference reproduces the mask bit for bit. The counter is the element index
// (dropout) or the sample index, element / inner (drop path, PER_SAMPLE).
//
// One entry point serves forward and backward: out = keep ? in·scale : 0, scale = 1/(1 − p);
// the backward regenerates the same mask from the same seed instead of storing it (two integer
// hashes per element cost less than writing and re-reading a mask).
//
// Linear index of an invocation: the host splits large counts over a 2-D grid of workgroups.

struct Params {
    n: u32,
    inner: u32,  // elements per sample (drop path)
    key0: u32,
    key1: u32,
    thr: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
}

// Add the result to what `dst` holds (backward into an existing gradient).
override ACCUM: bool = false;
// One random word per sample (drop path) instead of per element (dropout).
override PER_SAMPLE: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn pcg(v: u32) -> u32 {
    let s = v * 747796405u + 2891336453u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

@compute @workgroup_size(256)
fn mask_scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let e = (wg.x + wg.y * nw.x) * 256u + li;
    if (e >= p.n) {
        return;
    }
    var ctr = e;
    if (PER_SAMPLE) {
        ctr = e / p.inner;
    }
    let keep = pcg(pcg(ctr ^ p.key0) + p.key1) >= p.thr;
    let y = select(0.0, src[e] * p.scale, keep);
    if (ACCUM) {
        dst[e] = dst[e] + y;
    } else {
        dst[e] = y;
    }
}
