#!/usr/bin/env python3
"""Independent check of Kestrel's cost model: parameter and MAC counts per model, computed here
from the ONNX file with onnx's own shape inference, compared with `kestrel info --json`.

Parameters = elements of floating-point initializers and Constant values. MACs = Conv:
out_elems * C_in/group * prod(kernel); ConvTranspose: in_elems * C_out/group * prod(kernel);
Gemm/MatMul: M * N * K (batched); BatchNormalization: elements (one multiply-add each).
Usage: python3 scripts/check_costs.py [--kestrel BIN] [MODEL ...]   (exit 1 on any mismatch)"""
import argparse, glob, json, os, subprocess, sys
import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


def count(path):
    m = onnx.load(path)
    g = m.graph
    params = sum(int(np.prod(t.dims)) for t in g.initializer if t.data_type in FLOAT)
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type in FLOAT:
                    params += int(np.prod(a.t.dims))
    inits = {t.name for t in g.initializer}
    for i in g.input:
        if i.name in inits:
            continue
        dims = i.type.tensor_type.shape.dim
        for k, d in enumerate(dims):
            if not d.HasField("dim_value"):
                d.dim_value = 1 if k == 0 else (3 if k == 1 and len(dims) == 4 else 224)
    m = shape_inference.infer_shapes(m, data_prop=True)
    shapes = {}
    for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    macs = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = shapes[n.input[1]]; y = shapes[n.output[0]]
            macs += int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose":
            w = shapes[n.input[1]]; x = shapes[n.input[0]]
            macs += int(np.prod(x)) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul"):
            a = shapes[n.input[0]]; y = shapes[n.output[0]]
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            k = a[0] if trans_a else a[-1]
            macs += int(np.prod(y)) * k
        elif n.op_type == "BatchNormalization":
            macs += int(np.prod(shapes[n.output[0]]))
    return params, macs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kestrel", default=os.path.join(ROOT, "target", "release", "kestrel"))
    ap.add_argument("models", nargs="*")
    a = ap.parse_args()
    models = a.models or sorted(glob.glob(os.path.join(ROOT, "assets", "models", "*.onnx")) + glob.glob(os.path.join(ROOT, "..", "shared", "assets", "models", "*", "*.onnx")))
    bad = 0
    print(f"{'model':40s} {'params (onnx)':>14s} {'params (kestrel)':>16s} {'MACs (onnx)':>14s} {'MACs (kestrel)':>14s}")
    for p in models:
        params, macs = count(p)
        k = json.loads(subprocess.run([a.kestrel, "info", p, "--json"], capture_output=True, text=True, check=True).stdout)
        ok = k["parameters"] == params and k["macs"] == macs
        bad += not ok
        print(f"{os.path.basename(p):40s} {params:14d} {k['parameters']:16d} {macs:14d} {k['macs']:14d} {'ok' if ok else 'MISMATCH'}")
    sys.exit(1 if bad else 0)


main()
