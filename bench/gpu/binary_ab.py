#!/usr/bin/env python3
"""A/B of two Kestrel binaries on the device machine (e.g. a shader change), alternating rounds,
with optional environment settings per arm, on ResNet-50, VGG-16, MobileNetV2 and
EfficientNet-Lite0 in f32 and f16.

Usage: python3 bench/gpu/binary_ab.py OUT_DIR NAME=BIN[:ENV=V,ENV=V] ...
(AB_PRECISIONS=f32,f16,f16-arith picks the precisions; f32,f16 by default)"""
import json, os, statistics, subprocess, sys

out = sys.argv[1]
arms = {}
for a in sys.argv[2:]:
    name, _, rest = a.partition("=")
    binary, _, envs = rest.partition(":")
    arms[name] = (binary, dict(e.split("=", 1) for e in envs.split(",") if e))
os.makedirs(out, exist_ok=True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as gpu_models
models = gpu_models.export(("resnet50", "vgg16", "mobilenet_v2"))
res = {}
for rnd in range(3):
    for name, p in models.items():
        for prec in os.environ.get("AB_PRECISIONS", "f32,f16").split(","):
            for arm, (binary, env) in arms.items():
                cp = subprocess.run([binary, "bench", p, "--backend", "gpu", "--precision", prec, "--runs", "30",
                                     "--warmup", "3", "--json"], capture_output=True, text=True,
                                    env=dict(os.environ, **env))
                v = json.loads(cp.stdout)["median_ms"] if cp.returncode == 0 else None
                res.setdefault(f"{name}/{prec}/{arm}", []).append(v)
    json.dump(res, open(f"{out}/binary_ab.json", "w"), indent=1)
for k, v in res.items():
    v = [t for t in v if t]
    print(f"{k:40} {statistics.median(v):.3f}  {['%.2f' % t for t in v]}", flush=True)
