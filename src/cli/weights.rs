//! Which weights a command runs with.

use std::path::Path;

use sparsett::model::weights::{golden_state_dict_from, StateDict};
use sparsett::Result;

/// The golden reference folder's small parameters; with the PRNG rule they rebuild the full-size
/// reference weights, so the binary can run without any file.
const REFERENCE_SMALL_PARAMS: &[u8] =
    include_bytes!("../../tests/data/golden/seed0/small_params.safetensors");

/// `--weights FILE` (safetensors or an official `.pkl`), else the built-in reference weights.
pub fn load(weights: Option<&Path>, quiet: bool) -> Result<StateDict> {
    match weights {
        Some(w) => StateDict::load_checked(w),
        None => {
            if !quiet {
                eprintln!(
                    "note: no --weights given: using the built-in reference weights (the golden \
                     PRNG rule, untrained) — the box will not follow the target. Pass official \
                     SparseTT weights (.pkl or converted .safetensors) for real tracking."
                );
            }
            golden_state_dict_from(
                StateDict::from_safetensors_bytes(REFERENCE_SMALL_PARAMS)?,
                0,
            )
        }
    }
}
