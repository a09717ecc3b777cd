#!/usr/bin/env bash
# Browser tests: builds the wasm test binary and runs it in headless Chromium on WebGPU
# (SwiftShader when there is no GPU) through chromedriver, builds the demo page (web/www), then
# runs the page end to end (web/tests/page/run.mjs: node + Chromium over the DevTools protocol).
# Works from a clean checkout on Debian 12 (installs what it needs; root or sudo for apt).
set -euo pipefail
cd "$(dirname "$0")/.."
source web/setup.sh --browser
start=$SECONDS
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$WEB_WB_ROOT/bin/wasm-bindgen-test-runner"
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
# The runner's limit covers the whole binary (default 20 s); SwiftShader on 2 busy cores needs more.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-600}"
# Chromium's options (--enable-unsafe-webgpu) come from web/webdriver.json, found by the runner
# in the package folder where cargo starts it.
"$WEB_CARGO" test "${WEB_CARGO_FLAGS[@]}"
echo "browser tests done in $((SECONDS - start)) s"
bash web/build.sh

# The page tests track with SPARSETT_WEB_MODEL: by default the shipped demo model, which must
# follow the moving object (SPARSETT_WEB_TRAINED=1); the native CLI gives the boxes the browser
# must match.
unset RUSTC RUSTDOC RUSTC_BOOTSTRAP CARGO_TARGET_DIR
cargo build --locked --quiet --bin sparsett
export SPARSETT_BIN="${SPARSETT_BIN:-$PWD/target/debug/sparsett}"
if [[ -z "${SPARSETT_WEB_MODEL:-}" ]]; then
  export SPARSETT_WEB_MODEL="$PWD/src/assets/sparsett-demo.safetensors"
  export SPARSETT_WEB_TRAINED="${SPARSETT_WEB_TRAINED:-1}"
fi
start=$SECONDS
node web/tests/page/run.mjs
echo "page tests done in $((SECONDS - start)) s (screenshots in web/target/page-tests/)"
