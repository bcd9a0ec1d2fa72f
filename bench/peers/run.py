#!/usr/bin/env python3
"""Side-by-side CPU benchmark: Kestrel against its peers on the same models, same input, same
machine, in one run. Each (engine, model, threads) runs in its own process, in blocks interleaved
round-robin across engines, so machine noise hits every engine alike. Every peer's output is
compared with Kestrel's first, so all ran the same network.

Peers: onnxruntime and OpenCV DNN (pip), ncnn (pip `ncnn` + `pnnx` for the conversion), PyTorch
CPU eager (the same ONNX file converted by pip `onnx2torch`; PyPI's torch is the CUDA build, run on
the CPU) and tract (the `tract` CLI built with `cargo install tract-cli --features
onnx,multithread-mm`, at /tmp/tract/bin/tract or $TRACT_CLI; else its Python bindings, one
thread). An engine that is not installed reports an error row instead of a time.

Usage: python3 bench/peers/run.py [--models M ...] [--threads 1 2] [--rounds 3] [--runs 10]
       [--engines kestrel onnxruntime opencv ncnn pytorch tract] [--out docs/bench/peers.json]
Prepare models first: scripts/make_vgg16_full.py and bench/peers/make_models.py."""
import argparse, json, os, subprocess, sys, tempfile
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "assets", "models", "classifiers")
MODELS = {
    "VGG-16": os.path.join(ROOT, "data", "models", "vgg16_full.onnx"),
    "ResNet-18": os.path.join(ROOT, "data", "models", "resnet18.onnx"),
    "ResNet-50": os.path.join(ROOT, "data", "models", "resnet50.onnx"),
    "MobileNetV2": os.path.join(SHARED, "mobilenet_v2_torchvision.onnx"),
    "SqueezeNet-1.1": os.path.join(ROOT, "data", "models", "squeezenet1_1.onnx"),
    "EfficientNet-Lite0": os.path.join(ROOT, "assets", "models", "efficientnet_lite0.onnx"),
}


def engine(name, model, threads, runs, out=None):
    cmd = [sys.executable, os.path.join(HERE, "engine.py"), name, model, "--threads", str(threads), "--runs", str(runs)]
    if out:
        cmd += ["--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except Exception:
        return {"engine": name, "error": (r.stderr or r.stdout)[-300:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--engines", nargs="*", default=["kestrel", "onnxruntime", "opencv", "ncnn"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench", "peers.json"))
    a = ap.parse_args()
    kbin = os.path.join(ROOT, "target", "release", "kestrel")
    results = []
    for mname in a.models:
        path = MODELS[mname]
        if not os.path.exists(path):
            print(f"skip {mname}: {path} missing"); continue
        info = json.loads(subprocess.run([kbin, "info", path, "--json"], capture_output=True, text=True, check=True).stdout)
        gflop = 2 * info["macs"] / 1e9
        # correctness gate: every peer's output against Kestrel's
        d = tempfile.mkdtemp()
        ref_path = os.path.join(d, "kestrel.npy")
        engine("kestrel", path, 1, 1, ref_path)
        ref = np.load(ref_path).reshape(-1)
        agree = {}
        for e in a.engines:
            if e == "kestrel":
                continue
            p = os.path.join(d, e + ".npy")
            r = engine(e, path, 1, 1, p)
            if "error" in r or not os.path.exists(p):
                agree[e] = "failed: " + r.get("error", "no output")[:120]
                continue
            y = np.load(p).reshape(-1)
            rel = float(np.max(np.abs(y - ref)) / max(np.max(np.abs(ref)), 1e-12)) if y.shape == ref.shape else float("inf")
            agree[e] = rel
        for t in a.threads:
            times = {e: [] for e in a.engines}
            rss = {e: 0.0 for e in a.engines}
            errors = {}
            for _ in range(a.rounds):
                for e in a.engines:
                    if isinstance(agree.get(e), str):
                        continue
                    r = engine(e, path, t, a.runs)
                    if "error" in r:
                        errors[e] = r["error"]; continue
                    times[e] += r["times_ms"]
                    rss[e] = max(rss[e], r["rss_mb"])
            row = {"model": mname, "threads": t, "gflop": gflop, "engines": {}}
            for e in a.engines:
                if times[e]:
                    med, p90 = float(np.median(times[e])), float(np.percentile(times[e], 90))
                    row["engines"][e] = {"median_ms": med, "p90_ms": p90, "gflops": gflop / (med / 1e3), "peak_rss_mb": rss[e],
                                         "max_rel_vs_kestrel": agree.get(e, 0.0)}
                else:
                    row["engines"][e] = {"error": errors.get(e) or agree.get(e)}
            ort = row["engines"].get("onnxruntime", {}).get("median_ms")
            for e, v in row["engines"].items():
                if ort and "median_ms" in v:
                    v["ratio_to_ort"] = v["median_ms"] / ort
            results.append(row)
            print(json.dumps(row))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump(results, open(a.out, "w"), indent=1)
    # markdown table
    engines = a.engines
    print()
    print("| model | threads | " + " | ".join(f"{e} ms (p90)" for e in engines) + " | Kestrel / ORT | Kestrel RSS MB | ORT RSS MB |")
    print("|---|---|" + "---|" * (len(engines) + 3))
    for r in results:
        cells = []
        for e in engines:
            v = r["engines"].get(e, {})
            cells.append(f"{v['median_ms']:.1f} ({v['p90_ms']:.1f})" if "median_ms" in v else "n/a")
        k = r["engines"].get("kestrel", {}); o = r["engines"].get("onnxruntime", {})
        ratio = f"{k['ratio_to_ort']:.2f}" if "ratio_to_ort" in k else "n/a"
        print(f"| {r['model']} | {r['threads']} | " + " | ".join(cells) + f" | {ratio} | {k.get('peak_rss_mb', 0):.0f} | {o.get('peak_rss_mb', 0):.0f} |")


if __name__ == "__main__":
    main()
