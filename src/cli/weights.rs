//! Which weights a command runs with.

use std::path::Path;

use sparsett::model::weights::{golden_state_dict_from, StateDict};
use sparsett::model::Config;
use sparsett::Result;

/// The golden reference folder's small parameters; with the PRNG rule they rebuild the full-size
/// reference weights, so the binary can run without any file.
const REFERENCE_SMALL_PARAMS: &[u8] =
    include_bytes!("../../tests/data/golden/seed0/small_params.safetensors");

/// The demo model (the tiny configuration trained by `sparsett train --config demo` on generated
/// sequences; README "The demo model"): what `track` and `eval` run without `--weights`.
pub const DEMO_MODEL: &[u8] = include_bytes!("../assets/sparsett-demo.safetensors");

/// `--weights FILE` (safetensors or an official `.pkl`), else the built-in demo model.
pub fn load(weights: Option<&Path>, quiet: bool) -> Result<StateDict> {
    match weights {
        Some(w) => StateDict::load_checked(w),
        None => {
            if !quiet {
                eprintln!(
                    "note: no --weights given: using the built-in demo model (a 0.9 M-parameter \
                     SparseTT trained from scratch on generated sequences; see README). Pass \
                     official SparseTT weights (.pkl or converted .safetensors) for benchmark-grade \
                     tracking."
                );
            }
            StateDict::from_safetensors_bytes(DEMO_MODEL)
        }
    }
}

/// `--weights FILE`, else the full-size reference weights (the golden PRNG rule, untrained):
/// what the benchmarks time, since they measure the official architecture.
pub fn load_or_reference(weights: Option<&Path>) -> Result<StateDict> {
    match weights {
        Some(w) => StateDict::load_checked(w),
        None => golden_state_dict_from(
            StateDict::from_safetensors_bytes(REFERENCE_SMALL_PARAMS)?,
            0,
        ),
    }
}

/// `init-weights`: [`Config::random_weights`] for a named or written-out configuration, saved
/// as safetensors with the configuration in its metadata.
pub fn init(config: &str, seed: u64, out: &Path) -> Result<()> {
    let cfg = if config.contains('=') {
        config.parse::<Config>()?
    } else {
        Config::named(config)?
    };
    let sd = cfg.random_weights(seed)?;
    sd.save_safetensors(out)?;
    println!(
        "wrote {} entries ({:.3} M parameters, configuration '{cfg}') to {}",
        sd.len(),
        cfg.num_params() as f64 / 1e6,
        out.display()
    );
    Ok(())
}
