#!/usr/bin/env python3
"""Session-7 GPU A/B on the device machine, one Kestrel binary, alternating rounds: the 3x3
convolution kernels of VGG-16 and ResNet-50 now that the GEMM is software-pipelined —
automatic choice (direct tiled kernel on large maps, Winograd F(2x2,3x3) on <= 56 px maps),
Winograd on every 3x3 stride-1 layer (KESTREL_GPU_CONV=winograd), im2col + GEMM everywhere
(--conv-algo im2col); f32 and f16 storage; plus per-layer profiles of VGG-16.

Usage: python3 bench/gpu/conv_ab_session7.py KESTREL_BIN OUT_DIR"""
import json, os, subprocess, sys

kestrel, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models as gpu_models
models = gpu_models.export(names=("vgg16", "resnet50"), with_efficientnet=False)


def bench(p, prec, env_extra, conv="auto", runs=30):
    return gpu_models.bench(kestrel, p, prec, env_extra, conv, runs)


modes = {"auto": ({}, "auto"), "winograd": ({"KESTREL_GPU_CONV": "winograd"}, "auto"), "im2col": ({}, "im2col")}
res = {}
for rnd in range(3):
    for name in ["vgg16", "resnet50"]:
        for prec in ["f32", "f16"]:
            for mode, (env, conv) in modes.items():
                key = f"{name}/{prec}/{mode}"
                res.setdefault(key, []).append(bench(models[name], prec, env, conv, runs=20))
                print(key, rnd, res[key][-1], flush=True)
    json.dump(res, open(f"{out}/conv_ab_session7.json", "w"), indent=1)
for mode in ["auto", "winograd", "im2col"]:
    env, conv = modes[mode]
    e = dict(os.environ)
    e.update(env)
    subprocess.run([kestrel, "profile", models["vgg16"], "--backend", "gpu", "--runs", "5", "--conv-algo", conv,
                    "--json", f"{out}/vgg16_f32_{mode}_profile.json"], capture_output=True, text=True, env=e)
print("done", flush=True)
