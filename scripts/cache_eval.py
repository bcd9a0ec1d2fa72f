#!/usr/bin/env python3
"""Compare a cached run's JSON lines with a dense run's: top-1 agreement per frame, mean changed
blocks and computed MAC share. Usage: cache_eval.py DENSE.jsonl CACHED.jsonl"""
import json, sys
d = [json.loads(l) for l in open(sys.argv[1])]
c = [json.loads(l) for l in open(sys.argv[2])]
n = min(len(d), len(c))
agree = sum(d[i]["top"][0]["label"] == c[i]["top"][0]["label"] for i in range(n))
top5 = sum(c[i]["top"][0]["label"] in [t["label"] for t in d[i]["top"]] for i in range(n))
ch = [x["cache"]["changed_blocks"] for x in c[1:]]
cf = [x["cache"]["computed_fraction"] for x in c[1:]]
dp = [abs(d[i]["top"][0]["prob"] - next((t["prob"] for t in c[i]["top"] if t["label"] == d[i]["top"][0]["label"]), 0)) for i in range(n)]
inf_d = sorted(x["times_ms"]["infer_ms"] for x in d)
inf_c = sorted(x["times_ms"]["infer_ms"] for x in c)
print(json.dumps({
    "frames": n,
    "top1_agreement": agree / n,
    "cached_top1_in_dense_top5": top5 / n,
    "max_top1_prob_change": max(dp),
    "mean_changed_blocks": sum(ch) / len(ch),
    "mean_computed_fraction": sum(cf) / len(cf),
    "infer_p50_ms_dense": inf_d[n // 2],
    "infer_p50_ms_cached": inf_c[n // 2],
}, indent=1))
