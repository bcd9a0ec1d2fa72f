#!/usr/bin/env python3
"""Per-conv-layer comparison of convolution algorithms from `kestrel profile --json` runs:
measured time of each algorithm and the cost model's memory traffic (im2col bytes avoided).

Usage: python3 scripts/conv_algo_table.py MODEL [--threads N] [--runs N] [--algos direct im2col ...]
Prints a markdown table."""
import argparse, json, os, subprocess, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("--threads", default="1"); ap.add_argument("--runs", default="5")
ap.add_argument("--algos", nargs="+", default=["direct", "im2col"])
ap.add_argument("--kestrel", default=os.path.join(ROOT, "target", "release", "kestrel"))
a = ap.parse_args()
profiles = {}
for algo in a.algos:
    f = os.path.join(tempfile.mkdtemp(), "p.json")
    subprocess.run([a.kestrel, "profile", a.model, "--threads", a.threads, "--runs", a.runs, "--conv-algo", algo, "--json", f],
                   check=True, capture_output=True)
    profiles[algo] = json.load(open(f))
base = profiles[a.algos[0]]
peak = base["peaks"]["fma_gflops"]
hdr = "| layer | MMAC | " + " | ".join(f"{x} ms" for x in a.algos) + " | direct MB | im2col MB | im2col bytes avoided |"
print(hdr); print("|" + "---|" * (hdr.count("|") - 1))
tot = {x: 0.0 for x in a.algos}; td = ti = 0; macs = 0
for i, l in enumerate(base["layers"]):
    if l.get("conv_direct_bytes") is None:
        continue
    ts = [profiles[x]["layers"][i]["time_ms"] for x in a.algos]
    for x, t in zip(a.algos, ts): tot[x] += t
    d, im = l["conv_direct_bytes"], l["conv_im2col_bytes"]; td += d; ti += im; macs += l["macs"]
    print(f"| {l['name']} | {l['macs']/1e6:.0f} | " + " | ".join(f"{t:.2f}" for t in ts) + f" | {d/1e6:.1f} | {im/1e6:.1f} | {(im-d)/1e6:.1f} MB ({im/d:.2f}x) |")
print(f"| **all convs** | {macs/1e6:.0f} | " + " | ".join(f"**{tot[x]:.1f}**" for x in a.algos) + f" | {td/1e6:.1f} | {ti/1e6:.1f} | {(ti-td)/1e6:.1f} MB ({ti/td:.2f}x) |")
print()
for x in a.algos:
    gf = 2 * macs / (tot[x] * 1e-3) / 1e9
    print(f"- {x}: conv layers {tot[x]:.1f} ms, {gf:.1f} GFLOP/s in direct-convolution FLOPs = {100*gf/peak:.0f}% of the measured FMA peak ({peak:.0f} GFLOP/s, {base['threads']} thread(s))")
