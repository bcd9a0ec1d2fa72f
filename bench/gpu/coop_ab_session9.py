#!/usr/bin/env python3
"""Session-9 GPU A/B on the device machine, one binary: the 1x1 GEMM of native-f16 plans on
cooperative matrices (conv1x1_coop.wgsl, tensor cores; B, `KESTREL_GPU_COOP=1`; it was the
default when this ran, and is opt-in since) against the scalar GEMM (A), f16 storage and f16 arithmetic,
alternating rounds, VGG-16, ResNet-50, MobileNetV2, EfficientNet-Lite0; then the accuracy of
each against the f32 CPU run (`kestrel compare`: real photos for the two real models, seeded
random inputs for the random-weight ones).

Usage: python3 bench/gpu/coop_ab_session9.py KESTREL OUT.json [MOBILENET_V2_REAL.onnx]
(ROUNDS=3 and PRECS=f16,f16-arith by default.)"""
import json, os, statistics, subprocess, sys

k, out = sys.argv[1], sys.argv[2]
real_mnv2 = sys.argv[3] if len(sys.argv) > 3 else None
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as gpu_models
models = gpu_models.export()
variants = [("A", {"KESTREL_GPU_COOP": "0"}), ("B", {"KESTREL_GPU_COOP": "1"})]
res = {}
rounds = int(os.environ.get("ROUNDS", "3"))
precs = os.environ.get("PRECS", "f16,f16-arith").split(",")
for rnd in range(rounds):
    for name, p in models.items():
        for prec in precs:
            for label, env in variants:
                key = f"{name}/{prec}/{label}"
                res.setdefault(key, []).append(gpu_models.bench(k, p, prec, env, runs=30))
                print(key, rnd, res[key][-1], flush=True)
    json.dump(res, open(out, "w"), indent=1)
summary = {k2: statistics.median([t for t in v if isinstance(t, (int, float))] or [float("nan")]) for k2, v in res.items()}
res["summary_median_of_rounds"] = summary
acc = {}
cases = [(n, p, []) for n, p in models.items() if n != "efficientnet_lite0"]
cases.append(("efficientnet_lite0", models["efficientnet_lite0"], ["--input", "assets/photos"]))
if real_mnv2:
    cases.append(("mobilenet_v2_real", real_mnv2, ["--input", "assets/photos"]))
for name, p, extra in cases:
    for label, env in variants:
        e = dict(os.environ, **env)
        cp = subprocess.run([k, "compare", p, "--backend", "gpu", "--precision", "f16", "--json"] + extra,
                            capture_output=True, text=True, env=e)
        try:
            acc[f"{name}/{label}"] = json.loads(cp.stdout)
        except Exception:
            acc[f"{name}/{label}"] = {"error": (cp.stderr or cp.stdout)[-800:]}
        print("compare", name, label, str(acc[f"{name}/{label}"])[:600], flush=True)
res["compare_f16_vs_cpu_f32"] = acc
json.dump(res, open(out, "w"), indent=1)
for name in models:
    for prec in precs:
        a, b = summary[f"{name}/{prec}/A"], summary[f"{name}/{prec}/B"]
        print(f"{name:20} {prec:9} scalar {a:.3f}  coop {b:.3f}  coop/scalar {b / a:.3f}")
