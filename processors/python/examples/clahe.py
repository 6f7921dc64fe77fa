#!/usr/bin/python3
"""CLAHE contrast filter: equalises the lightness channel in tiles (OpenCV's
createCLAHE on L of Lab), which brings out detail in dark or hazy frames
before a detector runs.

    /usr/bin/python3 processors/python/examples/clahe.py --listen 127.0.0.1:50061

then use "grpc://127.0.0.1:50061" as a pipeline step's processor.
"""

import os
import sys
import threading

import cv2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from imageflow_processor import Param, Processor, Result, main  # noqa: E402


class Clahe(Processor):
    name = "clahe"
    description = "Contrast-limited adaptive histogram equalisation of the lightness (OpenCV CLAHE on Lab L)."
    outputs = ("image",)
    params = (
        Param("clip_limit", "float", 2.0, "Contrast limit per tile; higher gives more contrast and noise.", lo=0.1, hi=40),
        Param("tile_grid", "int", 8, "Tiles per side of the picture.", lo=1, hi=64),
    )

    def __init__(self):
        # A CLAHE object is not safe to share between threads: one per thread.
        self._local = threading.local()

    def _clahe(self, clip, grid):
        key = (clip, grid)
        if getattr(self._local, "key", None) != key:
            self._local.clahe = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid))
            self._local.key = key
        return self._local.clahe

    def process(self, image, params, call):
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2Lab)
        l, a, b = cv2.split(lab)
        l = self._clahe(params["clip_limit"], params["tile_grid"]).apply(l)
        return Result(image=cv2.cvtColor(cv2.merge((l, a, b)), cv2.COLOR_Lab2BGR))


if __name__ == "__main__":
    main(Clahe())
