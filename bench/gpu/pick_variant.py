#!/usr/bin/env python3
"""Prints the environment (K=V words) of the variant of an env_ab.py result with the lowest
geometric mean of time ratios to the first variant over every model and precision, and the
ratios on stderr.

Usage: python3 bench/gpu/pick_variant.py AB.json"""
import json, math, sys

d = json.load(open(sys.argv[1]))
med = d["median_of_rounds"]
labels = list(d["variants"])
base = labels[0]
best, best_g = base, 1.0
for label in labels:
    rs = []
    for key, t in med.items():
        name, prec, lab = key.rsplit("/", 2)
        b = med.get(f"{name}/{prec}/{base}")
        if lab == label and b and t == t and b == b:
            rs.append(t / b)
    g = math.exp(sum(map(math.log, rs)) / len(rs)) if rs else float("nan")
    print(f"{label}: geomean ratio {g:.3f} over {len(rs)}", file=sys.stderr)
    if g == g and g < best_g:
        best, best_g = label, g
print(f"picked {best}", file=sys.stderr)
print(" ".join(f"{k}={v}" for k, v in d["variants"][best].items()))
