# Sourced by build.sh and test.sh: puts the browser toolchain in place and exports its settings.
# Usage: source web/setup.sh [--browser]   (from the repository root; --browser adds Chromium,
# chromedriver, ffmpeg and node for the tests).
#
# Debian 12's rustup toolchain has no wasm32 standard library; Debian's rustc-web (with its std
# source) builds one on the fly (-Zbuild-std). See shared/spec/toolchain.md for the recipes.

web_need_pkgs=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)
if [[ "${1:-}" == "--browser" ]]; then
  # ffmpeg makes the page tests' video, node drives the page.
  web_need_pkgs+=(chromium chromium-driver ffmpeg nodejs)
fi

web_missing=()
for p in "${web_need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || web_missing+=("$p")
done
if ((${#web_missing[@]})); then
  echo "web: installing ${web_missing[*]}" >&2
  if [[ $(id -u) -eq 0 ]]; then web_sudo=(); elif command -v sudo >/dev/null; then web_sudo=(sudo); else
    echo "web: missing Debian packages: ${web_missing[*]} (run as root or install them with apt-get)" >&2
    return 1 2>/dev/null || exit 1
  fi
  "${web_sudo[@]}" apt-get update -qq
  # lld-22 is named explicitly: rust-web-llvm's rust-lld links to it and nothing pulls it in.
  DEBIAN_FRONTEND=noninteractive "${web_sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${web_missing[@]}" >/dev/null
fi
if [[ ! -d /usr/lib/rustlib/src/rust/library ]]; then
  echo "web: the Rust std source is missing at /usr/lib/rustlib/src/rust (package rust-web-src)" >&2
  return 1 2>/dev/null || exit 1
fi

# The wasm-bindgen CLI must be exactly the version of the wasm-bindgen crate in Cargo.lock.
WEB_WB_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [[ -z "$WEB_WB_VERSION" ]]; then
  echo "web: no wasm-bindgen entry in Cargo.lock" >&2
  return 1 2>/dev/null || exit 1
fi
WEB_WB_ROOT="${SPARSETT_WASM_BINDGEN_ROOT:-$HOME/.cargo/wasm-bindgen-$WEB_WB_VERSION}"
if [[ "$("$WEB_WB_ROOT/bin/wasm-bindgen" --version 2>/dev/null)" != "wasm-bindgen $WEB_WB_VERSION" ]]; then
  echo "web: installing wasm-bindgen-cli $WEB_WB_VERSION into $WEB_WB_ROOT (a few minutes)" >&2
  # --locked fails when the index lacks one of the CLI's pinned dependency versions; then the
  # newest compatible ones are used.
  cargo install --quiet --locked --version "$WEB_WB_VERSION" wasm-bindgen-cli --root "$WEB_WB_ROOT" 2>/dev/null \
    || cargo install --quiet --version "$WEB_WB_VERSION" wasm-bindgen-cli --root "$WEB_WB_ROOT"
fi
export WEB_WB_VERSION WEB_WB_ROOT

# Debian's compiler and cargo by full path: rustup's come first in PATH and lack wasm32.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
WEB_CARGO=/usr/bin/cargo
# A target folder of its own: std is rebuilt for wasm32 there and must not disturb native builds.
export CARGO_TARGET_DIR="${SPARSETT_WEB_TARGET_DIR:-$PWD/web/target}"
# `test` is in the std set because cargo adds it for test builds: build.sh then reuses what
# test.sh compiled instead of rebuilding every crate on a different std.
WEB_CARGO_FLAGS=(--release --locked -p sparsett-web -Zbuild-std=std,panic_abort,test --target wasm32-unknown-unknown)
