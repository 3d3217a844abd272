# RUN: legalize-trt{target=trt11}
"""YOLOv7-tiny structure for TensorRT 11: FP16 remainder; the Resize scales stay float32."""

from _placed import placed

from qdq_compiler.models import build_yolov7_tiny


def build():
    return placed(
        build_yolov7_tiny(width=0.25, resolution=64),
        "upgrade-opset{min=19},prepare,place-qdq,fold-scales",
    )
