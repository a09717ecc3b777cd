// The tracker's context crop: OpenCV 5.0's warpAffine (INTER_LINEAR, WARP_INVERSE_MAP,
// BORDER_CONSTANT) of an 8-bit RGB frame, bit for bit, then (u8 − mean) / std per channel.
//
// OpenCV 5 interpolates in f32 with fused multiply-adds:
//   t = fma(α, p01 − p00, p00), b = fma(α, p11 − p10, p10), v = fma(β, b − t, t), out = rne(v).
// WGSL lets fma() be unfused and lets drivers contract a·b + c, so f32 arithmetic here could not
// promise the same bits on every GPU. Instead every step is an exact IEEE-754 binary32 operation
// emulated in u32 integer arithmetic (a 128-bit window, round to nearest even, subnormals kept).
// The host supplies what OpenCV computes per column and per row (integer source coordinate and
// the f32 fraction α or β, see src/ops/crop.rs) and a 768-entry table of the normalised values.
//
// Table layout (u32 words): [0, 768) normalised value of (channel c, byte u) at c·256 + u (f32
// bits); then per spec, `4·out + 4` words: out × (ix, α bits), out × (iy, β bits), border RGB.

struct Params {
    n_specs: u32,
    out: u32,
    width: u32,
    height: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> frame: array<u32>;   // RGB bytes, four per word
@group(0) @binding(3) var<storage, read_write> dst: array<f32>; // [n_specs, 3, out, out]

// An exact binary32 value ±m·2^e with m < 2^24 (m = 0 is zero).
struct Soft {
    m: u32,
    e: i32,
    neg: bool,
}

struct Sum128 {
    v: vec4<u32>,   // limbs, x least significant
    carry: u32,
}

fn clz128(w: vec4<u32>) -> u32 {
    if (w.w != 0u) {
        return countLeadingZeros(w.w);
    }
    if (w.z != 0u) {
        return 32u + countLeadingZeros(w.z);
    }
    if (w.y != 0u) {
        return 64u + countLeadingZeros(w.y);
    }
    if (w.x != 0u) {
        return 96u + countLeadingZeros(w.x);
    }
    return 128u;
}

// Shift amounts of 32 or more would wrap in WGSL, so whole limbs move first.
fn shl128(w: vec4<u32>, s: u32) -> vec4<u32> {
    var r = w;
    var k = s;
    if (k >= 64u) {
        r = vec4<u32>(0u, 0u, r.x, r.y);
        k -= 64u;
    }
    if (k >= 32u) {
        r = vec4<u32>(0u, r.x, r.y, r.z);
        k -= 32u;
    }
    if (k > 0u) {
        let j = 32u - k;
        r = vec4<u32>(r.x << k, (r.y << k) | (r.x >> j), (r.z << k) | (r.y >> j), (r.w << k) | (r.z >> j));
    }
    return r;
}

fn shr128(w: vec4<u32>, s: u32) -> vec4<u32> {
    if (s >= 128u) {
        return vec4<u32>(0u);
    }
    var r = w;
    var k = s;
    if (k >= 64u) {
        r = vec4<u32>(r.z, r.w, 0u, 0u);
        k -= 64u;
    }
    if (k >= 32u) {
        r = vec4<u32>(r.y, r.z, r.w, 0u);
        k -= 32u;
    }
    if (k > 0u) {
        let j = 32u - k;
        r = vec4<u32>((r.x >> k) | (r.y << j), (r.y >> k) | (r.z << j), (r.z >> k) | (r.w << j), r.w >> k);
    }
    return r;
}

// Bits [lo, lo + 32) of a mask of the bits below s.
fn limb_mask(s: u32, lo: u32) -> u32 {
    if (s >= lo + 32u) {
        return 0xffffffffu;
    }
    if (s <= lo) {
        return 0u;
    }
    return (1u << (s - lo)) - 1u;
}

fn any_below(w: vec4<u32>, s: u32) -> bool {
    let m = (w.x & limb_mask(s, 0u)) | (w.y & limb_mask(s, 32u)) | (w.z & limb_mask(s, 64u)) |
        (w.w & limb_mask(s, 96u));
    return m != 0u;
}

// Right shift that folds every lost bit into bit 0 (a sticky bit far below any rounding point).
fn shr128_sticky(w: vec4<u32>, s: u32) -> vec4<u32> {
    var r = shr128(w, s);
    if (any_below(w, min(s, 128u))) {
        r.x |= 1u;
    }
    return r;
}

fn carry(s: u32, a: u32) -> u32 {
    return select(0u, 1u, s < a);
}

fn add128(a: vec4<u32>, b: vec4<u32>) -> Sum128 {
    let s0 = a.x + b.x;
    let c0 = carry(s0, a.x);
    let t1 = a.y + b.y;
    let s1 = t1 + c0;
    let c1 = carry(t1, a.y) | carry(s1, t1);
    let t2 = a.z + b.z;
    let s2 = t2 + c1;
    let c2 = carry(t2, a.z) | carry(s2, t2);
    let t3 = a.w + b.w;
    let s3 = t3 + c2;
    let c3 = carry(t3, a.w) | carry(s3, t3);
    return Sum128(vec4<u32>(s0, s1, s2, s3), c3);
}

fn borrow(a: u32, b: u32) -> u32 {
    return select(0u, 1u, a < b);
}

// a − b for a ≥ b.
fn sub128(a: vec4<u32>, b: vec4<u32>) -> vec4<u32> {
    let d0 = a.x - b.x;
    let b0 = borrow(a.x, b.x);
    let t1 = a.y - b.y;
    let d1 = t1 - b0;
    let b1 = borrow(a.y, b.y) | borrow(t1, b0);
    let t2 = a.z - b.z;
    let d2 = t2 - b1;
    let b2 = borrow(a.z, b.z) | borrow(t2, b1);
    let d3 = a.w - b.w - b2;
    return vec4<u32>(d0, d1, d2, d3);
}

fn ge128(a: vec4<u32>, b: vec4<u32>) -> bool {
    if (a.w != b.w) {
        return a.w > b.w;
    }
    if (a.z != b.z) {
        return a.z > b.z;
    }
    if (a.y != b.y) {
        return a.y > b.y;
    }
    return a.x >= b.x;
}

// Rounds ±w·2^u to binary32, nearest even, with the subnormal grid 2^-149.
fn round_wide(neg: bool, w: vec4<u32>, u: i32) -> Soft {
    let lz = clz128(w);
    if (lz == 128u) {
        return Soft(0u, 0, neg);
    }
    let lead = 127 - i32(lz);
    let drop = max(lead - 23, -149 - u);
    if (drop <= 0) {
        return Soft(w.x, u, neg);
    }
    let d = u32(drop);
    var m = shr128(w, d).x;
    let round_bit = shr128(w, d - 1u).x & 1u;
    if (round_bit == 1u && (any_below(w, d - 1u) || (m & 1u) == 1u)) {
        m += 1u;
    }
    var e = u + drop;
    if (m == 0x1000000u) {
        m = 0x800000u;
        e += 1;
    }
    return Soft(m, e, neg);
}

// fl(±(xh·2^32 + xl)·2^xe ± (yh·2^32 + yl)·2^ye): both operands exact, one rounding.
fn add_exact(xneg: bool, xh: u32, xl: u32, xe: i32, yneg: bool, yh: u32, yl: u32, ye: i32) -> Soft {
    var a = vec4<u32>(0u, 0u, xl, xh);
    var b = vec4<u32>(0u, 0u, yl, yh);
    let za = (xh | xl) == 0u;
    let zb = (yh | yl) == 0u;
    if (za && zb) {
        return Soft(0u, 0, false);
    }
    if (zb) {
        return round_wide(xneg, a, xe - 64);
    }
    if (za) {
        return round_wide(yneg, b, ye - 64);
    }
    // Both left-aligned at bit 127; the one with the larger exponent leads.
    let na = clz128(a);
    let nb = clz128(b);
    a = shl128(a, na);
    b = shl128(b, nb);
    var ua = xe - 64 - i32(na);
    var ub = ye - 64 - i32(nb);
    var an = xneg;
    var bn = yneg;
    if (ub > ua) {
        let tw = a;
        a = b;
        b = tw;
        let tu = ua;
        ua = ub;
        ub = tu;
        let tn = an;
        an = bn;
        bn = tn;
    }
    b = shr128_sticky(b, u32(ua - ub));
    if (an == bn) {
        let s = add128(a, b);
        if (s.carry == 1u) {
            var r = shr128_sticky(s.v, 1u);
            r.w |= 0x80000000u;
            return round_wide(an, r, ua + 1);
        }
        return round_wide(an, s.v, ua);
    }
    if (ge128(a, b)) {
        return round_wide(an, sub128(a, b), ua);
    }
    return round_wide(bn, sub128(b, a), ua);
}

fn soft_from_bits(bits: u32) -> Soft {
    let ex = (bits >> 23u) & 0xffu;
    let fr = bits & 0x7fffffu;
    let neg = (bits >> 31u) == 1u;
    if (ex == 0u) {
        return Soft(fr, -149, neg);
    }
    return Soft(fr | 0x800000u, i32(ex) - 150, neg);
}

// fl(a·d + q) for a ≥ 0 and small integers d (|d| ≤ 255) and q ≥ 0: the product is exact in u32.
fn fma_int(a: Soft, d: i32, q: u32) -> Soft {
    return add_exact(d < 0, 0u, a.m * u32(abs(d)), a.e, false, 0u, q, 0);
}

fn sub_soft(x: Soft, y: Soft) -> Soft {
    return add_exact(x.neg, 0u, x.m, x.e, !y.neg, 0u, y.m, y.e);
}

// Full 32×32 → 64-bit product as (hi, lo).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let ll = a0 * b0;
    let lh = a0 * b1;
    let hl = a1 * b0;
    let hh = a1 * b1;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    return vec2<u32>(hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u), (ll & 0xffffu) | (mid << 16u));
}

