#!/usr/bin/env bash
# Session 10: the large-tile GEMM (conv1x1_big.wgsl) on the device machine: A/B of its thread
# grids and of Winograd on larger maps, then VGG-16 f32 per-layer profiles.
# Usage (repository root, .gl .devbin carried): bash bench/gpu/session10_big.sh OUT
OUT=$1
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json PYTHONUNBUFFERED=1
K=.devbin/kestrel M=/tmp/kestrel-models
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import sys; sys.path.insert(0, 'bench/gpu'); import models; models.export()"
for v in "base:KESTREL_GPU_BIG=0" "b16:KESTREL_GPU_BIG_TILE=16x16" "b16w:KESTREL_GPU_BIG_TILE=16x16,KESTREL_GPU_WINO_MAX_SIDE=224"; do
  label=${v%%:*}; envs=${v#*:}
  env $(echo $envs | tr , ' ') timeout 60 $K profile $M/vgg16.onnx --backend gpu --runs 10 --json > $OUT/vgg16_f32_profile_$label.json 2> $OUT/vgg16_f32_profile_$label.err
done
ROUNDS=${ROUNDS:-1} timeout 400 python3 bench/gpu/env_ab.py $K $OUT/big_ab_session10.json \
  "base:KESTREL_GPU_BIG=0" "b16:KESTREL_GPU_BIG_TILE=16x16" "b16x8:KESTREL_GPU_BIG_TILE=16x8" \
  "b8:KESTREL_GPU_BIG_TILE=8x8" "b16w:KESTREL_GPU_BIG_TILE=16x16,KESTREL_GPU_WINO_MAX_SIDE=224" \
  "b8w:KESTREL_GPU_BIG_TILE=8x8,KESTREL_GPU_WINO_MAX_SIDE=224" 2>&1 | tail -12
