#!/usr/bin/env bash
# Builds the browser package into web/pkg/ (sparsett_web.js + sparsett_web_bg.wasm, for
# `import init, { Tracker } from "./pkg/sparsett_web.js"`). Works from a clean checkout on
# Debian 12: installs Debian's rustc-web toolchain and the pinned wasm-bindgen CLI if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source web/setup.sh
start=$SECONDS
"$WEB_CARGO" build "${WEB_CARGO_FLAGS[@]}" --lib
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/sparsett_web.wasm"
rm -rf web/pkg
"$WEB_WB_ROOT/bin/wasm-bindgen" --target web --out-dir web/pkg "$wasm"
echo "web/pkg built in $((SECONDS - start)) s:"
ls -l web/pkg | awk 'NR > 1 { printf "  %10d  %s\n", $5, $9 }'
