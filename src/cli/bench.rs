//! `sparsett bench`: kernels, the model step, the whole tracking loop.

use std::path::Path;

use sparsett::Gpu;

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

pub fn model(g: &Gpu, profile: bool, weights: Option<&Path>, iters: usize) -> sparsett::Result<()> {
    use sparsett::model::sparsett::{X_SIZE, Z_SIZE};
    use sparsett::model::{SparseTT, Taps};
    use std::time::Instant;
    let sd = super::weights::load(weights, true)?;
    println!("adapter: {}", g.adapter_line());
    let model = SparseTT::load(g, &sd)?;
    drop(sd);
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
        g.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| sparsett::Error::Gpu(e.to_string()))?;
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
