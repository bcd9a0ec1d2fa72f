#!/usr/bin/env python3
"""Session-8 GPU A/B on the device machine: two Kestrel binaries (A: scalar input loads in the
1x1/GEMM kernel; B: an experimental build with one vector load per pixel quad, rejected: see
docs/GPU.md, session 8), alternating rounds, VGG-16,
ResNet-50, MobileNetV2 and EfficientNet-Lite0 in f32, f16 storage and f16 arithmetic.

Usage: python3 bench/gpu/vec4_ab_session8.py KESTREL_A KESTREL_B OUT.json"""
import json, os, statistics, sys

a, b, out = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as gpu_models
models = gpu_models.export()
res = {}
for rnd in range(3):
    for name, p in models.items():
        for prec in ["f32", "f16", "f16-arith"]:
            for label, k in [("A", a), ("B", b)]:
                key = f"{name}/{prec}/{label}"
                res.setdefault(key, []).append(gpu_models.bench(k, p, prec, {}, runs=20))
                print(key, rnd, res[key][-1], flush=True)
    json.dump(res, open(out, "w"), indent=1)
summary = {k: statistics.median([t for t in v if isinstance(t, (int, float))] or [float("nan")]) for k, v in res.items()}
res["summary_median_of_rounds"] = summary
json.dump(res, open(out, "w"), indent=1)
for name in models:
    for prec in ["f32", "f16", "f16-arith"]:
        ka, kb = summary[f"{name}/{prec}/A"], summary[f"{name}/{prec}/B"]
        print(f"{name:20} {prec:9} A {ka:.3f}  B {kb:.3f}  B/A {kb / ka:.3f}")
