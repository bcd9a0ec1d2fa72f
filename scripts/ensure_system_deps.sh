#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: the system libraries the build links against. Video decoding
# goes through the system's FFmpeg (libavformat/libavcodec/libswscale/libavdevice, found with
# pkg-config; bindings generated with libclang). Installs them with apt (Debian/Ubuntu) or Homebrew
# (macOS) when missing. On Linux also Mesa's software Vulkan (lavapipe), so that the GPU backend's
# tests run on machines without a GPU.
if ! pkg-config --exists libavformat libavcodec libswscale libavdevice 2>/dev/null \
   || { [ "$(uname)" = Linux ] && ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; } \
   || ! { ldconfig -p 2>/dev/null | grep -q libclang || ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || [ "$(uname)" = Darwin ]; }; then
  echo "== installing FFmpeg development libraries and libclang"
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      pkg-config clang libclang-dev libavformat-dev libavcodec-dev libavutil-dev libswscale-dev \
      libavdevice-dev libvulkan1 mesa-vulkan-drivers >/dev/null
  elif command -v brew >/dev/null 2>&1; then
    brew install ffmpeg pkg-config llvm
  else
    echo "ERROR: install FFmpeg's development libraries (libavformat, libavcodec, libswscale, libavdevice), pkg-config and libclang" >&2
    exit 1
  fi
fi
