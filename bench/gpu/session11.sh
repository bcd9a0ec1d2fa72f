#!/usr/bin/env bash
# Session 11 device call: the session-10 defaults against F(4x4) only on 28+ px maps
# (KESTREL_GPU_WINO4_MIN_SIDE=28: 14 px maps have 16 F(4x4) tiles, a quarter of the GEMM's
# 64-wide pixel tile) and the large-tile GEMM's grid chosen per GEMM (KESTREL_GPU_BIG_TILE=auto),
# f32 and f16 on the four models; then the side by side with ncnn on the winner
# (bench/gpu/pick_variant.py) and per-layer profiles.
# Usage (repository root, .gl .devbin .devncnn12 carried): bash bench/gpu/session11.sh OUT
OUT=$1
source bench/gpu/device_setup.sh
ROUNDS=${ROUNDS:-2} timeout 280 python3 bench/gpu/env_ab.py $K $OUT/ab_session11.json \
  "s10:" "w28:KESTREL_GPU_WINO4_MIN_SIDE=28" "auto:KESTREL_GPU_BIG_TILE=auto" \
  "auto28:KESTREL_GPU_BIG_TILE=auto,KESTREL_GPU_WINO4_MIN_SIDE=28" 2>&1 | tail -10
E=$(python3 bench/gpu/pick_variant.py $OUT/ab_session11.json)
echo "final settings: $E" | tee $OUT/final_settings.txt
export $E
timeout 30 $K profile $M/vgg16.onnx --backend gpu --runs 10 > $OUT/vgg16_f32_profile.txt 2>&1
timeout 30 $K profile $M/resnet50.onnx --backend gpu --precision f16 --runs 10 > $OUT/resnet50_f16_profile.txt 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devncnn12/*.whl
mkdir -p $OUT/final
PYTHONPATH=/tmp/site timeout 220 python3 bench/gpu/final_session6.py $K .devncnn12 $OUT/final 2>&1 | tail -26
