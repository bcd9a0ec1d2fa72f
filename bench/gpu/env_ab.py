#!/usr/bin/env python3
"""GPU A/B of environment settings on one binary (device machine): each variant is a label
and environment variables; rounds alternate the variants on every model and precision
(`kestrel bench --backend gpu`, median of 30 runs each), and the summary is the median over
rounds with each variant's ratio to the first.

Usage: python3 bench/gpu/env_ab.py KESTREL OUT.json LABEL:K=V,K=V [LABEL:K=V ...]
(ROUNDS=2, PRECS=f32,f16, MODELS=vgg16,resnet50,mobilenet_v2,efficientnet_lite0 by default;
a variant with no variables is written LABEL: .)"""
import json, os, statistics, sys

k, out = sys.argv[1], sys.argv[2]
variants = []
for spec in sys.argv[3:]:
    label, _, kv = spec.partition(":")
    env = dict(item.split("=", 1) for item in kv.split(",") if item)
    variants.append((label, env))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as gpu_models
models = gpu_models.export()
wanted = os.environ.get("MODELS", "vgg16,resnet50,mobilenet_v2,efficientnet_lite0").split(",")
models = {n: p for n, p in models.items() if n in wanted}
rounds = int(os.environ.get("ROUNDS", "2"))
precs = os.environ.get("PRECS", "f32,f16").split(",")
res = {"variants": {l: e for l, e in variants}, "runs": {}}
for rnd in range(rounds):
    for name, p in models.items():
        for prec in precs:
            for label, env in variants:
                key = f"{name}/{prec}/{label}"
                res["runs"].setdefault(key, []).append(gpu_models.bench(k, p, prec, env, runs=30))
                print(key, rnd, res["runs"][key][-1], flush=True)
        json.dump(res, open(out, "w"), indent=1)
med = {}
for key, v in res["runs"].items():
    t = [x for x in v if isinstance(x, (int, float))]
    med[key] = statistics.median(t) if t else float("nan")
res["median_of_rounds"] = med
json.dump(res, open(out, "w"), indent=1)
base = variants[0][0]
print("model/prec".ljust(28) + "".join(l.rjust(14) for l, _ in variants))
for name in models:
    for prec in precs:
        b = med[f"{name}/{prec}/{base}"]
        cells = "".join(f"{med[f'{name}/{prec}/{l}']:7.3f} ({med[f'{name}/{prec}/{l}'] / b:.2f})".rjust(14)
                        for l, _ in variants)
        print(f"{name}/{prec}".ljust(28) + cells)
