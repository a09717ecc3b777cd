//! `sparsett bench`: kernels, the model step, the whole tracking loop.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sparsett::model::{SparseTT, Taps, SCORE_SIDE, X_SIZE, Z_SIZE};
use sparsett::ops::crop;
use sparsett::tracker::{post, Preset, TargetState, Tracker, MEAN, STD};
use sparsett::video::{self, Prefetch, VideoSource};
use sparsett::{Error, Gpu};

type BenchFn = fn(&Gpu, &mut Vec<sparsett::bench::Row>) -> sparsett::Result<()>;

pub fn kernel_benches() -> Vec<(&'static str, BenchFn)> {
    use sparsett::ops::*;
    vec![
        ("matmul", matmul::bench),
        ("conv", conv::bench),
        ("crop", crop::bench),
        ("attention", attention::bench),
        ("topk", topk::bench),
        ("window", window::bench),
        ("norm", norm::bench),
        ("softmax", softmax::bench),
        ("layout", layout::bench),
        ("elementwise", elementwise::bench),
    ]
}

/// `bench track`: the model's two steps, then the whole tracking loop stage by stage.
pub fn track(
    g: Arc<Gpu>,
    profile: bool,
    weights: Option<&Path>,
    iters: usize,
    video: &str,
    frames: usize,
) -> sparsett::Result<()> {
    let sd = super::weights::load(weights, true)?;
    println!("adapter: {}", g.adapter_line());
    let model = Arc::new(SparseTT::load(&g, &sd)?);
    drop(sd);
    model_steps(&g, &model, profile, iters)?;
    track_loop(g, model, video, frames)
}

fn model_steps(g: &Gpu, model: &SparseTT, profile: bool, iters: usize) -> sparsett::Result<()> {
    let mut rng = sparsett::prng::SplitMix64::new(1);
    let z = g.upload(
        &[1, 3, Z_SIZE, Z_SIZE],
        &rng.vec_f32(3 * Z_SIZE * Z_SIZE, -2.0, 2.0),
    )?;
    let x_host = rng.vec_f32(3 * X_SIZE * X_SIZE, -2.0, 2.0);

    let template = || -> sparsett::Result<(sparsett::model::TemplateFeatures, f64, u64)> {
        let t0 = Instant::now();
        let mut enc = g.encoder();
        let tf = model.template(&mut enc, &z, &mut Taps::off())?;
        let n = enc.dispatch_count();
        enc.submit()?;
        wait(g)?;
        Ok((tf, t0.elapsed().as_secs_f64() * 1e3, n))
    };
    let (tf, _, _) = template()?; // compiles the pipelines
    let (tf2, t_ms, t_disp) = template()?;
    drop(tf2);
    let step = || -> sparsett::Result<(f64, u64)> {
        let t0 = Instant::now();
        let x = g.upload(&[1, 3, X_SIZE, X_SIZE], &x_host)?;
        let mut enc = g.encoder();
        let out = model.track(&mut enc, &tf, &x, &mut Taps::off())?;
        let n = enc.dispatch_count();
        enc.submit_read(&[&out.score, &out.boxes])?;
        Ok((t0.elapsed().as_secs_f64() * 1e3, n))
    };
    step()?;
    step()?; // warm-up: pipelines compiled, pool filled
    let before = g.stats();
    g.set_profiling(profile);
    let mut times = Vec::new();
    let mut dispatches = 0;
    for _ in 0..iters.max(1) {
        let (ms, n) = step()?;
        times.push(ms);
        dispatches = n;
    }
    let after = g.stats();
    times.sort_by(|a, b| a.total_cmp(b));
    let med = times[times.len() / 2];
    let n = iters.max(1) as u64;
    println!("template step: {t_ms:.1} ms, {t_disp} dispatches");
    println!(
        "track step:    {med:.1} ms median of {n} ({:.2} GFLOP/s against 26.1 GFLOP), {dispatches} dispatches",
        26.1 / med * 1e3
    );
    println!(
        "after warm-up: {} bytes allocated, {:.1} GPU→CPU syncs and {:.1} submits per step",
        after.pool.allocated_bytes - before.pool.allocated_bytes,
        (after.syncs - before.syncs) as f64 / n as f64,
        (after.submits - before.submits) as f64 / n as f64
    );
    if profile {
        print_profile(g);
    }
    Ok(())
}

pub fn print_profile(g: &Gpu) {
    let entries = g.take_profile();
    if entries.is_empty() {
        println!("(no timestamps: the adapter lacks timestamp queries)");
        return;
    }
    let mut by: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for e in entries {
        let s = by.entry(e.label).or_default();
        s.0 += 1;
        s.1 += e.ns;
    }
    println!(
        "\nGPU time per dispatch (timestamps):\n{:<44} {:>7} {:>12}",
        "shader:entry", "count", "mean ms"
    );
    for (label, (n, ns)) in by {
        println!("{label:<44} {n:>7} {:>12.3}", ns / n as f64 / 1e6);
    }
}

