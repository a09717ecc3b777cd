#!/usr/bin/env bash
# The test command: installs the CPU Vulkan adapter if needed, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
export WGPU_BACKEND=vulkan                      # never let wgpu fall back to GL silently
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
