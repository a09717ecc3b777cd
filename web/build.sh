#!/usr/bin/env bash
# Builds the demo page's wasm package into web/www/pkg/ (sparsett_web.js + sparsett_web_bg.wasm,
# for `import init, { Tracker } from "./pkg/sparsett_web.js"`): web/www is then the whole site.
# Works from a clean checkout on Debian 12: installs Debian's rustc-web toolchain and the pinned
# wasm-bindgen CLI if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source web/setup.sh
start=$SECONDS
"$WEB_CARGO" build "${WEB_CARGO_FLAGS[@]}" --lib
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/sparsett_web.wasm"
rm -rf web/www/pkg
"$WEB_WB_ROOT/bin/wasm-bindgen" --target web --out-dir web/www/pkg "$wasm"
# The page loads the demo model from next to itself by default (the same file `sparsett track`
# embeds).
cp src/assets/sparsett-demo.safetensors web/www/sparsett-demo.safetensors
echo "web/www/pkg built in $((SECONDS - start)) s (serve it: python3 -m http.server -d web/www 8000):"
ls -l web/www/pkg | awk 'NR > 1 { printf "  %10d  %s\n", $5, $9 }'