// fl(x·y + z), one rounding.
fn fma_soft(x: Soft, y: Soft, z: Soft) -> Soft {
    let pr = mul_wide(x.m, y.m);
    return add_exact(x.neg != y.neg, pr.x, pr.y, x.e + y.e, z.neg, 0u, z.m, z.e);
}

// saturate_cast<uchar>: round to nearest even, clamp to [0, 255].
fn to_u8(v: Soft) -> u32 {
    if (v.m == 0u || v.neg) {
        return 0u;
    }
    if (v.e >= 0) {
        if (v.e >= 8) {
            return 255u;
        }
        return min(v.m << u32(v.e), 255u);
    }
    let s = u32(-v.e);
    if (s > 25u) {
        return 0u;
    }
    var q = v.m >> s;
    let r = v.m & ((1u << s) - 1u);
    let half = 1u << (s - 1u);
    if (r > half || (r == half && (q & 1u) == 1u)) {
        q += 1u;
    }
    return min(q, 255u);
}

fn frame_byte(i: u32) -> u32 {
    return (frame[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn inside(x: i32, y: i32) -> bool {
    return x >= 0 && y >= 0 && u32(x) < p.width && u32(y) < p.height;
}

// Channel c of source pixel (x, y), or of the border colour outside the frame.
fn sample(x: i32, y: i32, c: u32, border: u32) -> u32 {
    if (inside(x, y)) {
        return frame_byte((u32(y) * p.width + u32(x)) * 3u + c);
    }
    return (border >> (8u * c)) & 0xffu;
}

@compute @workgroup_size(64)
fn crop(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let idx = (wg.x + wg.y * nw.x) * 64u + li;
    let plane = p.out * p.out;
    if (idx >= p.n_specs * plane) {
        return;
    }
    let s = idx / plane;
    let rem = idx % plane;
    let y = rem / p.out;
    let x = rem % p.out;
    let base = 768u + s * (4u * p.out + 4u);
    let ix = bitcast<i32>(table[base + 2u * x]);
    let alpha = soft_from_bits(table[base + 2u * x + 1u]);
    let iy = bitcast<i32>(table[base + 2u * p.out + 2u * y]);
    let beta = soft_from_bits(table[base + 2u * p.out + 2u * y + 1u]);
    let border = table[base + 4u * p.out];
    // All four neighbours outside: every step of the interpolation returns the border exactly.
    let none = !inside(ix, iy) && !inside(ix + 1, iy) && !inside(ix, iy + 1) && !inside(ix + 1, iy + 1);
    for (var c = 0u; c < 3u; c++) {
        var u: u32;
        if (none) {
            u = (border >> (8u * c)) & 0xffu;
        } else {
            let p00 = sample(ix, iy, c, border);
            let p01 = sample(ix + 1, iy, c, border);
            let p10 = sample(ix, iy + 1, c, border);
            let p11 = sample(ix + 1, iy + 1, c, border);
            let t = fma_int(alpha, i32(p01) - i32(p00), p00);
            let b = fma_int(alpha, i32(p11) - i32(p10), p10);
            u = to_u8(fma_soft(beta, sub_soft(b, t), t));
        }
        dst[((s * 3u + c) * p.out + y) * p.out + x] = bitcast<f32>(table[c * 256u + u]);
    }
}
