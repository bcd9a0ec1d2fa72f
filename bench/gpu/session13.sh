#!/usr/bin/env bash
# Session 13 device call, ordered so that a short lease still brings back the main figures:
# first the side by side with ncnn's Vulkan backend on the current defaults (one round), the
# accuracy against the CPU and the VGG-16 f32 profile; then, with what time is left, the A/B
# of shader checks and grid settings that session12.sh was written for.
# Usage (repository root, .gl .devbin .devncnn12 carried): bash bench/gpu/session13.sh OUT
OUT=$1
source bench/gpu/device_setup.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devncnn12/*.whl
mkdir -p $OUT/final
ROUNDS=1 PYTHONPATH=/tmp/site timeout 170 python3 bench/gpu/final_session6.py $K .devncnn12 $OUT/final 2>&1 | tail -26
for m in vgg16:f32 resnet50:f16 mobilenet_v2:f32 efficientnet_lite0:f16; do
  p=$M/${m%%:*}.onnx; [ -f $p ] || p=assets/models/${m%%:*}.onnx
  timeout 30 $K compare $p --backend gpu --precision ${m##*:} --random 2 2>&1 | tail -2
done 2>&1 | tee $OUT/compare.txt
timeout 30 $K profile $M/vgg16.onnx --backend gpu --runs 10 > $OUT/vgg16_f32_profile.txt 2>&1
tail -5 $OUT/vgg16_f32_profile.txt
ROUNDS=1 timeout 170 python3 bench/gpu/env_ab.py $K $OUT/ab_session13.json \
  "unchecked:" "checked:KESTREL_GPU_SHADER_CHECKS=1" \
  "wsplit4k:KESTREL_GPU_WINO_SPLITK_TARGET=4096" \
  "staged256:KESTREL_GPU_COOP_STAGED=1,KESTREL_GPU_COOP_STAGED_MIN_K=256" 2>&1 | tail -8
