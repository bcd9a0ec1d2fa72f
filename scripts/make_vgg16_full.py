#!/usr/bin/env python3
"""Build VGG-16 with its standard classifier head from the shared ImageNet conv trunk.

The trunk (13 convs + 5 max-pools, ImageNet weights) comes from ../shared/assets; the head is the
standard VGG-16 one: Flatten -> FC 25088x4096 -> ReLU -> FC 4096x4096 -> ReLU -> FC 4096x1000, with
random (seeded, He-scaled) weights: fine for timing and profiling, meaningless for labels.
The input is fixed to 1x3x224x224 (the head needs 7x7x512).

Usage: python3 scripts/make_vgg16_full.py [TRUNK.onnx] [OUT.onnx]
"""
import os, sys
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
trunk = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "assets", "models", "classifiers", "vgg16_imagenet_conv_trunk.onnx")
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "data", "models", "vgg16_full.onnx")
m = onnx.load(trunk)
g = m.graph
x = g.input[0]
for d, v in zip(x.type.tensor_type.shape.dim, [1, 3, 224, 224]):
    d.ClearField("dim_param"); d.dim_value = v
feat = g.output[0].name
rng = np.random.default_rng(16)
def fc(name, k, n):
    w = (rng.standard_normal((n, k)) * np.sqrt(2.0 / k)).astype(np.float32)
    b = np.zeros(n, np.float32)
    g.initializer.extend([numpy_helper.from_array(w, name + ".weight"), numpy_helper.from_array(b, name + ".bias")])
nodes = [helper.make_node("Flatten", [feat], ["flat"], name="flatten", axis=1)]
fc("fc6", 25088, 4096); nodes += [helper.make_node("Gemm", ["flat", "fc6.weight", "fc6.bias"], ["fc6"], name="fc6", transB=1), helper.make_node("Relu", ["fc6"], ["relu6"], name="relu6")]
fc("fc7", 4096, 4096); nodes += [helper.make_node("Gemm", ["relu6", "fc7.weight", "fc7.bias"], ["fc7"], name="fc7", transB=1), helper.make_node("Relu", ["fc7"], ["relu7"], name="relu7")]
fc("fc8", 4096, 1000); nodes += [helper.make_node("Gemm", ["relu7", "fc8.weight", "fc8.bias"], ["logits"], name="fc8", transB=1)]
g.node.extend(nodes)
del g.output[:]
g.output.extend([helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])])
os.makedirs(os.path.dirname(out), exist_ok=True)
onnx.save(m, out)
print(f"wrote {out} ({os.path.getsize(out) / 1e6:.0f} MB)")
