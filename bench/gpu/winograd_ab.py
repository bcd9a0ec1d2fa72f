#!/usr/bin/env python3
"""A/B of the GPU Winograd F(2x2,3x3) kernel on the device machine: the same Kestrel binary with
the automatic kernel choice (Winograd on 3x3 stride-1 layers of >= 64 channels) and with
KESTREL_GPU_CONV=nowinograd (the tiled direct kernels), alternating, f32 and f16 storage, on
VGG-16 and ResNet-50 (torchvision architectures, random weights) and the bundled models.

Usage: python3 bench/gpu/winograd_ab.py KESTREL_BIN OUT_DIR"""
import json, os, subprocess, sys

kestrel, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
mdir = "/tmp/kestrel-models"
os.makedirs(mdir, exist_ok=True)
import torch, torchvision
x = torch.randn(1, 3, 224, 224)
models = {}
for name, ctor in {"vgg16": torchvision.models.vgg16, "resnet50": torchvision.models.resnet50}.items():
    p = f"{mdir}/{name}.onnx"
    if not os.path.exists(p):
        torch.onnx.export(ctor(weights=None).eval(), x, p, opset_version=13, input_names=["input"],
                          output_names=["output"], dynamo=False)
    models[name] = p
res = {}
for name, p in models.items():
    for prec in ["f32", "f16"]:
        for rnd in range(3):
            for mode in ["auto", "nowinograd"]:
                env = dict(os.environ)
                if mode != "auto":
                    env["KESTREL_GPU_CONV"] = mode
                cp = subprocess.run([kestrel, "bench", p, "--backend", "gpu", "--precision", prec, "--runs", "30",
                                     "--warmup", "3", "--json"], capture_output=True, text=True, env=env)
                key = f"{name}/{prec}/{mode}"
                if cp.returncode != 0:
                    res.setdefault(key, []).append({"error": cp.stderr[-1000:]})
                    continue
                b = json.loads(cp.stdout)
                res.setdefault(key, []).append(b["median_ms"])
                print(key, rnd, b["median_ms"], flush=True)
    json.dump(res, open(f"{out}/winograd_ab.json", "w"), indent=1)
# per-layer profile of VGG-16 with Winograd (f32)
cp = subprocess.run([kestrel, "profile", models["vgg16"], "--backend", "gpu", "--runs", "5", "--json",
                     f"{out}/vgg16_wino_profile.json"], capture_output=True, text=True)
open(f"{out}/vgg16_wino_profile.txt", "w").write(cp.stdout + cp.stderr)
print("done", flush=True)
