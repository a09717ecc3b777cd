#!/usr/bin/env bash
# The main job: tracks the cup in the example clip (tests/data/cup.mp4, Apache-2.0, from OpenCV)
# and writes the rendered video and the boxes. Extra arguments go to `sparsett track`
# (e.g. --weights sparsett.safetensors, --frames 30, --show).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
mkdir -p out
cargo run --release --locked -- track --video tests/data/cup.mp4 --init 300,118,126,256 \
  --out out/cup_boxes.txt --render out/cup_tracked.mp4 "$@"
