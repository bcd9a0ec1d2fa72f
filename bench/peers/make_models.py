#!/usr/bin/env python3
"""Benchmark models with torchvision architectures and random weights (speed does not depend on
the weights), built with onnx.helper so no PyTorch is needed: ResNet-18, ResNet-50, SqueezeNet
1.1 (opset 13, Conv + BatchNormalization + Relu as torchvision exports them). VGG-16 comes from
scripts/make_vgg16_full.py; MobileNetV2 and EfficientNet-Lite0 are the real models.

Usage: python3 bench/peers/make_models.py [OUT_DIR]   (default data/models)"""
import os, sys
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

rng = np.random.default_rng(0)


class Builder:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, p):
        self.n += 1
        return f"{p}{self.n}"

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv(self, x, cin, cout, k, s=1, p=0, bn=True, relu=True, bias=False):
        n = self.name("conv")
        w = self.init(n + ".w", rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k)))
        ins = [x, w] + ([self.init(n + ".b", np.zeros(cout))] if bias else [])
        y = n
        self.nodes.append(helper.make_node("Conv", ins, [y], name=n, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4))
        if bn:
            b = self.name("bn")
            self.nodes.append(helper.make_node("BatchNormalization", [y, self.init(b + ".s", 1 + 0.1 * rng.standard_normal(cout)),
                self.init(b + ".b", 0.1 * rng.standard_normal(cout)), self.init(b + ".m", 0.1 * rng.standard_normal(cout)),
                self.init(b + ".v", 1 + 0.1 * np.abs(rng.standard_normal(cout)))], [b], name=b, epsilon=1e-5))
            y = b
        if relu:
            r = self.name("relu")
            self.nodes.append(helper.make_node("Relu", [y], [r], name=r))
            y = r
        return y

    def op(self, op, ins, **attrs):
        n = self.name(op.lower())
        self.nodes.append(helper.make_node(op, ins, [n], name=n, **attrs))
        return n

    def fc(self, x, k, n_out):
        n = self.name("fc")
        w = self.init(n + ".w", rng.standard_normal((n_out, k)) * np.sqrt(1.0 / k))
        return self.op("Gemm", [x, w, self.init(n + ".b", np.zeros(n_out))], transB=1)

    def save(self, out, path, ch_out):
        g = helper.make_graph(self.nodes, os.path.basename(path), [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, ch_out])], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="kestrel-bench")
        onnx.checker.check_model(m)
        onnx.save(m, path)


def resnet(depth, path):
    b = Builder()
    x = b.conv("input", 3, 64, 7, 2, 3)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    bottleneck = depth == 50
    layers = [2, 2, 2, 2] if depth == 18 else [3, 4, 6, 3]
    for stage, (blocks, width) in enumerate(zip(layers, [64, 128, 256, 512])):
        for i in range(blocks):
            s = 2 if (i == 0 and stage > 0) else 1
            cout = width * 4 if bottleneck else width
            if bottleneck:
                y = b.conv(x, cin, width, 1)
                y = b.conv(y, width, width, 3, s, 1)
                y = b.conv(y, width, cout, 1, relu=False)
            else:
                y = b.conv(x, cin, width, 3, s, 1)
                y = b.conv(y, width, width, 3, 1, 1, relu=False)
            sc = b.conv(x, cin, cout, 1, s, relu=False) if (s != 1 or cin != cout) else x
            x = b.op("Relu", [b.op("Add", [y, sc])])
            cin = cout
    x = b.op("GlobalAveragePool", [x])
    x = b.op("Flatten", [x], axis=1)
    b.save(b.fc(x, cin, 1000), path, 1000)


def squeezenet11(path):
    b = Builder()
    x = b.conv("input", 3, 64, 3, 2, 0, bn=False, bias=True)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    cin = 64

    def fire(x, cin, s, e):
        q = b.conv(x, cin, s, 1, bn=False, bias=True)
        return b.op("Concat", [b.conv(q, s, e, 1, bn=False, bias=True), b.conv(q, s, e, 3, 1, 1, bn=False, bias=True)], axis=1), 2 * e

    for s, e, pool in [(16, 64, False), (16, 64, True), (32, 128, False), (32, 128, True), (48, 192, False), (48, 192, False), (64, 256, False), (64, 256, False)]:
        x, cin = fire(x, cin, s, e)
        if pool:
            x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    x = b.conv(x, cin, 1000, 1, bn=False, bias=True)
    x = b.op("GlobalAveragePool", [x])
    b.save(b.op("Flatten", [x], axis=1), path, 1000)


out = sys.argv[1] if len(sys.argv) > 1 else "data/models"
os.makedirs(out, exist_ok=True)
resnet(18, os.path.join(out, "resnet18.onnx"))
resnet(50, os.path.join(out, "resnet50.onnx"))
squeezenet11(os.path.join(out, "squeezenet1_1.onnx"))
print("wrote resnet18, resnet50, squeezenet1_1 to", out)
