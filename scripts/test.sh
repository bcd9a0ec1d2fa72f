#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what it needs: the Rust
# toolchain if missing, and onnx/onnxruntime/numpy from PyPI into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure_toolchain.sh
source scripts/ensure_system_deps.sh
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start ))s] $*"; }

step "python tools (onnx 1.23 for the node tests, onnxruntime for model comparison)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv 2>/dev/null || { rm -rf .venv; python3 -m pip install --quiet virtualenv && python3 -m virtualenv -q .venv; }
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check 'onnx==1.23.2' onnxruntime numpy
PY=.venv/bin/python

step "ONNX backend node test data for the claimed ops"
$PY scripts/gen_onnx_node_tests.py data/onnx-node 2>/dev/null

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings

step "unit, integration and ONNX node tests"
KESTREL_REQUIRE_NODE_TESTS=1 KESTREL_REQUIRE_GPU=1 cargo test --workspace --release -- --nocapture 2>&1 | tee /tmp/kestrel-test.log | grep -E "^test |test result|passing / selected|^  [A-Z][A-Za-z]+ +[0-9]+ / |^total:" || true
grep -q "test result: FAILED" /tmp/kestrel-test.log && { grep -B5 -A30 "panicked" /tmp/kestrel-test.log | head -80; exit 1; }
grep -q "test result" /tmp/kestrel-test.log || { tail -40 /tmp/kestrel-test.log; exit 1; }

step "GPU large-tile GEMM on the other thread grids and per-GEMM grids (lavapipe)"
for grid in 16x16 16x8 8x16 8x8; do
  KESTREL_REQUIRE_GPU=1 KESTREL_GPU_BIG_TILE=$grid cargo test -p kestrel --release --quiet --test gpu_big_gemm
done

step "GPU: first layers as im2col + GEMM (opt-in), and shaders with wgpu's runtime checks on (lavapipe)"
KESTREL_REQUIRE_GPU=1 KESTREL_GPU_STEM_IM2COL=1 cargo test -p kestrel --release --quiet --test gpu -- bundled_models
KESTREL_REQUIRE_GPU=1 KESTREL_GPU_SHADER_CHECKS=1 cargo test -p kestrel --release --quiet --test gpu_tiled

step "CPU kernels on every SIMD path this machine has (portable, avx2)"
KESTREL_SIMD=portable cargo test -p kestrel-cpu --release --quiet
KESTREL_SIMD=avx2 cargo test -p kestrel-cpu --release --quiet
# the AVX-512 Winograd transforms of both kinds on every shape (auto picks by map width)
KESTREL_WINO_TRANSFORMS=rows cargo test -p kestrel-cpu --release --quiet --test kernels_vs_reference
KESTREL_WINO_TRANSFORMS=gather cargo test -p kestrel-cpu --release --quiet --test kernels_vs_reference

step "CPU kernel tests for aarch64 (phones), cross-compiled and run under qemu-user"
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static; } >/dev/null 2>&1 || true
fi
if command -v rustup >/dev/null; then rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true; fi
if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null \
   && rustc --print target-libdir --target aarch64-unknown-linux-gnu >/dev/null 2>&1 \
   && [ -d "$(rustc --print target-libdir --target aarch64-unknown-linux-gnu)" ]; then
  cargo test -p kestrel-cpu --release --target aarch64-unknown-linux-gnu --quiet
else
  echo "WARNING: aarch64 cross tools could not be installed here (needs apt and rustup); aarch64 kernel tests NOT run"
fi

step "whole models against onnxruntime (full tensors; bundled models, plus ../shared/assets when present)"
$PY scripts/compare_ort.py --kestrel target/release/kestrel

step "cost model against an independent count (parameters and MACs per model)"
$PY scripts/check_costs.py --kestrel target/release/kestrel

step "low-rank compressed models run in onnxruntime and agree with Kestrel"
$PY scripts/check_compressed_ort.py --kestrel target/release/kestrel

step "fp16: converted models run in onnxruntime, agree with Kestrel; f16 storage keeps top-1 on the photos"
$PY scripts/check_fp16.py --kestrel target/release/kestrel

step "caching: cached vs dense frame by frame on the bundled clip (CLI path; exact at threshold 0)"
target/release/kestrel cache-eval assets/models/efficientnet_lite0.onnx --video assets/video/cup.mp4 \
  --max-frames 12 --threshold 0 --dense-above 1 --json > target/cache-eval.json
$PY - <<'PY'
import json
j = json.load(open("target/cache-eval.json"))
assert j["top1_agreement"] == 1.0 and j["max_rel_error"] < 2e-5, j
print("cache-eval: 12 frames exact, computed", round(j["mean_computed_fraction"], 3))
PY

step "caching on the GPU (lavapipe): region runs exact at threshold 0; the run command's JSONL"
target/release/kestrel cache-eval assets/models/efficientnet_lite0.onnx --video assets/video/cup.mp4 \
  --max-frames 4 --threshold 0 --dense-above 1 --backend gpu --json > target/cache-eval-gpu.json
target/release/kestrel run assets/models/efficientnet_lite0.onnx --input assets/video/cup.mp4 --stream \
  --cache on --cache-dense-above 1 --backend gpu --max-frames 4 --jsonl target/cache-gpu.jsonl > /dev/null
$PY - <<'PY'
import json
j = json.load(open("target/cache-eval-gpu.json"))
assert j["max_abs_error"] == 0.0 and j["frame_modes"].get("cached", 0) == 3, j
lines = [json.loads(l) for l in open("target/cache-gpu.jsonl")]
assert len(lines) == 4, lines
for i, l in enumerate(lines):
    assert l["frame"] == i and l["latency_ms"] > 0 and 0.0 <= l["computed_fraction"] <= 1.0, l
assert [l["cache"]["mode"] for l in lines] == ["rebuild", "cached", "cached", "cached"], lines
print("GPU cache-eval: 4 frames bit-exact, computed", round(j["mean_computed_fraction"], 3),
      "; run --jsonl:", [round(l["computed_fraction"], 3) for l in lines])
PY

step "caching: tune-cache (input and per-layer thresholds) then cache-eval with the result"
target/release/kestrel tune-cache assets/models/efficientnet_lite0.onnx --video assets/video/cup.mp4 \
  --max-frames 10 --save target/tuned.json --json > target/tune-cache.json
target/release/kestrel cache-eval assets/models/efficientnet_lite0.onnx --video assets/video/cup.mp4 \
  --max-frames 10 --cache-tuning target/tuned.json --json > target/cache-eval-tuned.json
$PY - <<'PY'
import json
t = json.load(open("target/tune-cache.json"))
saved = json.load(open("target/tuned.json"))
assert t["tuned"] == saved and t["per_layer_trials"], t
e = json.load(open("target/cache-eval-tuned.json"))
assert e["top1_agreement"] >= 0.9, e
print("tune-cache: input", saved["threshold_levels"], "levels,", len(saved["layer_levels_by_node"]),
      "raised layers; cache-eval with it: agreement", e["top1_agreement"], "computed", round(e["mean_computed_fraction"], 3))
PY

step "main job (built-in model on the bundled clip)"
target/release/kestrel run --chart target/main-job.svg

step "all tests passed"
