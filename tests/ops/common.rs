//! Shared test fixtures: one device per test binary, seeded inputs, and tolerance checks that
//! report the worst element.

#![allow(dead_code)]

use std::sync::OnceLock;

use sparsett::prng::SplitMix64;
use sparsett::Gpu;

/// The device shared by every test in this binary (device creation and shader compilation are
/// costly on lavapipe; sharing is safe because all Gpu state is behind locks).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new().unwrap_or_else(|e| {
            panic!("tests need a GPU adapter (on Debian: mesa-vulkan-drivers, WGPU_BACKEND=vulkan): {e}")
        })
    })
}

/// Seeded uniform values in [lo, hi).
pub fn rand_vec(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    SplitMix64::new(seed).vec_f32(n, lo, hi)
}

/// Asserts |got − want| ≤ atol + rtol·|want| element-wise; the message names the worst element.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0f32, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() != w.is_nan() {
            panic!("{what}: element {i} is {g}, expected {w}");
        }
        // Both NaN gives a NaN excess, which never counts as worse.
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess > worst.1 {
            worst = (i, excess, g);
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!(
            "{what}: element {i} is {}, expected {} (|diff| {} > atol {atol} + rtol {rtol}·|want|)",
            got[i],
            want[i],
            (got[i] - want[i]).abs()
        );
    }
}
