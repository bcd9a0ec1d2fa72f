#!/usr/bin/env python3
"""Runs one engine on one model in its own process (so peak RSS is that engine's alone).

Usage: engine.py ENGINE MODEL --threads N --runs N [--warmup N] [--out OUT.npy]
Prints one JSON line: {"engine", "times_ms": [...], "rss_mb", "error"}. The input is the seeded
random tensor every engine gets (numpy seed 0, uniform [-1, 1), NCHW 1x3x224x224)."""
import argparse, json, os, resource, subprocess, sys, time
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def the_input():
    return np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)


def run_ort(model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def run_opencv(model, threads):
    import cv2
    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromONNX(model)
    def f(x):
        net.setInput(x)
        return net.forward()
    return f


def run_ncnn(model, threads):
    import ncnn
    base = os.path.join(ROOT, "data", "ncnn", os.path.splitext(os.path.basename(model))[0])
    param, binf = base + ".ncnn.param", base + ".ncnn.bin"
    if not os.path.exists(param):
        os.makedirs(os.path.dirname(base), exist_ok=True)
        import onnx
        src = base + ".onnx"
        m = onnx.load(model)
        m.ir_version = min(m.ir_version, 8)  # pnnx's bundled onnxruntime reads IR <= 13
        onnx.save(m, src)
        subprocess.run(["pnnx", src, "inputshape=[1,3,224,224]"], check=True, capture_output=True, cwd=os.path.dirname(base))
    net = ncnn.Net()
    net.opt.num_threads = threads
    net.opt.use_vulkan_compute = False
    net.load_param(param)
    net.load_model(binf)
    ins, outs = net.input_names(), net.output_names()
    def f(x):
        ex = net.create_extractor()
        ex.input(ins[0], ncnn.Mat(x[0]).clone())
        _, y = ex.extract(outs[0])
        return np.array(y).reshape(1, -1)
    return f


def run_pytorch(model, threads):
    # PyTorch CPU, eager: the same ONNX file converted to a torch.fx module by onnx2torch
    import torch
    import onnx2torch
    torch.set_num_threads(threads)
    net = onnx2torch.convert(model).eval()

    def f(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()
    return f


def tract_cli():
    return os.environ.get("TRACT_CLI") or "/tmp/tract/bin/tract"


def run_tract(model, threads):
    # tract's Python bindings (the CLI, built with multithread-mm, is used by main() when present)
    import tract
    runnable = tract.onnx().load(model).into_model().into_runnable()

    def f(x):
        return runnable.run([x])[0].to_numpy()
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("engine"); ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1); ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2); ap.add_argument("--out")
    a = ap.parse_args()
    res = {"engine": a.engine}
    try:
        if a.engine == "tract" and os.path.exists(tract_cli()):
            # the CLI built with multithread-mm times the optimized model; it prints only the mean
            # of its loops, so every run is reported as that mean. The output check uses the
            # Python bindings of the same tract version.
            if a.out:
                np.save(a.out, np.asarray(run_tract(a.model, 1)(the_input()), np.float32))
            r = subprocess.run([tract_cli(), a.model, "--threads", str(a.threads), "-i", "1,3,224,224,f32", "-O",
                                "bench", "--allow-random-input", "--max-loops", str(a.runs + a.warmup)],
                               check=True, capture_output=True, text=True)
            import re
            m = re.search(r"([0-9.]+) ms/i", re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr))
            res["times_ms"] = [float(m.group(1))] * a.runs
            res["rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        elif a.engine == "kestrel":
            kbin = os.path.join(ROOT, "target", "release", "kestrel")
            if a.out:
                import tempfile
                d = tempfile.mkdtemp()
                np.savez(os.path.join(d, "in.npz"), input=the_input())
                subprocess.run([kbin, "run", a.model, "--input-npz", os.path.join(d, "in.npz"), "--output-npz", os.path.join(d, "out.npz"), "--threads", str(a.threads)], check=True, capture_output=True)
                np.save(a.out, list(np.load(os.path.join(d, "out.npz")).values())[0])
            r = subprocess.run([kbin, "bench", a.model, "--threads", str(a.threads), "--runs", str(a.runs), "--warmup", str(a.warmup), "--json"],
                               check=True, capture_output=True, text=True)
            j = json.loads(r.stdout)
            res["times_ms"] = j["times_ms"]
            res["rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        else:
            f = {"onnxruntime": run_ort, "opencv": run_opencv, "ncnn": run_ncnn, "pytorch": run_pytorch,
                 "tract": run_tract}[a.engine](a.model, a.threads)
            x = the_input()
            y = f(x)
            if a.out:
                np.save(a.out, np.asarray(y, np.float32))
            for _ in range(a.warmup):
                f(x)
            ts = []
            for _ in range(a.runs):
                t = time.perf_counter(); f(x); ts.append((time.perf_counter() - t) * 1e3)
            res["times_ms"] = ts
            res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"[:300]
    print(json.dumps(res))


main()
