#!/usr/bin/env python3
"""Writes crates/kestrel/tests/data/gpu_residual.onnx: residual blocks that the GPU plan fuses
(Conv -> Add [-> Relu] as one 1x1 GEMM with the residual in its epilogue; tests/gpu_residual.rs):
an Add + Relu after a bottleneck, an Add with the operands the other way round on a split-K layer
(256 input channels on a 7x9 map) that is also a graph output, and an Add of two convolutions
(fused into the later one) whose Relu is not fusable (the Add has a second reader)."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(11)
inits = []


def conv(x, y, cin, cout, k, name, pads=0):
    w = (rng.standard_normal((cout, cin, k, k)) * (1.0 / np.sqrt(cin * k * k))).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    inits.append(numpy_helper.from_array(w, name + "_w"))
    inits.append(numpy_helper.from_array(b, name + "_b"))
    return helper.make_node("Conv", [x, name + "_w", name + "_b"], [y], pads=[pads] * 4, name=name)


nodes = [
    conv("x", "c1", 256, 64, 1, "b1_conv1"),
    helper.make_node("Relu", ["c1"], ["c1r"], name="b1_relu1"),
    conv("c1r", "c2", 64, 64, 3, "b1_conv2", pads=1),
    helper.make_node("Relu", ["c2"], ["c2r"], name="b1_relu2"),
    conv("c2r", "c3", 64, 256, 1, "b1_conv3"),
    helper.make_node("Add", ["c3", "x"], ["s1"], name="b1_add"),
    helper.make_node("Relu", ["s1"], ["r1"], name="b1_relu3"),
    conv("r1", "d", 256, 256, 1, "b2_conv"),
    helper.make_node("Add", ["r1", "d"], ["s2"], name="b2_add"),
    conv("s2", "e1", 256, 256, 1, "b3_conv_a"),
    conv("s2", "e2", 256, 256, 1, "b3_conv_b"),
    helper.make_node("Add", ["e1", "e2"], ["s3"], name="b3_add"),
    helper.make_node("Relu", ["s3"], ["r3"], name="b3_relu"),
    helper.make_node("Mul", ["r3", "s3"], ["y"], name="b3_mul"),
    # strided layers on a small map: im2col + split-K GEMM chosen automatically
    helper.make_node("Conv", ["s2", "ds3_w", "ds3_b"], ["z3"], pads=[1, 1, 1, 1], strides=[2, 2], name="ds_conv3x3"),
    helper.make_node("Conv", ["s2", "ds1_w", "ds1_b"], ["z1"], strides=[2, 2], name="ds_conv1x1"),
    helper.make_node("Add", ["z3", "z1"], ["z"], name="ds_add"),
    # depthwise layers for the GPU's depthwise kernel: dilated 3x3 with asymmetric pads over
    # several 16x16 tiles, and 7x7 stride 2
    helper.make_node("Conv", ["x", "dw3_w", "dw3_b"], ["dw3"], group=256, dilations=[2, 2], pads=[2, 1, 1, 2], name="dw_dilated"),
    helper.make_node("Conv", ["dw3", "dw7_w", "dw7_b"], ["dw"], group=256, strides=[2, 2], pads=[3, 3, 3, 3], name="dw_7x7_s2"),
]
for name, k in [("dw3", 3), ("dw7", 7)]:
    inits.append(numpy_helper.from_array((rng.standard_normal((256, 1, k, k)) / k).astype(np.float32), name + "_w"))
    inits.append(numpy_helper.from_array((rng.standard_normal(256) * 0.1).astype(np.float32), name + "_b"))
for name, k in [("ds3", 3), ("ds1", 1)]:
    inits.append(numpy_helper.from_array((rng.standard_normal((64, 256, k, k)) / np.sqrt(256 * k * k)).astype(np.float32), name + "_w"))
    inits.append(numpy_helper.from_array((rng.standard_normal(64) * 0.1).astype(np.float32), name + "_b"))
graph = helper.make_graph(
    nodes,
    "gpu_residual",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256, 7, 9])],
    [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256, 7, 9]),
        helper.make_tensor_value_info("s2", TensorProto.FLOAT, [1, 256, 7, 9]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 64, 4, 5]),
        helper.make_tensor_value_info("dw", TensorProto.FLOAT, [1, 256, 3, 4]),
    ],
    inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
onnx.save(model, "crates/kestrel/tests/data/gpu_residual.onnx")
print("wrote crates/kestrel/tests/data/gpu_residual.onnx")
