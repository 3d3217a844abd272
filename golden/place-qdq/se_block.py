# RUN: prepare,place-qdq
"""A squeeze-excitation block after placement (int8-mul, the default): the SE Mul reads the stem's output
through the Q/DQ GlobalAveragePool reads and the HardSigmoid gate through its own Q/DQ, so TensorRT can run
DQ -> Mul -> Q as one INT8 pointwise kernel; the closing head conv stays float."""

from qdq_compiler.models.idioms import build_se


def build():
    return build_se()
