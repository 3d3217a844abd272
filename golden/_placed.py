"""Shared by the whole-model golden cases: a test model run through `prepare,place-qdq` with deterministic
activation scales ((i + 1) / 64 for the i-th activation Q), so each case's dump shows only its own pass."""

import numpy as np
import onnx

from qdq_compiler.ir import load_model, to_proto
from qdq_compiler.ir.qdq import set_scale
from qdq_compiler.passes.calibrate import activation_quantizers
from qdq_compiler.pm import PassContext, PassManager


def placed(proto: onnx.ModelProto, pipeline: str = "prepare,place-qdq") -> onnx.ModelProto:
    model = load_model(proto)
    PassManager(pipeline).run(model, PassContext(), stamp=False)
    for index, quantize in enumerate(activation_quantizers(model.graph)):
        set_scale(quantize, np.float32((index + 1) / 64))
    return to_proto(model)
