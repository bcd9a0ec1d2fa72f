#!/usr/bin/env python3
"""Writes crates/kestrel/tests/data/gpu_split.onnx: a small CNN with ops the GPU backend has no
kernel for in the middle and at the end (ReduceMean, Resize, ArgMax), so that a GPU session must
cut the graph into GPU and CPU segments (tests/gpu_split.rs). Seeded: the file is reproducible."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)


def w(name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)


nodes = [
    helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
    helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
    # channel mean: no GPU kernel -> CPU segment in the middle
    helper.make_node("ReduceMean", ["r1", "axes"], ["m"], keepdims=1, name="mean_c"),
    helper.make_node("Mul", ["r1", "m"], ["g"], name="gate"),
    helper.make_node("Conv", ["g", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1], name="conv2"),
    # nearest 2x upsampling: no GPU kernel
    helper.make_node("Resize", ["c2", "", "scales"], ["u"], mode="nearest", name="up"),
    helper.make_node("Add", ["u", "c1"], ["s"], name="skip"),
    helper.make_node("Conv", ["s", "w3", "b3"], ["y"], pads=[1, 1, 1, 1], name="conv3"),
    helper.make_node("ArgMax", ["y"], ["cls"], axis=1, keepdims=0, name="argmax"),
]
inits = [
    w("w1", 13, 3, 3, 3), w("b1", 13),
    numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
    w("w2", 13, 13, 3, 3), w("b2", 13),
    numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales"),
    w("w3", 5, 13, 3, 3), w("b3", 5),
]
graph = helper.make_graph(
    nodes,
    "gpu_split",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 22, 30])],
    [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 22, 30]),
        helper.make_tensor_value_info("cls", TensorProto.INT64, [1, 22, 30]),
    ],
    inits,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
onnx.save(model, "crates/kestrel/tests/data/gpu_split.onnx")
print("wrote crates/kestrel/tests/data/gpu_split.onnx")
