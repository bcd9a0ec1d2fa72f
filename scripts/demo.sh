#!/usr/bin/env bash
# The main job on a fresh machine: build Kestrel (release) and run the built-in EfficientNet-Lite0
# on the bundled clip (assets/video/cup.mp4) through the threaded video pipeline. Writes per-frame
# JSON lines, a latency chart and a few annotated frames to out/demo/. Extra arguments go to
# `kestrel run` (e.g. `--realtime`, or a model and `--input VIDEO|DIR|/dev/video0`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure_toolchain.sh
source scripts/ensure_system_deps.sh
cargo build --release -p kestrel-cli
mkdir -p out/demo
exec target/release/kestrel run --jsonl out/demo/frames.jsonl --chart out/demo/latency.svg \
  --annotate out/demo/frames --annotate-every 30 "$@"
