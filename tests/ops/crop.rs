//! The tracker's context crop. Tolerance: none. The golden crops were made by OpenCV 5.0.0's
//! `cv2.warpAffine` and are matched bit for bit, by the CPU reference and by the GPU kernel; the
//! normalised crops equal the golden network inputs `input.z` / `input.x` bit for bit too.
//! Small hand-made cases carry OpenCV's own output (computed with `cv2` 5.0.0, AVX2 build), and
//! the GPU is compared exactly with the CPU reference on awkward frames, maps and fractions.

use std::collections::BTreeMap;

use serde_json::Value;
use sparsett::ops::crop::{self, cpu, CropSpec, GpuFrame};
use sparsett::prng::SplitMix64;
use sparsett::Gpu;

use crate::common::gpu;

#[path = "../support/golden.rs"]
mod golden;

const MEAN: [f32; 3] = [0.0; 3];
const STD: [f32; 3] = [1.0; 3];

struct Golden {
    t: BTreeMap<String, golden::Gold>,
    meta: Value,
}

fn gold() -> &'static Golden {
    static G: std::sync::OnceLock<Golden> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        let dir = golden::golden_dir();
        let meta = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        Golden {
            t: golden::load_golden(&dir),
            meta,
        }
    })
}

/// An HWC u8 golden tensor with its channel order reversed (BGR ↔ RGB).
fn swap_rb(name: &str) -> (Vec<u8>, usize, usize) {
    let g = &gold().t[name];
    let (h, w) = (g.shape[0], g.shape[1]);
    let mut v = Vec::with_capacity(h * w * 3);
    for px in g.v.chunks(3) {
        v.extend([px[2] as u8, px[1] as u8, px[0] as u8]);
    }
    (v, w, h)
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The two golden warpAffine calls as (frame, crop, spec in RGB, out).
fn golden_calls() -> Vec<(&'static str, &'static str, CropSpec, usize)> {
    let calls = gold().meta["warp_affine_calls_tracking"]
        .as_array()
        .unwrap();
    let names = [
        ("frame1_bgr_u8", "crop.z_bgr_u8"),
        ("frame2_bgr_u8", "crop.x_bgr_u8"),
    ];
    calls
        .iter()
        .zip(names)
        .map(|(c, (f, k))| {
            let m: Vec<f64> = c["M"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
                .collect();
            let bv: Vec<u8> = c["borderValue"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            let ds = &c["dsize"];
            assert_eq!(ds[0], ds[1], "square crops");
            let spec = CropSpec {
                m: m.try_into().unwrap(),
                border_rgb: [bv[2], bv[1], bv[0]],
            };
            (f, k, spec, ds[0].as_u64().unwrap() as usize)
        })
        .collect()
}

/// HWC RGB u8 → the NCHW planes the GPU writes (as f32 bytes).
fn planes(hwc: &[u8], out: usize) -> Vec<f32> {
    let mut p = vec![0f32; 3 * out * out];
    for (i, px) in hwc.chunks(3).enumerate() {
        for c in 0..3 {
            p[c * out * out + i] = px[c] as f32;
        }
    }
    p
}

/// Asserts exact equality of two byte images and names the first difference.
#[track_caller]
fn assert_same(what: &str, got: &[f32], want: &[f32], out: usize) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    if let Some(&i) = bad.first() {
        let plane = out * out;
        panic!(
            "{what}: {} values differ; first at [spec {}, channel {}, y {}, x {}]: got {}, want {}",
            bad.len(),
            i / (3 * plane),
            i / plane % 3,
            i % plane / out,
            i % out,
            got[i],
            want[i]
        );
    }
}

#[test]
fn cpu_reference_matches_golden_crops() {
    for (frame, crop_name, spec, out) in golden_calls() {
        let (rgb, w, h) = swap_rb(frame);
        let (want, ..) = swap_rb(crop_name);
        let got = cpu::warp_affine(&rgb, w, h, &spec, out);
        let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(bad, 0, "{crop_name}: {bad} bytes differ from OpenCV");
    }
}

#[test]
fn gpu_crop_matches_golden_crops_and_inputs() {
    let g = gpu();
    let hp = &gold().meta["tracker"]["hyper_params"];
    let mean: [f32; 3] = f32s(&hp["norm_mean"]).try_into().unwrap();
    let std: [f32; 3] = f32s(&hp["norm_std"]).try_into().unwrap();
    for ((frame, crop_name, spec, out), input) in
        golden_calls().into_iter().zip(["input.z", "input.x"])
    {
        let (rgb, w, h) = swap_rb(frame);
        let f = crop::upload_frame(g, &rgb, w, h).unwrap();
        let mut enc = g.encoder();
        let raw = crop::crop(&mut enc, &f, &[spec], out, MEAN, STD).unwrap();
        let norm = crop::crop(&mut enc, &f, &[spec], out, mean, std).unwrap();
        let got = enc.submit_read(&[&raw, &norm]).unwrap();
        assert_eq!(raw.shape(), &[1, 3, out, out]);
        let (want, ..) = swap_rb(crop_name);
        assert_same(crop_name, &got[0], &planes(&want, out), out);
        let gi: Vec<f32> = gold().t[input].v.iter().map(|&v| v as f32).collect();
        assert_same(input, &got[1], &gi, out);
    }
}

/// The official tracker state → get_crop → get_subwindow_tracking, in the python's float32 steps.
#[test]
fn subwindow_matrix_rebuilds_golden_matrices() {
    let meta = &gold().meta;
    let tr = &meta["tracker"];
    let hp = &tr["hyper_params"];
    let rect = f32s(&tr["init_rect_xywh"]);
    // xywh2cxywh on a float32 array.
    let pos = [
        rect[0] + (rect[2] - 1.0) / 2.0,
        rect[1] + (rect[3] - 1.0) / 2.0,
    ];
    let (w, h) = (rect[2], rect[3]);
    let ca = hp["context_amount"].as_f64().unwrap() as f32;
    let (z_size, x_size) = (
        hp["z_size"].as_u64().unwrap() as usize,
        hp["x_size"].as_u64().unwrap() as usize,
    );
    let (wc, hc) = (w + ca * (w + h), h + ca * (w + h));
    let s_crop = (wc * hc).sqrt();
    let scale = z_size as f32 / s_crop;
    assert_eq!(scale as f64, tr["z_scale"].as_f64().unwrap());
    let s_x = x_size as f32 / scale;
    let calls = golden_calls();
    // Frame 1 crops the template, frame 2 the search region at the unchanged position.
    for ((_, _, spec, out), (size, sz)) in calls.iter().zip([(s_crop, z_size), (s_x, x_size)]) {
        assert_eq!(*out, sz);
        let m = crop::subwindow_matrix(pos, size.round_ties_even(), sz);
        assert_eq!(m, spec.m, "original_sz {size} → {}", size.round_ties_even());
    }
    let avg: Vec<f64> = tr["avg_chans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let bgr = crop::border_value(avg.try_into().unwrap());
    assert_eq!([bgr[2], bgr[1], bgr[0]], calls[0].2.border_rgb);
    assert_eq!(crop::border_value([-3.7, 255.9, 300.2]), [0, 255, 255]);
}

// OpenCV 5.0.0's own output on tiny inputs (cv2.warpAffine, INTER_LINEAR | WARP_INVERSE_MAP,
// BORDER_CONSTANT), written down here so the test does not need python.
const CV_IMG_6X5: [u8; 90] = [
    139, 74, 229, 241, 169, 65, 6, 160, 149, 106, 38, 175, 188, 205, 175, 229, 98, 249, 10, 148,
    95, 86, 147, 198, 66, 39, 106, 213, 171, 45, 167, 57, 69, 81, 55, 14, 153, 178, 215, 76, 52,
    39, 250, 72, 215, 50, 161, 223, 112, 172, 161, 233, 38, 17, 89, 1, 221, 6, 242, 127, 143, 6,
    60, 210, 94, 25, 166, 33, 249, 189, 12, 204, 33, 57, 124, 30, 199, 149, 202, 119, 72, 220, 3,
    209, 122, 136, 147, 77, 133, 82,
];
const CV_ROTATED: [f64; 6] = [
    0.8137000203132629,
    -0.44130000472068787,
    1.2999999523162842,
    0.5220999717712402,
    0.9049000144004822,
    -1.7000000476837158,
];
/// 7×7 output: every column in OpenCV's scalar tail.
const CV_ROTATED_7: [u8; 147] = [
    9, 200, 77, 9, 200, 77, 40, 147, 110, 146, 167, 162, 175, 111, 147, 63, 111, 50, 9, 200, 77,
    54, 191, 79, 63, 173, 109, 75, 101, 140, 184, 126, 80, 148, 86, 87, 199, 49, 26, 63, 156, 78,
    166, 117, 158, 120, 139, 143, 99, 50, 121, 115, 150, 167, 109, 146, 180, 175, 46, 189, 116, 89,
    145, 12, 150, 96, 82, 110, 122, 176, 66, 142, 169, 71, 118, 200, 75, 89, 138, 97, 183, 72, 143,
    89, 80, 187, 146, 97, 112, 169, 31, 198, 114, 168, 65, 68, 215, 29, 179, 80, 145, 121, 9, 200,
    77, 18, 184, 90, 64, 37, 177, 31, 161, 143, 78, 173, 96, 26, 189, 81, 9, 200, 77, 9, 200, 77,
    9, 200, 77, 17, 150, 93, 14, 177, 89, 9, 200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77,
];
/// First two rows of the 18×18 output: columns 0..16 in the SIMD loop, 16 and 17 in the tail.
const CV_ROTATED_18_ROWS01: [u8; 108] = [
    9, 200, 77, 9, 200, 77, 40, 147, 110, 146, 167, 162, 175, 111, 147, 63, 111, 50, 9, 200, 77, 9,
    200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77, 9,
    200, 77, 9, 200, 77, 9, 200, 77, 54, 191, 79, 63, 173, 109, 75, 101, 140, 184, 126, 80, 148,
    86, 87, 199, 49, 26, 63, 156, 78, 9, 200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77,
    9, 200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77, 9, 200, 77,
];
/// A 2×17 frame of (p00, p01) pairs for which fl(fl(α·(p01 − p00)) + p00) and the fused
/// fma(α, p01 − p00, p00) round to different bytes, α = 0.18981485 (f32).
const CV_FMA_ALPHA: f64 = 0.18981485068798065;
const CV_FMA_IMG: [u8; 102] = [
    44, 211, 44, 152, 103, 152, 46, 209, 46, 154, 101, 154, 48, 207, 48, 156, 99, 156, 50, 205, 50,
    158, 97, 158, 52, 203, 52, 160, 95, 160, 54, 201, 54, 162, 93, 162, 56, 199, 56, 164, 91, 164,
    58, 197, 58, 166, 89, 166, 60, 195, 60, 168, 87, 168, 62, 193, 62, 170, 85, 170, 64, 191, 64,
    172, 83, 172, 66, 189, 66, 174, 81, 174, 68, 187, 68, 176, 79, 176, 70, 185, 70, 178, 77, 178,
    72, 183, 72, 180, 75, 180, 74, 181, 74, 182, 73, 182, 76, 179, 76, 184, 71, 184,
];
/// OpenCV's value of every output column of row y (the map samples column α of row y).
const CV_FMA_COLUMN: [u8; 51] = [
    65, 190, 65, 67, 188, 67, 69, 186, 69, 71, 184, 71, 73, 182, 73, 75, 180, 75, 77, 178, 77, 79,
    176, 79, 81, 174, 81, 83, 172, 83, 85, 170, 85, 87, 168, 87, 89, 166, 89, 91, 164, 91, 93, 162,
    93, 95, 160, 95, 97, 158, 97,
];

/// A 58×1 frame and map (M00 = 2.8076267, M02 = 2.6912749, second row 0) on which OpenCV's SIMD
/// loop, `fma(M00, x, M02)`, and its scalar tail, `fl(fl(x·M00) + M02)`, give different bytes at
/// columns 15 and 19: with out = 27 column 15 is in the SIMD loop and 19 in the tail only when
/// the loop is 16 wide (8 wide: both SIMD; 32 wide: both tail).
const CV_SPLIT_M: [f64; 6] = [2.807626724243164, 0.0, 2.691274881362915, 0.0, 0.0, 0.0];
const CV_SPLIT_IMG: [u8; 174] = [
    62, 9, 62, 203, 151, 211, 230, 187, 95, 129, 226, 150, 173, 70, 151, 7, 163, 71, 7, 168, 147,
    70, 206, 164, 12, 198, 116, 225, 29, 21, 167, 16, 4, 171, 85, 126, 182, 98, 187, 2, 139, 11,
    204, 46, 255, 140, 42, 216, 229, 200, 41, 155, 53, 170, 138, 78, 156, 204, 123, 156, 60, 179,
    69, 191, 65, 67, 110, 130, 91, 207, 161, 135, 117, 146, 242, 229, 33, 236, 187, 200, 214, 22,
    255, 206, 161, 142, 200, 163, 52, 4, 107, 223, 53, 25, 7, 249, 172, 59, 99, 220, 199, 116, 138,
    121, 184, 142, 68, 122, 117, 56, 107, 218, 31, 181, 145, 38, 50, 163, 98, 210, 168, 0, 237, 55,
    54, 174, 50, 150, 136, 48, 209, 223, 0, 0, 0, 229, 229, 229, 228, 41, 138, 162, 31, 110, 33,
    19, 134, 171, 57, 175, 98, 165, 135, 48, 121, 7, 184, 142, 34, 50, 149, 219, 138, 229, 238,
    202, 110, 112, 0, 0, 0, 152, 152, 152,
];
/// OpenCV's output row (every row of the 27×27 crop is the same); 184 at column 15, 6 at 19.
const CV_SPLIT_ROW: [u8; 81] = [
    160, 214, 133, 7, 165, 109, 77, 146, 87, 172, 86, 133, 188, 53, 236, 175, 93, 135, 127, 153,
    109, 143, 141, 106, 223, 58, 233, 155, 147, 200, 44, 57, 203, 173, 154, 155, 156, 46, 135, 164,
    79, 215, 50, 150, 136, 184, 184, 184, 83, 24, 125, 77, 146, 81, 70, 167, 223, 6, 6, 6, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

#[test]
fn simd_and_tail_columns_follow_opencv() {
    let s = spec(CV_SPLIT_M, [0, 0, 0]);
    let got = cpu::warp_affine(&CV_SPLIT_IMG, 58, 1, &s, 27);
    let g = gpu();
    let f = crop::upload_frame(g, &CV_SPLIT_IMG, 58, 1).unwrap();
    let on_gpu = gpu_crop(g, &f, &[s], 27);
    for y in 0..27 {
        assert_eq!(&got[y * 81..][..81], &CV_SPLIT_ROW[..], "cpu row {y}");
        for x in 0..27 {
            for c in 0..3 {
                let v = on_gpu[(c * 27 + y) * 27 + x];
                assert_eq!(v, CV_SPLIT_ROW[x * 3 + c] as f32, "gpu ({y}, {x}, {c})");
            }
        }
    }
}

#[test]
fn cpu_reference_matches_opencv_on_small_cases() {
    // The python call used BGR (9, 200, 77) on these bytes; channels are independent, so the
    // same bytes read as RGB with border (9, 200, 77) give the same output bytes.
    let rot = CropSpec {
        m: CV_ROTATED,
        border_rgb: [9, 200, 77],
    };
    assert_eq!(cpu::warp_affine(&CV_IMG_6X5, 6, 5, &rot, 7), CV_ROTATED_7);
    let big = cpu::warp_affine(&CV_IMG_6X5, 6, 5, &rot, 18);
    assert_eq!(&big[..108], &CV_ROTATED_18_ROWS01[..]);

    let fma = CropSpec {
        m: [0.0, 0.0, CV_FMA_ALPHA, 0.0, 1.0, 0.0],
        border_rgb: [0, 0, 0],
    };
    let got = cpu::warp_affine(&CV_FMA_IMG, 2, 17, &fma, 17);
    for y in 0..17 {
        for x in 0..17 {
            let px = &got[(y * 17 + x) * 3..][..3];
            assert_eq!(px, &CV_FMA_COLUMN[y * 3..][..3], "row {y} column {x}");
        }
    }
}

fn gpu_crop(g: &Gpu, f: &GpuFrame, specs: &[CropSpec], out: usize) -> Vec<f32> {
    let mut enc = g.encoder();
    let t = crop::crop(&mut enc, f, specs, out, MEAN, STD).unwrap();
    enc.submit_read(&[&t]).unwrap().pop().unwrap()
}

/// GPU against the CPU reference for every spec in one dispatch, bit for bit.
#[track_caller]
fn check(what: &str, rgb: &[u8], w: usize, h: usize, specs: &[CropSpec], out: usize) {
    let g = gpu();
    let f = crop::upload_frame(g, rgb, w, h).unwrap();
    let got = gpu_crop(g, &f, specs, out);
    let want: Vec<f32> = specs
        .iter()
        .flat_map(|s| planes(&cpu::warp_affine(rgb, w, h, s, out), out))
        .collect();
    assert_same(&format!("{what} ({w}×{h} → {out})"), &got, &want, out);
}

fn random_frame(seed: u64, w: usize, h: usize) -> Vec<u8> {
    // Extremes are frequent: interpolation between 0 and 255 stresses the rounding most.
    let mut r = SplitMix64::new(seed);
    r.vec_f32(w * h * 3, 0.0, 1.0)
        .into_iter()
        .map(|v| match (v * 8.0) as u32 {
            0 => 0,
            1 => 255,
            _ => (v * 256.0) as u8,
        })
        .collect()
}

fn spec(m: [f64; 6], border_rgb: [u8; 3]) -> CropSpec {
    CropSpec { m, border_rgb }
}

#[test]
fn gpu_matches_reference_on_awkward_crops() {
    let specs = [
        // zoom out (scale > 1), partly outside on the top left
        spec(
            [
                1.7301586866378784,
                0.0,
                -10.5,
                0.0,
                1.7291666269302368,
                -8.25,
            ],
            [110, 123, 155],
        ),
        // zoom in (scale < 1)
        spec([0.37, 0.0, 3.3, 0.0, 0.41, 2.9], [0, 0, 0]),
        // wholly outside
        spec([1.0, 0.0, 100.0, 0.0, 1.0, -200.0], [255, 1, 128]),
        // flipped, partly outside on the bottom right
        spec([-1.3, 0.0, 30.2, 0.0, -0.8, 20.7], [7, 8, 9]),
        // fractions that are tiny, subnormal, or round up to 1 (−1e-30 + 1 = 1 in f32)
        spec([1.0, 0.0, 1e-30, 0.0, 1.0, -1e-30], [200, 100, 50]),
        spec([0.999, 0.0, 1e-40, 0.0, 1.001, 1e-42], [1, 2, 3]),
        // exact halves: ties to even everywhere
        spec([0.5, 0.0, 0.5, 0.0, 0.5, -0.5], [254, 255, 0]),
        // one source column for every output column
        spec([0.0, 0.0, CV_FMA_ALPHA, 0.0, 1.0, 0.0], [9, 9, 9]),
    ];
    // 5: all columns in OpenCV's scalar tail; 16: all in the SIMD loop; 17 and 33: both.
    for (w, h, seed) in [(37, 23, 1u64), (1, 1, 2), (2, 3, 3), (16, 40, 4)] {
        let rgb = random_frame(seed, w, h);
        for out in [5, 16, 17, 33] {
            check("awkward", &rgb, w, h, &specs, out);
        }
    }
}

#[test]
fn gpu_matches_reference_on_random_fractions() {
    // Each spec samples one source column pair at fraction α and rows at a random scale and
    // offset. The α list: five values where an unfused multiply-add changes some byte, halves,
    // tiny, subnormal, one that becomes 1 (−1e-30 − ⌊−1e-30⌋ = 1 in f32), 1 − 2⁻²⁴ and 2⁻²⁴.
    let alphas: [f32; 12] = [
        0.18981485,
        0.9788734,
        0.6257862,
        0.17045456,
        0.6833334,
        0.5,
        0.25,
        1e-30,
        1e-40,
        -1e-30,
        0.99999994,
        5.9604645e-8,
    ];
    let mut r = SplitMix64::new(11);
    let mut specs = Vec::new();
    for (i, &a) in alphas.iter().enumerate() {
        for _ in 0..4 {
            let v = r.vec_f32(3, 0.0, 1.0);
            let (sy, oy) = (v[0] * 2.0 + 0.01, v[1] * 4.0 - 1.0);
            specs.push(spec(
                [0.0, 0.0, a as f64, 0.0, sy as f64, oy as f64],
                [i as u8 * 20, (v[2] * 255.0) as u8, 255],
            ));
        }
        // random column fractions too
        let v = r.vec_f32(2, 0.0, 1.0);
        specs.push(spec(
            [
                v[0] as f64 * 0.3,
                0.0,
                a as f64,
                0.0,
                1.0 / 3.0,
                v[1] as f64,
            ],
            [0, 255, 0],
        ));
    }
    let rgb = random_frame(12, 8, 48);
    check("fractions", &rgb, 8, 48, &specs, 21);
}

/// Hand-worked rounding corners. β = 172961·2⁻²⁵ makes β·97 = ½ + 2⁻²⁵ exactly, halfway between
/// the f32 neighbours ½ and ½ + 2⁻²⁴. Frame (p00, p01 / p10, p11) = (0, q / 97, 97) and a tiny α:
/// t = fl(α·q) is tiny and positive when q > 0, b = 97, fl(b − t) = 97, and
/// v = fl(β·97 + t) rounds up to ½ + 2⁻²⁴ (byte 1) when t > 0, but is a tie that goes to the even
/// ½ (byte 0) when t = 0. The GPU must carry t's sign through its sticky bits to get this right.
#[test]
fn rounding_corners_by_hand() {
    let g = gpu();
    // channels: q = 200, 0, 255
    let rgb = [0, 0, 0, 200, 0, 255, 97, 97, 97, 97, 97, 97];
    let f = crop::upload_frame(g, &rgb, 2, 2).unwrap();
    let beta = 172961.0 / 33554432.0;
    for alpha in [1e-30, 1e-40, 1e-44] {
        let s = spec([0.0, 0.0, alpha, 0.0, 0.0, beta], [50, 50, 50]);
        let want = [1u8, 0, 1];
        let got = cpu::warp_affine(&rgb, 2, 2, &s, 17);
        let on_gpu = gpu_crop(g, &f, &[s], 17);
        for i in 0..17 * 17 {
            for c in 0..3 {
                assert_eq!(
                    got[i * 3 + c],
                    want[c],
                    "cpu α {alpha} pixel {i} channel {c}"
                );
                assert_eq!(
                    on_gpu[c * 289 + i],
                    want[c] as f32,
                    "gpu α {alpha} pixel {i} channel {c}"
                );
            }
        }
    }
}

#[test]
fn gpu_handles_many_specs_with_different_borders() {
    let (w, h) = (41, 29);
    let rgb = random_frame(21, w, h);
    let mut r = SplitMix64::new(22);
    let specs: Vec<CropSpec> = (0..24)
        .map(|i| {
            let v = r.vec_f32(4, 0.0, 1.0);
            let s = (v[0] * 3.0 + 0.05) as f64;
            let m = crop::subwindow_matrix(
                [v[1] * 60.0 - 10.0, v[2] * 40.0 - 5.0],
                (s as f32 * 17.0).round_ties_even(),
                18,
            );
            spec(m, [i as u8 * 10, 255 - i as u8 * 10, (v[3] * 255.0) as u8])
        })
        .collect();
    check("many specs", &rgb, w, h, &specs, 18);
}

#[test]
fn upload_frame_packs_bytes_and_rejects_bad_frames() {
    let g = gpu();
    let rgb: Vec<u8> = (0..15u8).collect(); // 5×1 RGB: 15 bytes, the last word padded
    let f = crop::upload_frame(g, &rgb, 5, 1).unwrap();
    assert_eq!((f.width, f.height, f.tensor.shape()), (5, 1, &[4usize][..]));
    let words = g.read_u32(&f.tensor).unwrap();
    assert_eq!(words, vec![0x03020100, 0x07060504, 0x0b0a0908, 0x000e0d0c]);

    let err = |r: sparsett::Result<GpuFrame>| r.expect_err("an error").to_string();
    let e = err(crop::upload_frame(g, &rgb, 4, 1));
    assert!(
        e.contains("4×1") && e.contains("12 bytes") && e.contains("got 15"),
        "{e}"
    );
    let e = err(crop::upload_frame(g, &[], 0, 3));
    assert!(e.contains("0×3") && e.contains("empty"), "{e}");
    let e = err(crop::upload_frame(g, &[], 1 << 20, 1 << 20));
    assert!(e.contains("32-bit"), "{e}");
    let limit = g.limits.max_storage_buffer_binding_size;
    if limit < u32::MAX as u64 - 8 {
        let w = (limit / 3 + 2) as usize;
        let e = err(crop::upload_frame(g, &[], w, 1));
        assert!(e.contains("max_storage_buffer_binding_size"), "{e}");
    }
}

#[test]
fn crop_rejects_bad_input() {
    let g = gpu();
    let f = crop::upload_frame(g, &random_frame(5, 4, 4), 4, 4).unwrap();
    let ok = spec([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0, 0, 0]);
    let err = |specs: &[CropSpec], out: usize, std: [f32; 3]| {
        let mut enc = g.encoder();
        crop::crop(&mut enc, &f, specs, out, MEAN, std)
            .expect_err("an error")
            .to_string()
    };
    let e = err(&[], 8, STD);
    assert!(e.contains("crop") && e.contains("no crop specs"), "{e}");
    let e = err(&[ok], 0, STD);
    assert!(e.contains("output side 0"), "{e}");
    let e = err(&[ok], crop::MAX_OUT + 1, STD);
    assert!(
        e.contains(&format!("output side {}", crop::MAX_OUT + 1)),
        "{e}"
    );
    let rotated = spec([1.0, 0.5, 0.0, 0.0, 1.0, 0.0], [0, 0, 0]);
    let e = err(&[ok, rotated], 8, STD);
    assert!(e.contains("spec 1") && e.contains("axis-aligned"), "{e}");
    let e = err(&[spec([f64::NAN, 0.0, 0.0, 0.0, 1.0, 0.0], [0; 3])], 8, STD);
    assert!(e.contains("spec 0") && e.contains("not finite"), "{e}");
    let e = err(&[spec([1e300, 0.0, 0.0, 0.0, 1.0, 0.0], [0; 3])], 8, STD);
    assert!(e.contains("not finite"), "{e}");
    let e = err(&[spec([3e38, 0.0, 3e38, 0.0, 1.0, 0.0], [0; 3])], 8, STD);
    assert!(e.contains("beyond the f32 range"), "{e}");
    let e = err(&[ok], 8, [1.0, 0.0, 1.0]);
    assert!(e.contains("std"), "{e}");
    // model_sz 1 divides by zero in the python too; crop refuses the result.
    let m = crop::subwindow_matrix([3.0, 3.0], 5.0, 1);
    let e = err(&[spec(m, [0; 3])], 8, STD);
    assert!(e.contains("not finite"), "{e}");
}
