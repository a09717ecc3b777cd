//! The tracker's context crop (shader: `shaders/crop.wgsl`): the official tracker's
//! `get_subwindow_tracking`, i.e. `cv2.warpAffine(im, M, (out, out), INTER_LINEAR |
//! WARP_INVERSE_MAP, BORDER_CONSTANT, borderValue)`, reproduced bit for bit, followed by the
//! network's input normalisation `(u8 − mean) / std`.
//!
//! OpenCV 5.0 (the version that made the golden data) rewrote 8-bit warpAffine in f32
//! (`imgproc/src/warp_kernels.simd.hpp`, `warp_common.*.hpp`); its AVX2 build, checked pixel for
//! pixel against `cv2` 5.0.0 on random and adversarial inputs, computes:
//! * `M` rounded to f32; per output row `y`: `Mx = fl(fl(y·M01) + M02)`, `My = fl(fl(y·M11) + M12)`;
//! * columns handled by the SIMD loop (the first `⌊out / 16⌋·16`; 16 = two AVX2 registers of f32):
//!   `sx = fma(M00, x, Mx)`, `sy = fma(M10, x, My)`; the remaining tail columns, in scalar code:
//!   `sx = fl(fma(x, M00, fl(y·M01)) + M02)`, `sy = fl(fma(x, M10, fl(y·M11)) + M12)`;
//! * `ix = ⌊sx⌋`, `α = sx − ix` (exact), likewise `iy`, `β`; the four neighbours, each replaced by
//!   the border colour when outside the frame;
//! * `t = fma(α, p01 − p00, p00)`, `b = fma(α, p11 − p10, p10)`, `v = fma(β, b − t, t)` in f32 and
//!   the byte `saturate(round_half_even(v))`.
//!
//! On other SIMD widths OpenCV's tail starts elsewhere and can differ in a last rounding there;
//! this module follows the AVX2 build. The normalisation matches PyTorch's f32
//! `(x − mean) / std` exactly (a correctly rounded division, done on the host into a 768-entry
//! table). The GPU path takes axis-aligned matrices only (`M01 = M10 = 0`, all the tracker
//! builds); the shader then needs one coordinate per column and per row, computed here in f32,
//! and interpolates with exact integer emulation of the three fused multiply-adds.

use crate::gpu::{DType, Encoder, Gpu, Tensor};
use crate::{shader, Error, Result};

shader!(CROP, "crop.wgsl");

/// OpenCV's vector loop width for 8-bit 3-channel warpAffine on AVX2 (two 8-lane f32 registers).
const SIMD_COLUMNS: usize = 16;

/// Largest crop side accepted (the tracker uses 127 and 289).
pub const MAX_OUT: usize = 4096;

/// Entries of the normalisation table at the start of the dispatch table: 3 channels × 256 bytes.
const LUT_WORDS: usize = 768;

/// An RGB u8 frame on the GPU, packed four bytes per u32 word (the last word zero-padded),
/// uploaded once per video frame and shared by all crops of that frame.
#[derive(Clone, Debug)]
pub struct GpuFrame {
    pub tensor: Tensor,
    pub width: usize,
    pub height: usize,
}

/// One crop: `m` is the 2×3 inverse map as OpenCV receives it (row-major: output pixel (x, y)
/// samples the frame at `(m[0]·x + m[1]·y + m[2], m[3]·x + m[4]·y + m[5])`), `border_rgb` the
/// constant border colour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropSpec {
    pub m: [f64; 6],
    pub border_rgb: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_specs: u32,
    out: u32,
    width: u32,
    height: u32,
}

