#!/usr/bin/env python3
"""Session-9 GPU A/B on the device machine, one binary: a run submitted in one command buffer
(`KESTREL_GPU_SUBMIT_CHUNK=0`, A) against growing chunks submitted while the rest is encoded (B,
the default: first chunk 4 dispatches, then 9, 19, ...; and C: first chunk 1), alternating rounds, VGG-16,
ResNet-50, MobileNetV2 and EfficientNet-Lite0 in f32 and f16 storage; then one traced run
of each (`KESTREL_GPU_TRACE=1`: encode + submit time against the wait).

Usage: python3 bench/gpu/submit_ab_session9.py KESTREL OUT.json"""
import json, os, statistics, subprocess, sys

k, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as gpu_models
models = gpu_models.export()
variants = [("A", {"KESTREL_GPU_SUBMIT_CHUNK": "0"}), ("B", {}), ("C", {"KESTREL_GPU_SUBMIT_CHUNK": "1"})]
res = {}
for rnd in range(3):
    for name, p in models.items():
        for prec in ["f32", "f16"]:
            for label, env in variants:
                key = f"{name}/{prec}/{label}"
                res.setdefault(key, []).append(gpu_models.bench(k, p, prec, env, runs=30))
                print(key, rnd, res[key][-1], flush=True)
    json.dump(res, open(out, "w"), indent=1)
summary = {k2: statistics.median([t for t in v if isinstance(t, (int, float))] or [float("nan")]) for k2, v in res.items()}
res["summary_median_of_rounds"] = summary
traces = {}
for name, p in models.items():
    for label, env in variants:
        e = dict(os.environ, KESTREL_GPU_TRACE="1", **env)
        cp = subprocess.run([k, "bench", p, "--backend", "gpu", "--runs", "5", "--warmup", "2"], capture_output=True,
                            text=True, env=e)
        traces[f"{name}/{label}"] = [l for l in cp.stderr.splitlines() if l.startswith("gpu run")][-3:]
res["traces"] = traces
json.dump(res, open(out, "w"), indent=1)
for name in models:
    for prec in ["f32", "f16"]:
        a, b, c = (summary[f"{name}/{prec}/{l}"] for l in "ABC")
        print(f"{name:20} {prec:5} A {a:.3f}  B {b:.3f}  C {c:.3f}  B/A {b / a:.3f}  C/A {c / a:.3f}")
for key, t in traces.items():
    print(key, *t, sep="\n  ")
