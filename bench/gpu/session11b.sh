#!/usr/bin/env bash
# Session 11, second device call (little device time left, so in order of importance):
# shaders compiled without wgpu's runtime checks (the new default) against with them
# (KESTREL_GPU_SHADER_CHECKS=1) and first layers as im2col + GEMM (KESTREL_GPU_STEM_IM2COL=1),
# f32 and f16, one round, on the new defaults (per-GEMM grid, F(4x4) on 28+ px maps);
# accuracy against the CPU; the side by side with ncnn (one round) and the VGG-16 f32
# profile, both on the A/B's winner.
# Usage (repository root, .gl .devbin .devncnn12 carried): bash bench/gpu/session11b.sh OUT
OUT=$1
source bench/gpu/device_setup.sh
ROUNDS=1 timeout 150 python3 bench/gpu/env_ab.py $K $OUT/checks_ab_session11.json \
  "unchecked:" "checked:KESTREL_GPU_SHADER_CHECKS=1" "stem:KESTREL_GPU_STEM_IM2COL=1" 2>&1 | tail -10
E=$(python3 bench/gpu/pick_variant.py $OUT/checks_ab_session11.json)
echo "final settings: $E" | tee $OUT/final_settings.txt
[ -n "$E" ] && export $E
for m in vgg16:f32 resnet50:f16 mobilenet_v2:f32; do
  timeout 40 $K compare $M/${m%%:*}.onnx --backend gpu --precision ${m##*:} --random 2 2>&1 | tail -2
done 2>&1 | tee $OUT/compare.txt
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devncnn12/*.whl
mkdir -p $OUT/final
ROUNDS=1 PYTHONPATH=/tmp/site timeout 150 python3 bench/gpu/final_session6.py $K .devncnn12 $OUT/final 2>&1 | tail -26
timeout 30 $K profile $M/vgg16.onnx --backend gpu --runs 10 > $OUT/vgg16_f32_profile.txt 2>&1
