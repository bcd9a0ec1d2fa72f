#!/usr/bin/env bash
# Convolutional caching on the bundled clips: every frame run densely and cached back to back
# (`kestrel cache-eval`), one JSON summary per model/clip/threshold, plus a 1000-frame drift run
# with its chart, and onnxruntime's dense latency on the same models. Usage:
#   bash bench/caching/run.sh OUT_DIR [THREADS]
set -euo pipefail
out=${1:?output folder}; threads=${2:-2}
mkdir -p "$out"
K=${KESTREL:-target/release/kestrel}
A=${ASSETS:-../shared/assets}
C=$A/models/classifiers; D=$A/models/detectors; V=$A/video
eval1() { # name model clip frames threshold [extra...]
  local name=$1 model=$2 clip=$3 n=$4 t=$5; shift 5
  "$K" cache-eval "$model" --video "$clip" --max-frames "$n" --threshold "$t" --threads "$threads" \
    --json "$@" > "$out/$name.json"
  python3 -c "import json,sys; j=json.load(open('$out/$name.json')); print('$name', round(j['latency_ratio_mean'],3), round(j['mean_computed_fraction'],3), j['top1_agreement'], j['frame_modes'])"
}
for clip in box cup; do
  for t in 2 8; do
    eval1 mobilenetv2_${clip}_t$t $C/mobilenet_v2_torchvision.onnx $V/$clip.mp4 150 $t
    eval1 effnet_${clip}_t$t $C/efficientnet_lite0.onnx $V/$clip.mp4 150 $t
  done
  eval1 pnet_${clip}_t4 $D/mtcnn_pnet.onnx $V/$clip.mp4 150 4
  eval1 pnet640_${clip}_t8 $D/mtcnn_pnet.onnx $V/$clip.mp4 150 8 --size 640x480
  eval1 vgg_${clip}_t4 $C/vgg16_imagenet_conv_trunk.onnx $V/$clip.mp4 40 4
done
eval1 mobilenetv2_tree_t2 $C/mobilenet_v2_torchvision.onnx $V/tree.avi 150 2
eval1 effnet_tree_t2 $C/efficientnet_lite0.onnx $V/tree.avi 150 2
eval1 pnet_tree_t4 $D/mtcnn_pnet.onnx $V/tree.avi 150 4
eval1 pnet640_tree_t8 $D/mtcnn_pnet.onnx $V/tree.avi 150 8 --size 640x480
eval1 vgg_tree_t4 $C/vgg16_imagenet_conv_trunk.onnx $V/tree.avi 40 4
# an ideal static camera (no noise): what caching saves when its premise holds
python3 "$(dirname "$0")/make_synthetic.py" $A/photos/dog.jpg $A/photos/orange.jpg "$out/synthetic" 120
eval1 mobilenetv2_synthetic_t2 $C/mobilenet_v2_torchvision.onnx "$out/synthetic" 120 2
eval1 effnet_synthetic_t2 $C/efficientnet_lite0.onnx "$out/synthetic" 120 2
eval1 pnet640_synthetic_t2 $D/mtcnn_pnet.onnx "$out/synthetic" 120 2 --size 640x480
eval1 vgg_synthetic_t2 $C/vgg16_imagenet_conv_trunk.onnx "$out/synthetic" 40 2
eval1 mobilenetv2_synthetic_t2_nofallback $C/mobilenet_v2_torchvision.onnx "$out/synthetic" 120 2 --dense-above 1
# the same, caching forced on every frame (no dense fallback): what region reuse costs
eval1 mobilenetv2_box_t8_nofallback $C/mobilenet_v2_torchvision.onnx $V/box.mp4 150 8 --dense-above 1
eval1 mobilenetv2_tree_t2_nofallback $C/mobilenet_v2_torchvision.onnx $V/tree.avi 150 2 --dense-above 1
# 1000 frames (box.mp4 played forwards and backwards): the error must not grow
"$K" cache-eval $C/mobilenet_v2_torchvision.onnx --video $V/box.mp4 --max-frames 1000 --loop \
  --threshold 2 --threads "$threads" --dense-above 1 --json --jsonl "$out/drift_1000.jsonl" \
  --chart "$out/drift_1000.svg" > "$out/drift_1000.json"
python3 - "$out" "$threads" "$C" "$D" <<'PY'
import json, sys, time, numpy as np, onnxruntime as ort
out, threads, C, D = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
res = {}
for name, f, hw in [("mobilenetv2", f"{C}/mobilenet_v2_torchvision.onnx", 224),
                    ("effnet", f"{C}/efficientnet_lite0.onnx", 224),
                    ("vgg", f"{C}/vgg16_imagenet_conv_trunk.onnx", 224),
                    ("pnet", f"{D}/mtcnn_pnet.onnx", 224),
                    ("pnet640", f"{D}/mtcnn_pnet.onnx", (480, 640))]:
    so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    s = ort.InferenceSession(f, so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    h, w = hw if isinstance(hw, tuple) else (hw, hw)
    shape = [1, 3, h, w]
    x = np.random.rand(*shape).astype(np.float32)
    for _ in range(3): s.run(None, {i.name: x})
    t = []
    for _ in range(40 if name == "vgg" else 150):
        t0 = time.perf_counter(); s.run(None, {i.name: x}); t.append((time.perf_counter() - t0) * 1e3)
    res[name] = {"mean": float(np.mean(t)), "p90": float(np.percentile(t, 90)), "shape": shape}
    print("onnxruntime", name, res[name])
json.dump(res, open(f"{out}/onnxruntime_dense.json", "w"), indent=1)
PY
