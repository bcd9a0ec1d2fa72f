#!/usr/bin/env python3
"""ncnn's Vulkan backend on the device machine, for the side-by-side GPU table: the same four
architectures as bench/gpu/device_bench.py (ncnn .param files converted by pnnx from the same
ONNX architectures, random He-scaled weights written by ncnn_random_bin.py), fp32 (fp16 storage
and arithmetic off) and fp16 (ncnn's default on GPUs with fp16: storage, packing and arithmetic
on). Median of 30 timed runs after 5 warm-up runs, one extractor per run as ncnn's benchmark does.

Usage: ncnn_vulkan.py PARAM_DIR OUT.json"""
import json, os, statistics, subprocess, sys, time
import numpy as np
import ncnn

HERE = os.path.dirname(os.path.abspath(__file__))
param_dir, out = sys.argv[1], sys.argv[2]
models = {"vgg16": "vgg16_full", "resnet50": "resnet50", "mobilenet_v2": "mobilenet_v2_torchvision",
          "efficientnet_lite0": "efficientnet_lite0"}
res = {"ncnn": ncnn.__version__, "gpu_count": ncnn.get_gpu_count(), "models": {}}
if ncnn.get_gpu_count() > 0:
    info = ncnn.get_gpu_info(0)
    res["gpu"] = info.device_name() if hasattr(info, "device_name") else str(info)
x = np.random.default_rng(0).random((3, 224, 224), dtype=np.float32)
for name, stem in models.items():
    param = os.path.join(param_dir, stem + ".ncnn.param")
    binf = f"/tmp/{stem}.rand.bin"
    subprocess.run([sys.executable, os.path.join(HERE, "ncnn_random_bin.py"), param, binf], check=True)
    row = {}
    for prec in ("fp32", "fp16"):
        net = ncnn.Net()
        net.opt.use_vulkan_compute = True
        half = prec == "fp16"
        net.opt.use_fp16_packed = half
        net.opt.use_fp16_storage = half
        net.opt.use_fp16_arithmetic = half
        t0 = time.perf_counter()
        net.load_param(param)
        net.load_model(binf)

        def once():
            ex = net.create_extractor()
            ex.input("in0", ncnn.Mat(x))
            r, o = ex.extract("out0")
            assert r == 0, f"ncnn extract failed: {r}"
            return np.array(o)

        y = once()
        cold = (time.perf_counter() - t0) * 1e3
        for _ in range(5):
            once()
        ts = []
        for _ in range(30):
            t = time.perf_counter()
            once()
            ts.append((time.perf_counter() - t) * 1e3)
        row[prec] = {"median_ms": statistics.median(ts), "min_ms": min(ts), "cold_ms": cold,
                     "output_finite": bool(np.isfinite(y).all()), "output_shape": list(y.shape)}
        print(f"ncnn vulkan {name} {prec}: median {row[prec]['median_ms']:.2f} ms (cold {cold:.0f} ms)", flush=True)
        del net
    res["models"][name] = row
with open(out, "w") as f:
    json.dump(res, f, indent=1)
