# RUN: unify-scales
"""Scale tying on the placed YOLOv7-tiny-structured model. Scales are set deterministically (the i-th Q
gets (i + 1) / 64) instead of calibrated, so the dump shows only what unify-scales does: every Concat's
inputs/output and every MaxPool's input/output end with one scale, the largest in their group."""

import numpy as np

from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.ir.qdq import set_scale
from qdq_compiler.models import build_yolov7_tiny
from qdq_compiler.passes.calibrate import activation_quantizers
from qdq_compiler.pm import PassContext, PassManager


def build():
    model = load_model(build_yolov7_tiny(width=0.25, resolution=64))
    PassManager("prepare,place-qdq").run(model, PassContext(), stamp=False)
    for index, quantize in enumerate(activation_quantizers(model.graph)):
        set_scale(quantize, np.float32((index + 1) / 64))
    return to_proto(model)
