#!/usr/bin/env bash
# Session 10 on the device machine, one call: the large-tile GEMM (conv1x1_big.wgsl), Winograd
# F(4x4) and on larger maps (f32), the staged cooperative-matrix GEMM (f16): A/B against the
# session-9 kernels, then the side by side with ncnn's Vulkan backend with the winning settings
# (bench/gpu/pick_variant.py), accuracy checks and per-layer profiles.
# Usage (repository root, .gl .devbin .devncnn12 carried): bash bench/gpu/session10_big.sh OUT
OUT=$1
source bench/gpu/device_setup.sh
PRECS=f32 ROUNDS=${ROUNDS:-1} timeout 200 python3 bench/gpu/env_ab.py $K $OUT/big_ab_f32_session10.json \
  "base:KESTREL_GPU_BIG=0,KESTREL_GPU_WINO4_MIN_SIDE=100000" "b16:KESTREL_GPU_BIG_TILE=16x16,KESTREL_GPU_WINO4_MIN_SIDE=100000" \
  "b16_4:KESTREL_GPU_BIG_TILE=16x16" "b8_4:KESTREL_GPU_BIG_TILE=8x8" \
  "b16w4:KESTREL_GPU_BIG_TILE=16x16,KESTREL_GPU_WINO_MAX_SIDE=224,KESTREL_GPU_WINO4_MIN_SIDE=0" 2>&1 | tail -6
PRECS=f16 ROUNDS=${ROUNDS:-1} timeout 100 python3 bench/gpu/env_ab.py $K $OUT/big_ab_f16_session10.json \
  "base:KESTREL_GPU_COOP_STAGED=0" "staged:" 2>&1 | tail -5
E32=$(python3 bench/gpu/pick_variant.py $OUT/big_ab_f32_session10.json)
E16=$(python3 bench/gpu/pick_variant.py $OUT/big_ab_f16_session10.json)
echo "final settings: $E32 $E16" | tee $OUT/final_settings.txt
export $E32 $E16
timeout 40 $K profile $M/vgg16.onnx --backend gpu --runs 10 > $OUT/vgg16_f32_profile.txt 2>&1
timeout 40 $K profile $M/resnet50.onnx --backend gpu --precision f16 --runs 10 > $OUT/resnet50_f16_profile.txt 2>&1
timeout 40 $K compare $M/resnet50.onnx --backend gpu --precision f16 --random 2 2>&1 | tail -3
timeout 40 $K compare $M/vgg16.onnx --backend gpu --precision f32 --random 2 2>&1 | tail -3
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devncnn12/*.whl
mkdir -p $OUT/final
PYTHONPATH=/tmp/site timeout 230 python3 bench/gpu/final_session6.py $K .devncnn12 $OUT/final 2>&1 | tail -26
