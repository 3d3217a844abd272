# RUN: calibrate{method=max}
"""Calibrate with `max` on data whose answer is known: the Q on relu gets scale max(relu(x)) / 127 = 6/127."""

import numpy as np
import onnx


def build() -> onnx.ModelProto:
    return onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y) <float s = {1.0}, int8 zp = {0}> {
           r = Relu(x)
           q = QuantizeLinear(r, s, zp)
           y = DequantizeLinear(q, s, zp)
        }"""
    )


def calibration_data() -> list[dict[str, np.ndarray]]:
    return [
        {"x": np.array([[1.0, -8.0, 2.0, 0.5]], np.float32)},
        {"x": np.array([[6.0, 3.0, -1.0, 0.0]], np.float32)},
    ]