/// Uploads an RGB u8 frame (`width·height·3` bytes, row-major HWC).
pub fn upload_frame(gpu: &Gpu, rgb: &[u8], width: usize, height: usize) -> Result<GpuFrame> {
    if width == 0 || height == 0 {
        return Err(Error::shape(
            "upload_frame",
            format!("frame size {width}×{height} is empty"),
        ));
    }
    // Sizes first, so that an oversized frame is refused before anything is copied; the shader
    // addresses bytes with u32.
    let bytes = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(3))
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| {
            Error::shape(
                "upload_frame",
                format!("a {width}×{height} frame has more bytes than 32-bit addressing allows"),
            )
        })?;
    let packed = bytes.next_multiple_of(4) as u64;
    let limit = gpu.limits.max_storage_buffer_binding_size;
    if packed > limit {
        return Err(Error::TooLarge {
            op: "upload_frame",
            what: format!("a {width}×{height} RGB frame ({packed} bytes packed)"),
            value: packed,
            limit_name: "max_storage_buffer_binding_size",
            limit,
        });
    }
    if rgb.len() != bytes {
        return Err(Error::shape(
            "upload_frame",
            format!(
                "a {width}×{height} RGB frame needs {bytes} bytes, got {}",
                rgb.len()
            ),
        ));
    }
    let mut words = vec![0u32; bytes.div_ceil(4)];
    for (w, chunk) in words.iter_mut().zip(rgb.chunks(4)) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u32::from_le_bytes(b);
    }
    let tensor = gpu.upload_u32(&[words.len()], &words)?;
    Ok(GpuFrame {
        tensor,
        width,
        height,
    })
}

/// The inverse map of the official `get_subwindow_tracking(im, pos, model_sz, original_sz)`:
/// a square of side `original_sz` centred on `pos` (x, y) resized to `model_sz`. The python
/// works in float32 (`cxywh2xyxy` casts to `np.float32`; `x1 = cx − (w − 1)/2`,
/// `M00 = (x2 − x1)/(model_sz − 1)`), so this does too, step by step. `get_crop` passes
/// `original_sz = round(s_crop)` (Python's `round`, halves to even); pass that value. A
/// `model_sz` below 2 gives non-finite entries, which [`crop`] rejects.
pub fn subwindow_matrix(pos: [f32; 2], original_sz: f32, model_sz: usize) -> [f64; 6] {
    let half = (original_sz - 1.0) / 2.0;
    let (x1, y1) = (pos[0] - half, pos[1] - half);
    let (x2, y2) = (pos[0] + half, pos[1] + half);
    let denom = model_sz as f32 - 1.0;
    let (sx, sy) = ((x2 - x1) / denom, (y2 - y1) / denom);
    [sx as f64, 0.0, x1 as f64, 0.0, sy as f64, y1 as f64]
}

/// The official border colour `tuple(map(int, avg_chans))`: Python's `int` truncates toward
/// zero, OpenCV then saturates to a byte.
pub fn border_value(avg_chans: [f64; 3]) -> [u8; 3] {
    avg_chans.map(|v| {
        if v.is_nan() {
            0
        } else {
            v.trunc().clamp(0.0, 255.0) as u8
        }
    })
}

/// Splits a source coordinate into OpenCV's integer cell and fraction. Cells wholly outside the
/// frame are pulled in to just outside it: every neighbour stays outside, so the result (the
/// border colour) is unchanged, and the shader never adds 1 to an extreme i32.
fn split(s: f32, size: usize) -> (i32, f32) {
    let f = s.floor();
    let frac = s - f;
    let i = if f < -1.0 {
        -2
    } else if f >= size as f32 {
        size as i32
    } else {
        f as i32
    };
    (i, frac)
}

fn check_spec(i: usize, spec: &CropSpec) -> Result<[f32; 6]> {
    let m = spec.m.map(|v| v as f32);
    if m.iter().any(|v| !v.is_finite()) {
        return Err(Error::shape(
            "crop",
            format!(
                "spec {i}: matrix {:?} is not finite in f32 (OpenCV rounds it to f32)",
                spec.m
            ),
        ));
    }
    if m[1] != 0.0 || m[3] != 0.0 {
        return Err(Error::shape(
            "crop",
            format!(
                "spec {i}: matrix {:?} rotates or shears; the GPU crop takes axis-aligned maps \
                 only (cpu::warp_affine takes any)",
                spec.m
            ),
        ));
    }
    Ok(m)
}

