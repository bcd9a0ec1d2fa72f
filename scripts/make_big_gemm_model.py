#!/usr/bin/env python3
"""Writes crates/kestrel/tests/data/gpu_big_gemm.onnx: layers for the GPU's large-tile GEMM
(conv1x1_big.wgsl; tests/gpu_big_gemm.rs) on a 45x37 map (1665 pixels: partial pixel tiles)
with odd channel counts (partial channel tiles): a 3x3 13->64 layer, a 3x3 64->127 layer
(Winograd's batched GEMM), two 1x1 127->130 layers whose Add + Relu fuses into the second
(residual epilogue), a 1x1 130->300 layer and a 1x1 300->67 layer (split-K when forced)."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(17)
inits = []


def conv(x, y, cin, cout, k, name):
    w = (rng.standard_normal((cout, cin, k, k)) * (1.0 / np.sqrt(cin * k * k))).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    inits.append(numpy_helper.from_array(w, name + "_w"))
    inits.append(numpy_helper.from_array(b, name + "_b"))
    return helper.make_node("Conv", [x, name + "_w", name + "_b"], [y], pads=[k // 2] * 4, name=name)


nodes = [
    conv("x", "a", 13, 64, 3, "conv3x3_a"),
    helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
    conv("ar", "b", 64, 127, 3, "conv3x3_b"),
    helper.make_node("Relu", ["b"], ["br"], name="relu_b"),
    conv("br", "c", 127, 130, 1, "conv1x1_c"),
    conv("br", "d", 127, 130, 1, "conv1x1_d"),
    helper.make_node("Add", ["c", "d"], ["s"], name="add"),
    helper.make_node("Relu", ["s"], ["sr"], name="relu_s"),
    conv("sr", "e", 130, 300, 1, "conv1x1_e"),
    helper.make_node("Relu", ["e"], ["er"], name="relu_e"),
    conv("er", "y", 300, 67, 1, "conv1x1_f"),
]
graph = helper.make_graph(
    nodes,
    "gpu_big_gemm",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 13, 45, 37])],
    [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 67, 45, 37]),
        helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 130, 45, 37]),
    ],
    inits,
)
m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, "crates/kestrel/tests/data/gpu_big_gemm.onnx")
