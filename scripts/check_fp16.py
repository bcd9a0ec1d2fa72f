#!/usr/bin/env python3
"""fp16 checks against onnxruntime (CI):
1. `kestrel convert` (full fp16, float inputs/outputs kept) gives a valid ONNX file that onnxruntime
   runs, with outputs close to the f32 model's and the same top-1 class;
2. `kestrel convert --weights-only` gives a file onnxruntime runs; Kestrel runs it too and agrees
   with onnxruntime on it (full tensors);
3. `kestrel compare --precision f16` keeps the top-1 class on every bundled photo.
Usage: check_fp16.py --kestrel BIN"""
import argparse, json, os, subprocess, sys, tempfile
import numpy as np
import onnx
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("--kestrel", required=True)
a = ap.parse_args()
fail = False


def run_ort(path, feeds):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def rel(x, y):
    return float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-12))


with tempfile.TemporaryDirectory() as d:
    for model in ["assets/models/efficientnet_lite0.onnx", "assets/models/mtcnn_onet.onnx"]:
        base = os.path.basename(model)
        s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        inp = s.get_inputs()[0]
        shape = [v if isinstance(v, int) else 1 for v in inp.shape]
        x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
        ref = s.run(None, {inp.name: x})
        # 1. full fp16
        full = os.path.join(d, "full.onnx")
        subprocess.run([a.kestrel, "convert", model, "-o", full], check=True, capture_output=True)
        onnx.checker.check_model(onnx.load(full))
        got = run_ort(full, {inp.name: x})
        for r, g in zip(ref, got):
            e = rel(g.astype(np.float32), r)
            same = int(np.argmax(g)) == int(np.argmax(r))
            print(f"{base}: fp16 model in onnxruntime vs f32: max-rel {e:.2e}, same argmax {same}")
            fail |= e > 5e-2 or not same
        # 2. weights-only fp16: onnxruntime and Kestrel agree on it
        w16 = os.path.join(d, "w16.onnx")
        subprocess.run([a.kestrel, "convert", model, "--weights-only", "-o", w16], check=True, capture_output=True)
        onnx.checker.check_model(onnx.load(w16))
        ow = run_ort(w16, {inp.name: x})
        np.savez(os.path.join(d, "in.npz"), **{inp.name: x})
        subprocess.run([a.kestrel, "run", w16, "--input-npz", os.path.join(d, "in.npz"), "--output-npz",
                        os.path.join(d, "out.npz")], check=True, capture_output=True)
        kw = np.load(os.path.join(d, "out.npz"))
        for o, r in zip(ort.InferenceSession(w16, providers=["CPUExecutionProvider"]).get_outputs(), ow):
            e = rel(kw[o.name], r)
            print(f"{base}: weights-only fp16 model, Kestrel vs onnxruntime: output {o.name} max-rel {e:.2e}")
            fail |= e > 1e-4
    # 3. top-1 kept on the bundled photos with f16 storage
    r = subprocess.run([a.kestrel, "compare", "assets/models/efficientnet_lite0.onnx", "--precision", "f16",
                        "--input", "assets/photos", "--json"], check=True, capture_output=True, text=True)
    j = json.loads(r.stdout)
    agree = j["classifier"]["top1_agreement"]
    print(f"efficientnet_lite0 f16 storage: top-1 agreement on {j['inputs']} photos {agree:.3f}, "
          f"max-rel {j['outputs'][0]['error']['max_rel']:.2e}")
    fail |= agree < 1.0
print("fp16 checks:", "FAILED" if fail else "passed")
sys.exit(1 if fail else 0)
