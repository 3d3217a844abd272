# RUN: cleanup-qdq
"""YOLOv7-tiny structure after placement: nothing to clean (no duplicate, cancellable or useless Q/DQ)."""

from _placed import placed

from qdq_compiler.models import build_yolov7_tiny


def build():
    return placed(build_yolov7_tiny(width=0.25, resolution=64), "prepare,place-qdq,unify-scales,fold-scales")
