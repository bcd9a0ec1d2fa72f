#!/usr/bin/env python3
"""Writes an ncnn .bin of random weights for an ncnn .param (speed does not depend on the
weights; the .param files are small enough to travel to the device machine, the .bin of VGG-16
is not). Layers with weights: Convolution / ConvolutionDepthWise (param 6 = weight_data_size,
5 = bias_term) and InnerProduct (2 = weight_data_size, 1 = bias_term); each weight blob is a
4-byte tag 0x01306B47 (float16, as pnnx writes them) then the halves padded to 4 bytes, the bias
follows untagged in float32 (ncnn's ModelBin). The file has exactly the size of pnnx's.

Usage: ncnn_random_bin.py MODEL.param OUT.bin"""
import struct, sys
import numpy as np


def layers(param_path):
    with open(param_path) as f:
        lines = f.read().split("\n")
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        kind, n_in, n_out = parts[0], int(parts[2]), int(parts[3])
        kv = {}
        for p in parts[4 + n_in + n_out:]:
            k, v = p.split("=", 1)
            kv[k] = v
        yield kind, kv


def main():
    param, out = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    with open(out, "wb") as f:
        for kind, kv in layers(param):
            if kind in ("Convolution", "ConvolutionDepthWise", "InnerProduct"):
                wkey, bkey = ("2", "1") if kind == "InnerProduct" else ("6", "5")
                n = int(kv[wkey])
                num_output = int(kv.get("0", 0))
                f.write(struct.pack("<I", 0x01306B47))
                # He-scaled, so activations stay in range (no denormals or infinities)
                fan_in = max(n // max(num_output, 1), 1)
                std = (2.0 / fan_in) ** 0.5
                f.write((rng.standard_normal(n) * std).astype(np.float16).tobytes())
                if n % 2:
                    f.write(b"\0\0")
                if int(kv.get(bkey, 0)):
                    f.write(np.zeros(num_output, np.float32).tobytes())


if __name__ == "__main__":
    main()
