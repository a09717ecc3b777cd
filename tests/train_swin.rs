//! The Swin backbone in training mode (`sparsett::train::swin`): tape gradients against f64 central
//! finite differences of the plain CPU reference of the whole backbone, on a small configuration;
//! the tape forward against the inference backbone and the official model's `backbone.z` at full
//! size.
//!
//! Tolerances, and why:
//! - Small-configuration forward: GPU (f32) vs CPU (f64) within 1e-5 of the output's max
//!   magnitude. The output is a LayerNorm (values of order 1); ~40 chained f32 ops with sums of at
//!   most a few hundred terms give a few 1e-7 relative (measured ≤ 5.3e-7), LayerNorm
//!   re-normalising each stage.
//! - Gradients: for each parameter tensor, (a) a directional derivative along a random direction
//!   D: |FD − ⟨g, D⟩| ≤ 1e-4·‖g‖·‖D‖ (the Cauchy–Schwarz scale of the projection), and (b) four
//!   single elements: |FD_i − g_i| ≤ 1e-4·max|g| + 1e-9. f32 gradients through ~80 backward
//!   dispatches carry a few 1e-6 of that scale (measured ≤ 2.9e-6 on both variants); central
//!   differences in f64 with step 1e-4 add truncation ~1e-8·|f'''| and rounding ~1e-12, both far
//!   below. A wrong or missing term (a mask, a pad token, a shifted index) moves a gradient by far
//!   more than 1e-4 of its scale. The loss is Σ out·R for a fixed random R, so its seed is R.
//! - Golden (full size, 127 template, golden weights): within 1e-4 of `backbone.z`'s max
//!   magnitude (the official model's own f32-vs-f64 spread is ≤ 1.1e-5), and within 1e-5 of the
//!   inference backbone, which runs the same kernels except the split GELU epilogue (measured:
//!   1.5e-6 of max vs golden, bitwise equal to the inference backbone).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use sparsett::autograd::Tape;
use sparsett::model::weights::golden_state_dict;
use sparsett::model::{Config, SparseTT, Taps};
use sparsett::ops::random::cpu::drop_path_mask;
use sparsett::prng::SplitMix64;
use sparsett::train::swin::{cpu, drop_path_rate, drop_path_seed, Arch, Swin, SwinOpts};
use sparsett::{Gpu, Variant};

#[path = "support/golden.rs"]
mod golden;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().expect("a GPU adapter (lavapipe: WGPU_BACKEND=vulkan)"))
}

/// Held by every test that runs kernels: the variant is a device-wide setting, so the tests that
/// switch it must not overlap with the others.
fn lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seeded parameters of plausible scale: LayerNorm weights near 1, biases and tables small,
/// linear/conv weights LeCun-uniform.
fn random_params(arch: &Arch, seed: u64) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let mut rng = SplitMix64::new(seed);
    arch.param_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let v = if name.ends_with("norm.weight")
                || name.ends_with("norm1.weight")
                || name.ends_with("norm2.weight")
            {
                rng.vec_f32(n, 0.7, 1.3)
            } else if name.ends_with(".bias") || name.ends_with("bias_table") {
                rng.vec_f32(n, -0.3, 0.3)
            } else {
                let fan_in: usize = shape[1..].iter().product();
                let a = (3.0 / fan_in as f32).sqrt();
                rng.vec_f32(n, -a, a)
            };
            (name, (shape, v))
        })
        .collect()
}

