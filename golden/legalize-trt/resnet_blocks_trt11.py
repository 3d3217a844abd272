# RUN: legalize-trt{target=trt11}
"""ResNet blocks for TensorRT 11: FP16 float remainder and scales, float32 input/output through Casts."""

from _placed import placed

from qdq_compiler.models import build_resnet_blocks


def build():
    return placed(
        build_resnet_blocks(width=8, resolution=32, num_blocks=2),
        "upgrade-opset{min=19},prepare,place-qdq,fold-scales",
    )
