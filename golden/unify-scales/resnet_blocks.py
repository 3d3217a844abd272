# RUN: unify-scales
"""ResNet blocks: no Concat or MaxPool, and residual Adds are not tied by default: no scale changes."""

from _placed import placed

from qdq_compiler.models import build_resnet_blocks


def build():
    return placed(build_resnet_blocks(width=8, resolution=32, num_blocks=2), "prepare,place-qdq")
