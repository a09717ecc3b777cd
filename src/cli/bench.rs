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
    let sd = super::weights::load_or_reference(weights)?;
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
    let total: f64 = by.values().map(|v| v.1).sum();
    let mut rows: Vec<_> = by.into_iter().collect();
    // Most expensive first: that is the list to work down when optimising.
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    println!(
        "\nGPU time per dispatch (timestamps), {:.1} ms in all:\n{:<44} {:>7} {:>12} {:>12} {:>6}",
        total / 1e6,
        "shader:entry",
        "count",
        "mean ms",
        "total ms",
        "share"
    );
    for (label, (n, ns)) in rows {
        println!(
            "{label:<44} {n:>7} {:>12.3} {:>12.1} {:>5.1}%",
            ns / n as f64 / 1e6,
            ns / 1e6,
            100.0 * ns / total
        );
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

/// `bench train`: one training step of the full model on a batch of `batch` random pairs with
/// random targets, timed in three parts (forward + losses, backward, AdamW over every
/// parameter), each ending in one sync; peak GPU memory in use is the pool's live bytes, sampled
/// at the end of each part (the tape holds every saved tensor at the end of the forward).
/// `neck_dropout` > 0 trains the neck with dropout, as the official configs do.
pub fn train(
    g: &Gpu,
    weights: Option<&Path>,
    batch: usize,
    neck_dropout: f32,
    iters: usize,
    profile: bool,
) -> sparsett::Result<()> {
    use sparsett::autograd::Tape;
    use sparsett::ops::loss::LossConfig;
    use sparsett::ops::optim::AdamState;
    use sparsett::train::net::Net;
    use sparsett::train::schedule::OptimConfig;
    use sparsett::train::target::{batch_targets, TargetConfig};
    if batch == 0 {
        return Err(Error::Other(
            "bench train: --batch must be at least 1".into(),
        ));
    }
    if !(0.0..1.0).contains(&neck_dropout) {
        return Err(Error::Other(format!(
            "bench train: --neck-dropout must be in [0, 1), got {neck_dropout}"
        )));
    }
    let sd = super::weights::load_or_reference(weights)?;
    println!("adapter: {}", g.adapter_line());
    // A weights file that carries a configuration (e.g. `init-weights --config tiny`) benches
    // that architecture.
    let cfg = sd.config();
    println!(
        "model: {} ({:.2} M parameters)",
        if cfg.is_official() {
            "official"
        } else {
            "reduced"
        },
        cfg.num_params() as f64 / 1e6
    );
    let net = Net::load_with(g, &sd, &cfg)?;
    drop(sd);
    let params = net.param_list();
    let states = params
        .iter()
        .map(|(_, t)| AdamState::zeros(g, t.shape()))
        .collect::<sparsett::Result<Vec<_>>>()?;
    let optim = OptimConfig::default();
    let mut rng = sparsett::prng::SplitMix64::new(7);
    let z = g.upload(
        &[batch, 3, Z_SIZE, Z_SIZE],
        &rng.vec_f32(batch * 3 * Z_SIZE * Z_SIZE, -2.0, 2.0),
    )?;
    let x = g.upload(
        &[batch, 3, X_SIZE, X_SIZE],
        &rng.vec_f32(batch * 3 * X_SIZE * X_SIZE, -2.0, 2.0),
    )?;
    let pairs: Vec<([f32; 4], bool)> = (0..batch)
        .map(|i| ([100.0, 90.0, 190.0, 200.0], i % 3 == 2))
        .collect();
    let tcfg = TargetConfig::default();
    let t = batch_targets(&tcfg, &pairs);
    let cells = tcfg.cells();
    let labels = g.upload(&[batch, cells, 1], &t.cls)?;
    let box_gt = g.upload(&[batch, cells, 4], &t.box_gt)?;
    let base = g.stats().pool.live_bytes;
    let (mut tf, mut tb, mut to) = (Vec::new(), Vec::new(), Vec::new());
    let mut peak = base;
    let last = iters.max(1) as u64 + 1;
    for step in 1..=last {
        // Timestamps only for the last step: they would slow the others and flood the table.
        g.set_profiling(profile && step == last);
        let t0 = Instant::now();
        let mut tape = Tape::new();
        let mut enc = g.encoder();
        let zv = tape.constant(&z);
        let xv = tape.constant(&x);
        let opts = sparsett::train::net::TrainOpts {
            neck_dropout,
            seed: step,
            ..Default::default()
        };
        let pred = net.forward_with(&mut tape, &mut enc, &zv, &xv, &opts)?;
        let l = Net::losses(
            &mut tape,
            &mut enc,
            &pred,
            &labels,
            &box_gt,
            &LossConfig::default(),
        )?;
        drop(pred);
        let loss = enc.submit_read(&[&l.total.t])?[0][0];
        let t1 = Instant::now();
        peak = peak.max(g.stats().pool.live_bytes);
        let mut enc = g.encoder();
        let seed = g.upload(&[1], &[1.0])?;
        let root = l.total.clone();
        drop(l);
        let grads = tape.backward(&mut enc, &root, seed)?;
        drop(root);
        let probe = grads.get(&params[0].0).cloned();
        match &probe {
            Some(p) => drop(enc.submit_read(&[p])?),
            None => enc.submit()?,
        }
        let t2 = Instant::now();
        peak = peak.max(g.stats().pool.live_bytes);
        let mut enc = g.encoder();
        for ((name, p), s) in params.iter().zip(&states) {
            if let Some(gr) = grads.get(name) {
                optim.step(&mut enc, name, 0, step, p, gr, s, None)?;
            }
        }
        drop(enc.submit_read(&[&params[0].1])?);
        let t3 = Instant::now();
        peak = peak.max(g.stats().pool.live_bytes);
        drop(grads);
        if !loss.is_finite() {
            return Err(Error::Other(format!(
                "bench train: loss {loss} at step {step}"
            )));
        }
        // The first step compiles the pipelines and fills the pool: not timed.
        if step > 1 {
            tf.push((t1 - t0).as_secs_f64());
            tb.push((t2 - t1).as_secs_f64());
            to.push((t3 - t2).as_secs_f64());
        }
        eprintln!("step {step}: loss {loss:.4}");
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e3
    };
    let numel: usize = params.iter().map(|(_, t)| t.numel()).sum();
    println!(
        "train step, batch {batch}, neck dropout {neck_dropout}, {} parameters ({numel} values), \
         median of {} steps:",
        params.len(),
        tf.len()
    );
    println!("  forward + losses  {:10.1} ms", med(&mut tf));
    println!("  backward          {:10.1} ms", med(&mut tb));
    println!("  optimizer (AdamW) {:10.1} ms", med(&mut to));
    println!(
        "  peak GPU memory in use: {:.1} MiB (pool live bytes; {:.1} MiB before the first step)",
        peak as f64 / (1 << 20) as f64,
        base as f64 / (1 << 20) as f64
    );
    if profile {
        print_profile(g);
    }
    Ok(())
}
