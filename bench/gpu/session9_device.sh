#!/usr/bin/env bash
# Session 9 on the device machine, one call: the cooperative-matrix GEMM checked (ResNet-50 f16
# profile, its dispatches named conv1x1_coop), its A/B and accuracy (coop_ab_session9.py), then
# the final side by side with ncnn's Vulkan backend (final_session6.py).
# Usage (repository root, .gl .devbin .devncnn12 carried): bash bench/gpu/session9_device.sh OUT
OUT=$1
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devncnn12/*.whl
export PYTHONPATH=/tmp/site
K=.devbin/kestrel M=/tmp/kestrel-models
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import sys; sys.path.insert(0, 'bench/gpu'); import models; models.export()"
timeout 120 $K profile $M/resnet50.onnx --backend gpu --precision f16 --runs 10 > $OUT/r50_f16_profile.txt 2>&1
grep -c conv1x1_coop $OUT/r50_f16_profile.txt; grep -iE "error|end-to-end" $OUT/r50_f16_profile.txt | head -5
timeout 120 $K compare $M/resnet50.onnx --backend gpu --precision f16 --random 2 2>&1 | tail -6
timeout 300 python3 bench/gpu/coop_ab_session9.py $K $OUT/coop_ab_session9.json 2>&1 | tail -12
mkdir -p $OUT/final
timeout 240 python3 bench/gpu/final_session6.py $K .devncnn12 $OUT/final 2>&1 | tail -26
