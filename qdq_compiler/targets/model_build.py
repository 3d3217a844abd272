"""Build settings for one model: what its recorded target (targets/recipe.py) and inputs decide.

`qdqc build` and `qdqc explain` both go through `plan_model_build`, so explain prints exactly the trtexec line
`qdqc build MODEL --print-trtexec` prints. The rules:

- TensorRT version: `--trt` when given, else the recorded target's (trt11 -> 11), else 10.
- A trt11 model carries its precision plan in the ONNX types (FP16 float remainder, float16 Q/DQ scales),
  which only a strongly typed build honours: on TensorRT 10 it is built with `--stronglyTyped` (said in a
  note), and `--weakly-typed` is refused. A trt10 model built by TensorRT 11 gets a note: TensorRT 11 is
  strongly typed, so its float32 remainder runs in FP32.
- `--shapes` is checked against the model's inputs (shapes.check_shapes_for_model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from qdq_compiler.targets.recipe import read_recipe
from qdq_compiler.targets.shapes import check_shapes_for_model, parse_shape_spec
from qdq_compiler.targets.trtexec import Target, TargetError, trtexec_command

DEFAULT_DEVICE: Target = "orin"  # `qdqc build --target` default: most deployed Jetsons
DEFAULT_TRT_MAJOR = 10  # for a model that records no target


@dataclass(frozen=True)
class ModelBuild:
    """The TensorRT version and typing to build one model with, and what the user should know about it."""

    trt_major: int
    strongly_typed: bool | None  # None: the version's default (TensorRT 10 weakly typed, 11 strongly)
    notes: list[str] = field(default_factory=list)


def plan_model_build(
    model_name: str,
    model: ir.Model,
    trt_major: int | None = None,
    strongly_typed: bool | None = None,
    shapes: str | None = None,
) -> ModelBuild:
    """Resolve --trt and --strongly-typed/--weakly-typed against the model's recipe; check --shapes."""
    check_shapes_for_model(parse_shape_spec(shapes) if shapes else [], model_inputs(model))
    recipe = read_recipe(model)
    major = trt_major or recipe.trt_major or DEFAULT_TRT_MAJOR
    if recipe.strongly_typed_only:
        return _trt11_model(model_name, major, strongly_typed)
    notes = []
    if recipe.target == "trt10" and major >= 11:
        notes.append(
            f"{model_name} was compiled for trt10 (float32 remainder): TensorRT 11 builds it strongly typed, "
            "so its float layers run in FP32; compile with --target trt11 for an FP16 remainder"
        )
    return ModelBuild(major, strongly_typed, notes)


def _trt11_model(model_name: str, major: int, strongly_typed: bool | None) -> ModelBuild:
    if strongly_typed is False:
        raise TargetError(
            f"{model_name} was compiled for trt11: its FP16 remainder and float16 Q/DQ scales are in the "
            "ONNX types, which only a strongly typed build honours; drop --weakly-typed, or compile with "
            "--target trt10 for a weakly typed TensorRT 10 build"
        )
    notes = []
    if major < 11:
        notes.append(
            f"{model_name} was compiled for trt11 (precision in the ONNX types, float16 scales): TensorRT "
            f"{major} builds it strongly typed (--stronglyTyped), not with --int8 --fp16"
        )
    return ModelBuild(major, True, notes)


def model_inputs(model: ir.Model) -> dict[str, tuple[int | None, ...] | None]:
    """The graph inputs (initializers excluded): name -> dims with None for a dynamic dimension."""
    inputs: dict[str, tuple[int | None, ...] | None] = {}
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        shape = value.shape
        inputs[value.name or ""] = (
            None if shape is None else tuple(d if isinstance(d, int) and d > 0 else None for d in shape)
        )
    return inputs


def default_engine_path(model_path: str | Path) -> str:
    """MODEL.onnx -> MODEL.engine (beside the model)."""
    return str(model_path).rsplit(".onnx", 1)[0] + ".engine"


def default_trtexec_command(model_path: str, model: ir.Model) -> tuple[list[str], ModelBuild]:
    """The trtexec argv `qdqc build MODEL --print-trtexec` prints (default device, engine path)."""
    plan = plan_model_build(model_path, model)
    command = trtexec_command(
        model_path,
        DEFAULT_DEVICE,
        plan.trt_major,
        None,
        None,
        default_engine_path(model_path),
        plan.strongly_typed,
    )
    return command, plan
