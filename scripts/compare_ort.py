#!/usr/bin/env python3
"""Compare Kestrel with onnxruntime on whole models: full output tensors, max-abs and max-rel error.

For every model found (bundled assets/models, plus ../shared/assets/models when present, or the
paths given) it runs both engines on
  * a seeded random input, and
  * every photo in the photo folders (preprocessed by Kestrel's preset for that model, the same
    tensor is fed to onnxruntime),
and reports per output: max-abs = max|k - o|, max-rel = max-abs / max|o| (scale-normalised), and
elem-rel = max |k - o| / max(|o|, 1e-3 * max|o|). Fails (exit 1) when any max-rel exceeds --tol.
Also checks the classifier top-1 labels listed in the shared assets README.

Usage: python3 scripts/compare_ort.py [--kestrel target/release/kestrel] [--models M ...]
       [--photos DIR ...] [--tol 1e-4] [--report FILE.json]
"""
import argparse, glob, json, os, subprocess, sys, tempfile
import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(3)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "assets")

# top-1 labels given in ../shared/assets/README.md (onnxruntime sanity results)
EXPECTED_TOP1 = {
    "mobilenet_v2_torchvision": {"squirrel_cls": "fox squirrel", "coffee": "espresso",
                                 "messi5": "soccer ball", "chelsea": "Egyptian cat"},
    "efficientnet_lite0": {"squirrel_cls": "fox squirrel", "coffee": "espresso", "apple": "Granny Smith"},
}
# models with free spatial dims: shape used for the random-input test
FREE_SHAPES = {"mtcnn_pnet": [1, 3, 120, 160], "vgg16_imagenet_conv_trunk": [1, 3, 224, 224]}


def errors(k, o):
    k = k.astype(np.float64); o = o.astype(np.float64)
    if k.shape != o.shape:
        return None
    if k.size == 0:
        return 0.0, 0.0, 0.0
    d = np.abs(k - o)
    scale = float(np.max(np.abs(o)))
    mx = float(np.max(d))
    rel = mx / scale if scale > 0 else mx
    elem = float(np.max(d / np.maximum(np.abs(o), 1e-3 * scale if scale > 0 else 1e-12)))
    return mx, rel, elem


def run_kestrel(kbin, model, args):
    r = subprocess.run([kbin, "run", model] + args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"kestrel failed on {model}: {r.stderr.strip()}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kestrel", default=os.path.join(ROOT, "target", "release", "kestrel"))
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--photos", nargs="*")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--report")
    a = ap.parse_args()

    models = a.models
    if not models:
        models = sorted(glob.glob(os.path.join(ROOT, "assets", "models", "*.onnx")))
        shared = sorted(glob.glob(os.path.join(SHARED, "models", "*", "*.onnx")))
        names = {os.path.basename(m) for m in models}
        models += [m for m in shared if os.path.basename(m) not in names]
    photo_dirs = a.photos or [d for d in [os.path.join(SHARED, "photos"), os.path.join(ROOT, "assets", "photos")] if os.path.isdir(d)]
    photos, seen = [], set()
    for d in photo_dirs:
        for p in sorted(glob.glob(os.path.join(d, "*"))):
            if os.path.basename(p) not in seen and p.lower().endswith((".jpg", ".jpeg", ".png")):
                seen.add(os.path.basename(p)); photos.append(p)

    labels = open(os.path.join(ROOT, "assets", "labels", "imagenet_classes.txt")).read().splitlines()
    rows, failures = [], []
    tmp = tempfile.mkdtemp()
    for m in models:
        name = os.path.splitext(os.path.basename(m))[0]
        sess = ort.InferenceSession(m, providers=["CPUExecutionProvider"])
        inputs = sess.get_inputs()
        out_names = [o.name for o in sess.get_outputs()]
        cases = []
        rng = np.random.default_rng(0)
        feed = {}
        for i in inputs:
            shape = [d if isinstance(d, int) else None for d in i.shape]
            if None in shape:
                shape = FREE_SHAPES.get(name) or [1 if s is None else s for s in shape]
            feed[i.name] = rng.uniform(-1, 1, size=shape).astype(np.float32)
        cases.append(("random", feed))
        image_model = len(inputs) == 1 and len(inputs[0].shape) == 4
        if image_model:
            for p in photos:
                f = os.path.join(tmp, "in.npz")
                run_kestrel(a.kestrel, m, ["--input", p, "--save-input-npz", f, "--threads", "2"])
                cases.append((os.path.basename(p), dict(np.load(f))))
        for case, feed in cases:
            fin = os.path.join(tmp, "feed.npz"); fout = os.path.join(tmp, "out.npz")
            np.savez(fin, **feed)
            run_kestrel(a.kestrel, m, ["--input-npz", fin, "--output-npz", fout, "--threads", "2"])
            kout = dict(np.load(fout))
            oout = sess.run(None, feed)
            for on, o in zip(out_names, oout):
                e = errors(kout[on], o)
                row = {"model": name, "input": case, "output": on, "shape": list(o.shape)}
                if e is None:
                    row.update(error=f"shape {list(kout[on].shape)} vs {list(o.shape)}")
                    failures.append(row)
                else:
                    row.update(max_abs=e[0], max_rel=e[1], elem_rel=e[2])
                    if not e[1] <= a.tol:
                        failures.append(row)
                rows.append(row)
            exp = EXPECTED_TOP1.get(name, {}).get(os.path.splitext(case)[0])
            if exp is not None:
                k_top = labels[int(np.argmax(kout[out_names[0]]))]
                ok = k_top == exp
                rows.append({"model": name, "input": case, "top1": k_top, "expected": exp, "ok": ok})
                if not ok:
                    failures.append(rows[-1])

    # summary per model
    print(f"{'model':40s} {'cases':>5s} {'outputs':>7s} {'worst max_abs':>14s} {'worst max_rel':>14s} {'worst elem_rel':>14s}")
    for name in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == name and "max_abs" in r]
        if not rs:
            continue
        print(f"{name:40s} {len({r['input'] for r in rs}):5d} {len({r['output'] for r in rs}):7d} "
              f"{max(r['max_abs'] for r in rs):14.3e} {max(r['max_rel'] for r in rs):14.3e} {max(r['elem_rel'] for r in rs):14.3e}")
    for r in rows:
        if "top1" in r:
            print(f"top-1 {r['model']} {r['input']}: {r['top1']} (expected {r['expected']}) {'ok' if r['ok'] else 'MISMATCH'}")
    if a.report:
        with open(a.report, "w") as f:
            json.dump(rows, f, indent=1)
    if failures:
        print(f"FAILED: {len(failures)} comparisons over tolerance {a.tol}:")
        for r in failures[:20]:
            print("  ", r)
        sys.exit(1)
    print(f"all {sum(1 for r in rows if 'max_abs' in r)} output comparisons within max_rel {a.tol}")


if __name__ == "__main__":
    main()
