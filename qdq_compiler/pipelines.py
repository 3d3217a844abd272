"""Named pipelines: the default flows written down as text, printable and editable."""

from __future__ import annotations

from qdq_compiler.pm.registry import register_pipeline

PREPARE = "infer-shapes,canonicalize,fold-constants,fold-bn,canonicalize,infer-shapes"

register_pipeline(
    "prepare",
    PREPARE,
    "Clean a float export for quantization: shapes, canonical form, constant folding, BN folding.",
)
