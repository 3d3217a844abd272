# RUN: prepare,place-qdq
"""The YOLOv7-tiny-structured test model after placement: Conv inputs, MaxPool inputs (downsampling and SPP)
carry Q/DQ; the three detection-head output convs, their decode subgraph and the stem stay float."""

from qdq_compiler.models import build_yolov7_tiny


def build():
    return build_yolov7_tiny(width=0.25, resolution=64)
