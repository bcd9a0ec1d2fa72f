#!/usr/bin/env python3
"""Sweep of the GPU split-K knobs (KESTREL_GPU_SPLITK_TARGET, KESTREL_GPU_SPLITK_MIN_K) on the
device machine: medians of alternating rounds on ResNet-50, VGG-16 and MobileNetV2 (f32, f16).

Usage: python3 bench/gpu/splitk_sweep.py KESTREL_BIN OUT_DIR"""
import json, os, statistics, subprocess, sys

kestrel, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as gpu_models
models = gpu_models.export(("resnet50", "vgg16", "mobilenet_v2"), with_efficientnet=False)
configs = [(256, 128), (512, 128), (1024, 128), (512, 64), (1024, 64), (2048, 64)]
res = {}
for rnd in range(2):
    for name, p in models.items():
        for prec in ["f32", "f16"]:
            for t, k in configs:
                env = dict(os.environ, KESTREL_GPU_SPLITK_TARGET=str(t), KESTREL_GPU_SPLITK_MIN_K=str(k))
                cp = subprocess.run([kestrel, "bench", p, "--backend", "gpu", "--precision", prec, "--runs", "30",
                                     "--warmup", "3", "--json"], capture_output=True, text=True, env=env)
                key = f"{name}/{prec}/T{t}/K{k}"
                v = json.loads(cp.stdout)["median_ms"] if cp.returncode == 0 else None
                res.setdefault(key, []).append(v)
    json.dump(res, open(f"{out}/splitk_sweep.json", "w"), indent=1)
for k, v in res.items():
    v = [t for t in v if t]
    print(f"{k:36} {statistics.median(v):.3f}", flush=True)
