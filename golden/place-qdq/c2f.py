# RUN: prepare,place-qdq
"""YOLOv8's C2f block with shortcut after placement: each bottleneck's residual Add reads its skip input
through the same Q/DQ as the bottleneck's first conv (the Add fuses into the second conv's SiLU epilogue),
and the Concat reads the Split's second half and the first bottleneck's output through their DQs (its own
output Q would otherwise sit beside theirs); the closing head conv stays float."""

from qdq_compiler.models.idioms import build_c2f


def build():
    return build_c2f()
