#!/usr/bin/env bash
# Installs what sparsett needs on Debian 12 without a GPU: Mesa's lavapipe (a Vulkan CPU adapter).
# Idempotent: does nothing when everything is present. Needs root (or sudo).
set -euo pipefail
pkgs=(mesa-vulkan-drivers libvulkan1)
if [ "${SPARSETT_CROSS_CHECK:-0}" = 1 ]; then
  # Debian's rustc-web + std sources type-check the crate for macOS (Metal) and Windows (DX12).
  pkgs+=(rustc-web cargo-web rust-web-src)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust 1.87 or newer (https://rustup.rs)"; exit 1; }
