#!/usr/bin/env python3
"""Write the official ONNX backend node tests for the ops Kestrel claims as files.

The `onnx` wheel ships them as code (onnx.backend.test.case.node.collect_testcases()); this writes
each selected case as <out>/<case>/model.onnx + test_data_set_N/{input,output}_K.pb, the layout of
onnx/backend/test/data/node, plus <out>/manifest.json mapping case -> {op, rtol, atol}.
A case is selected when its name starts with test_<op> for a claimed op (longest match wins);
function-expanded variants (`_expanded`) are skipped: they test other ops.

Usage: python3 scripts/gen_onnx_node_tests.py [OUT_DIR]   (default data/onnx-node)
"""
import json, os, sys
import onnx
from onnx import numpy_helper
import onnx.backend.test.case.node as node_cases

OPS = """Conv ConvTranspose MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization Relu
LeakyRelu PRelu Clip Sigmoid HardSigmoid HardSwish Tanh Exp Sqrt Softmax Gemm MatMul Add Sub Mul Div
Concat Split Slice Reshape Flatten Transpose Squeeze Unsqueeze Pad Resize Constant ConstantOfShape
Shape Gather GatherND Cast Identity Dropout ArgMax TopK ReduceMean Equal""".split()

# test-name prefix (after "test_") for each op, as the ONNX suite spells it
def prefix(op):
    special = {"BatchNormalization": "batchnorm", "GlobalAveragePool": "globalaveragepool",
               "GlobalMaxPool": "globalmaxpool", "ConstantOfShape": "constantofshape",
               "GatherND": "gathernd", "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish",
               "LeakyRelu": "leakyrelu", "ConvTranspose": "convtranspose", "MaxPool": "maxpool",
               "AveragePool": "averagepool", "ArgMax": "argmax", "TopK": "top_k", "ReduceMean": "reduce_mean",
               "MatMul": "matmul", "PRelu": "prelu"}
    return special.get(op, op.lower())


ALIASES = {"constant_pad": "Pad", "edge_pad": "Pad", "reflect_pad": "Pad", "wrap_pad": "Pad",
           "basic_conv": "Conv"}


def op_of(name):
    base = name[len("test_"):]
    for a, op in ALIASES.items():
        if base == a or base.startswith(a + "_"):
            return op
    best = None
    for op in OPS:
        p = prefix(op)
        if base == p or base.startswith(p + "_"):
            if best is None or len(p) > len(prefix(best)):
                best = op
    return best


def write_tensor(path, arr, name):
    if isinstance(arr, onnx.TensorProto):
        t = onnx.TensorProto(); t.CopyFrom(arr); t.name = name
    else:
        t = numpy_helper.from_array(arr, name)
    with open(path, "wb") as f:
        f.write(t.SerializeToString())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "data/onnx-node"
    os.makedirs(out, exist_ok=True)
    manifest = {}
    for case in node_cases.collect_testcases():
        if "_expanded" in case.name:
            continue
        op = op_of(case.name)
        if op is None or op not in {n.op_type for n in case.model.graph.node}:
            continue
        d = os.path.join(out, case.name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        ins = [i.name for i in case.model.graph.input]
        outs = [o.name for o in case.model.graph.output]
        ok = True
        for k, (inputs, outputs) in enumerate(case.data_sets or []):
            ds = os.path.join(d, f"test_data_set_{k}")
            os.makedirs(ds, exist_ok=True)
            try:
                for j, arr in enumerate(inputs):
                    write_tensor(os.path.join(ds, f"input_{j}.pb"), arr, ins[j] if j < len(ins) else "")
                for j, arr in enumerate(outputs):
                    write_tensor(os.path.join(ds, f"output_{j}.pb"), arr, outs[j] if j < len(outs) else "")
            except Exception as e:  # sequences/optionals: not tensors
                ok = False
        if ok and case.data_sets:
            manifest[case.name] = {"op": op, "rtol": case.rtol, "atol": case.atol}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    per_op = {}
    for v in manifest.values():
        per_op[v["op"]] = per_op.get(v["op"], 0) + 1
    print(f"wrote {len(manifest)} cases for {len(per_op)} ops to {out}")
    missing = [op for op in OPS if op not in per_op]
    if missing:
        print("ops without cases:", missing)


if __name__ == "__main__":
    main()
