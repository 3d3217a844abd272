# RUN: fold-scales
"""YOLOv7-tiny structure: every quantized Conv weight becomes INT8 behind a DQ; head convs keep float."""

from _placed import placed

from qdq_compiler.models import build_yolov7_tiny


def build():
    return placed(build_yolov7_tiny(width=0.25, resolution=64), "prepare,place-qdq")
