#!/usr/bin/env bash
# Convolutional caching on a real GPU (docs/CACHING.md, "On the GPU"): every frame dense and
# cached back to back (`kestrel cache-eval --backend gpu`), one JSON line per case in
# $OUT/all.jsonl. Prepare the inputs here with
#   python3 bench/caching/prepare_gpu_clips.py ../shared/assets .devcache target/release/kestrel
# then, on the device machine (Vulkan loader and driver set up), with a Kestrel binary at $K:
#   K=.devbin/kestrel C=.devcache OUT=... bash bench/caching/gpu_device.sh
set -uo pipefail
K=${K:?kestrel binary}; C=${C:?prepared inputs}; OUT=${OUT:?output folder}
python3 -c "import lzma;open('/tmp/vgg.onnx','wb').write(lzma.decompress(open('$C/vgg_trunk_pattern.onnx.xz','rb').read()))"
e() { # name model clip threshold [extra...]
  local n=$1 m=$2 v=$3 t=$4; shift 4
  "$K" cache-eval "$m" --video "$C/$v" --max-frames 60 --threshold "$t" --backend gpu --json "$@" \
    > /tmp/r.json 2>> "$OUT/err.log" || echo "FAIL $n" >> "$OUT/err.log"
  python3 -c "import json;t=open('/tmp/r.json').read();j=json.loads(t[t.index('{'):]);j['name']='$n';print(json.dumps(j))" >> "$OUT/all.jsonl" \
    && tail -1 "$OUT/all.jsonl" | python3 -c "import json,sys;j=json.loads(sys.stdin.read());print(j['name'],round(j['latency_ratio_mean'],3),round(j['mean_computed_fraction'],3),j.get('top1_agreement'),j.get('frame_modes'))"
}
M=$C/mobilenet_v2_f16w.onnx; E=assets/models/efficientnet_lite0.onnx; V=/tmp/vgg.onnx; P=assets/models/mtcnn_pnet.onnx
e mnv2_syn_t2 $M synthetic 2; e mnv2_box_t2 $M box 2
e mnv2_syn_t2_forced $M synthetic 2 --dense-above 1; e mnv2_tree_t2_forced $M tree 2 --dense-above 1
e mnv2_tree_t2 $M tree 2
e eff_syn_t2 $E synthetic 2; e eff_box_t2 $E box 2; e eff_tree_t2 $E tree 2
e vgg_syn_t2 $V synthetic 2; e vgg_box_t4 $V box 4; e vgg_tree_t4 $V tree 4
e vgg_syn_t2_forced $V synthetic 2 --dense-above 1
e pnet_syn_t2 $P synthetic 2; e pnet_box_t4 $P box 4
e mnv2_syn_t2_f16 $M synthetic 2 --precision f16; e vgg_syn_t2_f16 $V synthetic 2 --precision f16
# per-frame timings of the GPU stream (change detection vs the region run)
KESTREL_STREAM_TRACE=1 "$K" cache-eval $M --video $C/synthetic --max-frames 12 --threshold 2 --backend gpu --dense-above 1 --json 2>&1 >/dev/null | grep "gpu stream" | tail -4
