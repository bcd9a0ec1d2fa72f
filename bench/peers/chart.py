#!/usr/bin/env python3
"""Bar chart (SVG, no dependencies) of a bench/peers/run.py result: each engine's median latency
as a ratio to onnxruntime's, per model and thread count (lower is faster; the dashed line is
onnxruntime).

Usage: python3 bench/peers/chart.py docs/bench/peers_session5.json docs/bench/peers_session5.svg"""
import json, sys

src, dst = sys.argv[1], sys.argv[2]
rows = json.load(open(src))
engines = []
for r in rows:
    for e in r["engines"]:
        if e not in engines and "median_ms" in r["engines"][e]:
            engines.append(e)
colors = {"kestrel": "#d9480f", "onnxruntime": "#1c7ed6", "opencv": "#2f9e44", "ncnn": "#7048e8"}
groups = [(f'{r["model"]} {r["threads"]}t', r["engines"]) for r in rows]
vmax = max(e["ratio_to_ort"] for _, es in groups for e in es.values() if "ratio_to_ort" in e)
vmax = max(2.0, round(vmax + 0.25, 1))
W, H, left, top, bottom = 960, 420, 50, 50, 110
gw = (W - left - 20) / len(groups)
bw = gw * 0.8 / len(engines)
y = lambda v: top + (H - top - bottom) * (1 - v / vmax)
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<text x="{left}" y="18" font-size="14">Latency relative to onnxruntime (median, lower is faster), {src.split("/")[-1]}</text>']
for t in [0.5 * i for i in range(int(vmax / 0.5) + 1)]:
    out.append(f'<line x1="{left}" x2="{W - 20}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>'
               f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>')
out.append(f'<line x1="{left}" x2="{W - 20}" y1="{y(1):.1f}" y2="{y(1):.1f}" stroke="#1c7ed6" stroke-dasharray="4 3"/>')
for gi, (label, es) in enumerate(groups):
    x0 = left + gi * gw + gw * 0.1
    for ei, e in enumerate(engines):
        v = es.get(e, {}).get("ratio_to_ort")
        if v is None:
            continue
        x = x0 + ei * bw
        out.append(f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bw - 1:.1f}" height="{y(0) - y(v):.1f}" fill="{colors.get(e, "#888")}">'
                   f'<title>{e} {label}: {v:.2f}x ({es[e]["median_ms"]:.1f} ms)</title></rect>')
    cx = left + gi * gw + gw / 2
    out.append(f'<text transform="translate({cx:.1f},{y(0) + 8:.1f}) rotate(45)" text-anchor="start">{label}</text>')
for ei, e in enumerate(engines):
    out.append(f'<rect x="{left + 110 * ei}" y="26" width="10" height="10" fill="{colors.get(e, "#888")}"/>'
               f'<text x="{left + 15 + 110 * ei}" y="35">{e}</text>')
out.append("</svg>")
open(dst, "w").write("\n".join(out))
print("wrote", dst)