/// Appends one spec's coordinate table: per column (ix, α bits), per row (iy, β bits), border.
fn push_spec_table(
    words: &mut Vec<u32>,
    i: usize,
    m: [f32; 6],
    border: [u8; 3],
    out: usize,
    frame: &GpuFrame,
) -> Result<()> {
    let simd_end = out / SIMD_COLUMNS * SIMD_COLUMNS;
    let non_finite = || {
        Error::shape(
            "crop",
            format!("spec {i}: matrix {m:?} maps output pixels beyond the f32 range"),
        )
    };
    for x in 0..out {
        let xf = x as f32;
        // With M01 = 0 the row term of sx is fl(0 + M02) = M02 in both loops.
        let sx = if x < simd_end {
            m[0].mul_add(xf, m[2])
        } else {
            xf * m[0] + m[2]
        };
        if !sx.is_finite() {
            return Err(non_finite());
        }
        let (ix, a) = split(sx, frame.width);
        words.extend([ix as u32, a.to_bits()]);
    }
    for y in 0..out {
        // With M10 = 0 both loops reduce to fl(fl(y·M11) + M12): two roundings, no fma.
        let sy = (y as f32) * m[4] + m[5];
        if !sy.is_finite() {
            return Err(non_finite());
        }
        let (iy, b) = split(sy, frame.height);
        words.extend([iy as u32, b.to_bits()]);
    }
    words.extend([
        border[0] as u32 | (border[1] as u32) << 8 | (border[2] as u32) << 16,
        0,
        0,
        0,
    ]);
    Ok(())
}

/// Crops every spec from `frame` in one dispatch: `[specs.len(), 3, out, out]` f32, RGB planes,
/// each value `(u8 − mean[c]) / std[c]` of the warpAffine byte (mean 0 and std 1 give the bytes).
pub fn crop(
    enc: &mut Encoder,
    frame: &GpuFrame,
    specs: &[CropSpec],
    out: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Tensor> {
    if specs.is_empty() {
        return Err(Error::shape("crop", "no crop specs given"));
    }
    if out == 0 || out > MAX_OUT {
        return Err(Error::shape(
            "crop",
            format!("output side {out} is outside 1..={MAX_OUT}"),
        ));
    }
    let total = specs
        .len()
        .checked_mul(3 * out * out)
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| {
            Error::shape(
                "crop",
                format!(
                    "{} crops of {out}×{out} exceed 32-bit indexing",
                    specs.len()
                ),
            )
        })?;
    if mean.iter().chain(&std).any(|v| !v.is_finite()) || std.contains(&0.0) {
        return Err(Error::shape(
            "crop",
            format!("mean {mean:?} and std {std:?} must be finite with std ≠ 0"),
        ));
    }
    let gpu = enc.gpu();
    let mut words = Vec::with_capacity(LUT_WORDS + specs.len() * (4 * out + 4));
    for c in 0..3 {
        words.extend((0..256).map(|u| ((u as f32 - mean[c]) / std[c]).to_bits()));
    }
    for (i, spec) in specs.iter().enumerate() {
        let m = check_spec(i, spec)?;
        push_spec_table(&mut words, i, m, spec.border_rgb, out, frame)?;
    }
    let table = gpu.upload_u32(&[words.len()], &words)?;
    let dst = gpu.empty("crop", &[specs.len(), 3, out, out], DType::F32)?;
    let params = Params {
        n_specs: specs.len() as u32,
        out: out as u32,
        width: frame.width as u32,
        height: frame.height as u32,
    };
    enc.dispatch(
        &CROP,
        "crop",
        &[],
        bytemuck::bytes_of(&params),
        &[&table, &frame.tensor, &dst],
        gpu.grid(((total / 3) as u64).div_ceil(64)),
    )?;
    Ok(dst)
}

