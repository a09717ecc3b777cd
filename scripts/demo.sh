#!/usr/bin/env bash
# The main job. Until the tracker loop lands (see README), it shows the adapter, benchmarks every
# kernel and runs the full model's template and track steps on the golden reference weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo run --release --locked -- info
cargo run --release --locked -- bench kernels "$@"
cargo run --release --locked -- bench track
