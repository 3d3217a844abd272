"""clip-to-relu: Clip(x, 0, +inf) is Relu(x); TensorRT fuses a Relu into the Conv before it."""

import numpy as np

from qdq_compiler.api import Pattern, const, equals, op, pattern_pass

FLOAT_MAX = float(np.finfo(np.float32).max)  # opset 6-10 Clip: `max` defaults to it

CLIP_INPUTS = Pattern(  # opset 11+: min and max are inputs; a left-out max is +inf
    "clip-to-relu",
    op("Clip", "x", const("min", equals(0)), const("max", equals(np.inf), optional=True)),
    rewrite=lambda m: m.op("Relu", m["x"]),
)
CLIP_ATTRIBUTES = Pattern(  # opset 6-10: min and max are attributes
    "clip-attributes-to-relu",
    op("Clip", "x", attrs={"min": 0.0, "max": lambda high: high >= FLOAT_MAX}),
    rewrite=lambda m: m.op("Relu", m["x"]),
    counter="num-clip-to-relu",
)

ClipToRelu = pattern_pass(
    "clip-to-relu", "Replace Clip(x, 0, +inf) by Relu(x) (example plugin).", [CLIP_INPUTS, CLIP_ATTRIBUTES]
)
