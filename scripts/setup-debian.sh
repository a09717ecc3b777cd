#!/usr/bin/env bash
# Installs what sparsett needs on Debian 12 without a GPU: Mesa's lavapipe (a Vulkan CPU adapter)
# and ffmpeg (video files other than image folders and .y4m).
# Idempotent: does nothing when everything is present. Needs root (or sudo).
set -euo pipefail
pkgs=(mesa-vulkan-drivers libvulkan1 ffmpeg)
# The --show window tests: a virtual X server, a key sender, and the X11 libraries winit loads at
# run time.
pkgs+=(xvfb xauth xdotool libxkbcommon-x11-0 libx11-xcb1 libxcursor1 libxrandr2 libxi6)
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