fn to_f64(p: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> HashMap<String, Vec<f64>> {
    p.iter()
        .map(|(k, (_, v))| (k.clone(), v.iter().map(|&x| x as f64).collect()))
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// GPU output and gradients of Σ out·R for every parameter.
fn gpu_run(
    arch: &Arch,
    params: &HashMap<String, (Vec<usize>, Vec<f32>)>,
    img: &[f32],
    shape: [usize; 4],
    r: &[f32],
    opts: &SwinOpts,
) -> (Vec<f32>, HashMap<String, Vec<f64>>) {
    let gpu = gpu();
    let swin = Swin::load_arch(gpu, params, arch).expect("loads");
    let mut tape = Tape::new();
    let mut enc = gpu.encoder();
    let x = tape.constant(&gpu.upload(&shape, img).unwrap());
    let out = swin
        .forward_with(&mut tape, &mut enc, &x, opts)
        .expect("forward");
    let seed = gpu.upload(out.shape(), r).expect("seed");
    let grads = tape.backward(&mut enc, &out, seed).expect("backward");
    let names: Vec<&String> = swin.params().iter().map(|(n, _)| n).collect();
    let mut ts = vec![&out.t];
    for n in &names {
        ts.push(
            grads
                .get(n)
                .unwrap_or_else(|| panic!("no gradient for {n}")),
        );
    }
    let mut got = enc.submit_read(&ts).expect("read").into_iter();
    let y = got.next().unwrap();
    let g = names
        .iter()
        .zip(got)
        .map(|(n, v)| ((*n).clone(), v.iter().map(|&x| x as f64).collect()))
        .collect();
    (y, g)
}

/// Central differences of the CPU loss for one parameter tensor: along a random direction, and
/// at a few single elements.
struct Fd {
    dir: Vec<f64>,
    along: f64,
    elems: Vec<(usize, f64)>,
}

/// Gradient check of the small configuration `arch` on a `b × 3 × side × side` image.
fn check_gradients(arch: Arch, b: usize, side: usize, seed: u64, opts: SwinOpts) {
    let params = random_params(&arch, seed);
    let mut rng = SplitMix64::new(seed ^ 0x5eed);
    let img = rng.vec_f32(b * 3 * side * side, -2.0, 2.0);
    let p64 = to_f64(&params);
    let img64: Vec<f64> = img.iter().map(|&x| x as f64).collect();
    let want = cpu::forward(&arch, &p64, &img64, [b, side, side], &opts);
    let r = rng.vec_f32(want.len(), -1.0, 1.0);
    let r64: Vec<f64> = r.iter().map(|&x| x as f64).collect();
    let loss = |p: &HashMap<String, Vec<f64>>| {
        dot(
            &cpu::forward(&arch, p, &img64, [b, side, side], &opts),
            &r64,
        )
    };
    let mut fd_cache: HashMap<String, Fd> = HashMap::new();
    const H: f64 = 1e-4;
    let _guard = lock();
    let original = gpu().variant();
    for variant in Variant::ALL {
        gpu().set_variant(variant);
        let (y, grads) = gpu_run(&arch, &params, &img, [b, 3, side, side], &r, &opts);
        let max = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let err = y
            .iter()
            .zip(&want)
            .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
        assert!(
            err <= 1e-5 * max,
            "{variant:?} {arch:?}: forward differs from the f64 reference by {err} (max {max})"
        );
        let (mut worst_dir, mut worst_el) = (0f64, 0f64);
        for (name, g) in &grads {
            let fd = fd_cache.entry(name.clone()).or_insert_with(|| {
                let n = g.len();
                let mut drng = SplitMix64::for_key(name, seed);
                let d: Vec<f64> = drng
                    .vec_f32(n, -1.0, 1.0)
                    .iter()
                    .map(|&x| x as f64)
                    .collect();
                let shifted = |eps: f64, dir: &dyn Fn(usize) -> f64| {
                    let mut p = p64.clone();
                    for (i, v) in p.get_mut(name).unwrap().iter_mut().enumerate() {
                        *v += eps * dir(i);
                    }
                    loss(&p)
                };
                let fd_dir = (shifted(H, &|i| d[i]) - shifted(-H, &|i| d[i])) / (2.0 * H);
                let picks = [0, n / 2, n - 1, (drng.next_u64() % n as u64) as usize];
                let fd_el = picks
                    .iter()
                    .map(|&k| {
                        let e = |i: usize| if i == k { 1.0 } else { 0.0 };
                        (k, (shifted(H, &e) - shifted(-H, &e)) / (2.0 * H))
                    })
                    .collect();
                Fd {
                    dir: d,
                    along: fd_dir,
                    elems: fd_el,
                }
            });
            let (d, fd_dir, fd_el) = (&fd.dir, fd.along, &fd.elems);
            let proj = dot(g, d);
            let scale = norm(g) * norm(d);
            worst_dir = worst_dir.max((proj - fd_dir).abs() / scale);
            assert!(
                (proj - fd_dir).abs() <= 1e-4 * scale,
                "{variant:?} {name}: ⟨g, D⟩ = {proj}, finite differences {fd_dir} (scale {scale})"
            );
            let gmax = g.iter().fold(0f64, |m, v| m.max(v.abs()));
            for &(k, fd) in fd_el.iter() {
                worst_el = worst_el.max((g[k] - fd).abs() / gmax);
                assert!(
                    (g[k] - fd).abs() <= 1e-4 * gmax + 1e-9,
                    "{variant:?} {name}[{k}]: gradient {}, finite differences {fd} (max |g| {gmax})",
                    g[k]
                );
            }
        }
        assert_eq!(grads.len(), arch.param_shapes().len());
        eprintln!(
            "{variant:?} window {}: forward error {:.2e} of max; gradients: worst directional \
             {worst_dir:.2e} of ‖g‖‖D‖, worst element {worst_el:.2e} of max|g|",
            arch.window,
            err / max
        );
    }
    gpu().set_variant(original);
}

/// Window 3 (shift 1) on a 37×37 image: maps 10×10, 5×5, 3×3 are padded to 12, 6 and 3, every
/// stage has a shifted block, odd maps are merged with padding, batch 2.
#[test]
fn gradients_match_finite_differences_window3() {
    let arch = Arch {
        embed: 8,
        depths: [2, 2, 2],
        heads: [1, 2, 2],
        window: 3,
    };
    check_gradients(arch, 2, 37, 1, SwinOpts::default());
}

/// The official window 7 (shift 3) on a 29×29 image: 8×8 and 4×4 maps smaller than two windows,
/// depths [1, 1, 2] as the tiny demo configuration has them.
#[test]
fn gradients_match_finite_differences_window7() {
    let arch = Arch {
        embed: 8,
        depths: [1, 1, 2],
        heads: [2, 2, 4],
        window: 7,
    };
    check_gradients(arch, 1, 29, 2, SwinOpts::default());
}

/// Stochastic depth at a high rate (block k of 8 drops with rate 0.9·k/7) on batch 3: the GPU masks
/// are regenerated bit for bit by the CPU reference, and the gradients of dropped and kept
/// branches both match. The seed is one whose masks both drop and keep some branches (checked).
#[test]
fn gradients_with_drop_path_match_finite_differences() {
    let arch = Arch {
        embed: 8,
        depths: [2, 2, 2],
        heads: [1, 2, 2],
        window: 3,
    };
    let opts = SwinOpts {
        drop_path_rate: 0.9,
        seed: 7,
    };
    let (mut kept, mut dropped) = (0, 0);
    for k in 0..6 {
        let p = drop_path_rate(&arch, opts.drop_path_rate, k);
        for br in 0..2 {
            if p > 0.0 {
                for keep in drop_path_mask(3, p, drop_path_seed(opts.seed, k, br)) {
                    if keep {
                        kept += 1
                    } else {
                        dropped += 1
                    }
                }
            }
        }
    }
    assert!(kept > 0 && dropped > 0, "kept {kept}, dropped {dropped}");
    check_gradients(arch, 3, 21, 5, opts);
}

#[test]
fn bad_input_and_options_are_errors() {
    let arch = Arch {
        embed: 8,
        depths: [1, 1, 1],
        heads: [1, 1, 1],
        window: 3,
    };
    let _guard = lock();
    let gpu = gpu();
    let params = random_params(&arch, 3);
    let swin = Swin::load_arch(gpu, &params, &arch).unwrap();
    let mut tape = Tape::new();
    let mut enc = gpu.encoder();
    let bad = tape.constant(&gpu.zeros(&[1, 4, 16, 16]).unwrap());
    let e = swin.forward(&mut tape, &mut enc, &bad).unwrap_err();
    assert!(e.to_string().contains("[B, 3, H, W]"), "{e}");
    let img = tape.constant(&gpu.zeros(&[1, 3, 16, 16]).unwrap());
    let mut opts = SwinOpts {
        drop_path_rate: 0.2,
        seed: 0,
    };
    assert!(swin.forward_with(&mut tape, &mut enc, &img, &opts).is_ok());
    opts.drop_path_rate = 1.0;
    let e = swin
        .forward_with(&mut tape, &mut enc, &img, &opts)
        .unwrap_err();
    assert!(e.to_string().contains("outside [0, 1)"), "{e}");
    let mut missing = params.clone();
    missing.remove("basemodel.net.stages.1.downsample.reduction.weight");
    let e = Swin::load_arch(gpu, &missing, &arch)
        .err()
        .expect("missing key fails");
    assert!(e.to_string().contains("reduction.weight"), "{e}");
    let odd = Arch {
        heads: [3, 1, 1],
        ..arch
    };
    assert!(Swin::load_arch(gpu, &params, &odd).is_err());
}

/// Full size (127×127 template, official sizes, golden weights): the tape forward equals the
/// inference backbone and the official model's `backbone.z`.
#[test]
fn full_size_forward_matches_inference_and_golden() {
    let dir = golden::golden_dir();
    let gold = golden::load_golden(&dir);
    let sd = golden_state_dict(&dir.join("small_params.safetensors"), golden::seed(&dir))
        .expect("golden weights");
    let _guard = lock();
    let gpu = gpu();
    let z: Vec<f32> = gold["input.z"].v.iter().map(|&x| x as f32).collect();
    let swin = Swin::load(gpu, &sd, &Config::official()).expect("loads");
    let mut tape = Tape::new();
    let mut enc = gpu.encoder();
    let zt = gpu.upload(&[1, 3, 127, 127], &z).unwrap();
    let img = tape.constant(&zt);
    let out = swin.forward(&mut tape, &mut enc, &img).expect("forward");
    assert_eq!(out.shape(), [1, 64, 384]);
    let model = SparseTT::load(gpu, &sd).expect("model");
    let mut taps = Taps::on();
    model.template(&mut enc, &zt, &mut taps).expect("template");
    let inf = taps
        .list
        .iter()
        .find(|(n, _)| n == "backbone.z")
        .map(|(_, t)| t.clone())
        .expect("backbone.z tap");
    let got = enc.submit_read(&[&out.t, &inf]).unwrap();
    // Ours is tokens [64, 384]; the golden and the tap are NCHW [384, 8, 8].
    let nchw: Vec<f64> = (0..384 * 64)
        .map(|i| got[0][(i % 64) * 384 + i / 64] as f64)
        .collect();
    let g = &gold["backbone.z"].v;
    let max = g.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = |a: &[f64], b: &[f64]| a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    let e_gold = diff(&nchw, g);
    let inf64: Vec<f64> = got[1].iter().map(|&x| x as f64).collect();
    let e_inf = diff(&nchw, &inf64);
    eprintln!(
        "backbone.z: {:.2e} of max vs golden, {:.2e} vs the inference backbone",
        e_gold / max,
        e_inf / max
    );
    assert!(e_gold <= 1e-4 * max, "vs golden: {e_gold} (max {max})");
    assert!(e_inf <= 1e-5 * max, "vs inference: {e_inf} (max {max})");
}

/// The backbone run on two crops of different sizes on one tape (as the template and the search
/// crop share it): every parameter's gradient is the sum of the two single-crop gradients.
#[test]
fn two_crops_on_one_tape_add_up() {
    let arch = Arch {
        embed: 8,
        depths: [2, 1, 2],
        heads: [2, 1, 2],
        window: 3,
    };
    let _guard = lock();
    let gpu = gpu();
    let params = random_params(&arch, 4);
    let swin = Swin::load_arch(gpu, &params, &arch).unwrap();
    let mut rng = SplitMix64::new(44);
    let sides = [21usize, 30];
    let imgs: Vec<Vec<f32>> = sides
        .iter()
        .map(|&s| rng.vec_f32(3 * s * s, -2.0, 2.0))
        .collect();
    // Output tokens per crop: ⌈⌈⌈s/4⌉/2⌉/2⌉².
    let tokens = |s: usize| s.div_ceil(4).div_ceil(2).div_ceil(2).pow(2);
    let rs: Vec<Vec<f32>> = sides
        .iter()
        .map(|&s| rng.vec_f32(tokens(s) * 32, -1.0, 1.0))
        .collect();
    let run = |which: &[usize]| -> Vec<Vec<f32>> {
        let mut tape = Tape::new();
        let mut enc = gpu.encoder();
        let mut outs = Vec::new();
        let mut seed = Vec::new();
        for &i in which {
            let s = sides[i];
            let x = tape.constant(&gpu.upload(&[1, 3, s, s], &imgs[i]).unwrap());
            outs.push(swin.forward(&mut tape, &mut enc, &x).unwrap());
            seed.extend_from_slice(&rs[i]);
        }
        let refs: Vec<&sparsett::autograd::Var> = outs.iter().collect();
        let root = sparsett::autograd::ops::concat(&mut tape, &mut enc, &refs, 1).unwrap();
        let seed = gpu.upload(root.shape(), &seed).unwrap();
        let grads = tape.backward(&mut enc, &root, seed).unwrap();
        let ts: Vec<&sparsett::Tensor> = swin
            .params()
            .iter()
            .map(|(n, _)| grads.get(n).expect("gradient"))
            .collect();
        enc.submit_read(&ts).unwrap()
    };
    let (both, a, b) = (run(&[0, 1]), run(&[0]), run(&[1]));
    for (((name, _), g), (ga, gb)) in swin.params().iter().zip(&both).zip(a.iter().zip(&b)) {
        let want: Vec<f32> = ga.iter().zip(gb).map(|(x, y)| x + y).collect();
        let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = g
            .iter()
            .zip(&want)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        // Both sides add the same f32 terms, only in another order: a few ulps of the scale.
        assert!(err <= 1e-5 * max + 1e-12, "{name}: {err} (max {max})");
    }
}

/// The tiny demo configuration (`Config::tiny()`, its random weights) on a 127 template, batch
/// 2: the tape forward equals the f64 reference (tolerance as the small configurations).
#[test]
fn tiny_config_forward_matches_reference() {
    let _guard = lock();
    let gpu = gpu();
    let cfg = Config::tiny();
    let sd = cfg.random_weights(3).expect("random weights");
    let swin = Swin::load(gpu, &sd, &cfg).expect("loads");
    let arch = Arch::from(&cfg);
    let p64: HashMap<String, Vec<f64>> = arch
        .param_shapes()
        .into_iter()
        .map(|(k, _)| {
            let v = sd.f32(&k).unwrap().iter().map(|&x| x as f64).collect();
            (k, v)
        })
        .collect();
    let img = SplitMix64::new(9).vec_f32(2 * 3 * 127 * 127, -2.0, 2.0);
    let mut tape = Tape::new();
    let mut enc = gpu.encoder();
    let x = tape.constant(&gpu.upload(&[2, 3, 127, 127], &img).unwrap());
    let out = swin.forward(&mut tape, &mut enc, &x).unwrap();
    assert_eq!(out.shape(), [2, 64, 4 * cfg.embed]);
    let got = enc.submit_read(&[&out.t]).unwrap().remove(0);
    let img64: Vec<f64> = img.iter().map(|&v| v as f64).collect();
    let want = cpu::forward(&arch, &p64, &img64, [2, 127, 127], &SwinOpts::default());
    let max = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
    assert!(err <= 1e-5 * max, "tiny: {err} (max {max})");
}

/// Timing, not a check (full size, slow on lavapipe; run with `--ignored --nocapture`): forward
/// and backward of the official backbone on a batch of one 127 template and one 289 search crop.
#[test]
#[ignore]
fn full_size_step_timing() {
    use std::time::Instant;
    let _guard = lock();
    let gpu = gpu();
    let cfg = Config::official();
    let sd = cfg.random_weights(0).expect("weights");
    let swin = Swin::load(gpu, &sd, &cfg).unwrap();
    for (side, batch) in [(127, 1), (289, 1), (127, 2), (289, 2)] {
        for rep in 0..2 {
            let img = SplitMix64::new(1).vec_f32(batch * 3 * side * side, -2.0, 2.0);
            let x = gpu.upload(&[batch, 3, side, side], &img).unwrap();
            let t0 = Instant::now();
            let mut tape = Tape::new();
            let mut enc = gpu.encoder();
            let xv = tape.constant(&x);
            let out = swin.forward(&mut tape, &mut enc, &xv).unwrap();
            let fwd_dispatches = enc.dispatch_count();
            enc.submit_read(&[&out.t]).unwrap();
            let t1 = Instant::now();
            let profile = rep == 1 && side == 289 && batch == 1 && gpu.set_profiling(true);
            let mut enc = gpu.encoder();
            let seed = gpu.upload(out.shape(), &vec![1e-3; out.t.numel()]).unwrap();
            let grads = tape.backward(&mut enc, &out, seed).unwrap();
            let bwd_dispatches = enc.dispatch_count();
            let any = grads
                .get("basemodel.net.patch_embed.projection.weight")
                .unwrap();
            enc.submit_read(&[any]).unwrap();
            let t2 = Instant::now();
            if profile {
                gpu.set_profiling(false);
                let mut by: HashMap<String, f64> = HashMap::new();
                for e in gpu.take_profile() {
                    *by.entry(e.label).or_default() += e.ns;
                }
                let mut by: Vec<_> = by.into_iter().collect();
                by.sort_by(|a, b| b.1.total_cmp(&a.1));
                for (label, ns) in by.iter().take(8) {
                    eprintln!("  backward 1×289 GPU time: {label}: {:.0} ms", ns / 1e6);
                }
            }
            if rep == 1 {
                eprintln!(
                    "{} | {batch}×{side}: forward {:.0} ms ({fwd_dispatches} dispatches), backward {:.0} ms ({bwd_dispatches} dispatches)",
                    gpu.adapter_line(),
                    (t1 - t0).as_secs_f64() * 1e3,
                    (t2 - t1).as_secs_f64() * 1e3
                );
            }
        }
    }
}
