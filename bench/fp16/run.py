#!/usr/bin/env python3
"""fp16 against f32 on the CPU: latency and memory of `kestrel bench` on the CPU benchmark models,
the precisions (f32, f16 storage, f16 storage + fp16 arithmetic where the CPU has AVX512-FP16)
interleaved round-robin (each run its own process, so machine noise hits all alike), at 1 and 2
threads. Reports the median of the per-round medians, the latency ratio to f32, resident memory
after the runs (steady state) and the peak (model loading included).

Usage: python3 bench/fp16/run.py [--rounds 3] [--runs 10] [--threads 1 2] [--precisions f32 f16 f16-arith]
       [--out docs/fp16/cpu_bench.json]"""
import argparse, json, os, statistics, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "peers"))
from run import MODELS  # noqa: E402  (the peer benchmark's model list)


def bench(path, precision, threads, runs):
    kbin = os.path.join(ROOT, "target", "release", "kestrel")
    r = subprocess.run([kbin, "bench", path, "--precision", precision, "--threads", str(threads), "--runs", str(runs),
                        "--warmup", "2", "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr[-300:]}
    return json.loads(r.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--precisions", nargs="*", default=["f32", "f16", "f16-arith"])
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "fp16", "cpu_bench.json"))
    a = ap.parse_args()
    rows = []
    for m in a.models:
        path = MODELS[m]
        if not os.path.exists(path):
            print(f"skip {m}: {path} missing"); continue
        for t in a.threads:
            precs = a.precisions
            res = {p: [] for p in precs}
            for _ in range(a.rounds):
                for p in precs:
                    res[p].append(bench(path, p, t, a.runs))
            row = {"model": m, "threads": t}
            for p in precs:
                ok = [r for r in res[p] if "error" not in r]
                if not ok:
                    row[p] = {"error": res[p][0]["error"]}; continue
                row[p] = {"median_ms": statistics.median(r["median_ms"] for r in ok),
                          "p90_ms": statistics.median(r["p90_ms"] for r in ok),
                          "rss_mb": statistics.median(r["rss_mb"] for r in ok),
                          "peak_rss_mb": max(r["peak_rss_mb"] for r in ok)}
            base = row.get("f32", {})
            line = f"{m:<20} {t}t"
            for p in precs:
                r = row[p]
                if "median_ms" in r and "median_ms" in base:
                    r["latency_ratio"] = r["median_ms"] / base["median_ms"]
                    r["rss_ratio"] = r["rss_mb"] / base["rss_mb"]
                    r["peak_ratio"] = r["peak_rss_mb"] / base["peak_rss_mb"]
                    line += f"  {p} {r['median_ms']:7.2f} ms ({r['latency_ratio']:.2f}x) RSS {r['rss_mb']:.0f} MB ({r['rss_ratio']:.2f}x) peak {r['peak_rss_mb']:.0f}"
                else:
                    line += f"  {p} error"
            rows.append(row)
            print(line, flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"rows": rows, "rounds": a.rounds, "runs": a.runs}, f, indent=1)


if __name__ == "__main__":
    main()
