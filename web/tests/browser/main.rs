//! Browser tests, run in headless Chromium by `bash web/test.sh` (one wasm test binary: each
//! binary is a separate link and browser start). `kernels`: kernel parity against the CPU
//! references; `api`: the JavaScript API's input checks and error messages.

#![cfg(target_arch = "wasm32")]

mod api;
mod kernels;

use std::cell::RefCell;
use std::rc::Rc;

use sparsett::gpu::{Shader, ShaderNeeds};
use sparsett::prng::SplitMix64;
use sparsett::{Encoder, Gpu, GpuOptions, Tensor, Variant};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

thread_local! {
    static GPU: RefCell<Option<Rc<Gpu>>> = const { RefCell::new(None) };
}

/// One device for the whole test binary (shaders compile once per device).
pub async fn gpu() -> Rc<Gpu> {
    if let Some(g) = GPU.with(|c| c.borrow().clone()) {
        return g;
    }
    let g = Rc::new(
        sparsett_web::create_gpu(GpuOptions::default())
            .await
            .unwrap_or_else(|e| panic!("the browser tests need WebGPU: {e}")),
    );
    GPU.with(|c| *c.borrow_mut() = Some(g.clone()));
    g
}

pub fn rand_vec(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    SplitMix64::new(seed).vec_f32(n, lo, hi)
}

pub async fn read(enc: Encoder<'_>, ts: &[&Tensor]) -> Vec<Vec<f32>> {
    enc.submit_read_async(ts).await.expect("read-back")
}

pub async fn read_u32(g: &Gpu, t: &Tensor) -> Vec<u32> {
    let raw = g.read_raw_async(&[t]).await.expect("read-back").remove(0);
    raw.chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// |got − want| ≤ atol + rtol·|want| element-wise; the message names the worst element.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0usize, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_nan() == w.is_nan(),
            "{what}: element {i} is {g}, expected {w}"
        );
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    let i = worst.0;
    assert!(
        worst.1 <= 0.0,
        "{what}: element {i} is {}, expected {} (|diff| {} > atol {atol} + rtol {rtol}·|want|)",
        got[i],
        want[i],
        (got[i] - want[i]).abs()
    );
}

#[wasm_bindgen_test]
async fn adapter_is_webgpu_with_the_variant_its_type_asks_for() {
    let g = gpu().await;
    console_log!("{}", g.describe());
    assert_eq!(g.info.backend, wgpu::Backend::BrowserWebGpu);
    // Fallback adapters (SwiftShader) report DeviceType::Cpu and pay dearly for barriers.
    let want = if g.info.device_type == wgpu::DeviceType::Cpu {
        Variant::Register
    } else {
        Variant::Tiled
    };
    assert_eq!(g.variant(), want);
}

/// A WGSL compile error reaches the caller with the compiler's message and the shader's name
/// (in the browser it arrives through the uncaptured-error sink, not an error scope).
#[wasm_bindgen_test]
async fn shader_errors_reach_the_caller() {
    static BAD: Shader = Shader {
        name: "bad_on_purpose.wgsl",
        source: "@group(0) @binding(1) var<storage, read_write> out: array<u32>;\n\
                 @compute @workgroup_size(1) fn main() { out[0] = 1.5; }\n",
        needs: ShaderNeeds {
            f16: false,
            subgroups: false,
        },
    };
    // A device of its own: the error must not leak into the other tests' device.
    let g = sparsett_web::create_gpu(GpuOptions::default())
        .await
        .expect("WebGPU");
    let t = g.upload_u32(&[4], &[7; 4]).unwrap();
    let mut enc = g.encoder();
    enc.dispatch(&BAD, "main", &[], &[], &[&t], [1, 1, 1])
        .unwrap();
    let e = enc
        .submit_read_raw_async(&[&t])
        .await
        .expect_err("an invalid shader ran")
        .to_string();
    console_log!("{e}");
    assert!(e.starts_with("GPU error"), "{e}");
    assert!(e.contains("bad_on_purpose.wgsl"), "{e}");
}

/// `Encoder::submit` queues without blocking in the browser; a later read sees its results
/// (the model's weight upload and the tracker's template step take this path).
#[wasm_bindgen_test]
async fn submit_then_read_sees_the_work() {
    let g = gpu().await;
    let x = rand_vec(77, 3 * 20, -4.0, 4.0);
    let xt = g.upload(&[3, 20], &x).unwrap();
    let mut enc = g.encoder();
    let y = sparsett::ops::softmax::softmax(&mut enc, &xt).unwrap();
    enc.submit().unwrap();
    let got = g.read_many_async(&[&y]).await.unwrap().remove(0);
    // Softmax tolerance as in kernels.rs (tests/ops/softmax.rs).
    let want = sparsett::ops::softmax::cpu::softmax(&x, 20);
    assert_close("softmax after submit", &got, &want, 1e-9, 2e-5);
}
