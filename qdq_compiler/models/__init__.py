"""Deterministic ONNX test-model builders (no downloads) and a registry of small default instances."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import onnx

from qdq_compiler.models.builder import GraphBuilder
from qdq_compiler.models.idioms import build_c2f, build_focus, build_hardswish, build_se, build_silu
from qdq_compiler.models.resnet import build_resnet_blocks
from qdq_compiler.models.synthetic import SCALE_SHAPES, build_chain_model, build_scale_model
from qdq_compiler.models.yolov7_tiny import build_yolov7_tiny

TEST_MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "resnet_blocks": partial(build_resnet_blocks, width=16, resolution=64),
    "yolov7_tiny": partial(build_yolov7_tiny, width=0.25, resolution=160),
    "yolov7_tiny_silu": partial(build_yolov7_tiny, width=0.25, resolution=160, act="silu"),
    "yolov7_tiny_clean": partial(build_yolov7_tiny, width=0.25, resolution=160, export_style=False),
    "chain_500": partial(build_chain_model, 500),
    # the idioms of the CNN families deployed on Jetson (models/idioms.py)
    "c2f": build_c2f,
    "silu": build_silu,
    "focus": build_focus,
    "focus_s2d": partial(build_focus, space_to_depth=True),
    "se_block": build_se,
    "hardswish": build_hardswish,
    "hardswish_mul": partial(build_hardswish, decomposed=True),
}

__all__ = [
    "SCALE_SHAPES",
    "TEST_MODELS",
    "GraphBuilder",
    "build_c2f",
    "build_chain_model",
    "build_focus",
    "build_hardswish",
    "build_resnet_blocks",
    "build_scale_model",
    "build_se",
    "build_silu",
    "build_yolov7_tiny",
]
