#!/usr/bin/env bash
# Session 10 on the device machine: the large-tile GEMM (conv1x1_big.wgsl) and the staged
# cooperative-matrix GEMM (planes not multiples of 8): per-layer profiles, then A/B of the thread
# grids, of Winograd on larger maps (f32) and of the staged kernel (f16).
# Usage (repository root, .gl .devbin carried): bash bench/gpu/session10_big.sh OUT
OUT=$1
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json PYTHONUNBUFFERED=1
K=.devbin/kestrel M=/tmp/kestrel-models
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import sys; sys.path.insert(0, 'bench/gpu'); import models; models.export()"
prof() { # label model precision env...
  local label=$1 model=$2 prec=$3; shift 3
  env "$@" timeout 60 $K profile $M/$model.onnx --backend gpu --precision $prec --runs 10 > $OUT/${model}_${prec}_profile_$label.txt 2>&1
  grep -iE "error|panick" $OUT/${model}_${prec}_profile_$label.txt | head -3
}
prof base vgg16 f32 KESTREL_GPU_BIG=0 KESTREL_GPU_WINO4_MIN_SIDE=100000
prof b16 vgg16 f32 KESTREL_GPU_BIG_TILE=16x16 KESTREL_GPU_WINO4_MIN_SIDE=100000
prof b16w4 vgg16 f32 KESTREL_GPU_BIG_TILE=16x16 KESTREL_GPU_WINO_MAX_SIDE=224 KESTREL_GPU_WINO4_MIN_SIDE=0
prof staged resnet50 f16 KESTREL_GPU_COOP_STAGED=1
PRECS=f32 ROUNDS=${ROUNDS:-1} timeout 250 python3 bench/gpu/env_ab.py $K $OUT/big_ab_f32_session10.json \
  "base:KESTREL_GPU_BIG=0,KESTREL_GPU_WINO4_MIN_SIDE=100000" "b16:KESTREL_GPU_BIG_TILE=16x16,KESTREL_GPU_WINO4_MIN_SIDE=100000" \
  "b8:KESTREL_GPU_BIG_TILE=8x8,KESTREL_GPU_WINO4_MIN_SIDE=100000" \
  "b16w4:KESTREL_GPU_BIG_TILE=16x16,KESTREL_GPU_WINO_MAX_SIDE=224,KESTREL_GPU_WINO4_MIN_SIDE=0" \
  "b16_4:KESTREL_GPU_BIG_TILE=16x16" "b8_4:KESTREL_GPU_BIG_TILE=8x8" 2>&1 | tail -6
PRECS=f16 ROUNDS=${ROUNDS:-1} timeout 150 python3 bench/gpu/env_ab.py $K $OUT/big_ab_f16_session10.json \
  "base:KESTREL_GPU_BIG=0,KESTREL_GPU_COOP_STAGED=0" "staged:KESTREL_GPU_BIG_TILE=16x16" 2>&1 | tail -5
# accuracy of the staged cooperative-matrix GEMM (f16) and of the big GEMM (f32) against the CPU
timeout 60 $K compare $M/resnet50.onnx --backend gpu --precision f16 --random 2 2>&1 | tail -4
timeout 60 $K compare $M/vgg16.onnx --backend gpu --precision f32 --random 2 2>&1 | tail -4
# the side by side with ncnn's Vulkan backend on the defaults (when its wheel is carried)
if ls .devncnn12/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devncnn12/*.whl
  mkdir -p $OUT/final
  PYTHONPATH=/tmp/site timeout 280 python3 bench/gpu/final_session6.py $K .devncnn12 $OUT/final 2>&1 | tail -26
fi