/// Plain-loop reference.
pub mod cpu {
    use super::{CropSpec, SIMD_COLUMNS};

    /// OpenCV 5.0 (AVX2 build) `warpAffine(INTER_LINEAR | WARP_INVERSE_MAP, BORDER_CONSTANT)` of
    /// an RGB u8 frame to an `out × out` RGB u8 image (HWC), for any finite matrix.
    pub fn warp_affine(
        rgb: &[u8],
        width: usize,
        height: usize,
        spec: &CropSpec,
        out: usize,
    ) -> Vec<u8> {
        let m = spec.m.map(|v| v as f32);
        let simd_end = out / SIMD_COLUMNS * SIMD_COLUMNS;
        let pixel = |x: i64, y: i64, c: usize| -> f32 {
            if x >= 0 && y >= 0 && (x as usize) < width && (y as usize) < height {
                rgb[(y as usize * width + x as usize) * 3 + c] as f32
            } else {
                spec.border_rgb[c] as f32
            }
        };
        let mut dst = vec![0u8; out * out * 3];
        for y in 0..out {
            let yf = y as f32;
            let (mx, my) = (yf * m[1] + m[2], yf * m[4] + m[5]);
            for x in 0..out {
                let xf = x as f32;
                let (sx, sy) = if x < simd_end {
                    (m[0].mul_add(xf, mx), m[3].mul_add(xf, my))
                } else {
                    (
                        xf.mul_add(m[0], yf * m[1]) + m[2],
                        xf.mul_add(m[3], yf * m[4]) + m[5],
                    )
                };
                let (fx, fy) = (sx.floor(), sy.floor());
                let (alpha, beta) = (sx - fx, sy - fy);
                let (ix, iy) = (fx as i64, fy as i64);
                for c in 0..3 {
                    let (p00, p01) = (pixel(ix, iy, c), pixel(ix + 1, iy, c));
                    let (p10, p11) = (pixel(ix, iy + 1, c), pixel(ix + 1, iy + 1, c));
                    let t = alpha.mul_add(p01 - p00, p00);
                    let b = alpha.mul_add(p11 - p10, p10);
                    let v = beta.mul_add(b - t, t);
                    dst[(y * out + x) * 3 + c] = v.round_ties_even().clamp(0.0, 255.0) as u8;
                }
            }
        }
        dst
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub fn bench(gpu: &Gpu, rows: &mut Vec<crate::bench::Row>) -> Result<()> {
    // A 640×480 frame and the tracker's two crops around a target near the frame's edge, so
    // that both crops run partly outside the frame.
    let (w, h) = (640usize, 480usize);
    let rgb: Vec<u8> = crate::prng::SplitMix64::new(3)
        .vec_f32(w * h * 3, 0.0, 256.0)
        .iter()
        .map(|&v| v as u8)
        .collect();
    let frame = upload_frame(gpu, &rgb, w, h)?;
    let pos = [120.5f32, 200.5];
    let (mean, std) = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]);
    for (out, side) in [(127usize, 219.0f32), (289, 499.0)] {
        let spec = CropSpec {
            m: subwindow_matrix(pos, side, out),
            border_rgb: [110, 123, 155],
        };
        let ms = crate::bench::median_ms(gpu, 2, 20, |enc| {
            crop(enc, &frame, &[spec], out, mean, std).map(|_| ())
        })?;
        rows.push(crate::bench::Row {
            kernel: format!("crop {out}"),
            shape: format!("[{h}, {w}, 3] → [1, 3, {out}, {out}]"),
            median_ms: ms,
            flops: None,
            bytes: Some((out * out * 3 * (4 + 4)) as f64),
        });
    }
    Ok(())
}
