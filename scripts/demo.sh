#!/usr/bin/env bash
# The main job on a fresh machine: build Kestrel (release) and classify the bundled photos with the
# built-in EfficientNet-Lite0. Extra arguments go to `kestrel run`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure_toolchain.sh
cargo build --release -p kestrel-cli
exec target/release/kestrel run "$@"
