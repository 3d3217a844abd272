"""Detection evaluation: a synthetic labelled data set, box decoding, NMS and COCO mAP of ONNX detectors."""

from __future__ import annotations

CLASS_NAMES = ("circle", "rectangle", "triangle", "cross")
IMAGE_SIZE = 160
