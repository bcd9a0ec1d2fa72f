#!/usr/bin/env python3
"""Compresses a bundled model with `kestrel compress`, then checks that onnxruntime runs the
compressed ONNX file and agrees with Kestrel on it (full tensors, max-rel).
Usage: check_compressed_ort.py --kestrel BIN"""
import argparse, subprocess, sys, tempfile, os
import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("--kestrel", required=True)
a = ap.parse_args()
worst = 0.0
with tempfile.TemporaryDirectory() as d:
    for model, target in [("assets/models/mtcnn_onet.onnx", "1.5"), ("assets/models/mtcnn_rnet.onnx", "1.3"),
                          ("assets/models/efficientnet_lite0.onnx", "1.2")]:
        out = os.path.join(d, "c.onnx")
        subprocess.run([a.kestrel, "compress", model, "-o", out, "--speedup", target, "--runs", "1", "--eval-count", "2"],
                       check=True, capture_output=True)
        s = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
        inp = s.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        np.savez(os.path.join(d, "in.npz"), **{inp.name: x})
        subprocess.run([a.kestrel, "run", out, "--input-npz", os.path.join(d, "in.npz"), "--output-npz",
                        os.path.join(d, "out.npz")], check=True, capture_output=True)
        got = np.load(os.path.join(d, "out.npz"))
        ref = s.run(None, {inp.name: x})
        for o, r in zip(s.get_outputs(), ref):
            g = got[o.name]
            e = float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-12))
            worst = max(worst, e)
            print(f"{os.path.basename(model)} x{target}: output {o.name}: max-rel {e:.2e}")
print(f"compressed models: onnxruntime agrees with Kestrel, worst max-rel {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
