#!/usr/bin/env python3
"""Session-6 GPU measurements on the device machine, one Kestrel binary, alternating rounds:
- residual fusion (Conv -> Add [-> Relu] in the 1x1 GEMM's epilogue) on vs off
  (KESTREL_GPU_FUSE_RESIDUAL=0), f32 and f16, on ResNet-50, MobileNetV2, EfficientNet-Lite0;
- fp16 storage native (SHADER_F16) vs packed in u32 words (KESTREL_GPU_F16=packed);
- the im2col + GEMM baseline vs the automatic kernels on VGG-16 (end to end and per layer);
- per-layer profiles (ResNet-50 f16 and f32) and the graph-split test model.

Usage: python3 bench/gpu/ab_session6.py KESTREL_BIN OUT_DIR [extra modes...]"""
import json, os, subprocess, sys

kestrel, out = sys.argv[1], sys.argv[2]
extra = sys.argv[3:]
os.makedirs(out, exist_ok=True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as gpu_models
models = gpu_models.export()


def bench(p, prec, env_extra, conv="auto", runs=30):
    return gpu_models.bench(kestrel, p, prec, env_extra, conv, runs)


res = {}
modes = {
    "auto": {},
    "nofuse": {"KESTREL_GPU_FUSE_RESIDUAL": "0"},
}
for m in extra:
    k, _, v = m.partition("=")
    modes[m] = {k: v}
for rnd in range(3):
    for name in ["resnet50", "mobilenet_v2", "efficientnet_lite0", "vgg16"]:
        for prec in ["f32", "f16"]:
            for mode, env in modes.items():
                if name == "vgg16" and mode == "nofuse":
                    continue
                key = f"{name}/{prec}/{mode}"
                res.setdefault(key, []).append(bench(models[name], prec, env))
                print(key, rnd, res[key][-1], flush=True)
    for name in ["resnet50", "efficientnet_lite0"]:
        key = f"{name}/f16/packed"
        res.setdefault(key, []).append(bench(models[name], "f16", {"KESTREL_GPU_F16": "packed"}))
        print(key, rnd, res[key][-1], flush=True)
    if rnd == 0:
        key = "vgg16/f32/im2col"
        res.setdefault(key, []).append(bench(models["vgg16"], "f32", {}, conv="im2col", runs=10))
        print(key, rnd, res[key][-1], flush=True)
    json.dump(res, open(f"{out}/ab_session6.json", "w"), indent=1)
for name, prec, conv in [("resnet50", "f16", "auto"), ("resnet50", "f32", "auto"), ("vgg16", "f32", "im2col"),
                         ("vgg16", "f32", "auto")]:
    cp = subprocess.run([kestrel, "profile", models[name], "--backend", "gpu", "--precision", prec, "--runs", "5",
                         "--conv-algo", conv, "--json", f"{out}/{name}_{prec}_{conv}_profile.json"],
                        capture_output=True, text=True)
    if (name, prec) == ("resnet50", "f16"):
        open(f"{out}/{name}_{prec}_{conv}_profile.txt", "w").write(cp.stdout + cp.stderr[-2000:])
cp = subprocess.run([kestrel, "profile", "crates/kestrel/tests/data/gpu_split.onnx", "--backend", "gpu", "--runs", "5"],
                    capture_output=True, text=True)
open(f"{out}/gpu_split_profile.txt", "w").write(cp.stdout + cp.stderr[-2000:])
print("done", flush=True)
