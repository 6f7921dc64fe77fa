#!/usr/bin/python3
"""ArUco marker detector: finds fiducial markers with OpenCV's aruco module
(printed markers on parts, shelves or docks identify them to a camera).
Each marker becomes a detection with class_id set to the marker's number;
the value aruco.ids lists the numbers found.

    /usr/bin/python3 processors/python/examples/aruco.py --listen 127.0.0.1:50062

Markers to print: cv2.aruco.drawMarker(dictionary, id, side_px).
"""

import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from imageflow_processor import Detection, Param, Processor, Result, main  # noqa: E402

DICTIONARIES = {
    "4x4_50": cv2.aruco.DICT_4X4_50,
    "5x5_100": cv2.aruco.DICT_5X5_100,
    "6x6_250": cv2.aruco.DICT_6X6_250,
    "apriltag_36h11": cv2.aruco.DICT_APRILTAG_36h11,
}


class Aruco(Processor):
    name = "aruco"
    description = "Finds ArUco (or AprilTag) markers; class_id is the marker number."
    outputs = ("detections", "values")
    params = (
        Param("dictionary", "enum", "4x4_50", "Marker family printed.", choices=tuple(DICTIONARIES)),
        Param("label", "string", "marker", "Label of every detection."),
    )

    def __init__(self):
        self._dicts = {k: cv2.aruco.getPredefinedDictionary(v) for k, v in DICTIONARIES.items()}

    def process(self, image, params, call):
        # Parameters per call: detectMarkers may adjust them, and calls run
        # on several threads.
        corners, ids, _ = cv2.aruco.detectMarkers(image, self._dicts[params["dictionary"]],
                                                  parameters=cv2.aruco.DetectorParameters_create())
        if ids is None:
            return Result(values={"aruco.ids": ""})
        detections = []
        for quad, marker in sorted(zip(corners, ids.flatten()), key=lambda c: int(c[1])):
            quad = np.asarray(quad).reshape(4, 2)
            x0, y0 = quad.min(axis=0)
            x1, y1 = quad.max(axis=0)
            detections.append(Detection(x0, y0, x1 - x0, y1 - y0, params["label"], 1.0, class_id=int(marker)))
        return Result(detections=detections,
                      values={"aruco.ids": ",".join(str(d.class_id) for d in detections)})


if __name__ == "__main__":
    main(Aruco())
