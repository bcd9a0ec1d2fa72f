#!/usr/bin/env python3
"""Pareto table and chart of low-rank compression: for each model and rank setting (per-layer
singular-value energy kept), the MAC ratio, the measured latency speed-up (Kestrel CPU, 1 thread)
and the top-1 agreement with the original on the photos and on video frames.
Usage: pareto.py KESTREL_BIN OUT_DIR MODEL.onnx [MODEL.onnx ...]"""
import json, os, subprocess, sys, tempfile

kestrel, out, models = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(out, exist_ok=True)
targets = ["0.999", "0.995", "0.99", "0.98", "0.95", "0.9"]
evals = [("photos", "../shared/assets/photos", 18), ("video", "../shared/assets/video/box.mp4", 32)]
rows = []
with tempfile.TemporaryDirectory() as d:
    for m in models:
        name = os.path.splitext(os.path.basename(m))[0]
        for t in targets:
            r = {"model": name, "target": float(t)}
            for ev, path, n in evals:
                rep = os.path.join(d, "r.json")
                cp = subprocess.run([kestrel, "compress", m, "-o", os.path.join(d, "c.onnx"), "--energy", t, "--eval", path,
                                     "--eval-count", str(n), "--runs", "15", "--threads", "1", "--report", rep],
                                    capture_output=True, text=True)
                if cp.returncode != 0:
                    r["error"] = cp.stderr[-300:]
                    break
                j = json.load(open(rep))
                r["macs_ratio"] = j["report"]["macs_before"] / max(j["report"]["macs_after"], 1)
                r["decomposed"] = sum(1 for l in j["report"]["layers"] if not l["action"].startswith("kept"))
                r[f"speedup_{ev}"] = j["latency_ms_before"] / j["latency_ms_after"]
                r[f"top1_{ev}"] = j["top1_agreement"]
                r[f"top5_{ev}"] = j["top5_agreement"]
            r["measured_speedup"] = (r.get("speedup_photos", 0) + r.get("speedup_video", 0)) / 2
            print(json.dumps(r), flush=True)
            rows.append(r)
json.dump(rows, open(os.path.join(out, "pareto.json"), "w"), indent=1)
with open(os.path.join(out, "pareto.md"), "w") as f:
    f.write("| model | energy kept | MAC ratio | layers decomposed | measured speed-up (1 thread) | top-1 agreement photos | top-1 agreement video frames | in original top-5 (photos / video) |\n|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        if "error" in r:
            f.write(f"| {r['model']} | {r['target']} | error | | | | | |\n")
            continue
        f.write(f"| {r['model']} | {r['target']} | {r['macs_ratio']:.2f}x | {r['decomposed']} | {r['measured_speedup']:.2f}x | "
                f"{100*r['top1_photos']:.0f}% | {100*r['top1_video']:.0f}% | {100*r['top5_photos']:.0f}% / {100*r['top5_video']:.0f}% |\n")
# chart: speed-up (x) against top-1 agreement on photos (y), one series per model
W, H, L, B = 640, 420, 60, 50
cols = ["#1f77b4", "#d62728", "#2ca02c"]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">Low-rank compression: measured speed-up vs top-1 agreement (photos)</text>']
xmax = max([r.get("measured_speedup", 1) for r in rows] + [2.0]) * 1.1
X = lambda v: L + (v - 0.8) / (xmax - 0.8) * (W - L - 20)
Y = lambda v: H - B - v * (H - B - 40)
for g in [0, 0.25, 0.5, 0.75, 1.0]:
    svg.append(f'<line x1="{L}" x2="{W-20}" y1="{Y(g)}" y2="{Y(g)}" stroke="#ddd"/><text x="{L-8}" y="{Y(g)+4}" text-anchor="end">{int(g*100)}%</text>')
for s in [1.0, 1.5, 2.0, 2.5, 3.0]:
    if s < xmax:
        svg.append(f'<line x1="{X(s)}" x2="{X(s)}" y1="40" y2="{H-B}" stroke="#eee"/><text x="{X(s)}" y="{H-B+16}" text-anchor="middle">{s:.1f}x</text>')
svg.append(f'<text x="{W/2}" y="{H-10}" text-anchor="middle">measured latency speed-up (Kestrel CPU, 1 thread)</text>')
for mi, m in enumerate(sorted({r["model"] for r in rows})):
    pts = [(r["measured_speedup"], r["top1_photos"], r["target"]) for r in rows if r["model"] == m and "error" not in r]
    pts.sort()
    c = cols[mi % len(cols)]
    svg.append('<polyline fill="none" stroke="%s" points="%s"/>' % (c, " ".join(f"{X(a)},{Y(b)}" for a, b, _ in pts)))
    for a, b, t in pts:
        svg.append(f'<circle cx="{X(a)}" cy="{Y(b)}" r="4" fill="{c}"/><text x="{X(a)+6}" y="{Y(b)-6}" font-size="10">{t}</text>')
    svg.append(f'<text x="{L+10}" y="{60+16*mi}" fill="{c}">{m}</text>')
svg.append("</svg>")
open(os.path.join(out, "pareto.svg"), "w").write("\n".join(svg))
print("written", out)
