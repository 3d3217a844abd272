"""The recipe a compiled model records about itself: pipeline, qdqc version, TensorRT target, calibration.

Written into the model's metadata_props by the code that decides each part, read back by every later
command (lint, verify-trt, explain, inspect, build) through `read_recipe`, so they agree with what the
model was compiled for rather than with a command-line default:

- `qdq_compiler.pipeline`, `qdq_compiler.version`: the pass manager (pm.manager.stamp_model);
- `qdq_compiler.target`, `qdq_compiler.io_fp16`: the legalize-trt pass (`record_target`);
- `qdq_compiler.calibration`: the calibrate pass (its method) or import-scales ("imported")
  (`record_calibration`).

A model without these keys (another tool's export, or a pipeline without legalize-trt) reads as a recipe
of Nones: readers then fall back to the conservative TensorRT 10 assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from qdq_compiler.pm.manager import PIPELINE_METADATA_KEY, VERSION_METADATA_KEY

TARGET_KEY = "qdq_compiler.target"
IO_FP16_KEY = "qdq_compiler.io_fp16"
CALIBRATION_KEY = "qdq_compiler.calibration"
RECIPE_KEYS = (PIPELINE_METADATA_KEY, VERSION_METADATA_KEY, TARGET_KEY, IO_FP16_KEY, CALIBRATION_KEY)

IMPORTED = "imported"  # the calibration entry of a model whose scales came from its source (import-scales)
TRT_MAJOR_OF_TARGET = {"trt10": 10, "trt11": 11}


@dataclass(frozen=True)
class Recipe:
    """What a model says it was compiled with; None where it does not say."""

    pipeline: str | None = None
    version: str | None = None
    target: str | None = None  # 'trt10' | 'trt11'
    io_fp16: bool | None = None
    calibration: str | None = None  # a calibration method ('mse', 'max', ...) or IMPORTED

    @property
    def trt_major(self) -> int | None:
        """The TensorRT major version the model was legalized for (None when not recorded)."""
        return TRT_MAJOR_OF_TARGET.get(self.target or "")

    @property
    def strongly_typed_only(self) -> bool:
        """True when the ONNX types carry the precision plan (trt11): only a strongly typed build fits."""
        return self.target == "trt11"

    def target_text(self) -> str:
        """The target in words, e.g. 'trt11 (TensorRT 11, strongly typed; float remainder FP16, ...)'."""
        if self.target is None:
            return "not recorded (not compiled by qdqc, or by a pipeline without legalize-trt)"
        io = "float16" if self.io_fp16 else "float32"
        if self.target == "trt11":
            return f"trt11 (TensorRT 11, strongly typed; float remainder FP16, I/O {io})"
        return "trt10 (TensorRT 10, weakly typed --int8 --fp16 or --stronglyTyped; float remainder FP32)"

    def calibration_text(self) -> str:
        if self.calibration is None:
            return "not recorded"
        if self.calibration == IMPORTED:
            return "imported (scales taken over from the source Q/DQ model)"
        return self.calibration

    def lines(self) -> list[tuple[str, str]]:
        """(label, text) pairs for people: target, calibration, pipeline, qdqc version."""
        return [
            ("target", self.target_text()),
            ("calibration", self.calibration_text()),
            ("pipeline", self.pipeline or "not recorded"),
            ("qdqc version", self.version or "not recorded"),
        ]

    def to_json(self) -> dict[str, object]:
        return {
            "pipeline": self.pipeline,
            "qdqc_version": self.version,
            "target": self.target,
            "io_fp16": self.io_fp16,
            "calibration": self.calibration,
        }


def read_recipe(model: ir.Model) -> Recipe:
    """The recipe recorded in `model`'s metadata (fields not recorded are None)."""
    props = model.metadata_props
    io_fp16 = props.get(IO_FP16_KEY)
    return Recipe(
        pipeline=props.get(PIPELINE_METADATA_KEY),
        version=props.get(VERSION_METADATA_KEY),
        target=props.get(TARGET_KEY),
        io_fp16=None if io_fp16 is None else io_fp16 == "true",
        calibration=props.get(CALIBRATION_KEY),
    )


def record_target(model: ir.Model, target: str, io_fp16: bool) -> bool:
    """Record the TensorRT target legalize-trt made the model for; True when the record changed."""
    return _record(model, {TARGET_KEY: target, IO_FP16_KEY: "true" if io_fp16 else "false"})


def record_calibration(model: ir.Model, method: str) -> bool:
    """Record how the activation scales were set (a calibration method or IMPORTED); True when changed."""
    return _record(model, {CALIBRATION_KEY: method})


def _record(model: ir.Model, entries: dict[str, str]) -> bool:
    changed = any(model.metadata_props.get(key) != value for key, value in entries.items())
    model.metadata_props.update(entries)
    return changed
