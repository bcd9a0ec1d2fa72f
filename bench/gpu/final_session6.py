#!/usr/bin/env python3
"""Session-6 side-by-side GPU run on the device machine: Kestrel (f32, f16 storage, fp16
arithmetic) and ncnn's Vulkan backend (fp32, fp16) on VGG-16, ResNet-50, MobileNetV2 and
EfficientNet-Lite0, three interleaved rounds (Kestrel's four models, then ncnn's), plus
Kestrel's cold (empty pipeline cache) and warm (second process) first-run times.

Usage: python3 bench/gpu/final_session6.py KESTREL_BIN NCNN_PARAM_DIR OUT_DIR
(ncnn importable: the wheel unpacked on PYTHONPATH)."""
import json, os, shutil, statistics, subprocess, sys

kestrel, params, out = sys.argv[1], sys.argv[2], sys.argv[3]
here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(out, exist_ok=True)
sys.path.insert(0, here)
import models as gpu_models
models = gpu_models.export()

def kbench(p, prec, env=None):
    cp = subprocess.run([kestrel, "bench", p, "--backend", "gpu", "--precision", prec, "--runs", "30",
                         "--warmup", "5", "--json"], capture_output=True, text=True, env=env)
    if cp.returncode != 0:
        return {"error": cp.stderr[-600:]}
    return json.loads(cp.stdout)


res = {"kestrel": {}, "ncnn": {}, "start": {}}
for rnd in range(int(os.environ.get("ROUNDS", "3"))):
    for name, p in models.items():
        for prec in ["f32", "f16", "f16-arith"]:
            b = kbench(p, prec)
            res["kestrel"].setdefault(f"{name}/{prec}", []).append(b.get("median_ms", b))
            print("kestrel", name, prec, rnd, b.get("median_ms", b), flush=True)
    nj = f"/tmp/ncnn_{rnd}.json"
    cp = subprocess.run([sys.executable, os.path.join(here, "ncnn_vulkan.py"), params, nj],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        print("ncnn failed", cp.stderr[-1500:], flush=True)
    else:
        d = json.load(open(nj))
        res["ncnn_version"] = d.get("ncnn")
        for name, row in d["models"].items():
            for prec, r in row.items():
                res["ncnn"].setdefault(f"{name}/{prec}", []).append(r.get("median_ms"))
                print("ncnn", name, prec, rnd, r.get("median_ms"), flush=True)
    json.dump(res, open(f"{out}/final_session6.json", "w"), indent=1)
# cold start (empty pipeline cache) and warm start (second process)
for name, p in models.items():
    cache = f"/tmp/kcache_{name}"
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    cold = kbench(p, "f32", env)
    warm = kbench(p, "f32", env)
    res["start"][name] = {"cold_first_run_ms": cold.get("first_run_ms"), "warm_first_run_ms": warm.get("first_run_ms")}
    print("start", name, res["start"][name], flush=True)
summary = {}
for eng in ["kestrel", "ncnn"]:
    for k, v in res[eng].items():
        v = [t for t in v if isinstance(t, (int, float))]
        if v:
            summary[f"{eng}/{k}"] = statistics.median(v)
res["summary_median_of_rounds"] = summary
json.dump(res, open(f"{out}/final_session6.json", "w"), indent=1)
for k, v in sorted(summary.items()):
    print(f"{k:40} {v:.3f}")
