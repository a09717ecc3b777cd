//! The deterministic random streams used across the project: FNV-1a 64 and splitmix64, exactly as
//! the golden data's `PRNG_RULE.md` defines them, so weights and test inputs can be regenerated
//! bit for bit anywhere.

/// FNV-1a 64-bit hash of a byte string.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The standard splitmix64 generator.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(state: u64) -> Self {
        SplitMix64 { state }
    }

    /// The stream of a state-dict key under a global seed: `state0 = fnv1a64(key) ^ seed`.
    pub fn for_key(key: &str, seed: u64) -> Self {
        SplitMix64::new(fnv1a64(key.as_bytes()) ^ seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), exactly representable in f32: `(z >> 40) / 2^23 - 1`.
    pub fn next_sym(&mut self) -> f64 {
        let k = self.next_u64() >> 40;
        k as f64 / 8_388_608.0 - 1.0
    }

    /// Uniform in [0, 1) with 24 random bits.
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 40) as f64 / 16_777_216.0
    }

    /// `n` values uniform in [lo, hi), as f32 (for test inputs).
    pub fn vec_f32(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (hi - lo) * self.next_unit() as f32)
            .collect()
    }
}

/// The LeCun-uniform value stream of the PRNG rule: `v_i = (u_i * sqrt(3 / fan_in)) as f32`.
pub fn prng_weights(key: &str, seed: u64, shape: &[usize]) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    let fan_in = numel / shape[0].max(1);
    let scale = (3.0f64 / fan_in as f64).sqrt();
    let mut rng = SplitMix64::for_key(key, seed);
    (0..numel)
        .map(|_| (rng.next_sym() * scale) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_anchors() {
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn splitmix_from_zero() {
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220a8397b1dcdaf);
        assert_eq!(r.next_u64(), 0x6e789e6aa1b965f4);
        assert_eq!(r.next_u64(), 0x06c45d188009454f);
    }

    #[test]
    fn rule_vectors() {
        // Test vectors 1 and 3 of PRNG_RULE.md (seed 0 and seed 7).
        let v = prng_weights(
            "basemodel.net.patch_embed.projection.weight",
            0,
            &[96, 3, 4, 4],
        );
        let bits: Vec<u32> = v[..4].iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, [0x3c33e580, 0x3e3bd2b8, 0x3d7fe948, 0xbe3c2282]);
        let v = prng_weights("head.conv_branch.0.conv1.conv.weight", 7, &[512, 512, 3, 3]);
        let bits: Vec<u32> = v[..4].iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, [0xbc51a8fd, 0xbbd5b808, 0xbc035d8b, 0x3cca6311]);
        let mut p = SplitMix64::for_key(
            "neck.decoder.decoder_layers.0.slf_attn.in_proj_weight#probe0",
            0,
        );
        assert_eq!(p.next_sym(), 0.6575497388839722);
    }
}
