#!/usr/bin/env python3
"""Inputs for the GPU caching benchmark on the device machine (bench/caching/gpu_device.sh),
sized for its 64 MiB transfer limit: 224x224 centre crops (the classifiers' preprocessing
size) of box.mp4 (40 frames), tree.avi (30) and the synthetic static-camera clip (40, as
make_synthetic.py), as PNG folders; MobileNetV2 with fp16-stored weights (`kestrel convert
--weights-only`); and the VGG-16 conv trunk with synthetic weights of the same shapes (a
repeated pseudo-random pattern scaled per layer, so that it compresses to 40 KB with xz: speed
does not depend on the weights). Usage: prepare_gpu_clips.py ASSETS OUT_DIR KESTREL"""
import lzma, os, subprocess, sys
import cv2
import numpy as np
import onnx
from onnx import numpy_helper

assets, out, kestrel = sys.argv[1:4]
os.makedirs(out, exist_ok=True)


def crop(img):
    h, w = img.shape[:2]
    s = 224 / min(h, w)
    img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    y, x = (h - 224) // 2, (w - 224) // 2
    return img[y:y + 224, x:x + 224]


for clip, n in [("box.mp4", 40), ("tree.avi", 30)]:
    d = os.path.join(out, clip.split(".")[0])
    os.makedirs(d, exist_ok=True)
    cap = cv2.VideoCapture(os.path.join(assets, "video", clip))
    for i in range(n):
        ok, f = cap.read()
        if not ok:
            break
        cv2.imwrite(os.path.join(d, f"frame_{i:04d}.png"), crop(f))
img = cv2.resize(cv2.imread(os.path.join(assets, "photos", "dog.jpg")), (640, 480), interpolation=cv2.INTER_AREA)
patch = cv2.resize(cv2.imread(os.path.join(assets, "photos", "orange.jpg")), (56, 56), interpolation=cv2.INTER_AREA)
d = os.path.join(out, "synthetic")
os.makedirs(d, exist_ok=True)
for i in range(40):
    f = img.copy()
    x, y = 200 + (i * 3) % 240, 220
    f[y:y + 56, x:x + 56] = patch
    cv2.imwrite(os.path.join(d, f"frame_{i:04d}.png"), crop(f))
subprocess.run([kestrel, "convert", os.path.join(assets, "models", "classifiers", "mobilenet_v2_torchvision.onnx"),
                "--weights-only", "-o", os.path.join(out, "mobilenet_v2_f16w.onnx")], check=True)
m = onnx.load(os.path.join(assets, "models", "classifiers", "vgg16_imagenet_conv_trunk.onnx"))
base = np.random.default_rng(0).standard_normal(1021).astype(np.float32)
for init in m.graph.initializer:
    a = numpy_helper.to_array(init)
    scale = np.sqrt(2.0 / np.prod(a.shape[1:])) if a.ndim == 4 else 0.01
    v = (np.resize(base, a.size).reshape(a.shape) * np.float32(scale)).astype(np.float32)
    init.CopyFrom(numpy_helper.from_array(v, init.name))
open(os.path.join(out, "vgg_trunk_pattern.onnx.xz"), "wb").write(lzma.compress(m.SerializeToString(), preset=6))
