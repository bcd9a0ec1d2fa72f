#!/usr/bin/env python3
"""onnxruntime's own per-node profile of a model, summarised by op type (for side-by-side with
`kestrel profile`). Usage: python3 scripts/ort_profile.py MODEL [--threads N] [--runs N]"""
import argparse, json, os, tempfile, collections
import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("--threads", type=int, default=1); ap.add_argument("--runs", type=int, default=10)
a = ap.parse_args()
so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
so.inter_op_num_threads = 1
so.enable_profiling = True
so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
x = np.random.default_rng(0).uniform(-1, 1, [d if isinstance(d, int) else 224 for d in i.shape]).astype(np.float32)
for _ in range(3):
    s.run(None, {i.name: x})
import time
times = []
for _ in range(a.runs):
    t = time.perf_counter(); s.run(None, {i.name: x}); times.append((time.perf_counter() - t) * 1e3)
prof = s.end_profiling()
ev = json.load(open(prof))
by_op = collections.defaultdict(float)
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        by_op[e["args"]["op_name"]] += e["dur"] / 1e3
total = sum(by_op.values())
print(f"onnxruntime {ort.__version__}, {a.threads} thread(s): median {np.median(times):.2f} ms per run")
for op, t in sorted(by_op.items(), key=lambda kv: -kv[1]):
    print(f"  {op:20s} {100 * t / total:5.1f}%")
