#!/usr/bin/env bash
# Session 9, second cooperative-matrix kernel (operand tiles loaded straight from the buffers):
# the ResNet-50 f16 profile (which dispatches run it), then its A/B (one round: the device time left was short) and accuracy, f16.
# Usage (repository root, .gl .devbin carried): bash bench/gpu/coop2_device.sh OUT
OUT=$1
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json PYTHONUNBUFFERED=1
K=.devbin/kestrel M=/tmp/kestrel-models
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import sys; sys.path.insert(0, 'bench/gpu'); import models; models.export()"
KESTREL_GPU_COOP=1 timeout 60 $K profile $M/resnet50.onnx --backend gpu --precision f16 --runs 10 > $OUT/r50_f16_coop2_profile.txt 2>&1
grep -c conv1x1_coop $OUT/r50_f16_coop2_profile.txt; grep -iE "error|end-to-end" $OUT/r50_f16_coop2_profile.txt | head -5
ROUNDS=1 PRECS=f16 timeout 150 python3 bench/gpu/coop_ab_session9.py $K $OUT/coop2_ab_session9.json 2>&1 | grep -v "^compare" | tail -8
python3 - $OUT/coop2_ab_session9.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k, v in d.get("compare_f16_vs_cpu_f32", {}).items():
    print(k, v.get("error", "")[:300] if "error" in v else [(o["output"], o["error"]["max_rel"]) for o in v.get("outputs", [])], v.get("classifier", {}).get("top1_agreement"))
PY
