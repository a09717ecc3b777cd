//! The `sparsett` command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use cli::{bench, eval, forward, synth, track, train};
use sparsett::tracker::Preset;
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
    /// Track one or several targets through a video.
    Track {
        /// An image folder (JPEG/PNG, benchmark layouts), a .y4m file, or anything ffmpeg reads
        /// (mp4, avi, webm, /dev/video0).
        #[arg(long)]
        video: String,
        /// The target in the first frame: x,y,w,h in pixels. Repeat for several targets.
        #[arg(long = "init", required = true, value_parser = track::parse_rect)]
        init: Vec<[f32; 4]>,
        /// Weights: official .pkl or safetensors (default: the built-in demo model, see README).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Hyper-parameters: got10k (also lasot, trackingnet), otb or uav, optionally followed by
        /// key=value overrides (`otb,window_influence=0.4`). Default: the preset stored with the
        /// weights (the demo model has one), else got10k.
        #[arg(long, value_parser = parse_preset)]
        preset: Option<Preset>,
        /// Write one x,y,w,h line per frame (GOT-10k result format); several targets get
        /// NAME.1.txt, NAME.2.txt, ….
        #[arg(long)]
        out: Option<PathBuf>,
        /// Draw the boxes and scores: a video file (.mp4/.webm/.avi via ffmpeg, .y4m natively) or
        /// a folder of JPEG frames (a path ending in /).
        #[arg(long)]
        render: Option<String>,
        /// Play the video with the live boxes in a desktop window.
        #[arg(long)]
        show: bool,
        /// Stop after this many frames.
        #[arg(long)]
        frames: Option<usize>,
        /// No progress bar or summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Run the tracker over a benchmark and score it with the toolkits' metrics.
    Eval {
        /// got10k, lasot, trackingnet, otb or uav123.
        #[arg(long, value_parser = parse_dataset)]
        dataset: sparsett::eval::DatasetKind,
        /// The dataset's folder, in the layout its toolkit expects.
        #[arg(long)]
        root: PathBuf,
        /// Split: GOT-10k val (default) / test / train; LaSOT test / all; TrackingNet TEST / TRAIN_i.
        #[arg(long)]
        split: Option<String>,
        /// Result folder(s): this run writes into the first (sequences with results are skipped,
        /// so an interrupted run resumes); every folder is scored in one table.
        #[arg(long, required = true)]
        results: Vec<PathBuf>,
        /// Only score the result folders (e.g. other trackers' results); do not track.
        #[arg(long)]
        score_only: bool,
        /// Hyper-parameters, as `track --preset` takes them (default: the preset stored with the
        /// weights, else the benchmark's official one).
        #[arg(long, value_parser = parse_preset)]
        preset: Option<Preset>,
        /// Metric conventions (default: the benchmark's toolkit).
        #[arg(long, value_parser = parse_protocol)]
        protocol: Option<sparsett::eval::Protocol>,
        /// Weights: official .pkl or safetensors (default: the built-in demo model, see README).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Where the success/precision PNGs go (default: the first result folder).
        #[arg(long)]
        plots: Option<PathBuf>,
        /// Also write the trivial tracker's results (the first frame's box, never moved) into
        /// this folder and score them beside the others: the floor a tracker must beat.
        #[arg(long)]
        static_baseline: Option<PathBuf>,
    },
    /// Train (or fine-tune) from a TOML config mirroring the official YAML training config;
    /// built-in configs: got10k, fulldata, demo.
    Train {
        /// A TOML file, or the name of a built-in config.
        #[arg(long)]
        config: PathBuf,
        /// Checkpoint folder (default: exp_save/exp_name from the config).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the folder's latest checkpoint.
        #[arg(long)]
        resume: bool,
        /// Stop after this many steps (default: the whole schedule).
        #[arg(long)]
        steps: Option<u64>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Write generated tracking sequences with exact ground truth (GOT-10k layout) cut from your
    /// photos or video frames: training data without downloading a benchmark.
    Synth {
        /// Photos to cut objects and backgrounds from (repeatable).
        #[arg(long = "image")]
        images: Vec<PathBuf>,
        /// Videos whose every 10th frame serves as a photo (repeatable).
        #[arg(long = "video")]
        videos: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 16)]
        sequences: usize,
        #[arg(long, default_value_t = 30)]
        frames: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Print the adapter, backend, device type, features and the limits that matter.
    Info,
    /// Convert an official checkpoint (torch `.pkl` zip, or safetensors) to validated safetensors.
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// Store tracker hyper-parameters with the weights (a preset name and/or key=value
        /// overrides, as --preset takes them): track, eval and the browser then use them
        /// whenever no --preset is given.
        #[arg(long, value_parser = parse_preset)]
        preset: Option<Preset>,
    },
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
    /// Write a deterministic random weight set for a model configuration (safetensors, with the
    /// configuration in its metadata, so `track --weights` builds that model).
    InitWeights {
        /// `official`, `tiny`, or a configuration text (`embed=32 depths=1,1,2 ...`).
        #[arg(long, default_value = "tiny")]
        config: String,
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
        /// Video for the whole-loop part of `bench track` (default: the cup clip in tests/data).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cup.mp4"))]
        video: String,
        /// Frames of that video to time.
        #[arg(long, default_value_t = 6)]
        frames: usize,
        /// Pairs per step for `bench train`.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// The neck's dropout probability for `bench train` (default 0, the golden step; the
        /// official configs train with 0.1, which runs the neck's attentions densely).
        #[arg(long, default_value_t = 0.0)]
        neck_dropout: f32,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchWhat {
    /// Every kernel family on model-sized shapes: median time, GFLOP/s or GB/s.
    Kernels,
    /// The full model: template step and track step times, dispatches, allocations, syncs.
    Track,
    /// One training step (forward, backward, AdamW) at `--batch`, peak GPU memory in use.
    Train,
}

fn parse_preset(s: &str) -> Result<Preset, String> {
    s.parse().map_err(|e: sparsett::Error| e.to_string())
}

fn parse_dataset(s: &str) -> Result<sparsett::eval::DatasetKind, String> {
    s.parse().map_err(|e: sparsett::Error| e.to_string())
}

fn parse_protocol(s: &str) -> Result<sparsett::eval::Protocol, String> {
    s.parse().map_err(|e: sparsett::Error| e.to_string())
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

fn run(cli: &Cli) -> sparsett::Result<()> {
    match &cli.cmd {
        Cmd::Track {
            video,
            init,
            weights,
            preset,
            out,
            render,
            show,
            frames,
            quiet,
        } => {
            let g = Arc::new(gpu(cli, false)?);
            track::run(
                g,
                track::TrackArgs {
                    video: video.clone(),
                    init: init.clone(),
                    weights: weights.clone(),
                    preset: *preset,
                    out: out.clone(),
                    render: render.clone(),
                    show: *show,
                    frames: *frames,
                    quiet: *quiet,
                },
            )?;
        }
        Cmd::Eval {
            dataset,
            root,
            split,
            results,
            score_only,
            preset,
            protocol,
            weights,
            plots,
            static_baseline,
        } => {
            let g = if *score_only {
                None
            } else {
                Some(Arc::new(gpu(cli, false)?))
            };
            eval::run(
                g,
                &eval::EvalArgs {
                    dataset: *dataset,
                    root,
                    split: split.as_deref(),
                    results,
                    score_only: *score_only,
                    preset: *preset,
                    protocol: *protocol,
                    weights: weights.as_deref(),
                    plots: plots.as_deref(),
                    static_baseline: static_baseline.as_deref(),
                },
            )?;
        }
        Cmd::Train {
            config,
            out,
            resume,
            steps,
            quiet,
        } => train::run(
            Arc::new(gpu(cli, false)?),
            &train::TrainArgs {
                config,
                out: out.as_deref(),
                resume: *resume,
                steps: *steps,
                quiet: *quiet,
            },
        )?,
        Cmd::Synth {
            images,
            videos,
            out,
            sequences,
            frames,
            seed,
        } => synth::run(
            images,
            videos,
            out,
            &sparsett::synth::DatasetSpec {
                sequences: *sequences,
                frames: *frames,
                seed: *seed,
                ..Default::default()
            },
        )?,
        Cmd::Info => {
            let g = gpu(cli, false)?;
            println!("{}", g.describe());
        }
        Cmd::Convert {
            input,
            output,
            preset,
        } => {
            let r = sparsett::model::weights::convert(input, output, preset.map(|p| p.to_text()))?;
            println!("{} → {}\n{r}", input.display(), output.display());
            if let Some(p) = preset {
                println!("stored preset: {}", p.to_text());
            }
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
        Cmd::InitWeights { config, seed, out } => {
            cli::weights::init(config, *seed, out)?;
        }
        Cmd::Forward {
            weights,
            inputs,
            out,
        } => forward::run(&gpu(cli, false)?, weights, inputs, out)?,
        Cmd::Bench {
            what: BenchWhat::Track,
            profile,
            weights,
            iters,
            video,
            frames,
            ..
        } => bench::track(
            Arc::new(gpu(cli, false)?),
            *profile,
            weights.as_deref(),
            *iters,
            video,
            *frames,
        )?,
        Cmd::Bench {
            what: BenchWhat::Train,
            weights,
            iters,
            batch,
            profile,
            neck_dropout,
            ..
        } => bench::train(
            &gpu(cli, *profile)?,
            weights.as_deref(),
            *batch,
            *neck_dropout,
            *iters,
            *profile,
        )?,
        Cmd::Bench {
            what: BenchWhat::Kernels,
            filter,
            profile,
            ..
        } => {
            let g = gpu(cli, *profile)?;
            println!("adapter: {}", g.adapter_line());
            let mut rows = Vec::new();
            for (name, f) in bench::kernel_benches() {
                if filter.as_deref().is_some_and(|p| !name.contains(p)) {
                    continue;
                }
                eprintln!("benchmarking {name} ...");
                f(&g, &mut rows)?;
                g.trim_pool();
            }
            print!("{}", sparsett::bench::table(&rows));
            if *profile {
                bench::print_profile(&g);
            }
        }
    }
    Ok(())
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
