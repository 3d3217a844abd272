"""Named pipelines: the default flows written down as text, printable and editable."""

from __future__ import annotations

from qdq_compiler.pm.registry import register_pipeline

PREPARE = "infer-shapes,canonicalize,fold-constants,fold-bn,canonicalize,infer-shapes"
TRT_INT8 = ",".join(
    [
        "upgrade-opset",
        PREPARE,
        "place-qdq",
        "calibrate",
        "unify-scales",
        "fold-scales",
        "cleanup-qdq",
        "legalize-trt",
        "verify-trt",
    ]
)

TRT_INT8_FROM_QDQ = ",".join(
    [
        "upgrade-opset",
        "canonicalize",  # Identity/Dropout go first, so recorded scales carry the names the pipeline keeps
        "strip-qdq",
        PREPARE,
        "place-qdq",
        "import-scales",
        "unify-scales",
        "fold-scales",
        "cleanup-qdq",
        "legalize-trt",
        "verify-trt",
    ]
)

register_pipeline(
    "prepare",
    PREPARE,
    "Clean a float export for quantization: shapes, canonical form, constant folding, BN folding.",
)
register_pipeline(
    "trt-int8",
    TRT_INT8,
    "PTQ for TensorRT: prepare, place Q/DQ, calibrate, unify scales, fold INT8 weights, clean up, "
    "legalize, lint.",
)
register_pipeline(
    "trt-int8-from-qdq",
    TRT_INT8_FROM_QDQ,
    "Re-place an already-quantized model's Q/DQ for TensorRT, keeping its scales: strip its Q/DQ, prepare, "
    "place, import the scales, unify, fold, clean up, legalize, lint.",
)
