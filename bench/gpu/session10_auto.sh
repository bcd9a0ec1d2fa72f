#!/usr/bin/env bash
# Session 10, second device call: the defaults (the first call's winner: 16x16 grid, F(4x4)
# everywhere, Winograd up to 224 px) against the large-tile GEMM's grid chosen per GEMM
# (KESTREL_GPU_BIG_TILE=auto), with F(4x4) everywhere or on 28+ px maps; then the side by side
# with ncnn on the winner (bench/gpu/pick_variant.py) and the VGG-16 f32 profile.
# Usage (repository root, .gl .devbin .devncnn12 carried): bash bench/gpu/session10_auto.sh OUT
OUT=$1
source bench/gpu/device_setup.sh
PRECS=f32 ROUNDS=${ROUNDS:-1} timeout 100 python3 bench/gpu/env_ab.py $K $OUT/auto_ab_f32_session10.json \
  "first:" "auto:KESTREL_GPU_BIG_TILE=auto" "auto28:KESTREL_GPU_BIG_TILE=auto,KESTREL_GPU_WINO4_MIN_SIDE=28" 2>&1 | tail -6
E32=$(python3 bench/gpu/pick_variant.py $OUT/auto_ab_f32_session10.json)
echo "final settings: $E32" | tee $OUT/final_settings.txt
export $E32
timeout 30 $K profile $M/vgg16.onnx --backend gpu --runs 10 > $OUT/vgg16_f32_profile.txt 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devncnn12/*.whl
mkdir -p $OUT/final
PYTHONPATH=/tmp/site timeout 200 python3 bench/gpu/final_session6.py $K .devncnn12 $OUT/final 2>&1 | tail -26