fn wait(g: &Gpu) -> sparsett::Result<()> {
    g.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(e.to_string()))?;
    Ok(())
}

fn ms_per(t: Instant, n: usize) -> f64 {
    t.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64
}

/// The whole per-frame loop on a real video: each stage timed on its own over the same frames,
/// then the loop as `sparsett track` runs it (decoding on a prefetch thread).
fn track_loop(
    g: Arc<Gpu>,
    model: Arc<SparseTT>,
    video: &str,
    frames: usize,
) -> sparsett::Result<()> {
    let frames = frames.max(2);
    let mut src = video::open(video)?;
    let t = Instant::now();
    let mut imgs = Vec::new();
    while imgs.len() < frames {
        match src.next_frame()? {
            Some(f) => imgs.push(f),
            None => break,
        }
    }
    let decode = ms_per(t, imgs.len());
    if imgs.len() < 2 {
        return Err(Error::Other(format!("{video}: needs at least 2 frames")));
    }
    let n = imgs.len() - 1;
    let (w, h) = (imgs[0].width() as usize, imgs[0].height() as usize);
    // A centred target a fifth of the frame wide.
    let init = [
        w as f32 * 0.4,
        h as f32 * 0.4,
        w as f32 * 0.2,
        h as f32 * 0.2,
    ];
    let state = TargetState::from_rect(init);
    let geo = state.crop(Z_SIZE, X_SIZE);
    let spec = crop::CropSpec {
        m: crop::subwindow_matrix(state.pos, geo.side, X_SIZE),
        border_rgb: [128, 128, 128],
    };
    let crop_once = |f: &image::RgbImage| -> sparsett::Result<sparsett::Tensor> {
        let gf = crop::upload_frame(&g, f.as_raw(), w, h)?;
        let mut enc = g.encoder();
        let x = crop::crop(&mut enc, &gf, &[spec], X_SIZE, MEAN, STD)?;
        enc.submit()?;
        Ok(x)
    };
    crop_once(&imgs[0])?;
    wait(&g)?;
    let t = Instant::now();
    let mut last = None;
    for f in &imgs[1..] {
        last = Some(crop_once(f)?);
    }
    wait(&g)?;
    let crop_ms = ms_per(t, n);

    let mut enc = g.encoder();
    let z = {
        let gf = crop::upload_frame(&g, imgs[0].as_raw(), w, h)?;
        let zs = crop::CropSpec {
            m: crop::subwindow_matrix(state.pos, state.crop(Z_SIZE, Z_SIZE).side, Z_SIZE),
            ..spec
        };
        crop::crop(&mut enc, &gf, &[zs], Z_SIZE, MEAN, STD)?
    };
    let tf = model.template(&mut enc, &z, &mut Taps::off())?;
    enc.submit()?;
    let x = last.expect("at least one crop");
    let step = || -> sparsett::Result<Vec<Vec<f32>>> {
        let mut enc = g.encoder();
        let out = model.track(&mut enc, &tf, &x, &mut Taps::off())?;
        enc.submit_read(&[&out.score, &out.boxes])
    };
    step()?;
    let t = Instant::now();
    let mut outs = Vec::new();
    for _ in 0..n {
        outs = step()?;
    }
    let model_ms = ms_per(t, n);

    let window = post::hann_window(SCORE_SIDE);
    let reps = 1000;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(post::postprocess(
            &outs[0],
            &outs[1],
            &state,
            geo.scale,
            X_SIZE,
            &window,
            &Preset::GOT10K,
            (w, h),
        ));
    }
    let post_ms = ms_per(t, reps);

    let mut tracker = Tracker::new(g.clone(), model, Preset::GOT10K);
    let mut src: Box<dyn VideoSource> = Box::new(Prefetch::new(video::open(video)?));
    let first = video::first_frame(&mut *src)?;
    tracker.init(&first, init)?;
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let Some(f) = src.next_frame()? else { break };
        tracker.update(&f)?;
        done += 1;
    }
    let loop_ms = ms_per(t, done);
    println!("\nwhole loop on {video} ({w}×{h}, {n} frames, one target):");
    println!("  decode        {decode:10.1} ms/frame (on its own; overlapped by a prefetch thread in the loop)");
    println!("  upload + crop {crop_ms:10.1} ms/frame");
    println!("  model + read  {model_ms:10.1} ms/frame");
    println!("  post-process  {post_ms:10.3} ms/frame");
    println!(
        "  whole loop    {loop_ms:10.1} ms/frame = {:.2} frames/s",
        1e3 / loop_ms
    );
    Ok(())
}
