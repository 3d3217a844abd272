# RUN: fold-scales
"""ResNet blocks: every Conv/Gemm weight Q folds into an INT8 initializer behind its DQ."""

from _placed import placed

from qdq_compiler.models import build_resnet_blocks


def build():
    return placed(build_resnet_blocks(width=8, resolution=32, num_blocks=2), "prepare,place-qdq")
