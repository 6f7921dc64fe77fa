#!/usr/bin/python3
"""QR-code detector: finds and decodes QR codes with OpenCV's
QRCodeDetector. Each code becomes a detection labelled "qr" (its bounding
box in pixels) and its text a value qr.<n>.

    /usr/bin/python3 processors/python/examples/qrcode.py --listen 127.0.0.1:50062
"""

import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from imageflow_processor import Detection, Param, Processor, Result, main  # noqa: E402


class QRCode(Processor):
    name = "qrcode"
    description = "Finds and decodes QR codes (OpenCV QRCodeDetector)."
    outputs = ("detections", "values")
    params = (
        Param("label", "string", "qr", "Label of every detection."),
        Param("decode", "bool", True, "Decode the text of each code (slower than detecting only)."),
    )

    def process(self, image, params, call):
        # A detector per call: QRCodeDetector keeps state and is not thread-safe.
        det = cv2.QRCodeDetector()
        if params["decode"]:
            ok, texts, points, _ = det.detectAndDecodeMulti(image)
        else:
            ok, points = det.detectMulti(image)
            texts = None
        if not ok or points is None:
            return Result(values={"qr.count": "0"})
        detections, values = [], {}
        for i, quad in enumerate(np.asarray(points).reshape(-1, 4, 2)):
            x0, y0 = quad.min(axis=0)
            x1, y1 = quad.max(axis=0)
            text = texts[i] if texts is not None else ""
            # A code that was found but could not be read scores lower.
            detections.append(Detection(x0, y0, x1 - x0, y1 - y0, params["label"], 1.0 if text else 0.5))
            if text:
                values["qr.%d" % i] = text
        values["qr.count"] = str(len(detections))
        return Result(detections=detections, values=values)


if __name__ == "__main__":
    main(QRCode())
