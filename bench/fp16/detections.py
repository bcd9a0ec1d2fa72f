#!/usr/bin/env python3
"""Detections of the face detectors in f32 and at fp16 precisions on every photo: how many boxes,
how many matched (IoU >= 0.5, same count), worst score difference and lowest IoU of a match.
Usage: python3 bench/fp16/detections.py [--out docs/fp16/detections.json]"""
import argparse, json, os, subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ASSETS = os.path.join(os.path.dirname(ROOT), "shared", "assets")
DETECTORS = ["blazeface_front_128", "blazeface_back_256", "mediapipe_face_detection_short_range", "mtcnn_pnet"]


def detect(model, photos, precision):
    kbin = os.path.join(ROOT, "target", "release", "kestrel")
    r = subprocess.run([kbin, "run", model, "--input", photos, "--json", "--precision", precision],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def iou(a, b):
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "fp16", "detections.json"))
    a = ap.parse_args()
    photos = os.path.join(ASSETS, "photos")
    rows = []
    for d in DETECTORS:
        model = os.path.join(ASSETS, "models", "detectors", d + ".onnx")
        ref = detect(model, photos, "f32")
        for p in ("f16", "f16-arith"):
            got = detect(model, photos, p)
            n_ref = n_got = matched = 0
            worst_score, min_iou = 0.0, 1.0
            for r, g in zip(ref, got):
                rd, gd = r.get("detections", []), g.get("detections", [])
                n_ref += len(rd); n_got += len(gd)
                used = set()
                for x in rd:
                    best, bj = 0.0, None
                    for j, y in enumerate(gd):
                        if j not in used and iou(x["bbox"], y["bbox"]) > best:
                            best, bj = iou(x["bbox"], y["bbox"]), j
                    if bj is not None and best >= 0.5:
                        used.add(bj); matched += 1
                        min_iou = min(min_iou, best)
                        worst_score = max(worst_score, abs(x["score"] - gd[bj]["score"]))
            row = {"detector": d, "precision": p, "photos": len(ref), "boxes_f32": n_ref, "boxes": n_got,
                   "matched": matched, "min_iou": min_iou, "max_score_diff": worst_score}
            rows.append(row)
            print(f"{d:<40} {p:<10} boxes f32 {n_ref:3d} {p} {n_got:3d} matched {matched:3d}  min IoU {min_iou:.3f}  max |Δscore| {worst_score:.4f}", flush=True)
    with open(a.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
