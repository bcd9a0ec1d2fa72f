#!/usr/bin/env bash
# Session 12 device call: A/B of the shader and grid settings not yet measured on a real GPU
# (shaders compiled without wgpu's runtime checks, the default since session 11, against with
# them; more Winograd split-K, alone and with GEMM grids refused below 1024 workgroups; the staged
# cooperative GEMM on long sums), f32 and f16, one round; then, on the A/B's winner, the side
# by side with ncnn (one round), accuracy against the CPU and the VGG-16 f32 profile.
# Usage (repository root, .gl .devbin .devncnn12 carried): bash bench/gpu/session12.sh OUT
OUT=$1
source bench/gpu/device_setup.sh
ROUNDS=1 timeout 200 python3 bench/gpu/env_ab.py $K $OUT/ab_session12.json \
  "unchecked:" "checked:KESTREL_GPU_SHADER_CHECKS=1" \
  "wsplit4k:KESTREL_GPU_WINO_SPLITK_TARGET=4096" \
  "wsplit4k_bigmin1k:KESTREL_GPU_WINO_SPLITK_TARGET=4096,KESTREL_GPU_BIG_MIN_WG=1024" \
  "staged256:KESTREL_GPU_COOP_STAGED=1,KESTREL_GPU_COOP_STAGED_MIN_K=256" 2>&1 | tail -8
E=$(python3 bench/gpu/pick_variant.py $OUT/ab_session12.json 2>$OUT/pick.txt)
cat $OUT/pick.txt
echo "final settings: $E" | tee $OUT/final_settings.txt
[ -n "$E" ] && export $E
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devncnn12/*.whl
mkdir -p $OUT/final
ROUNDS=1 PYTHONPATH=/tmp/site timeout 150 python3 bench/gpu/final_session6.py $K .devncnn12 $OUT/final 2>&1 | tail -26
for m in vgg16:f32 resnet50:f16 mobilenet_v2:f32; do
  timeout 30 $K compare $M/${m%%:*}.onnx --backend gpu --precision ${m##*:} --random 2 2>&1 | tail -2
done 2>&1 | tee $OUT/compare.txt
timeout 30 $K profile $M/vgg16.onnx --backend gpu --runs 10 > $OUT/vgg16_f32_profile.txt 2>&1
