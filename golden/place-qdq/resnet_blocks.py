# RUN: prepare,place-qdq
"""The ResNet-block test model after placement: every Conv/Gemm input, the skip input of each residual Add
and the GlobalAveragePool input carry Q/DQ; the stem (3 input channels) stays float."""

from qdq_compiler.models import build_resnet_blocks


def build():
    return build_resnet_blocks(width=8, resolution=32, num_blocks=2)
