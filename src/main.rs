//! The `sparsett` command line.

use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use sparsett::{Gpu, GpuOptions, Variant};

#[derive(Parser)]
#[command(
    name = "sparsett",
    version,
    about = "SparseTT visual object tracking on any GPU (wgpu + WGSL)"
)]
struct Cli {
    /// Kernel variant: register (barrier-free, CPU adapters) or tiled (workgroup memory, GPUs).
    /// Default: chosen from the adapter type.
    #[arg(long, global = true, value_parser = parse_variant)]
    variant: Option<Variant>,
    /// Accept wgpu's OpenGL backend (refused by default: it lacks f16 and subgroups).
    #[arg(long, global = true)]
    allow_gl: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the adapter, backend, device type, features and the limits that matter.
    Info,
    /// Convert an official checkpoint (torch `.pkl` zip, or safetensors) to validated safetensors.
    Convert { input: PathBuf, output: PathBuf },
    /// Write the golden-reference weights (PRNG rule + small_params.safetensors) as safetensors.
    GoldenWeights {
        /// The golden folder's small_params.safetensors.
        #[arg(long)]
        small_params: PathBuf,
        /// The global seed of the PRNG rule (the golden meta.json says which).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run template + track on normalised inputs `input.z` (1×3×127×127) and `input.x`
    /// (1×3×289×289) and write every intermediate under the golden file's keys.
    Forward {
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Benchmarks.
    Bench {
        #[arg(value_enum)]
        what: BenchWhat,
        /// Only kernels whose family name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Print per-dispatch GPU timestamps (when the adapter has timestamp queries).
        #[arg(long)]
        profile: bool,
        /// Weights for `bench track` (default: the golden reference weights shipped in tests/data).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Timed iterations.
        #[arg(long, default_value_t = 5)]
        iters: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchWhat {
    /// Every kernel family on model-sized shapes: median time, GFLOP/s or GB/s.
    Kernels,
    /// The full model: template step and track step times, dispatches, allocations, syncs.
    Track,
}

fn parse_variant(s: &str) -> Result<Variant, String> {
    Variant::parse(s).map_err(|e| e.to_string())
}

fn gpu(cli: &Cli, profile: bool) -> sparsett::Result<Gpu> {
    Gpu::with_options(GpuOptions {
        allow_gl: cli.allow_gl,
        variant: cli.variant,
        profile,
        ..Default::default()
    })
}

type BenchFn = fn(&Gpu, &mut Vec<sparsett::bench::Row>) -> sparsett::Result<()>;

fn kernel_benches() -> Vec<(&'static str, BenchFn)> {
    use sparsett::ops::*;
    vec![
        ("matmul", matmul::bench),
        ("conv", conv::bench),
        ("attention", attention::bench),
        ("topk", topk::bench),
        ("window", window::bench),
        ("norm", norm::bench),
        ("softmax", softmax::bench),
        ("layout", layout::bench),
        ("elementwise", elementwise::bench),
    ]
}

fn run(cli: &Cli) -> sparsett::Result<()> {
    match &cli.cmd {
        Cmd::Info => {
            let g = gpu(cli, false)?;
            println!("{}", g.describe());
        }
        Cmd::Convert { input, output } => {
            let r = sparsett::model::weights::convert(input, output)?;
            println!("{} → {}\n{r}", input.display(), output.display());
        }
        Cmd::GoldenWeights {
            small_params,
            seed,
            out,
        } => {
            let sd = sparsett::model::weights::golden_state_dict(small_params, *seed)?;
            sd.save_safetensors(out)?;
            println!("wrote {} entries to {}", sd.len(), out.display());
        }
        Cmd::Forward {
            weights,
            inputs,
            out,
        } => forward(cli, weights, inputs, out)?,
        Cmd::Bench {
            what: BenchWhat::Track,
            profile,
            weights,
            iters,
            ..
        } => bench_track(cli, *profile, weights.as_ref(), *iters)?,
        Cmd::Bench {
            what: BenchWhat::Kernels,
            filter,
            profile,
            ..
        } => {
            let g = gpu(cli, *profile)?;
            println!("adapter: {}", g.adapter_line());
            let mut rows = Vec::new();
            for (name, f) in kernel_benches() {
                if filter.as_deref().is_some_and(|p| !name.contains(p)) {
                    continue;
                }
                eprintln!("benchmarking {name} ...");
                f(&g, &mut rows)?;
                g.trim_pool();
            }
            print!("{}", sparsett::bench::table(&rows));
            if *profile {
                print_profile(&g);
            }
        }
    }
    Ok(())
}

fn forward(cli: &Cli, weights: &PathBuf, inputs: &PathBuf, out: &PathBuf) -> sparsett::Result<()> {
    use sparsett::model::golden::NamedData;
    use sparsett::model::weights::{HostTensor, StateDict};
    let sd = StateDict::load_checked(weights)?;
    let inp = StateDict::load(inputs)?;
    let get = |k: &str| -> sparsett::Result<Vec<f32>> { Ok(inp.f32(k)?.to_vec()) };
    let (z, x) = (get("input.z")?, get("input.x")?);
    let g = gpu(cli, false)?;
    let model = sparsett::model::SparseTT::load(&g, &sd)?;
    let all = sparsett::model::golden::forward_all(&g, &model, &z, &x)?;
    let mut dict = StateDict::new();
    for (k, v) in all {
        let t = match v.data {
            NamedData::F32(d) => HostTensor::f32(&v.shape, d),
            NamedData::U32(d) => HostTensor::i64(&v.shape, d.into_iter().map(i64::from).collect()),
        };
        dict.insert(k, t);
    }
    dict.save_safetensors(out)?;
    println!("wrote {} tensors to {}", dict.len(), out.display());
    Ok(())
}

fn bench_track(
    cli: &Cli,
    profile: bool,
    weights: Option<&PathBuf>,
    iters: usize,
) -> sparsett::Result<()> {
    use sparsett::model::sparsett::{X_SIZE, Z_SIZE};
    use sparsett::model::{SparseTT, Taps};
    use std::time::Instant;
    let sd = match weights {
        Some(w) => sparsett::model::weights::StateDict::load_checked(w)?,
        None => {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/seed0");
            sparsett::model::weights::golden_state_dict(&dir.join("small_params.safetensors"), 0)?
        }
    };
    let g = gpu(cli, false)?;
    println!("adapter: {}", g.adapter_line());
    let model = SparseTT::load(&g, &sd)?;
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
        print_profile(&g);
    }
    Ok(())
}

fn print_profile(g: &Gpu) {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
