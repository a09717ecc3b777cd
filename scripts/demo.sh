#!/usr/bin/env bash
# The main job. Today: show the adapter and benchmark every kernel on it (the tracker and its
# embedded example clip arrive with the model; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo run --release --locked -- info
cargo run --release --locked -- bench kernels "$@"
