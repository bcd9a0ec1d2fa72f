#!/usr/bin/env python3
"""GPU benchmark run on the device machine (an NVIDIA H200 here): Kestrel's wgpu backend (f32 and
fp16 storage) against PyTorch CUDA eager (fp32 and fp16) on the same architectures with random
weights, plus a correctness check of Kestrel-GPU outputs against onnxruntime (CPU).

Usage: python3 bench/gpu/device_bench.py KESTREL_BIN OUT_DIR
Models: VGG-16, ResNet-50 and MobileNetV2 (torchvision architectures, exported to ONNX here) and
EfficientNet-Lite0 (the bundled real model)."""
import json, os, subprocess, sys, time
import numpy as np

kestrel, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
mdir = "/tmp/kestrel-models"
os.makedirs(mdir, exist_ok=True)
results = {"models": {}}

import torch, torchvision
torch.manual_seed(0)
dev = torch.device("cuda")
results["torch"] = torch.__version__
results["gpu"] = torch.cuda.get_device_name(0)

archs = {
    "vgg16": torchvision.models.vgg16,
    "resnet50": torchvision.models.resnet50,
    "mobilenet_v2": torchvision.models.mobilenet_v2,
}
x = torch.randn(1, 3, 224, 224)
paths = {}
for name, ctor in archs.items():
    m = ctor(weights=None).eval()
    p = f"{mdir}/{name}.onnx"
    try:
        torch.onnx.export(m, x, p, opset_version=13, input_names=["input"], output_names=["output"], dynamo=False)
    except Exception as e:  # newer torch: only the dynamo exporter
        print("legacy export failed, dynamo:", e, flush=True)
        torch.onnx.export(m, x, p, opset_version=18, input_names=["input"], output_names=["output"], dynamo=True)
    paths[name] = (p, m)
paths["efficientnet_lite0"] = ("assets/models/efficientnet_lite0.onnx", None)


def torch_time(m, half, runs=30):
    m = m.to(dev)
    inp = x.to(dev)
    if half:
        m, inp = m.half(), inp.half()
    with torch.no_grad():
        for _ in range(5):
            m(inp)
        torch.cuda.synchronize()
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            m(inp)
            torch.cuda.synchronize()
            ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return {"median_ms": ts[len(ts) // 2], "p90_ms": ts[int(len(ts) * 0.9)], "min_ms": ts[0]}


import onnxruntime as ort
rng = np.random.default_rng(0)
for name, (p, m) in paths.items():
    r = {}
    # correctness: Kestrel GPU vs onnxruntime CPU on one random input
    inp = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.savez(f"{mdir}/{name}_in.npz", **{ort.InferenceSession(p).get_inputs()[0].name: inp})
    ref = ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {ort.InferenceSession(p).get_inputs()[0].name: inp})[0]
    for prec in ["f32", "f16"]:
        o = f"{mdir}/{name}_{prec}_out.npz"
        cp = subprocess.run([kestrel, "run", p, "--input-npz", f"{mdir}/{name}_in.npz", "--output-npz", o,
                             "--backend", "gpu", "--precision", prec], capture_output=True, text=True)
        if cp.returncode != 0:
            r[f"kestrel_{prec}_error"] = cp.stderr[-2000:]
            print(name, prec, "run failed:", cp.stderr[-500:], flush=True)
            continue
        got = list(np.load(o).values())[0]
        err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
        r[f"kestrel_{prec}_max_rel_vs_ort"] = err
        r[f"kestrel_{prec}_top1_same"] = bool(got.argmax() == ref.argmax())
        # latency: cold (first process, pipelines compiled), then a warm-start process
        for start in ["cold", "warm"]:
            cp = subprocess.run([kestrel, "bench", p, "--backend", "gpu", "--precision", prec, "--runs", "30",
                                 "--warmup", "3", "--json"], capture_output=True, text=True)
            if cp.returncode != 0:
                r[f"kestrel_{prec}_bench_error"] = cp.stderr[-2000:]
                break
            b = json.loads(cp.stdout)
            r[f"kestrel_{prec}_{start}"] = {k: b[k] for k in ["median_ms", "p90_ms", "min_ms", "first_run_ms", "device"]}
        print(name, prec, json.dumps({k: v for k, v in r.items() if prec in k}), flush=True)
    if m is not None:
        r["torch_cuda_fp32"] = torch_time(m, False)
        r["torch_cuda_fp16"] = torch_time(m, True)
        print(name, "torch", r["torch_cuda_fp32"], r["torch_cuda_fp16"], flush=True)
    results["models"][name] = r
    json.dump(results, open(f"{out}/gpu_bench.json", "w"), indent=1)

# per-layer GPU profile of VGG-16 (timestamps)
cp = subprocess.run([kestrel, "profile", paths["vgg16"][0], "--backend", "gpu", "--runs", "5", "--json", f"{out}/vgg16_gpu_profile.json"],
                    capture_output=True, text=True)
open(f"{out}/vgg16_gpu_profile.txt", "w").write(cp.stdout + cp.stderr)
print("done", flush=True)
