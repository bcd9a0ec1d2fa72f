#!/usr/bin/env python3
"""An ideal static-camera clip: a still photo (640x480) with one 56x56 object moving 3 px per
frame, no sensor or compression noise, as PNG frames. It shows what caching can save when its
premise holds exactly (the bundled H.264 clips change 40-70% of 8-px blocks by 2+ levels every
frame). Usage: make_synthetic.py PHOTO OBJECT OUT_DIR [FRAMES]"""
import os, sys
import cv2

photo, obj, out = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 120
os.makedirs(out, exist_ok=True)
img = cv2.resize(cv2.imread(photo), (640, 480), interpolation=cv2.INTER_AREA)
patch = cv2.resize(cv2.imread(obj), (56, 56), interpolation=cv2.INTER_AREA)
for i in range(n):
    f = img.copy()
    x, y = 200 + (i * 3) % 240, 220
    f[y:y + 56, x:x + 56] = patch
    cv2.imwrite(os.path.join(out, f"frame_{i:04d}.png"), f)
